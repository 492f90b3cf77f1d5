"""Running the desk under uvicorn, on its own address, beside the gateway in the same process."""

from __future__ import annotations

import asyncio
import socket

import uvicorn

from fediguard.config import Settings
from fediguard.gateway.server import checked_server, ensure_started
from fediguard.records import RecordStore


class DeskServer(uvicorn.Server):
    """uvicorn for the desk; beside a gateway it stops when the gateway does (only one server of a
    process can catch SIGINT/SIGTERM: the gateway's)."""

    def __init__(self, config: uvicorn.Config, companion: uvicorn.Server | None = None) -> None:
        super().__init__(config)
        self.companion = companion

    async def on_tick(self, counter: int) -> bool:
        if self.companion is not None and self.companion.should_exit:
            return True
        return await super().on_tick(counter)


def make_desk_server(
    settings: Settings, records: RecordStore | None = None, companion: uvicorn.Server | None = None
) -> DeskServer:
    from fediguard.desk.app import create_desk_app

    config = uvicorn.Config(
        create_desk_app(settings, records),
        host=settings.desk_host,
        port=settings.desk_port,
        log_level=settings.log_level.lower(),
        log_config=None,
        access_log=False,  # URLs name decisions; the audit log says who looked at what
        proxy_headers=settings.forwarded_allow_ips is not None,
        forwarded_allow_ips=settings.forwarded_allow_ips,
        lifespan="on",
        ssl_certfile=str(settings.tls_certfile) if settings.tls_certfile else None,
        ssl_keyfile=str(settings.tls_keyfile) if settings.tls_keyfile else None,
    )
    return DeskServer(config, companion)


def serve_all(settings: Settings, sock: socket.socket | None = None) -> None:
    """The gateway, and the desk beside it when ``desk`` is on, until SIGINT/SIGTERM."""
    gateway = checked_server(settings)
    if not settings.desk:
        gateway.run(sockets=[sock] if sock else None)
        ensure_started(gateway)
        return
    desk = make_desk_server(settings, companion=gateway)

    async def both() -> None:
        desk_task = asyncio.create_task(desk._serve())  # no signal handlers of its own: see DeskServer
        try:
            await gateway.serve(sockets=[sock] if sock else None)
        finally:
            desk.should_exit = True
            await desk_task

    asyncio.run(both())
    ensure_started(gateway)
