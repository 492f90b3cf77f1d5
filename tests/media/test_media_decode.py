"""decode(): every accepted format to a few RGB frames, and MediaError for everything else."""

from __future__ import annotations

import contextlib
import io
import itertools
import random
import struct
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageFile, ImageOps

from fediguard.errors import ConfigError, MediaError
from fediguard.media.decode import JXL_SUPPORTED, MediaLimits, decode, spread_indices
from fediguard.media.frames import DecodedMedia

# kind -> (media type, frame count, animated, displayed size)
VALID = {
    "jpeg": ("image/jpeg", 1, False, (512, 512)),
    "png": ("image/png", 1, False, (512, 512)),
    "apng": ("image/apng", 6, True, (160, 120)),
    "gif": ("image/gif", 6, True, (160, 120)),
    "webp": ("image/webp", 1, False, (512, 512)),
    "webp-animated": ("image/webp", 6, True, (160, 120)),
    "avif": ("image/avif", 1, False, (512, 512)),
    "avif-animated": ("image/avif", 6, True, (160, 120)),
    "bmp": ("image/bmp", 1, False, (512, 512)),
    "tiff": ("image/tiff", 1, False, (512, 512)),
    "jxl": ("image/jxl", 1, False, (512, 512)),
    "mp4": ("video/mp4", 30, True, (320, 240)),
    "mov": ("video/quicktime", 30, True, (320, 240)),
    "webm-vp8": ("video/webm", 30, True, (320, 240)),
    "webm-vp9": ("video/webm", 30, True, (320, 240)),
    "mkv": ("video/x-matroska", 30, True, (320, 240)),
}
NUMBERED = {"apng", "gif", "webp-animated", "avif-animated", "mp4", "mov", "webm-vp8", "webm-vp9", "mkv"}


def sample(samples: dict[str, bytes], kind: str) -> bytes:
    if kind not in samples:
        pytest.skip(f"cannot encode {kind} here")
    return samples[kind]


def assert_rgb_frames(media: DecodedMedia, max_side: int = 1280) -> None:
    assert media.frames, "no frames"
    for frame in media.frames:
        image = frame.image
        assert image.dtype == np.uint8
        assert image.ndim == 3 and image.shape[2] == 3
        assert image.flags.c_contiguous
        assert max(image.shape[:2]) <= max_side
        assert image.std() > 5, "frame is flat: nothing was decoded"


@pytest.mark.parametrize("kind", sorted(VALID))
def test_decodes_every_format(samples: dict[str, bytes], kind: str) -> None:
    media_type, count, animated, (width, height) = VALID[kind]
    media = decode(sample(samples, kind))
    assert media.media_type == media_type
    assert (media.width, media.height) == (width, height)
    assert media.frame_count == count
    assert media.animated is animated
    assert [f.index for f in media.frames] == spread_indices(count, 16)
    assert {f.image.shape for f in media.frames} == {(height, width, 3)}
    assert_rgb_frames(media)


@pytest.mark.parametrize("kind", sorted(NUMBERED))
def test_frames_are_the_frames_their_index_says(samples: dict[str, bytes], make: Any, kind: str) -> None:
    media = decode(sample(samples, kind))
    assert [make.read_number(f.image) for f in media.frames] == [f.index for f in media.frames]
    step = 1 / 30 if kind in {"mp4", "mov", "webm-vp8", "webm-vp9", "mkv"} else 0.04
    for frame in media.frames:
        assert frame.time_s == pytest.approx(frame.index * step, abs=0.002)


def test_photo_content_survives(samples: dict[str, bytes], make: Any) -> None:
    reference = np.asarray(make.astronaut(), dtype=np.float64)
    for kind in ("jpeg", "png", "webp", "avif", "bmp", "tiff", "jxl"):
        if kind not in samples:
            continue
        image = decode(samples[kind]).frames[0].image
        assert np.abs(image - reference).mean() < 6, kind


def test_declared_type_is_only_a_hint(samples: dict[str, bytes]) -> None:
    media = decode(samples["png"], declared_type="image/jpeg")
    assert media.media_type == "image/png"
    with pytest.raises(MediaError, match="declared text/plain"):
        decode(b"just some words", declared_type="text/plain")


# --- downscaling, orientation, colour ------------------------------------------------------------


def test_large_jpeg_is_drafted_and_downscaled(make: Any) -> None:
    data = make.still(make.astronaut((4000, 3000)), "JPEG", quality=85)
    media = decode(data)
    assert (media.width, media.height) == (4000, 3000)
    assert media.frames[0].image.shape == (960, 1280, 3)


def test_downscale_respects_limit(make: Any) -> None:
    data = make.still(make.astronaut((900, 600)), "PNG")
    media = decode(data, limits=MediaLimits(max_frame_side=300))
    assert media.frames[0].image.shape == (200, 300, 3)
    assert (media.width, media.height) == (900, 600)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_pillow(make: Any, orientation: int) -> None:
    photo = make.astronaut().crop((0, 0, 512, 300))  # not square, so rotations change the shape
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = make.still(photo, "JPEG", quality=95, exif=exif.tobytes())
    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    media = decode(data)
    image = media.frames[0].image
    assert image.shape == expected.shape
    assert np.abs(image.astype(int) - expected).mean() < 1
    assert (media.width, media.height) == (expected.shape[1], expected.shape[0])


def test_exif_orientation_in_png(make: Any) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    photo = make.astronaut().crop((0, 0, 400, 200))
    media = decode(make.still(photo, "PNG", exif=exif.tobytes()))
    assert media.frames[0].image.shape == (400, 200, 3)
    assert np.array_equal(media.frames[0].image, np.asarray(photo.transpose(Image.Transpose.ROTATE_270)))


def test_alpha_is_composited_on_white(make: Any) -> None:
    rgba = np.zeros((64, 64, 4), np.uint8)  # transparent black everywhere...
    rgba[16:48, 16:48] = (200, 0, 0, 255)  # ...but an opaque red square
    image = decode(make.still(rgba, "PNG")).frames[0].image
    assert tuple(image[0, 0]) == (255, 255, 255)
    assert tuple(image[32, 32]) == (200, 0, 0)


def test_palette_transparency_is_composited(make: Any) -> None:
    palette_image = Image.new("P", (32, 32), 0)
    palette_image.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)
    palette_image.paste(1, (8, 8, 24, 24))
    image = decode(make.still(palette_image, "GIF", transparency=0)).frames[0].image
    assert tuple(image[0, 0]) == (255, 255, 255)
    assert tuple(image[16, 16]) == (0, 0, 255)


def test_sixteen_bit_grey_is_rescaled_not_clipped(make: Any) -> None:
    ramp = np.tile(np.linspace(0, 65535, 256, dtype=np.uint16), (16, 1))
    image = decode(make.still(Image.fromarray(ramp), "PNG")).frames[0].image
    assert image[0, 0, 0] < 5
    assert 100 < image[0, 128, 0] < 155
    assert image[0, 255, 0] > 250


def test_cmyk_jpeg(make: Any) -> None:
    data = make.still(make.astronaut().convert("CMYK"), "JPEG")
    media = decode(data)
    assert media.frames[0].image.shape == (512, 512, 3)
    assert_rgb_frames(media)


def test_video_display_rotation(make: Any) -> None:
    frame = np.zeros((240, 320, 3), np.uint8)
    frame[:, :160] = (255, 0, 0)  # left half red
    frame[:, 160:] = (0, 0, 255)  # right half blue
    data = make.video([frame] * 3, rotation=90)  # shown turned 90 degrees counter-clockwise
    media = decode(data)
    assert (media.width, media.height) == (240, 320)
    image = media.frames[0].image
    assert image.shape == (320, 240, 3)
    assert image[40, 120, 2] > 200 and image[40, 120, 0] < 50  # the right half is now on top
    assert image[280, 120, 0] > 200 and image[280, 120, 2] < 50


# --- sampling long media ----------------------------------------------------------------------


def test_spread_indices() -> None:
    assert spread_indices(1, 16) == [0]
    assert spread_indices(18, 16) == list(range(18))
    picked = spread_indices(900, 16)
    assert len(picked) == 18 and picked[0] == 0 and picked[-1] == 899
    assert all(b - a in (52, 53) for a, b in itertools.pairwise(picked))
    assert spread_indices(900, 0) == [0, 899]


def test_hundred_frame_gif_is_sampled(make: Any) -> None:
    frames = [make.numbered_frame(i, (96, 72)) for i in range(100)]
    media = decode(make.animation(frames, "GIF", duration_ms=50))
    assert media.frame_count == 100
    assert [f.index for f in media.frames] == spread_indices(100, 16)
    assert [make.read_number(f.image) for f in media.frames] == [f.index for f in media.frames]
    assert media.frames[-1].time_s == pytest.approx(99 * 0.05)


@pytest.fixture(scope="module")
def long_videos(make: Any) -> dict[str, bytes]:
    """900 numbered 640x360 frames: short keyframe interval, x264's long default, with B-frames."""
    return {
        "gop30": make.numbered_video(900, (640, 360), gop=30),
        "gop250-bframes": make.numbered_video(900, (640, 360), options={"preset": "veryfast"}),
    }


@pytest.mark.parametrize("variant", ["gop30", "gop250-bframes"])
def test_900_frame_video_samples_first_last_and_spread(
    long_videos: dict[str, bytes], make: Any, variant: str
) -> None:
    data = long_videos[variant]
    with make.PeakRss() as rss:
        media = decode(data)
    assert media.frame_count == 900
    indices = [f.index for f in media.frames]
    assert len(indices) <= 16 + 2
    assert indices[0] == 0 and indices[-1] == 899
    assert indices == spread_indices(900, 16)
    assert [make.read_number(f.image) for f in media.frames] == indices
    assert media.frames[-1].time_s == pytest.approx(899 / 30, abs=0.01)
    # All 900 frames as RGB would be 622 MB (311 MB even as YUV): frames must not be held.
    assert rss.delta < 120_000_000, f"peak RSS grew by {rss.delta / 1e6:.0f} MB"


def decoded_frame_counts(caplog: pytest.LogCaptureFixture) -> list[int]:
    """Read the decoder's own count ("decoded N of M frames") from its debug log."""
    counts = []
    for record in caplog.records:
        if record.name == "fediguard.media.decode" and "decoded" in record.getMessage():
            counts.append(int(record.getMessage().split("decoded ")[1].split(" of")[0]))
    return counts


def test_short_gop_video_decodes_only_what_it_needs(
    long_videos: dict[str, bytes], caplog: pytest.LogCaptureFixture
) -> None:
    """A keyframe every 30 frames: seeking to the one before each sample skips most of the stream."""
    with caplog.at_level("DEBUG", logger="fediguard.media.decode"):
        decode(long_videos["gop30"])
    (decoded,) = decoded_frame_counts(caplog)
    # 18 samples, each at most 29 frames past its keyframe, decoding on across short gaps.
    assert 18 <= decoded <= 18 * 30
    assert decoded < 900 / 2


def test_long_gop_video_is_one_forward_pass(
    long_videos: dict[str, bytes], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("DEBUG", logger="fediguard.media.decode"):
        decode(long_videos["gop250-bframes"])
    (decoded,) = decoded_frame_counts(caplog)
    assert decoded <= 900


# --- everything undecodable is a MediaError -------------------------------------------------------


def _corrupt(data: bytes) -> bytes:
    """Keep the signature (first 16 bytes), replace the rest with seeded noise."""
    rng = random.Random(len(data))
    return data[:16] + bytes(rng.getrandbits(8) for _ in range(min(len(data), 4096)))


@pytest.mark.parametrize("kind", sorted(VALID))
@pytest.mark.parametrize("damage", ["empty", "truncated-half", "truncated-tail", "corrupt"])
def test_damaged_files_raise_media_error(samples: dict[str, bytes], kind: str, damage: str) -> None:
    data = sample(samples, kind)
    damaged = {
        "empty": b"",
        "truncated-half": data[: len(data) // 2],
        "truncated-tail": data[: int(len(data) * 0.8)],
        "corrupt": _corrupt(data),
    }[damage]
    with pytest.raises(MediaError):
        decode(damaged)


def test_truncated_messages_say_so(samples: dict[str, bytes]) -> None:
    for kind in ("jpeg", "png", "gif", "bmp"):
        with pytest.raises(MediaError, match="truncated"):
            decode(samples[kind][: len(samples[kind]) // 2])


def test_truncated_faststart_mp4(make: Any) -> None:
    data = make.faststart(make.numbered_video(60, container="mp4"))
    assert data[4:8] == b"ftyp" and b"moov" in data[:4096]  # the index comes first
    assert decode(data).frame_count == 60
    with pytest.raises(MediaError, match=r"truncated MP4: \d+ of 60 frames"):
        decode(data[: int(len(data) * 0.6)])


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00",
        b"plain text, not an image",
        b"%PDF-1.4\n1 0 obj << >> endobj\n",
        bytes(random.Random(7).getrandbits(8) for _ in range(10_000)),
        b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 100,
        b"\x89PNG\r\n\x1a\n",
        b"\xff\xd8\xff",
        b"GIF89a",
        b"\x1a\x45\xdf\xa3",
    ],
)
def test_unsupported_and_junk_raise_media_error(data: bytes) -> None:
    with pytest.raises(MediaError):
        decode(data)


def test_fuzzed_files_raise_only_media_error(samples: dict[str, bytes]) -> None:
    """Flip random bytes past the signature: decode either succeeds or raises MediaError."""
    rng = random.Random(42)
    outcomes = {"decoded": 0, "refused": 0}
    for kind in sorted(samples):
        data = samples[kind]
        for _ in range(8):
            mutated = bytearray(data)
            for _ in range(rng.randint(1, 20)):
                mutated[rng.randrange(16, len(mutated))] = rng.getrandbits(8)
            try:
                decode(bytes(mutated))
                outcomes["decoded"] += 1
            except MediaError:
                outcomes["refused"] += 1
    assert outcomes["refused"] > 0 and sum(outcomes.values()) == 8 * len(samples)


# --- limits ----------------------------------------------------------------------------------------


def test_over_byte_limit(samples: dict[str, bytes]) -> None:
    with pytest.raises(MediaError, match="over the"):
        decode(samples["png"], limits=MediaLimits(max_bytes=1000))


def test_over_pixel_limit_message(make: Any) -> None:
    data = make.compressible_png(10_000, 10_000)
    with pytest.raises(MediaError, match="10000\u00d710000 = 100 MP, over the 50 MP limit"):
        decode(data)


def test_over_frame_limit(samples: dict[str, bytes]) -> None:
    for kind in ("gif", "apng", "webp-animated", "mp4", "webm-vp9"):
        with pytest.raises(MediaError, match="frame"):
            decode(samples[kind], limits=MediaLimits(max_frames=5))


def test_over_video_side_limit(samples: dict[str, bytes]) -> None:
    for kind in ("mp4", "webm-vp8", "gif"):
        with pytest.raises(MediaError, match="side limit"):
            decode(samples[kind], limits=MediaLimits(max_video_side=100))


def test_video_over_pixel_limit(samples: dict[str, bytes]) -> None:
    with pytest.raises(MediaError, match="MP limit"):
        decode(samples["mp4"], limits=MediaLimits(max_pixels=320 * 240 - 1))


def test_invalid_limits_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="max_pixels"):
        MediaLimits(max_pixels=0)
    with pytest.raises(ConfigError, match="sample_frames"):
        MediaLimits(sample_frames=-1)


def test_png_declaring_30000_squared_is_refused_fast(make: Any) -> None:
    """A few hundred bytes claiming 900 MP: refused from the header, nothing allocated."""
    data = make.png_header(30_000, 30_000) + make.png_chunk(b"IDAT", b"x\x9c" + b"\x00" * 100)
    assert len(data) < 200
    with make.PeakRss() as rss, pytest.raises(MediaError, match=r"pixel limit|MP limit"):
        decode(data)
    assert rss.delta < 20_000_000  # refused from the header: nothing of 900 MP was allocated


def test_an_image_over_pillows_own_bound_is_refused_in_fediguards_terms(make: Any) -> None:
    """Pillow refuses 900 MP itself, quoting its 178,956,970 pixels: the message quotes max_pixels."""
    data = make.png_header(30_000, 30_000) + make.png_chunk(b"IDAT", b"x\x9c" + b"\x00" * 100)
    with pytest.raises(MediaError) as info:
        decode(data, limits=MediaLimits(max_pixels=40_000_000))
    message = str(info.value)
    assert "900 MP" in message and "pixel limit of 40 MP (max_pixels)" in message, message
    assert "178956970" not in message


def test_compressible_png_bomb_is_refused_fast(make: Any) -> None:
    """A real, valid 9000x9000 PNG (81 MP) of ~80 kB: refused before inflating 81 MB of pixels."""
    data = make.compressible_png(9_000, 9_000)
    assert len(data) < 200_000
    with make.PeakRss() as rss, pytest.raises(MediaError, match="9000\u00d79000 = 81 MP"):
        decode(data)
    assert rss.delta < 20_000_000  # refused before inflating: 81 MB of pixels never allocated


def test_largest_allowed_png_stays_bounded(make: Any) -> None:
    """pict-rs's biggest still (40 MP) in a PNG decodes in one pass; memory is ~1 byte per pixel + frame."""
    data = make.compressible_png(10_000, 4_000)
    with make.PeakRss() as rss:
        media = decode(data)
    assert media.frames[0].image.shape == (512, 1280, 3)
    assert rss.delta < 150_000_000, f"peak RSS grew by {rss.delta / 1e6:.0f} MB"


def test_jxl_size_is_checked_before_decoding(make: Any) -> None:
    if not JXL_SUPPORTED:
        pytest.skip("no JPEG XL plugin")
    data = make.still(Image.new("RGB", (2000, 1000)), "JXL", effort=1)
    with pytest.raises(MediaError, match="2000\u00d71000 = 2 MP"):
        decode(data, limits=MediaLimits(max_pixels=1_000_000))
    boxed = make.still(Image.new("RGB", (2000, 1000)), "JXL", effort=1, use_container=True)
    with pytest.raises(MediaError, match="2000\u00d71000"):
        decode(boxed, limits=MediaLimits(max_pixels=1_000_000))


def test_jxl_without_plugin_is_unsupported(monkeypatch: pytest.MonkeyPatch) -> None:
    from fediguard.media import still

    monkeypatch.delitem(still.PILLOW_FORMATS, "image/jxl", raising=False)
    with pytest.raises(MediaError, match="unsupported media type image/jxl"):
        decode(b"\xff\x0a" + b"\x00" * 64)


# --- process-wide state and threads ------------------------------------------------------------


def test_pillow_global_state_is_untouched(samples: dict[str, bytes], make: Any) -> None:
    max_pixels = Image.MAX_IMAGE_PIXELS
    filters = list(warnings.filters)
    for data in (samples["jpeg"], samples["gif"], make.compressible_png(9_000, 9_000), b"junk"):
        with contextlib.suppress(MediaError):
            decode(data)
    assert max_pixels == Image.MAX_IMAGE_PIXELS
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    assert warnings.filters == filters


def test_concurrent_decoding_matches_sequential(samples: dict[str, bytes]) -> None:
    kinds = sorted(samples) * 3
    expected = {kind: decode(samples[kind]) for kind in samples}
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda kind: decode(samples[kind]), kinds))
    for kind, media in zip(kinds, results, strict=True):
        reference = expected[kind]
        assert [f.index for f in media.frames] == [f.index for f in reference.frames]
        for got, want in zip(media.frames, reference.frames, strict=True):
            assert np.array_equal(got.image, want.image), kind


def test_bad_exif_is_ignored(make: Any) -> None:
    data = make.still(make.astronaut(), "JPEG")
    # An APP1 "Exif" segment whose TIFF header is garbage, right after SOI.
    junk_exif = b"Exif\x00\x00" + b"\xde\xad\xbe\xef" * 8
    segment = b"\xff\xe1" + struct.pack(">H", len(junk_exif) + 2) + junk_exif
    media = decode(data[:2] + segment + data[2:])
    assert media.frames[0].image.shape == (512, 512, 3)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "P", "L", "I;16"])
def test_strip_reduction_matches_a_whole_image_resize(make: Any, mode: str) -> None:
    """Big images are reduced strip by strip to save memory; the result must equal Pillow's own."""
    photo = make.astronaut((3000, 2000))
    if mode == "RGBA":
        photo.putalpha(Image.linear_gradient("L").resize(photo.size))
    elif mode == "P":
        photo = photo.quantize(64)
    elif mode == "L":
        photo = photo.convert("L")
    elif mode == "I;16":
        photo = Image.fromarray(np.asarray(photo.convert("L"), dtype=np.uint16) * 200)
    # 3000x2000 down to 500x333: box-reduced by 3 in six strips, then Lanczos.
    got = decode(make.still(photo, "PNG"), limits=MediaLimits(max_frame_side=500)).frames[0].image.astype(int)
    flat = photo.convert("RGBA" if mode == "RGBA" else "RGB") if mode != "I;16" else photo
    if mode == "I;16":
        peak = int(np.asarray(photo).max())
        flat = Image.fromarray((np.asarray(photo, np.float64) * 255 / peak).astype(np.uint8)).convert("RGB")
    expected_image = flat.resize((500, 333), Image.Resampling.LANCZOS, reducing_gap=2.0)
    if mode == "RGBA":
        white = Image.new("RGB", expected_image.size, (255, 255, 255))
        white.paste(expected_image, mask=expected_image.getchannel("A"))
        expected_image = white
    expected = np.asarray(expected_image.convert("RGB"), dtype=int)
    assert got.shape == expected.shape == (333, 500, 3)
    assert np.abs(got - expected).mean() < 1.0


def test_multi_page_tiff_pages_are_frames(make: Any, numbered_frames: list[np.ndarray]) -> None:
    data = make.animation(numbered_frames[:3], "TIFF")
    media = decode(data)
    assert (media.media_type, media.frame_count, media.animated) == ("image/tiff", 3, True)
    assert [make.read_number(f.image) for f in media.frames] == [0, 1, 2]
    assert [f.time_s for f in media.frames] == [None, None, None]  # pages have no timing


def test_an_animation_whose_frames_add_up_past_the_budget_is_refused_before_decoding_them_all(
    make: Any,
) -> None:
    """Animation frames are composited one on another, so reaching the sampled last frame decodes
    every frame: their pixels are counted on the way and decoding stops past the budget."""
    frames = [make.numbered_frame(i, (96, 72)) for i in range(100)]
    data = make.animation(frames, "GIF", duration_ms=50)
    assert decode(data, limits=MediaLimits(max_composited_pixels=100 * 96 * 72)).frame_count == 100
    with pytest.raises(MediaError, match="over 300,000 pixels"):
        decode(data, limits=MediaLimits(max_composited_pixels=300_000))
