"""Subscribing to another instance's feed: fetch its batches, verify each against the publisher's
key and the chain, apply them to a local bank (docs/feeds.md, "Subscribing").

A batch is applied only when it is the next one: its sequence number is the last applied + 1, its
``prev`` is the digest of the last applied batch, its signature verifies against the key the admin
gave, and its body names this feed. Anything else is refused and logged, and the subscription keeps
its last good state: a rollback (the publisher's head is behind what was applied), a replayed or
reordered batch, a gap, a rewritten history, a bad signature, a malformed body. Batches before the
refused one on the same page are applied (each was verified on its own merits).

Applying is idempotent (additions skip hashes the bank holds, retractions ignore hashes it lacks),
and the subscription's position moves only after the batch is in the bank, so a crash in between
applies the batch again, harmlessly.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import Engine, delete, insert, select, update

from fediguard.banks._hex import parse_hex256
from fediguard.banks.feeds.signing import digest, parse_public, verify
from fediguard.banks.formats import BankEntry
from fediguard.banks.store import BankError, BankStore
from fediguard.records.schema import feed_subscriptions

log = logging.getLogger("fediguard.feeds")

ACTIONS = ("deny", "review")
"""What a subscription's matches do: reject the upload, or pass it labelled ``review``."""
MAX_PAGE_BYTES = 256 * 2**20
"""The largest page a subscriber reads (decompressed): a default page (20 batches of 5000
operations) is ~8 MB, ~210 MB if every entry has a 2000-character note; a hostile or broken
publisher cannot exhaust memory beyond it."""
MAX_PAGES_PER_POLL = 1000
"""Pages one poll follows before it stops until the next (a feed of 100 000 entries is 1 page)."""


class FeedRefused(Exception):
    """A batch that must not be applied; the message says why (it goes to the log and the
    subscription's ``error``)."""


@dataclass(frozen=True)
class Subscription:
    id: int
    name: str
    url: str
    public_key: str
    token: str | None
    action: str
    bank: str
    last_seq: int
    last_digest: str
    polled_at: datetime | None
    synced_at: datetime | None
    error: str | None

    @property
    def feed(self) -> str:
        """The publisher's name of the feed: the last segment of its URL."""
        return unquote(urlsplit(self.url).path.rstrip("/").rsplit("/", 1)[-1])


@dataclass(frozen=True)
class Op:
    op: str  # add | retract
    kind: str  # pdq | sha256
    value: str
    note: str = ""


@dataclass(frozen=True)
class VerifiedBatch:
    seq: int
    digest: str
    ops: tuple[Op, ...]


@dataclass(frozen=True)
class PollResult:
    applied: int
    """Batches applied by this poll."""
    added: int
    retracted: int
    error: str | None = None


def bank_name(feed_name: str) -> str:
    """The local bank a subscription's entries go to."""
    return f"feed.{feed_name}"


class Subscriptions:
    """Feed subscriptions in the records database, and applying verified batches to their banks."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.banks = BankStore(engine)

    def create(self, name: str, url: str, public_key: str, token: str | None, action: str) -> Subscription:
        """Subscribe; FeedKeyError for a bad key, BankError for a bad name, URL or action."""
        parse_public(public_key)
        if (
            not name
            or len(name) > 90
            or not name.replace("-", "").replace("_", "").replace(".", "").isalnum()
        ):
            raise BankError(f"feed name {name!r}: use 1-90 letters, digits, '-', '_' or '.'")
        if action not in ACTIONS:
            raise BankError(f"a feed's action is deny or review, not {action!r}")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc or not parts.path.strip("/"):
            raise BankError(
                f"feed URL {url!r}: give the feed's http(s) URL, e.g. https://host/api/v1/feeds/NAME"
            )
        if self.get(name) is not None:
            raise BankError(f"already subscribed to a feed named {name!r}")
        bank = bank_name(name)
        self.banks.ensure(bank, "deny")
        row = {
            "name": name, "url": url, "public_key": public_key.strip(), "token": token, "action": action,
            "bank": bank, "last_seq": 0, "last_digest": "", "created_at": datetime.now(UTC),
        }  # fmt: skip
        with self.engine.begin() as conn:
            conn.execute(insert(feed_subscriptions).values(**row))
        subscription = self.get(name)
        assert subscription is not None
        return subscription

    def get(self, name: str) -> Subscription | None:
        with self.engine.connect() as conn:
            row = (
                conn.execute(select(feed_subscriptions).where(feed_subscriptions.c.name == name))
                .mappings()
                .first()
            )
        return _subscription(row) if row is not None else None

    def all(self) -> list[Subscription]:
        with self.engine.connect() as conn:
            rows = (
                conn.execute(select(feed_subscriptions).order_by(feed_subscriptions.c.name)).mappings().all()
            )
        return [_subscription(r) for r in rows]

    def review_banks(self) -> frozenset[str]:
        """Banks whose matches only flag for review (subscriptions with action ``review``)."""
        query = select(feed_subscriptions.c.bank).where(feed_subscriptions.c.action == "review")
        with self.engine.connect() as conn:
            return frozenset(r.bank for r in conn.execute(query))

    def delete(self, name: str, keep_entries: bool = False) -> int:
        """Unsubscribe; the feed's bank and its entries go too unless ``keep_entries``. Returns how
        many entries went."""
        subscription = self.get(name)
        if subscription is None:
            raise BankError(f"not subscribed to a feed named {name!r}")
        with self.engine.begin() as conn:
            conn.execute(delete(feed_subscriptions).where(feed_subscriptions.c.id == subscription.id))
        if keep_entries:
            return 0
        try:
            return self.banks.delete(subscription.bank)
        except BankError:
            return 0  # the admin deleted the bank already

    def poll(self, subscription: Subscription, client: httpx.Client) -> PollResult:
        """Fetch and apply every new batch; a refusal or a failure is logged and kept in the
        subscription's ``error`` (the state stays at the last good batch)."""
        applied = added = retracted = 0
        error: str | None = None
        state = subscription
        key = parse_public(subscription.public_key)
        try:
            for _ in range(MAX_PAGES_PER_POLL):
                head, batches = fetch_page(client, subscription, state.last_seq)
                good, refusal = verify_page(state, key, head, batches)
                for batch in good:
                    a, r = self._apply(state, batch)
                    added, retracted, applied = added + a, retracted + r, applied + 1
                    state = self._advance(state, batch)
                if refusal is not None:
                    raise refusal
                if not batches or state.last_seq >= head:
                    break
        except FeedRefused as exc:
            error = f"refused: {exc}"
            log.warning("feed %s (%s): %s; keeping batch %d", subscription.name, subscription.url, error,
                        state.last_seq)  # fmt: skip
        except (httpx.HTTPError, ValueError) as exc:
            error = f"could not fetch: {_describe(exc)}"
            log.warning("feed %s (%s): %s", subscription.name, subscription.url, error)
        except BankError as exc:  # its bank deleted by hand, say
            error = f"cannot apply: {exc}"
            log.warning("feed %s (%s): %s", subscription.name, subscription.url, error)
        now = datetime.now(UTC)
        values: dict[str, Any] = {"polled_at": now, "error": error}
        if error is None:
            values["synced_at"] = now
        with self.engine.begin() as conn:
            conn.execute(
                update(feed_subscriptions).where(feed_subscriptions.c.id == subscription.id).values(**values)
            )
        if applied:
            log.info("feed %s: applied %d batch(es) up to %d: %d added, %d retracted", subscription.name,
                     applied, state.last_seq, added, retracted)  # fmt: skip
        return PollResult(applied, added, retracted, error)

    def _apply(self, subscription: Subscription, batch: VerifiedBatch) -> tuple[int, int]:
        """Apply one batch's operations in order, runs of the same operation at once."""
        added = retracted = 0
        source = f"feed:{subscription.name}#{batch.seq}"
        for op, run in _runs(batch.ops):
            if op == "add":
                entries = [BankEntry(o.kind, o.value, o.note) for o in run]
                added += self.banks.add(
                    subscription.bank, entries, source=source, added_by=f"feed {subscription.name}",
                    source_kind="feed",
                )  # fmt: skip
            else:
                for start in range(0, len(run), 500):
                    values = [o.value for o in run[start : start + 500]]
                    retracted += len(self.banks.remove(subscription.bank, hashes=values))
        return added, retracted

    def _advance(self, subscription: Subscription, batch: VerifiedBatch) -> Subscription:
        with self.engine.begin() as conn:
            conn.execute(
                update(feed_subscriptions)
                .where(feed_subscriptions.c.id == subscription.id)
                .values(last_seq=batch.seq, last_digest=batch.digest)
            )
        return replace(subscription, last_seq=batch.seq, last_digest=batch.digest)


def fetch_page(
    client: httpx.Client, subscription: Subscription, after: int
) -> tuple[int, list[dict[str, Any]]]:
    """(the publisher's head, the raw batches after ``after``); httpx errors and ValueError pass up."""
    headers = {"Authorization": f"Bearer {subscription.token}"} if subscription.token else {}
    with client.stream("GET", subscription.url, params={"after": after}, headers=headers) as response:
        body = bytearray()
        for chunk in response.iter_bytes():  # decompressed: a gzip bomb meets the limit too
            body += chunk
            if len(body) > MAX_PAGE_BYTES:
                raise ValueError(f"{subscription.url}: a page over {MAX_PAGE_BYTES // 2**20} MiB")
    if response.status_code != 200:
        text = body[:200].decode("utf-8", "replace")
        raise ValueError(f"{subscription.url} answered {response.status_code}: {text}")
    page = json.loads(body)
    if not isinstance(page, dict) or not isinstance(page.get("batches"), list):
        raise ValueError(f"{subscription.url} did not answer with a feed page")
    head = page.get("head")
    if not isinstance(head, int) or head < 0:
        raise ValueError(f"{subscription.url}: a feed page's head must be a whole number")
    return head, page["batches"]


def verify_page(
    state: Subscription, key: Ed25519PublicKey, head: int, batches: Sequence[Any]
) -> tuple[list[VerifiedBatch], FeedRefused | None]:
    """The batches that follow ``state`` in order, verified, and the refusal that stopped the rest."""
    if head < state.last_seq:
        return [], FeedRefused(
            f"rollback: the publisher's head is batch {head}, batch {state.last_seq} was applied"
        )
    good: list[VerifiedBatch] = []
    last_seq, last_digest = state.last_seq, state.last_digest
    for raw in batches:
        try:
            batch = verify_batch(raw, key, state.feed, last_seq, last_digest)
        except FeedRefused as refusal:
            return good, refusal
        good.append(batch)
        last_seq, last_digest = batch.seq, batch.digest
    if last_seq > head:
        return good, FeedRefused(f"the page's head {head} is behind its own batch {last_seq}")
    return good, None


def verify_batch(
    raw: Any, key: Ed25519PublicKey, feed: str, last_seq: int, last_digest: str
) -> VerifiedBatch:
    """One batch checked against the key and the last applied batch; FeedRefused saying why."""
    if (
        not isinstance(raw, dict)
        or not isinstance(raw.get("body"), str)
        or not isinstance(raw.get("sig"), str)
    ):
        raise FeedRefused("malformed batch: it needs a body and a sig string")
    claimed = raw.get("seq")
    if isinstance(claimed, int) and claimed <= last_seq:
        raise FeedRefused(f"replayed batch {claimed}: batch {last_seq} was applied already")
    if isinstance(claimed, int) and claimed != last_seq + 1:
        raise FeedRefused(f"batch {claimed} out of order: batch {last_seq + 1} comes next")
    try:
        body = raw["body"].encode("ascii")
    except UnicodeEncodeError:
        raise FeedRefused("malformed batch: its body is not canonical (ASCII) JSON") from None
    if not verify(key, body, raw["sig"]):
        raise FeedRefused(f"bad signature on batch {claimed}: not signed by the feed's key, or altered")
    try:
        document = json.loads(body)
    except ValueError:
        raise FeedRefused(f"batch {claimed}: signed, but its body is not JSON") from None
    if not isinstance(document, dict) or document.get("v") != 1:
        raise FeedRefused(f"batch {claimed}: not a batch of format 1")
    seq = document.get("seq")
    if document.get("feed") != feed:
        raise FeedRefused(f"batch {seq} belongs to feed {str(document.get('feed'))[:100]!r}, not {feed!r}")
    if not isinstance(seq, int) or seq != claimed:
        raise FeedRefused(f"batch {claimed} carries the signed sequence number {seq!r}")
    if document.get("prev") != last_digest:
        raise FeedRefused(
            f"batch {seq} does not follow the last applied batch {last_seq} (history rewritten?)"
        )
    return VerifiedBatch(seq, digest(body), tuple(_ops(document.get("ops"), seq)))


def _ops(ops: Any, seq: int) -> list[Op]:
    if not isinstance(ops, list):
        raise FeedRefused(f"batch {seq}: ops must be a list")
    out: list[Op] = []
    for item in ops:
        if not isinstance(item, list) or len(item) not in (3, 4) or not all(isinstance(x, str) for x in item):
            raise FeedRefused(f"batch {seq}: malformed operation {str(item)[:100]}")
        op, kind, value = item[:3]
        if op not in ("add", "retract") or kind not in ("pdq", "sha256"):
            raise FeedRefused(f"batch {seq}: unknown operation {op!r} on {kind!r}")
        try:
            value = parse_hex256(value, f"{kind} hash")
        except ValueError as exc:
            raise FeedRefused(f"batch {seq}: {exc}") from None
        out.append(Op(op, kind, value, item[3][:2000] if len(item) == 4 else ""))
    return out


def _runs(ops: Sequence[Op]) -> list[tuple[str, list[Op]]]:
    runs: list[tuple[str, list[Op]]] = []
    for op in ops:
        if runs and runs[-1][0] == op.op:
            runs[-1][1].append(op)
        else:
            runs.append((op.op, [op]))
    return runs


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _subscription(row: Any) -> Subscription:
    return Subscription(
        int(row["id"]), row["name"], row["url"], row["public_key"], row["token"], row["action"], row["bank"],
        int(row["last_seq"]), row["last_digest"], row["polled_at"], row["synced_at"], row["error"],
    )  # fmt: skip
