"""Shared fixtures. Every test runs on the CPU with the built-in tiny model.

The stillmotion cache (tiny model, hashes, manifests) lives in one temporary
folder per test session so nothing leaks into ~/.cache and the tiny model is
built once.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest

_SESSION_CACHE = tempfile.mkdtemp(prefix="stillmotion-test-cache-")
os.environ.setdefault("STILLMOTION_CACHE", _SESSION_CACHE)
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_IMAGE = REPO / "examples" / "harbour.jpg"


@pytest.fixture(scope="session")
def tiny_engine():
    from stillmotion import Engine

    return Engine("tiny", device="cpu")


@pytest.fixture()
def image_file(tmp_path) -> Path:
    """A small textured RGB PNG (not from any training data)."""
    from PIL import Image

    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:96, 0:96]
    arr = np.stack([xx * 2.5, yy * 2.5, 128 + 60 * np.sin(xx / 6.0)], -1) + rng.normal(0, 8, (96, 96, 3))
    p = tmp_path / "input.png"
    Image.fromarray(arr.clip(0, 255).astype("uint8")).save(p)
    return p


def run_cli(*args: str) -> tuple[int, str, str]:
    """Run `stillmotion ARGS` in-process; returns (exit code, stdout, stderr)."""
    import contextlib
    import io

    from stillmotion.cli import main

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(list(args))
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return code, out.getvalue(), err.getvalue()
