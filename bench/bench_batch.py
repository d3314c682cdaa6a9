"""Batch throughput: `stillmotion batch` (pipelined) vs the SVD guide's plain loop, in one run.

    .venv/bin/python bench/bench_batch.py                 # 20 images, tiny model, 64x64, 4 frames, 2 steps
    .venv/bin/python bench/bench_batch.py --images 50 --model svd-xt --size 1024x576 --frames 25 --steps 25

Three timings, each from a cold start (model load included), same images, same settings:

  guide     the diffusers guide's recipe: load StableVideoDiffusionPipeline, then for each image
            load_image -> resize -> pipe(...) -> export_to_video
  serial    stillmotion's engine with every phase in line: read+decode, generate, write
  batch     stillmotion.batch as the CLI runs it (pipelined on accelerators, in line on the CPU)
  pipelined stillmotion.batch forced to pipeline: the next image decodes and the last video
            encodes while one denoises

It prints images/minute, the ratio batch/guide, and how much wall time the
pipelining hides (seconds of decode+encode done beside the engine, and
serial - batch), and saves the figures as JSON under bench/results/.
Figures are a report, not a test: on a shared CPU they move with the load, so
--repeat runs rounds in rotating order and keeps each mode's best wall time;
CPU seconds are saved too (they move less with other people's load).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def make_images(folder: Path, n: int, size=(640, 480)) -> list[Path]:
    """Photo-sized JPEGs (smooth gradients + noise), so decoding and resizing cost something real."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    yy, xx = np.mgrid[0 : size[1], 0 : size[0]]
    for i in range(n):
        rng = np.random.default_rng(i)
        arr = np.stack([xx * 0.4 + 20 * i, yy * 0.5, 128 + 60 * np.sin(xx / (7.0 + i))], -1)
        arr = arr + rng.normal(0, 12, arr.shape)
        p = folder / f"img{i:03d}.jpg"
        Image.fromarray(arr.clip(0, 255).astype("uint8")).save(p, quality=92)
        paths.append(p)
    return paths


def run_guide(paths, out: Path, model_path: str, a) -> float:
    """The guide's loop, as written there (CPU generator for the same noise on every device)."""
    import torch
    from diffusers import StableVideoDiffusionPipeline
    from diffusers.utils import export_to_video, load_image

    t = time.perf_counter()
    pipe = StableVideoDiffusionPipeline.from_pretrained(model_path, use_safetensors=True)
    pipe.set_progress_bar_config(disable=True)
    pipe.to(a.device)
    out.mkdir(parents=True, exist_ok=True)
    for p in paths:
        image = load_image(str(p)).resize((a.width, a.height))
        frames = pipe(image, height=a.height, width=a.width, num_frames=a.frames, num_inference_steps=a.steps,
                      decode_chunk_size=a.frames, generator=torch.Generator("cpu").manual_seed(42)).frames[0]
        export_to_video(frames, str(out / f"{p.stem}.mp4"), fps=7)
    return time.perf_counter() - t


def run_serial(paths, out: Path, a) -> float:
    """stillmotion's engine, one phase after the other (no pipelining)."""
    from stillmotion import Engine, GenerationSpec
    from stillmotion.engine.config import EngineConfig

    t = time.perf_counter()
    engine = Engine(EngineConfig(model=a.model, device=a.device, progress=False))
    spec = GenerationSpec(width=a.width, height=a.height, num_frames=a.frames, num_inference_steps=a.steps, seed=42)
    for p in paths:
        engine.generate(str(p), spec).save(out / f"{p.stem}.mp4")
    return time.perf_counter() - t


def run_batch_pipelined(src: Path, out: Path, a, pipeline=None) -> tuple[float, dict]:
    from stillmotion.batch import plan_batch, run_batch
    from stillmotion.engine.config import EngineConfig

    t = time.perf_counter()
    fields = {"width": a.width, "height": a.height, "num_frames": a.frames, "num_inference_steps": a.steps}
    plan = plan_batch(src, out, model=a.model, fields=fields, seed=42)
    ctl = run_batch(plan, EngineConfig(model=a.model, device=a.device), pipeline=pipeline)
    wall = time.perf_counter() - t
    assert ctl.count("done") == len(plan.items), ctl.report()["counts"]
    return wall, dict(ctl.hidden)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=20)
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--size", default="64x64")
    ap.add_argument("--frames", type=int, default=4)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=1, help="rounds (rotating order); the best wall per mode counts")
    ap.add_argument("--out", default=str(HERE / "results"))
    a = ap.parse_args()
    a.width, a.height = (int(v) for v in a.size.lower().split("x"))

    from stillmotion.models.resolve import resolve

    model_path = str(resolve(a.model).path)
    work = Path(tempfile.mkdtemp(prefix="stillmotion-bench-batch-"))
    try:
        src = work / "images"
        paths = make_images(src, a.images)
        # warm the OS file cache and torch's first-call costs once, outside every timing
        run_serial(paths[:1], work / "warm", a)

        # rounds in rotating order, best wall per mode: a shared machine's load drifts over minutes
        order = ["guide", "batch", "serial", "pipelined"]
        walls: dict[str, list[float]] = {m: [] for m in order}
        cpus: dict[str, list[float]] = {m: [] for m in order}
        hidden: dict = {}
        for r in range(a.repeat):
            for mode in order[r % 4:] + order[: r % 4]:
                out = work / f"{mode}{r}"
                c = time.process_time()
                if mode == "guide":
                    wall = run_guide(paths, out, model_path, a)
                elif mode == "serial":
                    wall = run_serial(paths, out, a)
                elif mode == "batch":
                    wall, _ = run_batch_pipelined(src, out, a)  # auto: pipelined on accelerators only
                else:
                    wall, hidden = run_batch_pipelined(src, out, a, pipeline=True)
                walls[mode].append(wall)
                cpus[mode].append(time.process_time() - c)
                print(f"round {r + 1}: {mode} {wall:.1f}s wall, {cpus[mode][-1]:.1f}s cpu", file=sys.stderr)
        guide, serial, batch, piped = (min(walls[m]) for m in order[:1] + ["serial", "batch", "pipelined"])
    finally:
        shutil.rmtree(work, ignore_errors=True)

    per_min = lambda s: round(a.images / s * 60.0, 2)  # noqa: E731
    result = {
        "bench": "batch",
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "load_avg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None},
        "settings": {"images": a.images, "model": a.model, "device": a.device, "size": a.size,
                     "frames": a.frames, "steps": a.steps},
        "repeat": a.repeat,
        "wall_seconds": {"guide": round(guide, 2), "serial": round(serial, 2), "batch": round(batch, 2),
                         "pipelined": round(piped, 2)},
        "wall_seconds_all": {k: [round(x, 2) for x in v] for k, v in walls.items()},
        "cpu_seconds_all": {k: [round(x, 2) for x in v] for k, v in cpus.items()},
        "images_per_minute": {"guide": per_min(guide), "serial": per_min(serial), "batch": per_min(batch),
                              "pipelined": per_min(piped)},
        "ratio_batch_vs_guide": round(guide / batch, 3),
        "pipelined_io_seconds": {k: round(v, 2) for k, v in hidden.items()},
        "hidden_share_of_wall": round(sum(hidden.values()) / piped, 3),  # I/O seconds run beside the engine
        "pipelined_saved_vs_serial_seconds": round(serial - piped, 2),
    }
    print(json.dumps(result, indent=2))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    name = f"batch-{a.model}-{a.size}-{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%SZ')}.json"
    (out / name).write_text(json.dumps(result, indent=2) + "\n")
    print(f"saved {out / name}", file=sys.stderr)


if __name__ == "__main__":
    main()
