"""Several models and LoRAs on one server (issue 15): `serve --model tiny --model demo --model tiny-wan
--lora wave=FOLDER`, SVD and Wan side by side (issue 21).

One real server on 127.0.0.1 (three built-in models, a LoRA trained here for one step on tiny), jobs at
64x64 with 4 frames (Wan: 5) and 2 steps. The queue's model affinity is a unit test on the SQLite store.
"""

from __future__ import annotations

import io
import time

import json
import shutil

import httpx
import numpy as np
import pytest

from conftest import ServeProcess, run_cli
from test_server_ui import ARGS, CHROMIUM

SMALL = {"width": "64", "height": "64", "num_frames": "4", "num_inference_steps": "2", "seed": "3", "fps": "7"}


@pytest.fixture(scope="module")
def lora_folder(tmp_path_factory):
    from stillmotion.train.synthetic import write_clips
    from stillmotion.train.trainer import TrainConfig, train

    root = tmp_path_factory.mktemp("lora")
    write_clips(root / "clips", 2, seed=1, num_frames=8, fps=8, format="mp4")
    cfg = TrainConfig(base="tiny", clips=str(root / "clips"), output=str(root / "wave"), steps=1, batch_size=1,
                      lr=5e-2, num_frames=8, width=64, height=64, fps=8, checkpoint_every=1, validate_every=100,
                      validation_steps=1, device="cpu", lora_rank=4)
    train(cfg, log=lambda _m: None, progress=False)
    return root / "wave"


@pytest.fixture(scope="module")
def multi(tmp_path_factory, lora_folder):
    # ServeProcess starts `serve --model tiny ...`: tiny is the default, demo the second model, tiny-wan (a Wan
    # model) the third
    srv = ServeProcess(tmp_path_factory.mktemp("multi"), "--model", "demo", "--model", "tiny-wan",
                       "--lora", f"wave={lora_folder}")
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


def _post(c: httpx.Client, image_file, **fields) -> httpx.Response:
    with open(image_file, "rb") as f:
        return c.post("/v1/videos", files={"image": ("input.png", f, "image/png")},
                      data={**SMALL, **{k: str(v) for k, v in fields.items()}})


def _run(c: httpx.Client, image_file, **fields) -> dict:
    r = _post(c, image_file, **fields)
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        job = c.get(f"/v1/videos/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "canceled"):
            assert job["status"] == "succeeded", job
            return job
        time.sleep(0.1)
    raise TimeoutError(job)


def _frames(c: httpx.Client, job: dict) -> np.ndarray:
    import av

    data = c.get(f"/v1/videos/{job['id']}/content").content
    with av.open(io.BytesIO(data)) as box:
        return np.stack([f.to_ndarray(format="rgb24") for f in box.decode(video=0)])


def _sidecar(c: httpx.Client, job: dict) -> dict:
    return c.get(f"/v1/videos/{job['id']}/content", params={"variant": "sidecar"}).json()


def test_requests_pick_the_model_and_lora_and_the_server_lists_them(multi, image_file):
    c = httpx.Client(base_url=multi.url, timeout=120)
    plain = _run(c, image_file)
    assert plain["model"] == "tiny"  # no model named: the first one served
    assert _sidecar(c, plain)["model"]["name"] == "tiny"
    assert "lora" not in _sidecar(c, plain)["model"]

    demo = _run(c, image_file, model="demo")
    side = _sidecar(c, demo)
    assert demo["model"] == "demo" and side["model"]["name"] == "demo" and side["model"]["weights"]
    assert not np.array_equal(_frames(c, demo), _frames(c, plain))

    # the LoRA: applied to its job only, named with its hash in the sidecar; the next plain job is unchanged
    styled = _run(c, image_file, lora="wave", lora_scale="1.5")
    lora = _sidecar(c, styled)["model"]["lora"]
    assert lora["name"] == "wave" and lora["scale"] == 1.5 and len(lora["weights"]["lora.safetensors"]) == 64
    assert np.abs(_frames(c, styled).astype(int) - _frames(c, plain).astype(int)).mean() > 0.5
    again = _run(c, image_file)
    assert np.array_equal(_frames(c, again), _frames(c, plain))
    assert "lora" not in _sidecar(c, again)["model"]

    # /readyz and /metrics: the models, which are loaded, the swaps (tiny -> demo -> tiny: both stay resident
    # on a CPU with no --max-memory, so demo's load was the one swap-in; tiny-wan has not run yet)
    ready = c.get("/readyz").json()
    assert [(m["name"], m["default"], m["loaded"]) for m in ready["models"]] == [
        ("tiny", True, True), ("demo", False, True), ("tiny-wan", False, False)]
    assert ready["loras"] == ["wave"]
    assert ready["loaded_model"] == "tiny" and ready["swaps"] == 1 and ready["swap_seconds"] > 0
    metrics = c.get("/metrics").text
    assert 'stillmotion_model_loaded{default="true",model="tiny"} 1.0' in metrics
    assert 'stillmotion_model_loaded{default="false",model="demo"} 1.0' in metrics
    assert 'stillmotion_model_loaded{default="false",model="tiny-wan"} 0.0' in metrics
    assert "stillmotion_model_swaps_total 1.0" in metrics


WAN = {"model": "tiny-wan", "num_frames": 5}  # Wan makes 4k+1 frames


def test_wan_beside_svd_a_prompt_runs_and_what_wan_cannot_honour_is_refused(multi, image_file):
    """A Wan job on the server that runs SVD: its prompt reaches the sidecar; the affinity claim moves between
    families. SVD's knobs for Wan, a prompt for SVD, tiny's LoRA on Wan: 422 with one line, before a job exists."""
    c = httpx.Client(base_url=multi.url, timeout=120)
    wan = _run(c, image_file, **WAN, prompt="waves roll in", negative_prompt="blurry", guidance_scale=4)
    side = _sidecar(c, wan)
    assert wan["model"] == "tiny-wan" and side["model"]["name"] == "tiny-wan"
    assert (side["spec"]["prompt"], side["spec"]["negative_prompt"], side["spec"]["guidance_scale"]) == (
        "waves roll in", "blurry", 4.0)
    assert side["spec"]["motion_bucket_id"] is None and _frames(c, wan).shape == (5, 64, 64, 3)
    assert _run(c, image_file)["model"] == "tiny"  # and back to SVD
    before = len(c.get("/v1/videos", params={"limit": 100}).json()["data"])
    for fields, words in (({**WAN, "motion_bucket_id": 100}, "--motion (motion_bucket_id) is a setting of svd "
                           "models; tiny-wan is a Wan model: leave it out."),
                          ({"prompt": "a boat"}, "--prompt (prompt) is a setting of framepack, ltx, ltx2 and wan models; tiny is a"),
                          ({**WAN, "num_frames": 4}, "Wan makes 4k+1 frames: use 1 or 5"),
                          ({**WAN, "lora": "wave"}, "lora: 'wave' was trained on 'tiny'; send model='tiny' with it.")):
        r = _post(c, image_file, **fields)
        assert r.status_code == 422, r.text
        error = r.json()["error"]
        assert error["code"] == "invalid_input" and words in error["message"], error
        assert "\n" not in error["message"]
    r = c.post("/v1/videos", json={"image": "aGk=", "model": "tiny-wan", "noise_aug_strength": 0.1})
    assert r.status_code == 422 and "noise_aug_strength" in r.json()["error"]["message"]  # before the image
    assert len(c.get("/v1/videos", params={"limit": 100}).json()["data"]) == before


def test_generate_server_carries_the_prompt_and_matches_a_local_run(multi, image_file, tmp_path):
    """`generate --server URL --model tiny-wan --prompt ...`: the server's video and sidecar are a local run's."""
    flags = ["--model", "tiny-wan", "--prompt", "waves roll in", "--guidance", "3", "--width", "64", "--height",
             "64", "--frames", "5", "--steps", "2", "--seed", "8"]
    code, _, err = run_cli("generate", str(image_file), "--server", multi.url, *flags, "-o", str(tmp_path / "w.mp4"))
    assert code == 0, err
    code, _, err = run_cli("generate", str(image_file), "--device", "cpu", *flags, "-o", str(tmp_path / "here" / "w.mp4"))
    assert code == 0, err
    assert (tmp_path / "w.mp4").read_bytes() == (tmp_path / "here" / "w.mp4").read_bytes()
    remote, local = (json.loads((d / "w.json").read_text()) for d in (tmp_path, tmp_path / "here"))
    for k in ("created", "timings"):
        remote.pop(k), local.pop(k)
    assert remote == local and remote["spec"]["prompt"] == "waves roll in"
    code, _, err = run_cli("generate", str(image_file), "--server", multi.url, *flags, "--motion", "90",
                           "-o", str(tmp_path / "x.mp4"))
    assert code == 2 and "--motion (motion_bucket_id) is a setting of svd models" in err
    assert not (tmp_path / "x.mp4").exists()


def test_unknown_model_or_lora_is_refused_naming_what_is_served(multi, image_file):
    c = httpx.Client(base_url=multi.url, timeout=60)
    for field, value, names in (("model", "svd", ("'tiny'", "'demo'")), ("lora", "nope", ("'wave'",))):
        with open(image_file, "rb") as f:
            r = c.post("/v1/videos", files={"image": ("input.png", f, "image/png")}, data={**SMALL, field: value})
        assert r.status_code == 422, r.text
        message = r.json()["error"]["message"]
        assert all(n in message for n in names), message
    r = c.post("/v1/videos", json={"image": "aGk=", "lora": "wave", "lora_scale": "strong"})
    assert r.status_code == 422 and "lora_scale" in r.json()["error"]["message"]
    # the LoRA was trained on tiny: with demo it is refused before a job exists
    with open(image_file, "rb") as f:
        r = c.post("/v1/videos", files={"image": ("input.png", f, "image/png")},
                   data={**SMALL, "model": "demo", "lora": "wave"})
    assert r.status_code == 422 and "trained on 'tiny'" in r.json()["error"]["message"]


def test_ui_shows_the_picker_only_when_there_is_a_choice(multi, image_file, tmp_path):
    from fastapi.testclient import TestClient
    from gradio_client import Client, handle_file
    from no_workers import app_without_workers

    c = Client(multi.url + "/", verbose=False, download_files=str(tmp_path))
    params = [p["parameter_name"] for p in c.view_api(print_info=False, return_format="dict")
              ["named_endpoints"]["/generate"]["parameters"]]
    # the picker's inputs after the prompt fields, as before; LTX's and FramePack's terms after them, then the
    # soundtrack to follow (calls without them work)
    assert params[-10:] == ["model", "lora", "lora_scale", "guidance_rescale", "stg", "modality", "audio_guidance",
                            "true_cfg", "latent_window", "audio"]
    _video, _files, info = c.predict(
        handle_file(str(image_file)), 5, False, 7, 4, 2, 127, 0.02, 64, 64, "crop", 1.0, 3.0, 0, "mp4", None,
        "", "", 5.0, "demo", "none", 1.0, api_name="/generate")
    assert "Seed used: 5" in info
    jobs = httpx.get(multi.url + "/v1/videos", params={"source": "ui"}).json()["data"]
    assert jobs[0]["model"] == "demo"

    # one model and no LoRA: no picker, the endpoint's inputs as before
    app = app_without_workers(data_dir=tmp_path / "one")
    with TestClient(app) as tc:
        config = tc.get("/config").json()
    ids = {comp.get("props", {}).get("elem_id") for comp in config["components"]}
    assert "sm-image" in ids and not ids & {"sm-model", "sm-lora", "sm-lora-scale"}


@pytest.mark.browser
@pytest.mark.skipif(shutil.which(CHROMIUM) is None, reason="Debian chromium is not installed")
def test_browser_shows_each_models_own_controls_and_runs_a_prompt_on_wan(multi, image_file):
    """The page shows a model's controls by its family (the spec's x-families): tiny's motion knobs and no prompt;
    picking tiny-wan shows the prompt boxes and hides SVD's; a prompt on tiny-wan makes a video."""
    from playwright.sync_api import sync_playwright

    def shown(elem_id: str) -> bool:
        return page.locator(f"#{elem_id}").is_visible()

    def pick(model: str) -> None:
        page.locator("#sm-model input").click()
        page.get_by_role("option", name=model, exact=True).click()

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page()
            page.goto(multi.url + "/", wait_until="domcontentloaded", timeout=120_000)
            page.locator("#sm-image input[type=file]").set_input_files(str(image_file), timeout=120_000)
            page.locator("#sm-motion").wait_for(timeout=60_000)
            assert shown("sm-noise") and not shown("sm-prompt") and not shown("sm-guidance")  # tiny: SVD
            pick("tiny-wan")
            page.locator("#sm-prompt textarea").wait_for(timeout=30_000)
            assert shown("sm-negative-prompt") and shown("sm-guidance") and not shown("sm-motion")
            assert not shown("sm-noise") and not shown("sm-lora")  # the LoRA is tiny's: Wan takes none
            assert "tiny-wan" in page.locator("#sm-about").inner_text()
            page.locator("#sm-prompt textarea").fill("waves roll in")
            page.locator("#sm-generate").click()  # tiny-wan's defaults: 64x64 (square), 9 frames, 4 steps
            page.wait_for_function("() => { const v = document.querySelector('#sm-video video'); "
                                   "return v && v.getAttribute('src'); }", timeout=240_000)
            assert "9 frames, 64x64" in page.locator("#sm-info").inner_text()
            job = httpx.get(multi.url + "/v1/videos", params={"source": "ui", "limit": 1}).json()["data"][0]
            assert job["model"] == "tiny-wan" and job["status"] == "succeeded"
            side = httpx.get(f"{multi.url}/v1/videos/{job['id']}/content", params={"variant": "sidecar"}).json()
            assert side["spec"]["prompt"] == "waves roll in" and side["spec"]["motion_bucket_id"] is None
            pick("tiny")  # back: SVD's knobs, no prompt
            page.locator("#sm-motion").wait_for(timeout=30_000)
            assert not shown("sm-prompt") and shown("sm-lora")
        finally:
            browser.close()


def test_serve_refuses_a_folder_that_is_not_a_lora(tmp_path):
    from conftest import run_cli

    code, _out, err = run_cli("serve", "--model", "tiny", "--lora", f"x={tmp_path}", "--data-dir", str(tmp_path / "d"))
    assert code == 2 and "not a LoRA folder" in err
    # --ray serves one model for now: several are refused with one line, before Ray starts
    code, _out, err = run_cli("serve", "--ray", "--model", "tiny", "--model", "demo", "--data-dir", str(tmp_path / "r"))
    assert code == 2 and "--ray serves one model" in err


# --------------------------------------------------------------------------- the queue's model affinity
def _queue(tmp_path, models):
    from stillmotion.jobs.store import SQLiteJobStore

    store = SQLiteJobStore(tmp_path / "jobs.sqlite3")
    ids = [store.create({}, model=m)[0].id for m in models]
    return store, ids


def test_claim_prefers_the_loaded_model_with_a_bounded_wait(tmp_path):
    store, ids = _queue(tmp_path, ["a", "b", "a", "b", "a", "a", "a", "a", "a"])
    order = []
    for _ in ids:
        job = store.claim_preferring("w", "a", default_model="a", max_passed=3, max_wait=600)
        order.append(ids.index(job.id))
    # job 1 (model b) lets three "a" jobs go first (2, 4, 5), then runs; job 3 (b) was passed by 4 and 5
    # already, so it lets one more go (6) and runs: no job waits behind more than three affinity picks
    assert order == [0, 2, 4, 5, 1, 6, 3, 7, 8]
    assert store.claim_preferring("w", "a") is None


def test_claim_affinity_ends_once_a_job_has_waited_long_enough(tmp_path):
    store, ids = _queue(tmp_path, ["b", "a", "a"])
    time.sleep(0.3)
    job = store.claim_preferring("w", "a", default_model="a", max_passed=10, max_wait=0.2)
    assert job.id == ids[0]  # waited past max_wait: it goes first though "a" is loaded


def test_claim_keeps_submission_order_without_affinity(tmp_path):
    store, ids = _queue(tmp_path, ["b", "a", None, "a"])
    assert [store.claim("w").id for _ in ids] == ids  # one model (no prefer): plain FIFO
    store2, ids2 = _queue(tmp_path / "2", ["b", None, "a"])
    # max_passed=0 turns affinity off; jobs with no model belong to the default model
    assert store2.claim_preferring("w", "a", default_model="a", max_passed=0).id == ids2[0]
    assert store2.claim_preferring("w", "a", default_model="a").id == ids2[1]


def test_the_planner_keeps_a_second_pipeline_only_when_it_fits(tiny_engine):
    from types import SimpleNamespace

    from stillmotion.engine.config import EngineConfig
    from stillmotion.jobs.worker import CPU_MAX_RESIDENT, _weight_bytes, fits_beside

    resident = [SimpleNamespace(device="cpu", pipe=tiny_engine.pipe)]
    held = _weight_bytes(tiny_engine.pipe)
    assert fits_beside(EngineConfig.build(model="tiny"), [])  # nothing loaded: always
    # a CPU with no --max-memory: a fixed number of pipelines
    assert fits_beside(EngineConfig.build(model="demo"), resident)
    assert not fits_beside(EngineConfig.build(model="demo"), resident * CPU_MAX_RESIDENT)
    # a budget (--max-memory; on a GPU the free memory): both pipelines' weights and a quarter to spare
    assert fits_beside(EngineConfig.build(model="tiny", max_memory=held * 10), resident)
    assert not fits_beside(EngineConfig.build(model="tiny", max_memory=int(held * 1.5)), resident)


def test_a_worker_warms_up_a_model_of_any_family(tmp_path):
    """`serve --model tiny-wan`: the warm-up run takes the fewest frames the family makes (Wan: 5, not SVD's 2)."""
    from stillmotion.engine.config import EngineConfig
    from stillmotion.jobs.worker import JobWorker

    worker = JobWorker(tmp_path, "w", EngineConfig.build(model="tiny-wan", device="cpu"))
    worker.load()
    assert worker.info["model"] == "tiny-wan" and worker.info["defaults"]["num_frames"] == 9
    assert worker.info["warmup_seconds"] > 0
