"""Keyframes: a video from a first and a last image (engine/keyframes.py, ViBiDSampler on SVD).

The tiny model (random weights) checks the plumbing: the end image changes the
output, no end image changes nothing, the sidecar records it, every front end
carries it to the engine, and bad combinations are refused in one line. The
demo model (trained here, never on these images) checks what a user sees: the
video ends on the end image, and clearly closer to it than a plain video does.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from conftest import run_cli
from stillmotion import GenerationSpec, InvalidInput

SMALL = dict(width=64, height=64, num_frames=4, num_inference_steps=2)
FLAGS = ["--model", "tiny", "--device", "cpu", "--width", "64", "--height", "64", "--frames", "4", "--steps", "2"]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture()
def end_file(tmp_path) -> Path:
    """A second image, nothing like `image_file`: flat colour bands, another size (cropped to the same output)."""
    arr = np.zeros((80, 120, 3), np.uint8)
    arr[:, :40] = (220, 40, 40)
    arr[:, 40:80] = (40, 200, 60)
    arr[:, 80:] = (30, 60, 230)
    p = tmp_path / "end.png"
    Image.fromarray(arr).save(p)
    return p


# --------------------------------------------------------------------------- the engine
def test_end_image_changes_the_video_and_no_end_image_changes_nothing(tiny_engine, image_file, end_file, tmp_path):
    spec = GenerationSpec(seed=21, **SMALL)
    plain = tiny_engine.generate(str(image_file), spec)
    again = tiny_engine.generate(str(image_file), spec, end_image=None)
    keyed = tiny_engine.generate(str(image_file), spec, end_image=str(end_file))
    assert np.array_equal(plain.frames, again.frames)  # the plain path (diffusers' own call) is untouched
    assert keyed.frames.shape == plain.frames.shape
    assert not np.array_equal(keyed.frames, plain.frames)
    assert "keyframes" not in plain.metadata and "end_image" not in plain.metadata["input"]

    art = keyed.save(tmp_path / "k.mp4")
    side = json.loads(art.sidecar.read_text())
    assert side["input"]["end_image"]["sha256"] == _sha(end_file)
    assert side["input"]["end_image"]["size"] == [120, 80]
    assert side["input"]["sha256"] == _sha(image_file)
    assert side["keyframes"]["method"] == "vibidsampler"
    # the same seed and end image give the same video
    assert np.array_equal(tiny_engine.generate(str(image_file), spec, end_image=str(end_file)).frames, keyed.frames)


def test_demo_model_ends_on_the_end_image(demo_engine):
    """On a scene it never saw, filmed with a camera it never learned (a pan left), the keyframe video's
    first frame is the first image and its last frame is far closer to the end image than a plain video's."""
    from stillmotion.metrics import coherence_psnr, psnr
    from stillmotion.train.synthetic import Camera, film, make_scene

    engine = demo_engine
    clip = film(make_scene(np.random.default_rng(99), 128), 64, 64, 4, Camera((-3.0, 0.0), 0.0))
    first, last = Image.fromarray(clip[0]), Image.fromarray(clip[-1])
    spec = GenerationSpec(seed=3, width=64, height=64, num_frames=4, num_inference_steps=4)
    plain = engine.generate(first, spec).frames
    keyed = engine.generate(first, spec, end_image=last).frames
    assert psnr(keyed[-1], clip[-1]) > psnr(plain[-1], clip[-1]) + 6  # dB
    assert psnr(keyed[0], clip[0]) >= psnr(plain[0], clip[0])
    assert coherence_psnr(keyed) > 20  # neighbouring frames still follow each other


def test_fast_mode_loop_and_chain(tiny_engine, image_file, end_file):
    spec = GenerationSpec(seed=5, **SMALL)
    fast = tiny_engine.generate(str(image_file), spec.update(speed="fast"), end_image=str(end_file))
    assert fast.metadata["speed"]["mode"] == "fast" and fast.metadata["speed"]["cached_steps"] > 0

    # three keyframes: two segments of 4 frames sharing the middle keyframe's frame
    chain = tiny_engine.generate(str(image_file), spec, end_image=[str(end_file), str(image_file)])
    assert len(chain.frames) == 4 + 3
    assert [s["conditioned_on"] for s in chain.metadata["segments"]] == [["image", "keyframe 1"],
                                                                          ["keyframe 1", "keyframe 2"]]
    assert [k["sha256"] for k in chain.metadata["input"]["keyframes"]] == [_sha(end_file), _sha(image_file)]

    # --loop with an end image: a last segment back to the first image, its repeated last frame dropped
    loop = tiny_engine.generate(str(image_file), spec.update(loop="blend"), end_image=str(end_file))
    assert len(loop.frames) == 4 + 3 - 1
    assert loop.metadata["keyframes"]["loop"].startswith("keyframe")

    # interpolation after
    interp = tiny_engine.generate(str(image_file), spec.update(interpolate=2), end_image=str(end_file))
    assert len(interp.frames) == 2 * 4 - 1 and interp.fps == 2 * interp.spec.fps


def test_refusals_are_one_line(tiny_engine, image_file, end_file):
    for bad, words in ((dict(duration=2.0), "--keyframes"), (dict(segments=2), "--keyframes"),
                       (dict(num_frames=2), "at least 3 frames")):
        with pytest.raises(InvalidInput) as e:
            tiny_engine.generate(str(image_file), GenerationSpec(seed=1, **{**SMALL, **bad}), end_image=str(end_file))
        assert words in e.value.message and "\n" not in e.value.message
    with pytest.raises(InvalidInput):
        tiny_engine.generate(str(image_file), GenerationSpec(seed=1, **SMALL), end_image=b"not an image")


def test_the_planner_counts_the_second_conditioning():
    from stillmotion.engine import memory, timing
    from stillmotion.engine.shapes import model_shape

    shape = model_shape("tiny", "fp32")
    plan = memory.MemoryPlan(4)
    plain = memory.estimate_peak(shape, 4, 64, 64, plan, cfg=True)
    keyed = memory.estimate_peak(shape, 4, 64, 64, plan, cfg=True, keyframe=True)
    assert keyed.stages["denoise"] > plain.stages["denoise"]
    assert keyed.stages["decode"] == plain.stages["decode"]
    f0 = timing.video_flops(shape, 4, 64, 64, 3)
    f1 = timing.video_flops(shape, 4, 64, 64, 3, keyframe=True)
    assert f1["per_video"] > f0["per_video"] + 3 * f0["unet_step"] * 0.99  # three more UNet passes


# --------------------------------------------------------------------------- front ends
def test_cli_end_image_and_keyframes(image_file, end_file, tmp_path):
    from stillmotion.video import read_sidecar, read_video

    out = tmp_path / "k.mp4"
    code, stdout, err = run_cli("generate", str(image_file), "--end-image", str(end_file), *FLAGS, "--seed", "3",
                                "-o", str(out), "--json")
    assert code == 0, err
    side = read_sidecar(out.with_suffix(".json"))
    assert side["input"]["end_image"] == {"source": str(end_file), "sha256": _sha(end_file), "size": [120, 80]}
    assert len(read_video(out)[0]) == 4
    again = tmp_path / "again.mp4"  # --from the sidecar: the same end image, the same video
    code, _, err = run_cli("generate", "--from", str(out.with_suffix(".json")), "-o", str(again))
    assert code == 0, err
    assert np.array_equal(read_video(again)[0], read_video(out)[0])

    chain = tmp_path / "chain.mp4"
    code, _, err = run_cli("generate", "--keyframes", f"{image_file},{end_file},{image_file}", *FLAGS,
                           "-o", str(chain))
    assert code == 0, err
    assert len(read_video(chain)[0]) == 7
    assert read_sidecar(chain.with_suffix(".json"))["input"]["keyframes"][0]["sha256"] == _sha(end_file)


@pytest.mark.parametrize("args, words", [
    (["--duration", "2"], "--keyframes"),
    (["--keyframes", "a.png"], "leave out IMAGE"),
])
def test_cli_refuses_in_one_line(image_file, end_file, tmp_path, args, words):
    code, _, err = run_cli("generate", str(image_file), "--end-image", str(end_file), *FLAGS, *args,
                           "-o", str(tmp_path / "x.mp4"))
    assert code == 2
    assert words in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.mp4").exists()


def test_cli_keyframes_refusals(tmp_path, image_file, end_file):
    code, _, err = run_cli("generate", "--keyframes", str(image_file), *FLAGS, "-o", str(tmp_path / "x.mp4"))
    assert code == 2 and "at least two" in err
    code, _, err = run_cli("generate", "--keyframes", f"{image_file},{end_file}", "--duration", "3", *FLAGS,
                           "-o", str(tmp_path / "x.mp4"))
    assert code == 2 and "the keyframes set the segments" in err and len(err.strip().splitlines()) == 1


def test_api_multipart_and_json_end_image(live_server, image_file, end_file):
    fields = {k: str(v) for k, v in SMALL.items()}
    with httpx.Client(base_url=live_server.url, timeout=120) as c:
        with open(image_file, "rb") as a, open(end_file, "rb") as b:
            r = c.post("/v1/videos", files={"image": ("input.png", a, "image/png"),
                                            "end_image": ("end.png", b, "image/png")}, data=fields)
        assert r.status_code == 202, r.text
        body = {"image": base64.b64encode(image_file.read_bytes()).decode(),
                "end_image": base64.b64encode(end_file.read_bytes()).decode(), **SMALL}
        r2 = c.post("/v1/videos", json=body)
        assert r2.status_code == 202, r2.text
        bad = c.post("/v1/videos", json={**body, "duration": 2})
        assert bad.status_code in (400, 422) and "--keyframes" in bad.json()["error"]["message"]
        for job in (r.json(), r2.json()):
            job = _wait(c, job["id"])
            assert job["status"] == "succeeded", job
            side = c.get(job["urls"]["content"], params={"variant": "sidecar"}).json()
            assert side["input"]["end_image"]["sha256"] == _sha(end_file)
            assert side["keyframes"]["method"] == "vibidsampler"


def _wait(c, job_id, timeout=240) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = c.get(f"/v1/videos/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "canceled"):
            return job
        time.sleep(0.2)
    raise TimeoutError(job_id)


def test_ui_end_image_input(live_server, image_file, end_file, tmp_path):
    from gradio_client import Client, handle_file

    c = Client(live_server.url + "/", verbose=False, download_files=str(tmp_path))
    video, files, info = c.predict(
        handle_file(str(image_file)), 4321, False, 8, 4, 2, 127, 0.02, 64, 64, "crop", 1.0, 3.0, 0, "mp4",
        handle_file(str(end_file)), api_name="/generate",
    )
    sidecar = next(Path(f) for f in files if str(f).endswith(".json"))
    side = json.loads(sidecar.read_text())
    assert side["input"]["end_image"]["sha256"] == _sha(end_file) and side["spec"]["seed"] == 4321


def test_manifest_end_image_column(tmp_path, tiny_engine, image_file, end_file):
    from stillmotion.batch import plan_batch, run_batch
    from stillmotion.engine.config import EngineConfig
    from stillmotion.video import read_sidecar

    manifest = tmp_path / "list.csv"
    manifest.write_text(f"image,end_image,output\n{image_file.name},{end_file.name},k.mp4\n{image_file.name},,p.mp4\n")
    out = tmp_path / "out"
    plan = plan_batch(manifest, out, model="tiny", fields=SMALL)
    assert run_batch(plan, EngineConfig(model="tiny"), engine=tiny_engine).count("done") == 2
    keyed, plain = read_sidecar(out / "k.json"), read_sidecar(out / "p.json")
    assert keyed["input"]["end_image"]["sha256"] == _sha(end_file) and keyed["keyframes"]["method"] == "vibidsampler"
    assert "end_image" not in plain["input"]
    # resume: nothing to do again; a changed end image makes its video again
    assert run_batch(plan_batch(manifest, out, model="tiny", fields=SMALL), EngineConfig(model="tiny"),
                     engine=tiny_engine).count("done") == 0
    Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(end_file)
    again = run_batch(plan_batch(manifest, out, model="tiny", fields=SMALL), EngineConfig(model="tiny"), engine=tiny_engine)
    assert again.count("done") == 1 and read_sidecar(out / "k.json")["input"]["end_image"]["sha256"] == _sha(end_file)

    bad = tmp_path / "bad.csv"
    bad.write_text(f"image,end_image,duration\n{image_file.name},nowhere.png,\n{image_file.name},{end_file.name},3\n")
    with pytest.raises(InvalidInput) as e:
        plan_batch(bad, out, model="tiny", fields=SMALL)
    assert "line 2: end_image 'nowhere.png' not found" in e.value.message
    assert "line 3: --duration/--segments do not go with an end image" in e.value.message


def test_estimate_counts_the_extra_unet_passes():
    code, plain, err = run_cli("estimate", "--model", "tiny", "--frames", "4", "--width", "64", "--height", "64",
                               "--steps", "3", "--json")
    assert code == 0, err
    code, keyed, err = run_cli("estimate", "--model", "tiny", "--frames", "4", "--width", "64", "--height", "64",
                               "--steps", "3", "--keyframe", "--json")
    assert code == 0, err
    p, k = json.loads(plain), json.loads(keyed)
    assert k["flops"]["unet_passes_per_step"] == 2 and p["flops"]["unet_passes_per_step"] == 1
    assert k["flops"]["per_video"] - p["flops"]["per_video"] >= 3 * p["flops"]["unet_step"]


def test_a_scheduler_keyframes_cannot_use_is_refused_in_one_line():
    from types import SimpleNamespace

    from stillmotion.engine import keyframes

    pipe = SimpleNamespace(scheduler=SimpleNamespace(config=SimpleNamespace(prediction_type="sample")))
    with pytest.raises(InvalidInput, match="leave out the end image") as e:
        keyframes.denoise(pipe, None, None, GenerationSpec(seed=1, **SMALL), None)
    assert "\n" not in e.value.message
