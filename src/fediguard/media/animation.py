"""Image animations (GIF, APNG, animated WebP and AVIF, multi-page TIFF): a few sampled frames.

An animation's frames are usually composited each on the one before, so reaching a sampled frame
means decoding every frame up to it. This module steps through them with the frame count, side
and per-frame pixel limits checked from each frame's header, and a budget on the pixels composited
on the way (``max_composited_pixels``), checked first from the declared frame count and canvas size
(Pillow reads both without decoding a pixel), so a long or huge animation is refused in
microseconds instead of taking seconds of CPU.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

from PIL import ImageFile

from fediguard.errors import MediaError
from fediguard.media.frames import DecodedMedia
from fediguard.media.limits import (
    AV1_PIXEL_COST,
    MediaLimits,
    check_composited,
    check_pixels,
    check_side,
    spread_indices,
)
from fediguard.media.rgb import displayed_size, exif_orientation, to_frame

# Pillow formats whose decoder stamps each frame with its own start time (random access).
_TIMESTAMPED_FORMATS: Final = frozenset({"WEBP", "AVIF"})
# Pillow formats whose frames carry a display duration, so time = sum of earlier durations.
_DURATION_FORMATS: Final = frozenset({"GIF", "PNG"})


def decode_animation(
    im: ImageFile.ImageFile,
    media_type: str,
    label: str,
    count: int,
    limits: MediaLimits,
) -> DecodedMedia:
    """Sample ``count`` frames of the open ``im``, checking each frame against ``limits`` on the way."""
    if count > limits.max_frames:
        raise MediaError(f"{label} has {count} frames, over the {limits.max_frames}-frame limit")
    check_side(im.size, limits.max_video_side, label)
    # Reaching the last sampled frame (the last one) decodes every frame on the canvas: refuse from
    # the declared count and size before any is decoded. Frames that enlarge the canvas (GIF) or
    # pages of other sizes (TIFF) are counted again on the way.
    check_composited(count, im.size, AV1_PIXEL_COST if im.format == "AVIF" else 1, limits, label)
    orientation = exif_orientation(im)  # one for all frames, as browsers show it
    width, height = displayed_size(im.size, orientation)
    wanted = spread_indices(count, limits.sample_frames)
    frames = [
        to_frame(im, limits.max_frame_side, orientation, index, time_s)
        for index, time_s in _seek_frames(im, wanted, limits, label)
    ]
    return DecodedMedia(media_type, width, height, frames, frame_count=count, animated=True)


def _seek_frames(
    im: ImageFile.ImageFile, wanted: list[int], limits: MediaLimits, label: str
) -> Iterator[tuple[int, float | None]]:
    """Move ``im`` to each wanted frame and load it, yielding (index, start time in seconds).

    GIF and APNG frames are composited on the previous ones, so Pillow decodes every frame on the
    way anyway; stepping through them here costs nothing extra and adds up their durations.
    """
    if im.format in _TIMESTAMPED_FORMATS:
        for index in wanted:
            im.seek(index)
            im.load()
            yield index, float(im.info["timestamp"]) / 1000
        return
    timed = im.format in _DURATION_FORMATS
    wanted_set = set(wanted)
    elapsed_ms = 0.0
    composited = 0
    for index in range(wanted[-1] + 1):
        if index:
            im.seek(index)
        # A GIF frame may enlarge the canvas and a TIFF page has its own size.
        check_pixels(im.size, limits, label)
        check_side(im.size, limits.max_video_side, label)
        composited += im.size[0] * im.size[1]
        if composited > limits.max_composited_pixels:
            raise MediaError(
                f"{label}: reaching frame {wanted[-1]} means decoding over "
                f"{limits.max_composited_pixels:,} pixels (frame {index} of {im.size[0]}x{im.size[1]})"
            )
        if index in wanted_set:
            im.load()
            yield index, (elapsed_ms / 1000 if timed else None)
        elapsed_ms += float(im.info.get("duration") or 0)
