"""Tell the media type of some bytes from their first bytes (magic numbers), never from a name.

The gateway gets a ``Content-Type`` header it cannot trust, and the storage sweeper gets bare objects
whose names say nothing, so both ask :func:`sniff`. Only signatures are read: nothing is decoded,
and a short prefix of a file is enough (an APNG whose ``acTL`` lies past the prefix reads as PNG).
"""

from __future__ import annotations

import struct

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JXL_CODESTREAM_SIGNATURE = b"\xff\x0a"
JXL_CONTAINER_SIGNATURE = b"\x00\x00\x00\x0cJXL \x0d\x0a\x87\x0a"
EBML_SIGNATURE = b"\x1a\x45\xdf\xa3"

# ISO base media file format (ftyp) brands. AVIF and HEIF are still images carried in the same box
# structure as MP4, so the brands decide; any other ftyp brand is taken as an MP4-family video.
_AVIF_BRANDS = frozenset({b"avif", b"avis"})
_HEIF_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs"})
_HEIF_STRUCTURAL_BRANDS = frozenset({b"mif1", b"msf1", b"miaf"})
_QUICKTIME_BRAND = b"qt  "
# QuickTime files older than the ftyp box start with one of these atoms.
_QUICKTIME_LEADING_ATOMS = frozenset({b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"})
# BITMAPINFOHEADER family sizes: "BM" alone is too weak a signature (1 in 65536 random files).
_BMP_DIB_HEADER_SIZES = frozenset({12, 16, 40, 52, 56, 64, 108, 124})
# How far into an EBML header to look for the DocType ("webm" or "matroska").
_EBML_DOCTYPE_WINDOW = 64
# An APNG's acTL chunk must precede the first IDAT; stop looking after this many chunks.
_PNG_MAX_CHUNKS_BEFORE_IDAT = 64


def sniff(data: bytes) -> str | None:
    """The media type that ``data`` starts like, or ``None`` when it looks like no known media.

    Returns one of ``image/jpeg``, ``image/png``, ``image/apng``, ``image/gif``, ``image/webp``,
    ``image/avif``, ``image/heic``, ``image/jxl``, ``image/bmp``, ``image/tiff``, ``video/mp4``,
    ``video/quicktime``, ``video/webm`` or ``video/x-matroska``.
    """
    head = bytes(data[:32])
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(PNG_SIGNATURE):
        return "image/apng" if _png_is_animated(data) else "image/png"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "image/webp"
    if head.startswith((JXL_CODESTREAM_SIGNATURE, JXL_CONTAINER_SIGNATURE)):
        return "image/jxl"
    if head[4:8] == b"ftyp":
        return _iso_bmff_type(data)
    if head.startswith(EBML_SIGNATURE):
        return _ebml_type(data)
    if head.startswith((b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")):
        return "image/tiff"
    if head.startswith(b"BM") and len(head) >= 18:
        (dib_header_size,) = struct.unpack_from("<I", head, 14)
        if dib_header_size in _BMP_DIB_HEADER_SIZES:
            return "image/bmp"
    if head[4:8] in _QUICKTIME_LEADING_ATOMS:
        return "video/quicktime"
    return None


def is_media(data: bytes) -> bool:
    """Whether ``data`` looks like an image or a video by its first bytes."""
    return sniff(data) is not None


def _png_is_animated(data: bytes) -> bool:
    """Whether an ``acTL`` chunk comes before the first ``IDAT``: the APNG definition."""
    offset = len(PNG_SIGNATURE)
    for _ in range(_PNG_MAX_CHUNKS_BEFORE_IDAT):
        if offset + 8 > len(data):
            return False
        length, chunk_type = struct.unpack_from(">I4s", data, offset)
        if chunk_type == b"acTL":
            return True
        if chunk_type == b"IDAT":
            return False
        offset += 12 + length  # length, type, data, CRC
    return False


def _iso_bmff_type(data: bytes) -> str:
    """Media type of an ISO base media file from its ``ftyp`` box (major and compatible brands)."""
    (box_size,) = struct.unpack_from(">I", data, 0)
    major = bytes(data[8:12])
    # Compatible brands follow the minor version; clamp to what we were given.
    end = min(max(box_size, 16), len(data))
    compatible = {bytes(data[i : i + 4]) for i in range(16, end - 3, 4)}
    if major in _AVIF_BRANDS or (major in _HEIF_STRUCTURAL_BRANDS and compatible & _AVIF_BRANDS):
        return "image/avif"
    if major in _HEIF_BRANDS or (major in _HEIF_STRUCTURAL_BRANDS and compatible & _HEIF_BRANDS):
        return "image/heic"
    if major == _QUICKTIME_BRAND:
        return "video/quicktime"
    return "video/mp4"


def _ebml_type(data: bytes) -> str:
    """``video/webm`` or ``video/x-matroska`` by the EBML DocType; WebM is the Matroska subset."""
    header = bytes(data[:_EBML_DOCTYPE_WINDOW])
    if b"matroska" in header:
        return "video/x-matroska"
    return "video/webm"
