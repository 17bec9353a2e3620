#!/usr/bin/env bash
# Run the test suite (Qt tests under a virtual X server when there is no display).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${NAPARI_SEEM_VENV:-.venv}
if [ -z "${DISPLAY:-}" ] && command -v xvfb-run >/dev/null 2>&1; then
  exec xvfb-run -a "$VENV/bin/python" -m pytest "$@"
fi
exec "$VENV/bin/python" -m pytest "$@"
