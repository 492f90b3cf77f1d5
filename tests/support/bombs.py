"""Decompression bombs for tests and bench/hostile.py, built in memory from flat colours.

Each is small (a few KB) and benign: every frame is one flat colour. None is ever written to disk.
Animations repeat one tiny encoded frame many times in a container built here (encoding 100 huge
frames with Pillow would take minutes); videos and stills are valid files made with PyAV or Pillow
whose headers are then patched to declare absurd counts or sizes.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Iterator
from fractions import Fraction

import av
import av.video.stream
import numpy as np
from PIL import Image

FLAT = (40, 90, 160)
_MP4_CONTAINERS = frozenset(
    {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"edts", b"dinf", b"moof", b"traf", b"iprp", b"ipco"}
)


# --- animations ---------------------------------------------------------------------------------


def webp_animation(frames: int, size: tuple[int, int]) -> bytes:
    """An animated WebP of ``frames`` lossless flat frames of ``size``: ~30 bytes per frame."""
    still = _encode(Image.new("RGB", size, FLAT), "WEBP", lossless=True, method=0)
    vp8l = still[12:]  # the one VP8L chunk after "RIFF" size "WEBP"
    width, height = size
    anmf = _u24(0) + _u24(0) + _u24(width - 1) + _u24(height - 1) + _u24(40) + b"\x00" + vp8l
    body = (
        _riff_chunk(b"VP8X", b"\x02\x00\x00\x00" + _u24(width - 1) + _u24(height - 1))
        + _riff_chunk(b"ANIM", b"\xff\xff\xff\xff" + b"\x00\x00")
        + _riff_chunk(b"ANMF", anmf) * frames
    )
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WEBP" + body


def apng(frames: int, size: tuple[int, int]) -> bytes:
    """An APNG of ``frames`` 1-bit black frames of ``size``, all sharing one compressed picture."""
    width, height = size
    row = b"\x00" * (1 + (width + 7) // 8)
    compressor = zlib.compressobj(9)
    pixels = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    chunks = [png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))]
    chunks.append(png_chunk(b"acTL", struct.pack(">II", frames, 0)))
    sequence = 0
    for frame in range(frames):
        control = struct.pack(">IIIIIHHBB", sequence, width, height, 0, 0, 1, 25, 0, 0)
        chunks.append(png_chunk(b"fcTL", control))
        sequence += 1
        if frame == 0:
            chunks.append(png_chunk(b"IDAT", pixels))
        else:
            chunks.append(png_chunk(b"fdAT", struct.pack(">I", sequence) + pixels))
            sequence += 1
    chunks.append(png_chunk(b"IEND", b""))
    return b"\x89PNG\r\n\x1a\n" + b"".join(chunks)


def gif(frames: int, size: tuple[int, int]) -> bytes:
    """A GIF of ``frames`` flat frames of ``size``: one frame encoded by Pillow, repeated."""
    one = _encode(Image.new("P", size, 1), "GIF", duration=40, loop=0)
    head, frame = _split_gif(one)
    return head + frame * frames + b"\x3b"


def avif_animation(frames: int, size: tuple[int, int]) -> bytes:
    """An animated AVIF encoded by Pillow (slow beyond a few megapixels: keep ``size`` small)."""
    images = [Image.new("RGB", size, (i * 40 % 256, 90, 160)) for i in range(frames)]
    buf = io.BytesIO()
    images[0].save(buf, "AVIF", save_all=True, append_images=images[1:], duration=40, quality=10, speed=10)
    return buf.getvalue()


def avif_sequence_declaring(
    frames: int, size: tuple[int, int], *, declared_frames: int | None = None
) -> bytes:
    """An AVIF image sequence of ``frames`` tiny frames whose boxes then claim each is ``size``
    (``ispe``, the sample entry and the track header) and, with ``declared_frames``, that the
    sample table's first entry (``stts``) holds that many: a few KB that declare a huge decode."""
    data = bytearray(avif_animation(frames, (64, 48)))
    width, height = size
    for kind, offset, _ in iso_boxes(data):
        if kind == b"ispe":
            struct.pack_into(">II", data, offset + 12, width, height)
        elif kind == b"stsd":
            struct.pack_into(">HH", data, offset + 16 + 32, width, height)
        elif kind == b"tkhd":
            struct.pack_into(
                ">II", data, offset + 8 + (88 if data[offset + 8] == 1 else 76), width << 16, height << 16
            )
        elif kind == b"stts" and declared_frames is not None:
            struct.pack_into(">I", data, offset + 16, declared_frames)
    return bytes(data)


# --- stills with patched headers -----------------------------------------------------------------


def png_declaring(width: int, height: int) -> bytes:
    """A valid small PNG whose IHDR then claims ``width`` x ``height`` (CRC recomputed)."""
    data = bytearray(_encode(Image.new("RGB", (64, 48), FLAT), "PNG"))
    struct.pack_into(">II", data, 16, width, height)
    struct.pack_into(">I", data, 29, zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def jpeg_declaring(width: int, height: int) -> bytes:
    """A valid small JPEG whose SOF0 segment then claims ``width`` x ``height``."""
    data = bytearray(_encode(Image.new("RGB", (64, 48), FLAT), "JPEG"))
    sof = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, height, width)
    return bytes(data)


def png_pixels(width: int, height: int) -> bytes:
    """A valid RGBA PNG of ``width`` x ``height`` transparent pixels (4 bytes each once decoded)."""
    row = b"\x00" * (1 + 4 * width)
    compressor = zlib.compressobj(9)
    pixels = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + header + png_chunk(b"IDAT", pixels) + png_chunk(b"IEND", b"")


# --- videos with patched headers ------------------------------------------------------------------


def small_video(container: str = "mp4", frames: int = 3, size: tuple[int, int] = (64, 48)) -> bytes:
    """A tiny valid video of flat frames (H.264 in MP4 when x264 is there, else MPEG-4; VP8 in WebM)."""
    codec = "libvpx" if container == "webm" else h264_codec()
    buf = io.BytesIO()
    with av.open(buf, "w", format=container) as out:
        stream = out.add_stream(codec, rate=Fraction(25))
        assert isinstance(stream, av.video.stream.VideoStream)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        picture = np.full((size[1], size[0], 3), FLAT, dtype=np.uint8)
        for _ in range(frames):
            for packet in stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue()


def mp4_declaring_samples(count: int, *, tables: tuple[str, ...] = ("stsz", "stts")) -> bytes:
    """A tiny MP4 whose sample tables claim ``count`` samples (stsz: each of 1 byte)."""
    data = bytearray(small_video())
    for kind, offset, _ in iso_boxes(data):
        if kind == b"stsz" and "stsz" in tables:
            struct.pack_into(">II", data, offset + 12, 1, count)
        elif kind == b"stts" and "stts" in tables:
            struct.pack_into(">I", data, offset + 16, count)  # the first entry's sample count
    return bytes(data)


def mp4_declaring_size(width: int, height: int, *, box: str = "stsd") -> bytes:
    """A tiny MP4 whose video sample entry (``stsd``) or track header (``tkhd``) claims a size."""
    data = bytearray(small_video())
    for kind, offset, _ in iso_boxes(data):
        if kind == b"stsd" and box == "stsd":
            struct.pack_into(">HH", data, offset + 16 + 32, width, height)
        elif kind == b"tkhd" and box == "tkhd":
            struct.pack_into(">II", data, offset + 8 + 76, width << 16, height << 16)
    return bytes(data)


def webm_declaring_size(width: int) -> bytes:
    """A tiny WebM whose video track's PixelWidth claims ``width`` (at most 65535)."""
    data = small_video("webm", size=(320, 48))
    field = b"\xb0\x82\x01\x40"  # PixelWidth, 2 bytes, 320
    assert data.count(field) == 1
    return data.replace(field, b"\xb0\x82" + struct.pack(">H", width))


def iso_boxes(
    data: bytes | bytearray, start: int = 0, end: int | None = None
) -> Iterator[tuple[bytes, int, int]]:
    """(type, offset, size) of every box, depth first."""
    end = len(data) if end is None else end
    offset = start
    while offset + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, offset)
        if size < 8:
            return
        yield kind, offset, size
        if kind in _MP4_CONTAINERS:
            yield from iso_boxes(data, offset + 8, offset + size)
        elif kind == b"meta":  # a full box: version and flags before its boxes
            yield from iso_boxes(data, offset + 12, offset + size)
        offset += size


# --- helpers ----------------------------------------------------------------------------------------


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **params)
    return buf.getvalue()


def _u24(value: int) -> bytes:
    return value.to_bytes(3, "little")


def _riff_chunk(kind: bytes, payload: bytes) -> bytes:
    return kind + struct.pack("<I", len(payload)) + payload + (b"\x00" if len(payload) % 2 else b"")


def _split_gif(data: bytes) -> tuple[bytes, bytes]:
    """A one-frame GIF as (header up to its first frame, the frame: extensions + image), no trailer."""
    flags = data[10]
    offset = 13 + (3 * 2 ** ((flags & 7) + 1) if flags & 0x80 else 0)
    head_end = None
    while data[offset] == 0x21:  # extensions before the image; the NETSCAPE loop one stays in the head
        label = data[offset + 1]
        end = _skip_sub_blocks(data, offset + 2)
        if label == 0xF9 and head_end is None:
            head_end = offset
        offset = end
    assert data[offset] == 0x2C
    image_flags = data[offset + 9]
    image_start = offset
    offset += 10 + (3 * 2 ** ((image_flags & 7) + 1) if image_flags & 0x80 else 0) + 1
    frame_end = _skip_sub_blocks(data, offset)
    frame_start = head_end if head_end is not None else image_start
    return data[:frame_start], data[frame_start:frame_end]


def _skip_sub_blocks(data: bytes, offset: int) -> int:
    while data[offset]:
        offset += data[offset] + 1
    return offset + 1


def h264_codec() -> str:
    """libx264 where PyAV has it, else FFmpeg's own MPEG-4 encoder."""
    try:
        av.codec.Codec("libx264", "w")
    except Exception:
        return "mpeg4"
    return "libx264"
