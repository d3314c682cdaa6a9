"""Training speed and memory on this machine, and the demo model's motion metrics on held-out images.

    .venv/bin/python bench/bench_train.py [--steps 5] [--images 20] [--threads 1]

Reports, does not assert. For each configuration (tiny full fine-tuning, tiny
LoRA, the demo's UNet stage) it runs a few training steps in a fresh process
and prints steps/second and the process's peak resident memory (the timed span
includes the final checkpoint and one 1-step validation video, so short runs
understate the steady rate; the demo row encodes with the full VAE, not the
linear proxy scripts/train_demo.py uses). Then it
generates with `demo` (and `tiny`, for contrast) from 20 procedural images the
demo never trained on (another seed and a different camera: none) and prints
the three motion metrics. Results go to bench/results/train.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, resource, sys, time, torch
torch.set_num_threads(int(sys.argv[2]))
cfg_kw = json.loads(sys.argv[1])
from stillmotion.train.trainer import TrainConfig, train
dataset = encode = None
if cfg_kw.pop("demo", False):
    from stillmotion.train.demo import DemoClips
    dataset = DemoClips()
summary = train(TrainConfig(**cfg_kw), dataset=dataset, log=lambda m: None, progress=False)
print(json.dumps({"steps_per_second": summary["steps_per_second"], "seconds": summary["seconds"],
                  "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))
"""


def bench_steps(steps: int, threads: int) -> dict:
    from stillmotion.train.synthetic import write_clips

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        clips = Path(tmp) / "clips"
        write_clips(clips, 4, seed=0, num_frames=8, fps=8)
        common = dict(clips=str(clips), steps=steps, num_frames=8, width=64, height=64, fps=8, lr=1e-4,
                      checkpoint_every=10**6, validate_every=10**6, validation_steps=1, device="cpu")
        demo_base = Path(tmp) / "demo-base"
        _demo_base(demo_base)
        configs = {
            "tiny full, batch 1": dict(common, base="tiny", batch_size=1),
            "tiny LoRA r8, batch 1": dict(common, base="tiny", batch_size=1, lora_rank=8),
            "demo UNet, batch 4": dict(common, base=str(demo_base), batch_size=4, demo=True),
        }
        for name, kw in configs.items():
            kw = dict(kw, output=str(Path(tmp) / name.replace(" ", "_").replace(",", "")))
            r = subprocess.run([sys.executable, "-c", CHILD, json.dumps(kw), str(threads)], capture_output=True, text=True)
            if r.returncode != 0:
                out[name] = {"error": r.stderr.strip().splitlines()[-1] if r.stderr.strip() else "failed"}
            else:
                out[name] = json.loads(r.stdout.strip().splitlines()[-1])
            print(f"{name:28s} {out[name]}", flush=True)
    return out


def _demo_base(folder: Path) -> None:
    """The demo's untrained components (its VAE from a proxy with seeded random weights)."""
    import torch
    from diffusers import StableVideoDiffusionPipeline

    from stillmotion.models.folder_info import write_folder_info
    from stillmotion.train.demo import DEMO_DEFAULTS, demo_components
    from stillmotion.train.linear_vae import Proxy, build_linear_vae

    torch.manual_seed(0)
    comps = demo_components(0, vae=build_linear_vae(Proxy()))
    StableVideoDiffusionPipeline(**comps).save_pretrained(folder, safe_serialization=True)
    write_folder_info(folder, DEMO_DEFAULTS)


def bench_metrics(n: int) -> dict:
    import numpy as np
    from PIL import Image

    from stillmotion import Engine, GenerationSpec
    from stillmotion.metrics import motion_metrics
    from stillmotion.train.synthetic import make_scene

    rng = np.random.default_rng(12345)  # the demo trained on seed 0's stream
    images = [Image.fromarray(make_scene(rng, 64)) for _ in range(n)]
    out = {}
    for model in ("demo", "tiny"):
        engine = Engine(model, device="cpu")
        rows = [motion_metrics(engine.generate(im, GenerationSpec(seed=i)).frames, im) for i, im in enumerate(images)]
        agg = {k: round(float(np.mean([r[k] for r in rows])), 3) for k in rows[0]}
        agg["pass_rate"] = round(float(np.mean([r["frame0_psnr"] >= 20 and r["motion"] >= 0.5 and r["coherence_psnr"] >= 25
                                                 for r in rows])), 3)
        agg["min"] = {k: round(float(np.min([r[k] for r in rows])), 3) for k in rows[0]}
        out[model] = agg
        print(f"{model:5s} mean {agg}", flush=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--images", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--skip-steps", action="store_true")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    result = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "threads": args.threads,
                          "torch": torch.__version__},
              "note": "CPU shared with other jobs while measured: timings are indicative"}
    if not args.skip_steps:
        result["train_steps"] = bench_steps(args.steps, args.threads)
    result["demo_metrics_held_out"] = bench_metrics(args.images)
    out = Path(__file__).parent / "results" / "train.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
