"""Decode time and memory of fediguard.media.decode on the uploads pict-rs sends.

Prints p50/p95 of ``decode()`` for a 1024x768 JPEG, a 4000x3000 JPEG, a 5 s 720p MP4 and a
100-frame GIF, the process's peak RSS while decoding each (sampled every 2 ms in a background
thread; the + figure is the growth over the RSS before that input's runs, which is small when an
earlier input already grew the heap), and the process's peak RSS at the end.

``--compare`` also answers "seek to keyframes or decode in order": for a 900-frame 720p H.264 video
(x264's default keyframe interval, and one keyframe every 30 frames) it times decode() (which seeks
to the keyframe before a sample whenever that skips frames) against one sequential pass that
converts only the sampled frames; for the 100-frame GIF, Pillow seeking straight to each sampled
frame against stepping through every frame, and PyAV's GIF decoder.

``--rehash`` times what the gateway adds to every remote worker's result: it decodes the upload
again and PDQ-hashes its frames itself (``BankGate.rehash``), never keeping a worker's hashes.

``--stills`` times what the gateway adds to every upload while a fedi-safety worker is alive: it
decodes the upload first, hashes its frames and renders ``legacy_frames`` of them as JPEG stills
(``fediguard.scanning.stills.prepare``), in this process (the sandbox adds ~2 ms an upload).

Run: ``python bench/media.py [--repeats 20] [--compare] [--rehash] [--stills]``. All media is
generated in memory from scikit-image's astronaut; nothing is written to disk.
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from fractions import Fraction
from functools import partial

import av
import av.video.stream
import numpy as np
import numpy.typing as npt
from PIL import Image

from fediguard.banks.pdq import frame_hashes
from fediguard.config import load_settings
from fediguard.media.decode import decode, spread_indices
from fediguard.scanning.pipeline import media_limits

RGB = npt.NDArray[np.uint8]


def astronaut(width: int, height: int) -> Image.Image:
    from skimage import data

    photo = np.asarray(data.astronaut())  # type: ignore[no-untyped-call]
    return Image.fromarray(photo).resize((width, height), Image.Resampling.LANCZOS)


def jpeg(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    astronaut(width, height).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def panning_frames(count: int, width: int, height: int) -> Iterator[RGB]:
    """A slow pan over an enlarged photo with a little noise: content a codec has to work for."""
    source = np.asarray(astronaut(width * 2, height * 2))
    rng = np.random.default_rng(0)
    for i in range(count):
        x = int(width * i / count)
        y = int(height * i / count)
        crop = source[y : y + height, x : x + width].astype(np.int16)
        yield np.clip(crop + rng.integers(-4, 5, crop.shape, dtype=np.int16), 0, 255).astype(np.uint8)


def mp4(count: int, width: int, height: int, gop: int | None = None) -> bytes:
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=Fraction(30))
        assert isinstance(stream, av.video.stream.VideoStream)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "veryfast"}  # B-frames and CABAC, like a phone or pict-rs upload
        stream.bit_rate = 3_000_000  # a phone's 720p bitrate; the pan alone would compress to nothing
        if gop:
            stream.codec_context.gop_size = gop
        for frame in panning_frames(count, width, height):
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue()


def gif(count: int, width: int, height: int) -> bytes:
    frames = [Image.fromarray(f).quantize(64) for f in panning_frames(count, width, height)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=40, loop=0)
    return buf.getvalue()


def rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRss:
    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss())
            time.sleep(0.002)

    def __enter__(self) -> PeakRss:
        self.peak = rss()
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()


def timed(run: Callable[[], object], repeats: int) -> list[float]:
    run()  # warm up: imports, codec tables, Pillow plugins
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return times


def report(name: str, times: list[float], extra: str = "") -> None:
    p50 = statistics.median(times) * 1000
    p95 = float(np.percentile(times, 95)) * 1000
    print(f"  {name:<34} p50 {p50:8.1f} ms   p95 {p95:8.1f} ms   {extra}")


def make_inputs() -> dict[str, bytes]:
    print("making inputs...", flush=True)
    return {
        "JPEG 1024x768": jpeg(1024, 768),
        "JPEG 4000x3000": jpeg(4000, 3000),
        "MP4 720p 5 s (150 frames, H.264)": mp4(150, 1280, 720),
        "GIF 100 frames 480x360": gif(100, 480, 360),
    }


def bench_rehash(inputs: dict[str, bytes], repeats: int) -> None:
    """The gateway's own decode and PDQ hashes of an upload a remote worker scanned."""
    limits = media_limits(load_settings(environ={}))
    print(f"rehash (decode + frame_hashes, default limits) x{repeats}, load {os.getloadavg()[0]:.2f}:")
    for name, data in inputs.items():
        frames = len(decode(data, limits=limits).frames)
        report(
            name,
            timed(lambda d=data: frame_hashes(decode(d, limits=limits).frames), repeats),
            f"{frames} frames",
        )


def bench_stills(inputs: dict[str, bytes], repeats: int) -> None:
    """The gateway's decode-first for fedi-safety workers: decode, PDQ, frames rendered as JPEG."""
    from fediguard.scanning.stills import prepare

    settings = load_settings(environ={})
    limits = media_limits(settings)
    print(
        f"decode first (prepare, {settings.legacy_frames} frames) x{repeats}, load {os.getloadavg()[0]:.2f}:"
    )
    for name, data in inputs.items():
        stills = prepare(data, decode, limits, settings.legacy_frames, True)
        handed = "as it is" if stills.as_is else f"{len(stills.frames)} JPEG frames"
        report(
            name,
            timed(lambda d=data: prepare(d, decode, limits, settings.legacy_frames, True), repeats),
            handed,
        )


def bench_decode(inputs: dict[str, bytes], repeats: int) -> None:
    print(f"decode() x{repeats}, load average {os.getloadavg()[0]:.2f}, {os.cpu_count()} CPUs:")
    for name, data in inputs.items():
        base = rss()
        with PeakRss() as peak:
            times = timed(partial(decode, data), repeats)
        media = decode(data)
        height, width = media.frames[0].image.shape[:2]
        memory = f"RSS peak {peak.peak / 1e6:.0f} MB (+{(peak.peak - base) / 1e6:.0f})"
        report(name, times, f"{len(data) / 1e6:5.2f} MB, {len(media.frames)} x {width}x{height}, {memory}")


def sequential_sample(data: bytes) -> int:
    """One forward pass with PyAV, converting only the frames decode() would sample."""
    with av.open(io.BytesIO(data), mode="r") as container:
        stream = container.streams.video[0]
        count = sum(1 for packet in container.demux(stream) if packet.size)
    wanted = set(spread_indices(count, 16))
    kept = 0
    with av.open(io.BytesIO(data), mode="r") as container:
        stream = container.streams.video[0]
        stream.thread_type = "SLICE"
        for index, frame in enumerate(container.decode(stream)):
            if index in wanted:
                frame.to_ndarray(format="rgb24", width=1280, height=720)
                kept += 1
    return kept


def pillow_gif(data: bytes, step_through: bool) -> int:
    with Image.open(io.BytesIO(data)) as im:
        wanted = spread_indices(int(getattr(im, "n_frames", 1)), 16)
        order = range(wanted[-1] + 1) if step_through else wanted
        kept = 0
        for index in order:
            im.seek(index)
            if index in wanted:
                np.asarray(im.convert("RGB"))
                kept += 1
    return kept


def pyav_gif(data: bytes) -> int:
    with av.open(io.BytesIO(data), mode="r", format="gif") as container:
        count = sum(1 for packet in container.demux(video=0) if packet.size)
    wanted = set(spread_indices(count, 16))
    with av.open(io.BytesIO(data), mode="r", format="gif") as container:
        kept = 0
        for index, frame in enumerate(container.decode(video=0)):
            if index in wanted:
                frame.to_ndarray(format="rgb24")
                kept += 1
        return kept


def bench_compare(repeats: int) -> None:
    print("making 900-frame 720p videos (about 30 s)...", flush=True)
    videos = {"x264 default keyint": mp4(900, 1280, 720), "keyframe every 30": mp4(900, 1280, 720, gop=30)}
    print("900-frame 720p H.264, 18 sampled frames:")
    for name, data in videos.items():
        report(f"{name}: decode() (seeks)", timed(partial(decode, data), repeats))
        report(f"{name}: one sequential pass", timed(partial(sequential_sample, data), repeats))
    data = gif(100, 480, 360)
    print("100-frame 480x360 GIF, 18 sampled frames:")
    report("decode()", timed(lambda: decode(data), repeats))
    report("Pillow, seek to each sample", timed(lambda: pillow_gif(data, step_through=False), repeats))
    report("Pillow, step through every frame", timed(lambda: pillow_gif(data, step_through=True), repeats))
    report("PyAV gif decoder, sequential", timed(lambda: pyav_gif(data), repeats))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument(
        "--compare", action="store_true", help="also compare seeking with sequential decoding"
    )
    parser.add_argument(
        "--rehash", action="store_true", help="also time the gateway's rehash of remote results"
    )
    parser.add_argument(
        "--stills", action="store_true", help="also time the decode-first for fedi-safety workers"
    )
    args = parser.parse_args()
    av.logging.set_level(av.logging.ERROR)
    inputs = make_inputs()
    bench_decode(inputs, args.repeats)
    if args.rehash:
        bench_rehash(inputs, args.repeats)
    if args.stills:
        bench_stills(inputs, args.repeats)
    if args.compare:
        bench_compare(max(3, args.repeats // 4))
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"process peak RSS (ru_maxrss, includes making the inputs): {peak_kb / 1024:.0f} MB")


if __name__ == "__main__":
    main()
