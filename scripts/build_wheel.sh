#!/bin/sh
# Build the connector's wheel (only it, not its dependencies) into DIR.
# The one build command: the Dockerfile runs it, and so does the installed-wheel
# test (tests/install/), so the image and the tested wheel cannot drift apart.
# Usage, from the source root: sh scripts/build_wheel.sh DIR   ($PYTHON: default python3)
set -eu
out="${1:?usage: sh scripts/build_wheel.sh OUTPUT_DIR}"
"${PYTHON:-python3}" -m pip wheel --no-deps --wheel-dir "$out" .
