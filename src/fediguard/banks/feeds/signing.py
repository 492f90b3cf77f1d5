"""Ed25519 keys and the canonical bytes of a feed batch (docs/feeds.md, "Signing").

A batch is signed as its canonical JSON: UTF-8, keys sorted, no whitespace, non-ASCII escaped
(``json.dumps(..., sort_keys=True, separators=(",", ":"), ensure_ascii=True)``). The wire carries
those exact bytes as a string, so a subscriber verifies what it received before parsing anything.
Public keys are written ``ed25519:`` + the 32 raw key bytes in standard base64; signatures are the
64 raw signature bytes in standard base64. Private keys live in a PKCS#8 PEM file, mode 0600.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from fediguard.errors import FediguardError

KEY_PREFIX = "ed25519:"


class FeedKeyError(FediguardError):
    """A key file or a public key that cannot be used (the message names which and why)."""


def canonical(document: dict[str, Any]) -> bytes:
    """The bytes that are signed: canonical JSON (see the module's docstring)."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def digest(body: bytes) -> str:
    """The SHA-256 of a batch's signed bytes, lowercase hex: the next batch's ``prev``."""
    return hashlib.sha256(body).hexdigest()


def generate_key(path: Path) -> str:
    """Write a new private key to ``path`` (refusing to overwrite one) and return its public key."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise FeedKeyError(
            f"feed key file {path} exists already; remove it first to make a new key"
        ) from None
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    return public_text(key.public_key())


def load_key(path: Path) -> Ed25519PrivateKey:
    """The private key in ``path`` (setting ``feed_key_file``); FeedKeyError naming the file."""
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError:
        raise FeedKeyError(f"no feed key at {path} (feed_key_file): run `fediguard feed keygen`") from None
    except (OSError, ValueError, TypeError) as exc:
        raise FeedKeyError(f"feed key file {path} (feed_key_file) is not an Ed25519 PEM key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise FeedKeyError(f"feed key file {path} (feed_key_file) holds a {type(key).__name__}, not Ed25519")
    return key


def public_text(key: Ed25519PublicKey) -> str:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return KEY_PREFIX + base64.b64encode(raw).decode("ascii")


def parse_public(text: str) -> Ed25519PublicKey:
    """A public key written ``ed25519:BASE64``; FeedKeyError saying what is wrong."""
    text = text.strip()
    if not text.startswith(KEY_PREFIX):
        raise FeedKeyError(f"a feed's public key starts with {KEY_PREFIX!r}, not {text[:20]!r}")
    try:
        raw = base64.b64decode(text[len(KEY_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise FeedKeyError("a feed's public key must be ed25519: and base64 (32 bytes)") from None
    if len(raw) != 32:
        raise FeedKeyError(f"a feed's public key is 32 bytes, this one {len(raw)}")
    return Ed25519PublicKey.from_public_bytes(raw)


def sign(key: Ed25519PrivateKey, body: bytes) -> str:
    return base64.b64encode(key.sign(body)).decode("ascii")


def verify(key: Ed25519PublicKey, body: bytes, signature: str) -> bool:
    """Whether ``signature`` (base64) is the key's signature of exactly ``body``."""
    try:
        key.verify(base64.b64decode(signature, validate=True), body)
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True
