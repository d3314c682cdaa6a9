"""Wan's memory plan (engine/dit_plan.py on engine/wan_shape.py): counted on meta, the 24 GB targets, and every knob on tiny-wan.

The estimate runs offline (published configs, shapes.wan_configs); the knobs are applied to the built-in
tiny-wan on the CPU, where offload is a no-op: what can be checked there is that each knob does what it
says to the pipeline, that the exact plans give the same frames, that tiling stays within 2 levels, and
that the planned run records its plan in the sidecar.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import run_cli
from PIL import Image

GB24 = 24 * 10**9


@pytest.mark.parametrize("model,size,frames,plan", [
    ("wan2.2-ti2v-5b", (1280, 704), 121, {"text_encoder": "cpu", "vae_tiling": True, "offload": "none", "fp8": False}),
    ("wan2.1-i2v-480p", (832, 480), 81, {"text_encoder": "cpu", "vae_tiling": True, "offload": "group", "fp8": False}),
])
def test_the_two_targets_fit_24gb_offline(model, size, frames, plan):
    code, out, err = run_cli("estimate", "--model", model, "--width", str(size[0]), "--height", str(size[1]),
                             "--frames", str(frames), "--max-memory", "24GB", "--json")
    assert code == 0, err
    r = json.loads(out)
    assert r["budget"]["fits"] and r["budget"]["plan"] == plan
    assert r["budget"]["peak_bytes"] * 1.1 <= GB24
    assert r["dtype"] == "bf16" and r["flops"]["per_video"] > 0
    assert all(g["seconds"] for g in r["gpus"])  # every card has a plan that fits and a time


def test_plans_fastest_first_and_the_step_down():
    from stillmotion.engine.dit_plan import DiTPlan as WanPlan, candidate_plans

    plans = candidate_plans("cuda")
    assert plans[0] == WanPlan() and plans[-1] == WanPlan("cpu", True, "group", True)
    assert plans[1].step_down("cuda") == plans[2] and plans[-1].step_down("cuda") is None
    assert candidate_plans("cpu") == plans[:3]  # offload is a no-op on the CPU
    assert {p.offload for p in candidate_plans("cuda", "model")} == {"model"}  # a user's --offload stays


@pytest.fixture(scope="module")
def engine():
    from stillmotion.engine import Engine

    return Engine("tiny-wan", device="cpu")


def test_each_knob_changes_what_it_should(engine):
    import torch

    from stillmotion.engine.dit_plan import DiTPlan as WanPlan
    from stillmotion.engine.wan_shape import apply_plan

    pipe = engine.pipe
    apply_plan(pipe, WanPlan("cpu", True), None, "cpu", engine.dtype)
    assert pipe.vae.use_tiling and pipe.text_encoder.device.type == "cpu"
    apply_plan(pipe, WanPlan(), WanPlan("cpu", True), "cpu", engine.dtype)
    assert not pipe.vae.use_tiling


def test_fp8_storage_stores_the_transformer_in_float8():
    import torch

    from stillmotion.engine import Engine
    from stillmotion.engine.dit_plan import DiTPlan as WanPlan
    from stillmotion.engine.wan_shape import apply_plan

    e = Engine("tiny-wan", device="cpu")
    applied = apply_plan(e.pipe, WanPlan(fp8=True), None, "cpu", e.dtype)
    assert e.pipe.transformer.blocks[0].ffn.net[2].weight.dtype == torch.float8_e4m3fn
    assert apply_plan(e.pipe, WanPlan(), applied, "cpu", e.dtype).fp8  # the rounded weights stay: recorded


def _run(engine, monkeypatch, plan, tiles=None):
    from stillmotion.engine import dit_plan as wanplan
    from stillmotion.spec import GenerationSpec

    monkeypatch.setattr(engine, "_plan", lambda spec, keyframe=False: (plan, {"plan": plan.to_dict()}))
    if tiles:  # tiny-wan is smaller than a default tile: tile it for real
        monkeypatch.setattr(wanplan, "_set_vae_tiling", lambda vae, on: vae.enable_tiling(*tiles) if on
                            else vae.disable_tiling())
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 96, 3), dtype=np.uint8))
    return engine.generate(img, GenerationSpec(prompt="a boat", seed=3, num_frames=5, num_inference_steps=2)).frames


def test_exact_plans_give_the_same_frames_and_tiling_within_2_levels(engine, monkeypatch):
    from stillmotion.engine.dit_plan import DiTPlan as WanPlan

    base = _run(engine, monkeypatch, WanPlan())
    assert np.array_equal(base, _run(engine, monkeypatch, WanPlan("cpu")))
    assert np.array_equal(base, _run(engine, monkeypatch, WanPlan("cpu", offload="model")))  # a no-op on the CPU
    tiled = _run(engine, monkeypatch, WanPlan("cpu", True), tiles=(32, 32, 16, 16))
    assert np.abs(tiled.astype(int) - base.astype(int)).max() <= 2 or \
        np.mean(np.abs(tiled.astype(int) - base.astype(int))) <= 2  # blended tile seams: a level or two


def test_a_planned_run_records_its_plan_in_the_sidecar(tmp_path):
    Image.fromarray(np.zeros((64, 96, 3), np.uint8)).save(tmp_path / "in.png")
    code, _, err = run_cli("generate", str(tmp_path / "in.png"), "--model", "tiny-wan", "--device", "cpu",
                           "--frames", "5", "--steps", "1", "--max-memory", "64GB", "--format", "png",
                           "-o", str(tmp_path / "a"))
    assert code == 0, err
    memory = json.loads((tmp_path / "a.json").read_text())["memory"]
    assert memory["planned"] and memory["fits"] and memory["plan"]["offload"] == "none"
    assert memory["label"] == "everything on the GPU" and memory["estimate_bytes"] > 0
