"""Models an admin provides by path: tiny ONNX models built here (onnx.helper) load through the
settings, and their findings reach the policy. Benign images only; no download."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from fediguard.config import load_settings
from fediguard.detectors.age import AgeDetector
from fediguard.detectors.base import DetectorResult, Explicit, Face, Subject
from fediguard.detectors.nudity import LABELS
from fediguard.detectors.registry import build_detectors
from fediguard.errors import ConfigError, DetectorUnavailable
from fediguard.policy import decide
from fediguard.verdicts import CSAM_SUSPECT, NSFW, REVIEW, PolicyConfig

pytestmark = pytest.mark.slow

RGB = npt.NDArray[np.uint8]


def constant_model(
    path: Path, input_shape: list[int | str], value: npt.NDArray[np.float32], per_item: bool
) -> Path:
    """A model whose output is ``value`` whatever the input (``per_item``: one row of ``value`` per
    batch item, else ``value`` as it is); the input still flows through the graph."""
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, input_shape)
    out_shape: list[int | str] = ["N", *value.shape[1:]] if per_item else list(value.shape)
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, out_shape)
    const = numpy_helper.from_array(value.astype(np.float32), "value")
    zero = numpy_helper.from_array(np.zeros((), np.float32), "zero")
    if per_item:
        nodes = [
            helper.make_node("ReduceMean", ["input"], ["mean"], axes=[1, 2, 3], keepdims=1),
            helper.make_node("Flatten", ["mean"], ["flat"], axis=1),
            helper.make_node("Mul", ["flat", "zero"], ["nothing"]),
            helper.make_node("Add", ["nothing", "value"], ["output"]),
        ]
    else:
        nodes = [
            helper.make_node("ReduceMean", ["input"], ["mean"], keepdims=0),
            helper.make_node("Mul", ["mean", "zero"], ["nothing"]),
            helper.make_node("Add", ["nothing", "value"], ["output"]),
        ]
    graph = helper.make_graph(nodes, "tiny", [x], [y], initializer=[const, zero])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def nudenet_like(path: Path, classes: int = len(LABELS)) -> Path:
    """A 64-px 'detector' that always finds an exposed breast (0.9) and a belly (0.6) mid-frame."""
    rows = np.zeros((1, 4 + len(LABELS), 2), np.float32)
    rows[0, :4, 0] = (32, 40, 20, 16)
    rows[0, 4 + LABELS.index("female_breast_exposed"), 0] = 0.9
    rows[0, :4, 1] = (32, 48, 24, 12)
    rows[0, 4 + LABELS.index("belly_exposed"), 1] = 0.6
    return constant_model(path, [1, 3, 64, 64], rows[:, : 4 + classes], per_item=False)


def test_a_nudity_model_by_path_loads_through_the_settings_and_reaches_the_policy(
    tmp_path: Path, photos: dict[str, RGB], subject_of: Callable[..., Subject]
) -> None:
    model = nudenet_like(tmp_path / "bigger.onnx")
    settings = load_settings(environ={"FEDIGUARD_NUDITY_MODEL": str(model)})
    (detector,) = build_detectors(settings, ["nudity"])
    assert detector.version.startswith("bigger.onnx@")
    detector.warm_up()
    result = detector.detect(subject_of([photos["coffee"]]))  # 600x400: padded to 600, x9.375
    explicit = [f for f in result.findings if isinstance(f, Explicit)]
    assert [(f.label, round(f.score, 2), f.flat) for f in explicit] == [("female_breast_exposed", 0.9, False)]
    assert explicit[0].box is not None and round(explicit[0].box[0]) == round((32 - 10) * 600 / 64)
    assert decide([result], PolicyConfig()).labels == (NSFW,)


def test_a_nudity_model_of_other_classes_is_refused_naming_the_setting(tmp_path: Path) -> None:
    model = nudenet_like(tmp_path / "other.onnx", classes=3)
    (detector,) = build_detectors(load_settings(environ={"FEDIGUARD_NUDITY_MODEL": str(model)}), ["nudity"])
    with pytest.raises(DetectorUnavailable, match="values per box"):
        detector.warm_up()
    with pytest.raises(ConfigError, match="nudity_model"):
        load_settings(environ={"FEDIGUARD_NUDITY_MODEL": str(tmp_path / "missing.onnx")})
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    (detector,) = build_detectors(load_settings(environ={"FEDIGUARD_NUDITY_MODEL": str(broken)}), ["nudity"])
    with pytest.raises(DetectorUnavailable, match="nudity_model"):
        detector.warm_up()


def test_an_age_model_by_path_ages_the_faces_and_its_ages_reach_the_policy(
    tmp_path: Path, photos: dict[str, RGB], subject_of: Callable[..., Subject]
) -> None:
    model = constant_model(
        tmp_path / "age.onnx", ["N", 3, 32, 32], np.full((1, 1), 10.0, np.float32), per_item=True
    )
    settings = load_settings(environ={"FEDIGUARD_AGE_MODEL": str(model)})
    (detector,) = build_detectors(settings, ["age"])
    assert isinstance(detector, AgeDetector) and "age.onnx@" in detector.version
    detector.warm_up()
    result = detector.detect(subject_of([photos["astronaut"]]))
    faces = [f for f in result.findings if isinstance(f, Face)]
    assert len(faces) == 1 and faces[0].age == 10.0 and faces[0].age_sd == 0.0 and faces[0].box is not None
    x, y, w, h = faces[0].box
    body = DetectorResult(
        "nudity", "t", findings=[Explicit(0, "injected", 0.9, (x - w / 2, y + 1.5 * h, 2 * w, 1.5 * h))]
    )
    assert decide([body, result], PolicyConfig()).labels == (CSAM_SUSPECT,)


def test_an_embedding_model_with_concepts_reaches_the_policy(
    tmp_path: Path, photos: dict[str, RGB], subject_of: Callable[..., Subject]
) -> None:
    model = constant_model(
        tmp_path / "clip.onnx", [1, 3, 16, 16], np.asarray([[1, 0, 0, 0]], np.float32), per_item=False
    )
    concepts = tmp_path / "concepts.json"
    concepts.write_text(json.dumps({"concepts": [
        {"name": "explicit concept", "embedding": [1, 0, 0, 0], "threshold": 0.25, "kind": "explicit"},
        {"name": "minor concept", "embedding": [0.6, 0.8, 0, 0], "threshold": 0.5, "kind": "minor"},
        {"name": "unrelated", "embedding": [0, 0, 1, 0], "threshold": 0.2, "kind": "explicit"},
    ]}))  # fmt: skip
    env = {"FEDIGUARD_EMBEDDING_MODEL": str(model), "FEDIGUARD_EMBEDDING_CONCEPTS": str(concepts)}
    (detector,) = build_detectors(load_settings(environ=env), ["embedding"])
    detector.warm_up()
    result = detector.detect(subject_of([photos["chelsea"]]))
    assert result.frames[0].scores == pytest.approx(
        {"explicit concept": 1.0, "minor concept": 0.6, "unrelated": 0.0}
    )
    assert [type(f).__name__ for f in result.findings] == ["Explicit", "Face"]
    assert decide([result], PolicyConfig()).labels == (NSFW, REVIEW)
    concepts.write_text(json.dumps({"concepts": [{"name": "x", "embedding": [1, 0], "threshold": 2}]}))
    (again,) = build_detectors(load_settings(environ=env), ["embedding"])
    with pytest.raises(DetectorUnavailable, match=r"embedding_concepts.*threshold"):
        again.warm_up()
