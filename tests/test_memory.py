"""Memory planner and out-of-memory step-down.

The planner's estimate (a dry run of the model code on the meta device) is
checked against the CPU allocator's measured peak (torch profiler, live bytes)
of real engine runs on the tiny model.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from stillmotion import GenerationSpec, OutOfMemory
from stillmotion.engine import memory as M
from stillmotion.engine import profile as P

# (frames, height, width, decode chunk, offload)
CONFIGS = [
    (4, 64, 64, 4, "none"),
    (8, 64, 64, 8, "none"),
    (8, 64, 64, 2, "none"),
    (4, 128, 128, 4, "none"),
    (8, 64, 128, 4, "none"),
    (6, 128, 64, 6, "model"),
]


@pytest.fixture(scope="module")
def tiny_shape(tiny_engine):
    p = tiny_engine.pipe
    return P.model_shape_from_modules(p.unet, p.vae, p.image_encoder, torch.float32, "tiny")


def test_stage_profiles_are_kept_on_disk_for_the_next_process(tiny_shape, monkeypatch, tmp_path):
    monkeypatch.setenv("STILLMOTION_CACHE", str(tmp_path))
    monkeypatch.setattr(tiny_shape, "profiles", None)
    first = P.profile_stages(tiny_shape, 4, 64, 64, decode_chunk=2)
    (file,) = (tmp_path / "profiles").glob("*.json")

    # a new process (nothing in memory) reads the file instead of dry-running again
    real_stages, calls = P._STAGES, []
    monkeypatch.setattr(tiny_shape, "profiles", None)
    monkeypatch.setattr(P, "_STAGES", {k: (lambda *a, _k=k: calls.append(_k)) for k in real_stages})
    assert P.profile_stages(tiny_shape, 4, 64, 64, decode_chunk=2) == first and calls == []

    # a damaged file is ignored, counted afresh and rewritten
    file.write_text("{not json")
    monkeypatch.setattr(tiny_shape, "profiles", None)
    monkeypatch.setattr(P, "_STAGES", real_stages)
    assert P.profile_stages(tiny_shape, 4, 64, 64, decode_chunk=2) == first
    assert len(json.loads(file.read_text())["entries"]) == 3


def _measure(engine, image, spec):
    from stillmotion import images

    prep = images.prepare(image, spec.width, spec.height, "crop")
    p = engine.pipe
    run = lambda: engine.sample(prep, spec, lambda _: None, lambda: False, {}, {"fallbacks": []})  # noqa: E731
    _, peaks = P.measure_cpu_peak(run, ("encode", p.image_encoder, "forward"), ("encode", p.vae, "encode"),
                                  ("denoise", p.unet, "forward"), ("decode", p.vae, "decode"))
    return peaks


@pytest.mark.parametrize("frames,height,width,chunk,offload", CONFIGS)
def test_estimate_within_25_percent_of_measured_cpu_peak(tiny_engine, tiny_shape, image_file, frames, height, width,
                                                          chunk, offload):
    from PIL import Image

    spec = GenerationSpec(seed=1, num_frames=frames, height=height, width=width, num_inference_steps=1,
                          decode_chunk_size=chunk).resolve(tiny_engine.entry)
    measured = _measure(tiny_engine, Image.open(image_file).convert("RGB"), spec)
    plan = M.Plan(chunk, False, offload)
    est = M.estimate(tiny_shape, frames, height, width, plan, device="cuda" if offload != "none" else "cpu")
    weights = tiny_shape.weights
    if offload == "none":
        # working memory alone (weights excluded: they would make the match easy), then the total
        assert 0.75 <= max(est.working.values()) / measured["peak"] <= 1.25, (est.working, measured)
        assert 0.75 <= est.peak_bytes / (measured["peak"] + tiny_shape.weights_total) <= 1.25
    else:
        # model offload: during each stage only that stage's component is on the device
        for stage, comps in (("denoise", ("unet",)), ("decode", ("vae",))):
            expected = measured[stage] + max(weights[c] for c in comps)
            assert 0.75 <= est.stages[stage] / expected <= 1.25, (stage, est.stages, measured)
        assert est.peak_bytes < M.estimate(tiny_shape, frames, height, width, M.Plan(chunk), device="cuda").peak_bytes


def test_planner_picks_the_fastest_plan_that_fits(tiny_shape):
    full = M.estimate(tiny_shape, 8, 128, 128, M.Plan(8), device="cuda")
    best, _ = M.choose_plan(tiny_shape, 8, 128, 128, 10 * full.peak_bytes, device="cuda")
    assert best.plan == M.Plan(8) and best.fits
    tight = int(full.peak_bytes * 0.8)
    best, tried = M.choose_plan(tiny_shape, 8, 128, 128, tight, device="cuda")
    assert best.fits and best.plan != M.Plan(8) and best.peak_bytes * M.SAFETY <= tight
    assert tried[0].plan == M.Plan(8) and not tried[0].fits
    best, _ = M.choose_plan(tiny_shape, 8, 128, 128, 1024, device="cuda")
    assert best.fits is False


def test_step_down_ladder_order():
    p = M.Plan(8)
    assert M.next_plan_down(p, 8, "cuda", "decoding") == M.Plan(4)
    assert M.next_plan_down(p, 8, "cuda", "denoising") == M.Plan(8, True)
    assert M.next_plan_down(M.Plan(8, True), 8, "cuda", "denoising") == M.Plan(8, True, "model")
    assert M.next_plan_down(M.Plan(8, True, "model"), 8, "cuda", "denoising") == M.Plan(8, True, "sequential")
    assert M.next_plan_down(M.Plan(1, True, "sequential"), 8, "cuda", "decoding") is None
    assert M.next_plan_down(M.Plan(1, True), 8, "cpu", "denoising") is None  # no offload on a CPU


def test_parse_size():
    assert M.parse_size("8GB") == 8 * 1024**3
    assert M.parse_size("512MiB") == 512 * 1024**2
    assert M.parse_size("1.5g") == int(1.5 * 1024**3)
    with pytest.raises(Exception, match="--max-memory"):
        M.parse_size("lots")


def _oom_over(limit):
    def hook(stage, n):
        if stage == "decode" and n > limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")

    return hook


def test_oom_in_decoding_steps_down_and_sidecar_records_it(tiny_engine, image_file, tmp_path):
    spec = GenerationSpec(seed=3, num_frames=8, width=64, height=64, num_inference_steps=2)
    tiny_engine._fault_hook = _oom_over(2)
    try:
        r = tiny_engine.generate(str(image_file), spec)
    finally:
        tiny_engine._fault_hook = None
    falls = r.metadata["fallbacks"]
    assert [f["stage"] for f in falls] == ["decoding", "decoding"]
    assert [f["plan"]["decode_chunk_size"] for f in falls] == [4, 2]
    assert r.metadata["decode_chunk_size"] == 2
    # the retried run's frames are the frames of a run planned with chunk 2 from the start
    direct = tiny_engine.generate(str(image_file), spec.update(decode_chunk_size=2))
    assert np.array_equal(r.frames, direct.frames)
    art = r.save(tmp_path / "out.mp4")
    side = json.loads(art.sidecar.read_text())
    text = json.dumps(side)
    assert "fallbacks" in text and "decode chunk 2" in text


def test_oom_with_memory_none_is_a_clear_error(tiny_engine, image_file):
    spec = GenerationSpec(seed=3, num_frames=4, width=64, height=64, num_inference_steps=1)
    tiny_engine._fault_hook = _oom_over(0)
    tiny_engine.memory = "none"
    try:
        with pytest.raises(OutOfMemory, match="decoding"):
            tiny_engine.generate(str(image_file), spec)
    finally:
        tiny_engine._fault_hook = None
        tiny_engine.memory = "auto"


def test_max_memory_plans_a_smaller_decode_chunk(tiny_engine, tiny_shape, image_file):
    full = M.estimate(tiny_shape, 8, 64, 64, M.Plan(8), device="cpu")
    tiny_engine.max_memory = int(full.peak_bytes * 0.9)
    try:
        r = tiny_engine.generate(str(image_file), GenerationSpec(seed=1, num_frames=8, width=64, height=64,
                                                                  num_inference_steps=1))
    finally:
        tiny_engine.max_memory = None
    mem = r.metadata["memory"]
    assert mem["planned"] and mem["fits"]
    assert r.metadata["decode_chunk_size"] < 8 and mem["estimate_bytes"] * M.SAFETY <= mem["budget_bytes"]
