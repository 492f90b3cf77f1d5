"""What both CPU detectors promise alike: frame indices carried through, degenerate frames handled,
a flat image scored as empty, and one instance per thread giving the same answers as one thread."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from fediguard.detectors.age import AgeDetector
from fediguard.detectors.base import Detector, DetectorResult, Subject
from fediguard.detectors.nudity import NudityDetector

pytestmark = pytest.mark.slow

RGB = npt.NDArray[np.uint8]
PHOTOS = ("astronaut", "camera", "coffee", "rocket", "chelsea")


@pytest.fixture(scope="module", params=["nudity", "age"])
def detector(request: pytest.FixtureRequest) -> Detector:
    found: Detector = request.getfixturevalue(request.param)
    return found


def test_three_frames_give_three_frame_scores(
    detector: Detector, photos: dict[str, RGB], drawn: dict[str, RGB], subject_of: Callable[..., Subject]
) -> None:
    subject = subject_of([photos["astronaut"], drawn["grey"], photos["coffee"]], [0, 12, 24])
    result = detector.detect(subject)
    assert [f.frame for f in result.frames] == [0, 12, 24]
    assert result.detector == detector.name and result.version == detector.version
    assert DetectorResult.from_json(result.to_json()) == result


def test_flat_grey_is_empty(
    detector: Detector, drawn: dict[str, RGB], subject_of: Callable[..., Subject]
) -> None:
    result = detector.detect(subject_of([drawn["grey"]]))
    if detector.name == "nudity":
        assert result.scores["explicit"] == pytest.approx(0.0, abs=1e-6)
        assert max(result.scores.values()) < 0.2
    else:
        assert result.scores["faces"] == 0 and "min_age" not in result.scores


@pytest.mark.parametrize("shape", ["dot", "strip", "column"])
def test_degenerate_frames_do_not_crash(
    detector: Detector, drawn: dict[str, RGB], subject_of: Callable[..., Subject], shape: str
) -> None:
    result = detector.detect(subject_of([drawn[shape]]))
    assert len(result.frames) == 1
    key = "explicit" if detector.name == "nudity" else "faces"
    assert result.frames[0].scores[key] == 0.0


def test_no_frames(detector: Detector, subject_of: Callable[..., Subject]) -> None:
    result = detector.detect(subject_of([]))
    assert result.frames == [] and result.notes


@pytest.mark.parametrize("make", [NudityDetector, AgeDetector], ids=["nudity", "age"])
def test_two_instances_on_two_threads_match_sequential(
    make: Callable[[], Detector], photos: dict[str, RGB], subject_of: Callable[..., Subject]
) -> None:
    sequential = make()
    sequential.warm_up()
    expected = {name: sequential.detect(subject_of([photos[name]])) for name in PHOTOS}

    got: dict[tuple[int, str], DetectorResult] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def work(worker: int) -> None:
        try:
            mine = make()  # one instance per thread, as the scanner does
            mine.warm_up()
            start.wait()
            for _ in range(2):
                for name in PHOTOS if worker == 0 else reversed(PHOTOS):
                    got[(worker, name)] = mine.detect(subject_of([photos[name]]))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    for (_, name), result in got.items():
        assert result.scores == pytest.approx(expected[name].scores, abs=1e-5)
        assert [f.notes for f in result.frames] == [f.notes for f in expected[name].frames]


def test_loading_and_running_the_models_writes_nothing_and_sends_nothing(tmp_path: Path) -> None:
    """onnxruntime 1.29+ telemetry (an upload to Microsoft, a device id under ~/.cache and files
    in the temp folder) stays off: a fresh process that loads and runs every default detector
    leaves its home and temp folders empty."""
    home, tmp = tmp_path / "home", tmp_path / "tmp"
    home.mkdir()
    tmp.mkdir()
    code = (
        "from fediguard.config import load_settings\n"
        "from fediguard.detectors.registry import build_detectors\n"
        "import numpy as np\n"
        "for d in build_detectors(load_settings(environ={})):\n"
        "    d.warm_up()\n"
        "import onnxruntime\n"
        "print('ok', onnxruntime.__version__)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FEDIGUARD_", "ORT_"))}
    env.update(HOME=str(home), TMPDIR=str(tmp))
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and run.stdout.startswith("ok"), run.stderr
    left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p not in (home, tmp))
    assert left == [], f"files written while loading the models: {left}"
