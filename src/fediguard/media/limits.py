"""What decoding may accept and hand on: :class:`MediaLimits` and the checks that apply it.

The size checks here run on header values (image size, frame size, video dimensions), so an upload
over a limit is refused before its pixel data is touched — the defence against decompression bombs;
:func:`spread_indices` and :func:`fit` say which frames are sampled and how small they are shrunk.
They are plain functions of sizes and limits, with no Pillow or FFmpeg in them, shared by the still,
animation and video decoders so that every format applies and reports a limit the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from fediguard.errors import ConfigError, MediaError


@dataclass(frozen=True)
class MediaLimits:
    """Bounds on what :func:`~fediguard.media.decode.decode` accepts and how much it hands to detectors."""

    max_pixels: int = 50_000_000
    """Largest width * height of a still image or of any frame."""
    max_frame_side: int = 1280
    """Frames handed to detectors are downscaled so that their longer side is at most this."""
    sample_frames: int = 16
    """At most this many frames spread over the whole duration, plus the first and the last."""
    max_frames: int = 900
    """Animations and videos with more frames are refused."""
    max_video_side: int = 3840
    """Longest side of a video or an animation."""
    max_composited_pixels: int = 400_000_000
    """Most pixels decoded while stepping through a GIF/APNG/WebP/AVIF animation to its sampled
    frames (each frame is composited on the one before, so all of them are decoded); checked from
    the declared frame count x canvas size before decoding. 150 frames of 1920x1920 (550 M pixels)
    took 3.4 s here as GIF, so this bounds GIF/APNG decoding at about 2.5 s; lossy animated WebP is
    slower per pixel (100 frames of 1920x1920, 369 M, took 6.6 s), which the decoder sandbox's CPU
    limit bounds; an AVIF sequence's pixels count :data:`AV1_PIXEL_COST` times. A 900-frame
    480x360 GIF needs 155 M."""
    max_bytes: int = 40_000_000

    def __post_init__(self) -> None:
        for name in ("max_pixels", "max_frame_side", "max_frames", "max_video_side", "max_bytes",
                     "max_composited_pixels"):  # fmt: skip
            if getattr(self, name) < 1:
                raise ConfigError(f"media limit {name} must be at least 1, not {getattr(self, name)}")
        if self.sample_frames < 0:
            raise ConfigError(f"media limit sample_frames must not be negative, not {self.sample_frames}")


DEFAULT_LIMITS: Final = MediaLimits()

AV1_PIXEL_COST: Final = 3
"""How many GIF pixels one pixel of an AVIF image sequence counts as against
``max_composited_pixels``: AV1 decodes about three times slower per pixel (20 frames of 3840x3840,
295 M pixels, took 5.4 s here; 150 GIF frames of 1920x1920, 550 M, 3.4 s), so an AVIF sequence is
bounded at ~133 M pixels (64 frames of 1920x1080), about 2.4 s of CPU."""


def spread_indices(count: int, samples: int) -> list[int]:
    """Up to ``samples`` frame positions spread evenly over ``count`` frames, plus the first and last.

    >>> spread_indices(900, 4)
    [0, 180, 360, 539, 719, 899]
    """
    if count <= samples + 2:
        return list(range(count))
    steps = samples + 1
    return sorted({round(i * (count - 1) / steps) for i in range(steps + 1)})


def check_pixels(size: tuple[int, int], limits: MediaLimits, label: str) -> None:
    width, height = size
    if width * height > limits.max_pixels:
        raise MediaError(
            f"{label} is {width}\u00d7{height} = {_mp(width * height)}, "
            f"over the {_mp(limits.max_pixels)} limit"
        )


def check_composited(frames: int, size: tuple[int, int], cost: int, limits: MediaLimits, label: str) -> None:
    """Refuse an animation whose ``frames`` of ``size`` (each pixel counting ``cost`` times)
    mean decoding more than ``max_composited_pixels``."""
    width, height = size
    if frames * width * height * cost > limits.max_composited_pixels:
        weight = f" (each pixel counting {cost} times, the cost of its codec)" if cost > 1 else ""
        raise MediaError(
            f"{label}: {frames} frames of {width}x{height} mean decoding over "
            f"{limits.max_composited_pixels:,} pixels{weight}"
        )


def check_side(size: tuple[int, int], max_side: int, label: str) -> None:
    if max(size) > max_side:
        raise MediaError(f"{label} is {size[0]}\u00d7{size[1]}, over the {max_side} px side limit")


def fit(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    """``size`` scaled down (never up) so that its longer side is at most ``max_side``."""
    width, height = size
    longer = max(width, height)
    if longer <= max_side:
        return width, height
    return max(1, round(width * max_side / longer)), max(1, round(height * max_side / longer))


def _mp(pixels: int) -> str:
    return f"{pixels / 1_000_000:.4g} MP"
