"""A throwaway single-node Ceph cluster with radosgw: a real S3 endpoint on 127.0.0.1.

In-memory object store, no cephx; ready in ~1-2 s. Recipe and pitfalls: shared/TESTING.md.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import textwrap
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from ._proc import ServerStartError, free_port, kill_pid, port_open, read_pid, run, tail, wait_until

BINARIES = (
    "/usr/bin/ceph-mon",
    "/usr/bin/ceph-osd",
    "/usr/bin/radosgw",
    "/usr/bin/radosgw-admin",
    "/usr/bin/monmaptool",
    "/usr/bin/ceph",
)
ADMIN_TIMEOUT = 30.0
ACCESS_KEY = "FEDIGUARDTESTKEY0001"
SECRET_KEY = "fediguard-test-secret-0123456789abcdefghij"


@dataclass
class RadosGW:
    endpoint_url: str
    access_key: str
    secret_key: str
    region: str
    workdir: Path
    pid_files: list[Path] = field(default_factory=list)

    def stop(self) -> None:
        """kill -9 the three daemons by PID (memstore: nothing to flush), then drop the temp dir."""
        for pid_file in self.pid_files:
            pid = read_pid(pid_file)
            if pid is not None:
                kill_pid(pid)
        shutil.rmtree(self.workdir, ignore_errors=True)


def missing_binaries() -> list[str]:
    return [b for b in BINARIES if not Path(b).exists()]


def start(attempts: int = 2) -> RadosGW:
    """Start a cluster; retried once because a start can race (port taken, mon/osd handshake)."""
    last: ServerStartError | None = None
    for _ in range(attempts):
        workdir = Path(tempfile.mkdtemp(prefix="fediguard-rgw-"))
        try:
            return _start_in(workdir)
        except ServerStartError as exc:
            last = exc
    assert last is not None
    raise last


def _conf(workdir: Path, fsid: str, mon_port: int, rgw_port: int) -> str:
    d = workdir
    return textwrap.dedent(f"""\
        [global]
        fsid = {fsid}
        mon host = [v1:127.0.0.1:{mon_port}]
        public addr = 127.0.0.1
        cluster addr = 127.0.0.1
        ms bind msgr2 = false
        auth cluster required = none
        auth service required = none
        auth client required = none
        auth supported = none
        osd pool default size = 1
        osd pool default min size = 1
        osd pool default pg num = 1
        osd pool default pgp num = 1
        osd pool default pg autoscale mode = off
        # One OSD sits straight under the root with no host bucket: replicate across OSDs, not hosts,
        # or every placement group maps to no OSD and radosgw waits forever for its pools.
        osd crush chooseleaf type = 0
        mon allow pool size one = true
        mon warn on pool no redundancy = false
        paxos propose interval = 0.01
        paxos min wait = 0.001
        osd objectstore = memstore
        memstore device bytes = 2147483648
        osd class update on start = false
        osd crush update on start = false
        run dir = {d}/run
        log file = {d}/log/$name.log
        pid file = {d}/run/$name.pid
        admin socket = {d}/run/$name.asok
        mon data = {d}/mon/$name
        osd data = {d}/osd/$name
        keyring = {d}/keyring
        [client.rgw]
        rgw frontends = beast endpoint=127.0.0.1:{rgw_port}
        rgw data = {d}/rgw
        """)


def _start_in(workdir: Path) -> RadosGW:
    for sub in ("run", "log", "mon", "osd/osd.0", "rgw"):
        (workdir / sub).mkdir(parents=True, exist_ok=True)
    mon_port, rgw_port = free_port(), free_port()
    fsid, osd_uuid = str(uuid.uuid4()), str(uuid.uuid4())
    conf = workdir / "ceph.conf"
    conf.write_text(_conf(workdir, fsid, mon_port, rgw_port))
    log = workdir / "log" / "setup.log"
    pid_files = [workdir / "run" / f"{name}.pid" for name in ("mon.a", "osd.0", "client.rgw")]
    server = RadosGW(
        endpoint_url=f"http://127.0.0.1:{rgw_port}",
        access_key=ACCESS_KEY,
        secret_key=SECRET_KEY,
        region="default",
        workdir=workdir,
        pid_files=pid_files,
    )
    c = ["-c", str(conf)]
    try:
        monmap = str(workdir / "monmap")
        # --addv with an explicit v1 address: plain --add on a non-default port made the OSD loop.
        run(
            ["monmaptool", "--create", "--addv", "a", f"[v1:127.0.0.1:{mon_port}]", "--fsid", fsid, monmap],
            ADMIN_TIMEOUT,
            log,
        )
        run(["ceph-mon", *c, "--mkfs", "-i", "a", "--monmap", monmap], ADMIN_TIMEOUT, log)
        run(["ceph-mon", *c, "-i", "a"], ADMIN_TIMEOUT, log)
        ceph = ["ceph", *c, "--connect-timeout", "20"]
        run([*ceph, "osd", "new", osd_uuid], ADMIN_TIMEOUT, log)
        run([*ceph, "osd", "crush", "add", "osd.0", "1.0", "root=default"], ADMIN_TIMEOUT, log)
        run(["ceph-osd", *c, "-i", "0", "--mkfs", "--osd-uuid", osd_uuid], ADMIN_TIMEOUT, log)
        run(["ceph-osd", *c, "-i", "0"], ADMIN_TIMEOUT, log)
        run(["radosgw", *c, "-n", "client.rgw"], ADMIN_TIMEOUT, log)
        wait_until(lambda: port_open("127.0.0.1", rgw_port), 60.0, f"radosgw on port {rgw_port}")
        run(
            [
                "radosgw-admin",
                *c,
                "-n",
                "client.rgw",
                "user",
                "create",
                "--uid=test",
                "--display-name=test",
                f"--access-key={ACCESS_KEY}",
                f"--secret-key={SECRET_KEY}",
            ],
            ADMIN_TIMEOUT,
            log,
        )
    except ServerStartError as exc:
        logs = "\n".join(f"--- {p.name}\n{tail(p, 15)}" for p in sorted((workdir / "log").glob("*.log")))
        server.stop()
        raise ServerStartError(f"{exc}\n{logs}") from exc
    except BaseException:
        with contextlib.suppress(Exception):
            server.stop()
        raise
    return server
