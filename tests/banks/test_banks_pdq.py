"""PDQ hashing on benign photos: re-encodings match, unrelated photos do not, flat images are flagged."""

from __future__ import annotations

import itertools

import numpy as np
import pdqhash
import pytest
from bank_images import PHOTOS, load_photo, reencode
from PIL import Image, ImageDraw

from fediguard.banks.index import HashIndex
from fediguard.banks.pdq import (
    CENTRE_SQUARE,
    CROPS,
    HASH_LONG_SIDE,
    MATCH_DISTANCE,
    MIN_QUALITY,
    PdqHash,
    crop_variants,
    hamming,
    parse_pdq,
    pdq_hash,
)
from fediguard.media.frames import Frame


@pytest.fixture(scope="module")
def photos() -> dict[str, np.ndarray]:
    return {name: load_photo(name) for name in PHOTOS}


def _resize(image: np.ndarray, factor: float) -> np.ndarray:
    height, width = image.shape[:2]
    size = (round(width * factor), round(height * factor))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.LANCZOS))


def _crop(image: np.ndarray, fraction_each_side: float) -> np.ndarray:
    height, width = image.shape[:2]
    dy, dx = round(height * fraction_each_side), round(width * fraction_each_side)
    return np.ascontiguousarray(image[dy : height - dy, dx : width - dx])


TRANSFORMS = {
    "jpeg-quality-50": lambda im: reencode(im, "JPEG", quality=50),
    "resize-50%": lambda im: _resize(im, 0.5),
    "crop-1%-each-side": lambda im: _crop(im, 0.01),
    "png-to-webp": lambda im: reencode(reencode(im, "PNG"), "WEBP", quality=80),
    "webp-to-png": lambda im: reencode(reencode(im, "WEBP", quality=80), "PNG"),
}


@pytest.mark.parametrize("transform", TRANSFORMS)
@pytest.mark.parametrize("name", PHOTOS)
def test_transformed_copy_is_near_and_matches_in_the_index(
    photos: dict[str, np.ndarray], name: str, transform: str
) -> None:
    original = pdq_hash(photos[name])
    copy = pdq_hash(TRANSFORMS[transform](photos[name]))
    assert original.usable and copy.usable
    # Measured: JPEG q50 2 bits, PNG<->WEBP 0-2, 50 % resize 10-20, 1 % crop a side 16-26.
    assert hamming(original.hex, copy.hex) <= MATCH_DISTANCE

    index = HashIndex()
    index.add_many((i, pdq_hash(photos[other]).hex) for i, other in enumerate(PHOTOS))
    matches = index.search(copy.hex, MATCH_DISTANCE)
    assert [entry for entry, _ in matches] == [PHOTOS.index(name)]


@pytest.mark.parametrize("name", PHOTOS)
def test_crop_of_5_percent_escapes_the_plain_hash(photos: dict[str, np.ndarray], name: str) -> None:
    """Characterises the PDQ limit that crop variants exist for: cropping 5 % moves the hash 50-130
    bits. Both a 5 % crop of each side (78-128 bits measured) and of one side (54-86) are far past
    the threshold. If this starts failing, hashing changed in a way that deserves a look.
    """
    original = pdq_hash(photos[name]).hex
    image = photos[name]
    each_side = hamming(original, pdq_hash(_crop(image, 0.05)).hex)
    one_side = hamming(original, pdq_hash(_trim(image, left=0.05)).hex)
    assert each_side > MATCH_DISTANCE and one_side > MATCH_DISTANCE


def _trim(
    image: np.ndarray, left: float = 0, top: float = 0, right: float = 0, bottom: float = 0
) -> np.ndarray:
    height, width = image.shape[:2]
    rows = slice(round(height * top), height - round(height * bottom))
    columns = slice(round(width * left), width - round(width * right))
    return np.ascontiguousarray(image[rows, columns])


CROPPED_UPLOADS = {
    "5% each side": lambda im: _crop(im, 0.05),
    "5% left": lambda im: _trim(im, left=0.05),
    "5% bottom": lambda im: _trim(im, bottom=0.05),
    "5% left and right": lambda im: _trim(im, left=0.05, right=0.05),
    "5% top-right corner": lambda im: _trim(im, top=0.05, right=0.05),
    # between the variants' steps (2.5, 5, 7.5, 10 %): measured 18-26 bits for 6 %, 10-20 for 9 %
    # right; 4 % each side reached 30 (CROPS says so), too close to 31 to test on.
    "6% each side": lambda im: _crop(im, 0.06),
    "3% top": lambda im: _trim(im, top=0.03),
    "9% right": lambda im: _trim(im, right=0.09),
    "centre square": lambda im: _centre_square(im),
}


def _centre_square(image: np.ndarray) -> np.ndarray:
    height, width = image.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    return np.ascontiguousarray(image[top : top + side, left : left + side])


@pytest.fixture(scope="module")
def bank_with_crops(photos: dict[str, np.ndarray]) -> tuple[HashIndex, dict[int, str]]:
    """Every photo's hash and its crop variants in one index, entry id → the photo it came from."""
    index, owner = HashIndex(), {}
    for name, image in photos.items():
        for variant, h in [("", pdq_hash(image)), *crop_variants(image)]:
            owner[len(owner)] = f"{name}:{variant}"
            index.add(len(owner) - 1, h.hex)
    return index, owner


@pytest.mark.parametrize("crop", CROPPED_UPLOADS)
@pytest.mark.parametrize("name", PHOTOS)
def test_crop_variants_catch_cropped_copies(
    photos: dict[str, np.ndarray], bank_with_crops: tuple[HashIndex, dict[int, str]], name: str, crop: str
) -> None:
    """A cropped, re-encoded copy matches its photo's variants, and no other photo's hash or variant."""
    image = photos[name]
    upload = pdq_hash(reencode(CROPPED_UPLOADS[crop](image), "JPEG", quality=75))
    index, owner = bank_with_crops
    matches = index.search(upload.hex, MATCH_DISTANCE)
    photos_matched = {owner[entry].split(":")[0] for entry, _ in matches}
    assert photos_matched == {name}, [(owner[e], d) for e, d in matches]


def test_crop_variants_are_usable_hashes_of_distinct_framings(photos: dict[str, np.ndarray]) -> None:
    image = photos["chelsea"]  # landscape: every crop applies
    variants = crop_variants(image)
    assert [name for name, _ in variants] == list(CROPS)
    assert all(h.usable for _, h in variants)
    assert len({h.hex for _, h in variants} | {pdq_hash(image).hex}) == len(CROPS) + 1
    square = photos["astronaut"]  # 512x512: its centre square is itself, no variant
    assert CENTRE_SQUARE not in dict(crop_variants(square))
    with pytest.raises(ValueError):
        crop_variants(np.zeros((0, 4, 3), np.uint8))
    assert crop_variants(np.zeros((300, 400, 3), np.uint8)) == []  # flat: nothing usable


def test_unrelated_photos_are_far_apart(photos: dict[str, np.ndarray]) -> None:
    hashes = {name: pdq_hash(image).hex for name, image in photos.items()}
    distances = [hamming(hashes[a], hashes[b]) for a, b in itertools.combinations(PHOTOS, 2)]
    # Measured 118-146 over the ten pairs; random 256-bit hashes sit at 128 +- 8.
    assert min(distances) >= 110 and max(distances) <= 150, distances

    index = HashIndex()
    index.add_many((i, hashes[name]) for i, name in enumerate(PHOTOS))
    for i, name in enumerate(PHOTOS):
        assert index.search(hashes[name], MATCH_DISTANCE) == [(i, 0)]


@pytest.mark.parametrize("colour", [(0, 0, 0), (255, 255, 255), (200, 30, 90), (127, 127, 127)])
def test_flat_colour_has_low_quality(colour: tuple[int, int, int]) -> None:
    image = np.empty((300, 400, 3), dtype=np.uint8)
    image[:] = colour
    result = pdq_hash(image)
    assert result.quality < MIN_QUALITY
    assert not result.usable


def test_drawn_shapes_have_usable_quality() -> None:
    canvas = Image.new("RGB", (640, 480), (240, 240, 230))
    draw = ImageDraw.Draw(canvas)
    draw.ellipse((60, 40, 300, 280), fill=(200, 40, 40))
    draw.rectangle((320, 200, 600, 440), fill=(30, 60, 160))
    draw.line((0, 479, 639, 0), fill=(0, 0, 0), width=9)
    assert pdq_hash(np.asarray(canvas)).quality >= MIN_QUALITY


def test_hex_is_the_threatexchange_encoding(photos: dict[str, np.ndarray]) -> None:
    """Same text python-threatexchange derives from pdqhash's bit vector: bits MSB first, as hex."""
    image = photos["astronaut"]  # 512 px: hashed without shrinking
    bits, quality = pdqhash.compute(image)
    binary = "".join(str(int(b)) for b in bits)
    expected = f"{int(binary, 2):064x}"
    assert pdq_hash(image) == PdqHash(hex=expected, quality=int(quality))


@pytest.mark.parametrize("name", PHOTOS)
def test_shrinking_large_images_costs_few_bits(photos: dict[str, np.ndarray], name: str) -> None:
    large = _resize(photos[name], 1024 / max(photos[name].shape[:2]))
    assert max(large.shape[:2]) > HASH_LONG_SIDE
    bits, _ = pdqhash.compute(large)
    full_size = np.packbits(bits.astype(np.uint8)).tobytes().hex()
    # Measured 2-10 bits on these photos at 1024 px (see HASH_LONG_SIDE).
    assert hamming(full_size, pdq_hash(large).hex) <= 12


def test_frames_hash_like_their_image(photos: dict[str, np.ndarray]) -> None:
    frame = Frame(index=0, image=photos["coffee"])
    assert pdq_hash(frame.image) == pdq_hash(photos["coffee"].copy())


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((10, 10, 3), dtype=np.float32),
        np.zeros((10, 10), dtype=np.uint8),
        np.zeros((10, 10, 4), dtype=np.uint8),
        np.zeros((0, 10, 3), dtype=np.uint8),
    ],
    ids=["float", "greyscale", "rgba", "empty"],
)
def test_pdq_hash_rejects_what_is_not_an_rgb_image(image: np.ndarray) -> None:
    with pytest.raises(ValueError):
        pdq_hash(image)


def test_parse_pdq_normalises() -> None:
    value = "F8F8F0CEE0F4A84F06370A22038F63F0B36E2ED596621E1D33E6B39C4E9C9B22"
    assert parse_pdq(f"  {value}\n") == value.lower()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("f8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b2", "got 63"),
        ("f8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b221", "got 65"),
        ("f8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9bz2", "'z' at position 63"),
        ("0xf8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22", "'x' at position 2"),
        ("f8f8f0cee0f4a84f 6370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22", "' ' at position 17"),
        ("", "empty"),
    ],
)
def test_parse_pdq_says_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ValueError, match="not a PDQ hash") as caught:
        parse_pdq(text)
    assert message in str(caught.value)


def test_hamming() -> None:
    zero, ones = "0" * 64, "f" * 64
    assert hamming(zero, zero) == 0
    assert hamming(zero, ones) == 256
    assert hamming(zero, "0" * 63 + "1") == 1
    assert hamming("8" + "0" * 63, "0" * 64) == 1
    with pytest.raises(ValueError):
        hamming(zero, "0" * 63)
