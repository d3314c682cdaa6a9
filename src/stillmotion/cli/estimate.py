"""`stillmotion estimate`: memory, time and cost of a run before renting or running anything.

Memory comes from the planner's dry run (engine/memory.py): the model's real
code on shapes only, so it needs no GPU and no weights. Time comes from the
one time estimator (engine/timing.py, also behind `batch --dry-run`): the same
dry run's FLOP count over each card's fp16 peak times its efficiency on the
reference job, taken from published measurements where they exist
(src/stillmotion/data/gpus.json names each source). Every number printed says
whether it is measured, counted or estimated.
"""

from __future__ import annotations

import json
import sys
from typing import Optional, get_args

import click

from ..engine.config import Offload
from ..models.registry import DEFAULT_MODEL
from ..util import DTYPE_NAMES


def run_estimate(model: str, frames: int, width: int, height: int, steps: int, speed: str, cache_interval: int,
                 dtype: str, cfg: bool, decode_chunk: Optional[int], offload: Optional[str],
                 forward_chunking: bool, max_memory: Optional[str], price: Optional[float], keyframe: bool = False) -> dict:
    from ..engine import memory as M
    from ..engine import timing
    from ..engine.shapes import model_shape
    from ..util import parse_size

    shape = model_shape(model, dtype)
    fixed = dict(user_chunk=decode_chunk, user_offload=offload, user_forward_chunking=forward_chunking or None)
    given = M.MemoryPlan(min(decode_chunk or frames, frames), forward_chunking, offload or "none")
    est = M.estimate_peak(shape, frames, height, width, given, cfg=cfg, keyframe=keyframe)
    flops = timing.video_flops(shape, frames, height, width, steps, speed=speed, cache_interval=cache_interval,
                               cfg=cfg, decode_chunk=given.decode_chunk_size, forward_chunking=given.forward_chunking,
                               keyframe=keyframe)
    out = {
        "model": model, "frames": frames, "width": width, "height": height, "steps": steps, "speed": speed,
        "cache_interval": cache_interval if speed == "fast" else None, "dtype": dtype, "keyframe": keyframe,
        "weights_bytes": shape.weights_total,
        "plan": est.to_dict() | {"label": given.label()},
        "flops": flops | {"source": "counted (dry run)"},
        "memory_source": "estimated (dry run of the model code on shapes; checked against measured CPU peaks in tests)",
    }
    if max_memory is not None:
        budget = parse_size(max_memory)
        best, _ = M.choose_plan(shape, frames, height, width, budget, cfg=cfg, keyframe=keyframe, **fixed)
        out["budget"] = {"bytes": budget, "fits": best.fits, "plan": best.plan.to_dict(), "label": best.plan.label(),
                         "peak_bytes": best.peak_bytes}
    rows = []
    for card in timing.cards():
        t = timing.time_on(card, shape, flops["per_video"], frames, height, width, steps, cfg=cfg, keyframe=keyframe,
                           **fixed)
        rate = price if price is not None else card.price_per_hour
        rows.append({
            "gpu": card.name, "memory_gb": card.memory_gb, "fits": t.fits, "plan": t.plan.plan.label(),
            "peak_bytes": t.plan.peak_bytes, "seconds": t.seconds if t.fits else None,
            "price_per_hour": rate, "cost": t.seconds / 3600 * rate if t.fits else None,
            "source": "estimated",
            "efficiency": {"value": card.efficiency, "basis": card.basis, "source": card.source},
        })
    out["gpus"] = rows
    out["reference"] = timing.load_gpus()["reference"]
    return out


def _flops(n: float) -> str:
    return f"{n / 1e12:,.1f} TFLOP" if n >= 1e11 else f"{n / 1e9:,.2f} GFLOP"


@click.command("estimate")
@click.option("--model", "-m", default=DEFAULT_MODEL, show_default=True, help="svd, svd-xt, svd-xt-1-1, tiny, a local folder or a single-file checkpoint (.safetensors)")
@click.option("--frames", type=int, default=None, help="frames (model default: SVD 14, XT 25)")
@click.option("--width", type=int, default=None, help="width (default: the model's landscape size)")
@click.option("--height", type=int, default=None, help="height (default: the model's landscape size)")
@click.option("--steps", type=int, default=None, help="denoising steps (default 25)")
@click.option("--speed", type=click.Choice(["exact", "fast"]), default="exact", show_default=True)
@click.option("--cache-interval", type=click.IntRange(2, 10), default=3, show_default=True, help="fast mode interval")
@click.option("--dtype", type=click.Choice(DTYPE_NAMES), default="fp16", show_default=True)
@click.option("--max-cfg", type=float, default=None, help="max guidance; <= 1 turns classifier-free guidance off")
@click.option("--decode-chunk", type=int, default=None, help="frames the VAE decodes at once (default: all)")
@click.option("--offload", type=click.Choice(get_args(Offload)), default=None)
@click.option("--forward-chunking", is_flag=True)
@click.option("--max-memory", default=None, metavar="SIZE", help="also plan for this budget, e.g. 8GB")
@click.option("--price-per-hour", type=float, default=None, help="USD per GPU hour for every card (default: data/gpus.json)")
@click.option("--keyframe", is_flag=True, help="a run with an end image (generate --end-image): two UNet passes per step")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def estimate_command(model, frames, width, height, steps, speed, cache_interval, dtype, max_cfg, decode_chunk, offload,
             forward_chunking, max_memory, price_per_hour, keyframe, as_json):
    """Plan memory, time and cost of one video before running anything."""
    from ..models.registry import entry_for
    from ..util import fmt_bytes

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
                     forward_chunking, max_memory, price_per_hour, keyframe)
    if as_json:
        click.echo(json.dumps(r, indent=2))
        return
    p = r["plan"]
    click.echo(f"{model}: {frames} frames at {width}x{height}, {steps} steps, {speed}"
               + (f" (cache interval {cache_interval})" if speed == "fast" else "") + f", {dtype}"
               + (", with an end image (2 UNet passes per step)" if keyframe else ""))
    click.echo(f"planned peak memory ({p['label']}): {fmt_bytes(p['peak_bytes'])}  [estimated]")
    click.echo("  " + ", ".join(f"{k} {fmt_bytes(v)}" for k, v in p["stages"].items())
               + f"; weights {fmt_bytes(r['weights_bytes'])}")
    f = r["flops"]
    click.echo(f"compute: {_flops(f['per_video'])} per video (UNet step {_flops(f['unet_step'])}, "
               f"cached step {_flops(f['unet_cached_step'])}"
               + (f"; {f['unet_passes_per_step']} passes per step" if f.get("unet_passes_per_step", 1) > 1 else "")
               + ")  [counted]")
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
    click.echo("memory: estimated by a dry run of the model code; FLOPs: counted; seconds and cost: estimated, the "
               "FLOPs over each card's fp16 peak times its efficiency on " + r["reference"]["job"].split(" (")[0] + ":")
    for g in r["gpus"]:
        e = g["efficiency"]
        click.echo(f"  {g['gpu']:<11} {e['value']:>4.0%}  {e['source']}")
