"""What a stills-only scanner (a fedi-safety worker) is given of an upload, and how the answers for
its frames are combined."""

from __future__ import annotations

import asyncio
import io

import pytest
from PIL import Image

from fediguard.detectors.base import DetectorResult, Report
from fediguard.errors import MediaError
from fediguard.media.decode import decode
from fediguard.scanning.job import ScanJob, ScanOutcome
from fediguard.scanning.stills import combine, frame_jobs, prepare
from fediguard.verdicts import FailReason
from support.drawn_media import GREY, MADE
from support.images import drawn_png


def limits():  # type: ignore[no-untyped-def]
    from fediguard.config import load_settings
    from fediguard.scanning.pipeline import media_limits

    return media_limits(load_settings(environ={}))


def test_a_still_pillow_opens_goes_as_it_is_with_its_hashes() -> None:
    stills = prepare(drawn_png(), decode, limits(), 8, hash_frames=True)
    assert stills.as_is and stills.frames == [] and stills.pdq is not None and len(stills.pdq) == 1


@pytest.mark.parametrize("wanted,expected", [(1, 1), (2, 2), (3, 3), (8, 8), (30, 18)])
def test_a_video_goes_as_spread_jpeg_frames(wanted: int, expected: int) -> None:
    video = MADE["mp4"](GREY)  # 30 frames; decoding samples 18 of them
    stills = prepare(video, decode, limits(), wanted, hash_frames=False)
    assert not stills.as_is and stills.pdq is None
    indices = [index for index, _ in stills.frames]
    assert len(indices) == expected and indices == sorted(set(indices))
    if expected > 1:
        assert indices[0] == 0 and indices[-1] == 29, "the first and the last are always among them"
    for _, jpeg in stills.frames:
        with Image.open(io.BytesIO(jpeg)) as image:
            assert image.format == "JPEG" and image.size == (160, 120)


def test_undecodable_bytes_raise() -> None:
    with pytest.raises(MediaError):
        prepare(b"\x89PNG\r\n\x1a\n" + bytes(100), decode, limits(), 8, hash_frames=True)


async def test_combined_answers_name_their_frames_and_a_missing_one_is_an_error() -> None:
    loop = asyncio.get_running_loop()
    upload = ScanJob(b"x", "ab" * 32, None, loop.time() + 5, loop.create_future(), detected_type="video/mp4")
    stills = prepare(MADE["mp4"](GREY), decode, limits(), 3, hash_frames=False)
    parts = frame_jobs(upload, stills)
    assert [p.frame for p in parts] == [i for i, _ in stills.frames] and all(
        p.decoded and p.deadline == upload.deadline for p in parts
    )
    report = DetectorResult("fedi-safety", "legacy", notes=["said so"], findings=[Report("nsfw", "said so")])
    parts[0].future.set_result(ScanOutcome(results=[report], scanner="w1"))
    parts[1].future.set_result(ScanOutcome(results=[report], scanner="w2"))
    whole = combine(upload, parts, None)
    assert (
        whole.error is FailReason.DEADLINE
        and "1 of 3 frames" in whole.error_detail
        and "frame 29" in whole.error_detail
    )
    middle = parts[1].frame
    assert [r.notes for r in whole.results] == [["frame 0: said so"], [f"frame {middle}: said so"]]
    assert whole.scanner == "w1,w2" and not whole.cacheable and whole.detected_type == "video/mp4"
    parts[2].future.set_result(ScanOutcome(error=FailReason.SCANNER_ERROR, error_detail="boom", scanner="w1"))
    assert combine(upload, parts, None).error is FailReason.SCANNER_ERROR
