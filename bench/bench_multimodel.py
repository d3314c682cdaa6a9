"""Several models on one worker: a queue of mixed-model jobs, with and without the queue's model affinity.

    .venv/bin/python bench/bench_multimodel.py                    # 24 jobs, tiny + demo, 64x64, 4 frames, 2 steps
    .venv/bin/python bench/bench_multimodel.py --jobs 40 --resident 1 2

The worker is jobs/worker.JobWorker in this process on a real SQLite queue (what `stillmotion serve
--model tiny --model demo` runs), with every job queued before it starts, models drawn at random
(seeded) for each job. For each number of resident pipelines (--resident: 1 is a GPU that holds one
SVD pipeline, the case that swaps; 2 is what a CPU with no --max-memory keeps), two orders:

  fifo       --affinity-passes 0: strict submission order
  affinity   the default (4 passes, 60 s): jobs for the loaded model go first, bounded

--repeat rounds run the conditions in rotating order; each condition's best wall time is kept (all
rounds are saved too). It reports wall time, jobs/minute, swaps (models loaded after the first), seconds spent swapping, and
each job's wait (claim - submit: mean and worst), and writes them as JSON under bench/results/.
A short queue runs first and is discarded (first loads warm the file cache). Figures are a report,
not a test: on a shared CPU they move with the load.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _image(path: Path, seed: int) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:64, 0:64]
    arr = np.stack([xx * 4.0, yy * 4.0, 128 + 60 * np.sin(xx / 5.0)], -1) + rng.normal(0, 8, (64, 64, 3))
    Image.fromarray(arr.clip(0, 255).astype("uint8")).save(path)


def run_queue(models: list[str], order: list[str], *, passes: int, resident: int, frames: int, steps: int,
              threads: int) -> dict:
    from stillmotion.engine.config import EngineConfig
    from stillmotion.jobs import worker as worker_module
    from stillmotion.jobs.layout import job_dir
    from stillmotion.jobs.store import AFFINITY_WAIT_S, SQLiteJobStore
    from stillmotion.jobs.worker import JobWorker
    from stillmotion.models.resolve import entry_for
    from stillmotion.spec import GenerationSpec

    data = Path(tempfile.mkdtemp(prefix="bench-multimodel-"))
    store = SQLiteJobStore(data / "jobs.sqlite3")
    for i, model in enumerate(order):
        job_id = f"vid_{i:04d}"
        folder = job_dir(data, job_id)
        folder.mkdir(parents=True)
        _image(folder / "input.png", i)
        spec = GenerationSpec(width=64, height=64, num_frames=frames, num_inference_steps=steps, seed=i)
        store.create(spec.resolve(entry_for(model), (64, 64)).model_dump(mode="json"), job_id=job_id, model=model,
                     input_name="input.png")
    # on a CPU with no --max-memory the worker keeps CPU_MAX_RESIDENT pipelines (jobs/worker.fits_beside): set here,
    # 1 stands for a GPU that holds one SVD pipeline, the case that swaps
    worker_module.CPU_MAX_RESIDENT = resident
    worker = JobWorker(data, "bench", EngineConfig.build(model=models[0], device="cpu", threads=threads), store,
                       warmup=False, models=models, affinity={"max_passed": passes, "max_wait": AFFINITY_WAIT_S})
    t0 = time.perf_counter()
    worker.load()
    ran = []
    while (job := worker.claim_next()) is not None:
        worker.run_job(job)
        ran.append(job.model)
    wall = time.perf_counter() - t0
    jobs = [store.get(f"vid_{i:04d}") for i in range(len(order))]
    assert all(j.status == "succeeded" for j in jobs), [(j.id, j.error_message) for j in jobs if j.status != "succeeded"]
    waits = [j.started_at - j.created_at for j in jobs]
    runs = sum(1 for a, b in zip(ran, ran[1:]) if a != b)
    return {"wall_s": round(wall, 2), "jobs_per_min": round(60 * len(order) / wall, 1), "swaps": worker.swaps,
            "swap_s": round(worker.swap_seconds, 2), "model_changes": runs,
            "wait_mean_s": round(statistics.mean(waits), 2), "wait_max_s": round(max(waits), 2),
            "max_passed": max(j.passed for j in jobs)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=["tiny", "demo"])
    p.add_argument("--jobs", type=int, default=24)
    p.add_argument("--frames", type=int, default=4)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--resident", type=int, nargs="+", default=[1, 2])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeat", type=int, default=2, help="rounds, in rotating order; each condition's best wall is kept")
    p.add_argument("--out", default=str(HERE / "results" / "multimodel-cpu.json"))
    args = p.parse_args()
    rng = random.Random(args.seed)
    order = [rng.choice(args.models) for _ in range(args.jobs)]
    # one short queue first, discarded: the first loads (file cache, hashes) must not count against one order
    run_queue(args.models, list(args.models) * 2, passes=0, resident=1, frames=args.frames, steps=args.steps,
              threads=args.threads)
    conditions = [(resident, name, passes) for resident in args.resident for name, passes in (("fifo", 0), ("affinity", 4))]
    best: dict = {}
    for rnd in range(args.repeat):  # rotating order: each condition runs early and late once in a while
        k = rnd % len(conditions)
        for resident, name, passes in conditions[k:] + conditions[:k]:
            r = run_queue(args.models, order, passes=passes, resident=resident, frames=args.frames, steps=args.steps,
                          threads=args.threads)
            r.update(order=name, resident=resident, round=rnd)
            key = (resident, name)
            best.setdefault(key, []).append(r)
            print(f"resident {resident}  {name:<8}  {r['wall_s']:7.2f} s  {r['jobs_per_min']:6.1f} jobs/min  "
                  f"swaps {r['swaps']:3d} ({r['swap_s']:.2f} s)  wait mean {r['wait_mean_s']:.2f} s "
                  f"max {r['wait_max_s']:.2f} s  passed max {r['max_passed']}  (round {rnd})", flush=True)
    results = [min(best[(resident, name)], key=lambda r: r["wall_s"]) for resident, name, _ in conditions]
    print("best of", args.repeat, "rounds:")
    for r in results:
        print(f"resident {r['resident']}  {r['order']:<8}  {r['wall_s']:7.2f} s  {r['jobs_per_min']:6.1f} jobs/min  "
              f"swaps {r['swaps']:3d} ({r['swap_s']:.2f} s)  wait mean {r['wait_mean_s']:.2f} s max {r['wait_max_s']:.2f} s")
    report = {
        "bench": "multimodel", "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "device": "cpu"},
        "models": args.models, "jobs": args.jobs, "queue": order, "frames": args.frames, "steps": args.steps,
        "size": "64x64", "threads": args.threads, "repeat": args.repeat, "results": results,
        "rounds": [r for rs in best.values() for r in rs],
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
