"""A subscriber refuses what a feed must not do, over real HTTP from a publisher that misbehaves on
purpose, and keeps its last good state: bad signatures, altered batches, reordering, replays,
rollbacks, rewritten history, another feed's batches."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fediguard.banks.feeds.signing import canonical, digest, public_text, sign
from fediguard.banks.feeds.subscriber import Subscriptions
from fediguard.banks.store import BankStore
from fediguard.records import RecordStore

KEY = Ed25519PrivateKey.generate()
H1, H2, H3 = ("1" * 64, "2" * 64, "3" * 64)


def batch(
    seq: int, prev: str, ops: list[list[str]], *, key: Ed25519PrivateKey = KEY, feed: str = "list"
) -> dict[str, Any]:
    body = canonical(
        {"v": 1, "feed": feed, "seq": seq, "prev": prev, "created": "2026-12-03T00:00:00+00:00", "ops": ops}
    )
    return {"seq": seq, "body": body.decode(), "sig": sign(key, body)}


def digest_of(raw: dict[str, Any]) -> str:
    return digest(raw["body"].encode())


@dataclass
class Publisher:
    """Serves whatever page the test sets, to every request (real HTTP on 127.0.0.1)."""

    head: int = 0
    batches: list[dict[str, Any]] = field(default_factory=list)
    asked_after: list[int] = field(default_factory=list)


@pytest.fixture
def publisher() -> Iterator[tuple[Publisher, str]]:
    state = Publisher()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.asked_after.append(int(self.path.split("after=")[1].split("&")[0]))
            body = json.dumps({"feed": "list", "head": state.head, "batches": state.batches}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state, f"http://127.0.0.1:{server.server_address[1]}/api/v1/feeds/list"
    server.shutdown()
    server.server_close()
    thread.join(10)


@pytest.fixture
def subscriptions(tmp_path: Path) -> Iterator[Subscriptions]:
    records = RecordStore(f"sqlite:///{tmp_path / 'b.sqlite3'}")
    yield Subscriptions(records.engine)
    records.close()


def poll(subs: Subscriptions) -> str | None:
    subscription = subs.get("list")
    assert subscription is not None
    with httpx.Client(timeout=10) as client:
        return subs.poll(subscription, client).error


def bank(subs: Subscriptions) -> set[str]:
    return {e.value for e in BankStore(subs.engine).entries("feed.list")}


GOOD_1 = batch(1, "", [["add", "pdq", H1], ["add", "sha256", H3]])
GOOD_2 = batch(2, digest_of(GOOD_1), [["retract", "sha256", H3], ["add", "pdq", H2]])
GOOD_3 = batch(3, digest_of(GOOD_2), [["retract", "pdq", H2]])

ATTACKS = {
    "a batch signed by another key": (
        2,
        [batch(2, digest_of(GOOD_1), [["add", "pdq", H2]], key=Ed25519PrivateKey.generate())],
        "bad signature on batch 2",
    ),
    "a batch altered after signing": (
        2,
        [{**GOOD_2, "body": GOOD_2["body"].replace(H2, "f" * 64)}],
        "bad signature on batch 2",
    ),
    "batches out of order": (3, [GOOD_3, GOOD_2], "batch 3 out of order: batch 2 comes next"),
    "a replayed batch": (2, [GOOD_1], "replayed batch 1"),
    "a rollback": (0, [], "rollback: the publisher's head is batch 0, batch 1 was applied"),
    "a rewritten history": (
        2,
        [batch(2, "0" * 64, [["add", "pdq", H2]])],
        "does not follow the last applied batch 1",
    ),
    "another feed's batch": (
        2,
        [batch(2, digest_of(GOOD_1), [["add", "pdq", H2]], feed="other")],
        "belongs to feed 'other'",
    ),
    "a signed sequence number that differs": (
        2,
        [{**batch(3, digest_of(GOOD_1), []), "seq": 2}],
        "carries the signed sequence number 3",
    ),
}


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_a_misbehaving_feed_is_refused_and_the_last_good_state_kept(
    attack: str,
    publisher: tuple[Publisher, str],
    subscriptions: Subscriptions,
    caplog: pytest.LogCaptureFixture,
) -> None:
    served, url = publisher
    subscriptions.create("list", url, public_text(KEY.public_key()), None, "deny")
    served.head, served.batches = 1, [GOOD_1]
    assert poll(subscriptions) is None
    assert bank(subscriptions) == {H1, H3}

    served.head, served.batches, expected = ATTACKS[attack]
    with caplog.at_level(logging.WARNING, logger="fediguard.feeds"):
        error = poll(subscriptions)
    assert error is not None and expected in error, error
    assert any(expected in r.getMessage() for r in caplog.records), "a refusal is logged"
    state = subscriptions.get("list")
    assert state is not None and (state.last_seq, state.last_digest) == (1, digest_of(GOOD_1))
    assert state.error == error
    assert bank(subscriptions) == {H1, H3}, "the last good state is kept"
    assert served.asked_after[-1] == 1

    # The publisher mends its ways: the feed goes on from where it was.
    served.head, served.batches = 3, [GOOD_2, GOOD_3]
    assert poll(subscriptions) is None
    assert bank(subscriptions) == {H1}
    state = subscriptions.get("list")
    assert state is not None and state.last_seq == 3 and state.error is None


def test_batches_before_a_refused_one_are_applied(
    publisher: tuple[Publisher, str], subscriptions: Subscriptions
) -> None:
    served, url = publisher
    subscriptions.create("list", url, public_text(KEY.public_key()), None, "deny")
    forged = batch(2, digest_of(GOOD_1), [["add", "pdq", H2]], key=Ed25519PrivateKey.generate())
    served.head, served.batches = 2, [GOOD_1, forged]
    error = poll(subscriptions)
    assert error is not None and "bad signature on batch 2" in error
    state = subscriptions.get("list")
    assert state is not None and state.last_seq == 1 and bank(subscriptions) == {H1, H3}
    entries = list(BankStore(subscriptions.engine).stored_entries("feed.list"))
    assert {e.source for e in entries} == {"feed:list#1"}


def test_a_subscription_is_checked_before_it_is_kept(subscriptions: Subscriptions) -> None:
    from fediguard.banks.feeds.signing import FeedKeyError
    from fediguard.banks.store import BankError

    key = public_text(KEY.public_key())
    with pytest.raises(FeedKeyError, match="starts with 'ed25519:'"):
        subscriptions.create("x", "http://h/api/v1/feeds/x", "rsa:abc", None, "deny")
    with pytest.raises(BankError, match="deny or review"):
        subscriptions.create("x", "http://h/api/v1/feeds/x", key, None, "reject")
    with pytest.raises(BankError, match="feed URL"):
        subscriptions.create("x", "ftp://h/x", key, None, "deny")
    assert subscriptions.all() == [] and BankStore(subscriptions.engine).list() == [], "nothing left behind"
