"""JPEG XL: whether Pillow can read it here, and its size read from the header without decoding.

JPEG XL needs a third-party Pillow plugin, and that plugin decodes every pixel inside
``Image.open()``, before the usual header check could refuse a decompression bomb. So the size is
parsed here from the codestream's SizeHeader first: the one image size fediguard reads itself
instead of asking Pillow.
"""

from __future__ import annotations

import struct

from fediguard.errors import MediaError
from fediguard.media.sniff import JXL_CODESTREAM_SIGNATURE

try:  # JPEG XL needs a third-party Pillow plugin; without it, jxl is "unsupported".
    import pillow_jxl  # noqa: F401  (imported for its side effect: registers the JXL format)

    JXL_SUPPORTED = True
except ImportError:  # pragma: no cover - depends on the installation
    JXL_SUPPORTED = False


def jxl_size(data: bytes) -> tuple[int, int]:
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
