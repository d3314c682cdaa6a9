"""CPU speed benchmark: stock diffusers (the SVD guide's code) vs stillmotion's speed modes.

Model: SVD's real topology (four UNet levels, spatio-temporal blocks, temporal
VAE decoder) at reduced width ("mid-size"), random weights saved with
save_pretrained and loaded back like a real checkpoint. Each mode runs in its
own process (so peak RSS is that mode's), same weights, image and seed.

    nice .venv/bin/python bench/bench_speed.py            # ~ minutes on 2 cores
    nice .venv/bin/python bench/bench_speed.py --width 96 --size 256 --frames 14 --steps 10

Writes bench/results/speed-cpu-<host>.json and .png (time and memory per mode)
and prints seconds/video, seconds/step, peak RSS, ratio to stock and the
difference from exact (max abs, PSNR over all frames).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def midsize_folder(width: int) -> Path:
    """The mid-size model (tiny's topology at `width`), saved once as a diffusers folder (safetensors)."""
    from diffusers import StableVideoDiffusionPipeline

    from stillmotion.models.paths import cache_root
    from stillmotion.models.folder_info import write_folder_info
    from stillmotion.models.registry import REGISTRY
    from stillmotion.models.tiny import tiny_components

    folder = cache_root() / f"bench-midsize-w{width}"
    if not (folder / "model_index.json").is_file():
        StableVideoDiffusionPipeline(**tiny_components(seed=0, width=width)).save_pretrained(folder, safe_serialization=True)
        write_folder_info(folder, REGISTRY["tiny"].defaults)
    return folder


def test_image(size: int):
    import numpy as np
    from PIL import Image

    yy, xx = np.mgrid[0:size, 0:size]
    arr = np.stack([xx * 255 / size, yy * 255 / size, 128 + 60 * np.sin(xx / 9.0)], -1)
    return Image.fromarray(arr.clip(0, 255).astype("uint8"))


def difference(a, b) -> dict:
    """Max abs difference and PSNR (dB) between two frame stacks (uint8, or float 0..255)."""
    import numpy as np

    from stillmotion.metrics import psnr

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return {"max_abs": float(np.max(np.abs(a - b))) if a.size else 0.0, "psnr_db": psnr(a, b)}


def run_one(mode: str, a) -> dict:
    """One mode in this process: load, one warm-up, then the timed run; frames saved for the diff."""
    import numpy as np
    import torch

    folder = midsize_folder(a.width)
    img = test_image(a.size)
    t0 = time.perf_counter()
    if mode == "stock":
        from diffusers import StableVideoDiffusionPipeline

        pipe = StableVideoDiffusionPipeline.from_pretrained(folder, torch_dtype=torch.float32, use_safetensors=True)
        pipe.set_progress_bar_config(disable=True)
        load = time.perf_counter() - t0
        steps_t = []

        def cb(_p, i, _t, kw):
            steps_t.append(time.perf_counter())
            return kw

        def go():
            steps_t.clear()
            t = time.perf_counter()
            steps_t.append(t)
            frames = pipe(img, height=a.size, width=a.size, num_frames=a.frames, num_inference_steps=a.steps,
                          decode_chunk_size=a.frames, generator=torch.Generator("cpu").manual_seed(7),
                          callback_on_step_end=cb, output_type="np").frames[0]
            return np.clip(np.round(frames * 255.0), 0, 255).astype(np.uint8), time.perf_counter() - t

        go() if a.warmup else None
        frames, secs = go()
        per_step = (steps_t[-1] - steps_t[0]) / a.steps
    else:
        from stillmotion import Engine, GenerationSpec

        eng = Engine(str(folder), device="cpu", compile=(mode == "exact+compile"))
        load = time.perf_counter() - t0
        speed = "fast" if mode.startswith("fast") else "exact"
        spec = GenerationSpec(seed=7, num_frames=a.frames, width=a.size, height=a.size, num_inference_steps=a.steps,
                              speed=speed, cache_interval=a.interval)
        eng.generate(img, spec) if a.warmup else None
        t = time.perf_counter()
        r = eng.generate(img, spec)
        secs = time.perf_counter() - t
        frames = r.frames
        per_step = sum(r.timings["step_seconds"]) / a.steps
    np.save(Path(a.tmp) / f"{mode}.npy", frames)
    return {"mode": mode, "seconds_per_video": secs, "seconds_per_step": per_step, "load_seconds": load,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--width", type=int, default=64, help="model width (tiny is 32)")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--interval", type=int, default=3)
    ap.add_argument("--modes", default="stock,exact,fast")
    ap.add_argument("--warmup", action="store_true", help="one untimed run first in each process")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--tmp", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        print(json.dumps(run_one(a.one, a)))
        return

    import tempfile

    import numpy as np

    midsize_folder(a.width)  # build once, outside the timed processes
    a.tmp = tempfile.mkdtemp(prefix="bench-speed-")
    rows = []
    for mode in a.modes.split(","):
        cmd = [sys.executable, __file__, "--one", mode, "--tmp", a.tmp] + [
            f"--{k}={v}" for k, v in (("width", a.width), ("size", a.size), ("frames", a.frames), ("steps", a.steps),
                                       ("interval", a.interval))] + (["--warmup"] if a.warmup else [])
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
        rows.append(json.loads(out))
        print(f"{mode:>14}: {rows[-1]['seconds_per_video']:.2f} s/video", flush=True)
    ref = np.load(Path(a.tmp) / "exact.npy") if "exact" in a.modes.split(",") else None
    stock = next((r for r in rows if r["mode"] == "stock"), None)
    for r in rows:
        frames = np.load(Path(a.tmp) / f"{r['mode']}.npy")
        if ref is not None:
            r["vs_exact"] = difference(ref, frames)
        if stock:
            r["speedup_vs_stock"] = stock["seconds_per_video"] / r["seconds_per_video"]
    result = {
        "benchmark": "bench_speed (CPU)",
        "machine": {"host": platform.node(), "cpu": platform.processor() or platform.machine(),
                    "cores": os.cpu_count(), "load_avg": os.getloadavg()},
        "model": f"mid-size SVD topology, width {a.width} (random weights, safetensors)",
        "config": {"size": a.size, "frames": a.frames, "steps": a.steps, "cache_interval": a.interval, "dtype": "fp32"},
        "rows": rows,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = RESULTS / f"speed-cpu-{platform.node() or 'host'}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2))
    print(f"\n{'mode':>14} {'s/video':>8} {'s/step':>7} {'peak RSS':>9} {'x stock':>8} {'max abs':>8} {'PSNR dB':>8}")
    for r in rows:
        d = r.get("vs_exact", {})
        print(f"{r['mode']:>14} {r['seconds_per_video']:8.2f} {r['seconds_per_step']:7.3f} {r['peak_rss_mb']:7.0f}MB "
              f"{r.get('speedup_vs_stock', float('nan')):8.2f} {d.get('max_abs', float('nan')):8.1f} "
              f"{d.get('psnr_db', float('nan')):8.1f}")
    plot(rows, stem.with_suffix(".png"), result["model"] + f", {a.frames} frames {a.size}px, {a.steps} steps")
    print(f"\nwrote {stem}.json and .png")


def plot(rows, path, title) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["mode"] for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.5))
    ax1.bar(names, [r["seconds_per_video"] for r in rows], color="#4c72b0")
    ax1.set_ylabel("seconds per video")
    ax2.bar(names, [r.get("peak_gpu_mb", r.get("peak_rss_mb")) for r in rows], color="#dd8452")
    ax2.set_ylabel("peak GPU memory (MB)" if "peak_gpu_mb" in rows[0] else "peak RSS (MB)")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
