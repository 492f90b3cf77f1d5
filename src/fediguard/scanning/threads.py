"""A daemon thread that owns one Pipeline (one set of detector instances) and runs one call at a
time for async code. Shared by the in-process scanner and remote workers.

Daemon, because a detector stuck in a native call must not keep the process from exiting.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from typing import Any

from fediguard.scanning.pipeline import Pipeline, PipelineFactory


class ScannerThread:
    """One daemon thread that owns one Pipeline and runs one job at a time."""

    def __init__(self, name: str, make_pipeline: PipelineFactory) -> None:
        self.name = name
        self._inbox: queue.SimpleQueue[
            tuple[Callable[[Pipeline], Any], Callable[[Any, BaseException | None], None]] | None
        ] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._main, args=(make_pipeline,), name=name, daemon=True)
        self._thread.start()

    def _main(self, make_pipeline: PipelineFactory) -> None:
        pipeline: Pipeline | None = None
        while (item := self._inbox.get()) is not None:
            fn, done = item
            try:
                if pipeline is None:
                    pipeline = make_pipeline(self.name)
                value = fn(pipeline)
            except BaseException as exc:  # delivered to the awaiting task, which logs it
                done(None, exc)
            else:
                done(value, None)

    async def call(self, fn: Callable[[Pipeline], Any]) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()

        def _done(value: Any, exc: BaseException | None) -> None:
            def _set() -> None:
                if future.done():
                    return
                if exc is not None:
                    future.set_exception(exc)
                else:
                    future.set_result(value)

            loop.call_soon_threadsafe(_set)

        self._inbox.put((fn, _done))
        return await future

    def stop(self) -> None:
        self._inbox.put(None)
