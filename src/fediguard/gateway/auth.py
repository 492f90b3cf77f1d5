"""Who is calling: a client token in the URL, or the caller's address in an allowed network."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from fediguard.config import Credential, IPNetwork, match_credential

IPADDR = "IPADDR"
"""The URL segment meaning "authenticate me by my address", as pictrs-safety used it."""


class AuthError(Exception):
    def __init__(self, status: int, message: str, kind: str) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind


def address_allowed(host: str | None, networks: Sequence[IPNetwork]) -> bool:
    if not host:
        return False
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped  # ::ffff:127.0.0.1 from a dual-stack socket is 127.0.0.1
    return any(addr in net for net in networks if addr.version == net.version)


def authenticate_client(
    segment: str, peer: str | None, tokens: Sequence[Credential], networks: Sequence[IPNetwork]
) -> str:
    """The client's name for records and logs; raises AuthError (401 bad token, 403 bad address)."""
    if segment == IPADDR:
        if address_allowed(peer, networks):
            return f"ip:{peer}"
        raise AuthError(403, f"address {peer} is not in allowed_cidrs", "address")
    cred = match_credential(segment, tokens)
    if cred is None:
        raise AuthError(401, "unknown client token", "token")
    return cred.name
