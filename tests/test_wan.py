"""Wan 2.x through stillmotion's one path, against diffusers' stock WanImageToVideoPipeline.

Tiny offline Wan models (models/tiny_wan.py: random weights, a tokenizer made in memory, no download)
are saved to folders the way users keep real ones; `stillmotion generate --model FOLDER` must give the
frames the stock pipeline gives for the same prepared image, prompt, size, frames, steps and seed
(within 2 levels: the video is decoded from H.264 only in other tests; here PNG frames are compared).
What Wan cannot honour is refused with exit 2 and nothing written.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import run_cli
from PIL import Image

ARGS = ["--device", "cpu", "--frames", "5", "--steps", "2", "--seed", "3", "--format", "png"]


@pytest.fixture(scope="module")
def wan_folders(tmp_path_factory):
    """One saved folder per Wan layout: 2.1 I2V (CLIP image encoder), 2.2 A14B (two experts), 2.2 TI2V-5B."""
    from stillmotion.models.tiny_wan import build_tiny_wan

    root = tmp_path_factory.mktemp("wan")
    return {v: build_tiny_wan(root / v, v) for v in ("wan2.1", "wan2.2-a14b", "wan2.2-ti2v-5b")}


def _frames(folder) -> np.ndarray:
    return np.stack([np.asarray(Image.open(f).convert("RGB")) for f in sorted(folder.glob("*.png"))])


def _stock(folder, image, size, prompt, negative, guidance, seed=3, frames=5, steps=2, last_image=None):
    import torch
    from diffusers import WanImageToVideoPipeline

    pipe = WanImageToVideoPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    prepared = Image.open(image).convert("RGB").resize(size, Image.LANCZOS) if not isinstance(image, Image.Image) else image
    kw = {"last_image": last_image} if last_image is not None else {}
    video = pipe(image=prepared, prompt=prompt, negative_prompt=negative, height=size[1], width=size[0],
                 num_frames=frames, num_inference_steps=steps, guidance_scale=guidance,
                 generator=torch.Generator("cpu").manual_seed(seed), output_type="np", **kw).frames[0]
    return np.clip(np.round(video * 255.0), 0, 255).astype(np.uint8)


def _square(tmp_path, seed=0, name="in.png") -> Image.Image:
    """A square input, so that crop/resize to a square size is a plain resize."""
    arr = np.random.default_rng(seed).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    img = Image.fromarray(arr)
    img.save(tmp_path / name)
    return img


@pytest.mark.parametrize("variant", ["wan2.1", "wan2.2-a14b", "wan2.2-ti2v-5b"])
def test_generate_equals_the_stock_pipeline(wan_folders, tmp_path, variant):
    img = _square(tmp_path)
    out = tmp_path / "out"
    code, _, err = run_cli("generate", str(tmp_path / "in.png"), "--model", str(wan_folders[variant]), *ARGS,
                           "--width", "64", "--height", "64", "--prompt", "a boat at sea",
                           "--negative-prompt", "blurry", "--guidance", "4.0", "-o", str(out))
    assert code == 0, err
    ours = _frames(out)
    stock = _stock(wan_folders[variant], img, (64, 64), "a boat at sea", "blurry", 4.0)
    assert ours.shape == stock.shape == (5, 64, 64, 3)
    assert np.abs(ours.astype(int) - stock.astype(int)).max() <= 2


def test_a_folder_runs_with_the_pipelines_own_defaults_for_what_no_flag_sets(wan_folders, tmp_path):
    """No --guidance, no --negative-prompt: the stock pipeline's defaults (guidance 5.0, no negative prompt)."""
    import json

    img = _square(tmp_path)
    out = tmp_path / "out"
    code, _, err = run_cli("generate", str(tmp_path / "in.png"), "--model", str(wan_folders["wan2.2-a14b"]), *ARGS,
                           "--width", "64", "--height", "64", "-o", str(out))
    assert code == 0, err
    stock = _stock(wan_folders["wan2.2-a14b"], img, (64, 64), "", None, 5.0)
    assert np.abs(_frames(out).astype(int) - stock.astype(int)).max() <= 2
    spec = json.loads((tmp_path / "out.json").read_text())["spec"]
    assert spec["guidance_scale"] is None and spec["negative_prompt"] is None and spec["motion_bucket_id"] is None


def test_end_image_is_the_pipelines_last_image(wan_folders, tmp_path):
    img = _square(tmp_path)
    end = _square(tmp_path, seed=1, name="end.png")
    out = tmp_path / "out"
    code, _, err = run_cli("generate", str(tmp_path / "in.png"), "--end-image", str(tmp_path / "end.png"),
                           "--model", str(wan_folders["wan2.2-a14b"]), *ARGS, "--width", "64", "--height", "64",
                           "--prompt", "a boat", "-o", str(out))
    assert code == 0, err
    stock = _stock(wan_folders["wan2.2-a14b"], img, (64, 64), "a boat", None, 5.0, last_image=end)
    assert np.abs(_frames(out).astype(int) - stock.astype(int)).max() <= 2


@pytest.mark.parametrize(("model", "flags", "words"), [
    ("wan2.2-a14b", ["--motion", "100"], "--motion (motion_bucket_id) is a setting of svd models"),
    ("wan2.2-a14b", ["--frames", "10"], "Wan makes 4k+1 frames: use 9 or 13"),
    ("wan2.2-ti2v-5b", ["--width", "80", "--height", "64"], "multiples of 32"),
    ("wan2.1", ["--end-image", "END"], "cannot end on an image"),
    ("tiny", ["--prompt", "a boat"], "--prompt (prompt) is a setting of framepack, ltx, ltx2 and wan models"),
    ("tiny", ["--width", "80"], "SVD sizes are multiples of 64"),
])
def test_what_a_family_cannot_honour_is_refused_with_nothing_written(wan_folders, tmp_path, model, flags, words):
    _square(tmp_path)
    _square(tmp_path, seed=1, name="end.png")
    flags = [str(tmp_path / "end.png") if f == "END" else f for f in flags]
    target = wan_folders.get(model, model)
    code, out, err = run_cli("generate", str(tmp_path / "in.png"), "--model", str(target), "--device", "cpu",
                             *flags, "-o", str(tmp_path / "out.mp4"))
    assert code == 2, err
    assert words in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out.mp4").exists() and not (tmp_path / "out.json").exists()


def test_tiny_wan_is_built_in_and_the_sidecar_round_trips(tmp_path):
    """The built-in tiny-wan (built on use), with a prompt; `--from` its sidecar makes the same frames."""
    import json

    _square(tmp_path)
    code, _, err = run_cli("generate", str(tmp_path / "in.png"), "--model", "tiny-wan", "--device", "cpu",
                           "--prompt", "waves roll in", "--seed", "5", "--format", "png", "-o", str(tmp_path / "a"))
    assert code == 0, err
    record = json.loads((tmp_path / "a.json").read_text())
    assert record["model"]["name"] == "tiny-wan" and record["spec"]["prompt"] == "waves roll in"
    assert record["spec"]["num_frames"] == 9 and record["spec"]["negative_prompt"]  # the registry's defaults
    code, _, err = run_cli("generate", "--from", str(tmp_path / "a.json"), "--device", "cpu", "-o", str(tmp_path / "b"))
    assert code == 0, err
    assert np.array_equal(_frames(tmp_path / "a"), _frames(tmp_path / "b"))


# --- --speed fast: diffusers' First Block Cache on every transformer, for one run only (issue 21) ---

@pytest.mark.parametrize("variant", ["wan2.1", "wan2.2-a14b"])
def test_fast_runs_records_its_cache_and_leaves_exact_exact(wan_folders, tmp_path, monkeypatch, variant):
    """exact, fast, exact on one Engine: fast records what ran (First Block Cache, its threshold, the passes that
    ran every block and those that ran only the first); the exact run after it equals the one before, and no
    transformer keeps a cache hook. The threshold is raised so that the tiny model skips blocks for sure."""
    from stillmotion.engine.core import Engine
    from stillmotion.families import wan
    from stillmotion.spec import GenerationSpec

    monkeypatch.setattr(wan, "FAST_THRESHOLD", 10.0)  # every pass after the first of each cache skips
    engine = Engine(str(wan_folders[variant]), device="cpu")
    img = _square(tmp_path)
    spec = dict(width=64, height=64, num_frames=5, num_inference_steps=3, seed=3, prompt="a boat", guidance_scale=4.0)
    runs = [engine.generate(img, GenerationSpec(**spec, speed=speed)) for speed in ("exact", "fast", "exact")]
    assert np.array_equal(runs[0].frames, runs[2].frames)
    assert runs[0].metadata["speed"] == runs[2].metadata["speed"] == {"mode": "exact"}
    fast = runs[1].metadata["speed"]
    experts = 2 if variant == "wan2.2-a14b" else 1
    # 3 steps x 2 passes (CFG); each expert's cond and uncond caches start with a full pass
    assert fast == {"mode": "fast", "cache": "first-block", "threshold": 10.0,
                    "full_passes": 2 * experts, "cached_passes": 6 - 2 * experts}, fast
    assert not np.array_equal(runs[1].frames, runs[0].frames)
    assert not any(m.is_cache_enabled for m in wan.WanFamily().denoisers(engine.pipe))


def test_fast_from_the_cli_at_the_default_threshold(wan_folders, tmp_path):
    """`--speed fast` on the command line: exit 0, the sidecar says fast with the default threshold."""
    import json

    from stillmotion.families.wan import FAST_THRESHOLD

    _square(tmp_path)
    code, _, err = run_cli("generate", str(tmp_path / "in.png"), "--model", str(wan_folders["wan2.2-ti2v-5b"]), *ARGS,
                           "--width", "64", "--height", "64", "--prompt", "a boat", "--speed", "fast",
                           "-o", str(tmp_path / "out"))
    assert code == 0, err
    speed = json.loads((tmp_path / "out.json").read_text())["speed"]
    assert speed["mode"] == "fast" and speed["cache"] == "first-block" and speed["threshold"] == FAST_THRESHOLD
    assert speed["full_passes"] + speed["cached_passes"] == 2 * 2  # 2 steps x (cond, uncond)


def test_the_cache_is_off_again_when_a_fast_run_fails(wan_folders, tmp_path):
    """A fast run that raises mid-way (here: cancelled) still disables the cache on every transformer."""
    from stillmotion.engine.core import Engine
    from stillmotion.errors import Cancelled
    from stillmotion.families.wan import WanFamily
    from stillmotion.spec import GenerationSpec

    engine = Engine(str(wan_folders["wan2.2-a14b"]), device="cpu")
    spec = GenerationSpec(width=64, height=64, num_frames=5, num_inference_steps=3, seed=3, speed="fast")
    stages: list = []
    with pytest.raises(Cancelled):  # cancelled after the first denoising step, inside the pipeline's loop
        engine.generate(_square(tmp_path), spec, on_progress=lambda p: stages.append(p.stage),
                        should_cancel=lambda: "denoise" in stages)
    assert stages.count("denoise") == 1
    assert not any(m.is_cache_enabled for m in WanFamily().denoisers(engine.pipe))

    # family.run called with no cache (not through the Engine) makes its own and takes it off when the call raises
    import torch

    def stop(*_):
        assert all(m.is_cache_enabled for m in WanFamily().denoisers(engine.pipe))
        raise Cancelled()

    with pytest.raises(Cancelled):
        WanFamily().run(engine.pipe, _square(tmp_path), spec, generator=torch.Generator("cpu").manual_seed(3),
                        on_step_end=stop)
    assert not any(m.is_cache_enabled for m in WanFamily().denoisers(engine.pipe))

# ----------------------------------------------------------------------------- LoRAs (issue 21)
def _expert_outputs(pipe) -> list:
    """Each expert's output on one fixed input (A14B: transformer and transformer_2)."""
    import torch

    out = []
    for module in (pipe.transformer, pipe.transformer_2):
        g = torch.Generator("cpu").manual_seed(0)
        x = torch.randn(1, module.config.in_channels, 2, 8, 8, generator=g)
        text = torch.randn(1, 512, module.config.text_dim, generator=g)
        with torch.no_grad():
            out.append(module(x, torch.tensor([500]), text, return_dict=False)[0])
    return out


def test_a_per_job_lora_changes_both_experts_and_leaves_the_base_exact(tmp_path):
    """Family.attach_lora puts a Wan LoRA (diffusers' loader) into both A14B experts; the frames change; after
    detach_lora the base runs exactly again (the per-job path of `serve --lora`)."""
    import torch

    from stillmotion.engine import Engine
    from stillmotion.models.tiny_wan import build_tiny_wan_lora
    from stillmotion.spec import GenerationSpec

    folder = build_tiny_wan_lora(tmp_path / "lora", "tiny-wan")
    engine = Engine("tiny-wan", device="cpu")
    img = _square(tmp_path)
    spec = GenerationSpec(width=64, height=64, num_frames=5, num_inference_steps=2, seed=3, prompt="a boat")
    base = engine.generate(img, spec).frames
    experts = _expert_outputs(engine.pipe)
    family = engine.family
    family.attach_lora(engine.pipe, family.read_lora(folder), 1.0)
    styled = engine.generate(img, spec).frames
    assert all(not torch.allclose(a, b) for a, b in zip(experts, _expert_outputs(engine.pipe)))  # both experts
    family.detach_lora(engine.pipe)
    assert np.abs(styled.astype(int) - base.astype(int)).max() > 2
    assert np.array_equal(engine.generate(img, spec).frames, base)
    assert all(torch.equal(a, b) for a, b in zip(experts, _expert_outputs(engine.pipe)))
    assert not any("lora" in n for n, _ in engine.pipe.transformer_2.named_parameters())


def test_a_lora_folder_as_the_model_takes_comfy_keys_and_its_names_recommendation(tmp_path):
    """`generate --model LORA_FOLDER`: ComfyUI/Kijai keys converted by diffusers, the LoRA fused into both experts
    (the frames the attached LoRA gives, within 2 levels); a "lightx2v ... 4steps" name runs at 4 steps and
    guidance 1 unless a flag says otherwise; stillmotion.json's defaults win over the name."""
    import json

    from stillmotion.engine import Engine
    from stillmotion.models.resolve import entry_for
    from stillmotion.models.tiny_wan import build_tiny_wan_lora
    from stillmotion.spec import GenerationSpec

    folder = build_tiny_wan_lora(tmp_path / "lora", "tiny-wan", layout="comfy",
                                 file_name="wan_i2v_lightx2v_4steps_rank4.safetensors")
    img = _square(tmp_path)
    code, _, err = run_cli("generate", str(tmp_path / "in.png"), "--model", str(folder), "--device", "cpu",
                           "--frames", "5", "--seed", "3", "--prompt", "a boat", "--format", "png",
                           "-o", str(tmp_path / "out"))
    assert code == 0, err
    record = json.loads((tmp_path / "out.json").read_text())
    assert (record["spec"]["num_inference_steps"], record["spec"]["guidance_scale"]) == (4, 1.0)
    assert record["model"]["lora"]["path"] == str(folder)
    engine = Engine("tiny-wan", device="cpu")
    spec = GenerationSpec(width=64, height=64, num_frames=5, num_inference_steps=4, guidance_scale=1.0, seed=3,
                          prompt="a boat")
    base = engine.generate(img, spec).frames
    engine.family.attach_lora(engine.pipe, engine.family.read_lora(folder), 1.0)
    try:
        attached = engine.generate(img, spec).frames
    finally:
        engine.family.detach_lora(engine.pipe)
    ours = _frames(tmp_path / "out")
    assert np.abs(ours.astype(int) - attached.astype(int)).max() <= 2
    assert np.abs(ours.astype(int) - base.astype(int)).max() > 2
    # a flag wins over the recommendation; the folder's stillmotion.json wins over the name
    code, _, err = run_cli("generate", str(tmp_path / "in.png"), "--model", str(folder), "--device", "cpu",
                           "--frames", "5", "--steps", "2", "--format", "png", "-o", str(tmp_path / "two"))
    assert code == 0, err
    assert json.loads((tmp_path / "two.json").read_text())["spec"]["num_inference_steps"] == 2
    info = json.loads((folder / "stillmotion.json").read_text())
    (folder / "stillmotion.json").write_text(json.dumps({**info, "defaults": {"num_inference_steps": 6}}))
    d = entry_for(str(folder)).defaults
    assert (d.num_inference_steps, d.guidance_scale, d.num_frames) == (6, 1.0, 9)  # the rest: tiny-wan's


def test_a_served_lora_recommends_steps_and_guidance_for_the_job(tmp_path):
    """A per-job LoRA's recommendation fills what the request leaves unset (server/submit.py)."""
    from stillmotion.families import get_family
    from stillmotion.models.tiny_wan import build_tiny_wan_lora
    from stillmotion.server.submit import _lora_recommends
    from stillmotion.spec import GenerationSpec

    folder = build_tiny_wan_lora(tmp_path / "l", "tiny-wan", file_name="Wan2.2-Lightning_I2V-8steps.safetensors")
    wan, svd = get_family("wan"), get_family("svd")
    spec = _lora_recommends(GenerationSpec(), folder, wan)
    assert (spec.num_inference_steps, spec.guidance_scale) == (8, 1.0)
    assert _lora_recommends(GenerationSpec(num_inference_steps=3), folder, wan).num_inference_steps == 3
    assert _lora_recommends(GenerationSpec(), folder, svd).guidance_scale is None  # SVD takes no guidance_scale


# ----------------------------------------------------------------------------- long videos and keyframes (issue 21)
def _tiny_wan_stock(image, prompt, seed, frames=9, last_image=None):
    from stillmotion.models.registry import WAN_NEGATIVE_PROMPT
    from stillmotion.models.tiny import ensure_tiny

    return _stock(ensure_tiny("tiny-wan"), image, (64, 64), prompt, WAN_NEGATIVE_PROMPT, 5.0, seed=seed,
                  frames=frames, steps=2, last_image=last_image)


def test_two_wan_segments_chain_on_the_last_frames(tmp_path):
    """--segments 2 on tiny-wan: two 9-frame segments (4k+1 each) overlapping by 2 -> 16 frames; segment 0 is the
    stock pipeline's run, segment 1 starts from the frame `overlap` before segment 0's end."""
    from stillmotion.engine import Engine
    from stillmotion.engine.long import segment_seed
    from stillmotion.spec import GenerationSpec

    engine = Engine("tiny-wan", device="cpu")
    img = _square(tmp_path)
    calls = []
    sample = engine.sample

    def spy(image, spec, *args, **kwargs):
        frames, run = sample(image, spec, *args, **kwargs)
        calls.append((np.asarray(image), spec, frames))
        return frames, run

    engine.sample = spy
    spec = GenerationSpec(width=64, height=64, num_frames=9, num_inference_steps=2, seed=3, prompt="a boat",
                          segments=2)
    result = engine.generate(img, spec)
    assert result.frames.shape == (16, 64, 64, 3)
    assert [(s.num_frames, s.seed) for _, s, _ in calls] == [(9, 3), (9, segment_seed(3, 1))]
    (_, _, first), (cond, _, second) = calls
    assert np.array_equal(cond, first[7])  # the seam continues from segment 0's frame 7 (overlap 2)
    assert np.array_equal(result.frames[:7], first[:7])
    assert np.abs(first.astype(int) - _tiny_wan_stock(img, "a boat", 3).astype(int)).max() <= 2
    assert np.abs(second.astype(int) - _tiny_wan_stock(Image.fromarray(cond), "a boat",
                                                       segment_seed(3, 1)).astype(int)).max() <= 2
    # --duration: segments of the spec's 4k+1 frames, the video cut to the duration
    calls.clear()
    long = engine.generate(img, spec.update(segments=None, duration=2.0))  # 16 frames at tiny-wan's 8 fps
    assert len(long.frames) == 16 and [s.num_frames for _, s, _ in calls] == [9, 9]


def test_wan_keyframes_chain_the_pipelines_last_image(tmp_path):
    """--keyframes a,b,c on tiny-wan: two segments, a->b and b->c, each the stock pipeline's last_image run
    (within 2 levels), sharing the seam frame: 9 + 8 frames."""
    import json

    from stillmotion.engine.long import segment_seed

    a, b, c = (_square(tmp_path, seed=s, name=f"{n}.png") for s, n in ((0, "a"), (1, "b"), (2, "c")))
    code, _, err = run_cli("generate", "--keyframes", ",".join(str(tmp_path / f"{n}.png") for n in "abc"),
                           "--model", "tiny-wan", "--device", "cpu", "--frames", "9", "--steps", "2", "--seed", "3",
                           "--prompt", "a boat", "--format", "png", "-o", str(tmp_path / "out"))
    assert code == 0, err
    ours = _frames(tmp_path / "out")
    assert ours.shape == (17, 64, 64, 3)
    first = _tiny_wan_stock(a, "a boat", 3, last_image=b)
    second = _tiny_wan_stock(b, "a boat", segment_seed(3, 1), last_image=c)
    assert np.abs(ours[:8].astype(int) - first[:8].astype(int)).max() <= 2
    assert np.abs(ours[8:].astype(int) - second.astype(int)).max() <= 2
    segments = json.loads((tmp_path / "out.json").read_text())["segments"]
    assert [s["conditioned_on"] for s in segments] == [["image", "keyframe 1"], ["keyframe 1", "keyframe 2"]]


def test_each_layout_is_the_same_through_batch_and_a_server(wan_folders, tmp_path_factory):
    """For each Wan layout (2.1 with CLIP, 2.2 A14B, TI2V-5B): `generate`, `batch` and `generate --server` write MP4s
    whose decoded frames are identical (the files differ only in the recorded source and paths). `generate` equals the stock pipeline (test_generate_equals_the_stock_pipeline), so every front
    end does. The Ray batch (one layout: the actor runs the same BatchRunner): tests/test_ray.py. One server serves
    the three folders."""
    import hashlib
    import json

    from conftest import ServeProcess
    from stillmotion.video import read_video

    tmp = tmp_path_factory.mktemp("wan-fronts")
    _square(tmp)
    (tmp / "images").mkdir()
    _square(tmp / "images", name="in.png")
    flags = ["--frames", "5", "--steps", "2", "--width", "64", "--height", "64",
             "--prompt", "a boat at sea", "--negative-prompt", "blurry", "--guidance", "4.0"]
    srv = ServeProcess(tmp / "server", *(a for v in wan_folders.values() for a in ("--model", str(v))))
    try:
        srv.wait_ready()
        for variant, folder in wan_folders.items():
            model = ["--model", str(folder)]
            code, _, err = run_cli("batch", str(tmp / "images"), str(tmp / variant / "batch"), *model,
                                   "--device", "cpu", *flags, "-q")
            assert code == 0, err
            seed = str(json.loads((tmp / variant / "batch" / "in.json").read_text())["spec"]["seed"])  # derived
            outs = {"batch": tmp / variant / "batch" / "in.mp4", "generate": tmp / variant / "local.mp4",
                    "server": tmp / variant / "remote.mp4"}
            code, _, err = run_cli("generate", str(tmp / "in.png"), *model, "--device", "cpu", *flags, "--seed", seed,
                                   "-o", str(outs["generate"]))
            assert code == 0, err
            code, _, err = run_cli("generate", str(tmp / "in.png"), *model, *flags, "--seed", seed,
                                   "--server", srv.url, "-o", str(outs["server"]))
            assert code == 0, err
            digests = {k: hashlib.sha256(read_video(p)[0].tobytes()).hexdigest() for k, p in outs.items()}
            assert len(set(digests.values())) == 1, (variant, digests)
    finally:
        srv.stop()
