"""Banks end to end: the CLI fills them, a running gateway picks them up and applies them."""

from __future__ import annotations

import hashlib
import logging
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest
from sqlalchemy import select

from fediguard.banks.formats import BankEntry
from fediguard.banks.store import BankStore
from fediguard.detectors.hashlist import HashListDetector
from fediguard.records.schema import rematches
from support.detectors import CallCounter, ScoreDetector
from support.gateway import RunningGateway
from support.images import encode

Start = Callable[..., RunningGateway]


def photo(name: str) -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(getattr(data, name)())


def cli(gw: RunningGateway, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, FEDIGUARD_DATABASE_URL=gw.settings.effective_database_url)
    return subprocess.run([sys.executable, "-m", "fediguard", *args], env=env, capture_output=True, text=True,
                          timeout=120)  # fmt: skip


def wait_for_banks(gw: RunningGateway, state_before: int) -> None:
    """Wait until the gateway has loaded the banks as they are now (not merely a newer state than
    ``state_before``: a reload between two changes would be newer yet miss the second)."""
    assert gw.service.banks is not None
    now = BankStore(gw.store.engine).state()
    assert now != state_before, "the test changed no bank"
    deadline = time.monotonic() + 10
    while gw.service.banks.matcher.state != now:
        assert time.monotonic() < deadline, "the gateway did not pick up the bank change"
        time.sleep(0.05)


def test_denied_image_and_its_reencoding_are_rejected(gateway_for: Start, tmp_path: Path) -> None:
    counter = CallCounter()
    gw = gateway_for(lambda: counter.wrap(ScoreDetector("nudity", {"explicit": 0.0})), bank_refresh_s=0.1)
    original = encode(photo("astronaut"), "PNG")
    (tmp_path / "bad.png").write_bytes(original)
    before = gw.service.banks.matcher.state  # type: ignore[union-attr]
    assert cli(gw, "banks", "create", "known-bad", "--kind", "deny").returncode == 0
    added = cli(gw, "banks", "add", "known-bad", str(tmp_path / "bad.png"), "--note", "test list")
    assert added.returncode == 0, added.stderr
    # SHA-256, PDQ, and the PDQ hashes of 44 cropped copies (a deny bank gets them by default; the
    # 45th crop, the centre square, is the square photo itself)
    assert "added 46 new entries" in added.stdout and "44 of the hashes are of cropped" in added.stdout
    wait_for_banks(gw, before)

    exact = gw.post(original)
    assert exact.status_code == 406
    assert exact.json()["labels"] == ["denylisted"]
    exact_record = gw.store.get(exact.json()["id"])  # decided by SHA-256; its PDQ is recorded all the same
    assert exact_record is not None and exact_record.pdq and exact_record.pdq[0]["quality"] >= 50
    again = gw.store.get(gw.post(original).json()["id"])
    assert again is not None and again.pdq == exact_record.pdq
    assert (
        "bank 'known-bad'" in exact.json()["reasons"][0]
        and "sha256, distance 0" in exact.json()["reasons"][0]
    )
    near = gw.post(encode(photo("astronaut"), "JPEG", quality=50), "image/jpeg")
    assert near.status_code == 406 and "pdq, distance" in near.json()["reasons"][0]
    assert counter.count == 0, "a bank hit runs no model"
    image = photo("astronaut")
    cropped = gw.post(encode(image[26:-26, 26:-26], "JPEG", quality=80), "image/jpeg")  # 5 % a side
    assert cropped.status_code == 406
    assert "entry 2 (pdq of its crop 'each side 5%'" in cropped.json()["reasons"][0], cropped.json()
    assert counter.count == 0, "a bank hit runs no model"
    unrelated = gw.post(encode(photo("coffee"), "JPEG"), "image/jpeg")
    assert unrelated.status_code == 200 and counter.count == 1
    record = gw.store.get(unrelated.json()["id"])
    assert record is not None and record.pdq and record.pdq[0]["quality"] >= 50

    listed = cli(gw, "banks", "list").stdout.splitlines()
    assert listed[1].split()[:4] == ["known-bad", "deny", "46", "44"], listed
    shown = cli(gw, "banks", "show", "known-bad").stdout.splitlines()
    assert shown[0] == "deny bank 'known-bad': 46 entries, 44 of them crop variants", shown
    assert shown[1] == "  radius default, flood guard 50/1h", shown
    assert len(shown) == 4 and all(
        "from file (cli add bad.png)  — test list" in line for line in shown[2:]
    ), shown
    with_crops = cli(gw, "banks", "show", "known-bad", "--crops", "--limit", "5").stdout.splitlines()
    assert len(with_crops) == 8 and "crop 'bottom-left 10%' of entry 2" in with_crops[2], with_crops
    exported = cli(gw, "banks", "export", "known-bad", "--no-crops").stdout.splitlines()
    assert len(exported) == 3 and all("crop" not in line for line in exported), exported
    removed = cli(gw, "banks", "remove", "known-bad", "--id", "2")
    assert "removed entry 2 and its 44 crop variants" in removed.stdout, removed.stdout + removed.stderr
    assert cli(gw, "banks", "list").stdout.splitlines()[1].split()[:4] == ["known-bad", "deny", "1", "0"]


def test_an_allow_bank_gets_no_crop_variants_unless_asked(gateway_for: Start, tmp_path: Path) -> None:
    gw = gateway_for(lambda: ScoreDetector("nudity", {"explicit": 0.0}))
    (tmp_path / "ok.png").write_bytes(encode(photo("chelsea"), "PNG"))
    assert cli(gw, "banks", "create", "ok", "--kind", "allow").returncode == 0
    narrow = cli(gw, "banks", "add", "ok", str(tmp_path / "ok.png"))
    assert "added 2 new entries" in narrow.stdout, narrow.stdout + narrow.stderr
    wide = cli(gw, "banks", "add", "ok", str(tmp_path / "ok.png"), "--crops")
    assert "added 45 new entries" in wide.stdout, wide.stdout + wide.stderr


def test_allow_overturns_a_decision_and_skips_the_models(gateway_for: Start) -> None:
    counter = CallCounter()
    gw = gateway_for(
        lambda: counter.wrap(ScoreDetector("nudity", {"explicit": 0.9})), reject_labels="csam_suspect,nsfw",
        bank_refresh_s=0.1,
    )  # fmt: skip
    first = gw.post(encode(photo("chelsea"), "PNG"))
    assert first.status_code == 406 and counter.count == 1
    before = gw.service.banks.matcher.state  # type: ignore[union-attr]
    run = cli(gw, "allow", str(first.json()["id"]), "--note", "a cat, not nsfw")
    assert run.returncode == 0, run.stderr
    assert "overturned" in run.stdout
    wait_for_banks(gw, before)
    again = gw.post(encode(photo("chelsea"), "WEBP", quality=80), "image/webp")
    assert again.status_code == 200
    assert again.json()["labels"] == ["allowlisted"] and "bank 'allowed'" in again.json()["reasons"][0]
    assert counter.count == 1, "an allow-bank hit never runs a model"
    record = gw.store.get(first.json()["id"])
    assert record is not None and record.review == "overturned" and record.review_note == "a cat, not nsfw"


def test_confirm_puts_the_hashes_in_a_deny_bank(gateway_for: Start) -> None:
    gw = gateway_for(lambda: ScoreDetector("nudity", {"explicit": 0.9}), bank_refresh_s=0.1)
    first = gw.post(encode(photo("rocket"), "PNG"))
    assert first.status_code == 200 and first.json()["labels"] == ["nsfw"]
    before = gw.service.banks.matcher.state  # type: ignore[union-attr]
    assert cli(gw, "confirm", str(first.json()["id"])).returncode == 0
    wait_for_banks(gw, before)
    again = gw.post(encode(photo("rocket"), "JPEG", quality=70), "image/jpeg")
    assert again.status_code == 406 and again.json()["labels"] == ["denylisted"]


def test_verdict_cache_reuses_a_pass_until_something_changes(gateway_for: Start) -> None:
    counter = CallCounter()
    gw = gateway_for(lambda: counter.wrap(ScoreDetector("nudity", {"explicit": 0.0})), bank_refresh_s=0.1)
    body = encode(photo("camera"), "PNG")
    first = gw.post(body)
    second = gw.post(body)
    assert counter.count == 1
    assert second.json()["reasons"] == [f"cached: identical bytes passed in decision {first.json()['id']}"]
    assert gw.store.count() == 2, "the cached decision is recorded too"
    scanned, cached = gw.store.get(first.json()["id"]), gw.store.get(second.json()["id"])
    assert scanned is not None and cached is not None and cached.scanner == "cache"
    assert scanned.pdq and cached.pdq == scanned.pdq, "with the hashes of the bytes it reuses"
    # A bank change invalidates every cached pass: the same bytes are scanned again.
    before = gw.service.banks.matcher.state  # type: ignore[union-attr]
    BankStore(gw.store.engine).create("other", "deny")
    BankStore(gw.store.engine).add("other", [BankEntry("sha256", "33" * 32)], "t", "t")
    wait_for_banks(gw, before)
    gw.post(body)
    assert counter.count == 2


def test_bank_import_export_via_cli(gateway_for: Start, tmp_path: Path) -> None:
    gw = gateway_for(lambda: ScoreDetector("nudity", {}))
    good = tmp_path / "good.csv"
    good.write_text(
        f'hash,kind,note,variant,parent\n{"ab" * 32},sha256,"a, quoted note",,\n{"cd" * 32},pdq,,,\n'
    )
    bad = tmp_path / "bad.csv"
    bad.write_text(f"hash,kind,note\n{'ab' * 32},sha256,ok\nnothex,pdq,x\n{'ef' * 32},md5,x\n")
    assert cli(gw, "banks", "create", "imp", "--kind", "deny").returncode == 0
    failed = cli(gw, "banks", "import", "imp", str(bad))
    assert failed.returncode == 2 and "line 3" in failed.stderr and "line 4" in failed.stderr
    assert "nothing was imported" in failed.stderr
    assert BankStore(gw.store.engine).get("imp").entries == 0
    assert cli(gw, "banks", "import", "imp", str(good)).returncode == 0
    exported = cli(gw, "banks", "export", "imp")
    assert exported.returncode == 0
    assert exported.stdout.replace("\r\n", "\n") == good.read_text()
    signals = cli(gw, "banks", "export", "imp", "--format", "signals", "--drop-notes")
    assert signals.stdout.split("\n")[:2] == [f"video_sha256 {'ab' * 32}", f"pdq {'cd' * 32}"]
    noted = cli(gw, "banks", "export", "imp", "--format", "signals")
    assert noted.returncode == 0, noted.stderr
    assert noted.stdout.split("\n")[:3] == [
        "# a, quoted note",
        f"video_sha256 {'ab' * 32}",
        f"pdq {'cd' * 32}",
    ]
    (tmp_path / "list.txt").write_text(noted.stdout)
    assert cli(gw, "banks", "create", "again", "--kind", "deny").returncode == 0
    assert cli(gw, "banks", "import", "again", str(tmp_path / "list.txt")).returncode == 0
    assert list(BankStore(gw.store.engine).entries("again")) == list(
        BankStore(gw.store.engine).entries("imp")
    )
    listing = cli(gw, "banks", "list")
    assert "imp" in listing.stdout and "deny" in listing.stdout
    refused = cli(gw, "banks", "delete", "imp")
    assert refused.returncode == 2 and "--yes" in refused.stderr
    assert cli(gw, "banks", "delete", "imp", "--yes").returncode == 0
    missing = cli(gw, "allow", "999999")
    assert missing.returncode == 2 and "no decision record 999999" in missing.stderr


def test_a_csv_round_trip_keeps_crop_variants_tied_to_their_entry(gateway_for: Start, tmp_path: Path) -> None:
    gw = gateway_for(lambda: ScoreDetector("nudity", {}))
    (tmp_path / "bad.png").write_bytes(encode(photo("astronaut"), "PNG"))
    assert cli(gw, "banks", "create", "first", "--kind", "deny").returncode == 0
    assert cli(gw, "banks", "add", "first", str(tmp_path / "bad.png"), "--note", "n").returncode == 0
    exported = cli(gw, "banks", "export", "first", "-o", str(tmp_path / "first.csv"))
    assert exported.returncode == 0, exported.stderr
    assert cli(gw, "banks", "create", "second", "--kind", "deny").returncode == 0
    imported = cli(gw, "banks", "import", "second", str(tmp_path / "first.csv"))
    assert imported.returncode == 0 and "imported 46 new entries" in imported.stdout, (
        imported.stdout + imported.stderr
    )
    listed = {line.split()[0]: line.split()[1:4] for line in cli(gw, "banks", "list").stdout.splitlines()[1:]}
    assert listed["second"] == ["deny", "46", "44"], listed
    banks = BankStore(gw.store.engine)
    assert list(banks.entries("second")) == list(banks.entries("first"))
    (pdq,) = [e for e in banks.stored_entries("second", crops=False) if e.hash_kind == "pdq"]
    assert pdq.source_kind == "import" and pdq.source == "import first.csv"
    removed = cli(gw, "banks", "remove", "second", "--id", str(pdq.id))
    assert f"removed entry {pdq.id} and its 44 crop variants" in removed.stdout, (
        removed.stdout + removed.stderr
    )


def test_a_bank_change_is_seen_even_when_sqlite_reuses_entry_ids(gateway_for: Start) -> None:
    """Delete an allow bank, create a deny bank with as many entries: SQLite hands out the deleted
    entry id again. The gateway must still reload, drop the old allow entry, apply the new deny
    entry and stop reusing cached passes."""
    counter = CallCounter()
    gw = gateway_for(lambda: counter.wrap(ScoreDetector("nudity", {"explicit": 0.0})), bank_refresh_s=0.1)
    banks = BankStore(gw.store.engine)
    allowed, body = encode(photo("chelsea"), "PNG"), encode(photo("camera"), "PNG")
    before = gw.service.banks.matcher.state  # type: ignore[union-attr]
    banks.create("ok", "allow")
    banks.add("ok", [BankEntry("sha256", hashlib.sha256(allowed).hexdigest())], "t", "t")
    wait_for_banks(gw, before)
    assert gw.post(allowed).json()["labels"] == ["allowlisted"]
    first = gw.post(body)
    assert first.status_code == 200 and gw.post(body).json()["reasons"][0].startswith("cached:")
    assert counter.count == 1
    record = gw.store.get(first.json()["id"])
    assert record is not None and record.pdq
    (old_id,) = [i for i, *_ in banks.all_hashes()]

    before = gw.service.banks.matcher.state  # type: ignore[union-attr]
    banks.delete("ok")
    banks.create("bad", "deny")
    banks.add("bad", [BankEntry("pdq", record.pdq[0]["hash"])], "t", "t")
    assert [i for i, *_ in banks.all_hashes()] == [old_id], "SQLite reused the id"
    wait_for_banks(gw, before)

    denied = gw.post(body)
    assert denied.status_code == 406 and denied.json()["labels"] == ["denylisted"], "no cached pass"
    assert f"bank 'bad' entry {old_id}" in denied.json()["reasons"][0]
    scanned = gw.post(allowed)
    assert scanned.status_code == 200 and scanned.json()["labels"] == [], "no longer allow-listed"
    assert counter.count == 2


def test_allow_refuses_to_claim_an_overturn_that_an_exact_deny_entry_beats(gateway_for: Start) -> None:
    counter = CallCounter()
    gw = gateway_for(
        lambda: counter.wrap(ScoreDetector("nudity", {"explicit": 0.9})), reject_labels="csam_suspect,nsfw",
        bank_refresh_s=0.1,
    )  # fmt: skip
    body = encode(photo("rocket"), "PNG")
    first = gw.post(body)
    assert first.status_code == 406 and first.json()["labels"] == ["nsfw"]
    record_id = str(first.json()["id"])
    assert cli(gw, "confirm", record_id).returncode == 0
    sha = hashlib.sha256(body).hexdigest()
    assert cli(gw, "banks", "create", "known-bad", "--kind", "deny").returncode == 0
    assert cli(gw, "banks", "add", "known-bad", "--hash", sha, "--kind", "sha256").returncode == 0

    blocked = cli(gw, "allow", record_id)
    assert blocked.returncode == 1, blocked.stderr
    assert blocked.stdout == "" and f"decision {record_id} is NOT overturned" in blocked.stderr
    banks = BankStore(gw.store.engine)
    deny = banks.find("deny", [("sha256", sha)])
    assert {e.bank for e in deny} == {"confirmed", "known-bad"}
    for e in deny:
        assert f"deny bank {e.bank!r} entry {e.id}: sha256 {sha}" in blocked.stderr
    commands = [line.strip() for line in blocked.stderr.splitlines() if "fediguard banks remove" in line]
    confirmed_ids = " ".join(str(i) for i, kind, *_ in banks.all_hashes() if kind == "deny")
    assert len(commands) == 2 and commands[0].startswith("fediguard banks remove confirmed --id ")
    assert sorted(commands[0].split("--id ")[1].split() + commands[1].split("--id ")[1].split()) == sorted(
        confirmed_ids.split()
    ), "every deny entry holding one of the image's own hashes (SHA-256 and PDQ) is named"
    record = gw.store.get(int(record_id))
    assert record is not None and record.review == "confirmed", "nothing was changed"
    assert "allowed" not in {b.name for b in banks.list()}

    before = gw.service.banks.matcher.state  # type: ignore[union-attr]
    for command in commands:
        removed = cli(gw, *shlex.split(command)[1:])
        assert removed.returncode == 0 and "removed entry" in removed.stdout, removed.stderr
    allowed = cli(gw, "allow", record_id)
    assert allowed.returncode == 0 and f"decision {record_id} overturned" in allowed.stdout, allowed.stderr
    wait_for_banks(gw, before)
    again = gw.post(body)
    assert again.status_code == 200 and again.json()["labels"] == ["allowlisted"]
    assert counter.count == 1


def test_banks_remove_via_cli(gateway_for: Start) -> None:
    gw = gateway_for(lambda: ScoreDetector("nudity", {}))
    assert cli(gw, "banks", "create", "b", "--kind", "deny").returncode == 0
    assert cli(gw, "banks", "add", "b", "--hash", "ab" * 32, "--hash", "cd" * 32).returncode == 0
    ids = sorted(i for i, *_ in BankStore(gw.store.engine).all_hashes())
    partly = cli(gw, "banks", "remove", "b", "--id", str(ids[0]), "999999")
    assert partly.returncode == 1 and f"removed entry {ids[0]} from deny bank 'b'" in partly.stdout
    assert "not in bank 'b': entry 999999" in partly.stderr
    by_hash = cli(gw, "banks", "remove", "b", "--hash", "CD" * 32)
    assert by_hash.returncode == 0 and f"removed entry {ids[1]}" in by_hash.stdout, by_hash.stderr
    assert BankStore(gw.store.engine).get("b").entries == 0
    both = cli(gw, "banks", "remove", "b", "--id", "1", "--hash", "ab" * 32)
    assert both.returncode == 2 and "not allowed with" in both.stderr
    assert cli(gw, "banks", "remove", "nope", "--id", "1").returncode == 2


def test_an_exact_sha256_allow_ties_an_exact_pdq_deny_and_deny_wins(gateway_for: Start) -> None:
    counter = CallCounter()
    gw = gateway_for(lambda: counter.wrap(ScoreDetector("nudity", {"explicit": 0.0})), bank_refresh_s=0.1)
    body = encode(photo("astronaut"), "PNG")
    first = gw.post(body)
    record = gw.store.get(first.json()["id"])
    assert record is not None and record.pdq and counter.count == 1
    own_pdq = record.pdq[0]["hash"]
    banks = BankStore(gw.store.engine)
    before = gw.service.banks.matcher.state  # type: ignore[union-attr]
    banks.create("ok", "allow")
    banks.add("ok", [BankEntry("sha256", hashlib.sha256(body).hexdigest())], "t", "t")
    banks.create("bad", "deny")
    banks.add("bad", [BankEntry("pdq", own_pdq, "its own PDQ")], "t", "t")
    wait_for_banks(gw, before)

    tied = gw.post(body)
    assert tied.status_code == 406 and tied.json()["labels"] == ["denylisted"], tied.json()
    assert "bank 'bad'" in tied.json()["reasons"][0] and "pdq, distance 0" in tied.json()["reasons"][0]
    assert counter.count == 1, "no model ran"
    tied_record = gw.store.get(tied.json()["id"])
    assert tied_record is not None and tied_record.pdq == record.pdq, "the hashes are recorded"

    # A deny entry two bits away is farther than the exact allow: the allow wins.
    near = f"{int(own_pdq, 16) ^ 0b101:064x}"
    before = gw.service.banks.matcher.state  # type: ignore[union-attr]
    banks.remove("bad", hashes=[own_pdq])
    banks.add("bad", [BankEntry("pdq", near)], "t", "t")
    wait_for_banks(gw, before)
    closer = gw.post(body)
    assert closer.status_code == 200 and closer.json()["labels"] == ["allowlisted"], closer.json()
    assert counter.count == 1


def test_a_hashlist_allow_file_still_meets_the_deny_banks(gateway_for: Start, tmp_path: Path) -> None:
    """The `hashlist` detector's SHA-256 allow file is as exact as a bank's SHA-256 allow: an exact
    PDQ deny entry ties it and wins, a farther one loses; no model runs either way."""
    body = encode(photo("astronaut"), "PNG")
    allow = tmp_path / "allow.txt"
    allow.write_text(hashlib.sha256(body).hexdigest() + "\n")
    counter = CallCounter()
    gw = gateway_for(lambda: counter.wrap(ScoreDetector("nudity", {"explicit": 0.0})), bank_refresh_s=0.1)
    first = gw.post(body)
    own_pdq = gw.store.get(first.json()["id"]).pdq[0]["hash"]  # type: ignore[union-attr,index]
    gw.stop()

    counter = CallCounter()
    gw = gateway_for(
        lambda: HashListDetector(allow_file=allow),
        lambda: counter.wrap(ScoreDetector("nudity", {"explicit": 0.0})),
        bank_refresh_s=0.1,
        hashlist_allow_file=allow,
    )
    allowed = gw.post(body)
    assert allowed.status_code == 200 and allowed.json()["labels"] == ["allowlisted"], allowed.json()
    banks = BankStore(gw.store.engine)
    before = gw.service.banks.matcher.state  # type: ignore[union-attr]
    banks.create("bad", "deny")
    banks.add("bad", [BankEntry("pdq", own_pdq, "its own PDQ")], "t", "t")
    wait_for_banks(gw, before)
    tied = gw.post(body)
    assert tied.status_code == 406 and tied.json()["labels"] == ["denylisted"], tied.json()
    assert counter.count == 0, "no model ran"


def _write(path: Path, text: str) -> None:
    path.write_text(text)
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 1_000_000_000))  # mtime moves, whatever the clock


@pytest.mark.parametrize(
    ("setting", "first", "then"),
    [
        ("nothing", {}, {}),
        ("pdq_max_distance", {"pdq_max_distance": 31}, {"pdq_max_distance": 20}),
        ("sample_frames", {"sample_frames": 16}, {"sample_frames": 4}),
        ("max_frame_side", {"max_frame_side": 1280}, {"max_frame_side": 640}),
        ("max_pixels", {"max_pixels": 50_000_000}, {"max_pixels": 40_000_000}),
        ("deny file", {}, {}),
        ("allow file", {}, {}),
    ],
)
def test_verdict_cache_is_keyed_on_every_setting_that_changes_verdicts(
    gateway_for: Start, tmp_path: Path, setting: str, first: dict[str, int], then: dict[str, int]
) -> None:
    """A cached pass is reused by a gateway restarted on the same settings, and by none whose match
    radius, hash-list contents or media limits differ."""
    counter = CallCounter()
    deny, allow = tmp_path / "deny.txt", tmp_path / "allow.txt"
    _write(deny, f"{'44' * 32}\n")
    _write(allow, f"{'55' * 32}\n")
    makers = (
        lambda: counter.wrap(ScoreDetector("nudity", {"explicit": 0.0})),
        lambda: HashListDetector(deny_file=deny, allow_file=allow),
    )
    body = encode(photo("camera"), "PNG")
    gw = gateway_for(*makers, **first)
    assert gw.post(body).status_code == 200
    assert gw.post(body).json()["reasons"][0].startswith("cached:") and counter.count == 1
    gw.stop()

    if setting == "deny file":
        _write(deny, f"# a comment\n{'44' * 32}\n{'66' * 32}\n")
    elif setting == "allow file":
        _write(allow, f"{'77' * 32}\n")
    gw = gateway_for(*makers, **then)
    again = gw.post(body)
    assert again.status_code == 200
    if setting == "nothing":
        assert again.json()["reasons"][0].startswith("cached:") and counter.count == 1
    else:
        assert counter.count == 2, f"a pass cached before {setting} changed was reused"


def test_a_hashlist_deny_records_the_frames_pdq_so_confirm_catches_copies(
    gateway_for: Start, tmp_path: Path
) -> None:
    """A `hashlist` deny decides with no model, but the record still has the frames' PDQ hashes:
    confirming it puts them in a deny bank, so a re-encoded copy is rejected too."""
    body = encode(photo("coffee"), "PNG")
    deny = tmp_path / "deny.txt"
    deny.write_text(hashlib.sha256(body).hexdigest() + "\n")
    counter = CallCounter()
    gw = gateway_for(
        lambda: HashListDetector(deny_file=deny),
        lambda: counter.wrap(ScoreDetector("nudity", {"explicit": 0.0})),
        bank_refresh_s=0.1,
        hashlist_deny_file=deny,
    )
    denied = gw.post(body)
    assert denied.status_code == 406 and denied.json()["labels"] == ["denylisted"]
    record = gw.store.get(denied.json()["id"])
    assert record is not None and record.pdq and record.pdq[0]["quality"] >= 50
    assert counter.count == 0
    before = gw.service.banks.matcher.state  # type: ignore[union-attr]
    confirmed = cli(gw, "confirm", str(record.id))
    assert confirmed.returncode == 0, confirmed.stderr
    wait_for_banks(gw, before)
    copy = gw.post(encode(photo("coffee"), "JPEG", quality=60), "image/jpeg")
    assert copy.status_code == 406 and "pdq, distance" in copy.json()["reasons"][0], copy.json()


def _metric(gw: RunningGateway, line_start: str) -> float:
    text = httpx.get(f"{gw.url}/metrics", timeout=10).text
    found = [line for line in text.splitlines() if line.startswith(line_start)]
    return float(found[0].rsplit(" ", 1)[1]) if found else 0.0


def _entry_of(gw: RunningGateway, bank: str) -> int:
    (entry,) = [e.id for e in BankStore(gw.store.engine).stored_entries(bank)]
    return entry


def test_a_flood_of_distinct_uploads_suspends_its_entry_at_the_limit(
    gateway_for: Start, caplog: pytest.LogCaptureFixture
) -> None:
    """Three distinct copies are rejected; the third suspends the entry: every later match, here and
    after a restart, passes to the models with the label `review`, until an admin enables it."""
    caplog.set_level(logging.WARNING, logger="fediguard.banks")
    counter = CallCounter()
    makers = (lambda: counter.wrap(ScoreDetector("nudity", {"explicit": 0.0})),)
    gw = gateway_for(*makers, bank_refresh_s=0.1)
    image = photo("astronaut")
    own = gw.store.get(gw.post(encode(image, "PNG")).json()["id"])
    assert own is not None and own.pdq and counter.count == 1
    before = gw.service.banks.matcher.state  # type: ignore[union-attr]
    assert cli(gw, "banks", "create", "flood", "--kind", "deny", "--flood-limit", "3").returncode == 0
    assert cli(gw, "banks", "add", "flood", "--hash", own.pdq[0]["hash"]).returncode == 0
    entry = _entry_of(gw, "flood")
    wait_for_banks(gw, before)
    copies = [encode(image, "JPEG", quality=q) for q in (95, 90, 85, 80, 75, 70)]
    assert len({hashlib.sha256(c).digest() for c in copies}) == len(copies), "distinct uploads"

    for body in (copies[0], copies[0], copies[1], copies[2]):  # the same bytes again: no new upload
        rejected = gw.post(body, "image/jpeg")
        assert rejected.status_code == 406 and f"bank 'flood' entry {entry}" in rejected.json()["reasons"][0]
    assert counter.count == 1, "no model ran for a match in force"
    held = gw.post(copies[3], "image/jpeg")
    assert held.status_code == 200 and held.json()["labels"] == ["review"], held.json()
    assert held.json()["reasons"][0].startswith(
        f"held for review: matches suspended deny entry of bank 'flood' entry {entry}"
    )
    assert counter.count == 2, "the models judged it"
    assert [r.message for r in caplog.records if "bank alert" in r.message and f"entry {entry} " in r.message]
    alerts = cli(gw, "banks", "alerts")
    assert f"entry {entry} of bank 'flood' matched 3 distinct uploads within 1 h" in alerts.stdout, (
        alerts.stdout
    )
    assert _metric(gw, 'fediguard_bank_entries_suspended_total{bank="flood"}') == 1.0
    assert _metric(gw, 'fediguard_bank_matches_total{entry="suspended",kind="deny"}') == 1.0

    gw.stop()  # the suspension is in the database: a restarted gateway keeps it
    gw = gateway_for(*makers, bank_refresh_s=0.1)
    again = gw.post(copies[4], "image/jpeg")
    assert again.status_code == 200 and again.json()["labels"] == ["review"], again.json()
    stored = BankStore(gw.store.engine).describe([entry])[entry]
    assert stored.status == "suspended" and stored.match_count >= 5, "match counts written at stop"

    before = gw.service.banks.matcher.state  # type: ignore[union-attr]
    enabled = cli(gw, "banks", "enable", "flood", "--entry", str(entry))
    assert enabled.returncode == 0 and f"entry {entry} of bank 'flood' enabled" in enabled.stdout
    wait_for_banks(gw, before)
    assert gw.post(copies[5], "image/jpeg").status_code == 406
    assert "no open bank alerts" in cli(gw, "banks", "alerts").stdout


def test_a_disabled_bank_or_entry_does_not_match_and_enabling_restores_it(gateway_for: Start) -> None:
    gw = gateway_for(lambda: ScoreDetector("nudity", {"explicit": 0.0}), bank_refresh_s=0.1)
    body = encode(photo("chelsea"), "PNG")
    before = gw.service.banks.matcher.state  # type: ignore[union-attr]
    assert cli(gw, "banks", "create", "bad", "--kind", "deny").returncode == 0
    assert (
        cli(
            gw, "banks", "add", "bad", "--hash", hashlib.sha256(body).hexdigest(), "--kind", "sha256"
        ).returncode
        == 0
    )
    entry = _entry_of(gw, "bad")
    wait_for_banks(gw, before)
    assert gw.post(body).status_code == 406
    for command, expected in (
        (("disable", "bad", "--entry", str(entry)), 200),
        (("enable", "bad", "--entry", str(entry)), 406),
        (("disable", "bad"), 200),
        (("enable", "bad"), 406),
    ):
        before = gw.service.banks.matcher.state  # type: ignore[union-attr]
        done = cli(gw, "banks", *command)
        assert done.returncode == 0, done.stderr
        wait_for_banks(gw, before)
        answer = gw.post(body)
        assert answer.status_code == expected, (command, answer.json())
        if expected == 200:
            assert answer.json()["labels"] == []
    listed = cli(gw, "banks", "list").stdout.splitlines()[1].split()
    assert listed[:5] == ["bad", "deny", "1", "0", "enabled"], listed
    missing = cli(gw, "banks", "disable", "bad", "--entry", "999999")
    assert missing.returncode == 1 and "not in bank 'bad': entry 999999" in missing.stderr


def test_each_bank_matches_within_its_own_distance(gateway_for: Start) -> None:
    gw = gateway_for(lambda: ScoreDetector("nudity", {"explicit": 0.0}), bank_refresh_s=0.1)
    image = photo("rocket")
    own = gw.store.get(gw.post(encode(image, "PNG")).json()["id"])
    assert own is not None and own.pdq
    copy = encode(image, "JPEG", quality=40)
    copy_pdq = gw.store.get(gw.post(copy, "image/jpeg").json()["id"]).pdq[0]["hash"]  # type: ignore[union-attr,index]
    apart = bin(int(own.pdq[0]["hash"], 16) ^ int(copy_pdq, 16)).count("1")
    assert 0 < apart <= 31, apart
    before = gw.service.banks.matcher.state  # type: ignore[union-attr]
    created = cli(gw, "banks", "create", "exact", "--kind", "deny", "--distance", "0")
    assert created.returncode == 0, created.stderr
    assert cli(gw, "banks", "add", "exact", "--hash", own.pdq[0]["hash"]).returncode == 0
    wait_for_banks(gw, before)
    assert gw.post(encode(image, "PNG")).status_code == 406, "distance 0 still matches itself"
    assert gw.post(copy, "image/jpeg").status_code == 200, f"{apart} bits is beyond this bank's 0"
    before = gw.service.banks.matcher.state  # type: ignore[union-attr]
    widened = cli(gw, "banks", "set", "exact", "--distance", "default")
    assert widened.returncode == 0 and "radius default" in widened.stdout, widened.stdout + widened.stderr
    wait_for_banks(gw, before)
    assert gw.post(copy, "image/jpeg").status_code == 406


def test_the_gateway_flags_recorded_uploads_a_new_deny_entry_matches(gateway_for: Start) -> None:
    gw = gateway_for(lambda: ScoreDetector("nudity", {"explicit": 0.0}), bank_refresh_s=0.1)
    body = encode(photo("coffee"), "PNG")
    passed = gw.post(body)
    assert passed.status_code == 200
    record = gw.store.get(passed.json()["id"])
    assert record is not None and record.pdq
    before = gw.service.banks.matcher.state  # type: ignore[union-attr]
    assert cli(gw, "banks", "create", "late", "--kind", "deny").returncode == 0
    assert cli(gw, "banks", "add", "late", "--hash", record.pdq[0]["hash"]).returncode == 0
    wait_for_banks(gw, before)
    deadline = time.monotonic() + 20
    while _metric(gw, 'fediguard_rematches_total{source="gateway"}') < 1:
        assert time.monotonic() < deadline, "the gateway did not match its records against the new entry"
        time.sleep(0.05)
    with gw.store.engine.connect() as conn:
        found = conn.execute(select(rematches.c.decision_id, rematches.c.bank, rematches.c.distance)).all()
    assert [tuple(r) for r in found] == [(record.id, "late", 0)]
    again = cli(gw, "rematch")
    assert again.returncode == 0 and "no recorded decision matches" in again.stdout, again.stdout
