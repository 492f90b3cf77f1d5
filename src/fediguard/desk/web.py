"""The desk's web plumbing: templates, security headers, the signed-in reviewer of a request and
the checks every page, media URL and form goes through (session, role, CSRF)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response

from fediguard.desk.accounts import Account, Accounts
from fediguard.desk.sessions import COOKIE, Session, Sessions

HERE = Path(__file__).parent
SECURITY_HEADERS = {
    # Everything from this origin only: no CDN, no inline script, no framing, no referrer.
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

templates = Environment(
    loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(default=True), auto_reload=False
)


def _when(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if moment else "-"


templates.filters["when"] = _when


def secured(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def render(name: str, status: int = 200, **context: Any) -> Response:
    return secured(HTMLResponse(templates.get_template(name).render(**context), status_code=status))


@dataclass(frozen=True)
class Who:
    session: Session
    account: Account

    @property
    def name(self) -> str:
        return self.account.name


Handler = Callable[[Request, Who], Awaitable[Response]]


class Guard:
    """Turns handlers that need a signed-in reviewer into Starlette endpoints: pages without a valid
    session redirect to the login page, media and forms get 401; forms need the session's CSRF
    token (403 without); ``admin`` handlers answer 403 to reviewers."""

    def __init__(self, sessions: Sessions, accounts: Accounts) -> None:
        self.sessions = sessions
        self.accounts = accounts

    def who(self, request: Request) -> Who | None:
        session = self.sessions.get(request.cookies.get(COOKIE))
        if session is None:
            return None
        account = self.accounts.get(session.name)  # removed accounts are signed out at once
        if account is None:
            self.sessions.drop(session.sid)
            return None
        return Who(session, account)

    def page(self, handler: Handler, *, admin: bool = False, media: bool = False) -> Any:
        async def endpoint(request: Request) -> Response:
            who = await _threaded(self.who, request)
            if who is None:
                if media:
                    return secured(PlainTextResponse("sign in first", 401))
                return secured(RedirectResponse("/login", 303))
            if admin and not who.account.is_admin:
                return render("error.html", 403, who=who, message="Only admins may do this.")
            return secured(await handler(request, who))

        return endpoint

    def form(self, handler: Handler, *, admin: bool = False) -> Any:
        async def endpoint(request: Request) -> Response:
            who = await _threaded(self.who, request)
            if who is None:
                return secured(PlainTextResponse("sign in first", 401))
            form = await request.form()
            token = form.get("csrf")
            if not who.session.csrf_ok(token if isinstance(token, str) else None):
                return secured(PlainTextResponse("missing or wrong CSRF token", 403))
            if admin and not who.account.is_admin:
                return render("error.html", 403, who=who, message="Only admins may do this.")
            return secured(await handler(request, who))

        return endpoint


async def _threaded(fn: Callable[[Request], Who | None], request: Request) -> Who | None:
    import asyncio

    return await asyncio.to_thread(fn, request)


# --- small helpers of the desk's handlers ---------------------------------------------------------


def form_text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


def local_path(path: str) -> str:
    """A path on this desk to go back to (the page a form was on), never another site."""
    return path if path.startswith("/") and not path.startswith("//") and "\\" not in path else "/"


def as_number(text: str | None) -> float | None:
    try:
        return float(text) if text else None
    except ValueError:
        return None


def quoted(text: str) -> str:
    return quote(text[:300], safe="")


def back_to_item(decision_id: int, msg: str | None = None, err: str | None = None) -> Response:
    query = f"?msg={quoted(msg)}" if msg else f"?err={quoted(err)}" if err else ""
    return secured(RedirectResponse(f"/item/{decision_id}{query}", 303))
