"""The decoded form of an upload that detectors see: a short list of RGB frames."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

RGBArray = npt.NDArray[np.uint8]
"""An image as a C-contiguous ``uint8`` array of shape (height, width, 3), RGB order."""


@dataclass(frozen=True)
class Frame:
    """One frame handed to detectors.

    ``index`` is the frame's position in the source (0 for a still image); ``time_s`` its
    presentation time in seconds when the container says so. ``image`` is the frame as displayed:
    upright, alpha composited on white. Meta's PDQ tools hash the stored pixels instead, so a frame
    also says which EXIF ``orientation`` (1-8) was undone to make it upright, and, only when it has
    real transparency, holds ``opaque``: the same pixels (upright, same size) with the alpha dropped.
    """

    index: int
    image: RGBArray
    time_s: float | None = None
    orientation: int = 1
    opaque: RGBArray | None = None


@dataclass(frozen=True)
class DecodedMedia:
    """What decoding found: the real media type (sniffed from the bytes, not the header), the
    source's size, how many frames it holds when known, and the frames sampled for scanning."""

    media_type: str
    width: int
    height: int
    frames: list[Frame] = field(default_factory=list)
    frame_count: int | None = None
    animated: bool = False
