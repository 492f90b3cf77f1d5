"""The shared onnxruntime helper: model files come from installed packages, sessions are tuned for
one session per scanner thread, and every loading failure is a DetectorUnavailable."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fediguard.detectors.onnx import cpu_session, package_file, package_version
from fediguard.errors import DetectorUnavailable


def test_package_file_finds_the_nudenet_model() -> None:
    path = package_file("nudenet", "320n.onnx")
    assert path.is_file() and path.stat().st_size > 1_000_000


def test_missing_package_names_what_to_install() -> None:
    with pytest.raises(DetectorUnavailable, match=r"pip install no-such-wheel"):
        package_file("no_such_package_xyz", "model.onnx", pip_name="no-such-wheel")


def test_missing_file_in_an_installed_package() -> None:
    with pytest.raises(DetectorUnavailable, match="missing from installed package 'nudenet'"):
        package_file("nudenet", "640m.onnx")


def test_package_version() -> None:
    assert package_version("nudenet") == "3.4.2"
    assert package_version("no-such-distribution-xyz") == "?"


def test_garbage_model_is_unavailable(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(DetectorUnavailable, match=r"bad\.onnx"):
        cpu_session(bad)
    with pytest.raises(DetectorUnavailable):
        cpu_session(b"\x00\x01garbage")


def test_session_options_and_a_tiny_model() -> None:
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    session = cpu_session(model.SerializeToString(), intra_op_num_threads=2)
    options = session.get_session_options()
    assert options.intra_op_num_threads == 2
    assert options.inter_op_num_threads == 1
    assert session.get_providers() == ["CPUExecutionProvider"]
    out = session.run(None, {"x": np.array([[-1.0, 0.0, 2.0]], dtype=np.float32)})[0]
    assert out.tolist() == [[0.0, 0.0, 2.0]]
    with pytest.raises(ValueError):
        cpu_session(model.SerializeToString(), intra_op_num_threads=0)
