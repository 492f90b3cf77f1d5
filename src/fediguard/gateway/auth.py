"""Who is calling: a client token in the URL, or the caller's address in an allowed network."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from fediguard.config import Credential, IPNetwork, match_credential

IPADDR = "IPADDR"
"""The URL segment meaning "authenticate me by my address", as pictrs-safety used it."""

_PRIVATE_NETWORKS = tuple(
    ipaddress.ip_network(net) for net in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")
)
"""Where a container network, a pod or a LAN gives its addresses (RFC 1918, IPv6 unique local)."""


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


def admitting(peer: str | None) -> str:
    """What an admin sets to admit a refused ``peer``: the log line of every refusal says it, so
    one refused on a Docker network (172.x) learns its address and the setting from the log."""
    try:
        addr = ipaddress.ip_address(peer or "")
    except ValueError:
        return "the caller's address is unknown; put a client token (FEDIGUARD_CLIENT_TOKENS) in the URL"
    network = next((net for net in _PRIVATE_NETWORKS if addr.version == net.version and addr in net), None)
    wider = f" or its network (e.g. {network})" if network is not None else ""
    return (
        f"to admit {addr}, add it{wider} to allowed_cidrs (env FEDIGUARD_ALLOWED_CIDRS), or use a "
        "client token (FEDIGUARD_CLIENT_TOKENS) instead of IPADDR"
    )


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
