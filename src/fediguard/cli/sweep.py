"""`fediguard sweep SOURCE` and `fediguard restore ID`: scan what is already stored."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from fediguard.cli.common import add_config_option, parse_duration, settings_from
from fediguard.cli.database import open_records
from fediguard.config import Settings
from fediguard.errors import ConfigError, FediguardError
from fediguard.logs import shown
from fediguard.records import RecordStore
from fediguard.records.store import sqlite_file
from fediguard.storage import LAYOUTS, Source, get_layout, open_source
from fediguard.sweeper.actions import ACTIONS, in_quarantine, restore
from fediguard.sweeper.daemon import Schedule, run_passes
from fediguard.sweeper.judges import GatewayJudge, Judge, LocalJudge
from fediguard.sweeper.progress import EXIT_STATUSES
from fediguard.sweeper.run import SweepOptions
from fediguard.sweeper.state import QUARANTINE_OPTIONS, ObjectRecord, SweepState

HELP = (
    """\
Scan media already stored, with the same pipeline and policy as uploads, and act on what is rejected.

SOURCE is one of:
  file:///srv/pict-rs/files          a local folder (symlinks are never followed); a plain path too
  s3://bucket/prefix                 S3-compatible storage; credentials from the usual AWS variables
                                     or profile, --endpoint-url for B2, Wasabi, MinIO, Garage, R2…
  ssh://user@host[:port]/path        a remote server over SFTP, with a key (--ssh-key)

Every object scanned is remembered in the records database: a re-run skips what is unchanged, so an
interrupted sweep resumes where it stopped and nothing is scanned twice. Objects with no verdict
(no scanner, deadline, read errors) are tried again by the next run. Actions are recorded before
they happen. `--action quarantine` moves rejected objects to --quarantine (remembered for the
source), from where `fediguard restore ID` puts one back (and allow-lists it). Flagged objects are
logged with their ID.

With --daemon, each pass lists only what was modified since the previous one began, and every
--full-every (default 24h) a pass lists everything: files copied in with old modification times
(rsync -a, mv) are found, and errors and objects with no verdict are retried. Unchanged objects
are skipped, so a full pass mostly costs the listing. A pass that fails (storage unreachable,
folder gone, database restarting) is logged and tried again after 1 s, 2 s, 4 s… and never later
than --interval, for as long as the daemon runs; without --daemon, the sweep stops with status 2.

  fediguard sweep file:///srv/pict-rs/files --layout pictrs --action quarantine --quarantine /srv/quarantine
  fediguard sweep s3://media/ --endpoint-url https://s3.example.org --layout mastodon --since 1d --daemon

"""
    + EXIT_STATUSES
)


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "sweep", help="scan stored media (folder, S3, SSH)", description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    p.add_argument("source", metavar="SOURCE")
    when = p.add_mutually_exclusive_group()
    when.add_argument(
        "--all", action="store_true", help="everything (the default), skipping what is unchanged"
    )
    when.add_argument(
        "--since", type=parse_duration, metavar="AGE", help="only objects modified in the last AGE"
    )
    p.add_argument("--daemon", action="store_true", help="keep sweeping what is new, every --interval")
    p.add_argument("--interval", type=parse_duration, default=30.0, metavar="AGE", help="default 30s")
    p.add_argument(
        "--full-every", type=parse_duration, default=86400.0, metavar="AGE",
        help="with --daemon, list everything (or the whole --since window) every AGE, not only what "
        "changed: finds files copied in with old times and retries errors (default 24h)",
    )  # fmt: skip
    p.add_argument("--action", choices=ACTIONS, default="report", help="what to do with rejected objects")
    p.add_argument("--dry-run", action="store_true", help="scan and record, but change nothing in storage")
    p.add_argument("--layout", choices=sorted(LAYOUTS), default="plain", help="which keys are media")
    p.add_argument("--prefix", default="", help="only keys under this prefix")
    p.add_argument("--concurrency", type=int, default=4, help="objects read at once (default 4)")
    p.add_argument("--quarantine", metavar="LOCATION", help="folder, s3://bucket/prefix or remote path")
    p.add_argument("--endpoint-url", help="S3 endpoint for non-AWS storage")
    p.add_argument("--region", help="S3 region")
    p.add_argument("--ssh-key", help="SSH private key file")
    p.add_argument("--known-hosts", help="known_hosts file (default: the user's)")
    p.add_argument("--insecure-host-key", action="store_true", help="accept any SSH host key (tests only)")
    p.add_argument("--gateway", metavar="URL", help="decide through this gateway (and its remote workers)")
    p.add_argument("--token", help="client token for --gateway (default: authenticate by address)")
    add_config_option(p)
    p.set_defaults(func=run)

    r: argparse.ArgumentParser = sub.add_parser(
        "restore", help="put a quarantined object back",
        description="Move a quarantined object back to where it was swept from, and overturn its "
        "decision (its hashes join the allow bank, so it is not flagged again). When the overturn "
        "would be refused (a deny entry holds the object's own hash), nothing moves and the message "
        "says what to run; run again after a restore, it finishes an allow-listing that failed. "
        "Exit status: 0 done, 1 refused (nothing moved) or restored but not allow-listed, 2 an error.",
    )  # fmt: skip
    r.add_argument("object_id", type=int, metavar="ID", help="the object ID the sweep logged")
    r.add_argument("--no-allow", action="store_true", help="only move it back; do not allow-list it")
    r.add_argument("--bank", default="allowed", help="allow bank to use (default 'allowed')")
    for name in ("--endpoint-url", "--region", "--ssh-key", "--known-hosts"):
        r.add_argument(name, help="as for sweep, when not remembered from the sweep")
    r.add_argument(
        "--quarantine", metavar="LOCATION",
        help="where the object is held, when not the location remembered from the sweeps",
    )  # fmt: skip
    r.add_argument("--insecure-host-key", action="store_true")
    add_config_option(r)
    r.set_defaults(func=run_restore)


def source_options(url: str, args: argparse.Namespace) -> dict[str, Any]:
    """Non-secret options for ``open_source`` from the command line (credentials stay in the
    environment: they are never stored)."""
    scheme = urlsplit(url).scheme.lower()
    options: dict[str, Any] = {}
    quarantine = getattr(args, "quarantine", None)
    if scheme == "file":
        if quarantine:
            options["quarantine_dir"] = quarantine
    elif scheme == "s3":
        for name in ("endpoint_url", "region"):
            if getattr(args, name, None):
                options[name] = getattr(args, name)
        if quarantine:
            q = urlsplit(quarantine)
            if q.scheme == "s3":
                options["quarantine_bucket"], options["quarantine_prefix"] = q.netloc, q.path.lstrip("/")
            else:
                options["quarantine_prefix"] = quarantine
    elif scheme in ("ssh", "sftp"):
        if getattr(args, "ssh_key", None):
            options["key_file"] = args.ssh_key
        if getattr(args, "known_hosts", None):
            options["known_hosts"] = args.known_hosts
        if getattr(args, "insecure_host_key", False):
            options["insecure_host_key"] = True
        if quarantine:
            options["quarantine_path"] = quarantine
    return options


def source_url(source: str) -> str:
    """SOURCE as a URL: a plain path (no ``scheme://``) is a local folder, ``file://`` + its
    absolute path."""
    if "://" in source:
        return source
    return Path(source).absolute().as_uri()


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    args.source = source_url(args.source)
    if args.concurrency < 1:
        raise ConfigError("--concurrency must be at least 1")
    return asyncio.run(_sweep(settings, args))


def _check_quarantine(settings: Settings, args: argparse.Namespace, options: dict[str, Any]) -> None:
    """--action quarantine needs a location: given, or remembered from an earlier sweep of the source."""
    if args.action != "quarantine" or args.dry_run or any(n in options for n in QUARANTINE_OPTIONS):
        return
    path = sqlite_file(settings.effective_database_url)
    remembered: dict[str, Any] = {}
    if path is None or path.exists():
        records = RecordStore(settings.effective_database_url)
        try:
            remembered = SweepState(records.engine).remembered(args.source, options)
        finally:
            records.close()
    if not any(n in remembered for n in QUARANTINE_OPTIONS):
        raise ConfigError(
            f"--action quarantine needs --quarantine LOCATION: no earlier sweep of {args.source} "
            "gave one to remember"
        )


async def _sweep(settings: Settings, args: argparse.Namespace) -> int:
    options = source_options(args.source, args)
    source = open_source(args.source, **options)
    await asyncio.to_thread(_check_quarantine, settings, args, options)
    records = await asyncio.to_thread(open_records, settings, create=True)
    state = SweepState(records.engine)
    # A dry run changes nothing, not even the quarantine location remembered for the source.
    source_id, remembered = await asyncio.to_thread(
        state.register, source.url, options, remember=not args.dry_run
    )
    if remembered != options:  # the quarantine location of earlier sweeps, for pending actions
        await source.close()
        source = open_source(args.source, **remembered)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    service = None
    http = None
    try:
        if args.gateway:
            http = httpx.AsyncClient(timeout=httpx.Timeout(330, connect=10))
            judge: Judge = GatewayJudge(http, args.gateway, args.token)
        else:
            from fediguard.scanning.service import ScanService

            service = ScanService(settings, records)
            await service.start()
            judge = LocalJudge(service, source.name)
        schedule = Schedule(
            daemon=args.daemon, interval=args.interval, full_every=args.full_every, since=args.since
        )
        sweep_options = SweepOptions(
            layout=get_layout(args.layout), action=args.action, dry_run=args.dry_run, prefix=args.prefix,
            concurrency=args.concurrency, max_bytes=settings.max_body_bytes,
            rematch_distance=settings.pdq_max_distance if settings.banks else None,
        )  # fmt: skip
        if not args.dry_run:  # what `fediguard rematch` gives objects of this source
            await asyncio.to_thread(state.remember_action, source_id, args.action)
        ended = await run_passes(source, source_id, state, judge, sweep_options, schedule, stop)
        if ended.interrupted:
            return 130
        return ended.stats.exit_status() if ended.stats is not None else 0
    finally:
        if service is not None:
            await service.stop()
        if http is not None:
            await http.aclose()
        await source.close()
        records.close()


def run_restore(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    return asyncio.run(_restore(settings, args))


async def _restore(settings: Settings, args: argparse.Namespace) -> int:
    records = await asyncio.to_thread(open_records, settings, create=False)
    state = SweepState(records.engine)
    source: Source | None = None
    try:
        record = await asyncio.to_thread(state.get, args.object_id)
        if record is None:
            raise FediguardError(f"no swept object {args.object_id} in {records.label}")
        allow = not args.no_allow and record.decision_id is not None
        if record.action == "restore" and record.action_state == "done":
            print(f"object {record.id} ({shown(record.key)}) was restored already; nothing moved")
            return await _overturn(records, record, args.bank) if allow else 0
        if allow and in_quarantine(record):
            # Refused before anything moves: the object stays in quarantine, and the same command
            # works once what refuses it is gone.
            refusal = await asyncio.to_thread(_refusal, records, record)
            if refusal is not None:
                print(
                    f"object {record.id} ({shown(record.key)}) is NOT restored; it stays in quarantine "
                    f"as '{shown(record.quarantine_key or '')}', because its decision cannot be "
                    f"overturned:\n{refusal}\nOr put it back without allow-listing it: "
                    f"fediguard restore {record.id} --no-allow (a later sweep with --action quarantine "
                    "or delete then acts on it again)",
                    file=sys.stderr,
                )
                return 1
        url, options = await asyncio.to_thread(state.source, record.source_id)
        given = {k: v for k, v in source_options(url, args).items() if v}
        if any(name in given for name in QUARANTINE_OPTIONS):  # replaces the remembered location
            options = {k: v for k, v in options.items() if k not in QUARANTINE_OPTIONS}
        source = open_source(url, **{**options, **given})
        try:
            done = await restore(source, state, args.object_id)
        except ValueError as exc:
            raise FediguardError(str(exc)) from exc
        if done.action != "restore" or done.action_state != "done":
            raise FediguardError(
                f"restoring {shown(done.key)} failed: {done.error}; it stays in quarantine "
                f"as '{shown(done.quarantine_key or '')}' and can be restored again"
            )
        print(f"restored {shown(done.key)} from quarantine ({shown(done.quarantine_key or '')})")
        if allow:
            return await _overturn(records, done, args.bank)
        if done.decision_id is not None:
            print(
                f"not allow-listed (--no-allow): while decision {done.decision_id} stands, a sweep with "
                f"--action quarantine or delete acts on it again; `fediguard allow {done.decision_id}` "
                "allow-lists it"
            )
        return 0
    finally:
        if source is not None:
            await source.close()
        records.close()


def _refusal(records: RecordStore, record: ObjectRecord) -> FediguardError | None:
    from fediguard.banks.review import overturn_refusal
    from fediguard.banks.store import BankStore

    assert record.decision_id is not None
    return overturn_refusal(records, BankStore(records.engine), record.decision_id)


async def _overturn(records: RecordStore, record: ObjectRecord, bank: str) -> int:
    """Allow-list a restored object's decision (once); the object stays restored when that is
    refused, and the same restore command finishes the allow-listing later."""
    from fediguard.banks.review import review_decision
    from fediguard.banks.store import BankStore

    assert record.decision_id is not None
    decision = await asyncio.to_thread(records.get, record.decision_id)
    if decision is not None and decision.review == "overturned":
        print(f"decision {record.decision_id} is overturned already (allow-listed)")
        return 0
    by = f"restore:{time.strftime('%Y-%m-%d')}"
    note = f"restored swept object {record.id}"
    try:
        added = await asyncio.to_thread(
            review_decision, records, BankStore(records.engine), record.decision_id, "overturned", bank,
            note, by,
        )  # fmt: skip
    except FediguardError as exc:
        print(
            f"restored, but not allow-listed:\n{exc}\n(`fediguard restore {record.id}` allow-lists "
            "it once that is done)",
            file=sys.stderr,
        )
        return 1
    print(f"decision {record.decision_id} overturned: {added} hash(es) added to allow bank {bank!r}")
    return 0
