"""Folder trees shaped like real pict-rs and Mastodon storage, filled with benign pictures."""

from __future__ import annotations

import uuid
from pathlib import Path

from .images import picture


def _write(root: Path, files: dict[str, bytes]) -> None:
    for key, data in files.items():
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def pictrs_tree(root: Path, count: int = 6) -> tuple[dict[str, bytes], set[str]]:
    """A pict-rs data folder: ``files/`` (0.5 UUIDv7 folders and a 0.4-style one) and ``sled-repo``.

    Returns (media key -> bytes, other keys).
    """
    media: dict[str, bytes] = {}
    for i in range(count):
        hexid = uuid.uuid4().hex
        folders = "/".join(hexid[j * 2 : j * 2 + 2] for j in range(6))
        ext = (".png", ".jpg", "")[i % 3]
        fmt = "JPEG" if ext == ".jpg" else "PNG"
        media[f"files/{folders}/{uuid.uuid4()}{ext}"] = picture(i, fmt)
    media[f"files/000/000/001/{uuid.uuid4()}"] = picture(99)
    other = {
        "sled-repo/db": b"sled database",
        "sled-repo/conf": b"segment_size: 524288\n",
        "files/README": b"not media",
    }
    _write(root, {**media, **other})
    return media, set(other)


def mastodon_tree(root: Path) -> tuple[dict[str, bytes], set[str]]:
    """Mastodon's public/system: local and cached remote media, avatars, cards, site uploads."""
    sid = "109/348/123/456/789/012"
    media = {
        f"media_attachments/files/{sid}/original/0a1b2c3d4e5f6a7b.png": picture(1),
        f"media_attachments/files/{sid}/small/0a1b2c3d4e5f6a7b.png": picture(1, size=(32, 24)),
        "cache/media_attachments/files/110/000/000/000/000/001/original/remote.jpg": picture(2, "JPEG"),
        "cache/media_attachments/files/110/000/000/000/000/001/small/remote.jpg": picture(2, "JPEG"),
        "cache/preview_cards/images/000/123/456/original/card.png": picture(3),
        "accounts/avatars/000/000/001/original/me.gif": picture(4, "GIF"),
        "accounts/avatars/000/000/001/static/me.png": picture(4),
        "cache/accounts/headers/109/000/000/000/000/002/original/h.png": picture(5),
        "site_uploads/files/000/000/001/original/thumbnail.png": picture(6),
        "site_uploads/files/000/000/001/@1x/thumbnail.png": picture(6, size=(60, 32)),
        "site_uploads/files/000/000/001/@2x/thumbnail.png": picture(6, size=(120, 64)),
        "site_uploads/files/000/000/002/48/favicon.png": picture(7, size=(48, 48)),
    }
    other = {
        "backups/000/000/001/original/archive.zip": b"PK\x03\x04 not really",
        "imports/000/000/001/original/follows.csv": b"account,notify\n",
    }
    _write(root, {**media, **other})
    return media, set(other)
