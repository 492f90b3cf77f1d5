"""A sweep seals the flagged objects it finds (evidence_labels), before its action deletes them."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

from PIL import Image, ImageDraw

import fediguard
from fediguard.banks.formats import BankEntry
from fediguard.banks.store import BankStore
from fediguard.desk.queue import DeskQueue, QueueFilter
from fediguard.evidence import EvidenceVault, keygen, load_recipient, unlock
from fediguard.records import RecordStore
from support.images import encode

PASSPHRASE = "a sweep evidence passphrase"


def _picture(i: int) -> bytes:
    image = Image.new("RGB", (96, 64), (20 + 40 * i, 90, 160))
    ImageDraw.Draw(image).rectangle((5 * i, 5, 5 * i + 30, 50), fill=(250, 240, 10))
    return encode(image, "PNG")


def test_swept_objects_with_evidence_labels_are_sealed(tmp_path: Path) -> None:
    data_dir, media = tmp_path / "data", tmp_path / "media"
    media.mkdir()
    bad, good = _picture(1), _picture(2)
    (media / "bad.png").write_bytes(bad)
    (media / "good.png").write_bytes(good)
    folder = data_dir / "evidence"
    keygen(folder, PASSPHRASE)
    records = RecordStore(f"sqlite:///{data_dir / 'fediguard.sqlite3'}")
    BankStore(records.engine).ensure("known-bad", "deny")
    BankStore(records.engine).add(
        "known-bad", [BankEntry("sha256", hashlib.sha256(bad).hexdigest())], "t", "t"
    )

    env = {k: v for k, v in os.environ.items() if not k.startswith("FEDIGUARD_")}
    tests_dir = Path(__file__).resolve().parents[1]
    env["PYTHONPATH"] = os.pathsep.join([str(Path(fediguard.__file__).parents[1]), str(tests_dir)])
    env.update(FEDIGUARD_DATA_DIR=str(data_dir), FEDIGUARD_DETECTORS="support.plugins:benign")
    env.update(FEDIGUARD_EVIDENCE_LABELS="denylisted", FEDIGUARD_DECODE_SANDBOX="false")
    done = subprocess.run(
        [sys.executable, "-m", "fediguard", "sweep", f"file://{media}", "--action", "delete"],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode in (0, 1), done.stderr
    assert not (media / "bad.png").exists() and (media / "good.png").exists()

    vault = EvidenceVault(folder, load_recipient(folder), 86400)
    sealed = vault.path(hashlib.sha256(bad).hexdigest())
    assert sealed.is_file() and bad not in sealed.read_bytes()
    assert not vault.has(hashlib.sha256(good).hexdigest())
    assert vault.open(hashlib.sha256(bad).hexdigest(), unlock(folder, PASSPHRASE)) == bad
    items, _ = DeskQueue(records.engine).page(QueueFilter(source="sweep"))
    assert [(i.labels, i.sha256) for i in items] == [(("denylisted",), hashlib.sha256(bad).hexdigest())]
    records.close()
