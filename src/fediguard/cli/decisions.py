"""`fediguard decisions`: recent decisions from the command line (the records; never an image)."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from fediguard.cli.common import add_command, parse_duration, settings_from
from fediguard.errors import FediguardError
from fediguard.records import RecordStore

HELP = """\
The newest decisions first, from the records database: id, time (UTC), source, client, verdict,
labels, review and the start of the SHA-256; the reasons on the next line. The ids are the ones
`fediguard confirm ID` and `fediguard allow ID` take.

  fediguard decisions --label csam_suspect --since 1d
  fediguard decisions --label unscanned --json       (one JSON object per line)

--label is csam_suspect, nsfw, denylisted, review, allowlisted, or unscanned (a verdict).
"""


def add_parser(sub: Any) -> None:
    p = add_command(sub, "decisions", "list recent decisions", HELP)
    p.add_argument("--label", metavar="L", help="only decisions carrying this label (or verdict unscanned)")
    p.add_argument(
        "--verdict", choices=("pass", "reject", "unscanned"), help="only decisions of this verdict"
    )
    p.add_argument("--since", type=parse_duration, metavar="AGE", help="only the last AGE (30m, 2h, 1d)")
    p.add_argument("--limit", type=int, default=50, metavar="N", help="at most N decisions (default 50)")
    p.add_argument("--before", type=int, metavar="ID", help="only decisions older than record ID (next page)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise FediguardError("--limit must be 1 or more")
    settings = settings_from(args)
    since = datetime.now(UTC) - timedelta(seconds=args.since) if args.since is not None else None
    store = RecordStore(settings.effective_database_url)
    try:
        found = store.recent(args.limit, args.verdict, args.before, label=args.label, since=since)
    finally:
        store.close()
    for record in found:
        if args.json:
            print(json.dumps(record.to_json(), sort_keys=True))
            continue
        when = record.created_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
        review = f" [{record.review} by {record.reviewed_by}]" if record.review else ""
        print(
            f"{record.id:>8}  {when}  {record.source:<7} {record.client:<16} {record.verdict:<9} "
            f"{','.join(record.labels) or '-':<24} {record.sha256[:16] or '-'}{review}"
        )
        if record.reasons:
            print(f"{'':>10}{'; '.join(record.reasons)}")
    if not found and not args.json:
        print("no decisions match")
    return 0
