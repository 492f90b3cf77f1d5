"""The review desk over real HTTP: sessions, CSRF, the login limit, roles, the item flow."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile

import httpx
import numpy as np
import pytest
from PIL import Image

from conftest import PASSPHRASE, Stack
from fediguard.banks.store import BankStore
from fediguard.desk.audit import AuditLog
from fediguard.desk.sessions import COOKIE
from support.desk import PASSWORD, csrf_of
from support.images import astronaut_jpeg, drawn_gif, laplacian_energy

PAGES = ["/", "/item/{id}", "/audit", "/accounts", "/?label=csam_suspect&before={id}"]
MEDIA = ["/media/{id}/thumb.jpg", "/media/{id}/original.jpg"]
FORMS = ["/item/{id}/act", "/item/{id}/reveal", "/item/{id}/export"]
FORMS += ["/unlock", "/lock", "/prefs", "/accounts", "/logout"]


def _refused(http: httpx.Client, record_id: int) -> None:
    for url in PAGES:
        answer = http.get(url.format(id=record_id))
        assert answer.status_code == 303 and answer.headers["location"] == "/login", url
    for url in MEDIA:
        answer = http.get(url.format(id=record_id))
        assert answer.status_code == 401 and not answer.headers["content-type"].startswith("image/"), url
    for url in FORMS:
        answer = http.post(url.format(id=record_id), data={"reason": "x", "action": "confirm", "csrf": "x"})
        assert answer.status_code == 401, url


def _audit(stack: Stack) -> list[tuple[str, str, int | None]]:
    return [(e.actor, e.action, e.decision_id) for e in AuditLog(stack.gateway.store.engine).recent()]


def test_every_page_and_media_url_refuses_a_missing_expired_or_forged_session(stack: Stack) -> None:
    record_id = stack.flag(astronaut_jpeg())
    with stack.desk.client() as anonymous:
        _refused(anonymous, record_id)
    http = stack.desk.sign_in("alice")
    for url in PAGES:
        assert http.get(url.format(id=record_id)).status_code == 200, url
    assert http.get(f"/media/{record_id}/thumb.jpg").status_code == 200
    cookie = http.cookies[COOKIE]
    forged = stack.desk.client()
    forged.cookies.set(COOKIE, cookie[:-2] + ("A" if cookie[-2] != "A" else "B") + cookie[-1])
    _refused(forged, record_id)
    session = stack.desk.desk.sessions.get(cookie)
    assert session is not None
    stack.desk.desk.sessions.expire_now(session.sid)
    _refused(http, record_id)


def test_session_cookie_is_httponly_strict_and_expires(stack: Stack) -> None:
    http = stack.desk.client()
    token = csrf_of(http.get("/login").text)
    answer = http.post("/login", data={"name": "alice", "password": PASSWORD, "csrf": token})
    cookie = answer.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "max-age=" in cookie
    page = http.get("/")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert page.headers["cache-control"] == "no-store"


def test_a_post_without_the_csrf_token_is_refused(stack: Stack) -> None:
    record_id = stack.flag(astronaut_jpeg())
    http = stack.desk.sign_in("alice")
    for data in (
        {"action": "confirm", "reason": "seen"},
        {"action": "confirm", "reason": "seen", "csrf": "no"},
    ):
        answer = http.post(f"/item/{record_id}/act", data=data)
        assert answer.status_code == 403 and "CSRF" in answer.text
    assert stack.gateway.store.get(record_id).review is None  # type: ignore[union-attr]
    assert http.post("/accounts", data={"op": "add", "name": "eve", "password": "x" * 12}).status_code == 403
    with stack.desk.client() as fresh:
        answer = fresh.post("/login", data={"name": "alice", "password": PASSWORD})
        assert answer.status_code == 403 and COOKIE not in answer.headers.get("set-cookie", "")


def test_login_is_rate_limited(stack: Stack) -> None:
    http = stack.desk.client()
    for _ in range(5):
        token = csrf_of(http.get("/login").text)
        answer = http.post("/login", data={"name": "bob", "password": "wrong password", "csrf": token})
        assert answer.status_code == 401
    token = csrf_of(http.get("/login").text)
    answer = http.post("/login", data={"name": "bob", "password": PASSWORD, "csrf": token})
    assert answer.status_code == 429 and COOKIE not in answer.headers.get("set-cookie", "")
    assert ("bob", "login_limited", None) in _audit(stack)
    stack.desk.sign_in("alice")  # another account is not locked out by bob's failures


def test_a_reviewer_cannot_manage_accounts_or_read_the_audit_log(stack: Stack) -> None:
    bob = stack.desk.sign_in("bob")
    csrf = csrf_of(bob.get("/").text)
    assert bob.get("/accounts").status_code == 403
    assert bob.get("/audit").status_code == 403
    for data in (
        {"op": "add", "name": "eve", "password": "long password", "role": "admin"},
        {"op": "remove", "name": "alice"},
        {"op": "passwd", "name": "alice", "password": "hijacked pw"},
    ):
        assert bob.post("/accounts", data={**data, "csrf": csrf}).status_code == 403
    accounts = stack.desk.desk.accounts
    assert accounts.get("eve") is None and accounts.verify("alice", PASSWORD) is not None
    alice = stack.desk.sign_in("alice")
    csrf = csrf_of(alice.get("/accounts").text)
    answer = alice.post(
        "/accounts", data={"op": "add", "name": "eve", "password": "long password", "csrf": csrf}
    )
    assert answer.status_code == 303 and accounts.get("eve") is not None
    assert alice.post("/accounts", data={"op": "remove", "name": "bob", "csrf": csrf}).status_code == 303
    assert bob.get("/").status_code == 303, "a removed account is signed out at once"
    assert "account_add" in alice.get("/audit").text


def test_the_item_flow_unlock_thumbnail_reveal_confirm_export_report(stack: Stack) -> None:
    original = astronaut_jpeg()
    record_id = stack.flag(original)
    alice = stack.desk.sign_in("alice")
    queue = alice.get("/?label=csam_suspect").text
    assert f'href="/item/{record_id}"' in queue

    page = alice.get(f"/item/{record_id}").text
    assert 'id="locked"' in page and "<img" not in page
    csrf = csrf_of(page)
    assert alice.post("/unlock", data={"passphrase": "not it at all", "csrf": csrf}).status_code == 403
    assert alice.post("/unlock", data={"passphrase": PASSPHRASE, "csrf": csrf}).status_code == 303
    page = alice.get(f"/item/{record_id}").text
    assert 'id="thumb"' in page and 'id="original"' not in page

    thumb = Image.open(io.BytesIO(alice.get(f"/media/{record_id}/thumb.jpg").content))
    assert thumb.mode == "L", "greyscale"
    sharp = Image.open(io.BytesIO(original)).convert("L").resize(thumb.size)
    assert laplacian_energy(np.asarray(thumb)) < 0.25 * laplacian_energy(np.asarray(sharp)), "blurred"
    assert alice.get(f"/media/{record_id}/original.jpg").status_code == 403, "not before a reveal"

    assert (
        alice.post(f"/item/{record_id}/reveal", data={"reason": "check the face", "csrf": csrf}).status_code
        == 303
    )
    assert ("alice", "reveal", record_id) in _audit(stack)
    shown = Image.open(io.BytesIO(alice.get(f"/media/{record_id}/original.jpg").content))
    assert shown.mode == "RGB" and np.asarray(shown).std(axis=2).mean() > 5, "in colour"

    bob = stack.desk.sign_in("bob")
    assert "Held by alice" in bob.get(f"/item/{record_id}").text
    answer = bob.post(
        f"/item/{record_id}/act",
        data={"action": "overturn", "reason": "fine", "csrf": csrf_of(bob.get("/").text)},
    )
    assert "alice%20holds%20this%20item" in answer.headers["location"]

    answer = alice.post(f"/item/{record_id}/act", data={"action": "confirm", "reason": "", "csrf": csrf})
    assert "needs%20a%20reason" in answer.headers["location"]
    assert stack.gateway.store.get(record_id).review is None  # type: ignore[union-attr]
    answer = alice.post(
        f"/item/{record_id}/act", data={"action": "confirm", "reason": "known image", "csrf": csrf}
    )
    assert answer.status_code == 303
    record = stack.gateway.store.get(record_id)
    assert record is not None and record.review == "confirmed" and record.reviewed_by == "alice"
    assert BankStore(stack.gateway.store.engine).find("deny", [("sha256", record.sha256)])

    package = alice.post(f"/item/{record_id}/export", data={"reason": "report to hotline", "csrf": csrf})
    assert package.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(package.content)) as zf:
        manifest = json.loads(zf.read("manifest.json"))
        assert zf.read(manifest["media"]["file"]) == original
    assert manifest["decision"]["sha256"] == hashlib.sha256(original).hexdigest()
    assert manifest["exported_by"] == "alice" and manifest["decision"]["labels"] == ["csam_suspect"]

    answer = alice.post(
        f"/item/{record_id}/act",
        data={"action": "report", "reference": "NCMEC-123", "reason": "filed", "csrf": csrf},
    )
    assert answer.status_code == 303 and "NCMEC-123" in alice.get(f"/item/{record_id}").text
    actions = [a for who, a, d in _audit(stack) if d == record_id]
    assert actions[:4] == ["report", "export", "confirm", "reveal"]


def test_a_decision_without_kept_bytes_shows_its_facts_and_says_so(stack: Stack) -> None:
    stack.scores.clear()
    stack.scores.update({"explicit": 0.9})  # nsfw: not among evidence_labels, passes by default
    answer = stack.gateway.post(astronaut_jpeg(), "image/jpeg")
    assert answer.status_code == 200 and answer.json()["labels"] == ["nsfw"]
    alice = stack.desk.sign_in("alice")
    page = alice.get(f"/item/{answer.json()['id']}").text
    assert 'id="no-bytes"' in page and answer.json()["sha256"] in page and "explicit 0.9" in page


def test_the_blur_strength_is_each_reviewers_own(stack: Stack) -> None:
    record_id = stack.flag(astronaut_jpeg())
    alice, bob = stack.desk.sign_in("alice"), stack.desk.sign_in("bob")
    for http in (alice, bob):
        csrf = csrf_of(http.get("/").text)
        assert http.post("/unlock", data={"passphrase": PASSPHRASE, "csrf": csrf}).status_code == 303
    csrf = csrf_of(alice.get("/").text)
    answer = alice.post("/prefs", data={"blur": "2", "back": f"/item/{record_id}", "csrf": csrf})
    assert answer.status_code == 303 and answer.headers["location"] == f"/item/{record_id}"
    assert (
        alice.post("/prefs", data={"blur": "3", "back": "//evil.example/", "csrf": csrf}).headers["location"]
        == "/"
    )

    def energy(http: httpx.Client) -> float:
        image = Image.open(io.BytesIO(http.get(f"/media/{record_id}/thumb.jpg").content))
        assert image.mode == "L"
        return laplacian_energy(np.asarray(image))

    assert energy(alice) > 2 * energy(bob), "alice chose a light blur; bob keeps the default"


@pytest.mark.parametrize("stack", [{"decode_sandbox": True}], indirect=True)
def test_an_animation_is_shown_as_still_frames_decoded_in_the_sandbox(stack: Stack) -> None:
    record_id = stack.flag(drawn_gif(), "image/gif")
    alice = stack.desk.sign_in("alice")
    csrf = csrf_of(alice.get("/").text)
    assert alice.post("/unlock", data={"passphrase": PASSPHRASE, "csrf": csrf}).status_code == 303
    assert stack.desk.desk.sandbox is not None and stack.desk.desk.sandbox.pids
    thumb = alice.get(f"/media/{record_id}/thumb.jpg")
    assert thumb.headers["content-type"] == "image/jpeg"
    strip = Image.open(io.BytesIO(thumb.content))
    assert strip.mode == "L" and getattr(strip, "n_frames", 1) == 1 and strip.width > 4 * strip.height
    assert alice.post(f"/item/{record_id}/reveal", data={"reason": "", "csrf": csrf}).status_code == 303
    shown = alice.get(f"/media/{record_id}/original.jpg")
    assert shown.headers["content-type"] == "image/jpeg", "frames, never the playable GIF"
    assert Image.open(io.BytesIO(shown.content)).mode == "RGB"
