"""Over real HTTP: "purge from pict-rs" against a stand-in of pict-rs's purge endpoint (a real
socket): the API key sent, the aliases purged, each result and each failure (404, a refused key,
pict-rs down) shown to the reviewer and in the audit log, never a 500."""

from __future__ import annotations

import html
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import fediguard
from conftest import Stack, open_stack
from fediguard.desk.audit import AuditLog
from support.desk import csrf_of
from support.images import astronaut_jpeg
from support.pictrs_purge import FakePictrs

KEY = "the pict-rs api key, long enough"


@pytest.fixture
def pictrs() -> Iterator[FakePictrs]:
    fake = FakePictrs(KEY, {"abc.webp": ["abc.webp", "abd.png"], "abd.png": ["abc.webp", "abd.png"]}).start()
    try:
        yield fake
    finally:
        fake.stop()


def _purge(http: httpx.Client, record_id: int, alias: str, reason: str = "abuse, reported") -> str:
    csrf = csrf_of(http.get(f"/item/{record_id}").text)
    answer = http.post(
        f"/item/{record_id}/act", data={"action": "purge", "alias": alias, "reason": reason, "csrf": csrf}
    )
    assert answer.status_code == 303, answer.text
    return html.unescape(http.get(answer.headers["location"]).text)


def _audit(stack: Stack, record_id: int) -> list[tuple[str, str, str]]:
    entries = AuditLog(stack.gateway.store.engine).recent(decision_id=record_id)
    return [(e.actor, e.action, e.detail) for e in reversed(entries)]


def test_purge_from_pictrs_sends_the_key_and_reports_each_outcome(pictrs: FakePictrs, tmp_path: Path) -> None:
    with open_stack(tmp_path, pictrs_url=pictrs.url + "/", pictrs_api_key=KEY) as stack:
        record_id = stack.flag(astronaut_jpeg())
        bob = stack.desk.sign_in("bob")
        assert 'id="purge-form"' in bob.get(f"/item/{record_id}").text

        assert "every action needs a reason" in _purge(bob, record_id, "abc.webp", reason=" ")
        assert "give the pict-rs alias" in _purge(bob, record_id, "two words")
        assert pictrs.calls == [], "nothing asked of pict-rs"

        page = _purge(bob, record_id, "nope.png")
        assert "knows no alias 'nope.png' (HTTP 404)" in page
        page = _purge(bob, record_id, "https://lemmy.example/pictrs/image/abc.webp?format=jpg")
        assert "purged from pict-rs: abc.webp, abd.png" in page
        assert [(c.path, c.alias, c.token, c.status) for c in pictrs.calls] == [
            ("/internal/purge", "nope.png", KEY, 404),
            ("/internal/purge", "abc.webp", KEY, 200),
        ]
        assert pictrs.files == {}

        pictrs.stop()
        page = _purge(bob, record_id, "abd.png")
        assert f"pict-rs at {pictrs.url} (pictrs_url) could not be reached" in page
        assert [a for _, a, _ in _audit(stack, record_id)] == ["purge_failed", "purge", "purge_failed"]
        audit = _audit(stack, record_id)
        assert audit[1] == ("bob", "purge", "abuse, reported; purged from pict-rs: abc.webp, abd.png")
        assert audit[0][2].startswith("abuse, reported; alias nope.png: pict-rs at ")
        assert KEY not in json.dumps(audit)


def test_a_refused_api_key_is_said_plainly(pictrs: FakePictrs, tmp_path: Path) -> None:
    with open_stack(tmp_path, pictrs_url=pictrs.url, pictrs_api_key="not the key pict-rs has") as stack:
        record_id = stack.flag(astronaut_jpeg())
        page = _purge(stack.desk.sign_in("alice"), record_id, "abc.webp")
        assert "refused the API key (HTTP 401): check pictrs_api_key" in page
        assert [c.status for c in pictrs.calls] == [401] and "abc.webp" in pictrs.files
        assert [a for _, a, _ in _audit(stack, record_id)] == ["purge_failed"]


def test_without_pictrs_settings_there_is_no_purge(stack: Stack) -> None:
    record_id = stack.flag(astronaut_jpeg())
    alice = stack.desk.sign_in("alice")
    assert 'id="purge-form"' not in alice.get(f"/item/{record_id}").text
    assert "needs the settings pictrs_url and pictrs_api_key" in _purge(alice, record_id, "abc.webp")


def test_fediguard_config_masks_the_pictrs_api_key(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEDIGUARD_")}
    env["PYTHONPATH"] = str(Path(fediguard.__file__).parents[1])
    env.update(FEDIGUARD_DATA_DIR=str(tmp_path), FEDIGUARD_PICTRS_API_KEY=KEY)
    env["FEDIGUARD_PICTRS_URL"] = "http://pictrs:8080"
    done = subprocess.run(
        [sys.executable, "-m", "fediguard", "config"], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert shown["pictrs_url"] == "http://pictrs:8080" and shown["pictrs_api_key"] == "**********"
    assert KEY not in done.stdout
