"""The review desk's ASGI app: sign-in, the queue, an item with its actions, the media (blurred
and grey unless revealed), unlocking the sealed evidence, and for admins accounts and the audit log."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from fediguard.banks.review import DenyConflict
from fediguard.config import Settings
from fediguard.desk.accounts import DEFAULT_BLUR, ROLES, AccountError, Accounts
from fediguard.desk.actions import DeskActions
from fediguard.desk.audit import AuditLog
from fediguard.desk.flags import DeskFlags
from fediguard.desk.queue import QUEUE_LABELS, SOURCES, STATES, DeskQueue, QueueFilter
from fediguard.desk.sessions import COOKIE, LoginLimiter, Sessions, load_secret
from fediguard.desk.thumbs import THUMB_DECODE_SIDE, placeholder, revealed, thumbnail
from fediguard.desk.web import (
    HERE,
    Guard,
    Who,
    as_number,
    back_to_item,
    form_text,
    local_path,
    quoted,
    render,
    secured,
)  # fmt: skip
from fediguard.errors import FediguardError, MediaError
from fediguard.evidence import EvidenceKeyError, EvidenceVault, unlock
from fediguard.media.decode import decode
from fediguard.media.frames import DecodedMedia
from fediguard.media.sandbox import DecoderPool
from fediguard.records import RecordStore
from fediguard.scanning.pipeline import media_limits, sandbox_limits
from fediguard.storage.pictrs_api import PictrsAdmin

log = logging.getLogger("fediguard.desk")
PAGE = 50
_STATIC = {"desk.js": "text/javascript", "desk.css": "text/css"}


class Desk:
    def __init__(self, settings: Settings, records: RecordStore, own_records: bool = False) -> None:
        self.settings = settings
        self._own_records = own_records
        self.sessions = Sessions(
            load_secret(settings.desk_secret, settings.data_dir), settings.desk_session_s
        )
        self.limiter = LoginLimiter()
        self.vault = EvidenceVault(
            settings.effective_evidence_dir, None, settings.evidence_retention_days * 86400
        )
        self.sandbox: DecoderPool | None = None
        self._open(records)

    def _open(self, records: RecordStore) -> None:
        self.records = records
        self.accounts = Accounts(records.engine)
        self.audit = AuditLog(records.engine)
        self.queue = DeskQueue(records.engine, self.settings.desk_claim_s)
        self.flags = DeskFlags(records.engine)
        s = self.settings
        pictrs = (
            PictrsAdmin(s.pictrs_url, s.pictrs_api_key.get_secret_value())
            if s.pictrs_url and s.pictrs_api_key
            else None
        )
        self.actions = DeskActions(records, self.audit, self.queue, pictrs)
        self.guard = Guard(self.sessions, self.accounts)

    @contextlib.asynccontextmanager
    async def lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        if self.settings.decode_sandbox:
            self.sandbox = DecoderPool(1, sandbox_limits(self.settings))
            await asyncio.to_thread(self.sandbox.start)
        log.info("review desk ready on http://%s:%d/", self.settings.desk_host, self.settings.desk_port)
        try:
            yield
        finally:
            if self.sandbox is not None:
                await asyncio.to_thread(self.sandbox.close)
            if self._own_records:
                self.records.close()

    # --- signing in ----------------------------------------------------------------------------

    async def login_page(self, request: Request) -> Response:
        return render("login.html", token=self.sessions.login_token(), error=None)

    async def login(self, request: Request) -> Response:
        form = await request.form()
        name, password = form_text(form, "name"), form_text(form, "password")
        address = request.client.host if request.client else "-"
        if not self.sessions.login_token_ok(form_text(form, "csrf")):
            return secured(PlainTextResponse("missing or wrong CSRF token: reload the sign-in page", 403))
        if not self.limiter.allowed(name, address):
            await asyncio.to_thread(self.audit.record, name or "-", "login_limited", f"from {address}")
            return render("login.html", 429, token=self.sessions.login_token(),
                          error="Too many failed sign-ins: wait a quarter of an hour.")  # fmt: skip
        account = await asyncio.to_thread(self.accounts.verify, name, password)
        if account is None:
            self.limiter.failed(name, address)
            await asyncio.to_thread(self.audit.record, name or "-", "login_failed", f"from {address}")
            return render(
                "login.html", 401, token=self.sessions.login_token(), error="Wrong name or password."
            )
        cookie, _session = self.sessions.create(account.name)
        await asyncio.to_thread(self.audit.record, account.name, "login", f"from {address}")
        response = RedirectResponse("/", 303)
        response.set_cookie(
            COOKIE, cookie, max_age=int(self.settings.desk_session_s), httponly=True, samesite="strict",
            secure=request.url.scheme == "https", path="/",
        )  # fmt: skip
        return secured(response)

    async def logout(self, request: Request, who: Who) -> Response:
        self.sessions.drop(who.session.sid)
        await asyncio.to_thread(self.audit.record, who.name, "logout")
        response = RedirectResponse("/login", 303)
        response.delete_cookie(COOKIE, path="/")
        return response

    # --- the queue and an item -----------------------------------------------------------------

    async def queue_page(self, request: Request, who: Who) -> Response:
        q = request.query_params
        label = q.get("label") if q.get("label") in QUEUE_LABELS else None
        source = q.get("source") if q.get("source") in SOURCES else None
        state = q.get("state") if q.get("state") in STATES else "open"
        hours = as_number(q.get("hours"))
        since = datetime.now(UTC) - timedelta(hours=hours) if hours else None
        before = int(q["before"]) if q.get("before", "").isdigit() else None
        f = QueueFilter(label, source, q.get("client") or None, since, None, state or "open", before)
        items, next_before = await asyncio.to_thread(self.queue.page, f, PAGE)
        counts = await asyncio.to_thread(self.flags.counts)
        filters = {"label": label or "", "source": source or "", "client": f.client or "",
                   "hours": q.get("hours", ""), "state": state}  # fmt: skip
        return render(
            "queue.html", who=who, items=items, next_before=next_before, filters=filters,
            labels=QUEUE_LABELS, sources=SOURCES, states=STATES, now=datetime.now(UTC), counts=counts,
        )  # fmt: skip

    async def item_page(self, request: Request, who: Who) -> Response:
        decision_id = int(request.path_params["id"])
        record = await asyncio.to_thread(self.records_get, decision_id)
        if record is None:
            return render("error.html", 404, who=who, message=f"No decision {decision_id}.")
        held_by = await asyncio.to_thread(self.queue.claim, decision_id, who.name)
        item = await asyncio.to_thread(self.queue.get, decision_id)
        history = await asyncio.to_thread(self.audit.recent, 50, None, decision_id)
        kept = await asyncio.to_thread(self.vault.has, record.sha256)
        following = await asyncio.to_thread(self.queue.next_open, decision_id, who.name)
        published = await asyncio.to_thread(self.actions.published_banks)
        return render(
            "item.html", who=who, record=record, item=item, held_by=held_by, history=history, kept=kept,
            published=published, pictrs=self.actions.pictrs is not None,
            unlocked=who.session.identity is not None, revealed=decision_id in who.session.revealed,
            message=request.query_params.get("msg"), error=request.query_params.get("err"),
            following=following,
        )  # fmt: skip

    def records_get(self, decision_id: int) -> Any:
        return self.records.get(decision_id)

    async def act(self, request: Request, who: Who) -> Response:
        decision_id = int(request.path_params["id"])
        form = await request.form()
        action, reason = form_text(form, "action"), form_text(form, "reason")
        held_by = await asyncio.to_thread(self.queue.claim, decision_id, who.name)
        if held_by is not None and action != "release":
            return back_to_item(decision_id, err=f"{held_by} holds this item; nothing was done")
        try:
            if action in ("confirm", "overturn"):
                review = "confirmed" if action == "confirm" else "overturned"
                into = form_text(form, "publish_into") if form_text(form, "publish") == "1" else None
                if form_text(form, "publish") == "1" and not into:
                    return back_to_item(decision_id, err="publish: choose the published bank to confirm into")
                msg = await asyncio.to_thread(
                    self.actions.review, decision_id, review, reason, who.name, into
                )
            elif action == "remove":
                msg = await self.actions.remove(decision_id, reason, who.name)
            elif action == "purge":
                msg = await self.actions.purge(decision_id, form_text(form, "alias"), reason, who.name)
            elif action == "report":
                ref = form_text(form, "reference")
                msg = await asyncio.to_thread(self.actions.report, decision_id, ref, reason, who.name)
            elif action == "release":
                await asyncio.to_thread(self.queue.release, decision_id, who.name)
                return secured(RedirectResponse("/", 303))
            else:
                return back_to_item(decision_id, err=f"unknown action {action!r}")
        except DenyConflict as exc:
            return back_to_item(decision_id, err=str(exc).splitlines()[0])
        except FediguardError as exc:
            return back_to_item(decision_id, err=str(exc))
        if action in ("confirm", "overturn") and form_text(form, "next") == "1":
            following = await asyncio.to_thread(self.queue.next_open, decision_id, who.name)
            if following is not None:
                return secured(RedirectResponse(f"/item/{following}?msg={quoted(msg)}", 303))
        return back_to_item(decision_id, msg=msg)

    async def reveal(self, request: Request, who: Who) -> Response:
        decision_id = int(request.path_params["id"])
        if who.session.identity is None:
            return back_to_item(decision_id, err="unlock the evidence first")
        reason = " ".join(form_text(await request.form(), "reason").split()) or "-"
        who.session.revealed.add(decision_id)
        await asyncio.to_thread(self.audit.record, who.name, "reveal", reason, decision_id)
        return back_to_item(decision_id)

    async def export(self, request: Request, who: Who) -> Response:
        decision_id = int(request.path_params["id"])
        form = await request.form()
        try:
            media = await self._bytes(who, decision_id) if who.session.identity is not None else None
            package = await asyncio.to_thread(
                self.actions.export, decision_id, form_text(form, "reason"), who.name, media
            )
        except FediguardError as exc:
            return back_to_item(decision_id, err=str(exc))
        headers = {"Content-Disposition": f'attachment; filename="fediguard-evidence-{decision_id}.zip"'}
        return Response(package, media_type="application/zip", headers=headers)

    # --- media -----------------------------------------------------------------------------------

    async def _bytes(self, who: Who, decision_id: int) -> bytes | None:
        record = await asyncio.to_thread(self.records_get, decision_id)
        if record is None or not record.sha256 or who.session.identity is None:
            return None
        data: bytes | None = await asyncio.to_thread(self.vault.open, record.sha256, who.session.identity)
        return data

    async def _decoded(self, who: Who, decision_id: int, *, small: bool = False) -> DecodedMedia | None:
        data = await self._bytes(who, decision_id)
        if data is None:
            return None
        limits = media_limits(self.settings)
        if small:
            limits = replace(limits, max_frame_side=min(limits.max_frame_side, THUMB_DECODE_SIDE))
        try:
            if self.sandbox is not None:
                sandbox = self.sandbox
                return await asyncio.to_thread(lambda: sandbox.decode(data, limits=limits))
            return await asyncio.to_thread(lambda: decode(data, limits=limits))
        except MediaError as exc:
            log.warning("desk: decision %d cannot be shown: %s", decision_id, exc)
            return None

    async def thumb(self, request: Request, who: Who) -> Response:
        try:
            media = await self._decoded(who, int(request.path_params["id"]), small=True)
        except EvidenceKeyError:
            media = None
        image = await asyncio.to_thread(thumbnail, media, who.account.blur) if media else placeholder()
        return Response(image, media_type="image/jpeg")

    async def original(self, request: Request, who: Who) -> Response:
        decision_id = int(request.path_params["id"])
        if decision_id not in who.session.revealed:
            return PlainTextResponse("reveal this item first (the reveal is logged)", 403)
        media = await self._decoded(who, decision_id)
        image = await asyncio.to_thread(revealed, media) if media else placeholder()
        return Response(image, media_type="image/jpeg")

    # --- the evidence key, preferences -----------------------------------------------------------

    async def unlock_key(self, request: Request, who: Who) -> Response:
        form = await request.form()
        secret = form_text(form, "passphrase")
        try:
            who.session.identity = await asyncio.to_thread(unlock, self.vault.folder, secret)
        except EvidenceKeyError as exc:
            await asyncio.to_thread(self.audit.record, who.name, "unlock_failed", str(exc))
            return render("error.html", 403, who=who, message=str(exc))
        await asyncio.to_thread(
            self.audit.record, who.name, "unlock", "evidence key unlocked for this session"
        )
        return RedirectResponse(local_path(form_text(form, "back")), 303)

    async def lock_key(self, request: Request, who: Who) -> Response:
        who.session.identity = None
        who.session.revealed.clear()
        await asyncio.to_thread(self.audit.record, who.name, "lock")
        return RedirectResponse("/", 303)

    async def prefs(self, request: Request, who: Who) -> Response:
        form = await request.form()
        blur = as_number(form_text(form, "blur"))
        strength = int(blur if blur is not None else DEFAULT_BLUR)
        await asyncio.to_thread(self.accounts.set_blur, who.name, strength)
        return RedirectResponse(local_path(form_text(form, "back")), 303)

    # --- the banks' alerts, retroactive matches, flagged swept objects ----------------------------

    async def flags_page(self, request: Request, who: Who) -> Response:
        alerts = await asyncio.to_thread(self.flags.alerts)
        found = await asyncio.to_thread(self.flags.rematches)
        swept = await asyncio.to_thread(self.flags.swept)
        q = request.query_params
        return render(
            "flags.html", who=who, alerts=alerts, rematches=found, swept=swept,
            message=q.get("msg"), error=q.get("err"),
        )  # fmt: skip

    async def alert_answer(self, request: Request, who: Who) -> Response:
        alert_id = int(request.path_params["id"])
        form = await request.form()
        alert = await asyncio.to_thread(self.flags.alert, alert_id)
        try:
            if alert is None:
                raise FediguardError(f"no alert {alert_id}")
            answer = form_text(form, "answer")
            msg = await asyncio.to_thread(
                self.actions.answer_alert, alert, answer, form_text(form, "reason"), who.name
            )
        except FediguardError as exc:
            return secured(RedirectResponse(f"/flags?err={quoted(str(exc))}", 303))
        return secured(RedirectResponse(f"/flags?msg={quoted(msg)}", 303))

    # --- admins ----------------------------------------------------------------------------------

    async def audit_page(self, request: Request, who: Who) -> Response:
        before = request.query_params.get("before", "")
        entries = await asyncio.to_thread(self.audit.recent, 200, int(before) if before.isdigit() else None)
        return render("audit.html", who=who, entries=entries)

    async def accounts_page(self, request: Request, who: Who) -> Response:
        found = await asyncio.to_thread(self.accounts.all)
        q = request.query_params
        return render(
            "accounts.html", who=who, accounts=found, roles=ROLES, message=q.get("msg"), error=q.get("err")
        )

    async def accounts_change(self, request: Request, who: Who) -> Response:
        form = await request.form()
        op, name = form_text(form, "op"), form_text(form, "name")
        try:
            if op == "add":
                role = form_text(form, "role") or "reviewer"
                await asyncio.to_thread(self.accounts.add, name, form_text(form, "password"), role)
                detail = f"{name} ({role})"
            elif op == "remove":
                if name == who.name:
                    raise AccountError("you cannot remove your own account here")
                await asyncio.to_thread(self.accounts.remove, name)
                self.sessions.drop_account(name)
                detail = name
            elif op == "passwd":
                await asyncio.to_thread(self.accounts.set_password, name, form_text(form, "password"))
                detail = name
            else:
                raise AccountError(f"unknown operation {op!r}")
        except FediguardError as exc:
            return RedirectResponse(f"/accounts?err={quoted(str(exc))}", 303)
        await asyncio.to_thread(self.audit.record, who.name, f"account_{op}", detail)
        return RedirectResponse(f"/accounts?msg={quoted(f'{op} {name}: done')}", 303)

    async def static(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in _STATIC:
            return PlainTextResponse("not found", 404)
        return secured(FileResponse(HERE / "static" / name, media_type=_STATIC[name]))

    def routes(self) -> list[Route]:
        g = self.guard
        return [
            Route("/login", self.login_page, methods=["GET"]),
            Route("/login", self.login, methods=["POST"]),
            Route("/logout", g.form(self.logout), methods=["POST"]),
            Route("/", g.page(self.queue_page), methods=["GET"]),
            Route("/item/{id:int}", g.page(self.item_page), methods=["GET"]),
            Route("/item/{id:int}/act", g.form(self.act), methods=["POST"]),
            Route("/item/{id:int}/reveal", g.form(self.reveal), methods=["POST"]),
            Route("/item/{id:int}/export", g.form(self.export), methods=["POST"]),
            Route("/media/{id:int}/thumb.jpg", g.page(self.thumb, media=True), methods=["GET"]),
            Route("/media/{id:int}/original.jpg", g.page(self.original, media=True), methods=["GET"]),
            Route("/unlock", g.form(self.unlock_key), methods=["POST"]),
            Route("/lock", g.form(self.lock_key), methods=["POST"]),
            Route("/prefs", g.form(self.prefs), methods=["POST"]),
            Route("/flags", g.page(self.flags_page), methods=["GET"]),
            Route("/alerts/{id:int}", g.form(self.alert_answer, admin=True), methods=["POST"]),
            Route("/audit", g.page(self.audit_page, admin=True), methods=["GET"]),
            Route("/accounts", g.page(self.accounts_page, admin=True), methods=["GET"]),
            Route("/accounts", g.form(self.accounts_change, admin=True), methods=["POST"]),
            Route("/static/{name}", self.static, methods=["GET"]),
        ]


def create_desk_app(settings: Settings, records: RecordStore | None = None) -> Starlette:
    """The desk app; without ``records`` it opens the records database at start-up."""
    if records is None:
        desk = Desk(settings, RecordStore(settings.effective_database_url), own_records=True)
    else:
        desk = Desk(settings, records)
    app = Starlette(routes=desk.routes(), lifespan=desk.lifespan)
    app.state.desk = desk
    return app
