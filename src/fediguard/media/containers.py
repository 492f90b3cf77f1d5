"""What a video container declares, checked from its boxes before FFmpeg opens it.

``av.open`` reads an MP4's sample tables and builds its index in memory before PyAV hands back a
stream to check: a 3.7 KB file declaring 89 million samples costs gigabytes right there. So the
boxes are walked here first (no pixel and no sample is read) and a file is refused when it declares

- more video frames than ``max_frames`` (``stsz``, ``stts``, fragments' ``trun``), or a video
  sample entry larger than ``max_video_side`` / ``max_pixels``;
- a sample table with more entries than its box holds, or more fixed-size samples than the whole
  file holds (FFmpeg allocates for the declared count before reading it);
- a compressed movie header (``cmov``), which FFmpeg inflates to a declared size.

AVIF (HEIF) files are ISO BMFF too (:func:`check_heif`): every image's ``ispe`` (spatial extents)
is checked against ``max_pixels``, and an image sequence's track (``avis``: a ``moov`` whose track
handler is ``pict``) as a video's is, plus its frames x size against ``max_composited_pixels`` at
the cost of AV1 (:data:`~fediguard.media.limits.AV1_PIXEL_COST`), before libavif parses it.

For Matroska/WebM the video tracks' ``PixelWidth``/``PixelHeight`` are checked; it declares no
sample counts (its index is made of the bytes present). What slips past these checks meets the
decoder sandbox's limits (:mod:`fediguard.media.sandbox`).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from enum import IntEnum
from typing import Final

import numpy as np

from fediguard.errors import MediaError
from fediguard.media.limits import AV1_PIXEL_COST, MediaLimits, check_composited, check_pixels, check_side

# ISO BMFF boxes that hold only other boxes (the way down to the sample tables and fragments).
_CONTAINER_BOXES: Final = frozenset(
    {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"edts", b"moof", b"traf", b"mvex"}
)
# Sample-table boxes that are a 32-bit entry count then that many entries of this many bytes.
_TABLE_ENTRY_BYTES: Final = {
    b"stts": 8, b"ctts": 8, b"stsc": 12, b"stco": 4, b"co64": 8, b"stss": 4, b"stps": 4,
}  # fmt: skip
_MAX_DEPTH: Final = 16
# Track handlers whose samples are pictures: video, an image sequence (HEIF/AVIF) and its alpha plane.
_PICTURE_HANDLERS: Final = frozenset({b"vide", b"pict", b"auxv"})
# HEIF item properties: iprp holds ipco, which holds ispe (after meta's version and flags).
_PROPERTY_BOXES: Final = frozenset({b"iprp", b"ipco"})


def check_heif(data: bytes, label: str, limits: MediaLimits) -> None:
    """Refuse an AVIF whose images or image sequence declare more than ``limits`` allow."""
    view = memoryview(data)
    for _, kind, payload in _boxes(view, 0, len(view), ()):
        if kind != b"meta" or len(payload) < 4:
            continue
        for _, child, extents in _boxes(payload, 4, len(payload), (kind,), _PROPERTY_BOXES):
            if child == b"ispe" and len(extents) >= 12:
                width, height = struct.unpack_from(">II", extents, 4)
                check_pixels((width, height), limits, label)
    for frames, size in check_iso_bmff(data, label, limits):
        if size is not None:
            check_composited(frames, size, AV1_PIXEL_COST, limits, label)


def check_iso_bmff(data: bytes, label: str, limits: MediaLimits) -> list[tuple[int, tuple[int, int] | None]]:
    """Refuse an MP4/MOV whose boxes declare more than ``limits`` or than the file holds.

    Returns each picture track's declared frame count and sample entry size (if it has one)."""
    tracks: list[_Track] = []
    fragment_frames: dict[int, int] = {}
    fragment_track = 0
    for path, kind, payload in _boxes(memoryview(data), 0, len(data), ()):
        if kind == b"cmov":
            raise MediaError(f"{label} has a compressed movie header (cmov), which is not supported")
        if kind == b"trak":
            tracks.append(_Track())
        elif kind in _CONTAINER_BOXES:
            continue
        elif tracks and b"trak" in path:
            tracks[-1].read(kind, payload, len(data), label)
        elif kind == b"tfhd" and len(payload) >= 8:
            (fragment_track,) = struct.unpack_from(">I", payload, 4)
        elif kind == b"trun":
            fragment_frames[fragment_track] = fragment_frames.get(fragment_track, 0) + _trun_count(
                payload, label
            )
    found: list[tuple[int, tuple[int, int] | None]] = []
    for track in tracks:
        if not track.video:
            continue
        fragments = fragment_frames.get(track.track_id, 0) if track.track_id is not None else 0
        frames = max(track.declared_frames, fragments)
        if frames > limits.max_frames:
            raise MediaError(
                f"{label} declares {frames:,} video frames, over the {limits.max_frames}-frame limit"
            )
        if track.size is not None:
            check_side(track.size, limits.max_video_side, label)
            check_pixels(track.size, limits, label)
        found.append((frames, track.size))
    return found


class _Track:
    """What one ``trak`` declares, as far as the checks need."""

    def __init__(self) -> None:
        self.track_id: int | None = None
        self.video = False
        self.declared_frames = 0
        self.size: tuple[int, int] | None = None

    def read(self, kind: bytes, payload: memoryview, file_size: int, label: str) -> None:
        if kind == b"tkhd" and len(payload) >= 24:
            self.track_id = struct.unpack_from(">I", payload, 20 if payload[0] == 1 else 12)[0]
        elif kind == b"hdlr" and len(payload) >= 12:
            self.video = bytes(payload[8:12]) in _PICTURE_HANDLERS
        elif kind == b"stsd" and len(payload) >= 8 + 36:
            # The first sample entry: size, type, 6 reserved, data reference index, then for a
            # VisualSampleEntry 16 bytes of pre-defined/reserved fields and width, height.
            self.size = struct.unpack_from(">HH", payload, 8 + 32)
        elif kind == b"stsz" and len(payload) >= 12:
            sample_size, count = struct.unpack_from(">II", payload, 4)
            if sample_size == 0:
                _check_table(kind, count, 4, len(payload) - 12, label)
            elif count * sample_size > file_size:
                raise MediaError(
                    f"{label} declares {count:,} samples of {sample_size:,} B in a file of {file_size:,} B"
                )
            self.declared_frames = max(self.declared_frames, count)
        elif kind == b"stz2" and len(payload) >= 12:
            field_bits, count = payload[7], struct.unpack_from(">I", payload, 8)[0]
            _check_table(kind, count, max(field_bits, 4) / 8, len(payload) - 12, label)
            self.declared_frames = max(self.declared_frames, count)
        elif kind in _TABLE_ENTRY_BYTES and len(payload) >= 8:
            (count,) = struct.unpack_from(">I", payload, 4)
            _check_table(kind, count, _TABLE_ENTRY_BYTES[kind], len(payload) - 8, label)
            if kind == b"stts":
                counts = np.frombuffer(payload, dtype=">u4", count=2 * count, offset=8)[0::2]
                self.declared_frames = max(self.declared_frames, int(counts.sum(dtype=np.uint64)))
        elif kind == b"elst" and len(payload) >= 8:
            (count,) = struct.unpack_from(">I", payload, 4)
            _check_table(kind, count, 20 if payload[0] == 1 else 12, len(payload) - 8, label)


def _check_table(kind: bytes, count: int, entry_bytes: float, held: int, label: str) -> None:
    if count * entry_bytes > held:
        raise MediaError(
            f"{label}: its {kind.decode('latin-1')} box declares {count:,} entries but holds {held:,} bytes"
        )


def _trun_count(payload: memoryview, label: str) -> int:
    """A fragment's sample count, refused when its per-sample fields do not fit in the box."""
    if len(payload) < 8:
        return 0
    flags = int.from_bytes(payload[1:4], "big")
    (count,) = struct.unpack_from(">I", payload, 4)
    fixed = 8 + (4 if flags & 0x1 else 0) + (4 if flags & 0x4 else 0)
    per_sample = 4 * bin(flags & 0xF00).count("1")
    if per_sample:
        _check_table(b"trun", count, per_sample, len(payload) - fixed, label)
    return int(count)


def _boxes(
    data: memoryview,
    start: int,
    end: int,
    path: tuple[bytes, ...],
    containers: frozenset[bytes] = _CONTAINER_BOXES,
) -> Iterator[tuple[tuple[bytes, ...], bytes, memoryview]]:
    """Every box in ``data[start:end]`` depth first: (path of parents, type, payload); the boxes
    of ``containers`` are walked into."""
    offset = start
    while offset + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, offset)
        header = 8
        if size == 1:
            if offset + 16 > end:
                return
            (size,) = struct.unpack_from(">Q", data, offset + 8)
            header = 16
        elif size == 0:
            size = end - offset
        if size < header:
            return  # a broken box: FFmpeg reports it better than we would
        box_end = min(offset + size, end)
        yield path, bytes(kind), data[offset + header : box_end]
        if kind in containers and len(path) < _MAX_DEPTH:
            yield from _boxes(data, offset + header, box_end, (*path, kind), containers)
        offset += size


# --- Matroska / WebM ----------------------------------------------------------------------------


class _Id(IntEnum):
    """The EBML element ids on the way to a track's declared size (Matroska specification)."""

    SEGMENT = 0x18538067
    TRACKS = 0x1654AE6B
    CLUSTER = 0x1F43B675
    TRACK_ENTRY = 0xAE
    TRACK_TYPE = 0x83
    VIDEO = 0xE0
    PIXEL_WIDTH = 0xB0
    PIXEL_HEIGHT = 0xBA


_VIDEO_TRACK: Final = 1  # TrackType of a video track


def check_matroska(data: bytes, label: str, limits: MediaLimits) -> None:
    """Refuse a Matroska/WebM whose video tracks declare a size over ``limits``."""
    for element, start, end in _elements(data, 0, len(data)):
        if element != _Id.SEGMENT:
            continue
        for child, child_start, child_end in _elements(data, start, end):
            if child == _Id.CLUSTER:
                return  # the tracks come before the media
            if child != _Id.TRACKS:
                continue
            for entry, entry_start, entry_end in _elements(data, child_start, child_end):
                if entry == _Id.TRACK_ENTRY:
                    _check_track(data, entry_start, entry_end, label, limits)
        return


def _check_track(data: bytes, start: int, end: int, label: str, limits: MediaLimits) -> None:
    track_type = 0
    size = [0, 0]
    for element, child_start, child_end in _elements(data, start, end):
        if element == _Id.TRACK_TYPE:
            track_type = int.from_bytes(data[child_start:child_end], "big")
        elif element == _Id.VIDEO:
            for field, field_start, field_end in _elements(data, child_start, child_end):
                if field in (_Id.PIXEL_WIDTH, _Id.PIXEL_HEIGHT) and field_end - field_start <= 8:
                    size[field == _Id.PIXEL_HEIGHT] = int.from_bytes(data[field_start:field_end], "big")
    if track_type == _VIDEO_TRACK and all(size):
        check_side((size[0], size[1]), limits.max_video_side, label)
        check_pixels((size[0], size[1]), limits, label)


def _elements(data: bytes, start: int, end: int) -> Iterator[tuple[int, int, int]]:
    """The EBML elements in ``data[start:end]``: (id, payload start, payload end); an unknown size
    runs to ``end``."""
    offset = start
    while offset < end:
        element = _vint(data, offset, end, keep_marker=True)
        if element is None:
            return
        element_id, offset = element
        length = _vint(data, offset, end, keep_marker=False)
        if length is None:
            return
        size, offset = length
        payload_end = end if size < 0 else min(end, offset + size)
        yield element_id, offset, payload_end
        offset = payload_end


def _vint(data: bytes, offset: int, end: int, *, keep_marker: bool) -> tuple[int, int] | None:
    """An EBML variable-size integer at ``offset``: (value, offset after it); -1 for "unknown size"."""
    if offset >= end:
        return None
    first = data[offset]
    width = 9 - first.bit_length() if first else 9
    if width > 8 or offset + width > end:
        return None
    value = int.from_bytes(data[offset : offset + width], "big")
    if keep_marker:
        return value, offset + width
    value &= (1 << (7 * width)) - 1
    if value == (1 << (7 * width)) - 1:
        return -1, offset + width
    return value, offset + width
