#!/usr/bin/env bash
# The system packages fediguard builds with on Debian/Ubuntu: venv (python3-venv; Debian's python3
# lacks it), the Python headers and g++ (pdqhash is C++ and PyPI ships it as source only).
# Idempotent: installs only what is missing; needs root (apt-get) only when something is.
set -euo pipefail
PY=${PYTHON:-python3}

missing=()
"$PY" -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
"$PY" -c 'import os, sysconfig; raise SystemExit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
    || missing+=(python3-dev)
command -v g++ >/dev/null || missing+=(g++)

if [[ ${#missing[@]} -eq 0 ]]; then
    exit 0
fi
if [[ "$(id -u)" -ne 0 ]] || ! command -v apt-get >/dev/null; then
    echo "install-build-deps: missing ${missing[*]}: install them (as root: apt-get install ${missing[*]})" >&2
    exit 1
fi
bash "$(dirname "$0")/apt-install.sh" "${missing[@]}"
