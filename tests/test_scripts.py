"""The install scripts `scripts/test` runs as root: packages come in, their services stay off."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

FAKE_APT = r"""#!/bin/sh
# apt-get as far as services go: what a postinst does, under $APT_INSTALL_ROOT.
[ "$1" = install ] || exit 0
r="$APT_INSTALL_ROOT"
"$r/usr/sbin/policy-rc.d" ssh start; echo "policy-rc.d answered $?" >> "$r/log"
mkdir -p "$r/etc/systemd/system/multi-user.target.wants" "$r/etc/rc2.d"
ln -s /lib/systemd/system/ssh.service "$r/etc/systemd/system/multi-user.target.wants/ssh.service"
ln -s ../init.d/ssh "$r/etc/rc2.d/S01ssh"
echo "installed $*" >> "$r/log"
"""


def install(root: Path, *packages: str) -> subprocess.CompletedProcess[str]:
    bin_dir = root / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "apt-get").write_text(FAKE_APT)
    (bin_dir / "apt-get").chmod(0o755)
    env = dict(os.environ, APT_INSTALL_ROOT=str(root), PATH=f"{bin_dir}:{os.environ['PATH']}")
    return subprocess.run(
        ["bash", str(ROOT / "scripts" / "apt-install.sh"), *packages],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_packages_are_installed_with_their_services_neither_started_nor_enabled(tmp_path: Path) -> None:
    wants = tmp_path / "etc" / "systemd" / "system" / "multi-user.target.wants"
    wants.mkdir(parents=True)
    (wants / "cron.service").symlink_to("/lib/systemd/system/cron.service")  # the admin's own
    run = install(tmp_path, "openssh-server", "radosgw")
    assert run.returncode == 0, run.stderr
    log = (tmp_path / "log").read_text()
    assert (
        "policy-rc.d answered 101" in log
        and "installed install -y -q --no-install-recommends openssh-server radosgw" in log
    )
    assert (
        not (wants / "ssh.service").is_symlink() and not (tmp_path / "etc" / "rc2.d" / "S01ssh").is_symlink()
    )
    assert (wants / "cron.service").is_symlink(), "links that were there before stay"
    assert not (tmp_path / "usr" / "sbin" / "policy-rc.d").exists(), "no policy-rc.d is left behind"
    assert "left disabled: /etc/systemd/system/multi-user.target.wants/ssh.service" in run.stdout


def test_a_policy_already_there_is_put_back(tmp_path: Path) -> None:
    policy = tmp_path / "usr" / "sbin" / "policy-rc.d"
    policy.parent.mkdir(parents=True)
    policy.write_text("#!/bin/sh\nexit 0\n")
    policy.chmod(0o755)
    run = install(tmp_path, "openssh-server")
    assert run.returncode == 0, run.stderr
    assert "policy-rc.d answered 101" in (tmp_path / "log").read_text()
    assert policy.read_text() == "#!/bin/sh\nexit 0\n"


def test_the_install_scripts_go_through_it() -> None:
    for script in (ROOT / "scripts" / "install-build-deps.sh", ROOT / ".ci" / "install-services.sh"):
        text = script.read_text()
        runs_apt = [line for line in text.splitlines() if line.strip().startswith("apt-get")]
        assert "apt-install.sh" in text and not runs_apt, script
