"""One asyncio pattern both ends of the worker protocol need: wait for something unless something
else happens first (the worker is told to stop; the gateway's worker hangs up)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


async def unless(work: Coroutine[Any, Any, T | None], interrupt: Coroutine[Any, Any, Any]) -> T | None:
    """``work``'s result, or None when ``interrupt`` finishes first (``work`` is then cancelled)."""
    task = asyncio.ensure_future(work)
    other = asyncio.ensure_future(interrupt)
    try:
        await asyncio.wait({task, other}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        other.cancel()
    if not task.done():
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return None
    return task.result()
