"""`fediguard scan FILE...`: the gateway's pipeline and policy on local files."""

from __future__ import annotations

import argparse
import asyncio
import json
import mimetypes
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fediguard.cli.common import add_config_option, settings_from
from fediguard.cli.database import open_records
from fediguard.config import Settings
from fediguard.media.sniff import sniff
from fediguard.records.store import RecordStore, sqlite_file
from fediguard.scanning.service import DecisionOutcome, ScanService
from fediguard.verdicts import Verdict

HELP = """\
Scan local files with the same pipeline as the gateway (hash banks, detectors, policy), and record
each decision; --no-record writes nothing (the banks are still matched). A FOLDER is scanned file by
file, with every media file under it (files that are not media are skipped and counted).
One line per file (or one JSON object per line with --json).
Exit status: 0 every file passed, 1 at least one was rejected, 2 an error or an undecided file.
"""


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "scan",
        help="scan local files",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("files", nargs="+", type=Path, metavar="FILE|FOLDER")
    p.add_argument("--json", action="store_true", help="one JSON object per file")
    p.add_argument("--explain", action="store_true", help="show every detector's scores for every frame")
    p.add_argument("--deadline", type=float, default=120.0, help="seconds allowed per file (default 120)")
    p.add_argument("--no-record", action="store_true", help="do not write decisions to the records database")
    add_config_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # --explain shows the detectors' scores, so it scans even bytes that passed before.
    settings = settings_from(args, verdict_cache=False) if args.explain else settings_from(args)
    return asyncio.run(_scan_all(settings, args))


async def _scan_all(settings: Settings, args: argparse.Namespace) -> int:
    store = await asyncio.to_thread(_records, settings, args.no_record)
    service = ScanService(settings, store, record=not args.no_record)
    await service.start()
    worst = 0
    try:
        for path in _files(args.files):
            code = await _scan_one(service, settings, path, args)
            worst = max(worst, code) if worst != 2 else 2
    finally:
        await service.stop()
        if store is not None:
            store.close()
    return worst


def _records(settings: Settings, no_record: bool) -> RecordStore | None:
    """The records database: written to, or with --no-record only read (its banks, the verdict
    cache). Without a database there are no banks either, and --no-record creates none."""
    path = sqlite_file(settings.effective_database_url)
    if no_record and path is not None and not path.exists():
        return None
    return open_records(settings, create=True)


def _files(paths: list[Path]) -> Iterator[Path]:
    """The files named, and the media files under the folders named (symlinks not followed)."""
    for path in paths:
        if not path.is_dir():
            yield path
            continue
        skipped = 0
        for root, dirs, names in os.walk(path):
            dirs.sort()
            for name in sorted(names):
                found = Path(root, name)
                if found.is_symlink() or not found.is_file():
                    continue
                if _is_media(found):
                    yield found
                else:
                    skipped += 1
        if skipped:
            print(f"{path}: {skipped} file(s) that are not media skipped", file=sys.stderr)


def _is_media(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            return sniff(fh.read(4096)) is not None
    except OSError:
        return True  # scanned, so that the error is reported


async def _scan_one(service: ScanService, settings: Settings, path: Path, args: argparse.Namespace) -> int:
    try:
        size = path.stat().st_size
        if size > settings.max_body_bytes:
            raise OSError(f"{size} bytes is over max_body_mb ({settings.max_body_mb:g} MB)")
        data = path.read_bytes()
    except OSError as exc:
        _print_error(path, exc.strerror or str(exc), args.json)
        return 2
    media_type = mimetypes.guess_type(path.name)[0]
    outcome = await service.screen(data, media_type, client="cli", source="scan", deadline_s=args.deadline)
    _print_outcome(path, outcome, args)
    verdict = outcome.decision.verdict
    return {Verdict.PASS: 0, Verdict.REJECT: 1}.get(verdict, 2)


def _print_error(path: Path, message: str, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"file": str(path), "error": message}))
    else:
        print(f"{path}: error: {message}", file=sys.stderr)


def _print_outcome(path: Path, outcome: DecisionOutcome, args: argparse.Namespace) -> None:
    d = outcome.decision
    if args.json:
        data: dict[str, Any] = {
            "file": str(path),
            "verdict": d.verdict.value,
            "labels": list(d.labels),
            "reasons": list(d.reasons),
            "id": outcome.record_id,
            "sha256": outcome.sha256,
        }
        if args.explain and outcome.scan:
            data["results"] = [r.to_json() for r in outcome.scan.results]
        print(json.dumps(data))
        return
    labels = f" [{', '.join(d.labels)}]" if d.labels else ""
    reasons = f": {'; '.join(d.reasons)}" if d.reasons else ""
    print(f"{path}: {d.verdict.value}{labels}{reasons}")
    if args.explain and outcome.scan:
        for result in outcome.scan.results:
            top = ", ".join(f"{k}={v:.3g}" for k, v in sorted(result.scores.items()))
            print(f"  {result.detector} {result.version} ({result.seconds * 1000:.0f} ms): {top or '-'}")
            for note in result.notes:
                print(f"    {note}")
            for frame in result.frames:
                scores = ", ".join(f"{k}={v:.3g}" for k, v in sorted(frame.scores.items()) if v)
                print(f"    frame {frame.frame}: {scores or '-'}")
