"""Seconds per video on a card: counted FLOPs over what that card reaches on this job.

The one time estimator, for `stillmotion estimate` and `batch --dry-run`, which
both plan a `Workload` (a resolved spec under an EngineConfig, as the Engine
would run it) on `workload_shape(config)`. A
run's FLOPs are counted by the dry run (profile.py); a card's efficiency is
the fraction of its fp16 peak that a published measurement of the reference
job (SVD-XT, 576x1024, 25 frames, 25 steps) implies:

    efficiency = reference FLOPs / (seconds of the reference job x fp16 peak)
    seconds    = FLOPs of the run / (fp16 peak x efficiency) + offload copies

so the reference job on a measured card takes the published time and other
runs scale with their counted FLOPs. src/stillmotion/data/gpus.json names the
source of every card's efficiency, and whether it is measured or estimated
(from the nearest card that has a figure). The seconds are always estimates.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

from ..util import GiB
from .memory import MemoryPlan, PeakEstimate, choose_plan, estimate_peak
from .profile import profile_stages, unet_step_flops
from .shapes import ModelShape, model_shape

if TYPE_CHECKING:
    from ..spec import GenerationSpec
    from .config import EngineConfig

RESERVE_BYTES = GiB  # CUDA context, cuBLAS/cuDNN workspaces: not available to tensors


@dataclass(frozen=True)
class Card:
    """One row of gpus.json, with its efficiency on the reference job resolved."""

    name: str
    memory_gb: float
    fp16_tflops: float
    pcie_gbps: float
    price_per_hour: float
    match: tuple[str, ...]
    efficiency: float
    basis: str  # "measured" (a published figure of the reference job on this card) or "estimated"
    source: str  # where the efficiency comes from, in words

    @property
    def budget_bytes(self) -> int:
        return int(self.memory_gb * GiB) - RESERVE_BYTES

    def seconds(self, flops: float) -> float:
        """Compute time of `flops` on this card at its efficiency."""
        return flops / (self.fp16_tflops * 1e12 * self.efficiency)


@dataclass
class CardTime:
    card: Card
    plan: PeakEstimate  # the fastest memory plan that fits the card (or the leanest, fits=False)
    seconds: float  # compute + offload copies, under that plan

    @property
    def fits(self) -> bool:
        return bool(self.plan.fits)


@functools.lru_cache(maxsize=1)
def load_gpus() -> dict:
    from importlib.resources import files

    return json.loads(files("stillmotion").joinpath("data/gpus.json").read_text())


@functools.lru_cache(maxsize=1)
def cards() -> tuple[Card, ...]:
    """Every card of gpus.json, in its order, with its efficiency and where it comes from."""
    data = load_gpus()
    ref_flops, runs = data["reference"]["flops"], data["measurements"]
    rows = {g["name"]: g for g in data["gpus"]}
    resolved: dict[str, tuple[float, str, str]] = {}

    def resolve(name: str) -> tuple[float, str, str]:
        """(efficiency, basis, source) of one card: its own published figure, or the nearest card's efficiency."""
        if name in resolved:
            return resolved[name]
        g, eff = rows[name], rows[name]["efficiency"]
        if "from_card" in eff:
            value = resolve(eff["from_card"])[0]
            resolved[name] = (value, "estimated", f"estimated from the {eff['from_card']}'s efficiency: {eff['why']}")
            return resolved[name]
        s = eff["seconds"]
        base = runs[s["measurement"]]
        seconds, basis = base["seconds"], "measured"
        how = f"measured: {seconds:.1f} s ({base['engine']} on an {base['card']}; {base['source']})"
        if "times" in s:  # scaled by a ratio measured with another engine on both cards
            times, over = runs[s["times"]], runs[s["over"]]
            seconds, basis = seconds * times["seconds"] / over["seconds"], "estimated"
            how = (f"estimated: {base['seconds']:.1f} s ({base['engine']} on an {base['card']}) x "
                   f"{times['seconds']:.1f} / {over['seconds']:.1f} s ({times['engine']}, {times['card']} / "
                   f"{over['card']}) = {seconds:.1f} s; {eff['why']}")
        resolved[name] = (ref_flops / (seconds * g["fp16_tflops"] * 1e12), basis, how)
        return resolved[name]

    out = []
    for g in data["gpus"]:
        value, basis, source = resolve(g["name"])
        out.append(Card(g["name"], g["memory_gb"], g["fp16_tflops"], g["pcie_gbps"], g["price_per_hour"],
                        tuple(g.get("match", ())), value, basis, source))
    return tuple(out)


def reference_card() -> Card:
    """The first card whose efficiency is a published measurement (what a batch dry run assumes off a GPU)."""
    return next(c for c in cards() if c.basis == "measured")


def card_for_device(device: str) -> Optional[Card]:
    """The card this machine's CUDA device is, by name; None on a CPU, MPS or a card gpus.json does not list."""
    if not (device or "auto").startswith(("cuda", "auto")):
        return None
    import torch

    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name(torch.device("cuda" if device == "auto" else device)).upper().replace("-", " ")
    return next((c for c in cards() if c.match and all(w.upper() in name for w in c.match)), None)


# ----------------------------------------------------------------------------
def video_flops(shape: ModelShape, frames: int, height: int, width: int, steps: int, *, speed: str = "exact",
                cache_interval: int = 3, cfg: bool = True, decode_chunk: Optional[int] = None,
                forward_chunking: bool = False, keyframe: bool = False) -> dict:
    """Counted FLOPs of one video: {"unet_step", "unet_cached_step", "per_video"} (DeepCache steps in fast mode).

    keyframe: a run with an end image (engine/keyframes.py): two UNet passes per step, both images encoded."""
    prof = profile_stages(shape, frames, height, width, decode_chunk=min(decode_chunk or frames, frames),
                          forward_chunking=forward_chunking, cfg=cfg, keyframe=keyframe)
    full, cached = unet_step_flops(shape, frames, height, width, cfg, cache_interval)
    if speed == "fast":
        n_full = len(range(0, steps, cache_interval))
        unet = n_full * full + (steps - n_full) * cached
    else:
        unet = steps * full
    passes = 2 if keyframe else 1  # forward in time from the first image, backward from the last
    total = passes * unet + prof.flops.get("encode", 0) + prof.flops.get("decode", 0)
    return {"unet_step": full, "unet_cached_step": cached, "unet_passes_per_step": passes, "per_video": total}


def time_on(card: Card, shape: ModelShape, flops: float, frames: int, height: int, width: int, steps: int, *,
            cfg: bool = True, keyframe: bool = False, **fixed) -> CardTime:
    """Seconds for a video of `flops` on `card`, under the fastest memory plan that fits it (`fixed`: the
    user's own choices, as memory.candidate_plans takes them)."""
    best, _ = choose_plan(shape, frames, height, width, card.budget_bytes, cfg=cfg, keyframe=keyframe, **fixed)
    return CardTime(card, best, card.seconds(flops) + offload_seconds(shape, best.plan, steps, card.pcie_gbps))


def offload_seconds(shape: ModelShape, plan: MemoryPlan, steps: int, pcie_gbps: float) -> float:
    """Host-to-device copies that offloading adds: each component once (model), the UNet every step (sequential)."""
    w = shape.weights
    if plan.offload == "model":
        moved = w["image_encoder"] + 2 * w["vae"] + w["unet"]
    elif plan.offload == "sequential":
        moved = w["image_encoder"] + 2 * w["vae"] + steps * w["unet"]
    else:
        return 0.0
    return moved / (pcie_gbps * 1e9)


# ----------------------------------------------------------------------------
# the spec fields and engine settings a plan depends on (`stillmotion estimate` takes these as flags)
PLAN_SPEC_FIELDS = ("num_frames", "num_inference_steps", "max_guidance_scale", "width", "height", "decode_chunk_size",
                    "speed", "cache_interval")
PLAN_ENGINE_FIELDS = ("model", "dtype", "offload", "forward_chunking", "max_memory", "attention")


def workload_shape(config: "EngineConfig") -> ModelShape:
    """The shape a run under `config` is planned on: its model at its dtype (unset: fp16, a GPU's) with its
    attention kernel. Raises InvalidInput for a model whose family the planner does not count."""
    from ..errors import InvalidInput
    from ..families import family_for
    from ..models.resolve import entry_for

    entry = entry_for(config.model)
    family = family_for(entry)
    if not family.plans_memory:
        raise InvalidInput(f"The memory and time planner does not count {family.label} models yet ({entry.name}): "
                           f"run {entry.name} with --memory none or --offload model.")
    return family.plan_shape(entry, config.dtype, config.attention) or model_shape(entry, config.dtype or "fp16",
                                                                                   config.attention)


@functools.lru_cache(maxsize=None)
def dit_efficiency(card_name: str, reference: str) -> float:
    """A card's efficiency on a transformer family: the published run's card's (gpus.json `reference`, e.g.
    "wan_reference"), scaled by the card's efficiency on the SVD reference over that card's (the published
    runs name one card each)."""
    data = load_gpus()
    ref = data[reference]
    by_name = {c.name: c for c in cards()}
    base = by_name[ref["card"]]
    seconds = data["measurements"][ref["measurement"]]["seconds"]
    measured = ref["flops"] / (seconds * base.fp16_tflops * 1e12)
    return measured * by_name[card_name].efficiency / base.efficiency


def dit_planner(shape):
    """The transformer planner (engine/dit_plan.py) for a shape it counts (dit_shapes.DiTShape), else None:
    the shape is SVD's (engine/memory.py's planner)."""
    from . import dit_plan
    from .dit_shapes import DiTShape

    return dit_plan if isinstance(shape, DiTShape) else None


@dataclass(frozen=True)
class Workload:
    """One video as the Engine runs it: a resolved spec under an EngineConfig (keyframe: with an end image).
    The planner's and the time estimator's inputs, taken the one way the Engine takes them."""

    spec: "GenerationSpec"
    config: "EngineConfig"
    keyframe: bool = False

    @property
    def key(self) -> tuple:
        """What the plan of this workload depends on beside the config (equal keys: equal plans and times)."""
        return (*(getattr(self.spec, n) for n in PLAN_SPEC_FIELDS), self.keyframe)

    @property
    def decode_chunk(self) -> Optional[int]:
        """The decode chunk the user chose: the spec's, else the engine's; None lets the planner choose."""
        return self.spec.decode_chunk_size or self.config.decode_chunk_size

    @property
    def given(self) -> MemoryPlan:
        """The memory plan the settings name (what runs with --memory none)."""
        from ..families import family_for
        from ..models.resolve import entry_for

        own = family_for(entry_for(self.config.model)).given_plan(self.config)  # a family with its own plan type
        if own is not None:
            return own
        frames = self.spec.num_frames
        return MemoryPlan(min(self.decode_chunk or frames, frames), self.config.forward_chunking, self.config.offload)

    @property
    def fixed(self) -> dict:
        """What the user chose, which the planner keeps (memory.candidate_plans' keywords)."""
        return {"user_chunk": self.decode_chunk, "user_offload": self.config.offload,
                "user_forward_chunking": self.config.forward_chunking}

    def peak(self, shape: ModelShape) -> PeakEstimate:
        """Peak memory on a GPU under the given plan."""
        s = self.spec
        if (dit := dit_planner(shape)) is not None:
            return dit.estimate_peak(shape, s.num_frames, s.height, s.width, self.given, cfg=s.uses_cfg,
                                     knobs=shape.layout.knobs(s))
        return estimate_peak(shape, s.num_frames, s.height, s.width, self.given, cfg=s.uses_cfg, keyframe=self.keyframe)

    def plan(self, shape: ModelShape, budget_bytes: int, device: str = "cuda") -> PeakEstimate:
        """The fastest plan that fits the budget, keeping what the user chose; else the leanest (fits=False)."""
        s = self.spec
        if (dit := dit_planner(shape)) is not None:
            return dit.choose_plan(shape, s.num_frames, s.height, s.width, budget_bytes, device=device,
                                   user_offload=self.config.offload, cfg=s.uses_cfg, knobs=shape.layout.knobs(s))[0]
        return choose_plan(shape, s.num_frames, s.height, s.width, budget_bytes, device=device, cfg=s.uses_cfg,
                           keyframe=self.keyframe, **self.fixed)[0]

    def host(self, shape: ModelShape, plan=None) -> Optional[dict]:
        """Host memory of this workload under `plan` (default: the given plan), where the shape's planner counts
        it (the transformer families'); None for SVD's."""
        s = self.spec
        if (dit := dit_planner(shape)) is None:
            return None
        return dit.host_bytes(shape, plan or self.given, s.num_frames, s.height, s.width, cfg=s.uses_cfg,
                              knobs=shape.layout.knobs(s))

    def flops(self, shape: ModelShape) -> dict:
        """video_flops() of this workload under its given plan."""
        s = self.spec
        if (dit := dit_planner(shape)) is not None:
            return dit.video_flops(shape, s.num_frames, s.height, s.width, s.num_inference_steps, cfg=s.uses_cfg,
                                   knobs=shape.layout.knobs(s))
        return video_flops(shape, s.num_frames, s.height, s.width, s.num_inference_steps, speed=s.speed,
                           cache_interval=s.cache_interval, cfg=s.uses_cfg, decode_chunk=self.given.decode_chunk_size,
                           forward_chunking=self.config.forward_chunking, keyframe=self.keyframe)

    def time_on(self, card: Card, shape: ModelShape, flops: float) -> CardTime:
        """Seconds for this workload (of `flops`) on `card`, under the fastest plan that fits the card."""
        s = self.spec
        if (dit := dit_planner(shape)) is not None:
            best = self.plan(shape, card.budget_bytes)
            f = self.flops(shape)
            compute = flops / (card.fp16_tflops * 1e12 * dit_efficiency(card.name, shape.layout.reference))
            denoise = compute * s.num_inference_steps * f["unet_step"] / f["per_video"]
            return CardTime(card, best, compute + dit.extra_seconds(shape, best.plan, f, s.num_inference_steps,
                                                                    card.pcie_gbps, denoise))
        return time_on(card, shape, flops, s.num_frames, s.height, s.width, s.num_inference_steps, cfg=s.uses_cfg,
                       keyframe=self.keyframe, **self.fixed)
