"""The bank gate: every bank check of a scan in one place (real SQLite banks, benign photos)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from fediguard.banks.formats import BankEntry
from fediguard.banks.matcher import DETECTOR as BANKS
from fediguard.banks.pdq import FrameHash, PdqHash, pdq_hash
from fediguard.banks.store import BankStore
from fediguard.detectors.base import DetectorResult, ListMatch
from fediguard.media.limits import DEFAULT_LIMITS
from fediguard.records import RecordStore
from fediguard.scanning.bankgate import BankGate, ended_on_a_list
from fediguard.scanning.job import ScanOutcome
from fediguard.verdicts import FailReason
from support.images import encode


def photo(name: str) -> np.ndarray:
    from skimage import data

    image = getattr(data, name)()
    return np.ascontiguousarray(image if image.ndim == 3 else np.stack([image] * 3, axis=-1))


@pytest.fixture
def gate(tmp_path: Path) -> BankGate:
    records = RecordStore(f"sqlite:///{tmp_path / 'r.sqlite3'}")
    return BankGate(records, DEFAULT_LIMITS, max_distance=31, refresh_s=60)


def load(gate: BankGate) -> BankStore:
    return BankStore(gate.records.engine)


async def test_an_exact_sha256_match_needs_no_scanner_and_records_the_frames_hashes(gate: BankGate) -> None:
    body = encode(photo("astronaut"), "PNG")
    banks = load(gate)
    banks.create("bad", "deny")
    banks.add("bad", [BankEntry("sha256", hashlib.sha256(body).hexdigest())], "t", "t")
    state = gate.state
    gate.matcher.reload_if_changed()
    assert gate.state != state, "the cache key follows the banks"
    outcome = await gate.triage(body, "image/png", hashlib.sha256(body).hexdigest())
    assert outcome is not None and outcome.scanner == "gateway"
    (result,) = outcome.results
    assert result.detector == BANKS and ended_on_a_list(outcome.results)
    assert [f.list_kind for f in result.findings if isinstance(f, ListMatch)] == ["deny"]
    assert outcome.pdq and outcome.pdq[0].hash == pdq_hash(photo("astronaut"))
    assert await gate.triage(b"other", "image/png", hashlib.sha256(b"other").hexdigest()) is None


async def test_an_exact_allow_still_meets_an_exact_pdq_deny(gate: BankGate) -> None:
    image = photo("astronaut")
    body = encode(image, "PNG")
    banks = load(gate)
    banks.create("ok", "allow")
    banks.add("ok", [BankEntry("sha256", hashlib.sha256(body).hexdigest())], "t", "t")
    banks.create("bad", "deny")
    banks.add("bad", [BankEntry("pdq", pdq_hash(image).hex)], "t", "t")
    gate.matcher.reload_if_changed()
    outcome = await gate.triage(body, "image/png", hashlib.sha256(body).hexdigest())
    assert outcome is not None
    kinds = {f.list_kind for f in outcome.results[0].findings if isinstance(f, ListMatch)}
    assert kinds == {"allow", "deny"}, "the policy sees both, and a tie goes to deny"


def test_a_workers_hashes_are_matched_again_and_a_stale_bank_stop_is_refused(gate: BankGate) -> None:
    image = photo("camera")
    hashes = [FrameHash(0, pdq_hash(image))]
    banks = load(gate)
    banks.create("bad", "deny")
    banks.add("bad", [BankEntry("pdq", hashes[0].hash.hex)], "t", "t")
    gate.matcher.reload_if_changed()
    assert gate.has_pdq() and gate.check(hashes) is not None

    forged_pass = ScanOutcome(results=[DetectorResult("nudity", "1")], pdq=hashes, scanner="w")
    assert gate.needs_recheck(forged_pass)
    rechecked = gate.recheck(forged_pass)
    assert [r.detector for r in rechecked.results] == [BANKS, "nudity"], "the gateway's own match"

    claimed = DetectorResult(BANKS, "1", decisive=True, findings=[ListMatch("allow", 0, "allowed: made up")])
    unrelated = [FrameHash(0, PdqHash("0f" * 32, 90))]
    stale = gate.recheck(ScanOutcome(results=[claimed], pdq=unrelated, scanner="w"))
    assert stale.error is FailReason.SCANNER_ERROR and "no longer hold" in stale.error_detail
    assert not gate.needs_recheck(ScanOutcome(error=FailReason.UNDECODABLE))
