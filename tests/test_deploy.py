"""The Dockerfile and deploy/docker-compose.yml as written: Docker does not run here, so their
settings are read and a real gateway is started with them, and called as pict-rs would call it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import yaml

from fediguard.config import load_settings
from fediguard.gateway.auth import authenticate_client
from support.gateway import start_gateway
from support.images import drawn_png

ROOT = Path(__file__).resolve().parents[1]
ENV_FILE = {"FEDIGUARD_TOKEN": "0123456789abcdef0123456789abcdef", "PICTRS_API_KEY": "pictrs-api-key"}
"""The .env the compose file asks for."""
COMPOSE_NETWORK_PEER = "172.18.0.5"
"""Where pict-rs calls from on a compose network."""


def dockerfile_env() -> dict[str, str]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    env: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            env.update(pair.split("=", 1) for pair in line[4:].split())
    return env


def interpolated(value: str) -> str:
    return re.sub(r"\$\{(\w+)(?::\?[^}]*)?\}", lambda m: ENV_FILE[m.group(1)], value)


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "deploy" / "docker-compose.yml").read_text())
    return data


def container_env() -> dict[str, str]:
    fediguard = compose()["services"]["fediguard"]
    return {**dockerfile_env(), **{k: interpolated(str(v)) for k, v in fediguard["environment"].items()}}


def test_the_compose_example_configures_a_gateway_pict_rs_can_call(tmp_path: Path) -> None:
    pictrs = compose()["services"]["pictrs"]
    env = {k: interpolated(str(v)) for k, v in pictrs["environment"].items()}
    url = urlsplit(env["PICTRS__MEDIA__EXTERNAL_VALIDATION"])
    settings = load_settings(environ=container_env())
    assert url.hostname == "fediguard" and url.port == settings.port
    assert float(env["PICTRS__MEDIA__EXTERNAL_VALIDATION_TIMEOUT"]) > settings.deadline_s
    assert settings.keep_alive_s > 90, "idle connections outlive pict-rs's pool"
    assert pictrs["depends_on"]["fediguard"]["condition"] == "service_healthy"
    segment = url.path.rsplit("/", 1)[1]
    peer = COMPOSE_NETWORK_PEER
    assert authenticate_client(segment, peer, settings.client_tokens, settings.allowed_cidrs) == "pictrs"
    assert authenticate_client("IPADDR", peer, settings.client_tokens, settings.allowed_cidrs) == f"ip:{peer}"

    local = settings.model_copy(update={"data_dir": tmp_path, "detectors": ["hashlist"], "host": "127.0.0.1"})
    gw = start_gateway(local)
    try:
        answer = httpx.post(
            f"{gw.url}{url.path}", content=drawn_png(), headers={"Content-Type": "image/png"}, timeout=30
        )
    finally:
        gw.stop()
    assert answer.status_code == 200 and answer.json()["verdict"] == "pass", answer.text
