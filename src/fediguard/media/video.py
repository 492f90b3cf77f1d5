"""Videos (mp4, mov, webm, matroska) through PyAV: a few frames sampled over the whole duration.

The container's boxes are checked first (:mod:`fediguard.media.containers`), before FFmpeg builds
its index of them; then a demux-only pass counts the frames, finds the keyframes and checks every limit and a
truncated file before any frame is decoded; then only the sampled frames are decoded, seeking to
the keyframe before each when that skips work. Each video is read by the one FFmpeg demuxer and
the few codecs named here, to keep FFmpeg's attack surface small.
"""

from __future__ import annotations

import bisect
import contextlib
import io
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Final

import av
import av.container
import av.video.frame
import av.video.stream
import numpy as np

from fediguard.errors import MediaError
from fediguard.media.containers import check_iso_bmff, check_matroska
from fediguard.media.frames import DecodedMedia, Frame, RGBArray
from fediguard.media.limits import MediaLimits, check_pixels, check_side, fit, spread_indices

# Named as before the split from decode.py: the name that logging configuration filters on.
log = logging.getLogger("fediguard.media.decode")

# Sniffed media type -> the one FFmpeg demuxer allowed to read it. Naming it stops FFmpeg from
# probing, which could otherwise pick a playlist demuxer (hls, concat) that opens other URLs.
DEMUXERS: Final = {
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


def decode_video(data: bytes, media_type: str, label: str, limits: MediaLimits) -> DecodedMedia:
    demuxer = DEMUXERS[media_type]
    if demuxer == "matroska":
        check_matroska(data, label, limits)
    else:
        check_iso_bmff(data, label, limits)
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
        check_side((stream.codec_context.width, stream.codec_context.height), limits.max_video_side, label)
        check_pixels((stream.codec_context.width, stream.codec_context.height), limits, label)
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
    width, height = fit((max(1, display_width), frame.height), max_side)
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
