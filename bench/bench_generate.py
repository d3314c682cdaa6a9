"""End to end: `stillmotion generate --model tiny` vs the SVD guide's stock code, in the same run.

    nice .venv/bin/python bench/bench_generate.py [--frames 8 --size 64 --steps 4 --repeat 3]

Each side runs as its own process (import, load, encode, denoise, decode,
write): the stock side is the guide's code (StableVideoDiffusionPipeline
.from_pretrained, pipe(image, decode_chunk_size=...), export_to_video); ours is
the CLI. Reports wall seconds (median of --repeat), the ratio, each process's
peak RSS (wait4), and our time split from the sidecar's timings
(load/prepare/encode/denoise/decode/write). Writes bench/results/generate-<host>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

STOCK = r"""
import sys, time, torch
t0 = time.perf_counter()
from diffusers import StableVideoDiffusionPipeline
from diffusers.utils import export_to_video, load_image
from stillmotion.models.tiny import ensure_tiny
t_import = time.perf_counter()
pipe = StableVideoDiffusionPipeline.from_pretrained(ensure_tiny(), torch_dtype=torch.float32, use_safetensors=True)
pipe.set_progress_bar_config(disable=True)
t_load = time.perf_counter()
image = load_image(sys.argv[1]).resize((int(sys.argv[3]), int(sys.argv[3])))
frames = pipe(image, height=int(sys.argv[3]), width=int(sys.argv[3]), num_frames=int(sys.argv[4]),
              num_inference_steps=int(sys.argv[5]), decode_chunk_size=int(sys.argv[4]),
              generator=torch.manual_seed(42)).frames[0]
t_run = time.perf_counter()
export_to_video(frames, sys.argv[2], fps=7)
t_write = time.perf_counter()
print({"import": t_import - t0, "load": t_load - t_import, "pipeline": t_run - t_load, "write": t_write - t_run})
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    from PIL import Image

    from stillmotion.models.tiny import ensure_tiny

    ensure_tiny()
    tmp = Path(tempfile.mkdtemp(prefix="bench-generate-"))
    img = tmp / "in.png"
    Image.new("RGB", (a.size * 2, a.size * 2), (90, 140, 200)).save(img)
    py = sys.executable
    stock_runs, ours_runs, splits = [], [], []
    for i in range(a.repeat):
        stock_runs.append(timed_child([py, "-c", STOCK, str(img), str(tmp / f"stock{i}.mp4"), str(a.size),
                                       str(a.frames), str(a.steps)]))
        out = tmp / f"ours{i}.mp4"
        ours_runs.append(timed_child([str(Path(py).parent / "stillmotion"), "generate", str(img), "--model", "tiny",
                                      "--device", "cpu", "-o", str(out), "--frames", str(a.frames),
                                      "--width", str(a.size), "--height", str(a.size), "--steps", str(a.steps),
                                      "--seed", "42"]))
        side = json.loads(out.with_suffix(".json").read_text())
        splits.append(side.get("timings", {}))
    med = lambda runs, k: statistics.median(r[k] for r in runs)  # noqa: E731
    result = {
        "benchmark": "bench_generate", "machine": {"host": platform.node(), "cores": os.cpu_count(),
                                                   "load_avg": os.getloadavg()},
        "config": vars(a),
        "stock": {"seconds": med(stock_runs, 0), "peak_rss_mb": med(stock_runs, 1)},
        "ours": {"seconds": med(ours_runs, 0), "peak_rss_mb": med(ours_runs, 1),
                 "split": {k: statistics.median(s.get(k) or 0 for s in splits)
                           for k in ("load", "prepare", "encode", "denoise", "decode", "write", "total")}},
    }
    result["ratio_stock_over_ours"] = result["stock"]["seconds"] / result["ours"]["seconds"]
    (HERE / "results").mkdir(exist_ok=True)
    path = HERE / "results" / f"generate-{platform.node() or 'host'}.json"
    path.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


def timed_child(cmd):
    """Popen + wait4 so the peak RSS is this child's alone."""
    t = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t
    err = p.stderr.read().decode(errors="replace")
    p.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} failed: {err[-2000:]}")
    return wall, ru.ru_maxrss / 1024


if __name__ == "__main__":
    main()
