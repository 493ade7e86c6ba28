#!/usr/bin/env bash
# Installs the non-Python tools the test suite uses: the real `helm` binary
# (pinned, built from source with Go into .cache/bin) and `promtool` (Debian
# package `prometheus`). Idempotent; does nothing when both are present.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install_helm.sh

if ! command -v promtool >/dev/null 2>&1; then
    if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing promtool (Debian package prometheus)..."
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null
    else
        echo "error: promtool not found; install the 'prometheus' package (it provides promtool)" >&2
        exit 1
    fi
fi
