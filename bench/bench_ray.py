"""Ray Data batch vs plain batch: throughput with 1 and 2 actors, and Ray's overhead per job.

    python bench/bench_ray.py [--images 12] [--frames 4] [--steps 2] [--size 64]

Tiny model on the CPU. Prints a table and writes bench/results/ray.json. Every
run writes into a fresh folder, so nothing is skipped by resume. Timings are
reported, not asserted (see DESIGN.md: a benchmark is not a test).

    plain              batch.run_batch in this process (one Engine)
    ray Nx             stillmotion.ray.data.run_batch_ray with N actors, each with as many torch threads as the
                       plain batch (byte-identical files)
    ray Nx 1-thread    N actors with 1 torch thread each (no oversubscription; files may differ in the last bit)

Wall times include the model load in every case (in each actor for Ray); `ray.init` is timed apart.
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
from pathlib import Path

import numpy as np
from PIL import Image


def make_images(root: Path, n: int) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for k in range(n):
        arr = np.random.default_rng(k).integers(0, 255, (96, 112, 3), dtype=np.uint8)
        Image.fromarray(arr).save(root / f"img{k:03d}.png")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=12)
    ap.add_argument("--frames", type=int, default=4)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--cpus", type=int, default=os.cpu_count())
    args = ap.parse_args()

    os.environ.setdefault("STILLMOTION_CACHE", tempfile.mkdtemp(prefix="stillmotion-bench-cache-"))
    from stillmotion.batch import plan_batch, run_batch
    from stillmotion.engine.config import EngineConfig

    work = Path(tempfile.mkdtemp(prefix="stillmotion-bench-ray-"))
    images = work / "images"
    make_images(images, args.images)
    fields = {"width": args.size, "height": args.size, "num_frames": args.frames, "num_inference_steps": args.steps}
    rows = []

    def record(name, wall, ctl, **extra):
        done = ctl.count("done")
        rows.append({"run": name, "items": done, "wall_s": round(wall, 2),
                     "per_item_s": round(wall / max(done, 1), 3),
                     "items_per_min": round(60 * done / wall, 1), **extra})
        print(f"{name:18s} {done:3d} items  {wall:7.1f} s  {60 * done / wall:6.1f}/min", flush=True)

    # 1. plain batch (the tiny model builds into the cache first, outside the timing)
    from stillmotion import Engine

    config = EngineConfig(model="tiny", device="cpu")
    Engine(config)
    plan = plan_batch(images, work / "plain", model="tiny", fields=fields)
    t = time.perf_counter()
    ctl = run_batch(plan, config)
    record("plain", time.perf_counter() - t, ctl)

    # 2. Ray: 1 and 2 actors
    import ray

    from stillmotion.ray.data import run_batch_ray

    t = time.perf_counter()
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    init_s = time.perf_counter() - t
    print(f"ray.init {init_s:.1f} s", flush=True)
    for actors, threads in ((1, None), (2, None), (2, 1)):
        name = f"ray {actors}x" + (" 1-thread" if threads else "")
        out = work / name.replace(" ", "_")
        plan = plan_batch(images, out, model="tiny", fields=fields)
        t = time.perf_counter()
        ctl = run_batch_ray(plan, config.replace(threads=threads), actors=actors)
        same = all((out / p.relative_to(work / "plain")).read_bytes() == p.read_bytes()
                   for p in (work / "plain").glob("*.mp4"))
        record(name, time.perf_counter() - t, ctl, actors=actors, byte_identical=same)

    # 3. plain again: on a shared machine the load changes; the better of the two plain runs is the baseline
    plan = plan_batch(images, work / "plain-again", model="tiny", fields=fields)
    t = time.perf_counter()
    ctl = run_batch(plan, config)
    record("plain (again)", time.perf_counter() - t, ctl)

    plain = min((r for r in rows if r["run"].startswith("plain")), key=lambda r: r["wall_s"])
    one = next(r for r in rows if r["run"] == "ray 1x")
    overhead = (one["wall_s"] - plain["wall_s"]) / max(one["items"], 1)
    print(f"Ray overhead per job (1 actor vs the better plain run, model load and actor start included): "
          f"{overhead:.2f} s")
    result = {"machine": f"{platform.machine()} {os.cpu_count()} CPUs, {platform.platform()}",
              "python": sys.version.split()[0], "ray": ray.__version__, "config": vars(args),
              "ray_init_s": round(init_s, 2), "runs": rows, "ray_overhead_per_job_s": round(overhead, 3)}
    dest = Path(__file__).resolve().parent / "results" / "ray.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(result, indent=2) + "\n")
    ray.shutdown()
    print(f"saved {dest}")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
