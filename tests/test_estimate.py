"""`stillmotion estimate`: memory rises with frames and size, offload lowers it, a plan that cannot fit says so."""

from __future__ import annotations

import json

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
