from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable

import httpx
import pytest

from fediguard.config import Credential, match_credential
from fediguard.gateway.auth import AuthError, address_allowed, admitting, authenticate_client
from support.gateway import RunningGateway
from support.images import drawn_png

LOOPBACK = [ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128")]
PRIVATE = [ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")]


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "::ffff:127.0.0.1"])
def test_loopback_default_accepts(host: str) -> None:
    assert address_allowed(host, LOOPBACK)


@pytest.mark.parametrize("host", ["100.64.0.1", "104.16.0.1", "172.32.0.1", "10.0.0.1", "", "junk", "::2"])
def test_loopback_default_refuses(host: str) -> None:
    assert not address_allowed(host, LOOPBACK)


@pytest.mark.parametrize(
    "host,allowed",
    [
        ("172.31.0.1", True),
        ("172.16.0.1", True),
        ("172.32.0.1", False),
        ("100.64.0.1", False),
        ("104.16.0.1", False),
        ("192.168.1.1", True),
        ("fd00::1", True),
        ("2001:db8::1", False),
    ],
)
def test_private_networks_are_exact(host: str, allowed: bool) -> None:
    assert address_allowed(host, PRIVATE) is allowed


def test_tokens_match_exactly() -> None:
    creds = [Credential(name="a", secret="a" * 20), Credential(name="b", secret="b" * 20)]
    assert match_credential("b" * 20, creds) == creds[1]
    assert match_credential("b" * 19, creds) is None
    assert match_credential("b" * 21, creds) is None
    assert match_credential("", creds) is None


def test_authenticate_client_statuses() -> None:
    creds = [Credential(name="lemmy", secret="x" * 20)]
    assert authenticate_client("x" * 20, "8.8.8.8", creds, LOOPBACK) == "lemmy"
    assert authenticate_client("IPADDR", "127.0.0.1", creds, LOOPBACK) == "ip:127.0.0.1"
    with pytest.raises(AuthError) as bad_token:
        authenticate_client("nope", "127.0.0.1", creds, LOOPBACK)
    assert bad_token.value.status == 401
    with pytest.raises(AuthError) as bad_addr:
        authenticate_client("IPADDR", "100.64.0.1", creds, LOOPBACK)
    assert bad_addr.value.status == 403


@pytest.mark.parametrize(
    "peer,network",
    [("172.18.0.5", "172.16.0.0/12"), ("10.1.2.3", "10.0.0.0/8"), ("fd00::5", "fc00::/7"), ("8.8.8.8", None)],
)
def test_a_refusal_says_which_setting_admits_the_caller(peer: str, network: str | None) -> None:
    hint = admitting(peer)
    assert (
        f"to admit {peer}," in hint
        and "FEDIGUARD_ALLOWED_CIDRS" in hint
        and "FEDIGUARD_CLIENT_TOKENS" in hint
    )
    assert (f"e.g. {network}" in hint) if network else "e.g." not in hint


def test_a_refused_caller_is_logged_with_its_address_and_the_setting_that_admits_it(
    gateway_for: Callable[..., RunningGateway], caplog: pytest.LogCaptureFixture
) -> None:
    gw = gateway_for(allowed_cidrs="10.0.0.0/8")  # 127.0.0.1 is not in it
    with caplog.at_level(logging.WARNING, logger="fediguard.gateway.app"):
        refused = gw.post(drawn_png())
        listing = httpx.get(f"{gw.url}/api/v1/workers")
    assert refused.status_code == 403 and listing.status_code == 403
    lines = [
        r.getMessage()
        for r in caplog.records
        if r.name == "fediguard.gateway.app" and r.levelno >= logging.WARNING
    ]
    assert len(lines) == 2, lines
    for line in lines:
        assert "127.0.0.1" in line and "allowed_cidrs (env FEDIGUARD_ALLOWED_CIDRS)" in line, line
    assert gw.store.count() == 0
