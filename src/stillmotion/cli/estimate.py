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
from typing import Optional

import click

from ..engine.timing import PLAN_ENGINE_FIELDS, PLAN_SPEC_FIELDS
from .options import engine_config_from, engine_options, pop_spec_fields, spec_options


def run_estimate(spec, config, *, keyframe: bool = False, price: Optional[float] = None) -> dict:
    """Memory, FLOPs and per-card time and cost of one video: a resolved GenerationSpec under an EngineConfig
    (its max_memory: also plan for that budget), planned as the Engine plans it (engine/timing.Workload)."""
    from ..engine import timing

    shape = timing.workload_shape(config)
    dit = timing.dit_planner(shape) is not None  # a transformer family: its plan axes, host memory and reference
    reference = shape.layout.reference if dit else "reference"
    job = timing.Workload(spec, config, keyframe)
    est = job.peak(shape)
    flops = job.flops(shape)
    out = {
        "model": config.model, "frames": spec.num_frames, "width": spec.width, "height": spec.height,
        "steps": spec.num_inference_steps, "speed": spec.speed,
        "cache_interval": spec.cache_interval if spec.speed == "fast" else None, "dtype": config.dtype or ("bf16" if dit else "fp16"),
        "attention": config.attention, "keyframe": keyframe,
        "weights_bytes": shape.weights_total,
        "plan": est.to_dict() | {"label": job.given.label()},
        "host": job.host(shape),
        "flops": flops | {"source": "counted (dry run)"},
        "memory_source": "estimated (dry run of the model code on shapes; checked against measured CPU peaks in tests)",
    }
    if config.max_memory is not None:
        best = job.plan(shape, config.max_memory)
        out["budget"] = {"bytes": config.max_memory, "fits": best.fits, "plan": best.plan.to_dict(),
                         "label": best.plan.label(), "peak_bytes": best.peak_bytes, "host": job.host(shape, best.plan)}
    rows = []
    for card in timing.cards():
        t = job.time_on(card, shape, flops["per_video"])
        rate = price if price is not None else card.price_per_hour
        rows.append({
            "gpu": card.name, "memory_gb": card.memory_gb, "fits": t.fits, "plan": t.plan.plan.label(),
            "peak_bytes": t.plan.peak_bytes, "seconds": t.seconds if t.fits else None,
            "price_per_hour": rate, "cost": t.seconds / 3600 * rate if t.fits else None,
            "source": "estimated",
            "host_bytes": (job.host(shape, t.plan.plan) or {}).get("peak"),
            "efficiency": _dit_efficiency(card, reference) if dit else
                          {"value": card.efficiency, "basis": card.basis, "source": card.source},
        })
    out["gpus"] = rows
    out["reference"] = timing.load_gpus()[reference]
    return out


def _dit_efficiency(card, reference: str) -> dict:
    from ..engine import timing

    data = timing.load_gpus()
    ref = data[reference]
    m = data["measurements"][ref["measurement"]]
    how = f"{m['seconds']} s on the {ref['card']} ({m['source']})"
    if card.name != ref["card"]:
        how += f" x this card's SVD efficiency over the {ref['card']}'s ({card.source})"
    return {"value": timing.dit_efficiency(card.name, reference), "basis": "measured" if card.name == ref["card"] else "estimated",
            "source": how}


def _flops(n: float) -> str:
    return f"{n / 1e12:,.1f} TFLOP" if n >= 1e11 else f"{n / 1e9:,.2f} GFLOP"


@click.command("estimate")
@spec_options(fields=PLAN_SPEC_FIELDS)
@engine_options(fields=PLAN_ENGINE_FIELDS)
@click.option("--price-per-hour", type=float, default=None, help="USD per GPU hour for every card (default: data/gpus.json)")
@click.option("--keyframe", is_flag=True, help="a run with an end image (generate --end-image): two UNet passes per step")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def estimate_command(price_per_hour, keyframe, as_json, **kwargs):
    """Plan memory, time and cost of one video before running anything.

    The settings are generate's (the model's defaults where not given, its landscape size with no image); with
    --max-memory, also the plan for that budget.
    """
    from ..models.resolve import entry_for
    from ..spec import GenerationSpec
    from ..util import fmt_bytes

    max_memory = kwargs.get("max_memory")  # as typed, for the report
    spec = GenerationSpec.build(**pop_spec_fields(kwargs))
    config = engine_config_from(kwargs)
    spec = spec.resolve(entry_for(config.model))
    if not as_json and sys.stderr.isatty():
        click.echo("counting memory and FLOPs on the model's shapes (no GPU, no weights; about 30 s for SVD-XT "
                   "the first time, cached after)...", err=True)
    r = run_estimate(spec, config, keyframe=keyframe, price=price_per_hour)
    if as_json:
        click.echo(json.dumps(r, indent=2))
        return
    p = r["plan"]
    click.echo(f"{r['model']}: {r['frames']} frames at {r['width']}x{r['height']}, {r['steps']} steps, {r['speed']}"
               + (f" (cache interval {r['cache_interval']})" if r["speed"] == "fast" else "") + f", {r['dtype']}"
               + (f", {r['attention']} attention" if r["attention"] != "sdpa" else "")
               + (", with an end image (2 UNet passes per step)" if keyframe else ""))
    click.echo(f"planned peak memory ({p['label']}): {fmt_bytes(p['peak_bytes'])}  [estimated]")
    click.echo("  " + ", ".join(f"{k} {fmt_bytes(v)}" for k, v in p["stages"].items())
               + f"; weights {fmt_bytes(r['weights_bytes'])}")
    if r.get("host"):
        h = r["host"]
        click.echo(f"host memory (RAM): {fmt_bytes(h['peak'])} at most (loading {fmt_bytes(h['load'])}: every weight "
                   f"is read into RAM first; running {fmt_bytes(h['run'])})  [estimated]")
    f = r["flops"]
    click.echo(f"compute: {_flops(f['per_video'])} per video ({'denoiser' if 'transformer_pass' in f else 'UNet'} step {_flops(f['unet_step'])}, "
               f"cached step {_flops(f['unet_cached_step'])}"
               + (f"; {f['unet_passes_per_step']} passes per step" if f.get("unet_passes_per_step", 1) > 1 else "")
               + ")  [counted]")
    if "budget" in r:
        b = r["budget"]
        if b["fits"]:
            click.echo(f"--max-memory {max_memory}: fits with {b['label']} ({fmt_bytes(b['peak_bytes'])})"
                       + (f"; host memory {fmt_bytes(b['host']['peak'])} (running {fmt_bytes(b['host']['run'])})"
                          if b.get("host") else ""))
        else:
            click.echo(f"--max-memory {max_memory}: does not fit; even {b['label']} needs about "
                       f"{fmt_bytes(b['peak_bytes'])}")
    click.echo("")
    host = r.get("host") is not None
    click.echo(f"{'GPU':<11} {'memory':>7}  {'fits':<4} {'plan':<44} {'s/video':>8} {'$/h':>6} {'$/video':>8}"
               + (f" {'RAM':>9}" if host else ""))
    for g in r["gpus"]:
        secs = f"{g['seconds']:.1f}" if g["seconds"] is not None else "-"
        cost = f"{g['cost']:.4f}" if g["cost"] is not None else "-"
        plan = g["plan"] if g["fits"] else f"does not fit (needs {fmt_bytes(g['peak_bytes'])})"
        click.echo(f"{g['gpu']:<11} {g['memory_gb']:>5}GB  {'yes' if g['fits'] else 'no':<4} {plan:<44} {secs:>8} "
                   f"{g['price_per_hour']:>6.2f} {cost:>8}" + (f" {fmt_bytes(g['host_bytes']):>9}" if host else ""))
    click.echo("")
    click.echo("memory: estimated by a dry run of the model code; FLOPs: counted; seconds and cost: estimated, the "
               "FLOPs over each card's fp16 peak times its efficiency on " + r["reference"]["job"].split(" (")[0] + ":")
    for g in r["gpus"]:
        e = g["efficiency"]
        click.echo(f"  {g['gpu']:<11} {e['value']:>4.0%}  {e['source']}")
