"""Banks end to end: the CLI fills them, a running gateway picks them up and applies them."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from fediguard.banks.formats import BankEntry
from fediguard.banks.store import BankStore
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


def wait_for_banks(gw: RunningGateway, state_before: tuple[int, int]) -> None:
    assert gw.service.matcher is not None
    deadline = time.monotonic() + 10
    while gw.service.matcher.state == state_before:
        assert time.monotonic() < deadline, "the gateway did not pick up the bank change"
        time.sleep(0.05)


def test_denied_image_and_its_reencoding_are_rejected(gateway_for: Start, tmp_path: Path) -> None:
    counter = CallCounter()
    gw = gateway_for(lambda: counter.wrap(ScoreDetector("nudity", {"explicit": 0.0})), bank_refresh_s=0.1)
    original = encode(photo("astronaut"), "PNG")
    (tmp_path / "bad.png").write_bytes(original)
    before = gw.service.matcher.state  # type: ignore[union-attr]
    assert cli(gw, "banks", "create", "known-bad", "--kind", "deny").returncode == 0
    added = cli(gw, "banks", "add", "known-bad", str(tmp_path / "bad.png"), "--note", "test list")
    assert added.returncode == 0 and "added 2 new entries" in added.stdout, added.stderr
    wait_for_banks(gw, before)

    exact = gw.post(original)
    assert exact.status_code == 406
    assert exact.json()["labels"] == ["denylisted"]
    assert (
        "bank 'known-bad'" in exact.json()["reasons"][0]
        and "sha256, distance 0" in exact.json()["reasons"][0]
    )
    near = gw.post(encode(photo("astronaut"), "JPEG", quality=50), "image/jpeg")
    assert near.status_code == 406 and "pdq, distance" in near.json()["reasons"][0]
    assert counter.count == 0, "a bank hit runs no model"
    unrelated = gw.post(encode(photo("coffee"), "JPEG"), "image/jpeg")
    assert unrelated.status_code == 200 and counter.count == 1
    record = gw.store.get(unrelated.json()["id"])
    assert record is not None and record.pdq and record.pdq[0]["quality"] >= 50


def test_allow_overturns_a_decision_and_skips_the_models(gateway_for: Start) -> None:
    counter = CallCounter()
    gw = gateway_for(
        lambda: counter.wrap(ScoreDetector("nudity", {"explicit": 0.9})), reject_labels="csam_suspect,nsfw",
        bank_refresh_s=0.1,
    )  # fmt: skip
    first = gw.post(encode(photo("chelsea"), "PNG"))
    assert first.status_code == 406 and counter.count == 1
    before = gw.service.matcher.state  # type: ignore[union-attr]
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
    before = gw.service.matcher.state  # type: ignore[union-attr]
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
    # A bank change invalidates every cached pass: the same bytes are scanned again.
    before = gw.service.matcher.state  # type: ignore[union-attr]
    BankStore(gw.store.engine).create("other", "deny")
    BankStore(gw.store.engine).add("other", [BankEntry("sha256", "33" * 32)], "t", "t")
    wait_for_banks(gw, before)
    gw.post(body)
    assert counter.count == 2


def test_bank_import_export_via_cli(gateway_for: Start, tmp_path: Path) -> None:
    gw = gateway_for(lambda: ScoreDetector("nudity", {}))
    good = tmp_path / "good.csv"
    good.write_text(f'hash,kind,note\n{"ab" * 32},sha256,"a, quoted note"\n{"cd" * 32},pdq,\n')
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
    listing = cli(gw, "banks", "list")
    assert "imp" in listing.stdout and "deny" in listing.stdout
    refused = cli(gw, "banks", "delete", "imp")
    assert refused.returncode == 2 and "--yes" in refused.stderr
    assert cli(gw, "banks", "delete", "imp", "--yes").returncode == 0
    missing = cli(gw, "allow", "999999")
    assert missing.returncode == 2 and "no decision record 999999" in missing.stderr
