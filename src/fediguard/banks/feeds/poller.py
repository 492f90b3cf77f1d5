"""The gateway's loop that polls every subscribed feed every ``feed_poll_s`` seconds."""

from __future__ import annotations

import asyncio
import logging

import httpx
from sqlalchemy import Engine

from fediguard.banks.feeds.subscriber import PollResult, Subscriptions

log = logging.getLogger("fediguard.feeds")


class FeedPoller:
    """Polls the subscriptions in a thread (blocking HTTP and database work), one feed after another."""

    def __init__(self, engine: Engine, interval_s: float, timeout_s: float = 30.0) -> None:
        self.subscriptions = Subscriptions(engine)
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="feed-poller")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _loop(self) -> None:
        while True:
            try:
                await asyncio.to_thread(self.poll_all)
            except Exception:
                log.exception("polling the feeds failed; trying again in %g s", self.interval_s)
            await asyncio.sleep(self.interval_s)

    def poll_all(self) -> dict[str, PollResult]:
        """Poll every subscription once (blocking)."""
        results: dict[str, PollResult] = {}
        with httpx.Client(timeout=self.timeout_s, follow_redirects=False) as client:
            for subscription in self.subscriptions.all():
                results[subscription.name] = self.subscriptions.poll(subscription, client)
        return results
