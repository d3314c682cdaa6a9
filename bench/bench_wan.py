"""Wan on the CPU: stillmotion exact vs stock diffusers, --speed fast vs exact, and a step-distilled preset in FLOPs.

    OMP_NUM_THREADS=1 nice .venv/bin/python bench/bench_wan.py          # ~5 min on a shared 2-core VM
    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_wan.py --size 128 --steps 10 --repeat 1 --thresholds 0.1

Model: tiny_wan's components (models/tiny_wan.py: VAE, UMT5 text encoder, tokenizer, UniPC) with a
mid-size random WanTransformer3DModel built here (default 4 heads x 64, 8 blocks, FFN 1024; for the
A14B layout two of them, the high- and low-noise experts), saved with save_pretrained and loaded back
as a folder, the way users keep a real model. Random weights: the frames are noise, so the PSNR of
fast against exact is a property of this model, not of a trained Wan (see "caveats" in the JSON).

(a) stock vs exact: diffusers' WanImageToVideoPipeline called directly (output_type="np", rounded to
    uint8 as stillmotion does) vs stillmotion's Engine.generate on the same folder, the same prepared
    image, prompt, negative prompt, guidance, size, frames, steps and seed: frames compared (max abs
    difference, <= 2 expected), seconds per video, median of --repeat runs in rotating order.
(b) fast vs exact: the same Engine with --speed fast (diffusers' First Block Cache on every
    transformer, families/caching.py FirstBlockCache) at the default threshold in the same rotation, and
    one run at each of --thresholds: wall and CPU seconds, the ratio to exact, the PSNR of fast
    against exact (stillmotion.metrics.psnr over all frames), the passes that ran every block or only
    the first, and the ratio the FLOPs predict (from a per-block FlopCounterMode count).
(c) a step-distilled preset (4 steps at CFG 1: one transformer pass a step) against 40 steps at CFG 5
    (two passes a step), counted as transformer passes x FLOPs per pass (torch.utils.flop_counter on
    one forward): for the mid-size model at the bench's size, and for Wan 2.2 A14B's real expert
    config (14.3B parameters; built on the meta device, so nothing is allocated) at 832x480, 81 frames.
    stillmotion has no step-distilled Wan weights offline: this is an accounting, not a run.

Writes bench/results/wan-cpu-<date>.json (machine, torch/diffusers versions, the command) and prints a summary.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PROMPT = "a boat at sea, waves roll in, cinematic"
NEGATIVE = "blurry, low quality, static"


# ----------------------------------------------------------------------------- the model
def transformer_kwargs(a, variant: str) -> dict:
    from stillmotion.models.tiny_wan import CLIP_DIM, TEXT_DIM

    z = 48 if variant == "wan2.2-ti2v-5b" else 16
    image = variant.startswith("wan2.1")
    return dict(patch_size=(1, 2, 2), num_attention_heads=a.heads, attention_head_dim=a.head_dim,
                in_channels=z if variant == "wan2.2-ti2v-5b" else 2 * z + 4, out_channels=z, text_dim=TEXT_DIM,
                freq_dim=256, ffn_dim=a.ffn, num_layers=a.layers, cross_attn_norm=True,
                qk_norm="rms_norm_across_heads", eps=1e-6, image_dim=CLIP_DIM if image else None,
                added_kv_proj_dim=a.heads * a.head_dim if image else None, rope_max_seq_len=1024)


def build_midsize(folder: Path, a) -> Path:
    """tiny_wan's components with mid-size transformers (seeded: the same weights on every machine)."""
    import torch
    from diffusers import WanImageToVideoPipeline, WanTransformer3DModel

    from stillmotion.models.tiny_wan import tiny_wan_components

    comps = tiny_wan_components(a.variant)
    for i, name in enumerate(("transformer", "transformer_2")):
        if comps.get(name) is not None:
            torch.manual_seed(1000 + i)
            comps[name] = WanTransformer3DModel(**transformer_kwargs(a, a.variant)).eval()
    WanImageToVideoPipeline(**comps).save_pretrained(folder, safe_serialization=True)
    return folder


# ----------------------------------------------------------------------------- FLOPs
def forward_flops(model, hidden_shape, text_dim: int, image_tokens=None) -> dict:
    """FLOPs of one transformer forward (torch.utils.flop_counter), and of one First-Block-Cache 'cached' pass
    (everything but blocks 1..L-1)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    dev = next(model.parameters()).device
    x = torch.randn(*hidden_shape, device=dev)
    kw = dict(hidden_states=x, timestep=torch.tensor([500], device=dev),
              encoder_hidden_states=torch.randn(1, 512, text_dim, device=dev), return_dict=False)
    if image_tokens is not None:
        kw["encoder_hidden_states_image"] = torch.randn(1, *image_tokens, device=dev)
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(**kw)
    total = fc.get_total_flops()
    counts = fc.get_flop_counts()
    name = type(model).__name__
    later = sum(sum(counts.get(f"{name}.blocks.{i}", {}).values()) for i in range(1, len(model.blocks)))
    return {"per_pass": int(total), "per_cached_pass": int(total - later)}


def real_a14b_flops(width=832, height=480, frames=81) -> dict:
    """One Wan 2.2 A14B expert (the Wan 2.1 14B transformer config: 40 heads x 128, FFN 13824, 40 blocks,
    UMT5-XXL text width 4096) on the meta device: shapes only, no memory, no arithmetic."""
    import torch
    from diffusers import WanTransformer3DModel

    cfg = dict(patch_size=(1, 2, 2), num_attention_heads=40, attention_head_dim=128, in_channels=36, out_channels=16,
               text_dim=4096, freq_dim=256, ffn_dim=13824, num_layers=40, cross_attn_norm=True,
               qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024)
    with torch.device("meta"):
        model = WanTransformer3DModel(**cfg)
    params = sum(p.numel() for p in model.parameters())
    shape = (1, 36, (frames - 1) // 4 + 1, height // 8, width // 8)
    return {"config": f"Wan 2.2 A14B expert, {width}x{height}, {frames} frames", "parameters": params,
            **forward_flops(model, shape, 4096)}


def preset_accounting(per_pass: int, steps_fast=4, cfg_fast=1.0, steps_std=40, cfg_std=5.0) -> dict:
    passes = lambda steps, cfg: steps * (2 if cfg > 1 else 1)  # the pipeline's do_classifier_free_guidance
    p_fast, p_std = passes(steps_fast, cfg_fast), passes(steps_std, cfg_std)
    return {"distilled": {"steps": steps_fast, "guidance": cfg_fast, "passes": p_fast, "flops": p_fast * per_pass},
            "standard": {"steps": steps_std, "guidance": cfg_std, "passes": p_std, "flops": p_std * per_pass},
            "ratio": p_std / p_fast}


# ----------------------------------------------------------------------------- runs
class Runner:
    def __init__(self, folder: Path, a):
        import torch
        from diffusers import WanImageToVideoPipeline
        from PIL import Image

        from stillmotion import images
        from stillmotion.engine.core import Engine

        self.a = a
        self.engine = Engine(str(folder), device="cpu")
        self.stock = WanImageToVideoPipeline.from_pretrained(folder)
        self.stock.set_progress_bar_config(disable=True)
        self.image = images.prepare(Image.open(REPO / "examples" / "harbour.jpg"), a.size, a.size, "crop")
        self.torch = torch

    def spec(self, speed: str, steps=None, guidance=None, seed=None):
        from stillmotion.spec import GenerationSpec

        a = self.a
        return GenerationSpec(width=a.size, height=a.size, num_frames=a.frames, num_inference_steps=steps or a.steps,
                              seed=a.seed if seed is None else seed, prompt=PROMPT, negative_prompt=NEGATIVE,
                              guidance_scale=a.guidance if guidance is None else guidance, speed=speed)

    def run(self, mode: str, steps=None, guidance=None, seed=None) -> dict:
        """One video: (frames, wall seconds, CPU seconds, the run's speed record)."""
        a = self.a
        t, c = time.perf_counter(), time.process_time()
        if mode == "stock":
            video = self.stock(image=self.image, prompt=PROMPT, negative_prompt=NEGATIVE, height=a.size, width=a.size,
                               num_frames=a.frames, num_inference_steps=steps or a.steps,
                               guidance_scale=a.guidance if guidance is None else guidance,
                               generator=self.torch.Generator("cpu").manual_seed(a.seed), output_type="np").frames[0]
            frames, speed = np.clip(np.round(video * 255.0), 0, 255).astype(np.uint8), None
        else:
            result = self.engine.generate(self.image, self.spec(mode, steps, guidance, seed))
            frames, speed = result.frames, result.metadata["speed"]
        return {"frames": frames, "wall": time.perf_counter() - t, "cpu": time.process_time() - c, "speed": speed}


def summary(runs: list[dict]) -> dict:
    return {"wall_s_median": statistics.median(r["wall"] for r in runs), "cpu_s_median": statistics.median(r["cpu"] for r in runs),
            "wall_s": [round(r["wall"], 3) for r in runs], "cpu_s": [round(r["cpu"], 3) for r in runs]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--variant", default="wan2.2-a14b", choices=["wan2.1", "wan2.2-a14b", "wan2.2-ti2v-5b"])
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--ffn", type=int, default=1024)
    p.add_argument("--size", type=int, default=160)
    p.add_argument("--frames", type=int, default=9)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--guidance", type=float, default=5.0)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--repeat", type=int, default=3, help="runs of stock, exact and fast each, in rotating order")
    p.add_argument("--thresholds", default="0.05,0.1,0.12,0.13,0.14,0.2", help="extra First Block Cache thresholds, one run each")
    p.add_argument("--no-real-flops", action="store_true", help="skip the 14B meta-device FLOP count (~20 s)")
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args(argv)

    import torch

    from stillmotion.families import wan

    if os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    default_threshold = wan.FAST_THRESHOLD
    thresholds = [float(x) for x in a.thresholds.split(",") if x.strip() and float(x) != default_threshold]

    tmp = Path(tempfile.mkdtemp(prefix="bench-wan-"))
    try:
        return bench(a, tmp, default_threshold, thresholds)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def bench(a, tmp: Path, default_threshold: float, thresholds: list) -> int:
    import diffusers
    import torch

    from stillmotion.families import wan
    from stillmotion.metrics import psnr

    t = time.perf_counter()
    folder = build_midsize(tmp / "wan-mid", a)
    runner = Runner(folder, a)
    print(f"built and loaded the mid-size {a.variant} in {time.perf_counter() - t:.1f} s", flush=True)

    # FLOPs of one pass of the mid-size transformer at the bench's shapes
    tr = runner.engine.pipe.transformer
    z_in = tr.config.in_channels
    image_tokens = None
    if runner.engine.pipe.image_encoder is not None:
        from stillmotion.models.tiny_wan import CLIP_DIM, CLIP_TOKENS

        image_tokens = (CLIP_TOKENS, CLIP_DIM)
    spatial = runner.engine.pipe.vae_scale_factor_spatial
    mid_flops = forward_flops(tr, (1, z_in, (a.frames - 1) // 4 + 1, a.size // spatial, a.size // spatial),
                              tr.config.text_dim, image_tokens)

    # warm-up: one short run of each mode (first-call costs out of the timings)
    for mode in ("stock", "exact", "fast"):
        runner.run(mode, steps=2)

    # (a) + (b): stock, exact, fast in rotating order, --repeat times
    modes = ["stock", "exact", "fast"]
    runs: dict[str, list] = {m: [] for m in modes}
    for r in range(a.repeat):
        for m in modes[r % 3:] + modes[: r % 3]:
            runs[m].append(runner.run(m))
            print(f"  {m:5s} {runs[m][-1]['wall']:.2f} s", flush=True)
    exact = runs["exact"][0]["frames"]
    assert all(np.array_equal(x["frames"], exact) for x in runs["exact"]), "exact runs differ from each other"
    s = {m: summary(runs[m]) for m in modes}
    diff = int(np.abs(runs["stock"][0]["frames"].astype(int) - exact.astype(int)).max())

    def fast_row(threshold, rs):
        rec = rs[0]["speed"]
        full, cached = rec.get("full_passes"), rec.get("cached_passes")
        predicted = None
        if full is not None:
            f, fc = mid_flops["per_pass"], mid_flops["per_cached_pass"]
            predicted = (full + cached) * f / (full * f + cached * fc)
        sm = summary(rs)
        return {"threshold": threshold, **sm, "speed_record": rec,
                "wall_ratio_vs_exact": s["exact"]["wall_s_median"] / sm["wall_s_median"],
                "cpu_ratio_vs_exact": s["exact"]["cpu_s_median"] / sm["cpu_s_median"],
                "flop_ratio_vs_exact": predicted,
                "psnr_db_vs_exact": psnr(rs[0]["frames"], exact),
                "max_abs_vs_exact": int(np.abs(rs[0]["frames"].astype(int) - exact.astype(int)).max())}

    fast_rows = [fast_row(default_threshold, runs["fast"])]
    for th in thresholds:
        wan.FAST_THRESHOLD = th
        try:
            one = runner.run("fast")
        finally:
            wan.FAST_THRESHOLD = default_threshold
        fast_rows.append(fast_row(th, [one]))
        print(f"  fast@{th} {one['wall']:.2f} s", flush=True)
    after = runner.run("exact")
    exact_again = bool(np.array_equal(after["frames"], exact))
    # a yardstick for the PSNRs above: how far exact moves with only the seed changed
    other_seed = psnr(runner.run("exact", seed=a.seed + 1)["frames"], exact)

    # (c) FLOPs of a step-distilled preset
    flops = {"midsize": {"config": f"{a.variant} mid-size, {a.size}x{a.size}, {a.frames} frames", **mid_flops,
                         **preset_accounting(mid_flops["per_pass"])}}
    if not a.no_real_flops:
        real = real_a14b_flops()
        flops["wan2.2_a14b"] = {**real, **preset_accounting(real["per_pass"])}

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    out = {
        "benchmark": "bench_wan (CPU)",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '')}", "python", *sys.argv]),
        "machine": {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "load_avg": list(os.getloadavg()), "python": platform.python_version(),
                    "torch": torch.__version__, "diffusers": diffusers.__version__},
        "model": {"variant": a.variant, "transformer": {"heads": a.heads, "head_dim": a.head_dim, "layers": a.layers,
                                                        "ffn": a.ffn},
                  "parameters_per_transformer": sum(p.numel() for p in tr.parameters()),
                  "weights": "random (seeded), tiny_wan's VAE/text encoder, saved and loaded as a diffusers folder"},
        "config": {"size": a.size, "frames": a.frames, "steps": a.steps, "guidance": a.guidance, "seed": a.seed,
                   "repeat": a.repeat},
        "stock_vs_exact": {"max_abs_diff": diff, "stock": s["stock"], "exact": s["exact"],
                           "wall_ratio_stock_over_exact": s["stock"]["wall_s_median"] / s["exact"]["wall_s_median"],
                           "cpu_ratio_stock_over_exact": s["stock"]["cpu_s_median"] / s["exact"]["cpu_s_median"]},
        "fast_vs_exact": fast_rows,
        "exact_after_fast_equals_exact": exact_again,
        "psnr_db_exact_other_seed_vs_exact": other_seed,
        "flops": flops,
        "caveats": ["random weights: fast mode's skip decisions and its PSNR depend on how a trained model's first-block "
                    "residual changes between steps; these numbers are this random model's",
                    "a shared 2-core VM: wall times move with other people's load; CPU seconds (one torch thread) move less"],
    }
    path = a.out or HERE / "results" / f"wan-cpu-{datetime.now(timezone.utc).strftime('%Y%m%d')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")

    print(f"\n(a) stock vs exact: max |diff| {diff} levels; stock {s['stock']['wall_s_median']:.2f} s, exact "
          f"{s['exact']['wall_s_median']:.2f} s (stock/exact {out['stock_vs_exact']['wall_ratio_stock_over_exact']:.3f} wall, "
          f"{out['stock_vs_exact']['cpu_ratio_stock_over_exact']:.3f} CPU)")
    print("(b) fast vs exact:")
    for row in fast_rows:
        rec = row["speed_record"]
        print(f"    threshold {row['threshold']:<5} {row['wall_s_median']:.2f} s  x{row['wall_ratio_vs_exact']:.2f} wall "
              f"x{row['cpu_ratio_vs_exact']:.2f} CPU  x{row['flop_ratio_vs_exact'] or float('nan'):.2f} FLOPs  "
              f"PSNR {row['psnr_db_vs_exact']:.1f} dB  passes full/cached {rec.get('full_passes')}/{rec.get('cached_passes')}")
    print(f"    exact after fast == exact: {exact_again}; PSNR of exact with seed {a.seed + 1} vs seed {a.seed}: "
          f"{other_seed:.1f} dB (the yardstick)")
    print("(c) step-distilled preset (4 steps CFG 1) vs 40 steps CFG 5:")
    for k, v in flops.items():
        print(f"    {v['config']}: {v['per_pass'] / 1e9:.2f} GFLOP/pass; {v['distilled']['flops'] / 1e12:.3f} vs "
              f"{v['standard']['flops'] / 1e12:.3f} TFLOP = x{v['ratio']:.0f}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
