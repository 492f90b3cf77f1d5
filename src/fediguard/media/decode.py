"""Turn an accepted upload into a short list of RGB frames for the detectors.

Everything is decoded from memory; nothing touches the disk. Any failure — empty, junk, truncated,
unsupported or over a limit — raises :class:`~fediguard.errors.MediaError` and nothing else, so
the gateway can apply the admin's fail policy. Every limit is checked from headers before pixel
data is decoded.

Stills (jpeg, png, webp, avif, jxl, bmp, tiff) and image animations (gif, apng, animated webp and
avif, multi-page tiff) go through Pillow; videos (mp4, mov, webm, matroska) through PyAV. Alpha is
composited on **white**: that is how most pages show a transparent image, and it keeps dark content
visible to the detectors. Content drawn in near-white on transparency is the blind spot of that
choice (it shows on a dark theme).

Thread safety: no global state is changed per call. Pillow's own ``Image.MAX_IMAGE_PIXELS`` guard
is left as it is, an outer bound: Image.open() reads only the header, then this module checks the
tighter :attr:`MediaLimits.max_pixels` before any pixel is decoded, so no warnings filter has to
be swapped in and out (which is process-wide). Pillow still *warns* (DecompressionBombWarning) when
opening an image of 89-179 MP, which is then refused here.
"""

from __future__ import annotations

import bisect
import contextlib
import io
import logging
import re
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Final

import av
import av.container
import av.error
import av.video.frame
import av.video.stream
import numpy as np
from PIL import ExifTags, Image, ImageFile, UnidentifiedImageError

from fediguard.errors import ConfigError, MediaError
from fediguard.media.frames import DecodedMedia, Frame, RGBArray
from fediguard.media.sniff import JXL_CODESTREAM_SIGNATURE, sniff

try:  # JPEG XL needs a third-party Pillow plugin; without it, jxl is "unsupported".
    import pillow_jxl  # noqa: F401  (imported for its side effect: registers the JXL format)

    JXL_SUPPORTED = True
except ImportError:  # pragma: no cover - depends on the installation
    JXL_SUPPORTED = False

log = logging.getLogger(__name__)

# Register every Pillow plugin once, at import: Image.open() would otherwise do it lazily, from
# whichever scanner thread gets there first.
Image.init()


@dataclass(frozen=True)
class MediaLimits:
    """Bounds on what :func:`decode` accepts and how much it hands to detectors."""

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
    """Most pixels decoded while stepping through a GIF/APNG/WebP animation to its sampled frames
    (each frame is composited on the one before, so all of them are decoded). 150 frames of
    1920x1920 (550 M pixels) took 3.4 s here, so this bounds decoding at about 2.5 s; a 900-frame
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

# Sniffed media type -> Pillow format name, which is also the only plugin Image.open may try.
_PILLOW_FORMATS: Final = {
    "image/jpeg": "JPEG",
    "image/png": "PNG",
    "image/apng": "PNG",
    "image/gif": "GIF",
    "image/webp": "WEBP",
    "image/avif": "AVIF",
    "image/bmp": "BMP",
    "image/tiff": "TIFF",
    **({"image/jxl": "JXL"} if JXL_SUPPORTED else {}),
}
# Sniffed media type -> the one FFmpeg demuxer allowed to read it. Naming it stops FFmpeg from
# probing, which could otherwise pick a playlist demuxer (hls, concat) that opens other URLs.
_DEMUXERS: Final = {
    "video/mp4": "mp4",
    "video/quicktime": "mov",
    "video/webm": "matroska",
    "video/x-matroska": "matroska",
}
# Video codecs worth the attack surface: what phones, browsers and pict-rs produce.
_VIDEO_CODECS: Final = frozenset({"h264", "hevc", "vp8", "vp9", "av1", "mpeg4", "mjpeg"})
# Decoder threading per codec, measured on 2 cores (720p, 300 frames): frame threads halve VP8's
# time and slice threads are best for H.264 (0.20 s vs 0.22 s frame, 0.36 s none); the rest barely
# differ. Slice threading also adds no frame delay, which matters after each seek.
_THREADING: Final = {"vp8": "FRAME"}
# Pillow formats whose decoder stamps each frame with its own start time (random access).
_TIMESTAMPED_FORMATS: Final = frozenset({"WEBP", "AVIF"})
# Pillow formats whose frames carry a display duration, so time = sum of earlier durations.
_DURATION_FORMATS: Final = frozenset({"GIF", "PNG"})
# EXIF orientation -> the transposition that shows the image upright (as ImageOps.exif_transpose).
_ORIENTATION_FIX: Final = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_WHITE: Final = (255, 255, 255)
# Size of one strip when a big image is reduced piece by piece (see _to_rgb).
_STRIP_BYTES: Final = 4 * 1024 * 1024
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
    if media_type not in _PILLOW_FORMATS and media_type not in _DEMUXERS:
        raise MediaError(f"unsupported media type {media_type}")
    label = media_type.split("/")[1].removeprefix("x-").upper()
    try:
        if media_type in _DEMUXERS:
            return _decode_video(data, media_type, label, limits)
        return _decode_image(data, media_type, label, limits)
    except MediaError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow's own guard (the warning only arrives as an exception under -W error).
        raise MediaError(f"{label} is over the pixel limit ({_clean(exc)})") from exc
    except Exception as exc:  # every library failure means the same thing here: undecodable
        raise MediaError(_describe_failure(label, exc)) from exc


def spread_indices(count: int, samples: int) -> list[int]:
    """Up to ``samples`` frame positions spread evenly over ``count`` frames, plus the first and last.

    >>> spread_indices(900, 4)
    [0, 180, 360, 539, 719, 899]
    """
    if count <= samples + 2:
        return list(range(count))
    steps = samples + 1
    return sorted({round(i * (count - 1) / steps) for i in range(steps + 1)})


# --- still images and image animations (Pillow) ------------------------------------------------


def _decode_image(data: bytes, media_type: str, label: str, limits: MediaLimits) -> DecodedMedia:
    pil_format = _PILLOW_FORMATS[media_type]
    if pil_format == "JXL":
        # The JXL plugin decodes every pixel inside Image.open(), so read the size first.
        _check_pixels(_jxl_size(data), limits, label)
    with Image.open(io.BytesIO(data), formats=[pil_format]) as im:
        _check_pixels(im.size, limits, label)
        # A JPEG's extra MPF pictures (depth maps, gain maps, previews) are not what viewers show.
        count = 1 if pil_format == "JPEG" else int(getattr(im, "n_frames", 1))
        if count > 1:
            return _decode_animation(im, media_type, label, count, limits)
        source_size = im.size
        if pil_format == "JPEG":
            # Let libjpeg scale by 1/2, 1/4 or 1/8 while decoding: a fraction of the memory and time.
            im.draft("RGB", _fit(im.size, limits.max_frame_side))
        im.load()
        orientation = _orientation(im)  # after load(): a PNG may keep its eXIf chunk after the pixels
        frame = Frame(index=0, image=_to_rgb(im, limits.max_frame_side, orientation))
        width, height = _displayed_size(source_size, orientation)
        return DecodedMedia(media_type, width, height, [frame], frame_count=1, animated=False)


def _decode_animation(
    im: ImageFile.ImageFile,
    media_type: str,
    label: str,
    count: int,
    limits: MediaLimits,
) -> DecodedMedia:
    if count > limits.max_frames:
        raise MediaError(f"{label} has {count} frames, over the {limits.max_frames}-frame limit")
    _check_side(im.size, limits.max_video_side, label)
    orientation = _orientation(im)  # one for all frames, as browsers show it
    width, height = _displayed_size(im.size, orientation)
    wanted = spread_indices(count, limits.sample_frames)
    frames = [
        Frame(index, _to_rgb(im, limits.max_frame_side, orientation), time_s)
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
        _check_pixels(im.size, limits, label)
        _check_side(im.size, limits.max_video_side, label)
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


def _to_rgb(im: Image.Image, max_side: int, orientation: int) -> RGBArray:
    """The loaded image as an upright RGB array no larger than ``max_side``, alpha on white."""
    target = _fit(im.size, max_side)
    flatten = _flattener(im)
    # Box-reduce by an integer factor while keeping twice the target size for Lanczos to finish
    # (Pillow's reducing_gap=2), one strip at a time: colour conversion, premultiplied alpha and
    # 16-bit mapping then cost a strip's worth of memory, not another copy of a 40 MP image.
    factor = min(im.width // target[0], im.height // target[1]) // 2
    small = _reduce_in_strips(im, factor, flatten) if factor >= 2 else flatten(im)
    if small.size != target:
        small = small.resize(target, Image.Resampling.LANCZOS)
    if small.mode in ("LA", "RGBA"):
        rgba = small.convert("RGBA")
        small = Image.new("RGB", rgba.size, _WHITE)
        small.paste(rgba, mask=rgba.getchannel("A"))
    elif small.mode != "RGB":
        small = small.convert("RGB")
    if orientation in _ORIENTATION_FIX:
        small = small.transpose(_ORIENTATION_FIX[orientation])
    return np.array(small, dtype=np.uint8, order="C")


def _reduce_in_strips(
    im: Image.Image, factor: int, flatten: Callable[[Image.Image], Image.Image]
) -> Image.Image:
    """``flatten(im).reduce(factor)``, computed strip by strip (exact: strips are factor-aligned)."""
    rows = max(factor, _STRIP_BYTES // (im.width * 4) // factor * factor)
    reduced: Image.Image | None = None
    for top in range(0, im.height, rows):
        strip = flatten(im.crop((0, top, im.width, min(im.height, top + rows)))).reduce(factor)
        if reduced is None:
            size = (-(-im.width // factor), -(-im.height // factor))  # reduce() keeps partial boxes
            reduced = Image.new(strip.mode, size)
        reduced.paste(strip, (0, top // factor))
    assert reduced is not None
    return reduced


def _flattener(im: Image.Image) -> Callable[[Image.Image], Image.Image]:
    """A conversion of ``im`` (or a strip of it) to L, LA, RGB or RGBA, fixed for the whole image."""
    if im.mode.startswith("I") or im.mode == "F":
        # 16/32-bit grey and float: Pillow's own conversion clips at 255, turning most such pictures
        # white. Stretch to the brightest pixel of the whole image instead (floats usually span 0..1).
        brightest = _brightest(im)
        scale = 255.0 / brightest if brightest > 255.0 else 1.0
        if im.mode == "F" and 0.0 < brightest <= 1.0:
            scale = 255.0

        def stretch(part: Image.Image) -> Image.Image:
            values = np.asarray(part, dtype=np.float32) * scale
            return Image.fromarray(np.clip(values, 0, 255).astype(np.uint8))

        return stretch
    if im.mode in ("L", "LA", "RGB", "RGBA") and "transparency" not in im.info:
        return lambda part: part
    mode = "RGBA" if _has_alpha(im) else "L" if im.mode == "1" else "RGB"
    return lambda part: part.convert(mode)


def _brightest(im: Image.Image) -> float:
    high = im.getextrema()[1]
    return float(high) if isinstance(high, int | float) else 255.0


def _has_alpha(im: Image.Image) -> bool:
    return im.mode in ("LA", "La", "PA", "RGBA", "RGBa") or "transparency" in im.info


def _fit(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    """``size`` scaled down (never up) so that its longer side is at most ``max_side``."""
    width, height = size
    longer = max(width, height)
    if longer <= max_side:
        return width, height
    return max(1, round(width * max_side / longer)), max(1, round(height * max_side / longer))


def _orientation(im: Image.Image) -> int:
    """The EXIF orientation (1-8) to undo; 1 when absent, unreadable or already applied."""
    if im.format == "JXL":
        return 1  # libjxl applies the codestream orientation itself; the Exif box must not count twice
    try:
        value = im.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception:  # a broken EXIF block does not stop browsers from showing the picture
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _jxl_size(data: bytes) -> tuple[int, int]:
    """Width and height from a JPEG XL SizeHeader (ISO/IEC 18181-1 §D.2), without decoding."""
    stream = _jxl_codestream(data)
    if not stream.startswith(JXL_CODESTREAM_SIGNATURE):
        raise MediaError("corrupt JXL: no codestream found")
    bits = _LsbBitReader(stream[2:])

    def u32() -> int:  # U32(Bits(9), Bits(13), Bits(18), Bits(30)) of the spec, all with offset 0
        return bits.read((9, 13, 18, 30)[bits.read(2)])

    small = bits.read(1)
    height = (bits.read(5) + 1) * 8 if small else u32() + 1
    ratio = bits.read(3)
    if ratio:
        numerator, denominator = ((1, 1), (12, 10), (4, 3), (3, 2), (16, 9), (5, 4), (2, 1))[ratio - 1]
        width = height * numerator // denominator
    else:
        width = (bits.read(5) + 1) * 8 if small else u32() + 1
    return width, height


def _jxl_codestream(data: bytes) -> bytes:
    """The start of the codestream: the data itself, or the first jxlc/jxlp box of the container."""
    if data.startswith(JXL_CODESTREAM_SIGNATURE):
        return data[:64]
    offset = 0
    while offset + 8 <= len(data):
        size, box_type = struct.unpack_from(">I4s", data, offset)
        header = 8
        if size == 1 and offset + 16 <= len(data):
            (size,) = struct.unpack_from(">Q", data, offset + 8)
            header = 16
        elif size == 0:
            size = len(data) - offset
        if box_type == b"jxlc":
            return data[offset + header : offset + header + 64]
        if box_type == b"jxlp":  # partial codestream boxes start with a 4-byte sequence number
            return data[offset + header + 4 : offset + header + 68]
        if size < header:
            break
        offset += size
    return b""


class _LsbBitReader:
    """Reads JPEG XL header fields: bits least-significant first within each byte."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._position = 0

    def read(self, count: int) -> int:
        value = 0
        for shift in range(count):
            byte_index = self._position >> 3
            if byte_index >= len(self._data):
                raise MediaError("truncated JXL header")
            value |= ((self._data[byte_index] >> (self._position & 7)) & 1) << shift
            self._position += 1
        return value


# --- videos (PyAV) -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _PacketIndex:
    """What a demux-only pass learns about the video stream, before any frame is decoded."""

    frame_count: int
    presentation_pts: list[int] | None
    """Every frame's pts in display order (its position is the frame index); None if any is missing."""
    keyframe_pts: list[int]
    pixel_aspect: float
    """Width of a pixel over its height (anamorphic video stores squeezed pixels)."""

    def keyframe_before(self, pts: int) -> int:
        """The pts of the last keyframe at or before ``pts`` (where decoding must start)."""
        position = bisect.bisect_right(self.keyframe_pts, pts)
        return self.keyframe_pts[position - 1] if position else -(2**63)


def _decode_video(data: bytes, media_type: str, label: str, limits: MediaLimits) -> DecodedMedia:
    demuxer = _DEMUXERS[media_type]
    index = _index_packets(data, demuxer, label, limits)
    if index.frame_count == 0:
        raise MediaError(f"{label} holds no video frames")
    wanted = spread_indices(index.frame_count, limits.sample_frames)
    frames: list[Frame] = []
    size: list[tuple[int, int]] = []

    def convert(frame: av.video.frame.VideoFrame, position: int) -> Frame:
        if not size:
            size.append(_displayed_video_size(frame))
        image = _video_frame_to_rgb(frame, index.pixel_aspect, limits.max_frame_side)
        return Frame(position, image, _frame_time(frame))

    decoded = 0
    strategy = "seek"
    if index.presentation_pts is not None:
        with _open_video(data, demuxer, limits) as (container, stream):
            frames, decoded = _decode_by_seeking(container, stream, index, wanted, convert)
    if len(frames) != len(wanted):
        # No timestamps, or a container that seeks inexactly: decode every frame in order instead.
        strategy = "in order"
        with _open_video(data, demuxer, limits) as (container, stream):
            frames, decoded_in_order = _decode_in_order(container, stream, index, wanted, convert)
        decoded += decoded_in_order
    log.debug(
        "%s: decoded %d of %d frames (%s) to sample %d",
        label,
        decoded,
        index.frame_count,
        strategy,
        len(frames),
    )
    if not frames:
        raise MediaError(f"{label}: no frame could be decoded")
    width, height = size[0]
    return DecodedMedia(
        media_type, width, height, frames, frame_count=index.frame_count, animated=index.frame_count > 1
    )


def _index_packets(data: bytes, demuxer: str, label: str, limits: MediaLimits) -> _PacketIndex:
    """Demux (not decode) the whole file: count frames, find keyframes, check limits, spot truncation."""
    with av.open(io.BytesIO(data), mode="r", format=demuxer) as container:
        if not container.streams.video:
            raise MediaError(f"{label} has no video stream")
        stream = container.streams.video[0]
        codec = stream.codec_context.codec.canonical_name
        if codec not in _VIDEO_CODECS:
            raise MediaError(f"unsupported video codec {codec!r} in {label}")
        _check_side((stream.codec_context.width, stream.codec_context.height), limits.max_video_side, label)
        _check_pixels((stream.codec_context.width, stream.codec_context.height), limits, label)
        declared_frames = stream.frames
        aspect = stream.sample_aspect_ratio
        pixel_aspect = float(aspect) if aspect and 0.1 <= aspect <= 10 else 1.0
        if declared_frames > limits.max_frames:
            raise MediaError(
                f"{label} has {declared_frames} frames, over the {limits.max_frames}-frame limit"
            )
        packets = 0
        pts: list[int | None] = []
        keyframes: list[int] = []
        media_end_s = 0.0
        for packet in container.demux():
            if packet.size == 0 or (packet.pts is None and packet.dts is None):
                continue  # the flush packet PyAV appends at the end of each stream
            if packet.pts is not None and packet.time_base is not None:
                end = packet.pts + (packet.duration or 0)
                media_end_s = max(media_end_s, float(end * packet.time_base))
            if packet.stream.index != stream.index:
                continue
            packets += 1
            if packet.is_discard:
                continue  # decoded for reference only (before an MP4 edit list starts), never shown
            if len(pts) >= limits.max_frames:
                raise MediaError(f"{label} has more than {limits.max_frames} frames, the limit")
            pts.append(packet.pts)
            if packet.is_keyframe and packet.pts is not None:
                keyframes.append(packet.pts)
        _check_complete(label, packets, declared_frames, container.duration, media_end_s)
    complete_pts = [p for p in pts if p is not None]
    return _PacketIndex(
        frame_count=len(pts),
        presentation_pts=sorted(complete_pts) if len(complete_pts) == len(pts) else None,
        keyframe_pts=sorted(keyframes),
        pixel_aspect=pixel_aspect,
    )


def _check_complete(
    label: str, frames: int, declared_frames: int, duration_us: int | None, media_end_s: float
) -> None:
    """Refuse a cut-off file: fewer frames than the header declares, or media ending too early."""
    if declared_frames > 0:  # MP4/MOV: the sample table gives the count
        if frames < declared_frames:
            raise MediaError(f"truncated {label}: {frames} of {declared_frames} frames present")
        return
    if duration_us and duration_us > 0 and frames > 0:  # Matroska: only a duration is declared
        duration_s = duration_us / 1_000_000
        frame_s = media_end_s / frames
        if duration_s - media_end_s > max(0.1, 2 * frame_s):
            raise MediaError(f"truncated {label}: media ends at {media_end_s:.2f} s of {duration_s:.2f} s")


@contextlib.contextmanager
def _open_video(
    data: bytes, demuxer: str, limits: MediaLimits
) -> Iterator[tuple[av.container.InputContainer, av.video.stream.VideoStream]]:
    """Open the container for decoding its first video stream, with the decoder capped."""
    with av.open(io.BytesIO(data), mode="r", format=demuxer) as container:
        stream = container.streams.video[0]
        # A stream may switch to a bigger size mid-way; max_pixels makes FFmpeg refuse such frames
        # instead of allocating them.
        stream.codec_context.options = {"max_pixels": str(min(limits.max_pixels, limits.max_video_side**2))}
        stream.thread_type = _THREADING.get(stream.codec_context.codec.canonical_name, "SLICE")
        yield container, stream


def _decode_by_seeking(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    index: _PacketIndex,
    wanted: list[int],
    convert: Callable[[av.video.frame.VideoFrame, int], Frame],
) -> tuple[list[Frame], int]:
    """Decode forward, but jump to the keyframe before the next wanted frame when that skips frames.

    With short keyframe intervals this decodes a fraction of the stream; with long ones it never
    seeks and is a plain sequential pass. Returns fewer frames than wanted if seeking misbehaves,
    and how many frames were decoded in all.
    """
    assert index.presentation_pts is not None
    targets = [index.presentation_pts[position] for position in wanted]
    frames: list[Frame] = []
    decoded = 0
    next_target = 0
    newest_pts: int | None = None
    while next_target < len(targets):
        keyframe = index.keyframe_before(targets[next_target])
        if newest_pts is not None and keyframe > newest_pts:
            container.seek(keyframe, stream=stream, backward=True)
        for frame in container.decode(stream):
            decoded += 1
            if frame.pts is None:
                return frames, decoded
            newest_pts = frame.pts
            passed_target = False
            while next_target < len(targets) and frame.pts >= targets[next_target]:
                if frame.pts == targets[next_target]:
                    frames.append(convert(frame, wanted[next_target]))
                next_target += 1
                passed_target = True
            if next_target == len(targets):
                break
            if passed_target and index.keyframe_before(targets[next_target]) > newest_pts:
                break  # cheaper to seek than to decode up to the next keyframe
        else:
            break  # end of stream
    return frames, decoded


def _decode_in_order(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    index: _PacketIndex,
    wanted: list[int],
    convert: Callable[[av.video.frame.VideoFrame, int], Frame],
) -> tuple[list[Frame], int]:
    """Decode every frame up to the last wanted one, keeping (converting) only the wanted ones."""
    positions = {pts: i for i, pts in enumerate(index.presentation_pts or [])}
    wanted_set = set(wanted)
    frames: list[Frame] = []
    decoded = 0
    for frame in container.decode(stream):
        position = positions.get(frame.pts, decoded) if frame.pts is not None else decoded
        decoded += 1
        if position in wanted_set:
            frames.append(convert(frame, position))
        if position >= wanted[-1]:
            break
    return frames, decoded


def _video_frame_to_rgb(frame: av.video.frame.VideoFrame, pixel_aspect: float, max_side: int) -> RGBArray:
    """Scale (honouring the pixel aspect ratio) and convert in one swscale pass, then rotate."""
    display_width = round(frame.width * pixel_aspect)
    width, height = _fit((max(1, display_width), frame.height), max_side)
    rgb = frame.to_ndarray(format="rgb24", width=width, height=height, interpolation="AREA")
    quarter_turns = round(frame.rotation / 90) % 4
    if quarter_turns:
        rgb = np.rot90(rgb, quarter_turns)  # rotation is counter-clockwise, as is np.rot90
    return np.ascontiguousarray(rgb, dtype=np.uint8)


def _displayed_video_size(frame: av.video.frame.VideoFrame) -> tuple[int, int]:
    if round(frame.rotation / 90) % 2:
        return frame.height, frame.width
    return frame.width, frame.height


def _frame_time(frame: av.video.frame.VideoFrame) -> float | None:
    return float(frame.time) if frame.pts is not None and frame.time is not None else None


# --- shared helpers ----------------------------------------------------------------------------


def _check_pixels(size: tuple[int, int], limits: MediaLimits, label: str) -> None:
    width, height = size
    if width * height > limits.max_pixels:
        raise MediaError(
            f"{label} is {width}\u00d7{height} = {_mp(width * height)}, "
            f"over the {_mp(limits.max_pixels)} limit"
        )


def _check_side(size: tuple[int, int], max_side: int, label: str) -> None:
    if max(size) > max_side:
        raise MediaError(f"{label} is {size[0]}\u00d7{size[1]}, over the {max_side} px side limit")


def _displayed_size(size: tuple[int, int], orientation: int) -> tuple[int, int]:
    return (size[1], size[0]) if orientation >= 5 else size


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


def _mp(pixels: int) -> str:
    return f"{pixels / 1_000_000:.4g} MP"


def _mb(size: int) -> str:
    return f"{size / 1_000_000:.4g} MB"
