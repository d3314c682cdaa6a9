"""Stage profiles: the working memory and FLOPs of each stage of one run, and their cache.

The same calls the engine makes (image encoder, VAE encoder, one UNet step with
classifier-free guidance, the VAE decoder chunk by chunk) run as a dry run
(dryrun.py) on a model's shape (shapes.py), so frames, size, dtype, decode
chunk and forward chunking act on the counts exactly as they act on the real
run. The planner (memory.py) adds the weights on the device; `stillmotion
estimate` and the time estimator (timing.py) use the FLOPs. The tests hold the
counted memory against measured CPU peaks of real runs.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Optional

from ..util import quiet_diffusers
from .dryrun import DryRun
from .shapes import ModelShape, decode_kwargs, vae_upcast


@dataclass
class StageProfile:
    """Working memory (peak live bytes beyond weights) and FLOPs of each stage of one run."""

    working: dict
    flops: dict


def profile_stages(shape: ModelShape, frames: int, height: int, width: int, *, decode_chunk: int,
                   forward_chunking: bool = False, cfg: bool = True, stages=("encode", "denoise", "decode"),
                   keyframe: bool = False) -> StageProfile:
    """Dry-run the engine's calls on `shape` and return per-stage working memory and FLOPs.

    Each stage is cached on what it depends on, so trying many plans costs a few dry runs; the results
    are also kept on disk (see ProfileCache), so a new process planning the same model and size (every
    `stillmotion generate` on an 8 GB card tries ~28 plans: ~16 s of dry runs for SVD-XT) pays nothing.

    keyframe: a run with an end image (keyframes.py): both images encoded, both conditionings held
    through denoising (the decode stage is the same; "denoise" FLOPs stay those of one UNet pass).
    """
    cache = ProfileCache.of(shape)
    working, flops = {}, {}
    for stage in stages:
        param = {"encode": None, "denoise": forward_chunking, "decode": decode_chunk}[stage]
        kf = keyframe and stage != "decode"
        key = f"{stage}|{frames}|{height}|{width}|{int(cfg)}|{param}" + ("|keyframe" if kf else "")
        if key not in cache.entries:
            with quiet_diffusers():
                cache.put(key, _STAGES[stage](shape, frames, height, width, cfg, param, keyframe=kf))
        working[stage], flops[stage] = cache.entries[key]
    return StageProfile(working, flops)


def unet_step_flops(shape: ModelShape, frames: int, height: int, width: int, cfg: bool,
                    interval: Optional[int]) -> tuple[int, int]:
    """(FLOPs of a full UNet step, FLOPs of a cached DeepCache step) from a dry run of the real UNet code
    (kept in the shape's profile cache, on disk, like the stage profiles)."""
    cache = ProfileCache.of(shape)
    key = f"deepcache-step-flops|{frames}|{height}|{width}|{int(cfg)}|{max(2, interval or 2)}"
    if key not in cache.entries:
        cache.put(key, _count_unet_steps(shape, frames, height, width, cfg, interval))
    return cache.entries[key]


class ProfileCache:
    """Stage profiles of one model shape: in memory, and in `<cache>/profiles/<key>.json` across processes.

    The key hashes the three components' configs, the dtype, and the versions of torch, diffusers,
    transformers and of this counting code (FORMAT), so a change to any of them counts afresh. A file
    that cannot be read is ignored (and rewritten); writes are atomic.
    """

    FORMAT = 1

    def __init__(self, path):
        self.path = path
        self.entries: dict = {}
        try:
            data = json.loads(path.read_text())
            if data.get("format") == self.FORMAT:
                self.entries = {k: (int(v[0]), int(v[1])) for k, v in data["entries"].items()}
        except (OSError, ValueError, KeyError, TypeError, IndexError):
            pass

    @classmethod
    def of(cls, shape: ModelShape) -> "ProfileCache":
        """The shape's cache, opened on first use and kept on the shape itself."""
        if shape.profiles is None:
            from ..models.paths import cache_root

            shape.profiles = cls(cache_root() / "profiles" / f"{shape_key(shape)}.json")
        return shape.profiles

    def put(self, key: str, value) -> None:
        from ..util import atomic_write

        self.entries[key] = value
        try:
            atomic_write(self.path, json.dumps({"format": self.FORMAT, "entries": self.entries}, sort_keys=True))
        except OSError:  # a read-only cache only costs the next process its dry runs
            pass


def shape_key(shape: ModelShape) -> str:
    """A stable name for what a dry run of `shape` depends on."""
    import diffusers
    import torch
    import transformers

    def config(module) -> dict:  # without private keys ("_use_default_values" comes in set order)
        c = module.config
        return {k: v for k, v in (c.items() if hasattr(c, "items") else c.to_dict().items()) if not k.startswith("_")}

    attention = sorted({type(p).__name__ for p in shape.unet.attn_processors.values()})
    blob = json.dumps({"unet": config(shape.unet), "attention": attention, "vae": config(shape.vae),
                       "clip": config(shape.image_encoder),
                       "dtype_bytes": shape.dtype_bytes, "format": ProfileCache.FORMAT, "torch": torch.__version__,
                       "diffusers": diffusers.__version__, "transformers": transformers.__version__},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


# ----------------------------------------------------------------------------
# the stages, as the engine runs them
def _dtype(shape: ModelShape):
    import torch

    return next(shape.unet.parameters()).dtype if shape.dtype_bytes == 2 else torch.float32


def _persistent(shape: ModelShape, frames, height, width, cfg):
    """What lives through denoising and decoding: embeddings, image latents (x2 with CFG), latents."""
    import torch

    dt, b = _dtype(shape), 2 if cfg else 1
    lat = (frames, shape.vae.config.latent_channels, height // 8, width // 8)
    return (torch.empty(b, 1, shape.image_encoder.config.projection_dim, dtype=dt, device="meta"),
            torch.empty(b, *lat, dtype=dt, device="meta"),
            torch.empty(1, *lat, dtype=dt, device="meta"))


def _encode_stage(shape: ModelShape, frames, height, width, cfg, _, keyframe: bool = False):
    import torch

    dt, vae = _dtype(shape), shape.vae
    vdt = torch.float32 if vae_upcast(shape) else dt
    vae.to(vdt)  # outside the dry run: the weights are not working memory (estimate_peak() adds the upcast copy)
    try:
        with DryRun() as run:
            held = []  # keyframe: the first image's conditioning stays while the end image is encoded
            for _image in range(2 if keyframe else 1):
                emb = shape.image_encoder(torch.empty(1, 3, 224, 224, dtype=dt, device="meta")).image_embeds
                emb = torch.cat([torch.zeros_like(emb), emb]) if cfg else emb
                img = torch.empty(1, 3, height, width, dtype=torch.float32, device="meta").to(vdt)
                lat = vae.encode(img).latent_dist.mode()
                lat = torch.cat([torch.zeros_like(lat), lat]) if cfg else lat
                lat = lat.to(dt).unsqueeze(1).repeat(1, frames, 1, 1, 1)
                if keyframe:  # the clean latent the other direction's last frame is set to
                    held += [emb, lat, vae.encode(img).latent_dist.mode()]
            return run.mode.peak, run.stage_flops()
    finally:
        vae.to(dt)


def _denoise_stage(shape: ModelShape, frames, height, width, cfg, forward_chunking, keyframe: bool = False):
    import torch

    dt, unet = _dtype(shape), shape.unet
    set_forward_chunking(unet, forward_chunking)
    try:
        with DryRun() as run:
            emb, image_latents, latents = _persistent(shape, frames, height, width, cfg)
            if keyframe:  # the end image's conditioning, its clean latent and the re-noising noise (float32)
                held = (*_persistent(shape, frames, height, width, cfg)[:2],
                        torch.empty(latents.shape, dtype=torch.float32, device="meta"),
                        torch.empty(2, *latents.shape[2:], dtype=latents.dtype, device="meta"))
            inp = torch.cat([latents] * 2) if cfg else latents
            inp = torch.cat([inp * 1.0, image_latents], dim=2)
            t = torch.empty((), dtype=torch.float32, device="meta")
            ids = torch.empty(inp.shape[0], 3, dtype=dt, device="meta")
            noise_pred = unet(inp, t, encoder_hidden_states=emb, added_time_ids=ids, return_dict=False)[0]
            if cfg:
                u, c = noise_pred.chunk(2)
                noise_pred = u + (c - u) * 1.0
            latents = latents + noise_pred * 1.0  # the scheduler step's temporaries
            return run.mode.peak, run.stage_flops()  # FLOPs of one step
    finally:
        set_forward_chunking(unet, False)


def _decode_stage(shape: ModelShape, frames, height, width, cfg, chunk, keyframe: bool = False):
    import torch

    vae = shape.vae
    with DryRun() as run:
        latents = _persistent(shape, frames, height, width, cfg)[2]
        lat = latents.to(vae.dtype).flatten(0, 1) * (1 / vae.config.scaling_factor)
        out = []
        for i in range(0, frames, chunk):
            part = lat[i : i + chunk]
            out.append(vae.decode(part, **decode_kwargs(vae, part.shape[0])).sample)
        video = torch.cat(out, dim=0)
        del out
        video = video.reshape(-1, frames, *video.shape[1:]).permute(0, 2, 1, 3, 4).float()
        video = (video / 2 + 0.5).clamp(0, 1)  # video_processor.postprocess_video, on the device
        return run.mode.peak, run.stage_flops()


_STAGES = {"encode": _encode_stage, "denoise": _denoise_stage, "decode": _decode_stage}


def _count_unet_steps(shape: ModelShape, frames: int, height: int, width: int, cfg: bool,
                      interval: Optional[int]) -> tuple[int, int]:
    import torch

    from .speed import DeepCache

    dt, unet = _dtype(shape), shape.unet
    emb, image_latents, latents = _persistent(shape, frames, height, width, cfg)
    inp = torch.cat([torch.cat([latents] * 2) if cfg else latents, image_latents], dim=2)  # as _denoise_stage feeds it
    args = (inp, torch.empty((), dtype=torch.float32, device="meta"))
    kw = dict(encoder_hidden_states=emb, added_time_ids=torch.empty(inp.shape[0], 3, dtype=dt, device="meta"),
              return_dict=False)
    out = []
    with DeepCache(unet, max(2, interval or 2)):
        for _ in range(2):  # step 0 is full, step 1 is cached
            with DryRun() as run:
                unet(*args, **kw)
                out.append(run.stage_flops())
    return out[0], out[1]


def set_forward_chunking(unet, on: bool) -> None:
    """Feed-forward chunking on or off (diffusers has enable_forward_chunking but no way back)."""
    for m in unet.modules():
        if hasattr(m, "set_chunk_feed_forward"):
            m.set_chunk_feed_forward(chunk_size=1 if on else None, dim=0)
