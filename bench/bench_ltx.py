"""LTX-2 on the CPU: stillmotion exact vs stock diffusers (frames and sound), --speed fast vs exact, and the
distilled preset's FLOPs against the dev defaults.

    OMP_NUM_THREADS=1 nice .venv/bin/python bench/bench_ltx.py          # a few minutes on a shared 2-core VM
    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_ltx.py --size 128 --steps 8 --repeat 1 --thresholds 0.1

Model: models/tiny_ltx.py's LTX-2 components (video VAE at the real 32x/8x compression, audio VAE, vocoder, a
Gemma-3 text encoder and tokenizer made in memory) with a mid-size random LTX2VideoTransformer3DModel (default 4
heads x 32, 8 blocks), saved with save_pretrained and loaded back as a folder. Random weights: the frames and the
sound are noise, so fast mode's PSNR is this model's, not a trained LTX-2's.

(a) stock vs exact: diffusers' LTX2ImageToVideoPipeline called directly (output_type="np", frames rounded to uint8
    as stillmotion does) vs Engine.generate on the same folder, image, prompt, size, frames, steps, fps and seed,
    with the pipeline's own guidance defaults (CFG 3, STG 1, modality isolation 3: four transformer batches a
    step): frames compared (max abs difference), the waveform compared (max abs difference), seconds per video,
    median of --repeat runs in rotating order.
(b) fast vs exact: --speed fast (diffusers' First Block Cache, LTX-2's audio-video block registered by
    families/caching.py) at the default threshold in the same rotation, and one run at each of --thresholds:
    wall and CPU seconds and their ratio to exact, the ratio the FLOPs predict (a cached pass skips blocks 1..L-1;
    torch.utils.flop_counter per block), the PSNR of the frames (and the SNR of the sound) against exact, the passes
    that ran every block or only the first.
(c) the distilled preset (ltx-2-distilled's registry defaults: 8 steps, CFG 1, STG 0, modality 1: one transformer
    pass a step) against ltx-2's dev defaults (40 steps, CFG 4, STG 1, modality 3: a CFG batch of two and two more
    passes a step), counted with torch.utils.flop_counter over one step of each, on the mid-size model at the bench's
    size. The real 19B's ratio is the same count of passes (its FLOPs per pass do not depend on the preset). Also
    `ltx-2 --speed fast`: the same preset with the distilled LoRA on the dev weights, unfused (a random LoRA at the
    real one's rank over width, 384/4096), whose extra matmuls each pass pays. `--parts flops` runs only (c).

Writes bench/results/ltx-cpu-<date>.json (machine, versions, the command) and prints a summary.
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
PROMPT = "a boat at sea, waves roll in, gulls cry, cinematic"


def build_midsize(folder: Path, a) -> Path:
    from diffusers import LTX2ImageToVideoPipeline

    from stillmotion.models.tiny_ltx import tiny_ltx2_components

    comps = tiny_ltx2_components(seed=1000, heads=a.heads, head_dim=a.head_dim, layers=a.layers)
    LTX2ImageToVideoPipeline(**comps).save_pretrained(folder, safe_serialization=True)
    return folder


class Runner:
    def __init__(self, folder: Path, a):
        import torch
        from diffusers import LTX2ImageToVideoPipeline
        from PIL import Image

        from stillmotion import images
        from stillmotion.engine.core import Engine

        self.a = a
        self.engine = Engine(str(folder), device="cpu")
        self.stock = LTX2ImageToVideoPipeline.from_pretrained(folder)
        self.stock.set_progress_bar_config(disable=True)
        self.image = images.prepare(Image.open(REPO / "examples" / "harbour.jpg"), a.size, a.size, "crop")
        self.torch = torch

    def spec(self, speed: str, seed=None, **preset):
        from stillmotion.spec import GenerationSpec

        a = self.a
        fields = dict(width=a.size, height=a.size, num_frames=a.frames, num_inference_steps=a.steps, fps=24,
                      seed=a.seed if seed is None else seed, prompt=PROMPT, speed=speed)
        return GenerationSpec(**{**fields, **preset})

    def run(self, mode: str, seed=None, **preset) -> dict:
        a = self.a
        t, c = time.perf_counter(), time.process_time()
        if mode == "stock":
            kw = {"num_inference_steps": a.steps, **preset}
            out = self.stock(image=self.image, prompt=PROMPT, height=a.size, width=a.size, num_frames=a.frames,
                             frame_rate=24, generator=self.torch.Generator("cpu").manual_seed(a.seed),
                             output_type="np", **kw)
            frames = np.clip(np.round(out.frames[0] * 255.0), 0, 255).astype(np.uint8)
            audio, speed = out.audio[0].float().numpy(), None
        else:
            result = self.engine.generate(self.image, self.spec(mode, seed, **preset))
            frames, audio, speed = result.frames, result.audio.samples, result.metadata["speed"]
        return {"frames": frames, "audio": audio, "wall": time.perf_counter() - t, "cpu": time.process_time() - c,
                "speed": speed}


def summary(runs: list[dict]) -> dict:
    return {"wall_s_median": statistics.median(r["wall"] for r in runs),
            "cpu_s_median": statistics.median(r["cpu"] for r in runs),
            "wall_s": [round(r["wall"], 3) for r in runs], "cpu_s": [round(r["cpu"], 3) for r in runs]}


def step_flops(runner, **preset) -> dict:
    """Transformer FLOPs of one denoising step under a guidance preset (a 1-step stock run under FlopCounterMode)."""
    from torch.utils.flop_counter import FlopCounterMode

    a = runner.a
    with FlopCounterMode(display=False) as fc:
        runner.stock(image=runner.image, prompt=PROMPT, height=a.size, width=a.size, num_frames=a.frames,
                     frame_rate=24, num_inference_steps=1, generator=runner.torch.Generator("cpu").manual_seed(0),
                     output_type="latent", **preset)
    counts = fc.get_flop_counts()
    name = "LTX2VideoTransformer3DModel"
    layers = len(runner.stock.transformer.transformer_blocks)
    later = sum(sum(counts.get(f"{name}.transformer_blocks.{i}", {}).values()) for i in range(1, layers))
    total = sum(counts.get(name, {}).values())
    return {"transformer_flops_per_step": int(total), "all_flops_one_step_run": int(fc.get_total_flops()),
            "cached_pass_fraction": (total - later) / total}


def preset_flops(runner, tmp: Path) -> dict:
    """(c) Transformer FLOPs per video of ltx-2's defaults, ltx-2-distilled's, and ltx-2 --speed fast (the distilled
    preset's defaults with the distilled LoRA on, unfused: a random LoRA at the real one's rank over width, 384 of
    4096, counted on the stock pipeline with the LoRA loaded by diffusers)."""
    from stillmotion.models.registry import REGISTRY
    from stillmotion.models.tiny_ltx import write_distilled_lora

    def preset(d):
        return {"num_inference_steps": d.num_inference_steps, "guidance_scale": d.guidance_scale,
                "stg_scale": d.stg_scale, "audio_stg_scale": d.stg_scale, "modality_scale": d.modality_scale,
                "audio_modality_scale": d.modality_scale, "guidance_rescale": d.guidance_rescale,
                "audio_guidance_rescale": d.guidance_rescale, "audio_guidance_scale": d.audio_guidance_scale}

    def count(d):
        kw = preset(d)
        steps = kw.pop("num_inference_steps")
        per = step_flops(runner, **kw)
        return {"preset": {"steps": steps, **kw}, **per, "transformer_flops": steps * per["transformer_flops_per_step"]}

    flops = {name: count(REGISTRY[name].defaults) for name in ("ltx-2", "ltx-2-distilled")}
    tr = runner.stock.transformer
    rank = max(1, round(384 / 4096 * tr.config.num_attention_heads * tr.config.attention_head_dim))
    lora = write_distilled_lora(tmp, "lora.safetensors", transformer=tr, rank=rank)
    runner.stock.load_lora_weights(str(lora), adapter_name="distilled")
    try:
        flops["ltx-2 --speed fast"] = {**count(REGISTRY["ltx-2"].fast.defaults), "lora_rank": rank}
    finally:
        runner.stock.unload_lora_weights()
    dev = flops["ltx-2"]["transformer_flops"]
    flops["ratio_dev_over_distilled"] = dev / flops["ltx-2-distilled"]["transformer_flops"]
    flops["ratio_dev_over_fast_preset"] = dev / flops["ltx-2 --speed fast"]["transformer_flops"]
    flops["passes_per_step"] = {"ltx-2": "CFG batch of 2 + STG + modality isolation = 4 pass-equivalents",
                                "ltx-2-distilled": "1 (CFG 1, STG 0, modality 1)",
                                "ltx-2 --speed fast": "1, with the LoRA's extra matmuls in every block's linears"}
    return flops


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--head-dim", type=int, default=32)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--size", type=int, default=192)
    p.add_argument("--frames", type=int, default=25)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--repeat", type=int, default=3, help="runs of stock, exact and fast each, in rotating order")
    p.add_argument("--thresholds", default="0.05,0.1,0.2", help="extra First Block Cache thresholds, one run each")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--parts", choices=("all", "flops"), default="all",
                   help="flops: only (c), the presets' transformer FLOPs (no timed runs)")
    a = p.parse_args(argv)

    import torch

    from stillmotion.families import ltx

    if os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    default = ltx.FAST_THRESHOLD
    thresholds = [float(x) for x in a.thresholds.split(",") if x.strip() and float(x) != default]
    tmp = Path(tempfile.mkdtemp(prefix="bench-ltx-"))
    try:
        return bench(a, tmp, default, thresholds)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def bench(a, tmp: Path, default_threshold: float, thresholds: list) -> int:
    import diffusers
    import torch

    from stillmotion.families import ltx
    from stillmotion.metrics import psnr

    t = time.perf_counter()
    runner = Runner(build_midsize(tmp / "ltx2-mid", a), a)
    print(f"built and loaded the mid-size LTX-2 in {time.perf_counter() - t:.1f} s", flush=True)
    if a.parts == "flops":
        flops = preset_flops(runner, tmp)
        print(json.dumps(flops, indent=2))
        path = a.out or HERE / "results" / f"ltx-flops-cpu-{datetime.now(timezone.utc).strftime('%Y%m%d')}.json"
        path.write_text(json.dumps({"benchmark": "bench_ltx --parts flops", "date": datetime.now(timezone.utc)
                                    .isoformat(timespec="seconds"), "flops": flops}, indent=2) + "\n")
        print(f"(c) {_flops_line(flops)}\nwrote {path}")
        return 0

    for mode in ("stock", "exact", "fast"):  # warm-up: first-call costs out of the timings
        runner.run(mode, num_inference_steps=2) if mode == "stock" else runner.engine.generate(
            runner.image, runner.spec(mode, num_inference_steps=2))

    modes = ["stock", "exact", "fast"]
    runs: dict[str, list] = {m: [] for m in modes}
    for r in range(a.repeat):
        for m in modes[r % 3:] + modes[: r % 3]:
            runs[m].append(runner.run(m))
            print(f"  {m:5s} {runs[m][-1]['wall']:.2f} s", flush=True)
    exact, exact_audio = runs["exact"][0]["frames"], runs["exact"][0]["audio"]
    assert all(np.array_equal(x["frames"], exact) for x in runs["exact"]), "exact runs differ from each other"
    s = {m: summary(runs[m]) for m in modes}
    diff = int(np.abs(runs["stock"][0]["frames"].astype(int) - exact.astype(int)).max())
    audio_diff = float(np.abs(runs["stock"][0]["audio"] - exact_audio).max())

    # a First-Block-Cache "cached" pass runs everything but blocks 1..L-1: its share of a full pass's FLOPs
    cached_fraction = step_flops(runner)["cached_pass_fraction"]

    def fast_row(threshold, rs):
        rec = rs[0]["speed"]
        sm = summary(rs)
        full, cached = rec.get("full_passes"), rec.get("cached_passes")
        predicted = (full + cached) / (full + cached * cached_fraction) if full is not None else None
        noise = float(np.mean((rs[0]["audio"] - exact_audio) ** 2))
        return {"threshold": threshold, **sm, "speed_record": rec,
                "wall_ratio_vs_exact": s["exact"]["wall_s_median"] / sm["wall_s_median"],
                "cpu_ratio_vs_exact": s["exact"]["cpu_s_median"] / sm["cpu_s_median"],
                "flop_ratio_vs_exact": predicted,
                "psnr_db_vs_exact": psnr(rs[0]["frames"], exact),
                "audio_snr_db_vs_exact": (10 * np.log10(float(np.mean(exact_audio ** 2)) / noise) if noise > 0
                                          else float("inf")),
                "max_abs_vs_exact": int(np.abs(rs[0]["frames"].astype(int) - exact.astype(int)).max())}

    fast_rows = [fast_row(default_threshold, runs["fast"])]
    for th in thresholds:
        ltx.FAST_THRESHOLD = th
        try:
            one = runner.run("fast")
        finally:
            ltx.FAST_THRESHOLD = default_threshold
        fast_rows.append(fast_row(th, [one]))
        print(f"  fast@{th} {one['wall']:.2f} s", flush=True)
    exact_again = bool(np.array_equal(runner.run("exact")["frames"], exact))
    other_seed = psnr(runner.run("exact", seed=a.seed + 1)["frames"], exact)

    flops = preset_flops(runner, tmp)

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    tr = runner.engine.pipe.transformer
    out = {
        "benchmark": "bench_ltx (CPU)",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '')}", "python", *sys.argv]),
        "machine": {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "load_avg": list(os.getloadavg()), "python": platform.python_version(),
                    "torch": torch.__version__, "diffusers": diffusers.__version__},
        "model": {"transformer": {"heads": a.heads, "head_dim": a.head_dim, "layers": a.layers},
                  "parameters_transformer": sum(p.numel() for p in tr.parameters()),
                  "weights": "random (seeded), tiny_ltx's VAEs/vocoder/text encoder, saved and loaded as a folder"},
        "config": {"size": a.size, "frames": a.frames, "steps": a.steps, "fps": 24, "seed": a.seed,
                   "guidance": "the pipeline's own defaults (CFG 3, STG 1, modality 3, rescale 0.7, audio CFG 7)",
                   "repeat": a.repeat},
        "stock_vs_exact": {"max_abs_diff": diff, "audio_max_abs_diff": audio_diff, "stock": s["stock"],
                           "exact": s["exact"],
                           "wall_ratio_stock_over_exact": s["stock"]["wall_s_median"] / s["exact"]["wall_s_median"],
                           "cpu_ratio_stock_over_exact": s["stock"]["cpu_s_median"] / s["exact"]["cpu_s_median"]},
        "fast_vs_exact": fast_rows,
        "exact_after_fast_equals_exact": exact_again,
        "psnr_db_exact_other_seed_vs_exact": other_seed,
        "flops": flops,
        "caveats": ["random weights: fast mode's skip decisions and PSNR depend on how a trained model's first-block "
                    "residual moves between steps; these numbers are this random model's",
                    "a shared 2-core VM: wall times move with other people's load; CPU seconds move less"],
    }
    path = a.out or HERE / "results" / f"ltx-cpu-{datetime.now(timezone.utc).strftime('%Y%m%d')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")

    print(f"\n(a) stock vs exact: frames max |diff| {diff} levels, audio max |diff| {audio_diff:g}; stock "
          f"{s['stock']['wall_s_median']:.2f} s, exact {s['exact']['wall_s_median']:.2f} s (stock/exact "
          f"{out['stock_vs_exact']['wall_ratio_stock_over_exact']:.3f} wall, "
          f"{out['stock_vs_exact']['cpu_ratio_stock_over_exact']:.3f} CPU)")
    print("(b) fast vs exact:")
    for row in fast_rows:
        rec = row["speed_record"]
        print(f"    threshold {row['threshold']:<5} {row['wall_s_median']:.2f} s  x{row['wall_ratio_vs_exact']:.2f} wall "
              f"x{row['cpu_ratio_vs_exact']:.2f} CPU  x{row['flop_ratio_vs_exact'] or float('nan'):.2f} FLOPs  "
              f"PSNR {row['psnr_db_vs_exact']:.1f} dB  audio SNR "
              f"{row['audio_snr_db_vs_exact']:.1f} dB  passes full/cached {rec.get('full_passes')}/{rec.get('cached_passes')}")
    print(f"    exact after fast == exact: {exact_again}; PSNR of exact with another seed: {other_seed:.1f} dB")
    print(f"(c) {_flops_line(flops)}")
    print(f"wrote {path}")
    return 0


def _flops_line(flops: dict) -> str:
    return (f"ltx-2 dev defaults {flops['ltx-2']['transformer_flops'] / 1e12:.3f} TFLOP vs ltx-2-distilled "
            f"{flops['ltx-2-distilled']['transformer_flops'] / 1e12:.3f} TFLOP = x{flops['ratio_dev_over_distilled']:.1f}"
            f"; vs ltx-2 --speed fast (LoRA rank {flops['ltx-2 --speed fast']['lora_rank']}) "
            f"{flops['ltx-2 --speed fast']['transformer_flops'] / 1e12:.3f} TFLOP = x{flops['ratio_dev_over_fast_preset']:.1f}")


if __name__ == "__main__":
    sys.exit(main())
