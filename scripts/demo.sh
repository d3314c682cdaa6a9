#!/usr/bin/env bash
# Install stillmotion (CPU torch) into .venv and make a first video from the example image, offline.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q torch==2.13.0          # CPU build; a plain `torch` pulls CUDA (GBs)
.venv/bin/python -m pip install -q uv                      # installs the rest in seconds; keeps that torch
.venv/bin/python -m uv pip install -q --compile-bytecode --python .venv/bin/python -e .
.venv/bin/stillmotion generate examples/harbour.jpg --model demo -o harbour.mp4
