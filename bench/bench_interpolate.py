"""Benchmark: 2x frame interpolation speed and quality at 1024x576, loops, long-video drift.

    .venv/bin/python bench/bench_interpolate.py                 # CPU: blend, flow, rife (random weights)
    .venv/bin/python bench/bench_interpolate.py --device cuda   # rife on the GPU too
    .venv/bin/python bench/bench_interpolate.py --rife-weights rife.safetensors   # real RIFE quality

The clip is synthetic with known motion (a multi-scale noise texture sliding
and zooming), so the frames dropped and rebuilt have a true answer. Speed is
interpolated (new) frames per second of wall time for the whole 2x pass,
optical flow or network included. Results print and are saved as JSON under
bench/results/. Figures are reported, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def moving_clip(n, h, w, dx=6.0, dy=3.0, zoom=1.01, seed=0):
    """n frames of a multi-scale noise texture sliding (dx, dy) px and zooming by `zoom` per frame
    (the same recipe as tests/test_interpolate.py)."""
    import cv2

    rng = np.random.default_rng(seed)
    big = np.zeros((2 * h, 2 * w, 3), np.float32)
    for step, amp in ((2, 40), (6, 60), (20, 80)):
        noise = rng.normal(0, 1, (2 * h // step + 2, 2 * w // step + 2, 3)).astype(np.float32)
        big += amp * cv2.resize(noise, (2 * w, 2 * h), interpolation=cv2.INTER_CUBIC)
    big = np.clip(big + 128, 0, 255).astype(np.uint8)
    frames = []
    for k in range(n):
        s = zoom**k
        m = np.array([[s, 0, w / 2 - s * w + dx * k], [0, s, h / 2 - s * h + dy * k]], np.float32)
        frames.append(cv2.warpAffine(big, m, (w, h), flags=cv2.INTER_LINEAR))
    return np.stack(frames)


def bench_backend(name, interp, clip, repeats):
    from stillmotion.video import quality
    from stillmotion.video.interpolate import interpolate

    kept = clip[::2]
    new = len(kept) - 1
    interpolate(kept[:2], 2, interp=interp)  # warm-up (thread pools, oneDNN, CUDA kernels)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        interpolate(kept, 2, interp=interp)
        best = min(best, time.perf_counter() - t)
    q = quality.held_out(clip, lambda k: interpolate(k, 2, interp=interp))
    row = {
        "backend": name,
        "new_frames": new,
        "seconds": round(best, 4),
        "new_frames_per_s": round(new / best, 3),
        "ms_per_new_frame": round(1000 * best / new, 1),
        "psnr": q["psnr"],
        "ssim": q["ssim"],
    }
    print(f"  {name:<22} {row['new_frames_per_s']:>8.2f} new frames/s  {row['ms_per_new_frame']:>8.1f} ms/frame  "
          f"PSNR {row['psnr']:>6.2f} dB  SSIM {row['ssim']:.4f}", flush=True)
    return row


def bench_loops(clip):
    from stillmotion.video import quality
    from stillmotion.video.loop import blend, pingpong

    rows = {"as_generated": quality.loop_jump(clip)}
    t = time.perf_counter()
    rows["blend"] = {**quality.loop_jump(blend(clip)), "seconds": round(time.perf_counter() - t, 3)}
    rows["pingpong"] = quality.loop_jump(pingpong(clip))
    for k, v in rows.items():
        print(f"  loop {k:<14} end->start jump {v['jump']:.2f}, median step {v['median_step']:.2f}, ratio {v['ratio']:.2f}")
    return rows


def bench_long():
    """Colour drift first->last segment on the tiny model (its output is noise: this checks the plumbing)."""
    import contextlib
    import io

    from PIL import Image

    from stillmotion import Engine, GenerationSpec

    with contextlib.redirect_stderr(io.StringIO()):
        engine = Engine("tiny", device="cpu", progress=False)
    yy, xx = np.mgrid[0:64, 0:64]
    img = Image.fromarray(np.stack([xx * 4, yy * 4, 255 - xx * 2], -1).clip(0, 255).astype(np.uint8))
    spec = GenerationSpec(width=64, height=64, num_frames=4, num_inference_steps=2, fps=4, seed=3, segments=4)
    t = time.perf_counter()
    r = engine.generate(img, spec)
    row = {**r.metadata["long"], "seconds": round(time.perf_counter() - t, 2), "model": "tiny"}
    print(f"  long (tiny, 4 segments)  colour drift first->last segment: raw {row['colour_drift_raw']:.3f} "
          f"-> matched {row['colour_drift']:.3f} (delta E)")
    return row


def bench_long_drift(segments=8):
    """Colour drift with a stand-in model that pans on and warms/brightens per frame (drift by construction),
    chained with and without the colour matching: the measure the tiny model cannot give."""
    from PIL import Image

    from stillmotion import GenerationSpec
    from stillmotion.engine import long as longmod
    from stillmotion.video import quality

    class Drifting:
        def sample(self, image, spec, report, cancel, timings, record, progress_span=(0.0, 1.0)):
            start = np.asarray(image).astype(np.float32)
            return np.stack([np.clip(np.roll(start, -4 * i, axis=1) + np.array([4.0, 2.0, -3.0]) * i, 0, 255)
                             .astype(np.uint8) for i in range(spec.num_frames)])

    spec = GenerationSpec(width=256, height=128, num_frames=14, num_inference_steps=1, fps=7, seed=1,
                          segments=segments)
    image = Image.fromarray(moving_clip(1, 128, 256)[0])
    rows = {}
    for label, match in (("matched", longmod.match_colour), ("unmatched", lambda frames, ref: frames)):
        saved, longmod.match_colour = longmod.match_colour, match
        try:
            frames, _, extra = longmod.generate_long(Drifting(), image, spec, lambda p: None, lambda: False, {})
        finally:
            longmod.match_colour = saved
        n = spec.num_frames
        rows[label] = {"first_to_last_segment": quality.colour_drift(frames[:n], frames[-n:]),
                       "seam_step_ratio_max": round(float(quality.step_sizes(frames).max()
                                                          / np.median(quality.step_sizes(frames))), 3)}
    print(f"  long (drifting stand-in, {segments} segments)  colour drift first->last segment: "
          f"unmatched {rows['unmatched']['first_to_last_segment']:.2f} -> matched {rows['matched']['first_to_last_segment']:.2f}"
          " (delta E)")
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=1024)
    ap.add_argument("--height", type=int, default=576)
    ap.add_argument("--frames", type=int, default=9, help="clip length; every other frame is dropped and rebuilt")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="device for rife: cpu, cuda")
    ap.add_argument("--rife-weights", default=None, help="real RIFE weights (.safetensors); default: random weights")
    ap.add_argument("--skip-rife", action="store_true")
    ap.add_argument("--skip-long", action="store_true")
    ap.add_argument("--out", default=None, help="JSON path (default bench/results/interpolate-<device>-<time>.json)")
    args = ap.parse_args(argv)

    import cv2
    import torch

    from stillmotion.video.interpolate import BlendInterpolator, FlowInterpolator

    clip = moving_clip(args.frames, args.height, args.width)
    print(f"2x interpolation, {args.width}x{args.height}, {args.frames} frames "
          f"({(args.frames + 1) // 2} kept, {args.frames // 2} rebuilt); "
          f"cpu threads: torch {torch.get_num_threads()}, opencv {cv2.getNumThreads()}", flush=True)
    rows = [
        bench_backend("blend", BlendInterpolator(), clip, args.repeats),
        bench_backend("flow (default)", FlowInterpolator(), clip, args.repeats),
        bench_backend("flow (DIS medium, full)", FlowInterpolator("medium", flow_scale=1.0), clip, args.repeats),
        bench_backend("flow (DIS fast, full)", FlowInterpolator("fast", flow_scale=1.0), clip, args.repeats),
    ]
    if not args.skip_rife:
        from stillmotion.video.rife import RifeInterpolator

        devices = [args.device] if args.device == "cpu" else ["cpu", args.device]
        for dev in devices:
            if args.rife_weights:
                r = RifeInterpolator.from_weights(args.rife_weights, device=dev)
                label = f"rife {r.info['variant']} ({dev})"
            else:
                r = RifeInterpolator.random("4.25", seed=0, device=dev)
                label = f"rife 4.25 random ({dev})"
            row = bench_backend(label, r, clip, 1 if dev == "cpu" else args.repeats)
            row["weights"] = r.info.get("weights", r.info.get("file"))
            rows.append(row)
    loops = bench_loops(clip[:25] if len(clip) > 25 else clip)
    long = None if args.skip_long else {"tiny": bench_long(), "drifting_stand_in": bench_long_drift()}

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    result = {
        "bench": "interpolate",
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "gpu": gpu,
                    "load_average_after": [round(x, 2) for x in os.getloadavg()],
                    "python": platform.python_version(), "torch": torch.__version__, "opencv": cv2.__version__},
        "clip": {"width": args.width, "height": args.height, "frames": args.frames,
                 "motion": "texture sliding 6,3 px/frame and zooming 1%/frame (12,6 px and 2% between kept frames)"},
        "interpolation_2x": rows,
        "loops": loops,
        "long": long,
    }
    out = Path(args.out) if args.out else HERE / "results" / (
        f"interpolate-{args.device.replace(':', '')}-{datetime.now().strftime('%Y%m%d-%H%M%S')}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"saved {out}")


if __name__ == "__main__":
    main()
