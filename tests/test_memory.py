"""Memory planner and out-of-memory step-down.

The planner's estimate (a dry run of the model code on the meta device) is
checked against the CPU allocator's measured peak (torch profiler, live bytes:
`measure_cpu_peak` below) of real engine runs on the tiny model.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from stillmotion import GenerationSpec, OutOfMemory
from stillmotion.engine import memory as M
from stillmotion.engine import profile as P
from stillmotion.engine.shapes import model_shape_from_modules
from stillmotion.util import parse_size

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
    return model_shape_from_modules(p.unet, p.vae, p.image_encoder, torch.float32, "tiny")


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


def measure_cpu_peak(fn, *stage_hooks) -> tuple[object, dict]:
    """Run fn() under the torch profiler and return (result, {"peak": bytes, stage: bytes, ...}).

    The quantity is the CPU allocator's live bytes, peak minus the level at the start: the working
    memory of the run (weights allocated before are not counted). `stage_hooks` are (name, obj,
    attr) triples: calls to obj.attr are marked as that stage and get their own peak.
    """
    import os
    import tempfile

    from torch.autograd.profiler import record_function
    from torch.profiler import ProfilerActivity, profile

    saved = []
    for name, obj, attr in stage_hooks:
        orig = getattr(obj, attr)

        def wrapped(*a, __orig=orig, __name=name, **k):
            with record_function(f"stillmotion.stage.{__name}"):
                return __orig(*a, **k)

        saved.append((obj, attr, orig, attr in vars(obj)))
        setattr(obj, attr, wrapped)
    try:
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            result = fn()
    finally:
        for obj, attr, orig, had in reversed(saved):
            if had:
                setattr(obj, attr, orig)
            else:
                delattr(obj, attr)
    fd, path = tempfile.mkstemp(suffix=".json")
    os.close(fd)
    try:
        prof.export_chrome_trace(path)
        with open(path) as f:
            events = json.load(f)["traceEvents"]
    finally:
        os.unlink(path)
    mem = sorted((e["ts"], e["args"]["Total Allocated"]) for e in events
                 if e.get("name") == "[memory]" and e.get("args", {}).get("Device Type", 0) == 0)
    out = {"peak": max((v for _, v in mem), default=0)}
    for name, _, _ in stage_hooks:
        spans = [(e["ts"], e["ts"] + e.get("dur", 0)) for e in events
                 if e.get("name") == f"stillmotion.stage.{name}" and e.get("ph") == "X"]
        vals = [v for ts, v in mem if any(a <= ts <= b for a, b in spans)]
        out[name] = max(vals, default=0)
    return result, out


def _measure(engine, image, spec):
    from stillmotion import images

    prep = images.prepare(image, spec.width, spec.height, "crop")
    p = engine.pipe
    run = lambda: engine.sample(prep, spec, lambda _: None, lambda: False)  # noqa: E731
    _, peaks = measure_cpu_peak(run, ("encode", p.image_encoder, "forward"), ("encode", p.vae, "encode"),
                                  ("denoise", p.unet, "forward"), ("decode", p.vae, "decode"))
    return peaks


@pytest.mark.parametrize("frames,height,width,chunk,offload", CONFIGS)
def test_estimate_within_25_percent_of_measured_cpu_peak(tiny_engine, tiny_shape, image_file, frames, height, width,
                                                          chunk, offload):
    from PIL import Image

    spec = GenerationSpec(seed=1, num_frames=frames, height=height, width=width, num_inference_steps=1,
                          decode_chunk_size=chunk).resolve(tiny_engine.entry)
    measured = _measure(tiny_engine, Image.open(image_file).convert("RGB"), spec)
    plan = M.MemoryPlan(chunk, False, offload)
    est = M.estimate_peak(tiny_shape, frames, height, width, plan, device="cuda" if offload != "none" else "cpu")
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
        full = M.estimate_peak(tiny_shape, frames, height, width, M.MemoryPlan(chunk), device="cuda")
        assert est.peak_bytes < full.peak_bytes


def test_planner_picks_the_fastest_plan_that_fits(tiny_shape):
    full = M.estimate_peak(tiny_shape, 8, 128, 128, M.MemoryPlan(8), device="cuda")
    best, _ = M.choose_plan(tiny_shape, 8, 128, 128, 10 * full.peak_bytes, device="cuda")
    assert best.plan == M.MemoryPlan(8) and best.fits
    tight = int(full.peak_bytes * 0.8)
    best, tried = M.choose_plan(tiny_shape, 8, 128, 128, tight, device="cuda")
    assert best.fits and best.plan != M.MemoryPlan(8) and best.peak_bytes * M.SAFETY <= tight
    assert tried[0].plan == M.MemoryPlan(8) and not tried[0].fits
    best, _ = M.choose_plan(tiny_shape, 8, 128, 128, 1024, device="cuda")
    assert best.fits is False


def test_step_down_ladder_order():
    p = M.MemoryPlan(8)
    assert M.next_plan_down(p, 8, "cuda", "decoding") == M.MemoryPlan(4)
    assert M.next_plan_down(p, 8, "cuda", "denoising") == M.MemoryPlan(8, True)
    assert M.next_plan_down(M.MemoryPlan(8, True), 8, "cuda", "denoising") == M.MemoryPlan(8, True, "model")
    assert (M.next_plan_down(M.MemoryPlan(8, True, "model"), 8, "cuda", "denoising")
            == M.MemoryPlan(8, True, "sequential"))
    assert M.next_plan_down(M.MemoryPlan(1, True, "sequential"), 8, "cuda", "decoding") is None
    assert M.next_plan_down(M.MemoryPlan(1, True), 8, "cpu", "denoising") is None  # no offload on a CPU


def test_parse_size():
    assert parse_size("8GB") == 8 * 1024**3
    assert parse_size("512MiB") == 512 * 1024**2
    assert parse_size("1.5g") == int(1.5 * 1024**3)
    with pytest.raises(Exception, match="--max-memory"):
        parse_size("lots")


def _oom_over(monkeypatch, engine, limit):
    """The VAE raises torch's out-of-memory error for decode chunks larger than `limit`, as a small GPU would."""
    vae = engine.pipe.vae
    real = vae.decode

    def decode(part, *a, **k):
        if part.shape[0] > limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")
        return real(part, *a, **k)

    monkeypatch.setattr(vae, "decode", decode)


def test_oom_in_decoding_steps_down_and_sidecar_records_it(tiny_engine, image_file, tmp_path, monkeypatch):
    spec = GenerationSpec(seed=3, num_frames=8, width=64, height=64, num_inference_steps=2)
    with monkeypatch.context() as m:
        _oom_over(m, tiny_engine, 2)
        r = tiny_engine.generate(str(image_file), spec)
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


def test_oom_with_memory_none_is_a_clear_error(tiny_engine, image_file, monkeypatch):
    spec = GenerationSpec(seed=3, num_frames=4, width=64, height=64, num_inference_steps=1)
    _oom_over(monkeypatch, tiny_engine, 0)
    monkeypatch.setattr(tiny_engine, "config", tiny_engine.config.replace(memory="none"))
    with pytest.raises(OutOfMemory, match="decoding"):
        tiny_engine.generate(str(image_file), spec)


def test_max_memory_plans_a_smaller_decode_chunk(tiny_engine, tiny_shape, image_file, monkeypatch):
    full = M.estimate_peak(tiny_shape, 8, 64, 64, M.MemoryPlan(8), device="cpu")
    monkeypatch.setattr(tiny_engine, "config", tiny_engine.config.replace(max_memory=int(full.peak_bytes * 0.9)))
    r = tiny_engine.generate(str(image_file), GenerationSpec(seed=1, num_frames=8, width=64, height=64,
                                                              num_inference_steps=1))
    mem = r.metadata["memory"]
    assert mem["planned"] and mem["fits"]
    assert r.metadata["decode_chunk_size"] < 8 and mem["estimate_bytes"] * M.SAFETY <= mem["budget_bytes"]


def test_an_image_decoder_checkpoint_is_planned(tmp_path, image_file):
    """A single-file checkpoint with a per-frame image decoder (AutoencoderKL: no num_frames) plans and estimates."""
    from safetensors.torch import save_file

    import comfy_reference as R
    from conftest import run_cli
    from stillmotion import Engine

    _parts, sd = R.sgm_parts(seed=1, temporal=False)
    f = tmp_path / "svd_image_decoder.safetensors"
    save_file(sd, str(f))
    code, out, err = run_cli("estimate", "--model", str(f), "--width", "64", "--height", "64", "--frames", "4",
                             "--max-memory", "1GB")
    assert code == 0, err
    assert "planned peak memory" in out and "--max-memory 1GB: fits" in out
    r = Engine(str(f), device="cpu", max_memory="1GB").generate(
        str(image_file), GenerationSpec(seed=1, num_frames=4, width=64, height=64, num_inference_steps=1))
    assert r.frames.shape == (4, 64, 64, 3)
    assert r.metadata["memory"]["planned"] and r.metadata["memory"]["fits"]
