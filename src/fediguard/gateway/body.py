"""Reading an upload from a request: the raw body (pict-rs) or a multipart ``file`` field (older
clients), with the size limit enforced while reading and everything kept in memory (no spooling to
temporary files, whose names a hostile filename could influence)."""

from __future__ import annotations

from dataclasses import dataclass

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from fediguard.config import MEGABYTE


class BodyError(Exception):
    """The request's body cannot be read as an upload; ``size`` is its length as far as known
    (declared, or read before giving up), for the record."""

    def __init__(self, status: int, message: str, reason: str, size: int = 0) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.size = size


@dataclass(frozen=True)
class Upload:
    data: bytes
    media_type: str | None


def _too_large(limit: int, size: int) -> BodyError:
    return BodyError(
        413, f"body larger than max_body_mb ({limit / MEGABYTE:g} MB of 1024 x 1024 bytes)", "too_large", size
    )


async def read_upload(request: Request, limit: int) -> Upload:
    """The upload's bytes and media type. Raises BodyError (413 too large, 400 malformed), whose
    ``size`` is the declared Content-Length when there is one, else the bytes read."""
    declared = request.headers.get("content-length")
    length: int | None = None
    if declared is not None:
        try:
            length = int(declared)
        except ValueError as exc:
            raise BodyError(400, "invalid Content-Length", "malformed") from exc
        if length > limit:
            raise _too_large(limit, length)
    try:
        return await _read_body(request, limit)
    except BodyError as exc:
        if length is not None:
            exc.size = length
        raise


async def _read_body(request: Request, limit: int) -> Upload:
    content_type = request.headers.get("content-type")
    mime, options = parse_options_header(content_type or "")
    mime_text = mime.decode("latin-1").lower()
    if mime_text == "multipart/form-data":
        boundary = options.get(b"boundary")
        if not boundary:
            raise BodyError(400, "multipart body without a boundary", "malformed")
        return await _read_multipart(request, boundary, limit)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise _too_large(limit, len(body))
    return Upload(bytes(body), mime_text or None)


async def _read_multipart(request: Request, boundary: bytes, limit: int) -> Upload:
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
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit:
                raise _too_large(limit, received)
            parser.write(chunk)
        parser.finalize()
    except BodyError:
        raise
    except Exception as exc:  # python-multipart raises several types for malformed input
        raise BodyError(400, f"malformed multipart body: {exc}", "malformed", received) from exc
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
    raise BodyError(400, "multipart body has no 'file' field", "malformed", received)
