"""Keyframes (an end image): quality with the demo model on images it never saw, and the cost.

Quality. The `demo` model learned one camera move (a pan right with a push-in).
Each test case films a held-out procedural scene (train.synthetic, another
seed than the demo trained on, as bench_train.py does) with a different
camera (a pan left, up or down, or a pull-out), and one case uses crops of
examples/harbour.jpg: the first frame of that clip is the image, its last frame
the end image. Plain generation (first image only) and keyframe generation
(first + last, engine/keyframes.py) run with the same seed, steps and model
defaults. Per case:
  frame0_psnr   frame 0 against the first image (dB)
  last_psnr     the last frame against the end image (dB): what the end image buys
  mid_psnr      the middle frame against the filmed clip's middle frame (dB)
  motion, coherence_psnr   stillmotion.metrics: px/frame and the flow-warp PSNR of neighbours

FLOPs. `stillmotion estimate` for SVD-XT at its defaults, without and with an
end image (--keyframe): counted, not timed.

Cost. The CPU benchmark model of bench_speed.py (SVD's topology at width 64,
random weights) at the same steps, plain vs keyframe, best of `--repeats` each,
in this process (one thread).

    nice .venv/bin/python bench/bench_keyframes.py               # ~3 min on 2 shared cores
Writes bench/results/keyframes-cpu.json and keyframes-strip.png (first, middle and
last frames of plain vs keyframe, beside the image and the end image, for two cases).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE))

CAMERAS = {  # (dx, dy) px per frame, zoom per frame: none of them the demo's pan right + push-in
    "pan left": ((-2.0, 0.0), 0.0),
    "pan up": ((0.0, -2.0), 0.0),
    "pan down": ((0.0, 2.0), 0.0),
    "pull out": ((0.0, 0.0), -0.04),
}


def cases(n: int, frames: int):
    """(name, clip uint8 (T, 64, 64, 3)) on held-out scenes and on examples/harbour.jpg."""
    import numpy as np
    from PIL import Image

    from stillmotion.train.synthetic import Camera, film, make_scene

    rng = np.random.default_rng(12345)  # the demo trained on seed 0's stream
    out = []
    names = list(CAMERAS)
    for i in range(n):
        name = names[i % len(names)]
        pan, zoom = CAMERAS[name]
        out.append((f"scene {i} {name}", film(make_scene(rng, 128), 64, 64, frames, Camera(pan, zoom))))
    harbour = np.asarray(Image.open(HERE.parent / "examples" / "harbour.jpg").convert("RGB").resize((192, 128)))
    out.append(("harbour pan left", film(harbour, 64, 64, frames, Camera((-2.0, 0.0), 0.0), start=(110.0, 64.0))))
    return out


def quality(n: int) -> dict:
    import numpy as np
    from PIL import Image

    from stillmotion import Engine, GenerationSpec
    from stillmotion.metrics import motion_metrics, psnr

    engine = Engine("demo", device="cpu")
    frames = engine.entry.defaults.num_frames
    rows, strips = [], []
    for i, (name, clip) in enumerate(cases(n, frames)):
        first, last, mid = Image.fromarray(clip[0]), Image.fromarray(clip[-1]), clip[len(clip) // 2]
        spec = GenerationSpec(seed=i, width=64, height=64)
        row = {"case": name}
        for kind, end in (("plain", None), ("keyframe", last)):
            f = engine.generate(first, spec, end_image=end).frames
            m = motion_metrics(f, first)
            m["last_psnr"] = round(float(psnr(f[-1], clip[-1])), 2)
            m["mid_psnr"] = round(float(psnr(f[len(f) // 2], mid)), 2)
            row[kind] = m
            if i == 0 or name.startswith("harbour"):
                strips.append((name, kind, f, clip))
        rows.append(row)
        print(f"{name:22s} plain {row['plain']}  keyframe {row['keyframe']}", flush=True)
    mean = {kind: {k: round(float(np.mean([r[kind][k] for r in rows])), 3) for k in rows[0][kind]}
            for kind in ("plain", "keyframe")}
    better = float(np.mean([r["keyframe"]["last_psnr"] > r["plain"]["last_psnr"] for r in rows]))
    write_strip(strips, RESULTS / "keyframes-strip.png")
    return {"model": "demo", "frames": frames, "steps": engine.entry.defaults.num_inference_steps,
            "size": "64x64", "cases": rows, "mean": mean, "last_frame_better_share": better}


def write_strip(strips, path: Path) -> None:
    """Rows: per case, plain then keyframe; columns: the image, the first, middle and last frame, the end image."""
    import numpy as np
    from PIL import Image, ImageDraw

    scale, pad, label_w = 3, 4, 150
    cell = 64 * scale
    rows = len(strips)
    canvas = Image.new("RGB", (label_w + 5 * (cell + pad), 24 + rows * (cell + pad)), "white")
    draw = ImageDraw.Draw(canvas)
    for c, title in enumerate(("image", "first frame", "middle frame", "last frame", "end image")):
        draw.text((label_w + c * (cell + pad) + 4, 6), title, fill="black")
    for r, (name, kind, frames, clip) in enumerate(strips):
        y = 24 + r * (cell + pad)
        draw.text((4, y + cell // 2 - 12), f"{name}\n{kind}", fill="black")
        for c, arr in enumerate((clip[0], frames[0], frames[len(frames) // 2], frames[-1], clip[-1])):
            tile = Image.fromarray(np.asarray(arr)).resize((cell, cell), Image.NEAREST)
            canvas.paste(tile, (label_w + c * (cell + pad), y))
    canvas.save(path)


def cost(repeats: int, width: int, size: int, frames: int, steps: int) -> dict:
    from bench_speed import midsize_folder, test_image

    from stillmotion import Engine, GenerationSpec

    engine = Engine(str(midsize_folder(width)), device="cpu", dtype="fp32")
    img = test_image(size)
    end = img.transpose(0)  # a mirrored image: a different last frame
    spec = GenerationSpec(seed=1, width=size, height=size, num_frames=frames, num_inference_steps=steps)
    out = {}
    for kind, e in (("plain", None), ("keyframe", end)):
        best = None
        for _ in range(repeats):
            r = engine.generate(img, spec, end_image=e)
            t = r.timings
            row = {"seconds_per_video": t["total"], "denoise_seconds": t["denoise"], "encode_seconds": t["encode"],
                   "decode_seconds": t["decode"]}
            if best is None or row["seconds_per_video"] < best["seconds_per_video"]:
                best = row
        out[kind] = best
        print(kind, best, flush=True)
    out["ratio"] = round(out["keyframe"]["seconds_per_video"] / out["plain"]["seconds_per_video"], 3)
    out["denoise_ratio"] = round(out["keyframe"]["denoise_seconds"] / out["plain"]["denoise_seconds"], 3)
    return {"model": f"bench_speed mid-size (SVD topology, width {width}, random weights)", "size": size,
            "frames": frames, "steps": steps, "dtype": "fp32", "repeats": repeats, **out}


def estimate(model: str = "svd-xt") -> dict:
    """`stillmotion estimate` for `model` at its defaults, without and with an end image (counted FLOPs, planned peak)."""
    from stillmotion.cli.estimate import run_estimate
    from stillmotion.engine.config import EngineConfig
    from stillmotion.models.resolve import entry_for
    from stillmotion.spec import GenerationSpec

    spec = GenerationSpec().resolve(entry_for(model))  # the model's defaults at its landscape size
    out = {"model": model, "frames": spec.num_frames, "size": f"{spec.width}x{spec.height}",
           "steps": spec.num_inference_steps, "dtype": "fp16", "source": "counted (dry run), `stillmotion estimate`"}
    for kind, kf in (("plain", False), ("keyframe", True)):
        r = run_estimate(spec, EngineConfig(model=model, dtype="fp16"), keyframe=kf)
        out[kind] = {"tflop_per_video": round(r["flops"]["per_video"] / 1e12, 1),
                     "unet_passes_per_step": r["flops"]["unet_passes_per_step"],
                     "peak_bytes": r["plan"]["peak_bytes"], "stages_bytes": r["plan"]["stages"]}
    out["flop_ratio"] = round(out["keyframe"]["tflop_per_video"] / out["plain"]["tflop_per_video"], 3)
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", type=int, default=8, help="procedural scenes (plus one harbour case)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--skip-cost", action="store_true")
    ap.add_argument("--skip-estimate", action="store_true", help="no SVD-XT FLOP count (~1 min the first time)")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    RESULTS.mkdir(exist_ok=True)
    result = {"benchmark": "bench_keyframes (CPU)",
              "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "threads": 1,
                          "torch": torch.__version__, "load_avg": list(os.getloadavg())},
              "note": "CPU shared with other jobs while measured: timings are indicative",
              "quality": quality(args.cases)}
    if not args.skip_cost:
        result["cost"] = cost(args.repeats, args.width, args.size, args.frames, args.steps)
    if not args.skip_estimate:
        result["estimate"] = estimate()
    path = RESULTS / "keyframes-cpu.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path} and {RESULTS / 'keyframes-strip.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
