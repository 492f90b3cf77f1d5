"""`fediguard rematch`: match recorded decisions against the deny entries added since (retroactive
matching), and give the swept objects found the action of their source's latest sweep."""

from __future__ import annotations

import argparse
import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from fediguard.banks.rematch import Rematcher
from fediguard.cli.common import add_config_option, parse_duration, settings_from
from fediguard.cli.database import open_records
from fediguard.errors import FediguardError
from fediguard.logs import shown
from fediguard.storage import get_layout, open_source
from fediguard.sweeper.judges import NoJudge
from fediguard.sweeper.run import Sweeper, SweepOptions
from fediguard.sweeper.state import SweepState

HELP = """\
Match the hashes every decision recorded (SHA-256 of the bytes, PDQ of the frames) against the deny
bank entries added, imported, fed or re-enabled since they were last matched, without reading any
image again. Each match is printed and recorded (the rematches table, which the review queue reads).
Swept objects whose decision now matches get the action of their source's latest sweep (report,
quarantine or delete); when their source cannot be opened here, the next sweep of it does that.

A running gateway matches new entries by itself after each bank change, and every sweep does it
before its pass; this command does it now. Exit status: 0 nothing found, 1 something flagged,
2 an error.
"""


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "rematch", help="match recorded decisions against deny entries added since (retroactive)",
        description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    p.add_argument(
        "--since", type=parse_duration, metavar="AGE",
        help="only decisions recorded in the last AGE (e.g. 7d; default: all)",
    )  # fmt: skip
    add_config_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    records = open_records(settings, create=False)
    try:
        since = datetime.now(UTC) - timedelta(seconds=args.since) if args.since else None
        found = Rematcher(records.engine, settings.pdq_max_distance).run(since)
        for rematch in found:
            print(f"flagged: {rematch.text}")
        state = SweepState(records.engine)
        flagged, failed = asyncio.run(_act(state))
    finally:
        records.close()
    if not found and not flagged:
        print("no recorded decision matches a deny entry added since it was decided")
    if failed:
        return 2
    return 1 if found or flagged else 0


async def _act(state: SweepState) -> tuple[int, int]:
    """Give each marked swept object its source's remembered action; (objects flagged, sources that
    could not be opened)."""
    by_source: dict[int, int] = {}
    for record in await asyncio.to_thread(state.rematched):
        by_source[record.source_id] = by_source.get(record.source_id, 0) + 1
    flagged = failed = 0
    for source_id, count in sorted(by_source.items()):
        url, options = await asyncio.to_thread(state.source, source_id)
        action = await asyncio.to_thread(state.remembered_action, source_id) or "report"
        try:
            source = open_source(url, **options)
        except (FediguardError, ValueError, OSError) as exc:
            print(f"{count} object(s) of {shown(url)} stay flagged for its next sweep: cannot open it: {exc}")
            failed += 1
            continue
        try:
            options_ = SweepOptions(layout=get_layout("plain"), action=action)
            sweeper = Sweeper(source, source_id, state, NoJudge(), options_)
            await sweeper.flag_rematched()
            flagged += sweeper.stats.flagged
            done = "" if action == "report" else f", {sweeper.stats.actions} {action}d"
            errors = f", {sweeper.stats.errors} failed" if sweeper.stats.errors else ""
            print(f"{shown(url)}: {sweeper.stats.flagged} swept object(s) flagged{done}{errors}")
            failed += 1 if sweeper.stats.errors else 0
        finally:
            await source.close()
    return flagged, failed
