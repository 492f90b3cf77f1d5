"""`fediguard admin add|remove|list|passwd|audit`: accounts of the review desk (`fediguard serve`)."""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

from fediguard.cli.common import add_command, add_config_option, settings_from
from fediguard.errors import FediguardError

HELP = """\
Accounts of the moderators' review desk, which `fediguard serve` runs on desk_host:desk_port
(127.0.0.1:14052 by default). An admin also manages accounts and reads the audit log; a reviewer
works the queue. Passwords (10 characters or more) are stored as Argon2id hashes; they are asked
for twice, or read from one line of standard input with --password-stdin.

  fediguard admin add alice --role admin
  fediguard admin add bob                  (a reviewer)
  fediguard admin passwd bob
  fediguard admin remove bob
  fediguard admin list
  fediguard admin audit --limit 50         (the audit log: who did what, when, why)

Every change is written to the audit log.
"""


def add_parser(sub: Any) -> None:
    admin = add_command(sub, "admin", "manage review-desk accounts, read the audit log", HELP)
    verbs = admin.add_subparsers(dest="verb", metavar="VERB", required=True)
    for name, run, what, needs_name in [
        ("add", _add, "add an account", True),
        ("remove", _remove, "remove an account", True),
        ("passwd", _passwd, "set an account's password (and --role)", True),
        ("list", _list, "list the accounts", False),
        ("audit", _audit, "print the audit log, newest first", False),
    ]:
        verb = verbs.add_parser(name, help=what)
        add_config_option(verb)
        if needs_name:
            verb.add_argument("name", metavar="NAME")
        if name in ("add", "passwd"):
            verb.add_argument("--role", choices=("admin", "reviewer"), help="default for add: reviewer")
            verb.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
        if name == "audit":
            verb.add_argument("--limit", type=int, default=100, metavar="N")
        verb.set_defaults(func=run)


def _stores(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    from fediguard.desk.accounts import Accounts
    from fediguard.desk.audit import AuditLog
    from fediguard.records import RecordStore

    store = RecordStore(settings_from(args).effective_database_url)
    return store, Accounts(store.engine), AuditLog(store.engine)


def _password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass(f"password for {args.name}: ")
    if first != getpass.getpass("again: "):
        raise FediguardError("the passwords differ; nothing was changed")
    return first


def _add(args: argparse.Namespace) -> int:
    from fediguard.desk.audit import cli_actor

    store, accounts, audit = _stores(args)
    try:
        account = accounts.add(args.name, _password(args), args.role or "reviewer")
        audit.record(cli_actor(), "account_add", f"{account.name} ({account.role})")
    finally:
        store.close()
    print(f"desk account {account.name} added ({account.role})")
    return 0


def _remove(args: argparse.Namespace) -> int:
    from fediguard.desk.audit import cli_actor

    store, accounts, audit = _stores(args)
    try:
        accounts.remove(args.name)
        audit.record(cli_actor(), "account_remove", args.name)
    finally:
        store.close()
    print(f"desk account {args.name} removed")
    return 0


def _passwd(args: argparse.Namespace) -> int:
    from fediguard.desk.accounts import AccountError
    from fediguard.desk.audit import cli_actor

    store, accounts, audit = _stores(args)
    try:
        if accounts.get(args.name) is None:
            raise AccountError(f"no desk account {args.name!r} (`fediguard admin add {args.name}`)")
        accounts.set_password(args.name, _password(args))
        detail = args.name
        if args.role:
            accounts.set_role(args.name, args.role)
            detail += f" role {args.role}"
        audit.record(cli_actor(), "account_password", detail)
    finally:
        store.close()
    print(f"desk account {args.name}: password set" + (f", role {args.role}" if args.role else ""))
    return 0


def _list(args: argparse.Namespace) -> int:
    store, accounts, _audit = _stores(args)
    try:
        found = accounts.all()
    finally:
        store.close()
    for a in found:
        print(f"{a.name:<24} {a.role:<9} since {a.created_at:%Y-%m-%d}")
    if not found:
        print("no desk accounts (`fediguard admin add NAME --role admin`)")
    return 0


def _audit(args: argparse.Namespace) -> int:
    store, _accounts, audit = _stores(args)
    try:
        entries = audit.recent(args.limit)
    finally:
        store.close()
    for e in entries:
        item = f" decision {e.decision_id}" if e.decision_id is not None else ""
        print(f"{e.at:%Y-%m-%d %H:%M:%S}  {e.actor:<16} {e.action:<18}{item}  {e.detail}")
    return 0
