#!/usr/bin/env bash
# Set up napari-seem from nothing: system libraries for Qt (when root), a virtual environment in
# .venv, the CPU build of torch 2.13.0 (install your own torch first to keep a CUDA/MPS build),
# then napari-seem itself with its test extras.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${NAPARI_SEEM_VENV:-.venv}
PYTHON=${PYTHON:-python3}

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && ! command -v xvfb-run >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq xvfb xauth libxcb-icccm4 libxcb-image0 \
    libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-xinerama0 libxcb-xfixes0 libxcb-shape0 \
    libxcb-cursor0 libxkbcommon-x11-0 libdbus-1-3 libfontconfig1 libgl1 libegl1 >/dev/null
fi

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  "$VENV/bin/python" -m pip install -q "torch==2.13.0"
fi
"$VENV/bin/python" -m pip install -q -e ".[testing]"
echo "napari-seem installed in $VENV"
