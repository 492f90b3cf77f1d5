"""The decoder sandbox: decode() in child processes under OS limits, and the bombs it must survive.

Every bomb is built in memory by tests/support/bombs.py (flat colours, a few KB) and never stored.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from PIL import Image

from fediguard.errors import MediaError
from fediguard.media.decode import MediaLimits, decode
from fediguard.media.frames import DecodedMedia
from fediguard.media.sandbox import DecoderPool, SandboxLimits, decode_deadline
from support import bombs

# Decoding these runs for seconds unless a limit stops it (measured without the header checks:
# webp 18 s, gif 26 s). UNCHECKED lets them past the header checks, to meet the sandbox's limits.
UNCHECKED = MediaLimits(max_composited_pixels=10**13, max_pixels=10**9)
HUGE = (3840, 3840)
RSS_GROWTH_LIMIT = 100_000_000

# name -> (bomb, what the refusal must say); each is refused by a header check before decoding.
BOMBS: dict[str, tuple[Callable[[], bytes], str]] = {
    "webp 100 x 3840²": (lambda: bombs.webp_animation(100, HUGE), "100 frames of 3840x3840"),
    "webp 900 x 3840²": (lambda: bombs.webp_animation(900, HUGE), "900 frames of 3840x3840"),
    "apng 100 x 3840²": (lambda: bombs.apng(100, HUGE), "100 frames of 3840x3840"),
    "gif 100 x 3840²": (lambda: bombs.gif(100, HUGE), "100 frames of 3840x3840"),
    "avif 20 x 3840²": (lambda: bombs.avif_sequence_declaring(20, HUGE), "each pixel counting 3 times"),
    "avif 89 M frames": (
        lambda: bombs.avif_sequence_declaring(3, (64, 48), declared_frames=89_000_000),
        "89,000,000 video frames",
    ),
    "png 100000²": (lambda: bombs.png_declaring(100_000, 100_000), "pixel limit"),
    "png 9000²": (lambda: bombs.png_declaring(9_000, 9_000), "81 MP, over the 50 MP limit"),
    "jpeg 65000²": (lambda: bombs.jpeg_declaring(65_000, 65_000), "pixel limit"),
    "jpeg 9000²": (lambda: bombs.jpeg_declaring(9_000, 9_000), "81 MP, over the 50 MP limit"),
    "mp4 89 M samples": (lambda: bombs.mp4_declaring_samples(89_000_000), "89,000,000 samples"),
    "mp4 89 M stts": (
        lambda: bombs.mp4_declaring_samples(89_000_000, tables=("stts",)),
        "89,000,000 video frames, over the 900-frame limit",
    ),
    "mp4 60000² sample entry": (lambda: bombs.mp4_declaring_size(60_000, 60_000), "3840 px side limit"),
    "webm 60000 wide": (lambda: bombs.webm_declaring_size(60_000), "3840 px side limit"),
}


@pytest.fixture(scope="module")
def pool() -> Iterator[DecoderPool]:
    with DecoderPool(2, SandboxLimits(cpu_s=5, timeout_s=30)) as started:
        yield started


def parent_rss() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def assert_same(got: DecodedMedia, want: DecodedMedia) -> None:
    assert (got.media_type, got.width, got.height) == (want.media_type, want.width, want.height)
    assert (got.frame_count, got.animated) == (want.frame_count, want.animated)
    assert [(f.index, f.time_s) for f in got.frames] == [(f.index, f.time_s) for f in want.frames]
    for mine, theirs in zip(got.frames, want.frames, strict=True):
        assert mine.image.dtype == np.uint8 and mine.image.flags.c_contiguous
        assert np.array_equal(mine.image, theirs.image)


def benign_jpeg(make: Any) -> bytes:
    return bytes(make.still(make.astronaut((1024, 768)), "JPEG", quality=90))


# --- the same frames as in-process --------------------------------------------------------------


def test_the_sandbox_returns_exactly_the_frames_of_in_process_decoding(
    pool: DecoderPool, samples: dict[str, bytes], make: Any
) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated: the frame comes back upright and 300x512
    rotated = make.still(make.astronaut().crop((0, 0, 512, 300)), "JPEG", quality=95, exif=exif.tobytes())
    inputs = {
        "png": samples["png"],
        "jpeg with EXIF orientation": rotated,
        "gif": samples["gif"],
        "mp4": samples["mp4"],
        "webm": samples["webm-vp9"],
    }
    for name, data in inputs.items():
        got = pool.decode(data, declared_type="image/x-whatever")
        assert_same(got, decode(data, declared_type="image/x-whatever"))
        assert got.frames, name
    assert pool.decode(rotated).frames[0].image.shape == (512, 300, 3)


def test_media_errors_come_back_as_they_are(pool: DecoderPool, samples: dict[str, bytes]) -> None:
    pids = pool.pids
    for data in (b"", b"junk junk junk", samples["png"][:200]):
        with pytest.raises(MediaError) as in_process:
            decode(data, declared_type="image/png")
        with pytest.raises(MediaError) as sandboxed:
            pool.decode(data, declared_type="image/png")
        assert str(sandboxed.value) == str(in_process.value)
    assert pool.pids == pids  # an ordinary refusal costs no child


def test_limits_travel_with_each_job(pool: DecoderPool, make: Any) -> None:
    data = make.still(make.astronaut((900, 600)), "PNG")
    assert pool.decode(data, limits=MediaLimits(max_frame_side=300)).frames[0].image.shape == (200, 300, 3)
    with pytest.raises(MediaError, match=r"over the 0\.1 MP limit"):
        pool.decode(data, limits=MediaLimits(max_pixels=100_000))


# --- bombs refused from their headers ------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(BOMBS))
def test_bombs_are_refused_from_their_headers(pool: DecoderPool, make: Any, name: str) -> None:
    build, reason = BOMBS[name]
    data = build()
    assert len(data) < 2_000_000
    pids = pool.pids
    with make.PeakRss() as rss, pytest.raises(MediaError, match=reason):
        pool.decode(data)
    assert rss.delta < RSS_GROWTH_LIMIT
    assert pool.pids == pids


def test_animated_avif_is_refused_from_its_declared_frames(pool: DecoderPool) -> None:
    """Encoding a huge AVIF takes Pillow seconds per frame, so the budget is lowered instead."""
    data = bombs.avif_animation(12, (256, 192))
    assert pool.decode(data).frame_count == 12
    with pytest.raises(MediaError, match="12 frames of 256x192 mean decoding over 500,000 pixels"):
        pool.decode(data, limits=MediaLimits(max_composited_pixels=500_000))


def test_a_track_header_size_allocates_nothing_and_is_decoded(pool: DecoderPool) -> None:
    """tkhd's display size is not what FFmpeg allocates by; the sample entry's coded size is checked."""
    media = pool.decode(bombs.mp4_declaring_size(60_000, 60_000, box="tkhd"))
    assert (media.width, media.height, media.frame_count) == (64, 48, 3)


# --- bombs past the header checks meet the OS limits ---------------------------------------------


def test_a_runaway_decode_is_ended_by_the_cpu_limit(make: Any) -> None:
    data = bombs.webp_animation(100, HUGE)  # 18 s of CPU when let past the header check
    with DecoderPool(1, SandboxLimits(cpu_s=1, timeout_s=60)) as pool, make.PeakRss() as rss:
        before = pool.pids
        started = time.perf_counter()
        with pytest.raises(MediaError, match=r"^decoding used more than 1 s of CPU$"):
            pool.decode(data, limits=UNCHECKED)
        assert time.perf_counter() - started < 15
        assert pool.pids != before and pool.replaced == 1
        assert pool.decode(benign_jpeg(make)).frames[0].image.shape == (768, 1024, 3)
    assert rss.delta < RSS_GROWTH_LIMIT


def test_a_decode_past_the_wall_clock_timeout_is_killed(make: Any) -> None:
    data = bombs.gif(100, HUGE)  # 26 s when let past the header check
    with DecoderPool(1, SandboxLimits(cpu_s=60, timeout_s=0.5)) as pool:
        started = time.perf_counter()
        with pytest.raises(MediaError, match=r"^decoding took more than 0.5 s$"):
            pool.decode(data, limits=UNCHECKED)
        assert time.perf_counter() - started < 10
        assert pool.replaced == 1
        assert pool.decode(benign_jpeg(make)).frames


def test_a_decode_past_the_memory_limit_fails_in_the_child(make: Any) -> None:
    """384 MB of address space leaves ~120 MB over the child's baseline; this PNG needs 192 MB."""
    data = bombs.png_pixels(8_000, 6_000)  # 186 KB
    with DecoderPool(1, SandboxLimits(memory_mb=384)) as pool, make.PeakRss() as rss:
        with pytest.raises(MediaError, match=r"^decoding needed more than 384 MB$"):
            pool.decode(data, limits=UNCHECKED)
        assert pool.replaced == 1  # retired: its heap may be left fragmented
        assert pool.decode(benign_jpeg(make)).frames
    assert rss.delta < RSS_GROWTH_LIMIT


def test_a_child_killed_mid_decode_is_replaced(make: Any) -> None:
    data = bombs.webp_animation(100, HUGE)
    with DecoderPool(1, SandboxLimits(cpu_s=60, timeout_s=60)) as pool:
        (pid,) = pool.pids
        worker, failure = _decoding_in_background(pool, data, pid)
        os.kill(pid, signal.SIGKILL)
        worker.join(30)
        assert not worker.is_alive()
        assert isinstance(failure[0], MediaError)
        assert str(failure[0]) == "the decoder process was killed (SIGKILL), likely out of memory"
        assert pool.decode(benign_jpeg(make)).frames  # waits for the replacement
        assert pool.pids and pool.pids != [pid]
        assert pool.decode(benign_jpeg(make)).frames[0].image.shape == (768, 1024, 3)


def test_a_decode_is_ended_at_the_upload_deadline_and_the_child_replaced(make: Any) -> None:
    """The upload's deadline (decode_deadline) ends a decode long before the sandbox's own timeout."""
    data = bombs.gif(100, HUGE)  # 26 s when let past the header check
    with DecoderPool(1, SandboxLimits(cpu_s=600, timeout_s=600)) as pool:
        (pid,) = pool.pids
        late = pytest.raises(MediaError, match=r"^decoding was not done by the upload's deadline \(")
        with decode_deadline(time.monotonic() + 0.5), late:
            pool.decode(data, limits=UNCHECKED)
        assert pool.replaced == 1
        assert pool.decode(benign_jpeg(make)).frames
        assert pool.pids and pool.pids != [pid]
        too_late = pytest.raises(MediaError, match="deadline passed before decoding began")
        with decode_deadline(time.monotonic() - 1), too_late:
            pool.decode(benign_jpeg(make))
        assert pool.replaced == 1


def test_waiting_for_a_busy_pool_ends_at_the_upload_deadline(make: Any) -> None:
    data = bombs.webp_animation(100, HUGE)
    with DecoderPool(1, SandboxLimits(cpu_s=600, timeout_s=600)) as pool:
        (pid,) = pool.pids
        worker, failure = _decoding_in_background(pool, data, pid)  # the only child is busy
        busy = pytest.raises(MediaError, match="no decoder process was free before the upload's deadline")
        with decode_deadline(time.monotonic() + 0.2), busy:
            pool.decode(benign_jpeg(make))
        os.kill(pid, signal.SIGKILL)
        worker.join(30)
        assert isinstance(failure[0], MediaError)
        assert pool.decode(benign_jpeg(make)).frames


def test_every_child_is_busy_then_callers_wait_for_one(make: Any) -> None:
    data = benign_jpeg(make)
    with DecoderPool(2) as pool:
        results: list[DecodedMedia] = []
        threads = [threading.Thread(target=lambda: results.append(pool.decode(data))) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert len(results) == 6 and len(pool.pids) == 2


def test_a_closed_pool_refuses_and_leaves_no_children(make: Any) -> None:
    pool = DecoderPool(2)
    pool.start()
    pids = pool.pids
    pool.close()
    with pytest.raises(MediaError, match="shut down"):
        pool.decode(benign_jpeg(make))
    for pid in pids:
        assert not os.path.exists(f"/proc/{pid}") or _state(pid) == "Z"


def _decoding_in_background(
    pool: DecoderPool, data: bytes, pid: int
) -> tuple[threading.Thread, list[BaseException]]:
    """Start decoding ``data`` in a thread and return once child ``pid`` is decoding it (using CPU,
    not waiting for the job); the thread, and the list its decode's failure goes into."""
    failure: list[BaseException] = []

    def run() -> None:
        try:
            pool.decode(data, limits=UNCHECKED)
        except BaseException as exc:
            failure.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    give_up = time.monotonic() + 30
    while _cpu_seconds(pid) < 0.3:
        assert time.monotonic() < give_up, "the child never started decoding"
        time.sleep(0.01)
    return worker, failure


def _cpu_seconds(pid: int) -> float:
    fields = _stat(pid)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _state(pid: int) -> str:
    return _stat(pid)[0]


def _stat(pid: int) -> list[str]:
    """/proc/PID/stat after the command name: state first, then utime and stime at 11 and 12."""
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()
