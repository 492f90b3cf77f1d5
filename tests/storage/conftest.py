"""Real test servers for the storage sources: Ceph radosgw (S3) and OpenSSH (SFTP).

Each starts once per session. A missing server binary skips its tests locally but fails them
under CI=true, so a missing install step (.ci/install-services.sh) cannot hide behind skips.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

try:  # tests/ is not a package today; keep working if it becomes one
    from servers import radosgw, sshd
except ImportError:  # pragma: no cover
    from tests.servers import radosgw, sshd


def unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: .ci/install-services.sh must install it)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[radosgw.RadosGW]:
    """A radosgw endpoint: .endpoint_url, .access_key, .secret_key, .region."""
    missing = radosgw.missing_binaries()
    if missing:
        unavailable(f"radosgw not installed (missing {', '.join(missing)})")
    server = radosgw.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def s3_admin(s3_server: radosgw.RadosGW) -> Any:
    """A plain boto3 client on the test server, to arrange objects behind a source's back."""
    return boto3.client(
        "s3",
        endpoint_url=s3_server.endpoint_url,
        region_name=s3_server.region,
        aws_access_key_id=s3_server.access_key,
        aws_secret_access_key=s3_server.secret_key,
        config=Config(s3={"addressing_style": "path"}, max_pool_connections=16),
    )


@pytest.fixture
def s3_bucket(s3_admin: Any) -> str:
    """A fresh, empty bucket for one test (left for the throwaway cluster to drop at the end)."""
    name = f"t-{uuid.uuid4().hex[:16]}"
    s3_admin.create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="session")
def sshd_server() -> Iterator[sshd.SSHServer]:
    """An sshd: .host, .port, .user, .key_path, .known_hosts; .make_dir(name) for fresh folders."""
    missing = sshd.missing_binaries()
    if missing:
        unavailable(f"openssh-server not installed (missing {', '.join(missing)})")
    server = sshd.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def ssh_dir(sshd_server: sshd.SSHServer) -> Path:
    """A fresh folder on the SSH server (same machine), owned by the login user."""
    return sshd_server.make_dir(uuid.uuid4().hex)
