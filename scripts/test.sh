#!/usr/bin/env bash
# Install stillmotion with its test extras into .venv (CPU torch first) and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q torch==2.13.0          # CPU build; a plain `torch` pulls CUDA (GBs)
.venv/bin/python -m pip install -q -e '.[test,ray]'
exec .venv/bin/python -m pytest -q "$@"
