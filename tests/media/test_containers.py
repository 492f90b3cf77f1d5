"""What MP4 and WebM files declare, checked from their boxes before FFmpeg opens them."""

from __future__ import annotations

import contextlib
import io
import random
import struct
from fractions import Fraction
from typing import Any

import av
import av.audio.stream
import av.video.stream
import numpy as np
import pytest

from fediguard.errors import MediaError
from fediguard.media.containers import check_heif, check_iso_bmff, check_matroska
from fediguard.media.decode import MediaLimits, decode
from support import bombs


def _patched(data: bytes, kind: bytes, offset: int, fmt: str, *values: int) -> bytes:
    """``data`` with the first ``kind`` box's payload field at ``offset`` set to ``values``."""
    patched = bytearray(data)
    box = next(start for found, start, _ in bombs.iso_boxes(patched) if found == kind)
    struct.pack_into(fmt, patched, box + 8 + offset, *values)
    return bytes(patched)


def test_ordinary_files_pass(samples: dict[str, bytes], make: Any) -> None:
    for kind in ("mp4", "mov"):
        check_iso_bmff(samples[kind], kind, MediaLimits())
    check_iso_bmff(make.faststart(samples["mp4"]), "mp4", MediaLimits())
    for kind in ("webm-vp8", "webm-vp9", "mkv"):
        check_matroska(samples[kind], kind, MediaLimits())


def test_ordinary_avif_files_pass(samples: dict[str, bytes]) -> None:
    for kind in ("avif", "avif-animated"):
        check_heif(samples[kind], kind, MediaLimits())
    assert decode(bombs.avif_sequence_declaring(20, (64, 48))).frame_count == 20


def test_an_avif_sequence_is_refused_from_its_boxes() -> None:
    """20 AV1 frames of 3840x3840 are within the GIF budget but take seconds: AV1 pixels cost 3."""
    with pytest.raises(
        MediaError, match=r"20 frames of 3840x3840 mean decoding over 400,000,000 pixels \(each"
    ):
        decode(bombs.avif_sequence_declaring(20, (3840, 3840)))
    with pytest.raises(MediaError, match="declares 89,000,000 video frames, over the 900-frame limit"):
        decode(bombs.avif_sequence_declaring(3, (64, 48), declared_frames=89_000_000))
    with pytest.raises(MediaError, match="is 9000\u00d79000 = 81 MP, over the 50 MP limit"):
        decode(bombs.avif_sequence_declaring(3, (9000, 9000)))
    # The sample entry alone (ispe left as it is) is checked too.
    data = bombs.avif_sequence_declaring(3, (64, 48))
    with pytest.raises(MediaError, match="over the 3840 px side limit"):
        decode(_patched(data, b"stsd", 8 + 32, ">HH", 4000, 48))


def test_an_avif_still_is_refused_from_its_image_extents(samples: dict[str, bytes]) -> None:
    with pytest.raises(MediaError, match="AVIF is 20000\u00d720000 = 400 MP, over the 50 MP limit"):
        decode(_patched(samples["avif"], b"ispe", 4, ">II", 20_000, 20_000))


def test_a_fragmented_mp4_is_counted_by_its_fragments(make: Any) -> None:
    fragmented = make.numbered_video(60, container_options={"movflags": "frag_keyframe+empty_moov"})
    assert decode(fragmented).frame_count == 60
    with pytest.raises(MediaError, match="declares 60 video frames, over the 50-frame limit"):
        decode(fragmented, limits=MediaLimits(max_frames=50))
    # A fragment claiming more samples than its per-sample table holds.
    with pytest.raises(MediaError, match="trun box declares 89,000,000 entries"):
        decode(_patched(fragmented, b"trun", 4, ">I", 89_000_000))


def test_an_audio_track_does_not_count_as_frames() -> None:
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        picture = out.add_stream("mpeg4", rate=Fraction(25))
        sound = out.add_stream("aac", rate=48_000)
        assert isinstance(picture, av.video.stream.VideoStream)
        assert isinstance(sound, av.audio.stream.AudioStream)
        picture.width, picture.height, picture.pix_fmt = 64, 48, "yuv420p"
        for _ in range(10):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 90, np.uint8), format="rgb24")
            out.mux(picture.encode(frame))
        for index in range(100):  # 100 audio samples, more than max_frames below
            chunk = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            chunk.sample_rate, chunk.pts = 48_000, index * 1024
            out.mux(sound.encode(chunk))
        out.mux(picture.encode())
        out.mux(sound.encode())
    assert decode(buf.getvalue(), limits=MediaLimits(max_frames=20)).frame_count == 10


@pytest.mark.parametrize(
    ("kind", "offset", "fmt", "values", "reason"),
    [
        (b"stco", 4, ">I", (50_000_000,), "stco box declares 50,000,000 entries but holds 4 bytes"),
        (b"stsc", 4, ">I", (50_000_000,), "stsc box declares 50,000,000 entries"),
        (b"stsz", 4, ">II", (0, 50_000_000), "stsz box declares 50,000,000 entries"),
        (b"stsz", 4, ">II", (4000, 1000), "declares 1,000 samples of 4,000 B in a file of"),
        (b"stts", 4, ">I", (50_000_000,), "stts box declares 50,000,000 entries"),
        (b"elst", 4, ">I", (50_000_000,), "elst box declares 50,000,000 entries"),
    ],
)
def test_tables_declaring_more_than_they_hold_are_refused(
    kind: bytes, offset: int, fmt: str, values: tuple[int, ...], reason: str
) -> None:
    with pytest.raises(MediaError, match=reason):
        decode(_patched(bombs.small_video(), kind, offset, fmt, *values))


def test_a_compressed_movie_header_is_refused() -> None:
    data = bombs.small_video().replace(b"udta", b"cmov", 1)
    with pytest.raises(MediaError, match="compressed movie header"):
        decode(data)


def test_mangled_boxes_raise_nothing_but_media_error(samples: dict[str, bytes]) -> None:
    rng = random.Random(12)
    originals = [samples["mp4"], samples["mov"], bombs.small_video()]
    for _ in range(400):
        data = bytearray(rng.choice(originals))
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(min(len(data), 2000))] = rng.randrange(256)
        cut = bytes(data[: rng.randrange(8, len(data) + 1)])
        with contextlib.suppress(MediaError):
            check_iso_bmff(cut, "MP4", MediaLimits())
    for _ in range(200):
        data = bytearray(samples["webm-vp9"])
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(min(len(data), 400))] = rng.randrange(256)
        with contextlib.suppress(MediaError):
            check_matroska(bytes(data[: rng.randrange(4, len(data) + 1)]), "WEBM", MediaLimits())
