"""Memory planner: how much memory a run needs, and the fastest plan that fits.

What "peak" means here: the most bytes of live tensors the run holds at once
on the device, i.e. what `torch.cuda.max_memory_allocated()` reports on a GPU
(and, on the CPU, the peak of the CPU allocator's live bytes that the torch
profiler reports). It is weights plus working memory; it leaves out the CUDA
context and the caching allocator's slack, which the planner covers with a
safety margin when it compares an estimate with free memory.

The working memory of each stage comes from a dry run on the `meta` device
(profile.py, dryrun.py); the planner adds the weights each offload mode keeps on the
device while a stage runs:
  none        all weights, all the time
  model       only the component the stage uses (diffusers' model CPU offload)
  sequential  only the largest single layer (weights stream in layer by layer)

Attention slicing is not offered: SVD's UNet uses SDPA, which never builds the
score matrix that slicing would cut, so slicing saves nothing.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any, Callable, Optional, TypeVar

from ..errors import OutOfMemory, StillmotionError, is_out_of_memory
from ..util import first_line, fmt_bytes
from .device import free_memory
from .profile import profile_stages
from .shapes import ModelShape, vae_upcast

SAFETY = 1.10  # caching allocator slack and fragmentation on a GPU
CONTEXT_BYTES = 0  # mem_get_info() already excludes the CUDA context

OFFLOAD_ORDER = ("none", "model", "sequential")

log = logging.getLogger("stillmotion.engine")
T = TypeVar("T")


# ----------------------------------------------------------------------------
@dataclass(frozen=True)
class MemoryPlan:
    """How a run uses memory. Ordered fastest first in `candidate_plans()`."""

    decode_chunk_size: int
    forward_chunking: bool = False
    offload: str = "none"

    def label(self) -> str:
        parts = [f"decode chunk {self.decode_chunk_size}"]
        if self.forward_chunking:
            parts.append("forward chunking")
        if self.offload != "none":
            parts.append(f"{self.offload} offload")
        return ", ".join(parts)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class PeakEstimate:
    plan: MemoryPlan
    peak_bytes: int  # weights on the device + working memory, at the worst moment
    weights_bytes: int  # weights on the device at that moment
    stages: dict  # stage -> bytes (device weights + working memory) during that stage
    working: dict  # stage -> working memory (activations) only
    fits: Optional[bool] = None
    budget_bytes: Optional[int] = None

    def to_dict(self) -> dict:
        d = {
            "plan": self.plan.to_dict(),
            "peak_bytes": self.peak_bytes,
            "peak": fmt_bytes(self.peak_bytes),
            "weights_bytes": self.weights_bytes,
            "stages": dict(self.stages),
        }
        if self.budget_bytes is not None:
            d["budget_bytes"] = self.budget_bytes
            d["fits"] = self.fits
        return d


# ----------------------------------------------------------------------------
STAGE_COMPONENTS = {"encode": ("image_encoder", "vae"), "denoise": ("unet",), "decode": ("vae",)}


def estimate_peak(shape: ModelShape, frames: int, height: int, width: int, plan: MemoryPlan, *,
                  device: str = "cuda", cfg: bool = True, keyframe: bool = False) -> PeakEstimate:
    """Peak device memory of one run under `plan` (weights on the device + working memory).
    keyframe: a run with an end image (two conditionings held at once; profile.py counts them)."""
    chunk = max(1, min(plan.decode_chunk_size, frames))
    prof = profile_stages(shape, frames, height, width, decode_chunk=chunk,
                          forward_chunking=plan.forward_chunking, cfg=cfg, keyframe=keyframe)
    offload = plan.offload if device != "cpu" else "none"  # the engine ignores offload on the CPU
    stages, weights_at = {}, {}
    for stage, work in prof.working.items():
        comps = STAGE_COMPONENTS[stage]
        if offload == "none":
            w = shape.weights_total
        elif offload == "model":
            w = max(shape.weights[c] for c in comps)
        else:
            w = 2 * shape.largest_layer
        if stage == "encode" and vae_upcast(shape) and offload != "sequential":
            w += shape.weights["vae"]  # the pipeline upcasts the VAE to fp32 to encode
        stages[stage] = w + work
        weights_at[stage] = w
    worst = max(stages, key=stages.get)
    return PeakEstimate(plan, stages[worst], weights_at[worst], stages, dict(prof.working))


def candidate_plans(frames: int, device: str = "cuda", user_chunk: Optional[int] = None,
                    user_offload: Optional[str] = None, user_forward_chunking: Optional[bool] = None) -> list[MemoryPlan]:
    """Plans from fastest to leanest: full decode chunk, then smaller chunks, then forward chunking,
    then model offload, then sequential offload (each step keeps the savings of the ones before).

    Choices the user made explicitly stay fixed.
    """
    chunks = [frames]
    c = frames
    while c > 1:
        c = max(1, c // 2)
        chunks.append(c)
    if user_chunk:
        chunks = [min(user_chunk, frames)]
    offloads = ["none"] if device == "cpu" else list(OFFLOAD_ORDER)
    if user_offload and user_offload != "none":
        offloads = [user_offload]
    fwd = [False, True] if not user_forward_chunking else [True]
    plans: list[MemoryPlan] = []
    for off in offloads:
        for fc in fwd:
            for ch in chunks:
                p = MemoryPlan(ch, fc, off)
                if p not in plans:
                    plans.append(p)
    # order: offload first key (slowest to change), then forward chunking, then chunk descending
    return plans


def choose_plan(shape: ModelShape, frames: int, height: int, width: int, budget_bytes: int, *,
                device: str = "cuda", cfg: bool = True, keyframe: bool = False,
                **fixed) -> tuple[PeakEstimate, list[PeakEstimate]]:
    """The first (fastest) plan whose estimate x SAFETY fits the budget; else the leanest, marked fits=False."""
    tried = []
    for plan in candidate_plans(frames, device, **fixed):
        est = estimate_peak(shape, frames, height, width, plan, device=device, cfg=cfg, keyframe=keyframe)
        est.budget_bytes = budget_bytes
        est.fits = est.peak_bytes * SAFETY + CONTEXT_BYTES <= budget_bytes
        tried.append(est)
        if est.fits:
            return est, tried
    leanest = min(tried, key=lambda e: e.peak_bytes)
    return leanest, tried


def next_plan_down(current: MemoryPlan, frames: int, device: str, stage: str) -> Optional[MemoryPlan]:
    """The next step down after an out-of-memory in `stage`: a smaller decode chunk (decoding only),
    then forward chunking, then model offload, then sequential offload. None when nothing is left.
    A family's own plan type (dit_plan.DiTPlan) steps down its own way."""
    if not isinstance(current, MemoryPlan):
        return current.step_down(device)
    if stage == "decoding" and current.decode_chunk_size > 1:
        return MemoryPlan(max(1, current.decode_chunk_size // 2), current.forward_chunking, current.offload)
    if not current.forward_chunking:
        return MemoryPlan(current.decode_chunk_size, True, current.offload)
    if device != "cpu":
        i = OFFLOAD_ORDER.index(current.offload)
        if i + 1 < len(OFFLOAD_ORDER):
            return MemoryPlan(current.decode_chunk_size, True, OFFLOAD_ORDER[i + 1])
    if current.decode_chunk_size > 1:
        return MemoryPlan(max(1, current.decode_chunk_size // 2), current.forward_chunking, current.offload)
    return None


def retry_on_oom(stage: str, plan: MemoryPlan, attempt: Callable[[MemoryPlan], T], *,
                 apply_plan: Callable[[MemoryPlan], Any], spec, device: str, fallbacks: list,
                 step_down: bool = True) -> tuple[T, MemoryPlan]:
    """attempt(plan) after apply_plan(plan); after an out-of-memory, the next plan down (appended to
    `fallbacks`) until one succeeds -> (its result, the plan it ran with). Raises OutOfMemory when no
    plan is left, or at once when `step_down` is False (--memory none)."""
    while True:
        apply_plan(plan)
        try:
            return attempt(plan), plan
        except StillmotionError:
            raise
        except Exception as e:  # noqa: BLE001 - converted at the boundary
            if not is_out_of_memory(e):
                raise
            error = first_line(e)[:200]
        free_memory()
        nxt = next_plan_down(plan, spec.num_frames, device, stage) if step_down else None
        if nxt is None:
            raise OutOfMemory(
                f"Out of memory while {stage} {spec.num_frames} frames at {spec.width}x{spec.height} on "
                f"{device}: try --offload model, a smaller --decode-chunk (e.g. 2), fewer --frames or a "
                "smaller size.") from None
        fallbacks.append({"stage": stage, "error": error, "from": plan.label(),
                          "to": nxt.label(), "plan": nxt.to_dict()})
        log.warning("out of memory while %s with %s; retrying with %s", stage, plan.label(), nxt.label())
        plan = nxt


# ----------------------------------------------------------------------------
def device_budget(device: str) -> Optional[int]:
    """Bytes this process may use on the device: free + what PyTorch already holds (weights included)."""
    import torch

    if device.startswith("cuda"):
        free, _total = torch.cuda.mem_get_info(torch.device(device))
        return int(free + torch.cuda.memory_reserved(torch.device(device)))
    if device == "cpu":
        try:
            import psutil

            return int(psutil.virtual_memory().available + psutil.Process().memory_info().rss)
        except ImportError:  # pragma: no cover
            return None
    return None
