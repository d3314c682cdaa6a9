"""FramePack through stillmotion's one path, against diffusers' stock HunyuanVideoFramepackPipeline (issue 23).

Tiny offline FramePack models (models/tiny_framepack.py: random weights, Llama and CLIP tokenizers made in memory,
no download) saved as folders, a latent window of 2 (a section is 8 frames: S sections make 8S + 1), 64x64, 2 steps.
A frame count of exactly one section (9) equals the stock pipeline's output; other counts are the stock output's
first N (the fewest sections that cover N, trimmed); both sampling types; the end image; progress by section and
step, cancel between steps; refusals exit 2 with nothing written; batch, the API, `--server` and Ray.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import ServeProcess, run_cli
from PIL import Image

WINDOW = 2
ARGS = ["--device", "cpu", "--steps", "2", "--seed", "3", "--width", "64", "--height", "64",
        "--latent-window", str(WINDOW), "--guidance", "10", "--prompt", "a cat walks", "--format", "png"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """FramePack (inverted anti-drifting, a folder with no stillmotion.json: the pipeline's own defaults) and F1
    (vanilla sampling, said by its stillmotion.json); the same tiny weights."""
    from stillmotion.models.tiny_framepack import build_tiny_framepack

    root = tmp_path_factory.mktemp("framepack")
    return {"inverted_anti_drifting": build_tiny_framepack(root / "fp"),
            "vanilla": build_tiny_framepack(root / "f1", sampling_type="vanilla")}


@pytest.fixture(scope="module")
def stock(folders):
    """The stock pipeline's frames (uint8) for each folder, sections and options, computed once each."""
    import torch
    from diffusers import HunyuanVideoFramepackPipeline

    pipes, done = {}, {}

    def run(sampling, image, sections, last_image=None, **kw):
        key = (sampling, image.tobytes(), sections, None if last_image is None else last_image.tobytes(),
               tuple(sorted(kw.items())))
        if key not in done:
            if sampling not in pipes:
                pipes[sampling] = HunyuanVideoFramepackPipeline.from_pretrained(folders[sampling])
                pipes[sampling].set_progress_bar_config(disable=True)
            extra = {"last_image": last_image} if last_image is not None else {}
            video = pipes[sampling](
                image=image, prompt="a cat walks", height=64, width=64, num_inference_steps=2, guidance_scale=10.0,
                num_frames=sections * ((WINDOW - 1) * 4 + 1), latent_window_size=WINDOW, sampling_type=sampling,
                generator=torch.Generator("cpu").manual_seed(3), output_type="np", **extra, **kw).frames[0]
            done[key] = np.clip(np.round(video * 255.0), 0, 255).astype(np.uint8)
        return done[key]

    return run


def _square(tmp_path, seed=0, name="in.png") -> Image.Image:
    img = Image.fromarray(np.random.default_rng(seed).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    img.save(tmp_path / name)
    return img


def _frames(folder) -> np.ndarray:
    return np.stack([np.asarray(Image.open(f).convert("RGB")) for f in sorted(folder.glob("*.png"))])


def _close(a, b) -> bool:
    return a.shape == b.shape and int(np.abs(a.astype(int) - b.astype(int)).max()) <= 2


@pytest.mark.parametrize("sampling", ["inverted_anti_drifting", "vanilla"])
def test_one_section_equals_the_stock_pipeline(folders, stock, tmp_path, sampling):
    img = _square(tmp_path)
    code, _, err = run_cli("generate", str(tmp_path / "in.png"), "--model", str(folders[sampling]), *ARGS,
                           "--frames", "9", "-o", str(tmp_path / "out"))
    assert code == 0, err
    ours = _frames(tmp_path / "out")
    assert ours.shape == (9, 64, 64, 3) and _close(ours, stock(sampling, img, 1))
    length = json.loads((tmp_path / "out.json").read_text())["length"]
    assert (length["sampling_type"], length["sections"], length["frames_made"], length["trimmed"]) == (sampling, 1, 9, 0)


def test_other_counts_are_the_stock_outputs_first_frames_and_duration_is_its_own_sections(folders, stock, tmp_path):
    """--frames 12: two sections (17 frames) trimmed to 12, the stock two-section video's first 12. --duration
    1.5 at 8 fps is the same 12 frames from the same two sections, not chained segments; --segments 2 is the two
    sections whole. --frames 5: one section's first 5."""
    img = _square(tmp_path)
    two = stock("inverted_anti_drifting", img, 2)
    assert two.shape[0] == 17
    folder = str(folders["inverted_anti_drifting"])
    for name, flags, n in (("f12", ["--frames", "12"], 12), ("d", ["--duration", "1.5", "--fps", "8"], 12),
                           ("s", ["--segments", "2"], 17), ("f5", ["--frames", "5"], 5)):
        code, _, err = run_cli("generate", str(tmp_path / "in.png"), "--model", folder, *ARGS, *flags,
                               "-o", str(tmp_path / name))
        assert code == 0, err
        ours = _frames(tmp_path / name)
        ref = two if n > 9 else stock("inverted_anti_drifting", img, 1)
        assert ours.shape[0] == n and _close(ours, ref[:n]), name
        side = json.loads((tmp_path / f"{name}.json").read_text())
        assert side["length"]["frames"] == n and side["length"]["trimmed"] == side["length"]["frames_made"] - n
        assert "segments" not in side and "long" not in side  # FramePack's own sections, no last-frame chaining
    assert json.loads((tmp_path / "d.json").read_text())["length"]["sections"] == 2


def test_end_image_is_the_pipelines_last_image_and_true_cfg_takes_the_negative_prompt(folders, stock, tmp_path):
    img = _square(tmp_path)
    end = _square(tmp_path, seed=1, name="end.png")
    folder = str(folders["inverted_anti_drifting"])
    code, _, err = run_cli("generate", str(tmp_path / "in.png"), "--end-image", str(tmp_path / "end.png"),
                           "--model", folder, *ARGS, "--frames", "9", "-o", str(tmp_path / "e"))
    assert code == 0, err
    assert _close(_frames(tmp_path / "e"), stock("inverted_anti_drifting", img, 1, last_image=end))
    code, _, err = run_cli("generate", str(tmp_path / "in.png"), "--model", folder, *ARGS, "--frames", "9",
                           "--true-cfg", "2", "--negative-prompt", "blurry", "-o", str(tmp_path / "c"))
    assert code == 0, err
    cfg = stock("inverted_anti_drifting", img, 1, true_cfg_scale=2.0, negative_prompt="blurry")
    assert _close(_frames(tmp_path / "c"), cfg) and not np.array_equal(cfg, stock("inverted_anti_drifting", img, 1))


@pytest.mark.parametrize(("model", "flags", "words"), [
    ("inverted_anti_drifting", ["--negative-prompt", "blurry"], "add --true-cfg (true_cfg_scale) above 1"),
    ("vanilla", ["--end-image", "END"], "F1's vanilla sampling (framepack-f1) has none"),
    ("inverted_anti_drifting", ["--motion", "100"], "--motion (motion_bucket_id) is a setting of svd models"),
    ("inverted_anti_drifting", ["--width", "72"], "multiple of 16"),
    ("inverted_anti_drifting", ["--speed", "fast", "--compile"], "--compile is not built for FramePack"),
    ("tiny", ["--latent-window", "3"], "--latent-window (latent_window_size) is a setting of framepack models"),
])
def test_what_framepack_cannot_honour_is_refused_with_nothing_written(folders, tmp_path, model, flags, words):
    _square(tmp_path)
    _square(tmp_path, seed=1, name="end.png")
    flags = [str(tmp_path / "end.png") if f == "END" else f for f in flags]
    code, _, err = run_cli("generate", str(tmp_path / "in.png"), "--model", str(folders.get(model, model)),
                           "--device", "cpu", *flags, "-o", str(tmp_path / "out.mp4"))
    assert code == 2, err
    assert words in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out.mp4").exists() and not (tmp_path / "out.json").exists()


def test_progress_names_sections_and_steps_cancel_stops_between_steps_fast_leaves_exact_exact(tmp_path, monkeypatch):
    """On the built-in tiny-framepack: progress says "section i/n, step j/m"; a cancel asked for at section 2's
    first step stops there; --speed fast records First Block Cache's passes (the threshold raised so the tiny
    model skips blocks) and the exact run after it equals the one before."""
    from stillmotion.engine.core import Engine
    from stillmotion.errors import Cancelled
    from stillmotion.families import framepack
    from stillmotion.spec import GenerationSpec

    engine = Engine("tiny-framepack", device="cpu")
    img = _square(tmp_path)
    spec = GenerationSpec(num_frames=12, num_inference_steps=2, seed=4, prompt="a dog runs")
    messages: list[str] = []
    exact = engine.generate(img, spec, on_progress=lambda p: messages.append(p.message))
    steps = [m for m in messages if m.startswith("section")]
    assert steps == ["section 1/2, step 1/2", "section 1/2, step 2/2", "section 2/2, step 1/2", "section 2/2, step 2/2"]
    assert "decoded section 2/2" in messages and exact.frames.shape == (12, 64, 64, 3)

    seen: list[str] = []
    with pytest.raises(Cancelled):
        engine.generate(img, spec, on_progress=lambda p: seen.append(p.message),
                        should_cancel=lambda: "section 2/2, step 1/2" in seen)
    assert seen[-1] == "section 2/2, step 1/2"

    monkeypatch.setattr(framepack, "FAST_THRESHOLD", 10.0)
    fast = engine.generate(img, spec.update(speed="fast"))
    speed = fast.metadata["speed"]
    assert speed["cache"] == "first-block" and speed["cached_passes"] > 0 and speed["full_passes"] >= 2
    assert not engine.pipe.transformer.is_cache_enabled and "forward" not in engine.pipe.transformer.__dict__
    assert np.array_equal(engine.generate(img, spec).frames, exact.frames)


def test_batch_with_prompts_and_a_row_it_cannot_honour(tmp_path):
    from stillmotion.video import read_sidecar

    _square(tmp_path, 1, "a.png")
    _square(tmp_path, 2, "b.png")
    fp = ["--model", "tiny-framepack", "--device", "cpu", "--frames", "5", "--steps", "2"]
    manifest = tmp_path / "m.csv"
    manifest.write_text("image,prompt\na.png,a cat walks\nb.png,a dog runs\n")
    code, _, err = run_cli("batch", str(manifest), str(tmp_path / "out"), *fp)
    assert code == 0, err
    a, b = read_sidecar(tmp_path / "out" / "a.json"), read_sidecar(tmp_path / "out" / "b.json")
    assert a["model"]["name"] == "tiny-framepack" and (a["spec"]["prompt"], b["spec"]["prompt"]) == (
        "a cat walks", "a dog runs")
    assert a["length"]["frames"] == 5 and a["length"]["sections"] == 1
    bad = tmp_path / "bad.csv"
    bad.write_text("image,prompt,negative_prompt\na.png,a cat,\nb.png,a dog,blurry\n")
    code, _, err = run_cli("batch", str(bad), str(tmp_path / "out2"), *fp)
    assert code == 2 and "line 3: --negative-prompt" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out2").exists()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = ServeProcess(tmp_path_factory.mktemp("fpserve"), "--model", "tiny-framepack")
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


def test_api_and_generate_server_run_framepack_as_a_local_run(server, image_file, tmp_path):
    """A FramePack job over HTTP: its events show sections and steps; `generate --server` gives the bytes and
    sidecar of a local run; a negative prompt without real CFG is a 422 (exit 2) before any job exists."""
    import httpx

    c = httpx.Client(base_url=server.url, timeout=120)
    with open(image_file, "rb") as f:
        r = c.post("/v1/videos", files={"image": ("in.png", f, "image/png")},
                   data={"model": "tiny-framepack", "prompt": "a cat walks", "num_frames": "12",
                         "num_inference_steps": "3", "seed": "2"})
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    messages = []
    with c.stream("GET", f"/v1/videos/{job_id}/events") as events:
        for line in events.iter_lines():
            if line.startswith("data:"):
                job = json.loads(line[5:])
                messages.append(job["progress"]["message"] or "")
                if job["status"] in ("succeeded", "failed", "canceled"):
                    break
    assert job["status"] == "succeeded", job
    # the events carry the latest progress every 50 ms, so a tiny model's fast steps may fall between two of them:
    # a step of some section, and the second section, must show (every step's message: the CLI test above)
    assert any(re.match(r"section [12]/2, step [1-3]/3$", m) for m in messages), messages
    assert any(m.startswith(("section 2/2", "decoded section 2/2")) for m in messages), messages

    flags = ["--model", "tiny-framepack", "--prompt", "a cat walks", "--frames", "12", "--steps", "2", "--seed", "8"]
    code, _, err = run_cli("generate", str(image_file), "--server", server.url, *flags, "-o", str(tmp_path / "w.mp4"))
    assert code == 0, err
    code, _, err = run_cli("generate", str(image_file), "--device", "cpu", *flags, "-o", str(tmp_path / "h" / "w.mp4"))
    assert code == 0, err
    assert (tmp_path / "w.mp4").read_bytes() == (tmp_path / "h" / "w.mp4").read_bytes()
    remote, local = (json.loads((d / "w.json").read_text()) for d in (tmp_path, tmp_path / "h"))
    for k in ("created", "timings"):
        remote.pop(k), local.pop(k)
    assert remote == local and remote["length"]["sections"] == 2

    before = len(c.get("/v1/videos", params={"limit": 100}).json()["data"])
    code, _, err = run_cli("generate", str(image_file), "--server", server.url, *flags, "--negative-prompt", "blurry",
                           "-o", str(tmp_path / "x.mp4"))
    assert code == 2 and "add --true-cfg (true_cfg_scale) above 1" in err and not (tmp_path / "x.mp4").exists()
    assert len(c.get("/v1/videos", params={"limit": 100}).json()["data"]) == before


def test_the_ui_runs_framepack_with_its_own_knobs(server, image_file, tmp_path):
    """The UI endpoint with the model picker on tiny-framepack: its latent window and real CFG reach the job; SVD's
    hidden knobs do not."""
    from gradio_client import Client, handle_file

    c = Client(server.url + "/", verbose=False, download_files=str(tmp_path))
    _video, files, info = c.predict(
        handle_file(str(image_file)), 6, False, 8, 12, 2, 127, 0.02, 64, 64, "crop", 1.0, 3.0, 0, "mp4", None,
        "a cat walks", "blurry", 10.0, "tiny-framepack", "none", 1.0, 0.7, 1.0, 3.0, 7.0, 1.5, 3,  # LTX's hidden: not sent
        api_name="/generate")
    assert "Seed used: 6" in info
    sidecar = next(Path(f) for f in map(str, files) if f.endswith(".json"))
    side = json.loads(sidecar.read_text())
    spec = side["spec"]
    assert (spec["latent_window_size"], spec["true_cfg_scale"], spec["negative_prompt"]) == (3, 1.5, "blurry")
    assert spec["motion_bucket_id"] is None and side["length"]["sections"] == 1 and side["length"]["frames"] == 12


def test_registry_defaults_are_framepacks_app_and_sizes_come_from_its_buckets():
    """30 fps, window 9, 25 steps, distilled guidance 10 with real CFG off (so no batch of two to plan for), 145
    frames (the app's 5 s: 4 sections); sizes from the app's 640 px buckets, nearest the image's aspect (ties to the
    later bucket, as its find_nearest_bucket)."""
    from stillmotion.families import get_family
    from stillmotion.models.registry import REGISTRY
    from stillmotion.spec import GenerationSpec

    fp, f1 = REGISTRY["framepack"], REGISTRY["framepack-f1"]
    s = GenerationSpec(seed=1).resolve(fp, (1920, 1080))
    assert (s.fps, s.latent_window_size, s.num_inference_steps, s.guidance_scale, s.true_cfg_scale, s.num_frames) == (
        30, 9, 25, 10.0, 1.0, 145)
    assert (s.width, s.height) == (832, 480) and not s.uses_cfg
    assert (GenerationSpec(seed=1).resolve(fp, (512, 512)).width, GenerationSpec(seed=1).resolve(fp, (512, 512)).height) \
        == (608, 640)
    assert (GenerationSpec(seed=1).resolve(fp, (768, 1024)).width, GenerationSpec(seed=1).resolve(fp, (768, 1024)).height) \
        == (544, 704)
    family = get_family("framepack")
    assert family.supports_end_image(fp) and not family.supports_end_image(f1)
    assert f1.defaults.sampling_type == "vanilla" and fp.defaults.sampling_type == "inverted_anti_drifting"
    assert family.layout(s) == (145, 4, 9) and family.denoise_steps(s) == 100


def test_a_worker_warms_up_framepack(tmp_path):
    """`serve --model tiny-framepack`: the warm-up run (2 frames, one step) is one section trimmed to 2 frames."""
    from stillmotion.engine.config import EngineConfig
    from stillmotion.jobs.worker import JobWorker

    worker = JobWorker(tmp_path, "w", EngineConfig.build(model="tiny-framepack", device="cpu"))
    worker.load()
    assert worker.info["model"] == "tiny-framepack" and worker.info["warmup_seconds"] > 0
    assert worker.info["defaults"]["latent_window_size"] == 2
