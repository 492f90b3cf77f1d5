"""Bank entries made by Meta's tools match through the real scan path (gateway, decoder sandbox,
scanner pipeline): an EXIF-rotated photo and a transparent image are rejected by the hash Meta's
reference hasher gives them, and the reason says which view of the picture matched."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image
from test_banks_flow import cli, wait_for_banks

from fediguard.banks.formats import BankEntry
from fediguard.banks.store import BankStore
from support.detectors import CallCounter, ScoreDetector
from support.gateway import RunningGateway

Start = Callable[..., RunningGateway]
DATA = Path(__file__).parent.parent / "data" / "pdq"
REFERENCE = {r["file"]: r["pdq"] for r in csv.DictReader((DATA / "reference.csv").open())}
METAS = ["exif-rotn-3-small.jpg", "exif-rotn-6-small.jpg", "exif-rotn-8-small.jpg", "LA.png"]


def reencoded(name: str) -> bytes:
    """The file saved again: JPEG at another quality with its EXIF kept, or a PNG re-compressed."""
    with Image.open(DATA / name) as im:
        buffer = io.BytesIO()
        if im.format == "JPEG":
            im.save(buffer, "JPEG", quality=70, exif=im.getexif().tobytes())
        else:
            im.save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


@pytest.mark.parametrize("sandbox", [True, False], ids=["sandboxed", "in-process"])
def test_metas_hashes_of_rotated_and_transparent_images_reject_them(
    gateway_for: Start, sandbox: bool
) -> None:
    counter = CallCounter()
    gw = gateway_for(
        lambda: counter.wrap(ScoreDetector("nudity", {"explicit": 0.0})), bank_refresh_s=0.1,
        decode_sandbox=sandbox,
    )  # fmt: skip
    banks = BankStore(gw.store.engine)
    before = banks.state()
    banks.create("from-meta", "deny")
    entries = [BankEntry("pdq", REFERENCE[name], f"meta {name}") for name in METAS]
    assert banks.add("from-meta", entries, source="test", added_by="test") == len(METAS)
    wait_for_banks(gw, before)
    for name in METAS:
        for data in ((DATA / name).read_bytes(), reencoded(name)):
            answer = gw.post(data, "image/png" if name.endswith("png") else "image/jpeg")
            assert answer.status_code == 406, (name, answer.json())
            reason = answer.json()["reasons"][0]
            assert (
                f"meta {name}" in reason
                and "as stored: EXIF orientation not applied, alpha dropped" in reason
            )
    assert counter.count == 0, "a bank hit runs no model"
    upright = gw.post((DATA / "exif-rotn-1-small.jpg").read_bytes(), "image/jpeg")
    assert upright.status_code == 200, "another photo still passes"


def test_banks_add_of_a_rotated_photo_holds_both_views(gateway_for: Start, tmp_path: Path) -> None:
    gw = gateway_for(lambda: ScoreDetector("nudity", {"explicit": 0.0}), bank_refresh_s=0.1)
    before = BankStore(gw.store.engine).state()
    assert cli(gw, "banks", "create", "mine", "--kind", "deny").returncode == 0
    added = cli(gw, "banks", "add", "mine", str(DATA / "exif-rotn-6-small.jpg"), "--no-crops")
    assert added.returncode == 0 and "added 3 new entries" in added.stdout, added.stdout + added.stderr
    values = {e.value for e in BankStore(gw.store.engine).entries("mine") if e.kind == "pdq"}
    assert len(values) == 2
    wait_for_banks(gw, before)
    # Displayed upright and stripped of its EXIF, the photo still meets the displayed view's entry.
    with Image.open(DATA / "exif-rotn-6-small.jpg") as im:
        upright = im.transpose(Image.Transpose.ROTATE_270)
    buffer = io.BytesIO()
    upright.save(buffer, "JPEG", quality=80)
    answer = gw.post(buffer.getvalue(), "image/jpeg")
    assert answer.status_code == 406 and "bank 'mine'" in answer.json()["reasons"][0], answer.json()


def test_dihedral_matching_rejects_a_mirror_image_and_confirm_keeps_only_real_views(
    gateway_for: Start,
) -> None:
    gw = gateway_for(
        lambda: ScoreDetector("nudity", {"explicit": 0.0}), bank_refresh_s=0.1, pdq_dihedral=True
    )
    rotated = (DATA / "exif-rotn-6-small.jpg").read_bytes()
    first = gw.post(rotated, "image/jpeg")
    assert first.status_code == 200
    record = gw.store.get(first.json()["id"])
    assert record is not None and record.pdq is not None
    assert sorted({h.get("view", "") for h in record.pdq})[:2] == ["displayed", "displayed, flipminus1"]
    assert len(record.pdq) == 16, "two views, eight transforms each"
    before = BankStore(gw.store.engine).state()
    confirmed = cli(gw, "confirm", str(first.json()["id"]))
    assert confirmed.returncode == 0, confirmed.stderr
    values = [e for e in BankStore(gw.store.engine).entries("confirmed") if e.kind == "pdq"]
    assert len(values) == 2, "the displayed and the stored view; never the flipped copies"
    wait_for_banks(gw, before)
    with Image.open(DATA / "exif-rotn-6-small.jpg") as im:
        mirrored = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)  # the stored pixels, mirrored
        buffer = io.BytesIO()
        mirrored.save(buffer, "JPEG", quality=80)  # no EXIF: shown as stored
    answer = gw.post(buffer.getvalue(), "image/jpeg")
    assert answer.status_code == 406, answer.json()
    assert "copy (dihedral matching)" in answer.json()["reasons"][0]
