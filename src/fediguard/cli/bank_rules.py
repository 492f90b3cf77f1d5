"""`fediguard banks set|disable|enable|alerts`: governing banks (docs/banks.md), for cli/banks.py."""

from __future__ import annotations

import argparse
import getpass
import sys

from fediguard.banks.governance import DEFAULT_FLOOD_WINDOW_S, BankGovernance, flood_limit_of
from fediguard.banks.store import Bank
from fediguard.cli.common import settings_from
from fediguard.cli.database import open_records
from fediguard.errors import FediguardError


def _distance(text: str) -> int | None:
    return None if text == "default" else int(text)


def _limit(text: str) -> int | None:
    return None if text == "default" else int(text)


def _window(text: str) -> int | None:
    from fediguard.cli.common import parse_duration

    return None if text == "default" else int(parse_duration(text))


def settings_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--distance", type=_distance, default=False, metavar="BITS|default",
                   help="PDQ match radius of this bank (default: the pdq_max_distance setting)")  # fmt: skip
    p.add_argument("--flood-limit", type=_limit, default=False, metavar="N|default",
                   help="distinct uploads one entry may match per window before it is suspended "
                   "(0: never; default: 50 for deny banks, none for allow banks)")  # fmt: skip
    p.add_argument("--flood-window", type=_window, default=False, metavar="AGE|default",
                   help="the flood guard's window (default 1h)")  # fmt: skip


def radius(bank: Bank) -> str:
    return "default" if bank.max_distance is None else str(bank.max_distance)


def flood(bank: Bank) -> str:
    limit = flood_limit_of(bank.kind, bank.flood_limit)
    if not limit:
        return "off"
    window = bank.flood_window_s or DEFAULT_FLOOD_WINDOW_S
    return f"{limit}/{window // 3600}h" if window % 3600 == 0 else f"{limit}/{window}s"


def configure(governance: BankGovernance, args: argparse.Namespace) -> bool:
    given = {
        "max_distance": args.distance,
        "flood_limit": args.flood_limit,
        "flood_window_s": args.flood_window,
    }
    if all(value is False for value in given.values()):
        return False
    governance.configure(args.name, **given)
    return True


def set_rules(args: argparse.Namespace) -> int:
    records = open_records(settings_from(args), create=False)
    try:
        governance = BankGovernance(records.engine)
        if not configure(governance, args):
            raise FediguardError("give --distance, --flood-limit or --flood-window")
        bank = governance.store.get(args.name)
    finally:
        records.close()
    print(f"{bank.kind} bank {bank.name!r}: radius {radius(bank)}, flood guard {flood(bank)}")
    return 0


def switch(args: argparse.Namespace) -> int:
    records = open_records(settings_from(args), create=False)
    verb = "enabled" if args.enable else "disabled"
    try:
        governance = BankGovernance(records.engine)
        if not args.entries:
            changed = governance.set_bank_enabled(args.name, args.enable)
            print(f"bank {args.name!r} {verb}" if changed else f"bank {args.name!r} was {verb} already")
            return 0
        status = "active" if args.enable else "disabled"
        done = governance.set_entries_status(args.name, args.entries, status, args.note, _who())
    finally:
        records.close()
    for entry in done:
        print(f"entry {entry} of bank {args.name!r} {verb}")
    missing = [str(i) for i in args.entries if i not in done]
    if missing:
        print(f"not in bank {args.name!r}: entry {', '.join(missing)}", file=sys.stderr)
        return 1
    return 0


def alerts(args: argparse.Namespace) -> int:
    records = open_records(settings_from(args), create=False)
    try:
        alerts = BankGovernance(records.engine).alerts(include_resolved=args.all)
    finally:
        records.close()
    if not alerts:
        print("no bank alerts" if args.all else "no open bank alerts")
    for a in alerts:
        state = f"resolved {a.resolved_at:%Y-%m-%d %H:%M} by {a.resolved_by}" if a.resolved_at else "OPEN"
        print(f"{a.id:>6} {a.created_at:%Y-%m-%d %H:%M} {a.kind} [{state}] {a.message}")
    return 0


def _who() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"
