"""`stillmotion estimate`: memory rises with frames and size, offload lowers it, a plan that cannot fit says so;
time comes from one estimator (shared with `batch --dry-run`) whose per-card efficiencies name their sources."""

from __future__ import annotations

import json

import pytest

from conftest import run_cli


def _est(*args):
    code, out, err = run_cli("estimate", "--model", "tiny", "--json", *args)
    assert code == 0, err
    return json.loads(out)


def test_memory_rises_with_frames_and_size():
    small = _est("--frames", "4", "--width", "64", "--height", "64")
    more_frames = _est("--frames", "8", "--width", "64", "--height", "64")
    bigger = _est("--frames", "4", "--width", "128", "--height", "128")
    assert more_frames["plan"]["peak_bytes"] > small["plan"]["peak_bytes"]
    assert bigger["plan"]["peak_bytes"] > small["plan"]["peak_bytes"]
    assert bigger["flops"]["per_video"] > small["flops"]["per_video"]
    names = [g["gpu"] for g in small["gpus"]]
    assert {"RTX 3090", "RTX 4090", "A100 40GB", "A100 80GB", "H100 80GB"} <= set(names)
    assert all(g["fits"] and g["seconds"] > 0 and g["source"] == "estimated" for g in small["gpus"])


def test_offload_lowers_memory():
    base = _est("--frames", "8", "--width", "64", "--height", "64")
    model = _est("--frames", "8", "--width", "64", "--height", "64", "--offload", "model")
    seq = _est("--frames", "8", "--width", "64", "--height", "64", "--offload", "sequential")
    assert seq["plan"]["peak_bytes"] < model["plan"]["peak_bytes"] < base["plan"]["peak_bytes"]


def test_a_plan_that_cannot_fit_says_so():
    r = _est("--frames", "8", "--width", "64", "--height", "64", "--max-memory", "1MB")
    assert r["budget"]["fits"] is False
    code, out, _ = run_cli("estimate", "--model", "tiny", "--frames", "8", "--width", "64", "--height", "64",
                           "--max-memory", "1MB", "--price-per-hour", "2")
    assert code == 0 and "does not fit" in out and "estimated" in out


def test_fast_mode_costs_fewer_flops():
    exact = _est("--frames", "4", "--width", "64", "--height", "64", "--steps", "6")
    fast = _est("--frames", "4", "--width", "64", "--height", "64", "--steps", "6", "--speed", "fast")
    assert fast["flops"]["per_video"] < exact["flops"]["per_video"]
    assert fast["flops"]["unet_cached_step"] < fast["flops"]["unet_step"]


def test_bf16_counts_the_same_flops_as_fp32(tmp_path, monkeypatch):
    monkeypatch.setenv("STILLMOTION_CACHE", str(tmp_path))  # counted afresh, not read from an fp16 run's profiles
    args = ("--frames", "4", "--width", "64", "--height", "64", "--speed", "fast")
    bf16 = _est(*args, "--dtype", "bf16")
    fp32 = _est(*args, "--dtype", "fp32")
    assert bf16["flops"]["per_video"] == fp32["flops"]["per_video"] > 0
    assert bf16["flops"]["unet_cached_step"] == fp32["flops"]["unet_cached_step"] > 0
    assert all(g["fits"] and g["seconds"] > 0 for g in bf16["gpus"])


def test_each_card_names_where_its_efficiency_comes_from():
    from stillmotion.engine import timing

    data = timing.load_gpus()
    assert all(m["url"].startswith("https://") and m["seconds"] > 0 for m in data["measurements"].values())
    cards = {c.name: c for c in timing.cards()}
    assert {c.basis for c in cards.values()} <= {"measured", "estimated"}
    assert all(c.source and 0 < c.efficiency < 1 for c in cards.values())
    # the reference job on a measured card takes the published time, to the digit
    ref = timing.reference_card()
    assert ref.basis == "measured" and ref.source.startswith("measured")
    assert round(ref.seconds(data["reference"]["flops"]), 3) == data["measurements"]["onediff-a100"]["seconds"]
    # a card without a figure of its own says which card it took its efficiency from
    assert cards["RTX 4090"].basis == "estimated" and "A100 80GB" in cards["RTX 4090"].source


def test_batch_dry_run_and_estimate_give_the_same_seconds(tmp_path):
    """`batch --dry-run` and `stillmotion estimate` call the one estimator: same job, same card, same seconds."""
    from PIL import Image

    from stillmotion.batch import expected_seconds, plan_batch
    from stillmotion.engine import timing
    from stillmotion.engine.config import EngineConfig

    for n in range(3):
        Image.new("RGB", (80, 64), (n * 40, 90, 120)).save(tmp_path / f"img{n}.png")
    fields = {"num_frames": 4, "width": 64, "height": 64, "num_inference_steps": 3}
    plan = plan_batch(tmp_path, tmp_path / "out", model="tiny", fields=fields)
    seconds, basis = expected_seconds(plan, EngineConfig(model="tiny", device="cpu"))
    card = timing.reference_card()  # a CPU has no figure: the batch says which card it assumed
    assert basis.startswith("estimated") and card.name in basis

    per_video = {g["gpu"]: g["seconds"] for g in _est("--frames", "4", "--width", "64", "--height", "64",
                                                      "--steps", "3")["gpus"]}
    assert seconds == pytest.approx(3 * per_video[card.name])


def test_estimate_plans_the_built_in_demo():
    r = _est_model("demo")
    assert (r["model"], r["frames"], r["width"], r["height"], r["steps"]) == ("demo", 8, 128, 64, 6)  # its defaults
    assert r["plan"]["peak_bytes"] > r["weights_bytes"] > 0


def _est_model(model, *args):
    code, out, err = run_cli("estimate", "--model", model, "--json", *args)
    assert code == 0, err
    return json.loads(out)


def test_estimate_flags_are_generates(monkeypatch):
    """estimate's settings are generate's flags, made from the same GenerationSpec and EngineConfig fields."""
    from stillmotion.cli.estimate import estimate_command
    from stillmotion.cli.generate import generate

    theirs = {p.name: p for p in generate.params}
    own = {"price_per_hour", "keyframe", "as_json"}
    for p in estimate_command.params:
        if p.name not in own:
            assert p.name in theirs and p.opts == theirs[p.name].opts and p.help == theirs[p.name].help, p.name
    assert {"attention", "max_memory", "decode_chunk_size", "cache_interval"} <= {p.name for p in estimate_command.params}


def test_math_attention_raises_the_planned_peak_in_estimate_and_batch_dry_run(tmp_path, monkeypatch):
    """--attention reaches the dry run of both planners (8 frames at 256x256, decoded one by one: the denoise
    stage, where math attention holds its score matrix, is the peak)."""
    from PIL import Image

    from stillmotion.batch import expected_seconds, plan_batch
    from stillmotion.engine import timing
    from stillmotion.engine.config import EngineConfig

    args = ("--frames", "8", "--width", "256", "--height", "256", "--decode-chunk", "1", "--steps", "2")
    fused, plain = (_est(*args, "--attention", a) for a in ("sdpa", "math"))
    assert plain["attention"] == "math" and plain["plan"]["peak_bytes"] > fused["plan"]["peak_bytes"]
    assert plain["flops"]["per_video"] > 0 and fused["plan"]["stages"]["decode"] == plain["plan"]["stages"]["decode"]

    (tmp_path / "in").mkdir()
    Image.new("RGB", (80, 64), (40, 90, 120)).save(tmp_path / "in" / "img.png")
    fields = {"num_frames": 8, "width": 256, "height": 256, "num_inference_steps": 2, "decode_chunk_size": 1}
    plan = plan_batch(tmp_path / "in", tmp_path / "out", model="tiny", fields=fields)
    planned = {}
    time_on = timing.Workload.time_on

    def spy(self, card, shape, flops):
        t = time_on(self, card, shape, flops)
        planned[self.config.attention] = t.plan.peak_bytes
        return t

    monkeypatch.setattr(timing.Workload, "time_on", spy)
    for a in ("sdpa", "math"):
        seconds, _ = expected_seconds(plan, EngineConfig(model="tiny", device="cpu", attention=a))
        assert seconds > 0
    assert planned["math"] > planned["sdpa"]
    assert planned == {"sdpa": fused["plan"]["peak_bytes"], "math": plain["plan"]["peak_bytes"]}
