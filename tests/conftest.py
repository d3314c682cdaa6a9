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


# --- parallel runs: pytest-xdist, `-n 3 --dist loadfile` in pyproject's addopts ---
# A test file runs on one worker, so each file's server and the Ray cluster (all Ray tests are in
# test_ray.py) start once. (Not loadgroup: with pytest 9.2, xdist 3.8 cannot put its group names into
# the node ids, and groups silently fall apart.) The scheduler below keeps loadfile's rule and adds two:
# files hand out longest first (xdist's own order is by test count: the Ray file, 13 tests and a third of
# the suite's time, came mid-queue), and files that share a session fixture which starts a server go to
# the same worker, where it starts once.

# Seconds each of the slow files took in a whole-suite run on a busy 2-core machine (`--junitxml` times summed per
# file): only the order depends on them. A file not listed counts half a second a test.
FILE_SECONDS = {
    "test_ray.py": 297, "test_server_api.py": 61, "test_ltx_audio.py": 50, "test_wan.py": 42, "test_multimodel.py": 39,
    "test_keyframes.py": 35, "test_framepack.py": 30, "test_dit_plan.py": 30, "test_api_contract.py": 24,
    "test_server_ui.py": 20, "test_client.py": 19, "test_train.py": 17, "test_memory.py": 14, "test_wan_comfy.py": 13,
    "test_models.py": 12, "test_wan_plan.py": 12, "test_single_file.py": 11, "test_batch.py": 11, "test_ltx.py": 10,
    "test_demo.py": 10, "test_remote_inputs.py": 9, "test_ltx_comfy.py": 8, "test_engine.py": 8, "test_estimate.py": 7,
}
# Files that share a session-scoped server (conftest.live_server): one unit of work, one server.
SHARED_SERVER = {"test_server_api.py": "live_server", "test_server_ui.py": "live_server",
                 "test_keyframes.py": "live_server"}


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """`--dist loadfile` (addopts) gets LongestFirst; any other --dist mode keeps xdist's own."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class LongestFirst(LoadFileScheduling):
        """loadfile, with the files that share a server as one unit, handed out longest first."""

        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return SHARED_SERVER.get(Path(path).name, path)

        def _seconds(self, scope: str) -> float:
            files = {Path(n.split("::", 1)[0]).name for n in self.workqueue[scope]}
            return sum(FILE_SECONDS.get(f, 0) for f in files) + 0.5 * sum(
                1 for n in self.workqueue[scope] if Path(n.split("::", 1)[0]).name not in FILE_SECONDS)

        def _assign_work_unit(self, node) -> None:
            self.workqueue.move_to_end(max(self.workqueue, key=self._seconds), last=False)
            super()._assign_work_unit(node)

    return LongestFirst(config, log)


@pytest.fixture(scope="session")
def tiny_engine():
    return cached_engine("tiny", device="cpu")


@pytest.fixture(scope="session")
def demo_engine():
    return cached_engine("demo", device="cpu")


_ENGINES: dict = {}  # per test process (each xdist worker has its own)
CACHEABLE = ("tiny", "demo", "tiny-ltx2")  # built-in models: their folders never change during a session


def cached_engine(config=None, **settings):
    """`Engine(config, **settings)`, built once per EngineConfig for the built-in models (the in-process
    CLI runs below build many engines with the same settings; a load is ~0.3 s and more on a busy machine)."""
    from stillmotion.engine import EngineConfig
    from stillmotion.engine.core import Engine

    if not isinstance(config, EngineConfig):
        config = EngineConfig.build(**({"model": config} if config else {}), **settings)
    elif settings:
        config = config.replace(**settings)
    if config.model not in CACHEABLE:
        return Engine(config)
    key = config.model_dump_json()
    if key not in _ENGINES:
        _ENGINES[key] = Engine(config)
    return _ENGINES[key]


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

    from unittest import mock

    import stillmotion.engine
    from stillmotion.cli import main

    out, err = io.StringIO(), io.StringIO()
    code = 0
    # the CLI's `from ..engine import Engine` gets the per-process cache of built-in engines
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
            mock.patch.object(stillmotion.engine, "Engine", cached_engine, create=True):
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

    def __init__(self, data_dir: Path, *args: str, model: str = "tiny"):
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
        cmd = [sys.executable, "-c", "from stillmotion.cli import main; main()", "serve", "--model", model,
               "--device", "cpu", "--host", "127.0.0.1", "--port", str(self.port), "--data-dir", str(data_dir), "--threads", "1", *args]
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


# --- one local Ray cluster for the session (tests/test_ray.py, tests/test_remote_inputs.py) ---
@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server on 127.0.0.1, with the standard AWS variables pointing at it for this process and
    everything it starts (the Ray cluster's workers inherit them: start it before Ray)."""
    moto_server = pytest.importorskip("moto.server", reason="needs moto's server: pip install 'moto[server]'")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    with pytest.MonkeyPatch.context() as mp:
        for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                            "AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_REGION": "us-east-1",
                            "AWS_EC2_METADATA_DISABLED": "true"}.items():
            mp.setenv(name, value)
        try:
            yield f"http://{host}:{port}"
        finally:
            server.stop()


@pytest.fixture(scope="session")
def ray_cluster(s3_server):
    """One local Ray cluster (2 CPUs) for every Ray test: starting one costs ~15 s."""
    ray = pytest.importorskip("ray", reason="needs the ray extra: pip install 'stillmotion[ray]'")
    ray.init(num_cpus=2, include_dashboard=False, namespace="stillmotion", log_to_driver=False)
    yield
    from ray import serve

    from stillmotion.ray.store import get_store_actor

    serve.shutdown()
    try:
        ray.kill(get_store_actor(), no_restart=True)  # the detached store actor (its SQLite file stays)
    except ValueError:
        pass
    ray.shutdown()


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


def offline_hub(monkeypatch, hub) -> None:
    """Run against a test's own Hugging Face cache `hub`, offline, with no ComfyUI folder from the environment (the
    ComfyUI-file tests: a file finds its folder from its own path or --comfyui-dir)."""
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("STILLMOTION_COMFYUI_DIR", raising=False)
