"""Process-wide logging set-up: one plain line per event, to stderr; and :func:`shown`, which every
name from storage (and every other text an outsider chose) passes through before it is logged."""

from __future__ import annotations

import logging
import sys


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Third-party chatter stays at WARNING unless the admin asks for DEBUG.
    for name in ("uvicorn.access", "httpx", "httpcore", "botocore", "asyncssh", "alembic"):
        logging.getLogger(name).setLevel(level if level == "DEBUG" else "WARNING")


def shown(text: str) -> str:
    """``text`` as it may appear in a log line, a message or on a terminal: like ``repr`` without
    the quotes, so a hostile file name can neither forge a log line nor drive the terminal.

    A backslash is doubled; a control or other unprintable character (newline, ANSI ESC, DEL,
    U+2028, a bidi override...) is written as its escape (``\\n``, ``\\x1b``, ``\\u2028``); a byte
    that is not UTF-8 (a file name decodes it to a surrogate) as ``\\xNN``. Printable text, accents
    and every script included, is kept as it is."""
    if "\\" not in text and text.isprintable():
        return text
    return "".join(_shown_char(c) for c in text)


def _shown_char(char: str) -> str:
    if char == "\\":
        return "\\\\"
    if char.isprintable():
        return char
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # os.fsdecode's stand-in for the byte code - 0xDC00
        return f"\\x{code - 0xDC00:02x}"
    return repr(char)[1:-1]
