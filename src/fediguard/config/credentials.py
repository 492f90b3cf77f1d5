"""Named secrets in the settings: client tokens and worker keys, how they are parsed from a setting,
and how a presented one is matched (in constant time)."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict


class Credential(BaseModel):
    """A named secret: a client token or a worker key. The name is what records and logs show."""

    model_config = ConfigDict(frozen=True)

    name: str
    secret: str

    def __repr__(self) -> str:
        return f"Credential(name={self.name!r}, secret='***')"


def match_credential(presented: str, credentials: Sequence[Credential]) -> Credential | None:
    """The credential whose secret equals ``presented``, compared in constant time against every
    configured secret (no early exit, so timing tells nothing of which one or how much matched)."""
    found: Credential | None = None
    given = presented.encode()
    for cred in credentials:
        if hmac.compare_digest(given, cred.secret.encode()):
            found = cred
    return found


def split_list(value: Any) -> Any:
    """A comma-separated string as its parts (other values as they are)."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def parse_credentials(value: Any, kind: str, name_required: bool) -> list[Credential]:
    """``name:secret`` pairs (a list, or a comma-separated string) as credentials; raises
    ValueError naming ``kind`` (the setting's validator turns it into a message naming the setting)."""
    items = split_list(value)
    if not isinstance(items, list):
        raise ValueError(f"expected a comma-separated string or a list of {kind}")
    creds: list[Credential] = []
    for item in items:
        if isinstance(item, Credential):
            creds.append(item)
            continue
        text = str(item)
        name, sep, secret = text.partition(":")
        if not sep:
            if name_required:
                raise ValueError(f"{kind} entries are name:key pairs; one has no ':'")
            # An unnamed token is shown by a short, non-reversible tag of itself.
            name, secret = "token-" + hashlib.sha256(text.encode()).hexdigest()[:8], text
        if not name or not secret:
            raise ValueError(f"{kind} entries need a non-empty name and secret")
        if len(secret) < 16:
            raise ValueError(f"{kind} secret for {name!r} is shorter than 16 characters")
        creds.append(Credential(name=name, secret=secret))
    names = [c.name for c in creds]
    if len(set(names)) != len(names):
        raise ValueError(f"{kind} names must be unique")
    return creds
