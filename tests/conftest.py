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
# One torch thread in every test process and the servers/CLIs they start: the suite runs
# several processes at once on 2 cores, and oversubscribed OpenMP threads are many times slower.
os.environ.setdefault("OMP_NUM_THREADS", "1")

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


def batch_killed_at_first_video(args: list[str], out: Path, env: dict | None = None) -> None:
    """Run `stillmotion batch ARGS` in a subprocess and SIGKILL it as soon as a first video appears under `out`."""
    import signal
    import subprocess
    import sys
    import time

    stillmotion = Path(sys.executable).with_name("stillmotion")
    proc = subprocess.Popen([str(stillmotion), "batch", *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and not list(out.rglob("*.mp4")):
        time.sleep(0.05)
    assert proc.poll() is None, f"the batch ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()


# --- `stillmotion serve` on 127.0.0.1 in a subprocess (tests/test_server_*.py) ---
class ServeProcess:
    """A real server: `stillmotion serve --model tiny` on a free loopback port."""

    def __init__(self, data_dir: Path, *args: str):
        import socket
        import subprocess
        import sys

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log = open(self.data_dir / f"server-{self.port}.log", "ab")
        cmd = [sys.executable, "-c", "from stillmotion.cli import main; main()", "serve", "--model", "tiny",
               "--device", "cpu", "--host", "127.0.0.1", "--port", str(self.port), "--data-dir", str(data_dir), "--cpu-threads", "1", *args]
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 240.0) -> dict:
        import time

        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}; see {self.log.name}")
            try:
                r = httpx.get(self.url + "/readyz", timeout=5)
                if r.status_code == 200:
                    return r.json()
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise TimeoutError(f"server not ready after {timeout} s; see {self.log.name}")

    def stop(self, timeout: float = 60.0) -> int:
        import subprocess

        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode


@pytest.fixture(scope="session")
def live_server(tmp_path_factory):
    """One server with the UI for the API and UI tests (webhook retries kept short)."""
    srv = ServeProcess(tmp_path_factory.mktemp("serve"), "--max-upload-mb", "1", "--webhook-secret", "test-secret",
                       "--allow-private-urls")  # the webhook test's receiver is on 127.0.0.1
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()
