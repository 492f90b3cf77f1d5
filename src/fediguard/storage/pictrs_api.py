"""pict-rs's admin API, as far as fediguard uses it: purging a file by one of its aliases.

``POST /internal/purge?alias=ALIAS`` with the header ``X-Api-Token`` (pict-rs's ``server.api_key``,
env ``PICTRS__SERVER__API_KEY``; the internal endpoints are off without one) deletes the file
behind the alias with all its aliases and variants, and answers ``{"msg": "ok", "aliases": [...]}``
(pict-rs 0.4 and 0.5). Every failure is a :class:`PictrsError` with one line saying what happened.
"""

from __future__ import annotations

import logging
from urllib.parse import unquote, urlsplit

import httpx

from fediguard.storage.errors import SourceError

log = logging.getLogger("fediguard.storage")

MAX_ALIAS = 300


class PictrsError(SourceError):
    """pict-rs could not be asked, or refused (its answer or the reason in the message)."""


def alias_of(text: str) -> str:
    """The alias in what a reviewer pasted: an alias (``abc.webp``) or a media URL whose last path
    segment is one (``https://lemmy.example/pictrs/image/abc.webp?format=jpg``)."""
    text = text.strip()
    if "/" in text:
        text = unquote(urlsplit(text).path.rstrip("/").rsplit("/", 1)[-1])
    if not text or len(text) > MAX_ALIAS or any(c.isspace() or not c.isprintable() for c in text):
        raise PictrsError(
            "give the pict-rs alias (e.g. 0b1c…e7.webp, the last part of the image's URL), "
            f"at most {MAX_ALIAS} printable characters without spaces"
        )
    return text


class PictrsAdmin:
    """A client of one pict-rs server's internal API (``pictrs_url``, ``pictrs_api_key``)."""

    def __init__(self, url: str, api_key: str, timeout_s: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self._api_key = api_key
        self.timeout_s = timeout_s

    def __repr__(self) -> str:
        return f"PictrsAdmin(url={self.url!r}, api_key='***')"

    async def purge(self, alias: str) -> list[str]:
        """Purge the file behind ``alias``; returns the aliases pict-rs says it removed."""
        alias = alias_of(alias)
        target = f"{self.url}/internal/purge"
        try:
            async with httpx.AsyncClient(timeout=self.timeout_s) as client:
                answer = await client.post(
                    target, params={"alias": alias}, headers={"X-Api-Token": self._api_key}
                )
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise PictrsError(
                f"pict-rs at {self.url} (pictrs_url) could not be reached: {type(exc).__name__}: {exc}"
            ) from exc
        if answer.status_code in (401, 403):
            raise PictrsError(
                f"pict-rs at {self.url} refused the API key (HTTP {answer.status_code}): check "
                "pictrs_api_key against pict-rs's server.api_key"
            )
        if answer.status_code == 404:
            raise PictrsError(f"pict-rs at {self.url} knows no alias '{alias}' (HTTP 404)")
        if not answer.is_success:
            raise PictrsError(
                f"pict-rs at {self.url} answered HTTP {answer.status_code} to the purge of '{alias}': "
                f"{answer.text[:200]}"
            )
        try:
            body = answer.json()
            aliases = [str(a) for a in body.get("aliases", [])] if isinstance(body, dict) else []
        except ValueError:
            aliases = []
        return aliases or [alias]
