"""The transformer planner (engine/dit_plan.py) on LTX-2 and FramePack: counted on meta, the targets, every knob.

The estimates run offline on the published configs (engine/ltx2_shape.py, framepack_shape.py): LTX-2
distilled at 768x512 with 121 frames is planned in 24 GB, FramePack in 6 GB, and `estimate` prints device
memory, host memory and seconds for both. Each plan axis is checked on the meta shapes (what it moves off
the device, what it adds to the host and to the seconds), and the ones that apply to a pipeline are
applied to the tiny offline models on the CPU, where the plans that promise identical frames must give
them. Wan's own figures stay in tests/test_wan_plan.py.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import run_cli
from PIL import Image

GB = 10**9


def _estimate(*args) -> dict:
    code, out, err = run_cli("estimate", *args, "--json")
    assert code == 0, err
    return json.loads(out)


@pytest.fixture(scope="module")
def ltx2_24gb():
    return _estimate("--model", "ltx-2-distilled", "--width", "768", "--height", "512", "--frames", "121",
                     "--max-memory", "24GB")


@pytest.fixture(scope="module")
def framepack_6gb():
    return _estimate("--model", "framepack", "--max-memory", "6GB")


def test_ltx2_distilled_is_planned_in_24gb(ltx2_24gb):
    r = ltx2_24gb
    assert r["budget"]["fits"] and r["budget"]["peak_bytes"] * 1.1 <= 24 * GB
    assert r["budget"]["plan"] == {"text_encoder": "first", "vae_tiling": True, "offload": "group", "fp8": False}
    # everything on the device would not fit a 24 GB card: Gemma-3 12B alone is 24 GB in bf16, the transformer 38 GB
    assert r["plan"]["peak_bytes"] > 60 * GB and r["weights_bytes"] > 60 * GB
    assert r["steps"] == 8 and r["flops"]["per_video"] > 8 * r["flops"]["transformer_pass"]


def test_framepack_is_planned_in_6gb(framepack_6gb):
    r = framepack_6gb
    b = r["budget"]
    assert b["fits"] and b["peak_bytes"] * 1.1 <= 6 * GB
    assert b["plan"]["offload"] == "group" and b["plan"]["text_encoder"] == "first"
    # host memory is counted: every weight passes through it at load (FramePack issue 423: 50+ GB of RAM), and while
    # running it holds the streamed transformer and the freed text encoders
    assert b["host"]["load"] == r["weights_bytes"] > 35 * GB and b["host"]["run"] > 30 * GB


def test_estimate_prints_memory_host_memory_and_seconds(ltx2_24gb, framepack_6gb):
    for r in (ltx2_24gb, framepack_6gb):
        assert r["host"]["peak"] >= r["weights_bytes"]
        for g in r["gpus"]:
            assert g["fits"] and g["seconds"] > 0 and g["host_bytes"] >= r["weights_bytes"], g
        assert r["reference"]["measurement"] in ("sglang-ltx2-h100", "framepack-readme-4090")
    # the published runs the seconds are calibrated on: LTX-2 distilled at its reference job on the H100 takes the
    # published 9.5 s; FramePack's README gives 2.5 s a frame on an RTX 4090 (at 608x640: 832x480 is a little more work)
    h100 = next(g for g in ltx2_24gb["gpus"] if g["gpu"] == "H100 80GB")
    assert h100["plan"] == "everything on the GPU" and h100["seconds"] == pytest.approx(9.523, rel=0.01)
    rtx4090 = next(g for g in framepack_6gb["gpus"] if g["gpu"] == "RTX 4090")
    assert 2.0 < rtx4090["seconds"] / framepack_6gb["frames"] < 3.5
    code, out, err = run_cli("estimate", "--model", "framepack", "--max-memory", "6GB")
    assert code == 0, err
    assert "host memory (RAM):" in out and "--max-memory 6GB: fits with text encoders first, then freed" in out
    assert "RAM" in out.splitlines()[out.splitlines().index("") + 1]  # the per-GPU table has a RAM column


# ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ltx2():
    from stillmotion.engine.ltx2_shape import ltx2_shape
    from stillmotion.models.resolve import entry_for

    return ltx2_shape(entry_for("ltx-2-distilled"))  # the estimate above built it: cached


@pytest.fixture(scope="module")
def framepack():
    from stillmotion.engine.framepack_shape import framepack_shape
    from stillmotion.models.resolve import entry_for

    return framepack_shape(entry_for("framepack"))


def test_the_shapes_count_the_published_sizes(ltx2, framepack):
    params = lambda shape, c: sum(p.numel() for p in shape.modules[c].parameters())  # noqa: E731
    assert 18.5e9 < params(ltx2, "transformer") < 19.5e9  # LTX-2 19B
    assert 11.5e9 < params(ltx2, "text_encoder") < 12.5e9  # Gemma-3 12B: 24 GB in bf16, the users' 24-27 GB
    assert ltx2.weights["text_encoder"] > 22 * 2**30
    assert 12.5e9 < params(framepack, "transformer") < 13.5e9  # HunyuanVideo 13B with FramePack's packing
    assert 7e9 < params(framepack, "text_encoder") < 8e9  # llava-llama-3-8b's Llama


def test_each_axis_moves_what_it_should(ltx2):
    from stillmotion.engine.dit_plan import DiTPlan, estimate_peak, resident

    args = (121, 512, 768)
    knobs = {"extra_passes": 0}
    full, first = DiTPlan(text_off="first"), DiTPlan("first", text_off="first")
    te, tr = ltx2.weights["text_encoder"], ltx2.weights["transformer"]
    # text encoders first, then freed: on the device for the text stage only
    assert resident(ltx2, first, "text") == resident(ltx2, full, "text")
    assert resident(ltx2, full, "denoise") - resident(ltx2, first, "denoise") == te
    # on the CPU: not on the device at all, and its working memory is the host's
    cpu = DiTPlan("cpu", text_off="first")
    assert resident(ltx2, full, "text") - resident(ltx2, cpu, "text") == te
    assert estimate_peak(ltx2, *args, cpu, knobs=knobs).working["text"] == 0
    # VAE tiling: the decode's working memory
    tiled = DiTPlan("first", True, text_off="first")
    a, b = (estimate_peak(ltx2, *args, p, knobs=knobs).working["decode"] for p in (first, tiled))
    assert b < a
    # model offload: only the stage's component on the device
    model = DiTPlan("first", True, "model", text_off="first")
    assert resident(ltx2, model, "denoise") == tr and resident(ltx2, model, "text") == te
    # group offload: the transformer streams block by block (what lies outside the blocks + two blocks), Gemma layer by
    # layer (two layers' worth: its embedding is the largest)
    group = DiTPlan("first", True, "group", text_off="first")
    streamed = ltx2.rest_bytes["transformer"] + 2 * ltx2.block_bytes["transformer"]
    assert resident(ltx2, group, "denoise") == resident(ltx2, first, "denoise") - tr + streamed
    gemma = ltx2.loose_bytes["text_encoder"] + 2 * ltx2.leaf_bytes["text_encoder"]
    assert resident(ltx2, group, "text") == resident(ltx2, first, "text") - te - tr + gemma
    # fp8 storage: the streamed transformer at about half the bytes
    fp8 = DiTPlan("first", True, "group", True, text_off="first")
    assert resident(ltx2, fp8, "denoise") < resident(ltx2, group, "denoise")
    assert 0.45 < ltx2.fp8_weights["transformer"] / tr < 0.55


def test_host_memory_and_the_seconds_each_axis_adds(ltx2):
    from stillmotion.engine.dit_plan import DiTPlan, extra_seconds, host_bytes, video_flops

    args = (121, 512, 768)
    knobs = {"extra_passes": 0}
    full, group = DiTPlan(text_off="first"), DiTPlan("first", True, "group", text_off="first")
    a, b = (host_bytes(ltx2, p, *args, knobs=knobs) for p in (full, group))
    assert a["load"] == b["load"] == ltx2.weights_total  # every weight is read into host memory first
    assert a["run"] < 1 * GB  # all on the device: the host holds the video
    assert b["run"] - a["run"] == ltx2.weights["transformer"] + ltx2.weights["text_encoder"]  # streamed from the host
    f = video_flops(ltx2, *args, 8, cfg=False, knobs=knobs)
    assert extra_seconds(ltx2, full, f, 8, 25, 10.0) == 0
    first = DiTPlan("first", text_off="first")
    assert extra_seconds(ltx2, first, f, 8, 25, 10.0) == pytest.approx(ltx2.weights["text_encoder"] / 25e9)
    cpu = DiTPlan("cpu", text_off="first")
    assert extra_seconds(ltx2, cpu, f, 8, 25, 10.0) > 40  # Gemma on a host CPU: 25 TFLOP at an estimated 0.5 TFLOPS
    # group offload's copies beyond what the stream hides behind the compute
    assert extra_seconds(ltx2, group, f, 8, 25, 1.0) > extra_seconds(ltx2, group, f, 8, 25, 100.0) == pytest.approx(
        ltx2.weights["text_encoder"] / 25e9)


def test_guidance_passes_count_in_memory_and_flops(ltx2):
    from stillmotion.engine.dit_plan import video_flops

    denoise = ltx2.layout.stages["denoise"][1]  # one stage's dry run (the whole profile is the estimate's, above)
    one, two = (denoise(ltx2, 121, 512, 768, False, cfg)[0] for cfg in (False, True))
    assert two > 1.5 * one  # LTX-2 batches the conditional and unconditional inputs
    base = video_flops(ltx2, 121, 512, 768, 8, cfg=False, knobs={"extra_passes": 0})
    stg = video_flops(ltx2, 121, 512, 768, 8, cfg=False, knobs={"extra_passes": 1})  # STG: one more pass a step
    assert stg["per_video"] - base["per_video"] == 8 * base["transformer_pass"]


def test_framepack_memory_is_flat_as_the_video_grows(framepack):
    """One section's pass and decode whatever the length; the transformer passes grow with the sections."""
    from stillmotion.engine.dit_plan import DiTPlan, resident

    stages, calls = framepack.layout.stages, framepack.layout.calls
    for stage in ("denoise", "decode"):
        fn = stages[stage][1]
        assert fn(framepack, 73, 480, 832, True, False) == fn(framepack, 145, 480, 832, True, False)  # 2 and 4 sections
    assert calls(framepack, 145, 25, False)["denoise"] == 2 * calls(framepack, 73, 25, False)["denoise"] == 100
    assert calls(framepack, 145, 25, False, true_cfg=True)["denoise"] == 200  # a real CFG: two passes a step
    # leaf-level group offload: two of the transformer's largest layers on the device (and what no layer holds)
    plan = DiTPlan("first", True, "group", text_off="first")
    streamed = framepack.loose_bytes["transformer"] + 2 * framepack.leaf_bytes["transformer"]
    assert resident(framepack, plan, "denoise") - resident(framepack, plan, "decode") == streamed
    assert streamed < 0.5 * GB


# ----------------------------------------------------------------------------
def _frames(engine, **kw):
    from stillmotion.spec import GenerationSpec

    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    return engine.generate(img, GenerationSpec(prompt="a boat", seed=3, width=64, height=64, **kw)).frames


@pytest.mark.parametrize("model,kw", [("tiny-framepack", {"num_frames": 9, "num_inference_steps": 2}),
                                      ("tiny-ltx2", {"num_frames": 9, "num_inference_steps": 2})])
def test_the_exact_plans_give_the_same_frames_on_a_tiny_model(model, kw):
    """Text encoders first and freed (accelerate's offload hook and a pre-hook on the denoiser) and group offload
    (the layout's level, text encoders layer by layer; no CUDA stream on the CPU) run the same computation."""
    from stillmotion.engine import Engine, dit_plan

    engine = Engine(model, device="cpu")
    layout = engine.family.plan_layout()
    base = _frames(engine, **kw)
    pipe = engine.pipe
    dit_plan.text_first(pipe, layout, "cpu")
    assert len(pipe.transformer._forward_pre_hooks) == 1
    assert all(hasattr(getattr(pipe, c), "_hf_hook") for c in layout.text_encoders)
    assert np.array_equal(base, _frames(engine, **kw))
    dit_plan._remove_text_first(pipe)
    assert not pipe.transformer._forward_pre_hooks
    dit_plan.group_offload(pipe, layout, "cpu", stream_texts=True, use_stream=False)
    assert getattr(pipe.transformer, "_diffusers_hook", None) is not None
    assert np.array_equal(base, _frames(engine, **kw))
    dit_plan._remove_group_offload(pipe, layout)


def test_tiling_and_fp8_are_applied_to_a_tiny_pipeline():
    import torch

    from stillmotion.engine import Engine
    from stillmotion.engine.dit_plan import DiTPlan, apply_plan

    e = Engine("tiny-ltx2", device="cpu")
    layout = e.family.plan_layout()
    applied = apply_plan(e.pipe, DiTPlan("first", True, fp8=True, text_off="first"), None, "cpu", e.dtype, layout)
    assert e.pipe.vae.use_tiling
    linears = [m for m in e.pipe.transformer.transformer_blocks.modules() if isinstance(m, torch.nn.Linear)]
    assert linears and all(m.weight.dtype == torch.float8_e4m3fn for m in linears)
    again = apply_plan(e.pipe, DiTPlan(text_off="first"), applied, "cpu", e.dtype, layout)
    assert again.fp8 and not e.pipe.vae.use_tiling  # the rounded weights stay, and the record says so


@pytest.mark.parametrize("model", ["tiny-framepack", "tiny-ltx2"])
def test_a_planned_run_records_its_plan_in_the_sidecar(tmp_path, model):
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "in.png")
    code, _, err = run_cli("generate", str(tmp_path / "in.png"), "--model", model, "--device", "cpu",
                           "--frames", "9", "--steps", "1", "--width", "64", "--height", "64", "--max-memory", "64GB",
                           "--format", "png", "-o", str(tmp_path / "a"))
    assert code == 0, err
    memory = json.loads((tmp_path / "a.json").read_text())["memory"]
    assert memory["planned"] and memory["fits"] and memory["label"] == "everything on the GPU"
    assert memory["plan"] == {"text_encoder": "gpu", "vae_tiling": False, "offload": "none", "fp8": False}
    assert memory["estimate_bytes"] > 0


# ---------------------------------------------------------------------------- LTX-Video 0.9.x (engine/ltx_shape.py)
def test_ltx_video_is_counted_and_planned_in_24gb(tmp_path):
    """The 0.9.7 13B distilled entry on its published configs: the 13B transformer, T5 v1.1 XXL and the 0.9.5 VAE
    (36 GB in bf16, as the repo's weights), planned in 24 GB with T5 encoded first and freed and the transformer
    streamed; a tiny LTX-Video folder gives the same frames under those plans as without."""
    from stillmotion.engine import Engine, dit_plan
    from stillmotion.engine.ltx_shape import ltx_shape
    from stillmotion.models.resolve import entry_for
    from stillmotion.models.tiny_ltx import build_tiny_ltx

    r = _estimate("--model", "ltx-video-0.9.7-distilled", "--max-memory", "24GB")
    assert r["budget"]["fits"] and r["budget"]["peak_bytes"] * 1.1 <= 24 * GB
    assert r["budget"]["plan"]["text_encoder"] == "first" and r["budget"]["plan"]["offload"] == "group"
    assert 34 * GB < r["weights_bytes"] < 40 * GB and r["plan"]["peak_bytes"] > 24 * GB
    assert r["steps"] == 8 and all(g["seconds"] > 0 for g in r["gpus"])
    shape = ltx_shape(entry_for("ltx-video-0.9.7-distilled"))
    params = lambda c: sum(p.numel() for p in shape.modules[c].parameters())  # noqa: E731
    assert 12.5e9 < params("transformer") < 13.5e9 and 4.5e9 < params("text_encoder") < 5e9

    engine = Engine(str(build_tiny_ltx(tmp_path / "ltx", "ltx")), device="cpu")
    kw = {"num_frames": 9, "num_inference_steps": 2}
    layout = engine.family.plan_layout()
    base = _frames(engine, **kw)
    dit_plan.text_first(engine.pipe, layout, "cpu")
    assert np.array_equal(base, _frames(engine, **kw))
    dit_plan._remove_text_first(engine.pipe)
    dit_plan.group_offload(engine.pipe, layout, "cpu", stream_texts=True, use_stream=False)
    assert np.array_equal(base, _frames(engine, **kw))


def test_the_dry_runs_memo_counts_what_counting_every_op_counts(monkeypatch):
    """engine/dryrun.py makes the outputs of an op it has seen on the same argument shapes again from a memo
    (what makes a 121-frame estimate quick): every stage of each transformer family's tiny model (a tiled decode)
    counts the same working bytes and FLOPs as a dry run that runs every op. (The published models' estimates
    were compared byte for byte when the memo came in.)"""
    import dataclasses

    from stillmotion.engine import dryrun
    from stillmotion.engine.dit_shapes import stage_profile
    from stillmotion.engine.framepack_shape import framepack_shape
    from stillmotion.engine.ltx2_shape import ltx2_shape
    from stillmotion.engine.wan_shape import wan_shape
    from stillmotion.models.resolve import entry_for

    shapes = [wan_shape(entry_for("tiny-wan")), ltx2_shape(entry_for("tiny-ltx2")),
              framepack_shape(entry_for("tiny-framepack"))]

    def profiles() -> list:
        return [stage_profile(dataclasses.replace(s, profiles={}), 9, 64, 64, True, cfg=True) for s in shapes]

    dryrun._MEMO.clear()
    memoized = profiles()
    assert dryrun._MEMO  # it was used
    with monkeypatch.context() as m:
        m.setattr(dryrun, "_memo_key", lambda *a: None)
        assert profiles() == memoized
