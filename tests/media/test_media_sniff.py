"""sniff(): the media type from the first bytes, for the gateway and the storage sweeper."""

from __future__ import annotations

import random
import struct
from typing import Any

import pytest

from fediguard.media.decode import JXL_SUPPORTED
from fediguard.media.sniff import is_media, sniff

EXPECTED = {
    "jpeg": "image/jpeg",
    "png": "image/png",
    "apng": "image/apng",
    "gif": "image/gif",
    "webp": "image/webp",
    "webp-animated": "image/webp",
    "avif": "image/avif",
    "avif-animated": "image/avif",
    "bmp": "image/bmp",
    "tiff": "image/tiff",
    "jxl": "image/jxl",
    "mp4": "video/mp4",
    "mov": "video/quicktime",
    "webm-vp8": "video/webm",
    "webm-vp9": "video/webm",
    "mkv": "video/x-matroska",
}


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_sniff_generated_files(samples: dict[str, bytes], kind: str) -> None:
    if kind not in samples:
        pytest.skip(f"cannot encode {kind} here")
    assert sniff(samples[kind]) == EXPECTED[kind]
    assert is_media(samples[kind])


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_sniff_needs_only_a_prefix(samples: dict[str, bytes], kind: str) -> None:
    """The sweeper may read only the start of an object; 256 bytes must be enough."""
    if kind not in samples:
        pytest.skip(f"cannot encode {kind} here")
    assert sniff(samples[kind][:256]) == EXPECTED[kind]


def test_png_with_actl_after_idat_is_not_apng(make: Any) -> None:
    still_png = make.compressible_png(4, 4)
    iend = still_png.rindex(b"IEND") - 4
    late_actl = still_png[:iend] + make.png_chunk(b"acTL", struct.pack(">II", 2, 0)) + still_png[iend:]
    assert sniff(late_actl) == "image/png"
    header_end = len(make.png_header(4, 4))
    early_actl = still_png[:header_end] + make.png_chunk(b"acTL", b"\0" * 8) + still_png[header_end:]
    assert sniff(early_actl) == "image/apng"


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"\x00\x00\x00\x0cJXL \x0d\x0a\x87\x0a\x00\x00\x00\x14ftypjxl ", "image/jxl"),
        (b"\xff\x0a\xfa\x1f", "image/jxl"),
        (b"MM\x00*\x00\x00\x00\x08", "image/tiff"),
        (b"II*\x00\x08\x00\x00\x00", "image/tiff"),
        (b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf", "image/avif"),
        (b"\x00\x00\x00\x1cftypmif1\x00\x00\x00\x00mif1avifmiaf", "image/avif"),
        (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic", "image/heic"),
        (b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom", "video/mp4"),
        (b"\x00\x00\x00\x18ftypM4V \x00\x00\x00\x00M4V mp42", "video/mp4"),
        (b"\x00\x00\x00\x14ftypqt  \x00\x00\x02\x00qt  ", "video/quicktime"),
        (b"\x00\x00\x12\x34moov\x00\x00\x00\x6cmvhd", "video/quicktime"),
        (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\x82\x84webm", "video/webm"),
        (b"\x1a\x45\xdf\xa3\xa3\x42\x86\x81\x01\x42\x82\x88matroska", "video/x-matroska"),
        (b"GIF87a\x01\x00\x01\x00", "image/gif"),
        (b"BM\x00\x00\x00\x00\x00\x00\x00\x00\x36\x00\x00\x00\x28\x00\x00\x00", "image/bmp"),
    ],
)
def test_sniff_signatures(head: bytes, expected: str) -> None:
    assert sniff(head) == expected


@pytest.mark.parametrize(
    "junk",
    [
        b"",
        b"\xff",
        b"hello, world\n",
        b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n",
        b"PK\x03\x04\x14\x00\x00\x00",
        b"<svg xmlns='http://www.w3.org/2000/svg'/>",
        b"BM this is not a bitmap header at all",
        b"RIFF\x24\x00\x00\x00WAVEfmt ",
        b"\x00" * 64,
        b'{"image": "cat.png"}',
    ],
)
def test_sniff_junk(junk: bytes) -> None:
    assert sniff(junk) is None
    assert not is_media(junk)


def test_sniff_random_bytes_are_not_media() -> None:
    rng = random.Random(1234)
    blobs = [bytes(rng.getrandbits(8) for _ in range(64)) for _ in range(2000)]
    hits = [blob[:12] for blob in blobs if sniff(blob) is not None]
    assert hits == []


def test_sniff_truncated_png_header_is_still_png() -> None:
    assert sniff(b"\x89PNG\r\n\x1a\n\x00\x00") == "image/png"


def test_jxl_support_flag_matches_pillow() -> None:
    from PIL import Image

    assert ("JXL" in Image.OPEN) == JXL_SUPPORTED
