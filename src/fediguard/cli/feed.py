"""`fediguard feed keygen|publish|unpublish|subscribe|list|unsubscribe|poll`: hash feeds between instances."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from fediguard.banks.feeds.signing import generate_key, load_key, public_text
from fediguard.cli.common import add_command, add_config_option, settings_from
from fediguard.config import Settings
from fediguard.records import RecordStore

FEED_HELP = """\
A feed shares deny banks with other instances: only hashes (PDQ and SHA-256; notes only with
--notes), never an image. The publishing gateway serves GET /api/v1/feeds/NAME: ordered batches of
additions and retractions, each signed with its Ed25519 key (feed_key_file, default
DATA_DIR/feed-ed25519.pem). A subscribing gateway polls the feed every feed_poll_s seconds, verifies
every batch against the public key it was given, refuses rollbacks, replays, reordering and
tampering (logged; it keeps its last good state), and applies the rest to its bank `feed.NAME`,
whose matches reject uploads (--action deny) or only label them `review` (--action review).
The format is in docs/feeds.md.

Publisher:   fediguard feed keygen;  fediguard feed publish NAME --bank confirmed
             (give subscribers the URL, the public key and the read token it prints)
Subscriber:  fediguard feed subscribe NAME URL --key ed25519:... --token TOKEN [--action review]
"""


def add_parser(sub: Any) -> None:
    feed = add_command(sub, "feed", "share deny banks with other instances as signed feeds", FEED_HELP)
    verbs = feed.add_subparsers(dest="verb", metavar="VERB", required=True)

    p = verbs.add_parser("keygen", help="make this instance's feed signing key; print its public key")
    p.set_defaults(func=_keygen)

    p = verbs.add_parser("publish", help="publish deny banks as a feed (prints its read token)")
    p.add_argument("name", help="the feed's name, the last part of its URL")
    p.add_argument("--bank", action="append", required=True, help="a deny bank to publish (repeat for more)")
    p.add_argument("--notes", action="store_true", help="publish entries' notes too (default: hashes only)")
    p.add_argument(
        "--public", action="store_true", help="no read token: anyone who knows the URL may read it"
    )
    p.set_defaults(func=_publish)

    p = verbs.add_parser("unpublish", help="stop publishing a feed")
    p.add_argument("name")
    p.set_defaults(func=_unpublish)

    p = verbs.add_parser("subscribe", help="subscribe to another instance's feed")
    p.add_argument("name", help="a local name for it (its bank is feed.NAME)")
    p.add_argument("url", help="the feed's URL, https://HOST/api/v1/feeds/FEED")
    p.add_argument("--key", required=True, help="the publisher's public key, ed25519:BASE64")
    p.add_argument("--token", help="the publisher's read token (none for a public feed)")
    p.add_argument(
        "--action", choices=("deny", "review"), default="deny",
        help="what its matches do: reject (deny, the default) or only label for review",
    )  # fmt: skip
    p.set_defaults(func=_subscribe)

    p = verbs.add_parser("unsubscribe", help="stop following a feed and delete its bank")
    p.add_argument("name")
    p.add_argument("--keep-entries", action="store_true", help="keep the bank feed.NAME and its entries")
    p.set_defaults(func=_unsubscribe)

    p = verbs.add_parser("list", help="published feeds and subscriptions, with their state")
    p.set_defaults(func=_list)

    p = verbs.add_parser("poll", help="poll every subscribed feed once now (a gateway does so by itself)")
    p.set_defaults(func=_poll)

    for verb in verbs.choices.values():
        add_config_option(verb)


def _records(args: argparse.Namespace) -> tuple[Settings, RecordStore]:
    settings = settings_from(args)
    return settings, RecordStore(settings.effective_database_url)


def _keygen(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    path = settings.effective_feed_key_file
    public = generate_key(path)
    print(f"feed signing key written to {path} (keep it secret; mode 0600)")
    print(f"public key (give it to subscribers): {public}")
    return 0


def _publish(args: argparse.Namespace) -> int:
    from fediguard.banks.feeds.publisher import Publisher

    settings, records = _records(args)
    try:
        key = load_key(settings.effective_feed_key_file)
        publisher = Publisher(records.engine)
        token = publisher.create(args.name, args.bank, notes=args.notes, public=args.public)
        batches = publisher.sync(args.name, key)
        publication = publisher.get(args.name)
    finally:
        records.close()
    assert publication is not None
    print(
        f"publishing feed {args.name!r} of bank(s) {', '.join(publication.banks)}: {batches} batch(es) so far"
    )
    print(f"URL: https://YOUR-GATEWAY/api/v1/feeds/{args.name}")
    print(f"public key: {public_text(key.public_key())}")
    if token:
        print(f"read token (shown once; subscribers send it as a bearer token): {token}")
    else:
        print("public feed: no read token")
    return 0


def _unpublish(args: argparse.Namespace) -> int:
    from fediguard.banks.feeds.publisher import Publisher

    _, records = _records(args)
    try:
        Publisher(records.engine).delete(args.name)
    finally:
        records.close()
    print(f"feed {args.name!r} is no longer published")
    return 0


def _subscribe(args: argparse.Namespace) -> int:
    from fediguard.banks.feeds.subscriber import Subscriptions

    _, records = _records(args)
    try:
        subscription = Subscriptions(records.engine).create(
            args.name, args.url, args.key, args.token, args.action
        )
    finally:
        records.close()
    what = "reject" if subscription.action == "deny" else "are labelled review"
    print(f"subscribed to {subscription.url} as {subscription.name!r}: its entries go to bank")
    print(f"{subscription.bank!r},")
    print(f"whose matches {what}; a running gateway polls it every feed_poll_s")
    return 0


def _unsubscribe(args: argparse.Namespace) -> int:
    from fediguard.banks.feeds.subscriber import Subscriptions

    _, records = _records(args)
    try:
        gone = Subscriptions(records.engine).delete(args.name, keep_entries=args.keep_entries)
    finally:
        records.close()
    kept = "its bank is kept" if args.keep_entries else f"{gone} entries deleted with its bank"
    print(f"unsubscribed from {args.name!r}; {kept}")
    return 0


def _list(args: argparse.Namespace) -> int:
    from fediguard.banks.feeds.publisher import Publisher
    from fediguard.banks.feeds.subscriber import Subscriptions

    _, records = _records(args)
    try:
        published = Publisher(records.engine).all()
        subscribed = Subscriptions(records.engine).all()
    finally:
        records.close()
    print("published:" if published else "published: none")
    for p in published:
        access = "public" if p.public else "token"
        notes = ", with notes" if p.notes else ""
        print(f"  {p.name:24} batch {p.head:>6}  {access:6} banks {', '.join(p.banks)}{notes}")
    print("subscribed:" if subscribed else "subscribed: none")
    for s in subscribed:
        when = s.synced_at.isoformat(timespec="seconds") if s.synced_at else "never"
        state = f"REFUSED/FAILING: {s.error}" if s.error else f"synced {when}"
        print(f"  {s.name:24} batch {s.last_seq:>6}  {s.action:6} {s.url}  {state}")
    return 0


def _poll(args: argparse.Namespace) -> int:
    from fediguard.banks.feeds.poller import FeedPoller

    settings, records = _records(args)
    try:
        results = FeedPoller(records.engine, settings.feed_poll_s).poll_all()
    finally:
        records.close()
    for name, result in results.items():
        outcome = f"error: {result.error}" if result.error else "ok"
        counts = f"{result.applied} batch(es), {result.added} added, {result.retracted} retracted"
        print(f"{name}: {counts}; {outcome}")
    failed = any(r.error for r in results.values())
    if failed:
        print(
            "some feeds were refused or failed; the subscriptions keep their last good state", file=sys.stderr
        )
    return 1 if failed else 0
