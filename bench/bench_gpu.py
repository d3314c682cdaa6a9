"""GPU benchmark: the real SVD-XT architecture, stock diffusers vs stillmotion's modes.

NOT RUN ON A GPU YET: written in sessions without one. On a machine with one CUDA GPU:

    .venv/bin/python bench/bench_gpu.py                  # ~6-9 min on an H100 (compiles included)
    .venv/bin/python bench/bench_gpu.py --modes stock,exact,fast --steps 25

Before spending device time, `--smoke` runs every mode's code path on the CPU
with the tiny model at 64x64 (under a minute; numbers meaningless, results
written to bench/results/speed-gpu-smoke-cpu.json), so a slip in this script
shows up here and not on the GPU.

Builds SVD-XT from the published configs (UNet = diffusers' defaults, SVD's VAE
and CLIP ViT-H/14 vision tower) with random fp16 weights, saves it once as a
diffusers folder and loads it back like a real checkpoint. Then, at 576x1024,
25 frames, 25 steps, same image and seed for every mode:

    stock          the SVD guide: from_pretrained(fp16), enable_model_cpu_offload(), decode_chunk_size=8
    stock-gpu      the same with everything on the GPU (pipe.to("cuda")), decode_chunk_size=8
    exact          stillmotion, --memory auto (plans from free memory)
    exact-8gb      stillmotion, --max-memory 8GB (the "fits in 8 GB" target)
    fast           stillmotion --speed fast (DeepCache, interval 3)
    exact+compile  / fast+compile: --compile (first run compiles; timed run is the second)

Reports seconds/video, seconds/step, peak GPU memory (max_memory_allocated), the
planner's estimate next to it, the UNet's achieved TFLOP/s (FLOPs counted by the
planner's dry run / measured step time) against the card's fp16 peak, max
abs / PSNR vs exact, and what the time estimator (engine/timing.py) predicts on
this card, to hold against the measured exact run. Writes
bench/results/speed-gpu-<gpu>.json and .png.
Random weights can produce NaN frames; timings are still valid and the diff
columns then say nan.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def build_svd_xt(folder: Path) -> Path:
    import torch
    from diffusers import (AutoencoderKLTemporalDecoder, EulerDiscreteScheduler, StableVideoDiffusionPipeline,
                           UNetSpatioTemporalConditionModel)
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    from stillmotion.engine.shapes import svd_configs

    if (folder / "model_index.json").is_file():
        return folder
    unet_cfg, vae_cfg, clip_cfg = svd_configs(25)
    torch.manual_seed(0)
    with torch.device("cuda"):
        unet = UNetSpatioTemporalConditionModel(**unet_cfg).half()
        vae = AutoencoderKLTemporalDecoder(**vae_cfg).half()
        enc = CLIPVisionModelWithProjection(CLIPVisionConfig(**clip_cfg)).half()
    sched = EulerDiscreteScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                   interpolation_type="linear", num_train_timesteps=1000, prediction_type="v_prediction",
                                   sigma_max=700.0, sigma_min=0.002, steps_offset=1, timestep_spacing="leading",
                                   timestep_type="continuous", use_karras_sigmas=True)
    fe = CLIPImageProcessor(crop_size=224, size={"shortest_edge": 224})
    pipe = StableVideoDiffusionPipeline(unet=unet, vae=vae, image_encoder=enc, scheduler=sched, feature_extractor=fe)
    pipe.save_pretrained(folder, safe_serialization=True)
    del pipe, unet, vae, enc
    gc.collect()
    torch.cuda.empty_cache()
    return folder


def main() -> None:
    import numpy as np
    import torch

    ap = argparse.ArgumentParser()
    ap.add_argument("--folder", default="/tmp/stillmotion-svd-xt-random")
    ap.add_argument("--modes", default="stock,stock-gpu,exact,exact-8gb,fast,exact+compile,fast+compile")
    ap.add_argument("--frames", type=int, default=25)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--width", type=int, default=1024)
    ap.add_argument("--height", type=int, default=576)
    ap.add_argument("--smoke", action="store_true", help="the code paths on the CPU with the tiny model (no GPU)")
    a = ap.parse_args()
    if a.smoke:  # every mode but the compiled ones (minutes on a CPU), "stock" without offload (needs a GPU)
        from stillmotion.models.resolve import resolve

        a.frames, a.steps, a.width, a.height = 4, 2, 64, 64
        a.modes = ",".join(m for m in a.modes.split(",") if "compile" not in m)
        device, dtype, gpu, model, folder = "cpu", torch.float32, "smoke-cpu", "tiny", resolve("tiny").path
    else:
        assert torch.cuda.is_available(), "bench_gpu.py needs a CUDA GPU (or --smoke)"
        device, dtype, gpu, model = "cuda", torch.float16, torch.cuda.get_device_name(), "svd-xt"
        folder = build_svd_xt(Path(a.folder))
    cuda = device == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    def reset_peak() -> None:
        if cuda:
            torch.cuda.reset_peak_memory_stats()

    from bench_speed import difference, plot, test_image  # noqa: E402  (same folder)
    from stillmotion import Engine, GenerationSpec
    from stillmotion.engine import memory as M
    from stillmotion.engine import timing
    from stillmotion.engine.config import EngineConfig
    from stillmotion.engine.profile import unet_step_flops
    from stillmotion.engine.shapes import model_shape

    shape = model_shape(model, "fp16" if cuda else "fp32")
    full_flops, cached_flops = unet_step_flops(shape, a.frames, a.height, a.width, True, 3)
    card = timing.card_for_device(device)
    peak_tflops = card.fp16_tflops if card else None
    img = test_image(1024).resize((a.width, a.height))
    rows, frames_by_mode = [], {}
    for mode in a.modes.split(","):
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
        reset_peak()
        t0 = time.perf_counter()
        rec = {"mode": mode}
        if mode.startswith("stock"):
            from diffusers import StableVideoDiffusionPipeline
            from diffusers.utils import export_to_video  # noqa: F401 - the guide's writer; not timed here

            pipe = StableVideoDiffusionPipeline.from_pretrained(folder, torch_dtype=dtype, use_safetensors=True)
            pipe.set_progress_bar_config(disable=True)
            pipe.enable_model_cpu_offload() if mode == "stock" and cuda else pipe.to(device)
            rec["load_seconds"] = time.perf_counter() - t0
            marks = []

            def cb(_p, i, _t, kw):
                sync()
                marks.append(time.perf_counter())
                return kw

            reset_peak()
            sync()
            t = time.perf_counter()
            marks.append(t)
            out = pipe(img, height=a.height, width=a.width, num_frames=a.frames, num_inference_steps=a.steps,
                       decode_chunk_size=8, generator=torch.Generator("cpu").manual_seed(7), callback_on_step_end=cb,
                       output_type="np").frames[0]
            sync()
            rec["seconds_per_video"] = time.perf_counter() - t
            steps = np.diff(marks)
            rec["seconds_per_step"] = float(np.median(steps))
            frames = np.clip(np.round(np.nan_to_num(out) * 255.0), 0, 255).astype(np.uint8)
            del pipe
        else:
            speed = "fast" if mode.startswith("fast") else "exact"
            eng = Engine(EngineConfig.build(model=str(folder), device=device, dtype="fp16" if cuda else "fp32",
                                            compile="compile" in mode,
                                            max_memory="8GB" if mode == "exact-8gb" else None))
            rec["load_seconds"] = time.perf_counter() - t0
            spec = GenerationSpec(seed=7, num_frames=a.frames, width=a.width, height=a.height,
                                  num_inference_steps=a.steps, speed=speed, cache_interval=3)
            if "compile" in mode:
                first = eng.generate(img, spec)
                rec["compile_seconds"] = first.timings.get("compile")
                rec["first_run_seconds"] = first.timings["total"]
            reset_peak()
            t = time.perf_counter()
            r = eng.generate(img, spec)
            sync()
            rec["seconds_per_video"] = time.perf_counter() - t
            rec["seconds_per_step"] = float(np.median(r.timings["step_seconds"]))
            rec["timings"] = {k: v for k, v in r.timings.items() if k != "step_seconds"}
            rec["memory_plan"] = r.metadata.get("memory")
            rec["fallbacks"] = r.metadata.get("fallbacks")
            plan = M.MemoryPlan(**r.metadata["memory"]["plan"])
            rec["estimated_peak_mb"] = M.estimate_peak(shape, a.frames, a.height, a.width, plan,
                                                       device=device).peak_bytes / 2**20
            frames = r.frames
            del eng
        rec["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20 if cuda else float("nan")
        step_fl = full_flops if not mode.startswith("fast") else None
        if step_fl:
            rec["unet_tflops"] = step_fl / rec["seconds_per_step"] / 1e12
            rec["unet_fraction_of_peak"] = rec["unet_tflops"] / peak_tflops if peak_tflops else None
        frames_by_mode[mode] = frames
        rows.append(rec)
        print(json.dumps(rec), flush=True)
    ref = frames_by_mode.get("exact")
    stock = next((r for r in rows if r["mode"] == "stock"), None)
    for r in rows:
        if ref is not None:
            r["vs_exact"] = difference(ref, frames_by_mode[r["mode"]])
        if stock:
            r["speedup_vs_stock"] = stock["seconds_per_video"] / r["seconds_per_video"]
    result = {"benchmark": "bench_gpu" + (" --smoke (CPU, tiny: code paths only, numbers meaningless)" if a.smoke else ""),
              "machine": {"gpu": gpu, "host": platform.node(), "torch": torch.__version__,
                                                     "fp16_peak_tflops": peak_tflops},
              "model": "tiny" if a.smoke else "SVD-XT architecture, random fp16 weights",
              "config": vars(a), "flops": {"unet_step": full_flops, "unet_cached_step": cached_flops}, "rows": rows}
    if card is not None:  # what the time estimator says for exact mode here (compare with stock-gpu and exact)
        flops = timing.video_flops(shape, a.frames, a.height, a.width, a.steps)
        est = timing.time_on(card, shape, flops["per_video"], a.frames, a.height, a.width, a.steps)
        result["estimator"] = {"card": card.name, "seconds": est.seconds, "efficiency": card.efficiency,
                               "basis": card.basis, "source": card.source}
    (HERE / "results").mkdir(exist_ok=True)
    stem = HERE / "results" / ("speed-gpu-" + gpu.replace(" ", "_"))
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2, default=str))
    plot(rows, stem.with_suffix(".png"), f"SVD-XT {a.frames}x{a.height}x{a.width}, {a.steps} steps, {gpu}")
    for r in rows:
        print(f"{r['mode']:>14} {r['seconds_per_video']:7.2f} s  {r['peak_gpu_mb']:8.0f} MB  "
              f"x{r.get('speedup_vs_stock', float('nan')):.2f}  {r.get('unet_tflops', float('nan')):.0f} TFLOP/s  "
              f"PSNR {r.get('vs_exact', {}).get('psnr_db', float('nan')):.1f}")
    print(f"wrote {stem}.json and .png")


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(HERE))
    main()
