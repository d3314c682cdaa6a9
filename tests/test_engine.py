"""The Engine runs SVD: same frames as diffusers, seeds, progress, cancel, loading."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stillmotion import Cancelled, GenerationSpec, ModelUnavailable
from stillmotion.models.resolve import resolve

SMALL = dict(width=64, height=64, num_frames=4, num_inference_steps=3)


def test_frames_equal_stock_diffusers(tiny_engine, image_file):
    """Same weights, image, seed and settings: our frames are diffusers' frames."""
    from diffusers import StableVideoDiffusionPipeline
    from PIL import Image

    from stillmotion import images

    spec = GenerationSpec(seed=1234, max_guidance_scale=2.5, motion_bucket_id=90, **SMALL)
    ours = tiny_engine.generate(str(image_file), spec)

    pipe = StableVideoDiffusionPipeline.from_pretrained(resolve("tiny").path, use_safetensors=True)
    pipe.set_progress_bar_config(disable=True)
    img = images.prepare(Image.open(image_file).convert("RGB"), 64, 64, "crop")
    stock = pipe(
        img,
        height=64,
        width=64,
        num_frames=4,
        num_inference_steps=3,
        max_guidance_scale=2.5,
        motion_bucket_id=90,
        fps=ours.spec.fps,
        noise_aug_strength=ours.spec.noise_aug_strength,
        generator=torch.Generator("cpu").manual_seed(1234),
        output_type="np",
    ).frames[0]
    stock_u8 = np.clip(np.round(stock * 255.0), 0, 255).astype(np.uint8)
    assert ours.frames.shape == (4, 64, 64, 3)
    assert np.array_equal(ours.frames, stock_u8)


def test_same_seed_same_frames_other_seed_differs(tiny_engine, image_file):
    a = tiny_engine.generate(str(image_file), GenerationSpec(seed=7, **SMALL))
    b = tiny_engine.generate(str(image_file), GenerationSpec(seed=7, **SMALL))
    c = tiny_engine.generate(str(image_file), GenerationSpec(seed=8, **SMALL))
    assert np.array_equal(a.frames, b.frames)
    assert not np.array_equal(a.frames, c.frames)


def test_random_seed_is_drawn_and_recorded(tiny_engine, image_file):
    r = tiny_engine.generate(str(image_file), GenerationSpec(seed=-1, **SMALL))
    assert 0 <= r.seed < 2**32
    assert r.metadata["seed"] == r.seed == r.metadata["spec"]["seed"]
    again = tiny_engine.generate(str(image_file), GenerationSpec(**{**r.metadata["spec"]}))
    assert np.array_equal(again.frames, r.frames)


def test_defaults_come_from_the_model_and_size_from_the_aspect(tiny_engine, tmp_path):
    from PIL import Image

    wide = tmp_path / "wide.png"
    Image.new("RGB", (300, 150), (10, 200, 30)).save(wide)
    r = tiny_engine.generate(str(wide), GenerationSpec(seed=1, num_inference_steps=2))
    d = tiny_engine.entry.defaults
    assert (r.spec.width, r.spec.height) == d.landscape
    assert r.spec.num_frames == d.num_frames and r.frames.shape[0] == d.num_frames
    assert r.spec.fps == d.fps and r.fps == d.fps


def test_progress_reports_steps_then_decoding(tiny_engine, image_file):
    events = []
    tiny_engine.generate(str(image_file), GenerationSpec(seed=1, **SMALL), on_progress=events.append)
    stages = [e.stage for e in events]
    assert stages.index("denoise") < stages.index("decode")
    assert [e.step for e in events if e.stage == "denoise"] == [1, 2, 3]
    fractions = [e.fraction for e in events]
    assert fractions == sorted(fractions) and 0 <= fractions[0] and fractions[-1] <= 1


def test_cancel_stops_between_steps(tiny_engine, image_file):
    steps = []

    def on_progress(p):
        if p.stage == "denoise":
            steps.append(p.step)

    with pytest.raises(Cancelled):
        tiny_engine.generate(
            str(image_file),
            GenerationSpec(seed=1, **{**SMALL, "num_inference_steps": 10}),
            on_progress=on_progress,
            should_cancel=lambda: len(steps) >= 2,
        )
    assert steps == [1, 2]


def test_saved_model_loads_back_by_path(tmp_path, image_file):
    from stillmotion import Engine
    from stillmotion.models.tiny import save_tiny

    folder = save_tiny(tmp_path / "my-tiny")
    assert list(folder.rglob("*.safetensors")) and not list(folder.rglob("*.bin"))
    engine = Engine(str(folder), device="cpu")
    r = engine.generate(str(image_file), GenerationSpec(seed=3, **SMALL))
    assert r.frames.shape == (4, 64, 64, 3)
    assert r.metadata["model"]["source"] == "local"
    assert all(len(h) == 64 for h in r.metadata["model"]["weights"].values())


def test_sidecar_metadata_is_complete(tiny_engine, image_file):
    r = tiny_engine.generate(str(image_file), GenerationSpec(seed=5, **SMALL))
    m = r.metadata
    for key in ("spec", "seed", "model", "device", "dtype", "versions", "timings", "input"):
        assert key in m
    assert m["device"] == "cpu" and m["dtype"] == "float32"
    assert m["input"]["sha256"] and m["input"]["source"] == str(image_file)
    assert {"torch", "diffusers", "python"} <= set(m["versions"])
    for t in ("prepare", "plan", "encode", "denoise", "decode", "total"):
        assert m["timings"][t] >= 0


def test_unknown_model_is_a_clear_error():
    from stillmotion import Engine

    with pytest.raises(ModelUnavailable, match="Unknown model 'svd-mega'"):
        Engine("svd-mega", device="cpu")


def test_encode_is_timed_by_hooks_that_are_taken_off(tiny_engine, image_file):
    enc = tiny_engine.pipe.image_encoder
    r = tiny_engine.generate(str(image_file), GenerationSpec(seed=1, **SMALL))
    assert r.metadata["timings"]["encode"] > 0
    assert not enc._forward_pre_hooks and not enc._forward_hooks  # nothing left on the module
    assert "_encode_image" not in vars(tiny_engine.pipe)  # diffusers' method is not patched


def test_retry_on_oom_steps_down_and_records_each_step():
    from stillmotion import OutOfMemory
    from stillmotion.engine.memory import MemoryPlan, retry_on_oom

    def attempt(plan):
        if plan.decode_chunk_size > 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")
        return "ok"

    spec = GenerationSpec(seed=1, num_frames=4, width=64, height=64)
    applied, fallbacks = [], []
    result, plan = retry_on_oom("decoding", MemoryPlan(4), attempt, apply_plan=applied.append, spec=spec,
                                device="cpu", fallbacks=fallbacks)
    assert result == "ok" and plan == MemoryPlan(1)
    assert applied == [MemoryPlan(4), MemoryPlan(2), MemoryPlan(1)]
    assert [(f["stage"], f["from"], f["to"]) for f in fallbacks] == [
        ("decoding", "decode chunk 4", "decode chunk 2"), ("decoding", "decode chunk 2", "decode chunk 1")]
    with pytest.raises(OutOfMemory, match="while decoding 4 frames at 64x64 on cpu: try --offload model"):
        retry_on_oom("decoding", MemoryPlan(4), attempt, apply_plan=applied.append, spec=spec, device="cpu",
                     fallbacks=[], step_down=False)
