"""Benign test media for the decoding tests, all made in memory (nothing is written to disk).

Photos come from scikit-image's sample data; animation and video frames carry their own frame
number drawn as ten black/white cells, so a test can tell which source frame it got back.
"""

from __future__ import annotations

import io
import os
import struct
import threading
import time
import zlib
from collections.abc import Iterable, Iterator, Sequence
from fractions import Fraction
from typing import Any

import av
import av.video.stream
import numpy as np
import pytest
from PIL import Image
from skimage import data as sample_data

from fediguard.media.decode import JXL_SUPPORTED
from support.bombs import h264_codec

NUMBER_BITS = 10


def astronaut(size: tuple[int, int] | None = None) -> Image.Image:
    photo = Image.fromarray(sample_data.astronaut())  # type: ignore[no-untyped-call]
    return photo if size is None else photo.resize(size)


def numbered_frame(number: int, size: tuple[int, int] = (320, 240)) -> np.ndarray:
    """The astronaut with ``number`` written in binary across the top quarter (white = 1)."""
    width, height = size
    frame = np.array(astronaut(size))
    band = height // 4
    cell = width // NUMBER_BITS
    for bit in range(NUMBER_BITS):
        frame[:band, bit * cell : (bit + 1) * cell] = 255 if number >> bit & 1 else 0
    return frame


def read_number(image: np.ndarray) -> int:
    """The number :func:`numbered_frame` drew, read back from the middle of each cell."""
    height, width = image.shape[:2]
    band = height // 4
    cell = width // NUMBER_BITS
    number = 0
    for bit in range(NUMBER_BITS):
        patch = image[band // 4 : band * 3 // 4, bit * cell + cell // 4 : (bit + 1) * cell - cell // 4]
        if patch.mean() > 128:
            number |= 1 << bit
    return number


def still(image: Image.Image | np.ndarray, fmt: str, **params: Any) -> bytes:
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buf = io.BytesIO()
    image.save(buf, format=fmt, **params)
    return buf.getvalue()


def animation(frames: Sequence[np.ndarray], fmt: str, duration_ms: int = 40, **params: Any) -> bytes:
    images = [Image.fromarray(f) for f in frames]
    buf = io.BytesIO()
    images[0].save(
        buf, format=fmt, save_all=True, append_images=images[1:], duration=duration_ms, loop=0, **params
    )
    return buf.getvalue()


def video(
    frames: Iterable[np.ndarray],
    *,
    size: tuple[int, int] = (320, 240),
    container: str = "mp4",
    codec: str | None = None,
    fps: int = 30,
    gop: int | None = None,
    options: dict[str, str] | None = None,
    rotation: int | None = None,
    container_options: dict[str, str] | None = None,
) -> bytes:
    """Encode RGB frames with PyAV into an in-memory container."""
    codec = codec or h264_codec()
    buf = io.BytesIO()
    with av.open(buf, "w", format=container, options=container_options or {}) as out:
        stream = out.add_stream(codec, rate=Fraction(fps))
        assert isinstance(stream, av.video.stream.VideoStream)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        defaults = {"libx264": {"preset": "ultrafast"}, "libvpx": {"deadline": "realtime", "cpu-used": "8"}}
        defaults["libvpx-vp9"] = defaults["libvpx"]
        stream.options = {**defaults.get(codec, {}), **(options or {})}
        if gop:
            stream.codec_context.gop_size = gop
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue()


def numbered_video(count: int, size: tuple[int, int] = (320, 240), **kwargs: Any) -> bytes:
    # The astronaut is resized once; only the number band changes between frames.
    template = numbered_frame(0, size)
    width, height = size
    band, cell = height // 4, width // NUMBER_BITS

    def frames() -> Iterator[np.ndarray]:
        for number in range(count):
            frame = template.copy()
            for bit in range(NUMBER_BITS):
                frame[:band, bit * cell : (bit + 1) * cell] = 255 if number >> bit & 1 else 0
            yield frame

    return video(frames(), size=size, **kwargs)


_MP4_CONTAINER_BOXES = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"edts", b"dinf"}


def faststart(data: bytes) -> bytes:
    """Move an MP4's moov box before its mdat (what ``-movflags faststart`` does on a real file).

    PyAV cannot do it for an in-memory output, so the chunk offsets are shifted here.
    """
    boxes: list[tuple[bytes, bytes]] = []
    offset = 0
    while offset < len(data):
        size, kind = struct.unpack_from(">I4s", data, offset)
        boxes.append((kind, data[offset : offset + size]))
        offset += size
    moov = bytearray(next(box for kind, box in boxes if kind == b"moov"))
    _shift_chunk_offsets(moov, 8, len(moov), len(moov))
    rest = [box for kind, box in boxes if kind not in (b"ftyp", b"moov")]
    ftyp = next(box for kind, box in boxes if kind == b"ftyp")
    return ftyp + bytes(moov) + b"".join(rest)


def _shift_chunk_offsets(box: bytearray, start: int, end: int, shift: int) -> None:
    offset = start
    while offset + 8 <= end:
        size, kind = struct.unpack_from(">I4s", box, offset)
        if kind in _MP4_CONTAINER_BOXES:
            _shift_chunk_offsets(box, offset + 8, offset + size, shift)
        elif kind in (b"stco", b"co64"):
            (count,) = struct.unpack_from(">I", box, offset + 12)
            width, fmt = (4, ">I") if kind == b"stco" else (8, ">Q")
            for i in range(count):
                position = offset + 16 + i * width
                (value,) = struct.unpack_from(fmt, box, position)
                struct.pack_into(fmt, box, position, value + shift)
        offset += size


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_header(width: int, height: int, bit_depth: int = 8, colour_type: int = 0) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)


def compressible_png(width: int, height: int) -> bytes:
    """A valid all-black greyscale PNG of any size, built row by row so the test itself stays small."""
    compressor = zlib.compressobj(9)
    row = b"\x00" * (width + 1)  # filter byte + pixels
    parts = [compressor.compress(row) for _ in range(height)]
    idat = b"".join(parts) + compressor.flush()
    return png_header(width, height) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRss:
    """Samples the process's resident memory in a background thread; ``.delta`` = peak - start."""

    def __init__(self, interval_s: float = 0.002) -> None:
        self.interval_s = interval_s
        self.start = self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            time.sleep(self.interval_s)

    def __enter__(self) -> PeakRss:
        self.start = self.peak = rss_bytes()
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())

    @property
    def delta(self) -> int:
        return self.peak - self.start


class MediaMaker:
    """The helpers above, handed to tests through the ``make`` fixture (conftest is not importable)."""

    astronaut = staticmethod(astronaut)
    numbered_frame = staticmethod(numbered_frame)
    read_number = staticmethod(read_number)
    still = staticmethod(still)
    animation = staticmethod(animation)
    video = staticmethod(video)
    numbered_video = staticmethod(numbered_video)
    png_chunk = staticmethod(png_chunk)
    png_header = staticmethod(png_header)
    compressible_png = staticmethod(compressible_png)
    faststart = staticmethod(faststart)
    PeakRss = PeakRss


@pytest.fixture(scope="session")
def make() -> type[MediaMaker]:
    return MediaMaker


@pytest.fixture(scope="session")
def numbered_frames() -> list[np.ndarray]:
    return [numbered_frame(i, (160, 120)) for i in range(6)]


@pytest.fixture(scope="session")
def samples(numbered_frames: list[np.ndarray]) -> dict[str, bytes]:
    """One valid file of every supported kind, keyed by a short name."""
    photo = astronaut()
    made = {
        "jpeg": still(photo, "JPEG", quality=90),
        "png": still(photo, "PNG"),
        "apng": animation(numbered_frames, "PNG"),
        "gif": animation(numbered_frames, "GIF"),
        "webp": still(photo, "WEBP"),
        "webp-animated": animation(numbered_frames, "WEBP", lossless=True),
        "avif": still(photo, "AVIF"),
        "avif-animated": animation(numbered_frames, "AVIF", quality=90),
        "bmp": still(photo, "BMP"),
        "tiff": still(photo, "TIFF"),
        "mp4": numbered_video(30),
        "mov": numbered_video(30, container="mov"),
        "webm-vp8": numbered_video(30, container="webm", codec="libvpx"),
        "webm-vp9": numbered_video(30, container="webm", codec="libvpx-vp9"),
        "mkv": numbered_video(30, container="matroska", codec="libvpx-vp9"),
    }
    if JXL_SUPPORTED:
        made["jxl"] = still(photo, "JXL")
    return made
