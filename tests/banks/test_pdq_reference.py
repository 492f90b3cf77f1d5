"""Meta's PDQ reference vectors (tests/data/pdq/): fediguard hashes what Meta's tools hash.

Meta's C++ hasher and python-threatexchange hash the stored pixels (no EXIF orientation, alpha
dropped); fediguard hashes that view and the displayed one wherever they differ.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fediguard.banks.pdq import DISPLAYED, STORED, FrameHash, frame_hashes, hamming
from fediguard.media.decode import decode
from fediguard.media.frames import Frame
from fediguard.media.sandbox import DecoderPool

DATA = Path(__file__).parent.parent / "data" / "pdq"
REFERENCE = list(csv.DictReader((DATA / "reference.csv").open()))
MEASURED = [r for r in REFERENCE if int(r["quality"]) >= 80]


def hashes_of(name: str) -> list[FrameHash]:
    return frame_hashes(decode((DATA / name).read_bytes()).frames)


def test_the_reference_set_has_what_these_tests_need() -> None:
    names = {r["file"] for r in MEASURED}
    assert len(MEASURED) >= 15 and {"LA.png", "exif-rotn-6-small.jpg"} <= names
    assert all((DATA / r["file"]).is_file() for r in REFERENCE)


@pytest.mark.parametrize("row", MEASURED, ids=[r["file"] for r in MEASURED])
def test_the_view_meta_hashes_is_within_10_bits_of_metas_hash(row: dict[str, str]) -> None:
    hashes = hashes_of(row["file"])
    # The view Meta's tools hash: the only one, or the stored one when the frame has two.
    metas_view = [h for h in hashes if h.view in ("", STORED)]
    assert len(metas_view) == 1 and metas_view[0].hash.usable
    assert hamming(metas_view[0].hash.hex, row["pdq"]) <= 10


@pytest.mark.parametrize("name", ["exif-rotn-3-small.jpg", "exif-rotn-6-small.jpg", "exif-rotn-8-small.jpg"])
def test_an_exif_rotated_photo_gets_its_upright_and_its_stored_hash(name: str) -> None:
    reference = next(r["pdq"] for r in REFERENCE if r["file"] == name)
    hashes = {h.view: h.hash.hex for h in hashes_of(name)}
    assert set(hashes) == {DISPLAYED, STORED}
    assert hamming(hashes[DISPLAYED], reference) > 100, "upright, it is another picture to PDQ"
    assert hamming(hashes[STORED], reference) <= 10


def test_transparency_is_dropped_for_metas_view_and_composited_for_the_displayed_one() -> None:
    reference = next(r["pdq"] for r in REFERENCE if r["file"] == "LA.png")
    hashes = {h.view: h.hash.hex for h in hashes_of("LA.png")}
    assert set(hashes) == {DISPLAYED, STORED}
    assert hamming(hashes[STORED], reference) == 0
    assert hamming(hashes[DISPLAYED], reference) > 31


def test_an_opaque_upright_image_gets_one_hash() -> None:
    assert [h.view for h in hashes_of("exif-rotn-1-small.jpg")] == [""]
    assert [h.view for h in hashes_of("rgb.jpeg")] == [""]
    with Image.open(DATA / "LA.png") as im:
        opaque = im.convert("L")
    opaque.putalpha(255)  # an alpha channel that hides nothing: no second hash
    buffer = io.BytesIO()
    opaque.save(buffer, "PNG")
    assert [h.view for h in frame_hashes(decode(buffer.getvalue()).frames)] == [""]


def test_the_decoder_sandbox_hands_back_orientation_and_opaque_pixels() -> None:
    with DecoderPool(1) as pool:
        for name in ("LA.png", "exif-rotn-6-small.jpg", "rgb.jpeg"):
            data = (DATA / name).read_bytes()
            direct, sandboxed = decode(data).frames[0], pool.decode(data).frames[0]
            assert sandboxed.orientation == direct.orientation
            assert (sandboxed.opaque is None) == (direct.opaque is None)
            if direct.opaque is not None:
                assert np.array_equal(sandboxed.opaque, direct.opaque)
            assert frame_hashes([sandboxed]) == frame_hashes([direct])


def test_dihedral_hashes_match_a_flipped_copy() -> None:
    with Image.open(DATA / "bridge-square-512x512.jpg") as im:
        image = np.asarray(im.convert("RGB"))
    reference = next(r["pdq"] for r in REFERENCE if r["file"] == "bridge-square-512x512.jpg")
    mirrored = Frame(0, np.ascontiguousarray(image[:, ::-1]))
    plain = frame_hashes([mirrored])
    assert len(plain) == 1 and hamming(plain[0].hash.hex, reference) > 31
    flips = frame_hashes([mirrored], dihedral=True)
    assert len(flips) == 8 and [h.dihedral for h in flips] == [False] + [True] * 7
    closest = min(flips, key=lambda h: hamming(h.hash.hex, reference))
    # PDQ's own name for a mirror image about the vertical axis
    assert hamming(closest.hash.hex, reference) <= 31 and closest.view == "flipy"


def test_a_frame_hash_view_round_trips_and_unknown_views_are_refused() -> None:
    h = hashes_of("LA.png")[1]
    assert FrameHash.from_json(h.to_json()) == h and h.to_json()["view"] == STORED
    assert "view" not in hashes_of("rgb.jpeg")[0].to_json()
    with pytest.raises(ValueError, match="unknown frame hash view"):
        FrameHash.from_json({**h.to_json(), "view": "sideways"})
