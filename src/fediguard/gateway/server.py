"""Running the gateway under uvicorn."""

from __future__ import annotations

import socket

import uvicorn

from fediguard.config import Settings
from fediguard.errors import FediguardError
from fediguard.gateway.app import Gateway, create_app, open_records, spool_dir
from fediguard.metrics import Metrics
from fediguard.records.spool import Spool
from fediguard.scanning.service import ScanService


class _Server(uvicorn.Server):
    """uvicorn, telling the scan service the moment shutdown begins: remote workers cannot post
    results once the listening socket closes, so uploads waiting on them get their fail-policy
    answer at once instead of at their deadline, and workers' long-polls end instead of holding
    the shutdown for up to its grace period."""

    def __init__(self, config: uvicorn.Config, gateway: Gateway) -> None:
        super().__init__(config)
        self.gateway = gateway

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.gateway.service.queue.close_remote("the gateway is shutting down")
        await super().shutdown(sockets)


def make_server(settings: Settings, service: ScanService | None = None) -> uvicorn.Server:
    app = create_app(settings, service)
    config = uvicorn.Config(
        app,
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
        # pict-rs keeps pooled connections ~90 s and does not retry an upload on one the server has
        # just closed: idle connections outlive its pool (uvicorn's own default is 5 s).
        timeout_keep_alive=settings.keep_alive_s,
        # HTTPS without a reverse proxy, e.g. for workers that connect over the internet.
        ssl_certfile=str(settings.tls_certfile) if settings.tls_certfile else None,
        ssl_keyfile=str(settings.tls_keyfile) if settings.tls_keyfile else None,
    )
    return _Server(config, app.state.gateway)


def checked_server(settings: Settings) -> uvicorn.Server:
    """The gateway's server, once its records database and spool folder were found writable:
    raises RecordError (naming the setting) when they are not, since no decision may be lost."""
    Spool(spool_dir(settings)).probe()
    store = open_records(settings)
    return make_server(settings, ScanService(settings, store, Metrics()))


def serve(settings: Settings, sock: socket.socket | None = None) -> None:
    """Serve until SIGINT/SIGTERM (the gateway alone; ``fediguard serve`` runs the desk beside it)."""
    server = checked_server(settings)
    server.run(sockets=[sock] if sock else None)
    ensure_started(server)


def ensure_started(server: uvicorn.Server) -> None:
    if not server.started:
        raise FediguardError("the gateway did not start; the log above says why")
