"""Signed hash feeds between two real gateways on loopback, each with its own database: what one
confirms, the other rejects; what one retracts, the other lets through again."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from fediguard.banks.store import BankStore
from support.detectors import ScoreDetector
from support.gateway import RunningGateway
from support.images import encode

Start = Callable[..., RunningGateway]


def photo(name: str) -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(getattr(data, name)())


def cli(gw: RunningGateway, *args: str) -> subprocess.CompletedProcess[str]:
    """The real `fediguard` command against this gateway's database and data folder."""
    env = dict(
        os.environ,
        FEDIGUARD_DATABASE_URL=gw.settings.effective_database_url,
        FEDIGUARD_DATA_DIR=str(gw.settings.data_dir),
    )
    done = subprocess.run([sys.executable, "-m", "fediguard", *args], env=env, capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 0, f"fediguard {' '.join(args)}: {done.stdout}{done.stderr}"
    return done


def value_after(output: str, label: str) -> str:
    line = next(line for line in output.splitlines() if label in line)
    return line.rsplit(" ", 1)[-1]


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def reencoded(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=60)
    return buffer.getvalue()


def two_gateways(gateway_for: Start, tmp_path: Path) -> tuple[RunningGateway, RunningGateway]:
    def passing() -> ScoreDetector:
        return ScoreDetector("nudity", {"explicit": 0.0})

    a = gateway_for(passing, data_dir=tmp_path / "a", bank_refresh_s=0.1)
    b = gateway_for(passing, data_dir=tmp_path / "b", bank_refresh_s=0.1, feed_poll_s=0.5)
    assert a.settings.effective_database_url != b.settings.effective_database_url
    return a, b


def test_an_image_confirmed_on_a_is_rejected_on_b_and_passes_again_once_retracted(
    gateway_for: Start, tmp_path: Path
) -> None:
    a, b = two_gateways(gateway_for, tmp_path)
    image = photo("astronaut")
    on_a = a.post(encode(image, "PNG"))
    assert on_a.status_code == 200
    public_key = value_after(cli(a, "feed", "keygen").stdout, "public key")
    cli(a, "confirm", str(on_a.json()["id"]), "--note", "seen on A")
    published = cli(a, "feed", "publish", "shared", "--bank", "confirmed").stdout
    token = value_after(published, "read token")
    assert value_after(published, "public key:") == public_key

    copy = reencoded(image)  # never seen by A in these bytes
    assert b.post(copy, "image/jpeg").status_code == 200
    url = f"{a.url}/api/v1/feeds/shared"
    cli(b, "feed", "subscribe", "from-a", url, "--key", public_key, "--token", token)

    def rejected_on_b() -> bool:
        return b.post(copy, "image/jpeg").status_code == 406

    wait_for(rejected_on_b, "B to reject the copy (one feed poll, then one bank refresh)")
    reason = b.post(copy, "image/jpeg").json()["reasons"][0]
    assert "bank 'feed.from-a'" in reason and "seen on A" not in reason, "notes stay home unless asked"
    entries = list(BankStore(b.store.engine).stored_entries("feed.from-a"))
    assert entries and all(e.source == "feed:from-a#1" for e in entries)
    assert {e.value for e in entries} == {
        e.value for e in BankStore(a.store.engine).stored_entries("confirmed")
    }
    listed = cli(b, "feed", "list").stdout
    assert "from-a" in listed and "synced" in listed and "REFUSED" not in listed

    # A retracts: the entries leave its bank; B follows, and the copy passes there again.
    confirmed = [e.id for e in BankStore(a.store.engine).stored_entries("confirmed")]
    BankStore(a.store.engine).remove("confirmed", entry_ids=confirmed)
    wait_for(lambda: b.post(copy, "image/jpeg").status_code == 200, "B to let the copy through again")
    assert list(BankStore(b.store.engine).stored_entries("feed.from-a")) == []


def test_a_review_feed_only_labels_its_matches(gateway_for: Start, tmp_path: Path) -> None:
    a, b = two_gateways(gateway_for, tmp_path)
    image = photo("coffee")
    on_a = a.post(encode(image, "PNG"))
    public_key = value_after(cli(a, "feed", "keygen").stdout, "public key")
    cli(a, "confirm", str(on_a.json()["id"]))
    cli(a, "feed", "publish", "open", "--bank", "confirmed", "--public")
    cli(
        b,
        "feed",
        "subscribe",
        "watch",
        f"{a.url}/api/v1/feeds/open",
        "--key",
        public_key,
        "--action",
        "review",
    )
    copy = reencoded(image)
    wait_for(lambda: "review" in b.post(copy, "image/jpeg").json()["labels"], "B to flag the copy")
    answer = b.post(copy, "image/jpeg")
    assert answer.status_code == 200 and answer.json()["labels"] == ["review"]
    assert "flagged for review: matches bank 'feed.watch'" in answer.json()["reasons"][0]


def test_the_feed_route_wants_the_read_token(gateway_for: Start, tmp_path: Path) -> None:
    a = gateway_for(lambda: ScoreDetector("nudity", {"explicit": 0.0}), data_dir=tmp_path / "a")
    cli(a, "feed", "keygen")
    BankStore(a.store.engine).create("mine", "deny")
    token = value_after(cli(a, "feed", "publish", "private", "--bank", "mine").stdout, "read token")
    url = f"{a.url}/api/v1/feeds/private"
    with httpx.Client() as http:
        assert http.get(url).status_code == 401
        assert http.get(url, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert http.get(f"{a.url}/api/v1/feeds/nothing").status_code == 404
        ok = http.get(url, headers={"Authorization": f"Bearer {token}"}, params={"after": 0})
        assert ok.status_code == 200 and ok.json() == {"feed": "private", "head": 0, "batches": []}
        assert (
            http.get(url, params={"after": "x"}, headers={"Authorization": f"Bearer {token}"}).status_code
            == 400
        )
