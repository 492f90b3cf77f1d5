"""Over real HTTP: a confirmation ticked "publish" goes into a deny bank a feed publishes, and the
gateway's feed then carries its hashes; a bank no feed publishes is refused, changing nothing."""

from __future__ import annotations

import html

import httpx

from conftest import Stack
from fediguard.banks.feeds.publisher import Publisher
from fediguard.banks.feeds.signing import generate_key
from fediguard.banks.store import BankStore
from fediguard.desk.audit import AuditLog
from support.desk import csrf_of
from support.images import astronaut_jpeg


def test_a_confirmation_is_published_into_a_feeds_bank_when_ticked(stack: Stack) -> None:
    engine = stack.gateway.store.engine
    record_id = stack.flag(astronaut_jpeg())
    alice = stack.desk.sign_in("alice")
    assert 'id="publish"' not in alice.get(f"/item/{record_id}").text, "no feed is published"

    banks = BankStore(engine)
    banks.create("shared-bank", "deny")
    banks.create("private", "deny")
    Publisher(engine).create("shared", ["shared-bank"], notes=False, public=True)
    page = alice.get(f"/item/{record_id}").text
    assert 'id="publish"' in page and '<option value="shared-bank">shared-bank (feed shared)</option>' in page
    assert 'value="private"' not in page
    csrf = csrf_of(page)

    def confirm(**extra: str) -> str:
        data = {"action": "confirm", "reason": "known image", "csrf": csrf, **extra}
        answer = alice.post(f"/item/{record_id}/act", data=data)
        assert answer.status_code == 303
        return html.unescape(alice.get(answer.headers["location"]).text)

    refused = confirm(publish="1", publish_into="private")
    assert "bank 'private' is in no published feed (published banks: shared-bank)" in refused
    assert stack.gateway.store.get(record_id).review is None  # type: ignore[union-attr]
    assert list(banks.stored_entries("private")) == []
    assert "choose the published bank" in confirm(publish="1")

    done = confirm(publish="1", publish_into="shared-bank")
    assert "in bank 'shared-bank', published in feed(s) shared" in done
    record = stack.gateway.store.get(record_id)
    assert record is not None and record.review == "confirmed"
    entries = list(banks.stored_entries("shared-bank"))
    assert record.sha256 in {e.value for e in entries}
    assert {e.source for e in entries} == {f"record {record_id}"}
    assert {e.bank for e in banks.find("deny", [("sha256", record.sha256)])} == {"shared-bank"}
    (entry,) = [e for e in AuditLog(engine).recent() if e.action == "confirm"]
    assert entry.actor == "alice"
    assert entry.detail.endswith("into bank shared-bank, published in feed(s) shared)")

    generate_key(stack.gateway.settings.effective_feed_key_file)
    feed = httpx.get(f"{stack.gateway.url}/api/v1/feeds/shared", timeout=60).json()
    assert feed["head"] >= 1 and any(record.sha256 in b["body"] for b in feed["batches"])


def test_without_publish_a_confirmation_goes_into_confirmed_and_names_a_feed_only_if_one_carries_it(
    stack: Stack,
) -> None:
    engine = stack.gateway.store.engine
    BankStore(engine).create("confirmed", "deny")
    Publisher(engine).create("ours", ["confirmed"], notes=False, public=False)
    record_id = stack.flag(astronaut_jpeg())
    alice = stack.desk.sign_in("alice")
    csrf = csrf_of(alice.get(f"/item/{record_id}").text)
    answer = alice.post(f"/item/{record_id}/act", data={"action": "confirm", "reason": "seen", "csrf": csrf})
    page = html.unescape(alice.get(answer.headers["location"]).text)
    assert "in bank 'confirmed', published in feed(s) ours" in page
