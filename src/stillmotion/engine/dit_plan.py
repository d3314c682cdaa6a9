"""The transformer families' memory plan: the fastest plan that fits, the host memory it takes, applying it.

A run holds, on the device, the weights its plan keeps there plus the working memory of the stage it is
in; both are counted on the family's shape (dit_shapes.DiTShape: components on meta, stage dry runs at
full size; Wan's in wan_shape.py, LTX-2's in ltx2_shape.py, FramePack's in framepack_shape.py), not
guessed. fp8 storage counts the layers that layerwise casting stores in float8 at 1 byte.

Plan axes, fastest first, each keeping the savings of the ones before (candidate_plans):
  all on the GPU -> the text encoders off the device (the layout's `text_off`: "cpu", they run there and
  the embeddings move to the device; or "first", they run on the device first and go back to the host
  before the denoiser's first pass) -> VAE tiling -> model CPU offload -> group offload (the denoisers
  block by block or layer by layer on a CUDA stream, and text encoders still on the device layer by layer;
  the VAE and the small encoders stay) -> fp8 weight storage of the denoisers (bf16 compute).
Only fp8 changes the weights' values; tiling changes the decoded pixels by a level or so.

Host memory is counted too (host_bytes): from_pretrained reads every weight into host memory before the
plan places it, so the load holds them all; during the run the host holds what the plan keeps off the
device (offloaded and streamed weights, a text encoder on the CPU and its working memory) and the video.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Optional

from .dit_shapes import DiTShape, Layout, stage_profile
from .memory import SAFETY, PeakEstimate

CPU_TFLOPS = 0.5  # estimated bf16 throughput of a host CPU for a text encoder on the CPU (not measured)


@dataclass(frozen=True)
class DiTPlan:
    """Where a transformer family's weights live and how it decodes. Ordered fastest first in candidate_plans()."""

    text_encoder: str = "gpu"  # "gpu" | "cpu" (encodes on the CPU) | "first" (on the device to encode, then freed)
    vae_tiling: bool = False
    offload: str = "none"  # "none" | "model" | "group" | "sequential" (only when the user asks for it)
    fp8: bool = False  # denoiser weights stored in float8_e4m3fn, computed in the run's dtype
    text_off: str = field(default="cpu", compare=False, repr=False)  # the layout's way of freeing the text encoders

    decode_chunk_size = None  # these VAEs decode the clip at once (the engine's decode takes no chunk)
    forward_chunking = False

    def label(self) -> str:
        text = {"gpu": [], "cpu": ["text encoder on the CPU"], "first": ["text encoders first, then freed"]}
        parts = text[self.text_encoder] + ["VAE tiling"] * self.vae_tiling
        parts += ([f"{self.offload} offload"] if self.offload != "none" else []) + ["fp8 weights"] * self.fp8
        return ", ".join(parts) or "everything on the GPU"

    def to_dict(self) -> dict:
        return {"text_encoder": self.text_encoder, "vae_tiling": self.vae_tiling, "offload": self.offload,
                "fp8": self.fp8}

    def step_down(self, device: str) -> Optional["DiTPlan"]:
        """The next leaner plan after an out-of-memory (None: nothing is left)."""
        plans = candidate_plans(device, self.offload if self.offload == "sequential" else None, self.text_off)
        later = plans[plans.index(self) + 1:] if self in plans else []
        return later[0] if later else None


def candidate_plans(device: str = "cuda", user_offload: Optional[str] = None, text_off: str = "cpu") -> list[DiTPlan]:
    """Plans from fastest to leanest, each step keeping the savings before it. On the CPU only the decode
    can change (offload and device placement are no-ops there). A user's --offload stays fixed."""
    P = lambda *a: DiTPlan(*a, text_off=text_off)  # noqa: E731
    steps = [P(), P(text_off), P(text_off, True)]
    if device == "cpu":
        return steps
    steps += [P(text_off, True, "model"), P(text_off, True, "group"), P(text_off, True, "group", True)]
    if user_offload and user_offload != "none":
        steps = list(dict.fromkeys(replace(p, offload=user_offload) for p in steps))
    return steps


def given_plan(layout: Layout, offload: str) -> DiTPlan:
    """The plan the engine settings name (--memory none): everything on the device under the user's --offload."""
    return DiTPlan(offload=offload, text_off=layout.text_off)


# ----------------------------------------------------------------------------
def _streamed(shape: DiTShape, component: str, level: str) -> int:
    """Bytes of a component on the device while group offload streams it: block level, what lies outside the
    blocks and two blocks (the one running and the one the stream prefetches); leaf level, two leaves and the
    parameters no leaf holds."""
    if level == "block":
        return shape.rest_bytes[component] + 2 * shape.block_bytes[component]
    return shape.loose_bytes.get(component, 0) + 2 * shape.leaf_bytes[component]


def resident(shape: DiTShape, plan: DiTPlan, stage: str, device: str = "cuda") -> int:
    """Weight bytes on the device while `stage` runs under `plan`."""
    if device == "cpu":
        return shape.weights_total
    lay = shape.layout
    w = dict(shape.weights)
    if plan.fp8:
        w.update(shape.fp8_weights)
    texts = shape.text_encoders
    if plan.text_encoder == "cpu" or (plan.text_encoder == "first" and stage not in lay.text_stages):
        for c in texts:
            w.pop(c, None)
    if plan.offload == "model":  # only the stage's component (one expert at a time)
        return max((w.get(c, 0) for c in lay.stages[stage][0]), default=0)
    if plan.offload in ("group", "sequential"):  # the denoisers stream, and so do text encoders left on the device
        experts = shape.experts
        scale = (shape.fp8_weights[experts[0]] / shape.weights[experts[0]]) if plan.fp8 else 1.0
        for c in experts:
            w.pop(c)
        w[experts[0]] = int(_streamed(shape, experts[0], lay.group_level) * scale) if stage == lay.denoise_stage else 0
        for c in texts:
            if c in w:
                w[c] = _streamed(shape, c, "leaf") if stage in lay.text_stages else 0
    return sum(w.values())


def estimate_peak(shape: DiTShape, frames: int, height: int, width: int, plan: DiTPlan, *,
                  device: str = "cuda", cfg: bool = False, knobs: Optional[dict] = None) -> PeakEstimate:
    """Peak device memory of a run under `plan`: the worst stage's weights on the device + working memory
    (a text encoder on the CPU works there: its working memory is not the device's)."""
    prof = stage_profile(shape, frames, height, width, plan.vae_tiling, cfg, knobs)
    stages, weights_at, working = {}, {}, {}
    for stage, (work, _) in prof.items():
        if stage in shape.layout.text_stages and plan.text_encoder == "cpu" and device != "cpu":
            work = 0
        weights_at[stage] = resident(shape, plan, stage, device)
        stages[stage], working[stage] = weights_at[stage] + work, work
    worst = max(stages, key=stages.get)
    return PeakEstimate(plan, stages[worst], weights_at[worst], stages, working)


def choose_plan(shape: DiTShape, frames: int, height: int, width: int, budget_bytes: int, *, device: str = "cuda",
                user_offload: Optional[str] = None, cfg: bool = False,
                knobs: Optional[dict] = None) -> tuple[PeakEstimate, list[PeakEstimate]]:
    """The first (fastest) plan whose estimate x SAFETY fits the budget; else the leanest, marked fits=False."""
    tried = []
    for plan in candidate_plans(device, user_offload, shape.layout.text_off):
        est = estimate_peak(shape, frames, height, width, plan, device=device, cfg=cfg, knobs=knobs)
        est.budget_bytes, est.fits = budget_bytes, est.peak_bytes * SAFETY <= budget_bytes
        tried.append(est)
        if est.fits:
            return est, tried
    return min(tried, key=lambda e: e.peak_bytes), tried


def host_bytes(shape: DiTShape, plan: DiTPlan, frames: int, height: int, width: int, *, device: str = "cuda",
               cfg: bool = False, knobs: Optional[dict] = None) -> dict:
    """Host (system) memory of a run under `plan`: {"load", "run", "peak"}. The load holds every weight as
    read (from_pretrained loads into host memory, then the plan places it); the run holds what the plan keeps
    off the device, a text encoder on the CPU's working memory, and the video (float32 frames from the
    VAE's postprocess, then uint8)."""
    lay = shape.layout
    video = frames * height * width * 3 * (4 + 1)
    if device == "cpu":
        prof = stage_profile(shape, frames, height, width, plan.vae_tiling, cfg, knobs)
        run = shape.weights_total + max(work for work, _ in prof.values()) + video
        return {"load": shape.weights_total, "run": run, "peak": max(shape.weights_total, run)}
    w = dict(shape.weights)
    if plan.fp8:
        w.update(shape.fp8_weights)
    texts, experts = shape.text_encoders, shape.experts
    if plan.offload in ("model", "sequential"):
        off = sum(w.values())  # every component lives on the host between its uses
    else:
        off = sum(w[c] for c in texts) if plan.text_encoder != "gpu" or plan.offload == "group" else 0
        off += sum(w[c] for c in experts) if plan.offload == "group" else 0  # pinned copies the stream reads
    work = 0
    if plan.text_encoder == "cpu":
        prof = stage_profile(shape, frames, height, width, plan.vae_tiling, cfg, knobs)
        work = max(prof[s][0] for s in lay.text_stages)
    run = off + work + video
    return {"load": shape.weights_total, "run": run, "peak": max(shape.weights_total, run)}


def video_flops(shape: DiTShape, frames: int, height: int, width: int, steps: int, cfg: bool = True,
                knobs: Optional[dict] = None) -> dict:
    """Counted FLOPs of one video: each stage's dry-run FLOPs times the calls a video makes of it (the layout's
    `calls`: e.g. the transformer steps x 2 with guidance, or x sections)."""
    lay = shape.layout
    prof = stage_profile(shape, frames, height, width, False, cfg, knobs)
    calls = lay.calls(shape, frames, steps, cfg, **(knobs or {}))
    total = sum(prof[st][1] * n for st, n in calls.items())
    passes = calls[lay.denoise_stage] / steps
    step = prof[lay.denoise_stage][1]
    text = sum(prof[st][1] * calls.get(st, 0) for st in lay.text_stages)
    return {"unet_step": step * passes, "unet_cached_step": step * passes, "unet_passes_per_step": 1,
            "transformer_pass": step, "text_encoder": text, "per_video": total}


def extra_seconds(shape: DiTShape, plan: DiTPlan, flops: dict, steps: int, pcie_gbps: float,
                  denoise_seconds: float) -> float:
    """Seconds a plan adds to the compute: a text encoder on the CPU (at CPU_TFLOPS, estimated), the copies of
    text encoders freed after encoding (onloaded once a video), model offload's (each component once a video),
    group offload's copies beyond what the stream hides (text encoders streamed: every copy counts)."""
    texts = sum(shape.weights[c] for c in shape.text_encoders)
    s = flops["text_encoder"] / (CPU_TFLOPS * 1e12) if plan.text_encoder == "cpu" else 0.0
    moved = sum(shape.fp8_weights.get(c, b) if plan.fp8 else b for c, b in shape.weights.items()
                if c in shape.experts)
    if plan.offload == "model":
        s += (sum(shape.weights.values()) + shape.weights["vae"]) / (pcie_gbps * 1e9)
    elif plan.offload in ("group", "sequential"):
        per_pass = moved / len(shape.experts)
        s += max(0.0, steps * flops["unet_step"] / flops["transformer_pass"] * per_pass / (pcie_gbps * 1e9)
                 - denoise_seconds)
        if plan.text_encoder != "cpu":
            s += texts / (pcie_gbps * 1e9)
    elif plan.text_encoder == "first":
        s += texts / (pcie_gbps * 1e9)
    return s


# ----------------------------------------------------------------------------
def apply_plan(pipe, plan: DiTPlan, active: Optional[DiTPlan], device: str, dtype, layout: Layout) -> DiTPlan:
    """Set a pipeline of `layout`'s family up for `plan`, in named steps; returns the plan in force (fp8
    storage, once applied, stays: the weights were rounded)."""
    if active is not None and active.fp8 and not plan.fp8:
        plan = replace(plan, fp8=True)
    if active is None or (active.offload, active.text_encoder) != (plan.offload, plan.text_encoder):
        _place_weights(pipe, plan, active, device, layout)
    _set_vae_tiling(pipe.vae, plan.vae_tiling)
    if plan.fp8 and not (active is not None and active.fp8):
        _store_fp8(pipe, dtype, layout)
    return plan


def _present(pipe, names) -> list:
    return [getattr(pipe, c) for c in names if getattr(pipe, c, None) is not None]


def _place_weights(pipe, plan: DiTPlan, active: Optional[DiTPlan], device: str, layout: Layout) -> None:
    """Where each component lives: on the device, text encoders on the CPU or freed after encoding, model or
    group offload."""
    if device == "cpu":  # offload and placement are no-ops on the CPU
        pipe.to("cpu")
        return
    if active is not None and active.offload in ("model", "sequential"):
        pipe.remove_all_hooks()
    if active is not None and active.offload == "group":
        _remove_group_offload(pipe, layout)
    if active is not None and active.text_encoder == "first":
        _remove_text_first(pipe)
    texts = _present(pipe, layout.text_encoders)
    if plan.offload == "model":
        pipe.enable_model_cpu_offload(device=device)
    elif plan.offload == "sequential":
        pipe.enable_sequential_cpu_offload(device=device)
    elif plan.offload == "group":
        group_offload(pipe, layout, device, stream_texts=plan.text_encoder != "cpu")
    else:
        pipe.to(device)
    if plan.text_encoder == "cpu" and plan.offload != "sequential":
        for m in texts:
            m.to("cpu")  # diffusers runs a split pipeline: the embeddings move to the device
    elif plan.text_encoder == "first" and plan.offload == "none":
        text_first(pipe, layout, device)


def group_offload(pipe, layout: Layout, device: str, *, stream_texts: bool, use_stream: bool = True) -> None:
    """diffusers' group offload: the denoisers at the layout's level, text encoders (when `stream_texts`) layer
    by layer, on a CUDA stream that prefetches the next group; every other component on the device."""
    from diffusers.hooks import apply_group_offloading

    streamed = set(layout.denoisers) | (set(layout.text_encoders) if stream_texts else set())
    for name in layout.components:
        if name not in streamed and getattr(pipe, name, None) is not None:
            getattr(pipe, name).to(device)
    for m in _present(pipe, layout.denoisers):
        if layout.group_level == "block":
            apply_group_offloading(m, onload_device=device, offload_type="block_level", num_blocks_per_group=1,
                                   use_stream=use_stream)
        else:
            apply_group_offloading(m, onload_device=device, offload_type="leaf_level", use_stream=use_stream)
    for m in _present(pipe, layout.text_encoders) if stream_texts else []:
        apply_group_offloading(m, onload_device=device, offload_type="leaf_level", use_stream=use_stream)


def _remove_group_offload(pipe, layout: Layout) -> None:
    from diffusers.hooks import HookRegistry

    for m in _present(pipe, layout.denoisers + layout.text_encoders):
        registry = HookRegistry.check_if_exists_or_initialize(m)
        for hook in ("group_offloading", "lazy_prefetch_group_offloading", "layer_execution_tracker"):
            registry.remove_hook(hook, recurse=True)


def text_first(pipe, layout: Layout, device: str) -> None:
    """Text encoders on the host, onloaded to `device` when the prompt is encoded (accelerate's CPU offload
    hook, as diffusers' model offload uses) and sent back before each denoiser's first pass of a run."""
    from accelerate import cpu_offload_with_hook

    hooks = [cpu_offload_with_hook(m, device)[1] for m in _present(pipe, layout.text_encoders)]

    def free(module, args):
        for h in hooks:
            h.offload()

    handles = [m.register_forward_pre_hook(free) for m in _present(pipe, layout.denoisers)]
    pipe._stillmotion_text_first = (hooks, handles)


def _remove_text_first(pipe) -> None:
    from accelerate.hooks import remove_hook_from_module

    hooks, handles = getattr(pipe, "_stillmotion_text_first", ((), ()))
    for h in handles:
        h.remove()
    for h in hooks:
        remove_hook_from_module(h.model, recurse=True)
    pipe._stillmotion_text_first = ((), ())


def _set_vae_tiling(vae, on: bool) -> None:
    vae.enable_tiling() if on else vae.disable_tiling()


def _store_fp8(pipe, dtype, layout: Layout) -> None:
    import torch

    for m in _present(pipe, layout.denoisers):
        m.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=dtype)
