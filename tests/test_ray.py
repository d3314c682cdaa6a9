"""stillmotion on Ray (tiny model, a local Ray cluster with 2 CPUs): Serve and Data.

Marked `ray` (Ray start-up is slow): `pytest -m "not ray"` runs everything else.
One Ray cluster (conftest.ray_cluster) serves the whole session.
"""

from __future__ import annotations

import hashlib
import socket
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

ray = pytest.importorskip("ray", reason="needs the ray extra: pip install 'stillmotion[ray]'")
httpx = pytest.importorskip("httpx")

pytestmark = pytest.mark.ray

FIELDS = {"width": "64", "height": "64", "num_frames": "2", "num_inference_steps": "2"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _png(seed: int) -> bytes:
    import io

    arr = np.random.default_rng(seed).integers(0, 255, (80, 96, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _wait_all(client, ids, timeout=240.0) -> dict:
    deadline = time.time() + timeout
    jobs = {}
    while time.time() < deadline:
        jobs = {i: client.get(f"/v1/videos/{i}").json() for i in ids}
        if all(j["status"] in ("succeeded", "failed", "canceled") for j in jobs.values()):
            return jobs
        time.sleep(0.5)
    raise AssertionError(f"not finished in {timeout}s: {sorted(j['status'] for j in jobs.values())}")


@pytest.fixture(scope="module")
def ray_server(ray_cluster, tmp_path_factory):
    from stillmotion.engine.config import EngineConfig
    from stillmotion.ray import serve as ray_serve
    from stillmotion.server.settings import Settings

    data = tmp_path_factory.mktemp("ray-data")
    settings = Settings(data_dir=data, engine=EngineConfig(model="tiny", device="cpu"), ui=True, warmup=False,
                        drain_timeout=10)
    port = _free_port()
    ray_serve.start(settings, host="127.0.0.1", port=port, replicas=2)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
    deadline = time.time() + 180
    while client.get("/readyz").status_code != 200:
        assert time.time() < deadline, client.get("/readyz").text
        time.sleep(0.5)
    yield SimpleNamespace(client=client, url=f"http://127.0.0.1:{port}", port=port, data_dir=Path(data))
    client.close()
    ray_serve.shutdown()


def _submit(client, n, first_seed) -> list[str]:
    ids = []
    for k in range(n):
        r = client.post("/v1/videos", files={"image": (f"in{k}.png", _png(first_seed + k), "image/png")},
                        data={**FIELDS, "seed": str(first_seed + k)})
        assert r.status_code == 202, r.text
        ids.append(r.json()["id"])
    return ids


def _check_once(client, ids) -> list[dict]:
    """Every job succeeded, none is listed twice, and its video decodes."""
    import av

    from stillmotion.ray.store import RayJobStore

    jobs = _wait_all(client, ids)
    assert {i: j["status"] for i, j in jobs.items()} == {i: "succeeded" for i in ids}, \
        [j.get("error") for j in jobs.values() if j["status"] != "succeeded"]
    listed = [j["id"] for j in client.get("/v1/videos", params={"limit": 100}).json()["data"]]
    assert sorted(set(listed) & set(ids)) == sorted(ids) and len(listed) == len(set(listed))
    r = client.get(f"/v1/videos/{ids[-1]}/content")
    assert r.status_code == 200 and r.headers["content-type"] == "video/mp4"
    import io

    with av.open(io.BytesIO(r.content)) as c:
        assert len(list(c.decode(video=0))) == 2
    store = RayJobStore()
    return [store.get(i) for i in ids]


def test_serve_two_replicas_runs_http_jobs_once(ray_server):
    ids = _submit(ray_server.client, 6, first_seed=100)
    rows = _check_once(ray_server.client, ids)
    assert all(r.attempts == 1 for r in rows)
    assert len({r.worker for r in rows}) == 2  # both replicas took jobs

    # /readyz and /metrics describe the model replicas, as they describe worker processes on one machine
    ready = ray_server.client.get("/readyz").json()
    assert ready["status"] == "ready" and len(ready["workers"]) == 2 and ready["worker"]["device"] == "cpu"
    assert "stillmotion_workers_up 2.0" in ray_server.client.get("/metrics").text


def test_killed_replica_jobs_are_retried_elsewhere_and_finish_once(ray_server):
    from stillmotion.ray.store import RayJobStore

    ids = _submit(ray_server.client, 6, first_seed=200)
    # wait until a model replica is running one of them, then kill that replica's actor
    store, deadline = RayJobStore(), time.time() + 60
    while not (running := [j for j in store.list(status="running") if j.id in ids]):
        assert time.time() < deadline
        time.sleep(0.05)
    replica_id = running[0].worker.removeprefix("ray-")
    (victim,) = [a for a in ray.util.list_named_actors(all_namespaces=True)
                 if "ModelWorker" in a["name"] and a["name"].endswith(replica_id)]
    ray.kill(ray.get_actor(victim["name"], namespace=victim["namespace"]), no_restart=True)
    _check_once(ray_server.client, ids)
    rerun = store.get(running[0].id)
    assert rerun.attempts == 2 and rerun.worker != running[0].worker  # ran again, elsewhere


def test_server_api_test_passes_against_ray(ray_server, image_file):
    """The one-machine API test that covers the most of the path (multipart submit, SSE to the end,
    content) passes on Ray Serve too: the app is the same code, only the store and the workers differ."""
    import test_server_api

    test_server_api.test_multipart_submit_follow_sse_fetch_content(ray_server, image_file)


# The web UI inside the Ray deployment: the same page and endpoint, jobs in the cluster's queue
UI_TESTS = ["test_gradio_client_calls_the_ui_endpoint", "test_browser_generate_progress_video_and_cancel"]


@pytest.mark.parametrize("name", UI_TESTS)
def test_server_ui_tests_pass_against_ray(ray_server, image_file, tmp_path, name):
    import test_server_ui

    fn = getattr(test_server_ui, name)
    if name.startswith("test_browser"):
        if not Path(test_server_ui.CHROMIUM).exists():
            pytest.skip("Debian chromium is not installed")
        fn(ray_server, image_file)
    else:
        fn(ray_server, image_file, tmp_path)


def _live_replicas(client) -> set[str]:
    return {w["id"] for w in client.get("/readyz").json().get("workers") or [] if w["state"] == "ready"}


def test_autoscales_on_queue_and_replaces_a_replica_that_fails_its_health_check(ray_server):
    """min 1, max 2 replicas: a queue brings the second one up. The store then declares one replica dead
    (what its reaper does to a replica whose heartbeat stalled): that replica's health check fails,
    Serve replaces it, and every job still succeeds exactly once."""
    from stillmotion.engine.config import EngineConfig
    from stillmotion.ray import serve as ray_serve
    from stillmotion.ray.store import RayJobStore
    from stillmotion.server.settings import Settings

    client, store = ray_server.client, RayJobStore()
    before = {w["id"] for w in store.workers()}
    ray_serve.shutdown()
    settings = Settings(data_dir=ray_server.data_dir, engine=EngineConfig(model="tiny", device="cpu"), ui=False,
                        warmup=False, drain_timeout=10)
    ray_serve.start(settings, host="127.0.0.1", port=ray_server.port, min_replicas=1, max_replicas=2)

    def new_live() -> set[str]:
        return _live_replicas(client) - before

    deadline = time.time() + 120
    while not new_live():
        assert time.time() < deadline, client.get("/readyz").text
        time.sleep(0.5)
    assert len(new_live()) == 1  # min_replicas

    ids = []
    for k in range(30):  # a queue that outlasts the upscale delay and the second replica's start, on a busy machine
        r = client.post("/v1/videos", files={"image": (f"q{k}.png", _png(300 + k), "image/png")},
                        data={**FIELDS, "num_inference_steps": "4", "seed": str(300 + k)})
        assert r.status_code == 202, r.text
        ids.append(r.json()["id"])
    deadline = time.time() + 120
    while len(new_live()) < 2:  # the queue scaled the model deployment up
        assert time.time() < deadline, f"still {new_live()} after 120 s"
        time.sleep(0.5)

    victim = sorted(new_live())[0]
    store.worker_state(victim, "dead")
    store.recover(victim, reason=f"test: {victim} declared dead")
    deadline = time.time() + 120
    while victim in _live_replicas(client) or len(new_live()) < 2:
        assert time.time() < deadline, f"not replaced: {new_live()}"
        time.sleep(0.5)
    assert not [a for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].endswith(victim[4:])]
    _check_once(client, ids)
    assert next(w for w in store.workers() if w["id"] == victim)["state"] == "dead"  # dead stays dead
    import re

    restarts = re.search(r"^stillmotion_worker_restarts_total (\S+)$", client.get("/metrics").text, re.M)
    assert restarts and float(restarts.group(1)) >= 1


# --------------------------------------------------------------------------- Ray Data batch


from test_remote_inputs import s3  # noqa: E402,F401 - the fixture: a bucket on the session's moto server


def test_ray_batch_over_s3_is_byte_identical_to_plain(s3, ray_cluster, one_torch_thread, tmp_path):  # noqa: F811
    import test_remote_inputs
    from ray import serve

    serve.shutdown()  # the Serve tests' model replicas hold both CPUs; the actor pool needs them
    test_remote_inputs.ray_batch_over_s3_is_byte_identical_to_plain(s3, tmp_path)


def _tree(root: Path, n: int) -> Path:
    for k in range(n):
        sub = root / ("nested/deeper" if k % 4 == 0 else "")
        sub.mkdir(parents=True, exist_ok=True)
        arr = np.random.default_rng(k).integers(0, 255, (80, 96, 3), dtype=np.uint8)
        Image.fromarray(arr).save(sub / f"img{k:02d}.png")
    return root


def _hashes(out: Path) -> dict:
    return {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.rglob("*.mp4"))}


def _plain_and_ray(source: Path, tmp_path: Path, args: list) -> None:
    """The same `batch SOURCE` twice, into tmp_path/plain and (`--ray`, one actor) tmp_path/ray: what each Ray
    Data test compares."""
    from conftest import run_cli

    for out, extra in (("plain", []), ("ray", ["--ray", "--actors", "1"])):
        code, _, err = run_cli("batch", str(source), str(tmp_path / out), *args, *extra)
        assert code == 0, err


@pytest.fixture()
def one_torch_thread():
    """On a CPU, torch's results depend on its thread count; `batch --ray` gives each actor the driver's
    count. One thread keeps this test quick on a busy 2-core machine (no OpenMP oversubscription)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_ray_data_batch_resumes_after_its_driver_is_killed_and_equals_the_plain_batch(ray_cluster, one_torch_thread,
                                                                                      tmp_path):
    """The driver of `batch --ray` killed (SIGKILL) mid-batch: the same command again (two actors) makes only what
    is missing, leaves no temp file, and every video is byte-identical to the plain batch's; the report lists
    every item as the plain batch's does (the ones made before the kill as skipped); a third run makes nothing.
    (One Ray batch run for both: each run starts the actor pool, the slowest part of a Ray batch here.)"""
    import json

    from conftest import batch_killed_at_first_video, run_cli
    from ray import serve

    from stillmotion.batch import plan_batch

    serve.shutdown()  # the Serve tests' model replicas hold both CPUs; the actor pool needs them
    images = _tree(tmp_path / "images", 6)  # two of them in nested folders
    args = [str(images), "--recursive", "--model", "tiny", "--device", "cpu", "--width", "64", "--height", "64",
            "--frames", "2", "--steps", "2", "-q"]
    code, _, err = run_cli("batch", args[0], str(tmp_path / "plain"), *args[1:])
    assert code == 0, err

    out = tmp_path / "ray"
    address = ray.get_runtime_context().gcs_address
    batch_killed_at_first_video([args[0], str(out), *args[1:], "--ray", "--ray-address", address, "--actors", "1"], out)
    made = len(list(out.rglob("*.mp4")))
    assert 1 <= made < 6

    code, _, err = run_cli("batch", args[0], str(out), *args[1:], "--ray", "--actors", "2")
    assert code == 0, err
    report = json.loads((out / "batch-report.json").read_text())
    counts = report["counts"]
    assert counts["skipped"] >= made and counts["done"] == 6 - counts["skipped"] and counts["failed"] == 0
    assert not [p for p in out.rglob(".*") if p.is_file()], "no temp files left behind"
    plain, viaray = _hashes(tmp_path / "plain"), _hashes(out)
    assert len(plain) == 6 and viaray == plain

    want = json.loads((tmp_path / "plain" / "batch-report.json").read_text())
    strip = lambda rows: [{k: r[k] for k in ("seed", "variant", "error")} | {  # noqa: E731
        "output": Path(r["output"]).name} for r in rows]
    assert report["schema"] == want["schema"] and strip(report["items"]) == strip(want["items"])
    assert {r["status"] for r in want["items"]} == {"done"}
    statuses = sorted(r["status"] for r in report["items"])
    assert statuses == sorted(["done"] * counts["done"] + ["skipped"] * counts["skipped"])

    # resume: the same command again makes nothing
    fast = {"width": 64, "height": 64, "num_frames": 2, "num_inference_steps": 2}
    again = plan_batch(images, out, model="tiny", fields=fast, recursive=True)
    assert len(again.skipped) == 6 and not again.to_run


def test_ray_data_batch_makes_a_manifests_keyframe_videos_as_the_plain_batch(ray_cluster, one_torch_thread, tmp_path):
    import json

    from ray import serve

    serve.shutdown()
    for k, name in enumerate(("a.png", "z.png")):
        Image.fromarray(np.random.default_rng(k).integers(0, 255, (80, 96, 3), dtype=np.uint8)).save(tmp_path / name)
    manifest = tmp_path / "list.csv"
    manifest.write_text("image,end_image,output\na.png,z.png,k.mp4\na.png,,p.mp4\n")
    args = ["--model", "tiny", "--device", "cpu", "--width", "64", "--height", "64", "--frames", "3", "--steps", "2",
            "-q"]
    _plain_and_ray(manifest, tmp_path, args)
    assert _hashes(tmp_path / "ray") == _hashes(tmp_path / "plain") and len(_hashes(tmp_path / "plain")) == 2
    keyed = json.loads((tmp_path / "ray" / "k.json").read_text())
    assert keyed["input"]["end_image"]["source"] == str(tmp_path / "z.png") and "keyframes" in keyed
    assert "end_image" not in json.loads((tmp_path / "ray" / "p.json").read_text())["input"]


def test_ray_data_batch_runs_wan_with_a_prompt_as_the_plain_batch(ray_cluster, one_torch_thread, tmp_path):
    """`batch --ray --prompt ...` on a Wan folder (2.1 with its CLIP image encoder, loaded by the actor from the
    folder): the actor runs the Wan family with the prompt; the videos are byte-identical to the plain batch's
    (issue 21). Each layout's plain batch equals its `generate` and so the stock pipeline's
    (tests/test_wan.py: test_each_layout_is_the_same_through_batch_and_a_server); the actor runs the same
    BatchRunner as the plain batch, so one layout through Ray is what differs here."""
    import json

    from ray import serve

    from stillmotion.models.tiny_wan import build_tiny_wan

    serve.shutdown()
    images = _tree(tmp_path / "images", 2)
    model = str(build_tiny_wan(tmp_path / "wan2.1", "wan2.1"))
    args = ["--model", model, "--prompt", "waves roll in", "--device", "cpu", "--width", "64", "--height", "64",
            "--frames", "5", "--steps", "2", "-q", "--recursive"]
    _plain_and_ray(images, tmp_path, args)
    plain = _hashes(tmp_path / "plain")
    assert len(plain) == 2 and _hashes(tmp_path / "ray") == plain
    sidecars = [json.loads(p.read_text()) for p in sorted((tmp_path / "ray").rglob("img*.json"))]
    assert len(sidecars) == 2
    assert all(s["model"]["name"] == model and s["spec"]["prompt"] == "waves roll in" for s in sidecars)


def test_ray_data_batch_runs_framepack_as_the_plain_batch(ray_cluster, one_torch_thread, tmp_path):
    """`batch --ray` on tiny-framepack: the actor runs FramePack's sections (12 frames: 2 sections, trimmed) and the
    videos are byte-identical to the plain batch's (issue 23; the plain run equals the stock pipeline's first frames:
    tests/test_framepack.py). Here, not in test_framepack.py, so that the file and the one Ray cluster stay on one
    xdist worker."""
    import json

    from ray import serve

    serve.shutdown()  # the Serve tests' replicas hold the CPUs; the actor pool needs them
    images = _tree(tmp_path / "images", 2)
    args = ["--model", "tiny-framepack", "--prompt", "a cat walks", "--device", "cpu", "--frames", "12",
            "--steps", "2", "-q", "--recursive"]
    _plain_and_ray(images, tmp_path, args)
    plain = _hashes(tmp_path / "plain")
    assert len(plain) == 2 and _hashes(tmp_path / "ray") == plain
    side = json.loads(next((tmp_path / "ray").rglob("img01.json")).read_text())
    assert side["model"]["name"] == "tiny-framepack" and side["length"]["sections"] == 2


def test_ray_data_batch_writes_tiny_ltx2s_sound_as_the_plain_batch(ray_cluster, one_torch_thread, tmp_path):
    """`batch --ray --model tiny-ltx2 --format gif`: each actor writes the gif, the NAME.wav beside it (the model's
    soundtrack) and the sidecar that records it, byte for byte what the plain batch writes."""
    import json

    from ray import serve

    serve.shutdown()
    images = _tree(tmp_path / "images", 2)
    args = ["--model", "tiny-ltx2", "--device", "cpu", "--width", "64", "--height", "64", "--frames", "9",
            "--steps", "2", "--format", "gif", "-q", "--recursive"]
    _plain_and_ray(images, tmp_path, args)

    def files(out: Path) -> dict:
        return {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted([*out.rglob("*.gif"), *out.rglob("*.wav")])}

    plain = files(tmp_path / "plain")
    assert len(plain) == 4 and sum(k.endswith(".wav") for k in plain) == 2 and files(tmp_path / "ray") == plain
    for p in sorted((tmp_path / "ray").rglob("img*.json")):
        assert json.loads(p.read_text())["audio"]["file"] == p.with_suffix(".wav").name
