"""stillmotion.Client / AsyncClient and `--server` for generate and batch, against a real
`stillmotion serve --model tiny` on 127.0.0.1 (with an API key and a queue of one, so 503s happen)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from conftest import ServeProcess, run_cli

KEY = "client-test-key"
SMALL = {"width": 64, "height": 64, "num_frames": 4, "num_inference_steps": 2}
FLAGS = ["--width", "64", "--height", "64", "--frames", "4", "--steps", "2"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = ServeProcess(tmp_path_factory.mktemp("client"), "--no-ui", "--api-key", KEY, "--max-queue", "1")
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


def frames_of(path: Path) -> int:
    import av

    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def jobs_on(server) -> list[dict]:
    r = httpx.get(server.url + "/v1/videos?limit=100", headers={"Authorization": f"Bearer {KEY}"}, timeout=30)
    return r.json()["data"]


# --------------------------------------------------------------------------- the Python client
def test_client_submit_wait_download_list_and_errors(server, image_file, tmp_path):
    from stillmotion import Client, GenerationSpec, NotFound
    from stillmotion.errors import Unauthorized

    with Client(server.url, api_key=KEY) as c:
        job = c.submit(image_file, GenerationSpec(seed=11, **SMALL))
        names: list[str] = []
        done = c.wait(job["id"], on_event=lambda name, j: names.append(name))
        assert done["status"] == "succeeded" and done["seed"] == 11 and names[-1] == "succeeded"
        video = c.download(job["id"], tmp_path / "out.mp4")
        assert frames_of(video) == 4
        sidecar = json.loads(c.download(job["id"], tmp_path / "out.json", variant="sidecar").read_text())
        assert sidecar["seed"] == 11 and sidecar["output"]["bytes"] == video.stat().st_size
        assert job["id"] in [j["id"] for j in c.list(limit=100)["data"]]

        # an interrupted download resumes where it stopped (Range), and the file appears whole
        whole = video.read_bytes()
        part = tmp_path / f".again.mp4.{job['id']}.video.part"
        part.write_bytes(whole[:1000])
        again = c.download(job["id"], tmp_path / "again.mp4")
        assert again.read_bytes() == whole and not part.exists()
        assert f'GET /v1/videos/{job["id"]}/content?variant=video HTTP/1.1" 206' in Path(server.log.name).read_text()

        with pytest.raises(NotFound):
            c.get("vid_00000000000000000000")
        with pytest.raises(Exception) as bad:
            c.cancel(job["id"])  # it has ended: 409
        assert type(bad.value).__name__ == "Conflict"
    with Client(server.url, api_key="wrong") as c, pytest.raises(Unauthorized):
        c.list()


def test_submits_are_idempotent_and_503_is_retried_after_retry_after(server, image_file):
    """The server holds one job at a time: the second submit gets 503 + Retry-After until the first ends;
    the client waits and retries, and a retried or repeated key never makes a second video."""
    from stillmotion import Client

    with Client(server.url, api_key=KEY) as c:
        before = len(jobs_on(server))
        first = c.submit(image_file, {**SMALL, "num_inference_steps": 6, "seed": 1})
        second = c.submit(image_file.read_bytes(), {**SMALL, "seed": 2}, idempotency_key="same-key")  # waits out 503s
        assert second["id"] != first["id"]
        c.wait(second["id"])
        assert c.submit(image_file.read_bytes(), {**SMALL, "seed": 2}, idempotency_key="same-key")["id"] == second["id"]
        assert len(jobs_on(server)) == before + 2
        assert "queue_full" in Path(server.log.name).read_text() or "503" in Path(server.log.name).read_text()


def test_wait_reconnects_with_last_event_id_and_misses_nothing(server, image_file):
    """With should_cancel the client reads with a 1 s timeout and reconnects each time the stream is quiet:
    every event still arrives once, in order, ending with the last."""
    from stillmotion import Client

    with Client(server.url, api_key=KEY) as c:
        job = c.submit(image_file, {**SMALL, "num_inference_steps": 6})
        seen: list[tuple[str, float]] = []
        for name, j in c.events(job["id"], should_cancel=lambda: False):
            seen.append((name, j["progress"]["fraction"]))
        assert seen[-1][0] == "succeeded"
        fractions = [f for n, f in seen if n == "progress"]
        assert fractions == sorted(fractions) and len(set(fractions)) == len(fractions)


def test_async_client(server, image_file, tmp_path):
    from stillmotion import AsyncClient

    async def main():
        async with AsyncClient(server.url, api_key=KEY) as c:
            job = await c.submit(image_file, {**SMALL, "seed": 3})
            done = await c.wait(job["id"])
            path = await c.download(job["id"], tmp_path / "a.mp4")
            return done, path

    done, path = asyncio.run(main())
    assert done["status"] == "succeeded" and frames_of(path) == 4


# --------------------------------------------------------------------------- --server
def test_generate_server_writes_the_same_video_and_sidecar_as_a_local_run(server, image_file, tmp_path, monkeypatch):
    code, out, err = run_cli("generate", str(image_file), "--server", server.url, "--api-key", KEY, *FLAGS,
                             "--seed", "21", "-o", str(tmp_path / "remote.mp4"))
    assert code == 0, err
    code, _, err = run_cli("generate", str(image_file), "--model", "tiny", "--device", "cpu", *FLAGS, "--seed", "21",
                           "-o", str(tmp_path / "local" / "remote.mp4"))  # the same file name: it is in the metadata
    assert code == 0, err
    assert (tmp_path / "remote.mp4").read_bytes() == (tmp_path / "local" / "remote.mp4").read_bytes()
    remote, local = (json.loads((d / "remote.json").read_text()) for d in (tmp_path, tmp_path / "local"))
    for k in ("created", "timings"):
        remote.pop(k), local.pop(k)
    assert remote == local

    # the environment does the same; the server's 4xx is exit code 2
    monkeypatch.setenv("STILLMOTION_SERVER", server.url)
    monkeypatch.setenv("STILLMOTION_API_KEY", KEY)
    code, out, err = run_cli("generate", str(image_file), *FLAGS, "--json", "-o", str(tmp_path / "env.mp4"))
    assert code == 0, err
    assert json.loads(out)["server"] == server.url
    assert frames_of(tmp_path / "env.mp4") == 4
    code, _, err = run_cli("generate", str(image_file), *FLAGS, "--model", "svd", "-o", str(tmp_path / "x.mp4"))
    assert code == 2 and "runs 'tiny'" in err and not (tmp_path / "x.mp4").exists()
    monkeypatch.setenv("STILLMOTION_API_KEY", "wrong")
    code, _, err = run_cli("generate", str(image_file), *FLAGS, "-o", str(tmp_path / "y.mp4"))
    assert code == 2 and "API key" in err


def test_generate_server_ctrl_c_cancels_the_remote_job(server, image_file, tmp_path):
    stillmotion = Path(sys.executable).with_name("stillmotion")
    env = {**os.environ, "STILLMOTION_SERVER": server.url, "STILLMOTION_API_KEY": KEY}
    before = {j["id"] for j in jobs_on(server)}
    proc = subprocess.Popen([str(stillmotion), "generate", str(image_file), "--width", "64", "--height", "64",
                             "--frames", "16", "--steps", "200", "-o", str(tmp_path / "c.mp4")], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    job = None
    while time.monotonic() < deadline and job is None:
        job = next((j for j in jobs_on(server) if j["id"] not in before and j["status"] == "running"), None)
        time.sleep(0.2)
    assert job is not None, proc.stderr.read1().decode() if proc.poll() is not None else "no running job"
    proc.send_signal(signal.SIGINT)
    assert proc.wait(60) == 130
    assert httpx.get(f"{server.url}/v1/videos/{job['id']}", headers={"Authorization": f"Bearer {KEY}"}).json()[
        "status"] == "canceled"
    assert not (tmp_path / "c.mp4").exists()


def test_batch_server_makes_the_local_batch_byte_for_byte_and_resumes(server, tmp_path):
    from PIL import Image

    images = tmp_path / "images"
    (images / "sub").mkdir(parents=True)
    rng = np.random.default_rng(3)
    for name in ("a.png", "b.jpg", "sub/c.png"):
        Image.fromarray(rng.integers(0, 255, (72, 96, 3), dtype=np.uint8)).save(images / name)
    remote, local = tmp_path / "remote", tmp_path / "local"
    code, out, err = run_cli("batch", str(images), str(remote), "-r", "--server", server.url, "--api-key", KEY,
                             "--concurrency", "2", "--seed", "5", *FLAGS)
    assert code == 0, err + out
    code, out, err = run_cli("batch", str(images), str(local), "-r", "--model", "tiny", "--device", "cpu",
                             "--seed", "5", *FLAGS)
    assert code == 0, err + out
    made = sorted(p.relative_to(remote) for p in remote.rglob("*.mp4"))
    assert made == sorted(p.relative_to(local) for p in local.rglob("*.mp4")) and len(made) == 3
    for rel in made:
        assert (remote / rel).read_bytes() == (local / rel).read_bytes(), rel
    r_report, l_report = (json.loads((d / "batch-report.json").read_text()) for d in (remote, local))
    assert [(i["output"].replace(str(remote), ""), i["seed"], i["status"]) for i in r_report["items"]] == \
           [(i["output"].replace(str(local), ""), i["seed"], i["status"]) for i in l_report["items"]]
    # resume: nothing to do the second time, on the server or here
    code, out, err = run_cli("batch", str(images), str(remote), "-r", "--server", server.url, "--api-key", KEY,
                             "--seed", "5", *FLAGS)
    assert code == 0 and json.loads((remote / "batch-report.json").read_text())["counts"]["skipped"] == 3
    # a local batch finds the server's videos up to date too
    code, out, err = run_cli("batch", str(images), str(remote), "-r", "--model", "tiny", "--device", "cpu",
                             "--seed", "5", *FLAGS)
    assert code == 0 and json.loads((remote / "batch-report.json").read_text())["counts"]["skipped"] == 3


def test_batch_server_refuses_a_manifest_with_end_images_before_sending_anything(server, tmp_path):
    from PIL import Image

    rng = np.random.default_rng(4)
    for name in ("a.png", "z.png"):
        Image.fromarray(rng.integers(0, 255, (72, 96, 3), dtype=np.uint8)).save(tmp_path / name)
    manifest = tmp_path / "list.csv"
    manifest.write_text("image,end_image,output\na.png,z.png,k.mp4\na.png,,p.mp4\n")
    before = len(jobs_on(server))
    code, out, err = run_cli("batch", str(manifest), str(tmp_path / "out"), "--server", server.url, "--api-key", KEY,
                             "--seed", "5", "--frames", "4", "--width", "64", "--height", "64", "--steps", "2")
    assert code == 2, err + out
    assert "the end_image column (keyframes) is not sent with --server yet; run this batch here, without --server." \
        in err
    assert not (tmp_path / "out").exists() and len(jobs_on(server)) == before


def test_client_is_in_the_package_facade():
    import stillmotion

    assert {"Client", "AsyncClient"} <= set(stillmotion.__all__)
    assert stillmotion.Client.__module__ == "stillmotion.client.sync"
