"""Wan's memory plan: the components counted on the meta device, and the fastest plan that fits.

A Wan run holds, on the device, the weights its plan keeps there plus the working memory of the stage
it is in. Both are counted, not guessed:

  weights   the published configs (shapes.wan_configs) or a folder's/pipeline's own, built on the `meta`
            device and counted per component at the run's dtype (the VAE and the CLIP image encoder at
            fp32, as families/wan.py loads them); fp8 storage counts the layers that layerwise casting
            stores in float8 at 1 byte.
  working   the dry run (dryrun.py) of the calls the pipeline makes, at the run's full size (the meta
            device makes a 14B transformer step cost about a second to count): the text encoder on 512
            tokens, the CLIP image encoder, the VAE encode of the condition video, ONE transformer pass
            (WanImageToVideoPipeline runs the conditional and unconditional passes one after the other,
            so guidance doubles the FLOPs, not the activations; SDPA is counted fused, no score matrix)
            and the VAE decode (with `vae.enable_tiling()`: the tiled decode, whose peak is a tile's).

Plan axes, fastest first, each keeping the savings of the ones before (candidate_plans):
  all on the GPU -> text encoder on the CPU (UMT5 runs there; the embeddings move to the device) ->
  VAE tiling -> model CPU offload -> group offload (the transformer(s) block by block, on a CUDA stream;
  the VAE and the CLIP stay on the device) -> fp8 weight storage of the transformer(s) (bf16 compute).
Only fp8 changes the weights' values; tiling changes the decoded pixels by a level or so.
"""

from __future__ import annotations

import functools
import re
from dataclasses import asdict, dataclass, field, replace
from typing import Optional

from .dryrun import DryRun
from .memory import SAFETY, PeakEstimate
from .shapes import _meta_build, quiet_diffusers, wan_configs

TEXT_TOKENS = 512  # the pipeline pads every prompt to 512 tokens
CLIP_TOKENS = 257  # ViT-H/14 at 224 px: 16 x 16 patches + class token
COMPONENTS = ("transformer", "transformer_2", "text_encoder", "image_encoder", "vae")
STAGE_COMPONENTS = {"text": ("text_encoder",), "image": ("image_encoder",), "vae_encode": ("vae",),
                    "denoise": ("transformer", "transformer_2"), "decode": ("vae",)}
CPU_TFLOPS = 0.5  # estimated bf16 throughput of a host CPU for the text encoder on the CPU (not measured)


@dataclass(frozen=True)
class WanPlan:
    """Where Wan's weights live and how it decodes. Ordered fastest first in candidate_plans()."""

    text_encoder: str = "gpu"  # "gpu" | "cpu" (UMT5 encodes on the CPU)
    vae_tiling: bool = False
    offload: str = "none"  # "none" | "model" | "group" | "sequential" (only when the user asks for it)
    fp8: bool = False  # transformer weights stored in float8_e4m3fn, computed in the run's dtype

    decode_chunk_size = None  # the Wan VAE decodes the clip at once (the engine's decode takes no chunk)
    forward_chunking = False

    def label(self) -> str:
        parts = [] if self.text_encoder == "gpu" else ["text encoder on the CPU"]
        parts += ["VAE tiling"] * self.vae_tiling + ([f"{self.offload} offload"] if self.offload != "none" else [])
        parts += ["fp8 weights"] * self.fp8
        return ", ".join(parts) or "everything on the GPU"

    def to_dict(self) -> dict:
        return asdict(self)

    def step_down(self, device: str) -> Optional["WanPlan"]:
        """The next leaner plan after an out-of-memory (None: nothing is left)."""
        plans = candidate_plans(device, self.offload if self.offload == "sequential" else None)
        later = plans[plans.index(self) + 1:] if self in plans else []
        return later[0] if later else None


def candidate_plans(device: str = "cuda", user_offload: Optional[str] = None) -> list[WanPlan]:
    """Plans from fastest to leanest, each step keeping the savings before it. On the CPU only the decode
    can change (offload and device placement are no-ops there). A user's --offload stays fixed."""
    steps = [WanPlan(), WanPlan("cpu"), WanPlan("cpu", True)]
    if device == "cpu":
        return steps
    steps += [WanPlan("cpu", True, "model"), WanPlan("cpu", True, "group"), WanPlan("cpu", True, "group", True)]
    if user_offload and user_offload != "none":
        steps = list(dict.fromkeys(replace(p, offload=user_offload) for p in steps))
    return steps


# ----------------------------------------------------------------------------
@dataclass
class WanShape:
    """Wan's components on the meta device, and their bytes."""

    modules: dict  # component -> meta module (None where the model has none)
    weights: dict  # component -> bytes as loaded
    fp8_weights: dict  # transformer(s) -> bytes under fp8 layerwise casting
    block_bytes: dict  # transformer(s) -> bytes of the largest block (group offload onloads two at a time)
    rest_bytes: dict  # transformer(s) -> bytes outside the blocks (onloaded for the whole pass)
    dtype_bytes: int = 2
    name: str = ""
    profiles: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def weights_total(self) -> int:
        return sum(self.weights.values())

    @property
    def experts(self) -> tuple:
        return tuple(c for c in ("transformer", "transformer_2") if self.modules.get(c) is not None)


def wan_shape(entry, dtype_name: str = "bf16") -> WanShape:
    """WanShape of a model entry: a registry model's published configs, else its folder's (no download)."""
    return _entry_shape(entry, dtype_name)


@functools.lru_cache(maxsize=8)
def _entry_shape(entry, dtype_name: str) -> WanShape:
    import diffusers
    import transformers

    from ..util import torch_dtype

    if entry.source == "registry":
        cfg = wan_configs(entry.name)
        classes = {"transformer": diffusers.WanTransformer3DModel, "transformer_2": diffusers.WanTransformer3DModel,
                   "vae": diffusers.AutoencoderKLWan, "text_encoder": transformers.UMT5EncoderModel,
                   "image_encoder": transformers.CLIPVisionModel}
        conf = {"text_encoder": transformers.UMT5Config, "image_encoder": transformers.CLIPVisionConfig}
        modules = {c: None if cfg[c] is None else _meta_build(classes[c], conf[c](**cfg[c]) if c in conf else cfg[c])
                   for c in COMPONENTS}
    else:
        import json

        from ..models.resolve import resolve

        folder = resolve(entry.name, download=False, progress=False).path
        index = json.loads((folder / "model_index.json").read_text())
        modules = {}
        for c in COMPONENTS:
            lib, cls = (index.get(c) or [None, None])[:2]
            if cls is None:
                modules[c] = None
                continue
            cls = getattr(diffusers if lib == "diffusers" else transformers, cls)
            config = cls.load_config(folder / c) if lib == "diffusers" else cls.config_class.from_pretrained(folder / c)
            modules[c] = _meta_build(cls, config)
    return _shape(modules, torch_dtype(dtype_name), entry.name)


def wan_shape_from_pipe(pipe, dtype, name: str = "") -> WanShape:
    """WanShape of a loaded WanImageToVideoPipeline (its components' configs, built again on meta)."""
    modules = {c: None if getattr(pipe, c, None) is None else _meta_build(type(getattr(pipe, c)), getattr(pipe, c).config)
               for c in COMPONENTS}
    return _shape(modules, dtype, name)


def _shape(modules: dict, dtype, name: str) -> WanShape:
    import torch

    size = torch.empty((), dtype=dtype).element_size()
    weights, fp8, block, rest = {}, {}, {}, {}
    with quiet_diffusers():
        for c, m in modules.items():
            if m is None:
                continue
            at = torch.float32 if c in ("vae", "image_encoder") else dtype  # families/wan.py keeps these in fp32
            m.to("meta", at)
            b = torch.empty((), dtype=at).element_size()
            weights[c] = sum(t.numel() for t in [*m.parameters(), *m.buffers()]) * b
            if c.startswith("transformer"):
                fp8[c] = _fp8_bytes(m, b)
                blocks = [sum(p.numel() for p in blk.parameters()) * b for blk in m.blocks]
                block[c], rest[c] = max(blocks), weights[c] - sum(blocks)
    return WanShape(modules, weights, fp8, block, rest, size, name)


def _fp8_bytes(module, dtype_bytes: int) -> int:
    """Bytes of a transformer under enable_layerwise_casting(float8): its linear and conv layers at 1 byte,
    except those diffusers skips (its default patterns and the model's own), the rest at the dtype."""
    import torch
    from diffusers.hooks.layerwise_casting import DEFAULT_SKIP_MODULES_PATTERN

    skip = tuple(DEFAULT_SKIP_MODULES_PATTERN) + tuple(getattr(module, "_skip_layerwise_casting_patterns", None) or ())
    cast = (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)
    total = sum(t.numel() for t in [*module.parameters(), *module.buffers()]) * dtype_bytes
    for name, m in module.named_modules():
        if isinstance(m, cast) and not any(re.search(p, name) for p in skip):
            total -= sum(p.numel() for p in m.parameters(recurse=False)) * (dtype_bytes - 1)
    return total


# ----------------------------------------------------------------------------
def _sizes(shape: WanShape, frames: int, height: int, width: int) -> dict:
    vae = shape.modules["vae"].config
    s = vae.get("scale_factor_spatial") or 8
    t = shape.modules["transformer"].config
    lf, h, w = (frames - 1) // (vae.get("scale_factor_temporal") or 4) + 1, height // s, width // s
    p = t["patch_size"]
    return {"lf": lf, "h": h, "w": w, "tokens": lf // p[0] * (h // p[1]) * (w // p[2]), "z": vae["z_dim"],
            "expand": t["in_channels"] == vae["z_dim"]}  # TI2V: nothing concatenated, per-token timesteps


def stage_profile(shape: WanShape, frames: int, height: int, width: int, tiling: bool) -> dict:
    """{stage: (working bytes, FLOPs of one call)} from dry runs at this size (cached on the shape)."""
    key = (frames, height, width, tiling)
    if key not in shape.profiles:
        with quiet_diffusers():
            shape.profiles[key] = {st: fn(shape, _sizes(shape, frames, height, width), frames, height, width, tiling)
                                   for st, fn in _STAGES.items()}
    return shape.profiles[key]


def _dt(shape):
    import torch

    return {2: torch.bfloat16, 4: torch.float32}.get(shape.dtype_bytes, torch.bfloat16)


def _text(shape, sz, frames, height, width, tiling):
    import torch

    with DryRun() as run:
        ids = torch.zeros(1, TEXT_TOKENS, dtype=torch.long, device="meta")
        shape.modules["text_encoder"](ids).last_hidden_state  # no mask: the same work, none built
        return run.mode.peak, run.stage_flops()


def _image(shape, sz, frames, height, width, tiling):
    import torch

    enc = shape.modules["image_encoder"]
    if enc is None:
        return 0, 0
    with DryRun() as run:
        enc(torch.empty(1, 3, 224, 224, device="meta"), output_hidden_states=True).hidden_states[-2]
        return run.mode.peak, run.stage_flops()


def _vae_encode(shape, sz, frames, height, width, tiling):
    import torch

    vae = shape.modules["vae"]
    n = 1 if sz["expand"] else frames  # I2V encodes the first frame + zeros; TI2V only the image
    tile = _tile(vae, height, width) if tiling else None
    h, w = (tile["h"], tile["w"]) if tile else (height, width)
    with DryRun() as run:
        vae.encode(torch.empty(1, 3, n, h, w, device="meta")).latent_dist.mode()
        peak, flops = run.mode.peak, run.stage_flops()
    if tile:  # one tile's working memory + the tiles' latents kept for blending; every tile's FLOPs
        peak += tile["count"] * 2 * sz["z"] * ((n - 1) // 4 + 1) * (h // tile["s"]) * (w // tile["s"]) * 4
        flops *= tile["count"]
    return peak, flops


def _denoise(shape, sz, frames, height, width, tiling):
    import torch

    dt, tr = _dt(shape), shape.modules["transformer"]
    lat = (1, sz["z"], sz["lf"], sz["h"], sz["w"])
    with DryRun() as run:
        latents = torch.empty(lat, dtype=torch.float32, device="meta")
        cond = None if sz["expand"] else torch.empty(1, tr.config.in_channels - sz["z"], *lat[2:], dtype=dt, device="meta")
        text = torch.empty(1, TEXT_TOKENS, tr.config.text_dim, dtype=dt, device="meta")
        img = (torch.empty(1, CLIP_TOKENS, tr.config.image_dim, dtype=dt, device="meta")
               if tr.config.image_dim else None)
        t = torch.empty(1, sz["tokens"] if sz["expand"] else 1, device="meta").squeeze(-1) if not sz["expand"] else \
            torch.empty(1, sz["tokens"], device="meta")
        x = latents.to(dt) if cond is None else torch.cat([latents, cond.float()], dim=1).to(dt)
        cond_pred = torch.empty(1, tr.config.out_channels, *lat[2:], dtype=dt, device="meta")  # the first pass's, held
        uncond = tr(x, t, text, encoder_hidden_states_image=img, return_dict=False)[0]  # the second pass (counted once)
        latents = latents + (uncond + (cond_pred - uncond) * 1.0).float()  # guidance and the scheduler step
        return run.mode.peak, run.stage_flops()  # FLOPs of one pass (+ the guidance's few)


def _decode(shape, sz, frames, height, width, tiling):
    import torch

    vae = shape.modules["vae"]
    tile = _tile(vae, height, width) if tiling else None
    h, w = (tile["h"] // tile["s"], tile["w"] // tile["s"]) if tile else (sz["h"], sz["w"])
    with DryRun() as run:
        z = torch.empty(1, sz["z"], sz["lf"], h, w, device="meta")
        video = vae.decode(z, return_dict=False)[0]
        (video / 2 + 0.5).clamp(0, 1)
        peak, flops = run.mode.peak, run.stage_flops()
    if tile:  # tiled_decode keeps every decoded tile, then blends them into the video: the larger of
        # (one tile's working memory + the tiles before it) and (every tile + the blended video)
        out = 3 * frames * tile["h"] * tile["w"] * 4
        video_bytes = 3 * frames * height * width * 4
        peak = max(peak + (tile["count"] - 1) * out, tile["count"] * out + 2 * video_bytes)
        flops *= tile["count"]
    return peak, flops


def _tile(vae, height: int, width: int) -> Optional[dict]:
    """diffusers' tiling of AutoencoderKLWan at this size (its enable_tiling() defaults): the tile in pixels,
    how many, the spatial factor; None where the image is no larger than a tile (diffusers does not tile).
    The tiled stages are counted as one tile's dry run times the tiles: a dry run of every tile costs minutes."""
    vae.enable_tiling()
    try:
        th, tw = vae.tile_sample_min_height, vae.tile_sample_min_width
        sh, sw = vae.tile_sample_stride_height, vae.tile_sample_stride_width
    finally:
        vae.disable_tiling()
    s = vae.config.get("scale_factor_spatial") or 8
    if height <= th and width <= tw:
        return None
    return {"h": min(th, height), "w": min(tw, width), "s": s,
            "count": len(range(0, height, sh)) * len(range(0, width, sw))}


_STAGES = {"text": _text, "image": _image, "vae_encode": _vae_encode, "denoise": _denoise, "decode": _decode}


# ----------------------------------------------------------------------------
def resident(shape: WanShape, plan: WanPlan, stage: str, device: str = "cuda") -> int:
    """Weight bytes on the device while `stage` runs under `plan`."""
    if device == "cpu":
        return shape.weights_total
    w = dict(shape.weights)
    if plan.fp8:
        w.update(shape.fp8_weights)
    if plan.text_encoder == "cpu":
        w.pop("text_encoder", None)
    experts = shape.experts
    if plan.offload == "model":  # only the stage's component (one expert at a time)
        return max((w.get(c, 0) for c in STAGE_COMPONENTS[stage]), default=0)
    if plan.offload in ("group", "sequential"):  # the transformer(s) stream block by block, two blocks on the device
        scale = (shape.fp8_weights[experts[0]] / shape.weights[experts[0]]) if plan.fp8 else 1.0
        streamed = shape.rest_bytes[experts[0]] + 2 * shape.block_bytes[experts[0]]
        for c in experts:
            w.pop(c)
        w["transformer"] = int(streamed * scale) if stage == "denoise" else 0
    return sum(w.values())


def estimate_peak(shape: WanShape, frames: int, height: int, width: int, plan: WanPlan, *,
                  device: str = "cuda") -> PeakEstimate:
    """Peak device memory of a Wan run under `plan`: the worst stage's weights on the device + working memory
    (a text encoder on the CPU works there: its working memory is not the device's)."""
    prof = stage_profile(shape, frames, height, width, plan.vae_tiling)
    stages, weights_at, working = {}, {}, {}
    for stage, (work, _) in prof.items():
        if stage == "text" and plan.text_encoder == "cpu" and device != "cpu":
            work = 0
        weights_at[stage] = resident(shape, plan, stage, device)
        stages[stage], working[stage] = weights_at[stage] + work, work
    worst = max(stages, key=stages.get)
    return PeakEstimate(plan, stages[worst], weights_at[worst], stages, working)


def choose_plan(shape: WanShape, frames: int, height: int, width: int, budget_bytes: int, *, device: str = "cuda",
                user_offload: Optional[str] = None) -> tuple[PeakEstimate, list[PeakEstimate]]:
    """The first (fastest) plan whose estimate x SAFETY fits the budget; else the leanest, marked fits=False."""
    tried = []
    for plan in candidate_plans(device, user_offload):
        est = estimate_peak(shape, frames, height, width, plan, device=device)
        est.budget_bytes, est.fits = budget_bytes, est.peak_bytes * SAFETY <= budget_bytes
        tried.append(est)
        if est.fits:
            return est, tried
    return min(tried, key=lambda e: e.peak_bytes), tried


def video_flops(shape: WanShape, frames: int, height: int, width: int, steps: int, cfg: bool = True) -> dict:
    """Counted FLOPs of one video: transformer passes x steps x (2 with guidance) + text encoder (prompt and
    negative) + CLIP + VAE encode + VAE decode."""
    prof = stage_profile(shape, frames, height, width, False)
    passes = 2 if cfg else 1
    step = prof["denoise"][1]
    text = prof["text"][1] * passes
    total = steps * passes * step + text + prof["image"][1] + prof["vae_encode"][1] + prof["decode"][1]
    return {"unet_step": step * passes, "unet_cached_step": step * passes, "unet_passes_per_step": 1,
            "transformer_pass": step, "text_encoder": text, "per_video": total}


def extra_seconds(shape: WanShape, plan: WanPlan, flops: dict, steps: int, pcie_gbps: float,
                  denoise_seconds: float) -> float:
    """Seconds a plan adds to the compute: the text encoder on the CPU (at CPU_TFLOPS, estimated), model
    offload's copies (each component once per video), group offload's copies beyond what the stream hides."""
    s = flops["text_encoder"] / (CPU_TFLOPS * 1e12) if plan.text_encoder == "cpu" else 0.0
    moved = sum(shape.fp8_weights.get(c, b) if plan.fp8 else b for c, b in shape.weights.items()
                if c.startswith("transformer"))
    if plan.offload == "model":
        s += (sum(shape.weights.values()) - moved * 0 + shape.weights["vae"]) / (pcie_gbps * 1e9)
    elif plan.offload in ("group", "sequential"):
        per_pass = moved / len(shape.experts)
        s += max(0.0, steps * flops["unet_step"] / flops["transformer_pass"] * per_pass / (pcie_gbps * 1e9)
                 - denoise_seconds)
    return s


# ----------------------------------------------------------------------------
def apply_plan(pipe, plan: WanPlan, active: Optional[WanPlan], device: str, dtype) -> WanPlan:
    """Set a WanImageToVideoPipeline up for `plan`, in named steps; returns the plan in force (fp8 storage,
    once applied, stays: the weights were rounded)."""
    if active is not None and active.fp8 and not plan.fp8:
        plan = replace(plan, fp8=True)
    if active is None or (active.offload, active.text_encoder) != (plan.offload, plan.text_encoder):
        _place_weights(pipe, plan, active, device)
    _set_vae_tiling(pipe.vae, plan.vae_tiling)
    if plan.fp8 and not (active is not None and active.fp8):
        _store_fp8(pipe, dtype)
    return plan


def _place_weights(pipe, plan: WanPlan, active: Optional[WanPlan], device: str) -> None:
    """Where each component lives: on the device, the text encoder on the CPU, model or group offload."""
    if device == "cpu":  # offload and placement are no-ops on the CPU
        pipe.to("cpu")
        return
    if active is not None and active.offload in ("model", "sequential"):
        pipe.remove_all_hooks()
    if active is not None and active.offload == "group":
        _remove_group_offload(pipe)
    experts = [getattr(pipe, c) for c in ("transformer", "transformer_2") if getattr(pipe, c, None) is not None]
    if plan.offload == "model":
        pipe.enable_model_cpu_offload(device=device)
    elif plan.offload == "sequential":
        pipe.enable_sequential_cpu_offload(device=device)
    elif plan.offload == "group":
        from diffusers.hooks import apply_group_offloading

        for name in ("vae", "image_encoder", "text_encoder"):
            if getattr(pipe, name, None) is not None:
                getattr(pipe, name).to(device)
        for m in experts:
            apply_group_offloading(m, onload_device=device, offload_type="block_level", num_blocks_per_group=1,
                                   use_stream=True)
    else:
        pipe.to(device)
    if plan.text_encoder == "cpu" and plan.offload != "sequential":
        pipe.text_encoder.to("cpu")  # diffusers runs a split pipeline: the embeddings move to the device


def _remove_group_offload(pipe) -> None:
    from diffusers.hooks import HookRegistry

    for c in ("transformer", "transformer_2"):
        m = getattr(pipe, c, None)
        if m is not None:
            registry = HookRegistry.check_if_exists_or_initialize(m)
            for hook in ("group_offloading", "lazy_prefetch_group_offloading", "layer_execution_tracker"):
                registry.remove_hook(hook, recurse=True)


def _set_vae_tiling(vae, on: bool) -> None:
    vae.enable_tiling() if on else vae.disable_tiling()


def _store_fp8(pipe, dtype) -> None:
    import torch

    for c in ("transformer", "transformer_2"):
        m = getattr(pipe, c, None)
        if m is not None:
            m.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=dtype)
