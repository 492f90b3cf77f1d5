"""A private OpenSSH server on 127.0.0.1 for SFTP tests: key auth only, its own host key.

Recipe and pitfalls: shared/TESTING.md. As root it logs in a dedicated unprivileged user, so
permission errors are real (root would read everything); otherwise it logs in the current user.
"""

from __future__ import annotations

import getpass
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path

from ._proc import ServerStartError, banner_ready, free_port, kill_pid, run, tail, wait_until

SSHD = "/usr/sbin/sshd"
SSH_KEYGEN = "/usr/bin/ssh-keygen"
BINARIES = (SSHD, SSH_KEYGEN)
TEST_USER = "fediguard-sftp"
ADMIN_TIMEOUT = 20.0


@dataclass
class SSHServer:
    host: str
    port: int
    user: str
    uid: int
    gid: int
    key_path: Path
    """The login user's private key (ed25519, no passphrase)."""
    known_hosts: Path
    """A known_hosts file naming this server's host key, for the strict (default) policy."""
    workdir: Path
    process: subprocess.Popen[bytes]

    def make_dir(self, name: str) -> Path:
        """A fresh directory under the server's data area, owned by the login user."""
        path = self.workdir / "data" / name
        path.mkdir(parents=True)
        os.chown(path, self.uid, self.gid)
        return path

    def stop(self) -> None:
        # SIGTERM lets the listener close its socket; SIGKILL follows if it lingers.
        kill_pid(self.process.pid, signal.SIGTERM, wait=5.0)
        if self.process.poll() is None:
            kill_pid(self.process.pid)
        self.process.wait(timeout=5)
        shutil.rmtree(self.workdir, ignore_errors=True)


def missing_binaries() -> list[str]:
    return [b for b in BINARIES if not Path(b).exists()]


def _ensure_user() -> pwd.struct_passwd:
    if os.geteuid() != 0:
        return pwd.getpwnam(getpass.getuser())
    try:
        return pwd.getpwnam(TEST_USER)
    except KeyError:
        pass
    log = Path(tempfile.gettempdir()) / "fediguard-useradd.log"
    run(["useradd", "--system", "--no-create-home", "--shell", "/bin/sh", TEST_USER], ADMIN_TIMEOUT, log)
    # A new account has a locked password ('!'), and with UsePAM no sshd refuses locked accounts
    # even for key auth; '*' means "no password login" without locking.
    run(["usermod", "-p", "*", TEST_USER], ADMIN_TIMEOUT, log)
    return pwd.getpwnam(TEST_USER)


def _traversable_tmp() -> str:
    """The temp folder, unless a parent is private (a test run's own 0700 TMPDIR): the login user
    must reach authorized_keys and its data folders, so fall back to /tmp then."""
    base = Path(tempfile.gettempdir()).resolve()
    if all(p.stat().st_mode & 0o001 for p in (base, *base.parents)):
        return str(base)
    return "/tmp"


def _keygen(path: Path, log: Path) -> None:
    run(
        [SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", "fediguard-test", "-f", str(path)],
        ADMIN_TIMEOUT,
        log,
    )


def start(attempts: int = 3) -> SSHServer:
    """Start sshd; a port taken between picking and binding makes sshd exit 255, so retry."""
    user = _ensure_user()
    workdir = Path(tempfile.mkdtemp(prefix="fediguard-sshd-", dir=_traversable_tmp()))
    # sshd reads authorized_keys as the login user, who must be able to traverse to it.
    workdir.chmod(0o755)
    (workdir / "data").mkdir(mode=0o755)
    log = workdir / "setup.log"
    try:
        _keygen(workdir / "host_key", log)
        _keygen(workdir / "user_key", log)
        os.chown(workdir / "user_key", user.pw_uid, user.pw_gid)
        authorized = workdir / "authorized_keys"
        shutil.copy(workdir / "user_key.pub", authorized)
        authorized.chmod(0o644)
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        last: ServerStartError | None = None
        for _ in range(attempts):
            try:
                return _launch(workdir, user, log)
            except ServerStartError as exc:
                last = exc
        assert last is not None
        raise last
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise


def _launch(workdir: Path, user: pwd.struct_passwd, log: Path) -> SSHServer:
    port = free_port()
    conf = workdir / "sshd_config"
    conf.write_text(
        textwrap.dedent(f"""\
        Port {port}
        ListenAddress 127.0.0.1
        HostKey {workdir}/host_key
        PidFile none
        AuthorizedKeysFile {workdir}/authorized_keys
        AllowUsers {user.pw_name}
        PubkeyAuthentication yes
        PasswordAuthentication no
        KbdInteractiveAuthentication no
        UsePAM no
        StrictModes no
        MaxStartups 200
        MaxSessions 100
        LogLevel INFO
        Subsystem sftp internal-sftp
        """)
    )
    run([SSHD, "-t", "-f", str(conf)], ADMIN_TIMEOUT, log)
    sshd_log = workdir / f"sshd-{port}.log"
    with sshd_log.open("wb") as out:
        # -D: stay in the foreground so the PID is ours; -e: log to the file, never a pipe.
        process = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(conf)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until(
            lambda: process.poll() is not None or banner_ready("127.0.0.1", port, b"SSH-2.0"),
            15.0,
            f"sshd on port {port}",
        )
        if process.poll() is not None:
            raise ServerStartError(f"sshd exited {process.returncode}\n{tail(sshd_log)}")
    except BaseException:
        kill_pid(process.pid)
        raise
    host_pub = (workdir / "host_key.pub").read_text().split()
    known_hosts = workdir / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
    return SSHServer(
        host="127.0.0.1",
        port=port,
        user=user.pw_name,
        uid=user.pw_uid,
        gid=user.pw_gid,
        key_path=workdir / "user_key",
        known_hosts=known_hosts,
        workdir=workdir,
        process=process,
    )
