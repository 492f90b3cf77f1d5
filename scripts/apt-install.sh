#!/usr/bin/env bash
# apt-get install PACKAGE... without starting or enabling any service on this machine.
#
# Debian's package scripts start and enable the daemons they ship (sshd, ceph's, smartd): on a
# developer's or CI machine running `scripts/test` as root that would leave an SSH server and Ceph
# enabled on the host. The tests start their own servers on private ports and need none of that. So
# while apt-get runs, /usr/sbin/policy-rc.d answers 101 ("action forbidden"), which invoke-rc.d and
# deb-systemd-invoke obey: nothing is started. The links that enable a service at boot, made by
# deb-systemd-helper (/etc/systemd/system/…) and update-rc.d (/etc/rc?.d/…) during this install, are
# removed again afterwards. A policy-rc.d that was there before is put back as it was.
# APT_INSTALL_ROOT (tests only) puts those paths under another folder.
set -euo pipefail
root=${APT_INSTALL_ROOT:-}
policy="$root/usr/sbin/policy-rc.d"
saved="$policy.apt-install-saved"

links() {
    local dirs=()
    for dir in "$root/etc/systemd/system" "$root"/etc/rc?.d; do
        [[ -d "$dir" ]] && dirs+=("$dir")
    done
    [[ ${#dirs[@]} -eq 0 ]] || find "${dirs[@]}" -type l | sort
}

before=$(mktemp)
restore_policy() {
    rm -f "$policy"
    if [[ -e "$saved" || -L "$saved" ]]; then mv "$saved" "$policy"; fi
    rm -f "$before"
}
trap restore_policy EXIT
links >"$before"
mkdir -p "$(dirname "$policy")"
if [[ -e "$policy" || -L "$policy" ]]; then mv "$policy" "$saved"; fi
printf '#!/bin/sh\n# scripts/apt-install.sh: no service starts while it installs packages\nexit 101\n' >"$policy"
chmod 755 "$policy"

export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "$@"

comm -13 "$before" <(links) | while IFS= read -r link; do
    rm -f "$link"
    echo "apt-install: left disabled: ${link#"$root"}"
done
