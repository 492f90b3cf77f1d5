"""Sealed evidence: kept encrypted to the public key for chosen labels only, unreadable without the
passphrase-protected private key, expired on time by the running gateway."""

from __future__ import annotations

import hashlib
import io
import logging
import os
import time
from pathlib import Path

import pytest
from pyrage import x25519

from fediguard.cli import main
from fediguard.evidence import EvidenceKeyError, EvidenceVault, keygen, load_recipient, unlock
from fediguard.scanning.service import ScanService
from support.gateway import make_settings, start_gateway
from support.images import astronaut_jpeg, drawn_png

PASSPHRASE = "a long evidence passphrase"


def _windows(data: bytes, size: int = 16) -> set[bytes]:
    return {data[i : i + size] for i in range(0, len(data) - size, 7)}


def _assert_sealed(path: Path, plain: bytes) -> None:
    sealed = path.read_bytes()
    assert sealed.startswith(b"age-encryption.org/v1")
    assert not any(w in sealed for w in _windows(plain)), "plaintext bytes on disk"


def test_keygen_cli_makes_a_private_key_only_the_passphrase_opens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for key in [k for k in os.environ if k.startswith("FEDIGUARD_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("FEDIGUARD_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSPHRASE + "\n"))
    assert main(["evidence", "keygen", "--passphrase-stdin"]) == 0
    folder = tmp_path / "data" / "evidence"
    assert (folder / "identity.age").stat().st_mode & 0o077 == 0
    assert b"AGE-SECRET-KEY" not in (folder / "identity.age").read_bytes()
    public = load_recipient(folder)
    assert str(public) in capsys.readouterr().out
    assert str(unlock(folder, PASSPHRASE).to_public()) == str(public)
    with pytest.raises(EvidenceKeyError, match="wrong passphrase"):
        unlock(folder, "not the passphrase at all")
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSPHRASE + "\n"))
    assert main(["evidence", "keygen", "--passphrase-stdin"]) == 2, "an existing key is never replaced"
    assert str(load_recipient(folder)) == str(public)


def test_gateway_seals_flagged_uploads_only(tmp_path: Path) -> None:
    bad, good = astronaut_jpeg(), drawn_png()
    deny = tmp_path / "deny.txt"
    deny.write_text(hashlib.sha256(bad).hexdigest() + "\n")
    folder = tmp_path / "data" / "evidence"
    keygen(folder, PASSPHRASE)
    settings = make_settings(
        tmp_path, hashlist_deny_file=deny, evidence_labels="denylisted,csam_suspect", decode_sandbox=False
    )
    gateway = start_gateway(settings)
    try:
        assert gateway.post(bad, "image/jpeg").status_code == 406
        assert gateway.post(good).status_code == 200
        vault = gateway.service.evidence
        assert vault is not None
    finally:
        gateway.stop()
    sealed = folder / "sealed" / f"{hashlib.sha256(bad).hexdigest()}.age"
    assert sealed.is_file() and not vault.has(hashlib.sha256(good).hexdigest())
    assert [p.name for p in (folder / "sealed").iterdir()] == [sealed.name]
    _assert_sealed(sealed, bad)
    with pytest.raises(EvidenceKeyError, match="another key"):
        vault.open(hashlib.sha256(bad).hexdigest(), x25519.Identity.generate())
    assert vault.open(hashlib.sha256(bad).hexdigest(), unlock(folder, PASSPHRASE)) == bad


async def test_gateway_refuses_to_start_without_a_public_key(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, evidence_labels="denylisted", decode_sandbox=False)
    with pytest.raises(EvidenceKeyError, match=r"recipient.txt is missing .*fediguard evidence keygen"):
        await ScanService(settings, None).start()


def test_evidence_expires_on_time(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    identity = x25519.Identity.generate()
    vault = EvidenceVault(tmp_path, identity.to_public(), retention_s=3600)
    sha = hashlib.sha256(b"x").hexdigest()
    vault.seal(sha, b"x" * 100)
    made = vault.path(sha).stat().st_mtime
    assert vault.expire(now=made + 3599) == [] and vault.has(sha)
    with caplog.at_level(logging.WARNING, "fediguard.evidence"):
        assert vault.expire(now=made + 3600) == [sha] and not vault.has(sha)
    assert f"evidence expired and deleted (retention 0.0416667 days): sha256={sha}" in caplog.text
    assert vault.open(sha, identity) is None


def test_the_running_gateway_expires_evidence(tmp_path: Path) -> None:
    folder = tmp_path / "data" / "evidence"
    keygen(folder, PASSPHRASE)
    settings = make_settings(
        tmp_path, evidence_labels="denylisted", evidence_retention_days=1.0, decode_sandbox=False
    )
    vault = EvidenceVault(folder, load_recipient(folder), 86400)
    old, new = hashlib.sha256(b"old").hexdigest(), hashlib.sha256(b"new").hexdigest()
    vault.seal(old, b"old bytes")
    vault.seal(new, b"new bytes")
    past = time.time() - 86401
    os.utime(vault.path(old), (past, past))
    gateway = start_gateway(settings)
    try:
        deadline = time.monotonic() + 60
        while vault.has(old) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        gateway.stop()
    assert not vault.has(old) and vault.has(new)
