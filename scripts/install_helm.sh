#!/usr/bin/env bash
# Builds the pinned helm binary into .cache/bin (Go module proxy; no other
# download site is needed). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
HELM_VERSION=v3.22.0
MARKER=".cache/bin/.helm-${HELM_VERSION}"
if [ -x .cache/bin/helm ] && [ -f "$MARKER" ]; then
    exit 0
fi
command -v go >/dev/null || { echo "error: Go is needed to build helm" >&2; exit 1; }
echo "building helm ${HELM_VERSION} (a few minutes the first time)..."
mkdir -p .cache/bin
GOBIN="$PWD/.cache/bin" go install "helm.sh/helm/v3/cmd/helm@${HELM_VERSION}"
.cache/bin/helm version --short
touch "$MARKER"
