"""The web UI: a real browser (Debian's chromium through Playwright) and gradio_client,
both against the shared live server; UI jobs and API jobs share one queue."""

from __future__ import annotations

import shutil
import time

import httpx
import pytest

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]

# what the page reports while a job runs: the status tracker's text and bar width
PROGRESS_JS = """() => {
  const texts = [...document.querySelectorAll('.progress-level-inner, .progress-text, .meta-text')]
      .map(e => e.textContent.trim()).filter(Boolean);
  const bars = [...document.querySelectorAll('.progress-bar')].map(e => e.style.width).filter(Boolean);
  return texts.join(' | ') + ' || ' + bars.join(',');
}"""


def _set_number(page, elem_id: str, value) -> None:
    box = page.locator(f"#{elem_id} input[type=number]").first
    box.fill(str(value))
    box.press("Enter")


@pytest.mark.browser
@pytest.mark.skipif(shutil.which(CHROMIUM) is None, reason="Debian chromium is not installed")
def test_browser_generate_progress_video_and_cancel(live_server, image_file):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page()
            page.goto(live_server.url + "/", wait_until="domcontentloaded", timeout=120_000)
            page.locator("#sm-image input[type=file]").set_input_files(str(image_file), timeout=120_000)
            page.locator("#sm-crop img").wait_for(timeout=60_000)  # the crop preview appears
            page.get_by_text("Advanced settings").click()
            _set_number(page, "sm-width", 64)
            _set_number(page, "sm-height", 64)
            _set_number(page, "sm-frames", 4)
            _set_number(page, "sm-steps", 12)

            page.locator("#sm-generate").click()
            seen = set()
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline:
                seen.add(page.evaluate(PROGRESS_JS))
                if page.locator("#sm-video video").count() and page.locator("#sm-video video").get_attribute("src"):
                    break
                time.sleep(0.05)
            moving = {s for s in seen if s.strip(" |,")}
            assert len(moving) >= 2, seen  # the bar/text changed while the job ran
            video = page.locator("#sm-video video")
            video.wait_for(timeout=30_000)
            page.wait_for_function(
                "() => { const v = document.querySelector('#sm-video video'); return v && v.readyState >= 1 && v.duration > 0; }",
                timeout=60_000)
            assert "Seed used" in page.locator("#sm-info").inner_text()
            assert page.locator("#sm-files").get_by_text(".json").count() >= 1

            # the UI's job is in the shared queue, marked as coming from the UI
            jobs = httpx.get(live_server.url + "/v1/videos", params={"source": "ui", "limit": 5}).json()["data"]
            assert jobs and jobs[0]["status"] == "succeeded"

            # a long job, canceled from the page
            _set_number(page, "sm-steps", 100)
            page.locator("#sm-generate").click()
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                running = httpx.get(live_server.url + "/v1/videos", params={"source": "ui", "status": "running"}).json()
                if running["data"]:
                    break
                time.sleep(0.1)
            page.locator("#sm-cancel").click()
            page.wait_for_function("() => document.querySelector('#sm-info').innerText.includes('Canceled')",
                                   timeout=120_000)
            # the gallery lists finished jobs from the queue
            assert page.locator("#sm-gallery video, #sm-gallery img").count() >= 1
        finally:
            browser.close()


def test_gradio_client_calls_the_ui_endpoint(live_server, image_file, tmp_path):
    from gradio_client import Client, handle_file

    c = Client(live_server.url + "/", verbose=False, download_files=str(tmp_path))
    video, files, info = c.predict(
        handle_file(str(image_file)), 1234, False, 8, 4, 2, 127, 0.02, 64, 64, "crop", 1.0, 3.0, 0, "mp4",
        api_name="/generate",
    )
    path = video["video"] if isinstance(video, dict) else video
    assert path.endswith(".mp4")
    assert "Seed used: 1234" in info
    assert any(str(f).endswith(".json") for f in files)
    from stillmotion.video import read_video

    frames, fps = read_video(path)
    assert frames.shape[0] == 4 and fps == 8
    # and it went through the same queue as the API
    jobs = httpx.get(live_server.url + "/v1/videos", params={"source": "ui"}).json()["data"]
    assert any(j["seed"] == 1234 and j["status"] == "succeeded" for j in jobs)


def test_ui_auth_requires_login(tmp_path):
    from fastapi.testclient import TestClient

    from no_workers import app_without_workers

    app = app_without_workers(data_dir=tmp_path / "d", ui_auth=("ann", "pw"))
    with TestClient(app) as c:
        assert c.get("/config").status_code == 401
        assert c.post("/login", data={"username": "ann", "password": "nope"}).status_code >= 400
        assert c.post("/login", data={"username": "ann", "password": "pw"}).status_code == 200
        assert c.get("/config").status_code == 200
        assert c.get("/v1/videos").status_code == 200  # the API has its own key (none here)


def test_every_numeric_control_takes_the_range_of_its_request_field(tmp_path):
    """The UI offers what the API takes: each slider's and number box's range is its field's (GenerationSpec, or
    INPUTS for lora_scale), read here from the same JSON schema the OpenAPI contract shows."""
    from fastapi.testclient import TestClient
    from no_workers import app_without_workers

    from stillmotion.server.submit import INPUTS
    from stillmotion.server.ui import CONTROLS, UNSET
    from stillmotion.spec import GenerationSpec

    spec = GenerationSpec.model_json_schema()["properties"]

    def bounds(field):
        schema = spec.get(field) or INPUTS[field].schema
        schema = {**schema, **next((s for s in schema.get("anyOf", ()) if "minimum" in s), {})}
        return schema["minimum"], schema["maximum"]

    # two models and a LoRA: the picker and its strength slider show (the folder is not read to build the page)
    app = app_without_workers(data_dir=tmp_path / "d", models=("demo",), loras={"wave": tmp_path / "lora"})
    with TestClient(app) as c:
        components = c.get("/config").json()["components"]
    seen = {}
    for comp in components:
        if comp.get("type") not in ("slider", "number"):
            continue
        props = comp["props"]
        field = CONTROLS[props["elem_id"]]  # every numeric control sets a request field
        lo, hi = bounds(field)
        assert props["maximum"] == hi, field
        # width, height and decode chunk also take UNSET (0, below their range): the field left out
        assert props["minimum"] == lo or (props["minimum"] == UNSET < lo and spec[field]["default"] is None), field
        seen[field] = (props["minimum"], props["maximum"])
    assert set(seen) == set(CONTROLS.values())
    assert seen["motion_bucket_id"] == (1, 1023) and seen["max_guidance_scale"] == (0, 30)  # were 255 and 10


def test_controls_show_by_the_models_family_as_the_schema_says(tmp_path):
    """Each control that sets a spec field shows exactly when the default model's family takes the field (the
    field's x-families in GenerationSpec's schema): SVD's knobs for tiny, the prompt boxes for tiny-wan, those and
    LTX-2's guidance sliders for tiny-ltx2."""
    from fastapi.testclient import TestClient
    from no_workers import app_without_workers

    from stillmotion.engine.config import EngineConfig
    from stillmotion.server.ui import FIELD_CONTROLS
    from stillmotion.spec import family_fields

    takes = family_fields()
    assert {"prompt", "negative_prompt", "guidance_scale", "motion_bucket_id"} <= set(FIELD_CONTROLS.values())
    for default, other, family in (("tiny", "tiny-wan", "svd"), ("tiny-wan", "tiny", "wan"),
                                   ("tiny-ltx2", "tiny", "ltx2"), ("tiny-framepack", "tiny", "framepack")):
        app = app_without_workers(data_dir=tmp_path / default, engine=EngineConfig(model=default), models=(other,))
        with TestClient(app) as c:
            components = c.get("/config").json()["components"]
        props = {p["elem_id"]: p for p in (comp.get("props", {}) for comp in components) if p.get("elem_id")}
        visible = {field: props[elem_id].get("visible", True) is True for elem_id, field in FIELD_CONTROLS.items()}
        assert visible == {field: family in takes.get(field, (family,)) for field in FIELD_CONTROLS.values()}, default
        assert visible["prompt"] == (family != "svd") and visible["motion_bucket_id"] == (family == "svd")
        assert visible["stg_scale"] == visible["audio_guidance_scale"] == (family == "ltx2")
        assert visible["latent_window_size"] == visible["true_cfg_scale"] == (family == "framepack")
        assert props["sm-audio"].get("visible", True) is (family == "ltx2")  # a soundtrack to follow: LTX-2's
