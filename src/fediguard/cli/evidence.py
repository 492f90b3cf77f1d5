"""`fediguard evidence keygen|expire`: the key sealed evidence is encrypted to, and its retention."""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

from fediguard.cli.common import add_command, add_config_option, settings_from
from fediguard.errors import FediguardError

HELP = """\
Sealed evidence is off until evidence_labels names labels (e.g. csam_suspect,denylisted; also
nsfw, review, unscanned): the bytes of every upload and swept object so labelled are then kept,
encrypted to an age public key, in evidence_dir (data_dir/evidence), for
evidence_retention_days (90), then deleted (checked by `fediguard serve` at least hourly, logged).

  fediguard evidence keygen     make the key pair: identity.age (the private key, encrypted with a
                                passphrase you choose) and recipient.txt (the public key) in
                                evidence_dir. The gateway needs only the public key: move
                                identity.age off a gateway that does not run the desk, or set
                                evidence_recipient to the public key and keep no files there.
  fediguard evidence expire     delete what is past the retention now.

A reviewer unlocks the evidence per desk session with the passphrase; the private key is held in
the desk's memory for that session only. Preservation duties differ by country (some require
keeping reported material for a set time, some forbid keeping it at all): the labels and the
retention are the admin's to set, with legal advice.
"""


def add_parser(sub: Any) -> None:
    evidence = add_command(sub, "evidence", "the sealed-evidence key, and expiring old evidence", HELP)
    verbs = evidence.add_subparsers(dest="verb", metavar="VERB", required=True)
    keygen = verbs.add_parser("keygen", help="make the evidence key pair (passphrase-protected)")
    keygen.add_argument("--passphrase-stdin", action="store_true", help="read the passphrase from stdin")
    expire = verbs.add_parser("expire", help="delete evidence past evidence_retention_days")
    for verb, run in ((keygen, _keygen), (expire, _expire)):
        add_config_option(verb)
        verb.set_defaults(func=run)


def _keygen(args: argparse.Namespace) -> int:
    from fediguard.evidence import keygen

    settings = settings_from(args)
    if args.passphrase_stdin:
        secret = sys.stdin.readline().rstrip("\r\n")
    else:
        secret = getpass.getpass("passphrase for the evidence key: ")
        if secret != getpass.getpass("again: "):
            raise FediguardError("the passphrases differ; no key was made")
    folder = settings.effective_evidence_dir
    public = keygen(folder, secret)
    print(f"evidence key made in {folder}: identity.age (private, passphrase-protected), recipient.txt")
    print(f"public key: {public}")
    return 0


def _expire(args: argparse.Namespace) -> int:
    from fediguard.evidence import EvidenceVault

    settings = settings_from(args)
    vault = EvidenceVault(settings.effective_evidence_dir, None, settings.evidence_retention_days * 86400)
    gone = vault.expire()
    print(f"{len(gone)} expired evidence file(s) deleted")
    return 0
