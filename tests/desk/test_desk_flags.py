"""Over real HTTP: the flood guard's alerts in the desk with an admin's answers (re-enable, remove),
retroactive matches and flagged swept objects, each reachable from the queue."""

from __future__ import annotations

import html
from datetime import UTC, datetime
from pathlib import Path

import httpx

from conftest import Stack, open_stack
from fediguard.banks.formats import BankEntry
from fediguard.banks.governance import BankGovernance
from fediguard.banks.rematch import Rematcher
from fediguard.banks.store import BankStore
from fediguard.desk.audit import AuditLog
from fediguard.storage.base import StoredObject
from fediguard.sweeper.state import SweepState
from support.desk import csrf_of
from support.images import encode, photo
from support.workers import wait_for


def _wait_for_banks(stack: Stack, state_before: int) -> None:
    """Until the gateway has loaded the banks as they are now."""
    banks = stack.gateway.service.banks
    assert banks is not None
    now = BankStore(stack.gateway.store.engine).state()
    assert now != state_before, "the test changed no bank"
    wait_for(lambda: banks.matcher.state == now, what="the gateway's bank reload")


def _flood(stack: Stack, qualities: tuple[int, ...]) -> None:
    image = photo("astronaut")
    for q in qualities:
        answer = stack.gateway.post(encode(image, "JPEG", quality=q), "image/jpeg")
        assert answer.status_code == 406 and "bank 'flood'" in answer.json()["reasons"][0], answer.json()


def _answer(http: httpx.Client, alert_id: int, answer: str, reason: str) -> httpx.Response:
    csrf = csrf_of(http.get("/flags").text)
    return http.post(f"/alerts/{alert_id}", data={"answer": answer, "reason": reason, "csrf": csrf})


def _audit(stack: Stack) -> list[tuple[str, str, str]]:
    return [(e.actor, e.action, e.detail) for e in AuditLog(stack.gateway.store.engine).recent()]


def test_a_suspended_entry_is_in_the_desk_until_an_admin_re_enables_or_removes_it(stack: Stack) -> None:
    engine = stack.gateway.store.engine
    stack.scores.clear()  # uploads pass unless a bank rejects them
    own = stack.gateway.store.get(int(stack.gateway.post(encode(photo("astronaut"), "PNG")).json()["id"]))
    assert own is not None and own.pdq
    banks, governance = BankStore(engine), BankGovernance(engine)
    before = banks.state()
    banks.create("flood", "deny")
    governance.configure("flood", flood_limit=2)
    banks.add("flood", [BankEntry("pdq", own.pdq[0]["hash"], "a shared list")], "import list.csv", "carol")
    (entry,) = [e.id for e in banks.stored_entries("flood")]
    _wait_for_banks(stack, before)
    _flood(stack, (95, 90))  # two distinct uploads: the limit, the entry is suspended
    wait_for(lambda: bool(governance.alerts()), what="the flood guard's alert")
    (alert,) = governance.alerts()
    assert alert.entry_id == entry

    bob = stack.desk.sign_in("bob")
    queue = bob.get("/").text
    assert "1 open bank alert(s)" in queue and 'href="/flags#alerts"' in queue
    page = html.unescape(bob.get("/flags").text)
    assert f"flood · {entry}" in page and own.pdq[0]["hash"] in page and "(suspended)" in page
    assert "import: import list.csv · added by carol" in page and "a shared list" in page
    assert "matched 2 distinct uploads within 1 h" in page
    assert 'value="enable"' not in page, "a reviewer sees the alert, not an admin's answers"
    assert _answer(bob, alert.id, "enable", "looks fine").status_code == 403
    assert governance.alerts() == [alert]

    alice = stack.desk.sign_in("alice")
    assert 'value="enable">re-enable' in alice.get("/flags").text
    refused = _answer(alice, alert.id, "enable", "  ")
    assert refused.status_code == 303 and "needs%20a%20reason" in refused.headers["location"]
    assert governance.alerts() == [alert] and banks.describe([entry])[entry].status == "suspended"
    suspended_state = banks.state()
    done = _answer(alice, alert.id, "enable", "a real image, the flood was a raid")
    assert done.status_code == 303 and "re-enabled" in done.headers["location"]
    assert governance.alerts() == [] and banks.describe([entry])[entry].status == "active"
    assert "No open bank alerts." in alice.get(done.headers["location"]).text
    assert (
        "alice", "alert_enable",
        f"a real image, the flood was a raid; alert {alert.id}: entry {entry} of bank 'flood' re-enabled",
    ) in _audit(stack)  # fmt: skip
    again = _answer(alice, alert.id, "remove", "twice")
    assert "resolved%20already" in again.headers["location"] and banks.describe([entry])

    _wait_for_banks(stack, suspended_state)
    _flood(stack, (85, 80))  # its window began afresh: two more distinct uploads suspend it again
    wait_for(lambda: bool(governance.alerts()), what="the second alert")
    (second,) = governance.alerts()
    done = _answer(alice, second.id, "remove", "a logo, not abuse")
    assert done.status_code == 303 and "removed" in done.headers["location"]
    assert banks.describe([entry]) == {} and governance.alerts() == []
    assert any(a == "alert_remove" and d.startswith("a logo, not abuse; ") for _, a, d in _audit(stack))


def test_retroactive_matches_and_flagged_swept_objects_are_listed_with_their_decisions(stack: Stack) -> None:
    _rematches_and_swept_objects(stack)


def test_the_flags_page_on_postgresql(postgres_url: str, tmp_path: Path) -> None:
    with open_stack(tmp_path, database_url=postgres_url) as stack:
        assert stack.gateway.store.engine.dialect.name == "postgresql"
        _rematches_and_swept_objects(stack)


def _rematches_and_swept_objects(stack: Stack) -> None:
    engine = stack.gateway.store.engine
    stack.scores.clear()
    passed = stack.gateway.post(encode(photo("chelsea"), "PNG"), "image/png").json()
    record = stack.gateway.store.get(int(passed["id"]))
    assert record is not None and record.verdict == "pass"
    state = SweepState(engine)
    source = state.source_id("file:///srv/media", {})
    obj = StoredObject("files/cat.png", record.size, datetime.now(UTC), None)
    state.save(source, obj, status="scanned", sha256=record.sha256, verdict="pass", decision_id=record.id)
    other = StoredObject("files/other.png", 10, datetime.now(UTC), None)
    state.save(source, other, status="scanned", sha256="0" * 64, verdict="pass", decision_id=None)

    alice = stack.desk.sign_in("alice")
    assert "0 open decision(s) with retroactive matches" in alice.get("/").text
    assert "No retroactive matches." in alice.get("/flags").text

    banks = BankStore(engine)
    banks.create("late", "deny")
    banks.add("late", [BankEntry("sha256", record.sha256)], "cli add --hash", "t")
    Rematcher(engine).run()  # the gateway's own rematcher may have found it first: recorded once
    wait_for(lambda: bool(state.rematched(source)), what="the swept object marked")

    queue = alice.get("/").text
    assert "1 open decision(s) with retroactive matches" in queue and 'href="/flags#rematches"' in queue
    page = alice.get("/flags").text
    rematch_rows = [row for row in page.split("<tr") if 'class="rematch"' in row]
    assert len(rematch_rows) == 1 and f'href="/item/{record.id}"' in rematch_rows[0]
    row = rematch_rows[0]
    assert "late · " in row and "sha256, distance 0" in row and "<td>open</td>" in row
    swept = [row for row in page.split("<tr") if 'class="swept-object"' in row]
    assert len(swept) == 1, "only the flagged object"
    assert "files/cat.png" in swept[0] and "(retroactive match)" in swept[0]
    assert f'href="/item/{record.id}"' in swept[0]
