"""Turn an accepted upload into a short list of RGB frames for the detectors.

Everything is decoded from memory; nothing touches the disk. Any failure — empty, junk, truncated,
unsupported or over a limit — raises :class:`~fediguard.errors.MediaError` and nothing else, so
the gateway can apply the admin's fail policy. Every limit is checked from headers before pixel
data is decoded (:mod:`fediguard.media.limits`).

This module only sniffs the type and hands the bytes to one decoder: stills (jpeg, png, webp, avif,
jxl, bmp, tiff) to :mod:`~fediguard.media.still`, image animations (gif, apng, animated webp and
avif, multi-page tiff) on to :mod:`~fediguard.media.animation`, both through Pillow; videos (mp4,
mov, webm, matroska) to :mod:`~fediguard.media.video` through PyAV. Each decoder is a function of
(bytes, type, limits) with no global state changed per call, so it is thread safe and can as well
run in another process.
"""

from __future__ import annotations

import re

import av.error
from PIL import Image, UnidentifiedImageError

from fediguard.errors import MediaError
from fediguard.media.frames import DecodedMedia
from fediguard.media.jxl import JXL_SUPPORTED
from fediguard.media.limits import DEFAULT_LIMITS, MediaLimits, spread_indices
from fediguard.media.sniff import sniff
from fediguard.media.still import PILLOW_FORMATS, decode_image
from fediguard.media.video import DEMUXERS, decode_video

__all__ = ["DEFAULT_LIMITS", "JXL_SUPPORTED", "MediaLimits", "decode", "spread_indices"]

# Strip "<_io.BytesIO object at 0x...>" and similar reprs from library messages.
_OBJECT_REPR = re.compile(r"\s*<[^<>]* at 0x[0-9a-f]+>")


def decode(
    data: bytes, *, declared_type: str | None = None, limits: MediaLimits = DEFAULT_LIMITS
) -> DecodedMedia:
    """Decode an upload into the frames detectors scan.

    The media type is sniffed from the bytes; ``declared_type`` (the request's Content-Type) is
    only quoted in error messages, and a mismatch is accepted when the bytes decode. ``width`` and
    ``height`` of the result are the source's size as displayed (after EXIF orientation or video
    rotation); frames are RGB, at most ``limits.max_frame_side`` on their longer side.

    Raises :class:`MediaError` for anything that cannot be decoded within ``limits``.
    """
    if not data:
        raise MediaError("empty upload: there are no bytes to decode")
    if len(data) > limits.max_bytes:
        raise MediaError(f"upload is {_mb(len(data))}, over the {_mb(limits.max_bytes)} limit")
    media_type = sniff(data)
    if media_type is None:
        declared = f" (declared {declared_type})" if declared_type else ""
        raise MediaError(f"not a supported image or video: its first bytes match no known format{declared}")
    if media_type not in PILLOW_FORMATS and media_type not in DEMUXERS:
        raise MediaError(f"unsupported media type {media_type}")
    label = media_type.split("/")[1].removeprefix("x-").upper()
    try:
        if media_type in DEMUXERS:
            return decode_video(data, media_type, label, limits)
        return decode_image(data, media_type, label, limits)
    except MediaError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow's own guard (the warning only arrives as an exception under -W error), which
        # refuses what is far over its own bound before our header check runs: say it in our terms.
        raise MediaError(_over_pixel_limit(label, exc, limits)) from exc
    except Exception as exc:  # every library failure means the same thing here: undecodable
        raise MediaError(_describe_failure(label, exc)) from exc


def _over_pixel_limit(label: str, exc: BaseException, limits: MediaLimits) -> str:
    found = _PILLOW_PIXELS.search(str(exc))
    size = f" is {int(found.group(1)) / 1_000_000:.4g} MP," if found else " is"
    if found and int(found.group(1)) <= limits.max_pixels:  # max_pixels set above Pillow's bound
        return f"{label}{size} over Pillow's own bound of {2 * (Image.MAX_IMAGE_PIXELS or 0):,} pixels"
    return f"{label}{size} over the pixel limit of {limits.max_pixels / 1_000_000:.4g} MP (max_pixels)"


_PILLOW_PIXELS = re.compile(r"\((\d+) pixels\)")
"""How Pillow's DecompressionBombError quotes the image's size."""


def _describe_failure(label: str, exc: BaseException) -> str:
    if isinstance(exc, UnidentifiedImageError):
        return f"corrupt {label}: Pillow cannot read its header"
    message = _clean(exc)
    if "truncated" in message.lower():
        return f"truncated {label} ({message})"
    if isinstance(exc, MemoryError):
        return f"{label} needs more memory than is available to decode"
    return f"corrupt or truncated {label}: {message}"


def _clean(exc: BaseException) -> str:
    """A library's message on one line, without object reprs or FFmpeg's errno prefix."""
    message = exc.strerror if isinstance(exc, av.error.FFmpegError) and exc.strerror else str(exc)
    # First line only; pillow-jxl follows its one-line error with build advice (". Please build ...").
    message = _OBJECT_REPR.sub("", message).split("\n")[0].split(". Please")[0]
    return message.strip()[:200] or type(exc).__name__


def _mb(size: int) -> str:
    return f"{size / 1_000_000:.4g} MB"
