"""`stillmotion estimate`: memory, time and cost of a run before renting or running anything.

Memory comes from the planner's dry run (engine/memory.py): the model's real
code on shapes only, so it needs no GPU and no weights. Time comes from the same
dry run's FLOP count divided by each card's fp16 peak times an efficiency
factor; that factor is an estimate (src/stillmotion/data/gpus.json says where it
comes from) until a GPU benchmark measures it. Every number printed says
whether it is measured or estimated.
"""

from __future__ import annotations

import json
import sys
from typing import Optional

import click

RESERVE_BYTES = 1024**3  # CUDA context, cuBLAS/cuDNN workspaces: not available to tensors


def load_gpus() -> dict:
    from importlib.resources import files

    return json.loads(files("stillmotion").joinpath("data/gpus.json").read_text())


def step_flops(shape, frames: int, height: int, width: int, cfg: bool, interval: Optional[int]) -> tuple[int, int]:
    """(FLOPs of a full UNet step, FLOPs of a cached DeepCache step) from a dry run of the real UNet code
    (kept in the shape's profile cache, on disk, like the planner's stage profiles)."""
    from ..engine.profile import ProfileCache

    cache = ProfileCache.of(shape)
    key = f"deepcache-step-flops|{frames}|{height}|{width}|{int(cfg)}|{max(2, interval or 2)}"
    if key not in cache.entries:
        cache.put(key, _count_step_flops(shape, frames, height, width, cfg, interval))
    return cache.entries[key]


def _count_step_flops(shape, frames: int, height: int, width: int, cfg: bool, interval: Optional[int]) -> tuple[int, int]:
    import torch

    from ..engine.profile import DryRun
    from ..engine.speed import DeepCache

    b = 2 if cfg else 1
    dt = {2: torch.float16, 4: torch.float32}[shape.dtype_bytes]
    unet = shape.unet
    lat_c = shape.vae.config.latent_channels
    args = (torch.empty(b, frames, 2 * lat_c, height // 8, width // 8, dtype=dt, device="meta"),
            torch.empty((), device="meta"))
    kw = dict(encoder_hidden_states=torch.empty(b, 1, shape.image_encoder.config.projection_dim, dtype=dt, device="meta"),
              added_time_ids=torch.empty(b, 3, dtype=dt, device="meta"), return_dict=False)
    out = []
    with DeepCache(unet, max(2, interval or 2)):
        for _ in range(2):  # step 0 is full, step 1 is cached
            with DryRun() as run:
                unet(*args, **kw)
                out.append(run.stage_flops())
    return out[0], out[1]


def run_estimate(model: str, frames: int, width: int, height: int, steps: int, speed: str, cache_interval: int,
                 dtype: str, cfg: bool, decode_chunk: Optional[int], offload: Optional[str],
                 forward_chunking: bool, max_memory: Optional[str], price: Optional[float]) -> dict:
    from ..engine import memory as M
    from ..engine.profile import model_shape, profile_stages

    shape = model_shape(model, dtype)
    fixed = dict(user_chunk=decode_chunk, user_offload=offload, user_forward_chunking=forward_chunking or None)
    given = M.Plan(min(decode_chunk or frames, frames), forward_chunking, offload or "none")
    est = M.estimate(shape, frames, height, width, given, cfg=cfg)
    prof = profile_stages(shape, frames, height, width, decode_chunk=given.decode_chunk_size,
                            forward_chunking=given.forward_chunking, cfg=cfg)
    full, cached = step_flops(shape, frames, height, width, cfg, cache_interval)
    if speed == "fast":
        n_full = len(range(0, steps, cache_interval))
        unet_flops = n_full * full + (steps - n_full) * cached
    else:
        unet_flops = steps * full
    total_flops = unet_flops + prof.flops.get("encode", 0) + prof.flops.get("decode", 0)
    out = {
        "model": model, "frames": frames, "width": width, "height": height, "steps": steps, "speed": speed,
        "cache_interval": cache_interval if speed == "fast" else None, "dtype": dtype,
        "weights_bytes": shape.weights_total,
        "plan": est.to_dict() | {"label": given.label()},
        "flops": {"unet_step": full, "unet_cached_step": cached, "per_video": total_flops, "source": "counted (dry run)"},
        "memory_source": "estimated (dry run of the model code on shapes; checked against measured CPU peaks in tests)",
    }
    if max_memory is not None:
        budget = M.parse_size(max_memory)
        best, _ = M.choose_plan(shape, frames, height, width, budget, cfg=cfg, **fixed)
        out["budget"] = {"bytes": budget, "fits": best.fits, "plan": best.plan.to_dict(), "label": best.plan.label(),
                         "peak_bytes": best.peak_bytes}
    gpus = load_gpus()
    eff = gpus["efficiency"]["value"]
    rows = []
    for g in gpus["gpus"]:
        budget = int(g["memory_gb"] * M.GiB) - RESERVE_BYTES
        best, _ = M.choose_plan(shape, frames, height, width, budget, cfg=cfg, **fixed)
        seconds = total_flops / (g["fp16_tflops"] * 1e12 * eff)
        seconds += _offload_seconds(shape, best.plan.offload, steps, g["pcie_gbps"])
        rate = price if price is not None else g["price_per_hour"]
        rows.append({
            "gpu": g["name"], "memory_gb": g["memory_gb"], "fits": bool(best.fits), "plan": best.plan.label(),
            "peak_bytes": best.peak_bytes, "seconds": seconds if best.fits else None,
            "price_per_hour": rate, "cost": seconds / 3600 * rate if best.fits else None,
            "source": "estimated",
        })
    out["gpus"] = rows
    out["efficiency"] = gpus["efficiency"]
    return out


def _flops(n: float) -> str:
    return f"{n / 1e12:,.1f} TFLOP" if n >= 1e11 else f"{n / 1e9:,.2f} GFLOP"


def _offload_seconds(shape, offload: str, steps: int, pcie_gbps: float) -> float:
    """Host-to-device copies that offloading adds: each component once (model), the UNet every step (sequential)."""
    w = shape.weights
    if offload == "model":
        moved = w["image_encoder"] + 2 * w["vae"] + w["unet"]
    elif offload == "sequential":
        moved = w["image_encoder"] + 2 * w["vae"] + steps * w["unet"]
    else:
        return 0.0
    return moved / (pcie_gbps * 1e9)


@click.command("estimate")
@click.option("--model", "-m", default="svd-xt", show_default=True, help="svd, svd-xt, svd-xt-1-1, tiny or a local folder")
@click.option("--frames", type=int, default=None, help="frames (model default: SVD 14, XT 25)")
@click.option("--width", type=int, default=None, help="width (default: the model's landscape size)")
@click.option("--height", type=int, default=None, help="height (default: the model's landscape size)")
@click.option("--steps", type=int, default=None, help="denoising steps (default 25)")
@click.option("--speed", type=click.Choice(["exact", "fast"]), default="exact", show_default=True)
@click.option("--cache-interval", type=click.IntRange(2, 10), default=3, show_default=True, help="fast mode interval")
@click.option("--dtype", type=click.Choice(["fp16", "bf16", "fp32"]), default="fp16", show_default=True)
@click.option("--max-cfg", type=float, default=None, help="max guidance; <= 1 turns classifier-free guidance off")
@click.option("--decode-chunk", type=int, default=None, help="frames the VAE decodes at once (default: all)")
@click.option("--offload", type=click.Choice(["none", "model", "sequential"]), default=None)
@click.option("--forward-chunking", is_flag=True)
@click.option("--max-memory", default=None, metavar="SIZE", help="also plan for this budget, e.g. 8GB")
@click.option("--price-per-hour", type=float, default=None, help="USD per GPU hour for every card (default: data/gpus.json)")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def estimate(model, frames, width, height, steps, speed, cache_interval, dtype, max_cfg, decode_chunk, offload,
             forward_chunking, max_memory, price_per_hour, as_json):
    """Plan memory, time and cost of one video before running anything."""
    from ..engine.memory import fmt_bytes
    from ..models.registry import entry_for

    d = entry_for(model).defaults
    frames = frames or d.num_frames
    width = width or d.landscape[0]
    height = height or d.landscape[1]
    steps = steps or d.num_inference_steps
    cfg = (max_cfg if max_cfg is not None else d.max_guidance_scale) > 1
    if not as_json and sys.stderr.isatty():
        click.echo("counting memory and FLOPs on the model's shapes (no GPU, no weights; about 30 s for SVD-XT "
                   "the first time, cached after)...", err=True)
    r = run_estimate(model, frames, width, height, steps, speed, cache_interval, dtype, cfg, decode_chunk, offload,
                     forward_chunking, max_memory, price_per_hour)
    if as_json:
        click.echo(json.dumps(r, indent=2))
        return
    p = r["plan"]
    click.echo(f"{model}: {frames} frames at {width}x{height}, {steps} steps, {speed}"
               + (f" (cache interval {cache_interval})" if speed == "fast" else "") + f", {dtype}")
    click.echo(f"planned peak memory ({p['label']}): {fmt_bytes(p['peak_bytes'])}  [estimated]")
    click.echo("  " + ", ".join(f"{k} {fmt_bytes(v)}" for k, v in p["stages"].items())
               + f"; weights {fmt_bytes(r['weights_bytes'])}")
    f = r["flops"]
    click.echo(f"compute: {_flops(f['per_video'])} per video (UNet step {_flops(f['unet_step'])}, "
               f"cached step {_flops(f['unet_cached_step'])})  [counted]")
    if "budget" in r:
        b = r["budget"]
        if b["fits"]:
            click.echo(f"--max-memory {max_memory}: fits with {b['label']} ({fmt_bytes(b['peak_bytes'])})")
        else:
            click.echo(f"--max-memory {max_memory}: does not fit; even {b['label']} needs about "
                       f"{fmt_bytes(b['peak_bytes'])}")
    click.echo("")
    click.echo(f"{'GPU':<11} {'memory':>7}  {'fits':<4} {'plan':<42} {'s/video':>8} {'$/h':>6} {'$/video':>8}")
    for g in r["gpus"]:
        secs = f"{g['seconds']:.1f}" if g["seconds"] is not None else "-"
        cost = f"{g['cost']:.4f}" if g["cost"] is not None else "-"
        plan = g["plan"] if g["fits"] else f"does not fit (needs {fmt_bytes(g['peak_bytes'])})"
        click.echo(f"{g['gpu']:<11} {g['memory_gb']:>5}GB  {'yes' if g['fits'] else 'no':<4} {plan:<42} {secs:>8} "
                   f"{g['price_per_hour']:>6.2f} {cost:>8}")
    click.echo("")
    click.echo(f"memory: estimated by a dry run of the model code; FLOPs: counted; seconds and cost: estimated at "
               f"{r['efficiency']['value']:.0%} of each card's fp16 peak ({r['efficiency']['source'].split(':')[0]}).")
