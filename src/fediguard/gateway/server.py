"""Running the gateway under uvicorn."""

from __future__ import annotations

import socket

import uvicorn

from fediguard.config import Settings
from fediguard.gateway.app import create_app
from fediguard.scanning.service import ScanService


def make_server(settings: Settings, service: ScanService | None = None) -> uvicorn.Server:
    config = uvicorn.Config(
        create_app(settings, service),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        log_config=None,  # fediguard.logs configures logging once for the whole process
        access_log=False,  # one line per decision is logged instead
        proxy_headers=settings.forwarded_allow_ips is not None,
        forwarded_allow_ips=settings.forwarded_allow_ips,
        # In-flight uploads finish (or get their fail-policy answer) before the process exits.
        timeout_graceful_shutdown=int(settings.deadline_s) + 2,
        lifespan="on",
    )
    return uvicorn.Server(config)


def serve(settings: Settings, sock: socket.socket | None = None) -> None:
    """Serve until SIGINT/SIGTERM."""
    server = make_server(settings)
    server.run(sockets=[sock] if sock else None)
