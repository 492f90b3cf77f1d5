"""`fediguard eval` on a generated manifest of benign images, with test detectors whose scores come
from the colours (support.detectors.ColourExplicit / ColourAge): the expected matrix is known."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from fediguard.cli import main
from fediguard.config import load_settings
from fediguard.detectors.registry import build_detectors
from fediguard.media.decode import MediaLimits
from fediguard.scanning.evaluation import read_manifest, scan_samples, summarise
from fediguard.scanning.pipeline import Pipeline

COLOURS = "support.plugins:colour_explicit,support.plugins:colour_age"
# (file, label, age, red, green): explicit score = red / 255, apparent age = green / 255 x 40 ± 4.
ROWS = [
    ("grey.png", "benign", None, 0, 90),
    ("blue.png", "benign", None, 20, 20),
    ("reddish.png", "benign", None, 150, 255),  # explicit 0.59: a false nsfw
    ("adult.png", "nsfw", 40, 200, 255),  # explicit 0.78, age 40
    ("adult2.png", "nsfw", 35, 230, 230),  # age 36
    ("faint.png", "nsfw", None, 90, 255),  # explicit 0.35: missed at 0.5
    ("young_adult.png", "nsfw", 19, 200, 120),  # age 18.8 ± 4: review
    ("minor.png", "csam_suspect", 10, 200, 64),  # age 10
    ("minor2.png", "csam_suspect", 12, 255, 80),  # age 12.5
]


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """`fediguard eval` runs in this process and configures logging as a command does: put the
    root logger back, or later tests' log capture would see other tests' records."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    lines = ["path,label,age"]
    for name, label, age, red, green in ROWS:
        Image.new("RGB", (120, 120), (red, green, 60)).save(tmp_path / name)
        lines.append(f"{name},{label},{'' if age is None else age}")
    path = tmp_path / "manifest.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_the_matrix_rates_ages_and_flips_are_the_expected_ones(manifest: Path) -> None:
    settings = load_settings(environ={})
    pipeline = Pipeline(build_detectors(settings, COLOURS.split(",")), MediaLimits(), screening=0.0)
    report = summarise(
        COLOURS, scan_samples(read_manifest(manifest), pipeline, MediaLimits()), settings.policy
    )
    assert report.truths == ["benign", "nsfw", "csam_suspect"]
    assert report.outcomes == ["benign", "nsfw", "review", "csam_suspect"]
    expected = {
        "benign": {"benign": 2, "nsfw": 1},
        "nsfw": {"benign": 1, "nsfw": 2, "review": 1},
        "csam_suspect": {"csam_suspect": 2},
    }
    for truth in report.truths:
        for got in report.outcomes:
            assert report.matrix[(truth, got)] == expected[truth].get(got, 0), (truth, got)
    explicit, csam = report.current
    assert (explicit.true_pos, explicit.false_pos, explicit.false_neg) == (5, 1, 1)
    assert (csam.precision, csam.recall) == (1.0, 1.0)
    by_threshold = {round(x, 1): e for x, e, _ in report.sweep_threshold}
    # 0.3 catches the faint one; only red 230 and 255 reach 0.8.
    assert by_threshold[0.3].false_neg == 0 and by_threshold[0.8].false_neg == 4
    by_factor = {k: c for k, _, c in report.sweep_factor}
    assert by_factor[0.0].true_pos == 2
    assert len(report.age_pairs) == 5 and report.no_aged_face == 0
    assert report.age_mae is not None and report.age_mae < 1.0
    assert report.minor_matrix == {(True, True): 2, (True, False): 0, (False, True): 0, (False, False): 3}
    assert all(total == len(ROWS) for _, total in report.flips.values())
    assert sum(flipped for flipped, _ in report.flips.values()) == 0
    assert len(report.seconds) == len(ROWS)


def test_the_command_prints_sets_side_by_side_and_writes_a_report(
    manifest: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "report"
    sets = ["--detectors", COLOURS, "--detectors", "support.plugins:colour_explicit"]
    code = main(["eval", str(manifest), *sets, "--report", str(out), "--no-perturb"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "  csam_suspect" in printed and "== side by side" in printed
    row = next(line for line in printed.splitlines() if line.startswith("  csam_suspect"))
    assert row.split()[1:] == ["0", "0", "0", "2"]
    html = (out / "report.html").read_text()
    assert "support.plugins:colour_explicit" in html and "<pre>" in html
    assert not list(out.glob("*.png")) or (out / "sweep-0.png").is_file()


def test_a_malformed_manifest_is_refused_naming_the_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "m.csv"
    bad.write_text("a.png,benign\nmissing.png\n")
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    assert main(["eval", str(bad)]) == 2
    assert "line 2" in capsys.readouterr().err
