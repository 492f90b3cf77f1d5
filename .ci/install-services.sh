#!/usr/bin/env bash
# Installs the real servers the storage tests start (Ceph radosgw for S3, openssh-server for SFTP).
# Idempotent: a machine that already has the binaries is left alone, so reruns cost nothing.
# Run as root (CI and developer machines are root); see shared/TESTING.md for why these packages.
set -euo pipefail

# The review desk's browser tests (tests/desk/test_desk_browser.py): Debian's chromium and its driver.
if [[ ! -x /usr/bin/chromium || ! -x /usr/bin/chromedriver ]] && [[ "$(id -u)" -eq 0 ]]; then
    bash "$(dirname "$0")/../scripts/apt-install.sh" chromium chromium-driver
fi

need=(/usr/bin/radosgw /usr/bin/ceph-mon /usr/bin/ceph-osd /usr/bin/ceph /usr/bin/monmaptool
      /usr/bin/radosgw-admin /usr/sbin/sshd /usr/bin/ssh-keygen)
missing=0
for bin in "${need[@]}"; do
    [[ -x "$bin" ]] || { missing=1; break; }
done

if [[ "$missing" -eq 0 ]]; then
    echo "install-services: radosgw, ceph and sshd already installed"
    exit 0
fi

if [[ "$(id -u)" -ne 0 ]]; then
    echo "install-services: must run as root to apt-get install" >&2
    exit 1
fi

# Without starting or enabling the packages' own services (a system sshd, ceph's daemons):
# the tests run their own servers on private ports. A service already running is left alone.
bash "$(dirname "$0")/../scripts/apt-install.sh" \
    radosgw ceph-mon ceph-osd ceph-common openssh-server openssh-client
echo "install-services: done"
