"""`fediguard banks …`, `fediguard allow ID` and `fediguard confirm ID`: hash banks from the command line."""

from __future__ import annotations

import argparse
import getpass
import hashlib
import sys
from pathlib import Path
from typing import Any

from fediguard.banks.formats import (
    KINDS,
    BankEntry,
    dump_csv,
    dump_signal_list,
    parse_csv,
    parse_signal_list,
)
from fediguard.banks.governance import BankGovernance
from fediguard.banks.pdq import STORED, crop_variants, frame_views, pdq_hash
from fediguard.banks.review import DenyConflict, NeverScanned, review_decision
from fediguard.banks.store import BankError, BankStore
from fediguard.cli import bank_rules
from fediguard.cli.common import add_command, add_config_option, settings_from
from fediguard.cli.database import open_records
from fediguard.config import Settings
from fediguard.errors import FediguardError, MediaError
from fediguard.records import RecordStore

BANKS_HELP = """\
Banks are named lists of hashes kept in the records database: `deny` banks of known-bad images
(an upload that matches is rejected with the bank's name as its reason) and `allow` banks of
overturned false positives (an upload that matches passes without any model running).
Matching: exact SHA-256 of the bytes, and PDQ perceptual hashes of every frame within
pdq_max_distance bits (default 31). A running gateway picks up changes within bank_refresh_s.
When both an allow and a deny entry match, the closer one wins; a tie goes to deny. So an
image a deny entry matches exactly (its SHA-256, or its own PDQ hash) cannot be allowed until that
entry is removed: `fediguard banks remove BANK --id N` (entry ids are named in decision reasons).

PDQ alone misses crops of more than a few percent, so `banks add` also stores, for a still image
added to a deny bank, the PDQ hashes of 45 cropped copies of it (2.5-10 % off one side, two sides or
every side, and the centre square): uploads cropped like that still match. They are listed as crop
variants, removed with their entry, and exported as plain PDQ lines whose note names the crop.
`fediguard confirm` cannot make them: the image itself is never kept, only its hashes.

Governance (docs/banks.md): each bank has its own PDQ match radius (`banks set BANK --distance N`;
default pdq_max_distance) and can be switched off and on whole (`banks disable|enable BANK`), or
entry by entry (`--entry ID`), without deleting anything. Every entry keeps where it came from
(file, hash, record, import, feed) and counts its matches. The flood guard suspends an entry that
matches more distinct uploads than its bank's limit within its window (deny banks: 50 in 1 h by
default; `banks set BANK --flood-limit N --flood-window 1h`, 0 turns it off): its matches then go
to review instead of rejecting, and `banks alerts` lists it until `banks enable BANK --entry ID`.

Files: `csv` is `hash,kind,note,variant,parent` with a header (kind pdq or sha256; variant and
parent tie a crop variant to its entry); `signals` is the ThreatExchange signal list used by Meta's
HMA tools: one `pdq <hex>` or `video_sha256 <hex>` a line, each note as `# ` comment lines before
its entry (which Meta's tools skip).
"""


def add_parser(sub: Any) -> None:
    banks = add_command(sub, "banks", "manage hash banks (deny and allow lists)", BANKS_HELP)
    verbs = banks.add_subparsers(dest="verb", metavar="VERB", required=True)

    p = verbs.add_parser("list", help="list banks with their kind and size")
    p.set_defaults(func=_list)

    p = verbs.add_parser("show", help="list a bank's entries: hash, where from, who added it and when")
    p.add_argument("name")
    p.add_argument("--limit", type=int, default=100, help="newest N entries (default 100; 0: all)")
    p.add_argument("--crops", action="store_true", help="list crop variants too (default: only count them)")
    p.set_defaults(func=_show)

    p = verbs.add_parser("create", help="create a bank")
    p.add_argument("name")
    p.add_argument("--kind", choices=["deny", "allow"], required=True)
    p.add_argument("--description", default="")
    bank_rules.settings_options(p)
    p.set_defaults(func=_create)

    p = verbs.add_parser("set", help="set a bank's PDQ match radius or flood guard")
    p.add_argument("name")
    bank_rules.settings_options(p)
    p.set_defaults(func=bank_rules.set_rules)

    for name, text in (
        ("disable", "switch a bank, or single entries, off (nothing is deleted)"),
        ("enable", "switch a bank or entries on again (also ends a flood suspension)"),
    ):
        p = verbs.add_parser(name, help=text)
        p.add_argument("name")
        p.add_argument("--entry", dest="entries", type=int, nargs="+", action="extend", metavar="ID",
                       help="only these entries (with their crop variants)")  # fmt: skip
        p.add_argument("--note", default="", help="why (kept with the entries)")
        p.set_defaults(func=bank_rules.switch, enable=name == "enable")

    p = verbs.add_parser("alerts", help="entries the flood guard suspended, not yet resolved")
    p.add_argument("--all", action="store_true", help="resolved ones too")
    p.set_defaults(func=bank_rules.alerts)

    p = verbs.add_parser("delete", help="delete a bank and all its entries")
    p.add_argument("name")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.set_defaults(func=_delete)

    p = verbs.add_parser("remove", help="remove single entries from a bank, by entry id or by hash")
    p.add_argument("name")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--id", dest="ids", type=int, nargs="+", action="extend", metavar="N",
                       help="entry ids to remove (as named in decision reasons)")  # fmt: skip
    which.add_argument("--hash", dest="hashes", nargs="+", action="extend", metavar="HEX",
                       help="hashes to remove (SHA-256 or PDQ, 64 hex characters)")  # fmt: skip
    p.set_defaults(func=_remove)

    p = verbs.add_parser("add", help="add the hashes of image/video files, or given hashes, to a bank")
    p.add_argument("name")
    p.add_argument("files", nargs="*", type=Path, metavar="FILE")
    p.add_argument("--hash", action="append", default=[], metavar="HEX", help="a hash to add (repeatable)")
    p.add_argument("--kind", choices=KINDS, default="pdq", help="kind of the --hash values (default pdq)")
    p.add_argument("--note", default="", help="note stored with every entry added")
    p.add_argument(
        "--crops", action=argparse.BooleanOptionalAction, default=None,
        help="also add the PDQ hashes of cropped copies of each still image "
        "(default: yes for deny banks, no for allow banks, whose entries stay narrow)",
    )  # fmt: skip
    p.set_defaults(func=_add)

    p = verbs.add_parser("import", help="import a bank file (all or nothing)")
    p.add_argument("name")
    p.add_argument("file", type=Path)
    p.add_argument("--format", choices=["csv", "signals"], help="default: by extension (.csv or other)")
    p.add_argument("--signal-kind", choices=KINDS, help="signals file of bare hashes of this kind")
    p.set_defaults(func=_import)

    p = verbs.add_parser("export", help="export a bank")
    p.add_argument("name")
    p.add_argument("--format", choices=["csv", "signals"], default="csv")
    p.add_argument("--drop-notes", action="store_true", help="signals: leave out the notes' comment lines")
    p.add_argument(
        "--no-crops", action="store_true", help="leave out the PDQ hashes of cropped copies of images"
    )
    p.add_argument("-o", "--output", type=Path, help="file to write (default: standard output)")
    p.set_defaults(func=_export)

    for verb in verbs.choices.values():
        add_config_option(verb)

    for name, review, kind, default_bank, text in (
        ("allow", "overturned", "allow", "allowed",
         "overturn a decision: its hashes go into an allow bank, so the same image passes from now on"),
        ("confirm", "confirmed", "deny", "confirmed",
         "confirm a decision: its hashes go into a deny bank, so copies of the image are rejected"),
    ):  # fmt: skip
        p = sub.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        p.add_argument("record_id", type=int, metavar="RECORD_ID")
        p.add_argument("--bank", default=default_bank, help=f"{kind} bank to use (default {default_bank!r})")
        p.add_argument("--note", default="", help="why (kept with the entries and the record)")
        if name == "allow":
            p.add_argument(
                "--force", action="store_true",
                help="allow an unscanned decision too (its bytes were never scanned: look first)",
            )  # fmt: skip
        add_config_option(p)
        p.set_defaults(func=_review, review=review, bank_kind=kind)


def _stores(args: argparse.Namespace, create: bool = False) -> tuple[Settings, RecordStore, BankStore]:
    """Settings and the database; only commands that add to it (``create``) make a new one."""
    settings = settings_from(args)
    records = open_records(settings, create=create)
    return settings, records, BankStore(records.engine)


def _who() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def _list(args: argparse.Namespace) -> int:
    _, records, banks = _stores(args)
    rows = banks.list()
    records.close()
    if not rows:
        print("no banks yet: `fediguard banks create NAME --kind deny|allow`")
        return 0
    print(f"{'NAME':30} {'KIND':5} {'ENTRIES':>9} {'OF WHICH CROPS':>14} {'STATE':8} {'RADIUS':>7} "
          f"{'FLOOD GUARD':>14}  DESCRIPTION")  # fmt: skip
    for b in rows:
        state = "enabled" if b.enabled else "disabled"
        radius, flood = bank_rules.radius(b), bank_rules.flood(b)
        print(f"{b.name:30} {b.kind:5} {b.entries:>9} {b.crop_variants:>14} {state:8} {radius:>7} "
              f"{flood:>14}  {b.description}")  # fmt: skip
    return 0


def _show(args: argparse.Namespace) -> int:
    _, records, banks = _stores(args)
    try:
        bank = banks.get(args.name)
        shown = list(banks.stored_entries(args.name, limit=args.limit or None, crops=args.crops))
    finally:
        records.close()
    crops = f", {bank.crop_variants} of them crop variants" if bank.crop_variants else ""
    off = "" if bank.enabled else " (DISABLED)"
    print(
        f"{bank.kind} bank {bank.name!r}{off}: {bank.entries} entries{crops}; {bank.description}".rstrip("; ")
    )
    print(f"  radius {bank_rules.radius(bank)}, flood guard {bank_rules.flood(bank)}")
    for e in shown:
        variant = f" crop {e.variant!r} of entry {e.variant_of}" if e.variant else ""
        status = "" if e.status == "active" else f" [{e.status.upper()}: {e.status_note or '-'}]"
        last = f", last {e.last_matched_at:%Y-%m-%d %H:%M}" if e.last_matched_at else ""
        note = f"  — {e.note}" if e.note else ""
        when = e.added_at.strftime("%Y-%m-%d %H:%M")
        print(
            f"{e.id:>8} {e.hash_kind:6} {e.value}{variant}{status}  {e.match_count} matches{last}  "
            f"{when} by {e.added_by or '?'} from {e.source_kind} ({e.source}){note}"
        )
    if len(shown) < bank.entries - (0 if args.crops else bank.crop_variants):
        print(f"… the newest {len(shown)} shown (--limit 0 for all)")
    return 0


def _create(args: argparse.Namespace) -> int:
    _, records, banks = _stores(args, create=True)
    try:
        bank = banks.create(args.name, args.kind, args.description)
        bank_rules.configure(BankGovernance(records.engine), args)
    finally:
        records.close()
    print(f"created {bank.kind} bank {bank.name!r}")
    return 0


def _delete(args: argparse.Namespace) -> int:
    _, records, banks = _stores(args)
    bank = banks.get(args.name)
    if not args.yes:
        if not sys.stdin.isatty():
            raise FediguardError("refusing to delete without --yes when not on a terminal")
        answer = input(f"delete {bank.kind} bank {bank.name!r} and its {bank.entries} entries? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing deleted")
            return 1
    gone = banks.delete(args.name)
    records.close()
    print(f"deleted bank {args.name!r} ({gone} entries)")
    return 0


def _remove(args: argparse.Namespace) -> int:
    _, records, banks = _stores(args)
    try:
        removed = banks.remove(args.name, entry_ids=args.ids or (), hashes=args.hashes or ())
    finally:
        records.close()
    named = {e.id for e in removed}
    for e in removed:
        if e.variant_of in named:
            continue  # counted with its entry
        crops = sum(1 for v in removed if v.variant_of == e.id)
        with_crops = f" and its {crops} crop variants" if crops else ""
        print(f"removed entry {e.id}{with_crops} from {e.bank_kind} bank {e.bank!r}: {e.hash_kind} {e.value}")
    gone_ids = {e.id for e in removed}
    gone_values = {e.value for e in removed}
    missing = [f"entry {i}" for i in args.ids or () if i not in gone_ids]
    missing += [f"hash {h}" for h in args.hashes or () if h.strip().lower() not in gone_values]
    if missing:
        print(f"not in bank {args.name!r}: {', '.join(missing)} (in {records.label})", file=sys.stderr)
        return 1
    return 0


def file_entries(path: Path, settings: Settings, note: str, crops: bool = False) -> list[BankEntry]:
    """The SHA-256 of a file's bytes and the usable PDQ hashes of its frames; with ``crops``, for a
    still image, also the PDQ hashes of its cropped copies (see :data:`fediguard.banks.pdq.CROPS`)."""
    from fediguard.media.decode import decode
    from fediguard.scanning.pipeline import media_limits

    data = path.read_bytes()
    entries = [BankEntry("sha256", hashlib.sha256(data).hexdigest(), note)]
    try:
        media = decode(data, limits=media_limits(settings))
    except MediaError as exc:
        print(f"{path}: only its SHA-256 was added: {exc}", file=sys.stderr)
        return entries
    for frame in media.frames:
        # As displayed and, for a frame with an EXIF orientation or transparency, as stored (Meta's view).
        for view, image in frame_views(frame):
            h = pdq_hash(image)
            if h.usable:
                entries.append(BankEntry("pdq", h.hex, note))
                if crops and len(media.frames) == 1 and view != STORED:
                    variants = crop_variants(image)
                    entries += [BankEntry("pdq", v.hex, note, name, h.hex) for name, v in variants]
    return entries


def _add(args: argparse.Namespace) -> int:
    settings, records, banks = _stores(args, create=True)
    if not args.files and not args.hash:
        raise FediguardError("give FILEs or --hash values to add")
    crops = args.crops if args.crops is not None else banks.get(args.name).kind == "deny"
    groups: list[tuple[str, list[BankEntry]]] = []
    try:
        groups.append(("cli add --hash", [BankEntry(args.kind, value, args.note) for value in args.hash]))
    except ValueError as exc:
        raise FediguardError(f"--hash: {exc}") from exc
    for path in args.files:  # read them all before adding any
        try:
            groups.append((f"cli add {path.name}", file_entries(path, settings, args.note, crops)))
        except OSError as exc:
            raise FediguardError(f"{path}: {exc.strerror or exc}") from exc
    added = sum(
        banks.add(args.name, group, source=source, added_by=_who()) for source, group in groups if group
    )
    entries = [e for _, group in groups for e in group]
    records.close()
    noun = "entry" if added == 1 else "entries"
    variants = sum(1 for e in entries if e.variant)
    of_which = f"; {variants} of the hashes are of cropped copies" if variants else ""
    print(f"added {added} new {noun} to {args.name!r} ({len(entries) - added} already there{of_which})")
    return 0


def _import(args: argparse.Namespace) -> int:
    _, records, banks = _stores(args, create=True)
    banks.get(args.name)  # fail before reading a large file
    fmt = args.format or ("csv" if args.file.suffix.lower() == ".csv" else "signals")
    try:
        data = args.file.read_bytes()
    except OSError as exc:
        raise FediguardError(f"{args.file}: {exc.strerror or exc}") from exc
    entries = parse_csv(data) if fmt == "csv" else parse_signal_list(data, signal_kind=args.signal_kind)
    added = banks.add(args.name, entries, source=f"import {args.file.name}", added_by=_who())
    records.close()
    print(f"imported {added} new entr{'y' if added == 1 else 'ies'} into {args.name!r} "
          f"({len(entries) - added} already there)")  # fmt: skip
    return 0


def _export(args: argparse.Namespace) -> int:
    _, records, banks = _stores(args)
    entries = [e for e in banks.entries(args.name) if not (args.no_crops and e.variant)]
    records.close()
    try:
        text = (
            dump_csv(entries)
            if args.format == "csv"
            else dump_signal_list(entries, drop_notes=args.drop_notes)
        )
    except ValueError as exc:
        raise FediguardError(str(exc)) from exc
    if args.output:
        args.output.write_text(text, encoding="utf-8", newline="")
        print(f"exported {len(entries)} entries to {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def _review(args: argparse.Namespace) -> int:
    _, records, banks = _stores(args)
    try:
        added = review_decision(
            records, banks, args.record_id, args.review, args.bank, args.note, _who(),
            force=getattr(args, "force", False),
        )  # fmt: skip
    except (DenyConflict, NeverScanned) as exc:
        print(f"fediguard: {exc}", file=sys.stderr)
        return 1
    except BankError as exc:
        raise FediguardError(str(exc)) from exc
    finally:
        records.close()
    where = f"{args.bank_kind} bank {args.bank!r}"
    print(f"decision {args.record_id} {args.review}: {added} hash(es) added to {where}")
    return 0
