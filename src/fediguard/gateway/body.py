"""Reading an upload from a request: the raw body (pict-rs) or a multipart ``file`` field (older
clients), with the size limit enforced while reading and everything kept in memory (no spooling to
temporary files, whose names a hostile filename could influence).

Reading is bounded in time too: a client that sends nothing for ``idle_s`` seconds, or has not sent
its whole body within ``total_s``, is not waited for (a slow sender cannot hold a connection and
its memory for ever); a client that hangs up mid-body ends the read at once. Either is a
:class:`BodyError` the gateway records, like a body too large.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from fediguard.config import MEGABYTE

TOO_LARGE = "too_large"
MALFORMED = "malformed"
BODY_TIMEOUT = "body_timeout"
CLIENT_DISCONNECT = "client_disconnect"


class BodyError(Exception):
    """The request's body cannot be read as an upload; ``size`` is its length as far as known
    (declared, or read before giving up), for the record. ``reason`` is one of :data:`TOO_LARGE`,
    :data:`MALFORMED`, :data:`BODY_TIMEOUT` and :data:`CLIENT_DISCONNECT`."""

    def __init__(self, status: int, message: str, reason: str, size: int = 0) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.size = size


@dataclass(frozen=True)
class Upload:
    data: bytes
    media_type: str | None


@dataclass(frozen=True)
class BodyLimits:
    """How much a body may hold and how long it may take to arrive."""

    max_bytes: int
    idle_s: float = 10.0
    """Longest wait for the next bytes."""
    total_s: float = 20.0
    """Longest wait for the whole body."""


def _too_large(limit: int, size: int) -> BodyError:
    return BodyError(
        413, f"body larger than max_body_mb ({limit / MEGABYTE:g} MB of 1024 x 1024 bytes)", TOO_LARGE, size
    )


async def read_upload(request: Request, limits: BodyLimits) -> Upload:
    """The upload's bytes and media type. Raises BodyError (413 too large, 400 malformed, 408 too
    slow, 499 client gone), whose ``size`` is the declared Content-Length when there is one, else
    the bytes read."""
    declared = request.headers.get("content-length")
    length: int | None = None
    if declared is not None:
        try:
            length = int(declared)
        except ValueError as exc:
            raise BodyError(400, "invalid Content-Length", MALFORMED) from exc
        if length > limits.max_bytes:
            raise _too_large(limits.max_bytes, length)
    try:
        return await _read_body(request, limits)
    except BodyError as exc:
        if length is not None:
            exc.size = length
        raise


async def _chunks(request: Request, limits: BodyLimits) -> AsyncIterator[bytes]:
    """The body's chunks as they arrive, within the time limits (ASGI ``receive`` directly: the
    waits are cancelled on time-out, which an async generator like ``Request.stream`` would not
    survive)."""
    loop = asyncio.get_running_loop()
    ends = loop.time() + limits.total_s
    received = 0
    while True:
        left = ends - loop.time()
        try:
            async with asyncio.timeout(max(0.0, min(limits.idle_s, left))):
                message = await request.receive()
        except TimeoutError:
            if left <= limits.idle_s:
                why = f"the body did not arrive within body_timeout_s ({limits.total_s:g} s)"
            else:
                why = f"no bytes of the body for body_idle_timeout_s ({limits.idle_s:g} s)"
            raise BodyError(408, f"{why}; {received} bytes arrived", BODY_TIMEOUT, received) from None
        if message["type"] == "http.disconnect":
            raise BodyError(499, f"client disconnected after {received} bytes", CLIENT_DISCONNECT, received)
        chunk = message.get("body", b"")
        if chunk:
            received += len(chunk)
            yield chunk
        if not message.get("more_body", False):
            return


async def _read_body(request: Request, limits: BodyLimits) -> Upload:
    content_type = request.headers.get("content-type")
    mime, options = parse_options_header(content_type or "")
    mime_text = mime.decode("latin-1").lower()
    if mime_text == "multipart/form-data":
        boundary = options.get(b"boundary")
        if not boundary:
            raise BodyError(400, "multipart body without a boundary", MALFORMED)
        return await _read_multipart(request, boundary, limits)
    body = bytearray()
    async for chunk in _chunks(request, limits):
        body += chunk
        if len(body) > limits.max_bytes:
            raise _too_large(limits.max_bytes, len(body))
    return Upload(bytes(body), mime_text or None)


async def _read_multipart(request: Request, boundary: bytes, limits: BodyLimits) -> Upload:
    parts: list[dict[str, object]] = []
    current: dict[str, object] = {}
    header_field = bytearray()
    header_value = bytearray()
    data = bytearray()

    def on_part_begin() -> None:
        nonlocal data
        current.clear()
        current["headers"] = {}
        data = bytearray()

    def on_header_field(buf: bytes, start: int, end: int) -> None:
        header_field.extend(buf[start:end])

    def on_header_value(buf: bytes, start: int, end: int) -> None:
        header_value.extend(buf[start:end])

    def on_header_end() -> None:
        headers = current["headers"]
        assert isinstance(headers, dict)
        headers[bytes(header_field).lower()] = bytes(header_value)
        header_field.clear()
        header_value.clear()

    def on_part_data(buf: bytes, start: int, end: int) -> None:
        data.extend(buf[start:end])

    def on_part_end() -> None:
        parts.append({"headers": dict(current["headers"]), "data": bytes(data)})  # type: ignore[call-overload]

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },
    )
    received = 0
    try:
        async for chunk in _chunks(request, limits):
            received += len(chunk)
            if received > limits.max_bytes:
                raise _too_large(limits.max_bytes, received)
            parser.write(chunk)
        parser.finalize()
    except BodyError:
        raise
    except Exception as exc:  # python-multipart raises several types for malformed input
        raise BodyError(400, f"malformed multipart body: {exc}", MALFORMED, received) from exc
    for part in parts:
        headers = part["headers"]
        assert isinstance(headers, dict)
        _, disp = parse_options_header(headers.get(b"content-disposition", b""))
        if disp.get(b"name") == b"file":
            # The filename, hostile or not, is never used: nothing is written under any name.
            part_type, _ = parse_options_header(headers.get(b"content-type", b""))
            payload = part["data"]
            assert isinstance(payload, bytes)
            return Upload(payload, part_type.decode("latin-1").lower() or None)
    raise BodyError(400, "multipart body has no 'file' field", MALFORMED, received)
