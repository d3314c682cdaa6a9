"""FramePack on the CPU: --speed fast (First Block Cache) against exact, and peak host memory as the video grows.

    OMP_NUM_THREADS=1 nice .venv/bin/python bench/bench_framepack.py            # a few minutes on a shared 2-core VM
    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_framepack.py --size 96 --steps 6 --thresholds 0.15

Model: tiny_framepack's text encoders, tokenizers, SigLIP and scheduler with a mid-size random
HunyuanVideoFramepackTransformer3DModel (default 4 heads x 64, 2 double-stream + 6 single-stream blocks) and a
wider AutoencoderKLHunyuanVideo, built here, saved with save_pretrained and loaded back as a folder. Random weights:
the frames are noise, so the PSNR of fast against exact is a property of this model, not of trained FramePack.

(a) fast vs exact: Engine.generate at the latent window 9 (FramePack's), one section (37 frames), exact then fast at
    the default threshold (families/framepack.FAST_THRESHOLD) and at each --thresholds, in rotation, --repeat times:
    wall and CPU seconds (median), the ratio to exact, PSNR of fast against exact (stillmotion.metrics.psnr over all
    frames) beside the PSNR of exact against another seed (what "different" looks like), the passes that ran every
    block or only the first.
(b) flat memory: a child process per measurement loads the folder and makes 1, 2 and 4 sections (37, 73, 145
    frames): the RSS after loading, the peak while loading (ru_maxrss then), and the run's own peak (VmHWM reset
    through /proc/self/clear_refs after loading), so the growth is the run's. What grows with
    length is the video itself (the frames kept in host memory); the model and one section's activations do not.

Writes bench/results/framepack-cpu-<date>.json (machine, versions, the command) and prints a summary.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PROMPT = "a cat walks in the snow, the camera pans"


def build(folder: Path, a) -> Path:
    import torch
    from diffusers import AutoencoderKLHunyuanVideo, HunyuanVideoFramepackPipeline, HunyuanVideoFramepackTransformer3DModel

    from stillmotion.models.tiny_framepack import CLIP_TEXT_DIM, LLAMA_DIM, SIGLIP_DIM, tiny_framepack_components

    parts = tiny_framepack_components()
    torch.manual_seed(10)
    d = a.head_dim
    parts["transformer"] = HunyuanVideoFramepackTransformer3DModel(
        in_channels=16, out_channels=16, num_attention_heads=a.heads, attention_head_dim=d, num_layers=a.layers,
        num_single_layers=a.single_layers, num_refiner_layers=1, mlp_ratio=4.0, patch_size=2, patch_size_t=1,
        guidance_embeds=True, text_embed_dim=LLAMA_DIM, pooled_projection_dim=CLIP_TEXT_DIM,
        rope_axes_dim=(d // 4, 3 * d // 8, 3 * d // 8), image_condition_type=None, has_image_proj=True,
        image_proj_dim=SIGLIP_DIM, has_clean_x_embedder=True).eval()
    torch.manual_seed(11)
    parts["vae"] = AutoencoderKLHunyuanVideo(
        in_channels=3, out_channels=3, latent_channels=16, down_block_types=("HunyuanVideoDownBlock3D",) * 4,
        up_block_types=("HunyuanVideoUpBlock3D",) * 4, block_out_channels=(16, 32, 32, 32), layers_per_block=1,
        act_fn="silu", norm_num_groups=8, scaling_factor=0.476986, spatial_compression_ratio=8,
        temporal_compression_ratio=4, mid_block_add_attention=True).eval()
    HunyuanVideoFramepackPipeline(**parts).save_pretrained(folder, safe_serialization=True)
    return folder


def image(size: int, seed: int = 0):
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    arr = np.stack([xx * 255 / size, yy * 255 / size, 128 + 60 * np.sin(xx / 5.0)], -1) + rng.normal(0, 8, (size, size, 3))
    return Image.fromarray(arr.clip(0, 255).astype("uint8"))


def spec(a, sections: int, seed: int = 1, speed: str = "exact"):
    from stillmotion.spec import GenerationSpec

    return GenerationSpec(num_frames=36 * sections + 1, num_inference_steps=a.steps, latent_window_size=9,
                          width=a.size, height=a.size, seed=seed, prompt=PROMPT, speed=speed)


def timed(fn):
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


def speed_part(folder: Path, a) -> dict:
    from stillmotion.engine.core import Engine
    from stillmotion.families import framepack
    from stillmotion.metrics import psnr

    engine = Engine(str(folder), device="cpu")
    img = image(a.size)
    default = framepack.FAST_THRESHOLD
    runs: dict = {"exact": [], f"fast@{default}": []}
    for th in a.thresholds:
        runs.setdefault(f"fast@{th}", [])
    results: dict = {}
    for r in range(a.repeat):
        for name in list(runs):
            th = None if name == "exact" else float(name.split("@")[1])
            framepack.FAST_THRESHOLD = default if th is None else th
            try:
                res, wall, cpu = timed(lambda: engine.generate(img, spec(a, 1, speed="exact" if th is None else "fast")))
            finally:
                framepack.FAST_THRESHOLD = default
            runs[name].append((wall, cpu))
            results[name] = res
            print(f"  run {r + 1}/{a.repeat} {name}: {wall:.1f} s wall, {cpu:.1f} s CPU", flush=True)
    other = engine.generate(img, spec(a, 1, seed=2)).frames
    exact = results["exact"].frames
    ex_wall = statistics.median(w for w, _ in runs["exact"])
    ex_cpu = statistics.median(c for _, c in runs["exact"])
    out = {"exact": {"wall_s": round(ex_wall, 2), "cpu_s": round(ex_cpu, 2)},
           "psnr_exact_vs_other_seed_db": round(psnr(exact, other), 2), "fast": {}}
    for name, times in runs.items():
        if name == "exact":
            continue
        wall, cpu = statistics.median(w for w, _ in times), statistics.median(c for _, c in times)
        sp = results[name].metadata["speed"]
        out["fast"][name.split("@")[1]] = {
            "wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "wall_ratio": round(ex_wall / wall, 2),
            "cpu_ratio": round(ex_cpu / cpu, 2), "psnr_vs_exact_db": round(psnr(results[name].frames, exact), 2),
            "full_passes": sp.get("full_passes"), "cached_passes": sp.get("cached_passes")}
    return out


def memory_child(folder: str, sections: int, size: int, steps: int) -> None:
    """In a child process: load, note RSS, make `sections` sections, print peak RSS as JSON."""
    import torch

    from stillmotion.engine.core import Engine

    torch.set_num_threads(1)
    engine = Engine(folder, device="cpu")
    loaded = _rss_now()
    load_peak = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    with open("/proc/self/clear_refs", "w") as f:  # reset VmHWM: the run's own peak, not loading's
        f.write("5")
    a = argparse.Namespace(steps=steps, size=size)
    t = time.perf_counter()
    res = engine.generate(image(size), spec(a, sections))
    print(json.dumps({"sections": sections, "frames": int(len(res.frames)), "rss_after_load_mb": loaded,
                      "peak_rss_loading_mb": load_peak, "peak_rss_run_mb": _status_mb("VmHWM"),
                      "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                      "video_bytes_mb": round(res.frames.nbytes / 2**20, 2),
                      "seconds": round(time.perf_counter() - t, 2), "length": res.metadata.get("length")}))


def _rss_now() -> float:
    return _status_mb("VmRSS")


def _status_mb(key: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def memory_part(folder: Path, a) -> list:
    rows = []
    for sections in a.sections:
        cmd = [sys.executable, __file__, "--child", str(folder), "--child-sections", str(sections),
               "--size", str(a.size), "--steps", str(a.mem_steps)]
        out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO / "src")},
                             check=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
        print(f"  {sections} section(s): {rows[-1]}", flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--mem-steps", type=int, default=2, help="steps per section in the memory runs")
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--single-layers", type=int, default=6)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--thresholds", type=float, nargs="*", default=[0.1, 0.25])
    p.add_argument("--sections", type=int, nargs="*", default=[1, 2, 4])
    p.add_argument("--parts", nargs="*", default=["speed", "memory"],
                   help="what to measure; a part left out keeps its figures from today's results file")
    p.add_argument("--child")
    p.add_argument("--child-sections", type=int)
    a = p.parse_args()
    if a.child:
        return memory_child(a.child, a.child_sections, a.size, a.mem_steps)

    import diffusers
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        folder = build(Path(tmp) / "framepack-mid", a)
        params = sum(t.numel() for t in __import__("safetensors.torch", fromlist=["load_file"]).load_file(
            str(next((folder / "transformer").glob("*.safetensors")))).values())
        print(f"mid-size FramePack transformer: {params / 1e6:.1f} M parameters; {a.size}x{a.size}, {a.steps} steps")
        out = HERE / "results" / f"framepack-cpu-{datetime.now(timezone.utc):%Y%m%d}.json"
        before = json.loads(out.read_text()) if out.is_file() else {}
        fast, mem = before.get("fast_vs_exact"), before.get("memory_by_sections")
        if "speed" in a.parts:
            print(f"(a) fast vs exact, one section of 37 frames, {a.steps} steps")
            fast = speed_part(folder, a)
            print(json.dumps(fast, indent=1))
        if "memory" in a.parts:
            print("(b) peak RSS by sections (a child process each)")
            mem = memory_part(folder, a)
    result = {
        "bench": "framepack", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": "OMP_NUM_THREADS=1 python bench/bench_framepack.py " + " ".join(sys.argv[1:]),
        "commands_before": before.get("commands_before", []) + ([before["command"]] if before.get("command") else []),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads()},
        "versions": {"torch": torch.__version__, "diffusers": diffusers.__version__},
        "model": {"transformer_params_m": round(params / 1e6, 1), "heads": a.heads, "head_dim": a.head_dim,
                  "double_blocks": a.layers, "single_blocks": a.single_layers, "size": a.size,
                  "latent_window_size": 9, "speed_steps": a.steps if "speed" in a.parts else
                  before.get("model", {}).get("speed_steps"), "memory_steps_per_section": a.mem_steps},
        "fast_vs_exact": fast, "memory_by_sections": mem,
        "caveats": ["random weights: a trained FramePack's residuals move differently between steps, so its speed-up "
                    "and fidelity at this threshold are not measured here",
                    "CPU, a shared 2-core VM: wall times are noisy; the cached/full pass counts are not",
                    "peak RSS includes the model; what grows with sections is the decoded video kept in host memory"],
    }
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
