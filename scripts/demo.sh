#!/usr/bin/env bash
# Install stillmotion (CPU torch) into .venv and make a first video from the example image, offline.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q uv                      # installs in seconds where pip takes minutes
uv() { .venv/bin/python -m uv pip install -q --compile-bytecode --python .venv/bin/python \
    ${PIP_FIND_LINKS:+--find-links "$PIP_FIND_LINKS"} "$@"; }  # pip's local wheels (this machine's CPU torch)
uv torch==2.13.0                                           # CPU build first; a plain `torch` pulls CUDA (GBs)
uv -e .
.venv/bin/stillmotion generate examples/harbour.jpg --model demo -o harbour.mp4
