"""Wan's shape for the transformer planner (dit_plan.py): its published configs and its stages' dry runs.

Weights: the published configs (wan_configs below) or a folder's/pipeline's own, built on meta; the VAE
and the CLIP image encoder at fp32, as families/wan.py loads them. Stages, at the run's full size: the
text encoder on 512 tokens, the CLIP image encoder, the VAE encode of the condition video, ONE transformer
pass (WanImageToVideoPipeline runs the conditional and unconditional passes one after the other, so
guidance doubles the FLOPs, not the activations; SDPA is counted fused, no score matrix) and the VAE
decode (with `vae.enable_tiling()`: the tiled decode, whose peak is a tile's). The text encoder goes to
the CPU (UMT5 runs there) and the transformer(s) stream block by block.
"""

from __future__ import annotations

from typing import Optional

from .dit_shapes import DiTShape, Layout, encoder_stage, entry_shapes, run_dtype
from .dryrun import DryRun

TEXT_TOKENS = 512  # the pipeline pads every prompt to 512 tokens
CLIP_TOKENS = 257  # ViT-H/14 at 224 px: 16 x 16 patches + class token



def wan_classes() -> dict:
    import diffusers
    import transformers

    return {"transformer": diffusers.WanTransformer3DModel, "transformer_2": diffusers.WanTransformer3DModel,
            "vae": diffusers.AutoencoderKLWan, "text_encoder": transformers.UMT5EncoderModel,
            "image_encoder": transformers.CLIPVisionModel}


# ----------------------------------------------------------------------------
def _sizes(shape: DiTShape, frames: int, height: int, width: int) -> dict:
    vae = shape.modules["vae"].config
    s = vae.get("scale_factor_spatial") or 8
    t = shape.modules["transformer"].config
    lf, h, w = (frames - 1) // (vae.get("scale_factor_temporal") or 4) + 1, height // s, width // s
    p = t["patch_size"]
    return {"lf": lf, "h": h, "w": w, "tokens": lf // p[0] * (h // p[1]) * (w // p[2]), "z": vae["z_dim"],
            "expand": t["in_channels"] == vae["z_dim"]}  # TI2V: nothing concatenated, per-token timesteps


def _image(shape, frames, height, width, tiling, cfg, **knobs):
    import torch

    enc = shape.modules["image_encoder"]
    if enc is None:
        return 0, 0
    with DryRun() as run:
        enc(torch.empty(1, 3, 224, 224, device="meta"), output_hidden_states=True).hidden_states[-2]
        return run.mode.peak, run.stage_flops()


def _vae_encode(shape, frames, height, width, tiling, cfg, **knobs):
    import torch

    sz, vae = _sizes(shape, frames, height, width), shape.modules["vae"]
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


def _denoise(shape, frames, height, width, tiling, cfg, **knobs):
    import torch

    sz = _sizes(shape, frames, height, width)
    dt, tr = run_dtype(shape), shape.modules["transformer"]
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


def _decode(shape, frames, height, width, tiling, cfg, **knobs):
    import torch

    sz, vae = _sizes(shape, frames, height, width), shape.modules["vae"]
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


def _calls(shape: DiTShape, frames: int, steps: int, cfg: bool, **knobs) -> dict:
    """Per video: the text encoder on the prompt and the negative, the transformer twice a step with guidance."""
    passes = 2 if cfg else 1
    return {"text": passes, "image": 1, "vae_encode": 1, "denoise": steps * passes, "decode": 1}


WAN = Layout(
    components=("transformer", "transformer_2", "text_encoder", "image_encoder", "vae"),
    denoisers=("transformer", "transformer_2"), text_encoders=("text_encoder",),
    stages={"text": (("text_encoder",), encoder_stage(TEXT_TOKENS)), "image": (("image_encoder",), _image),
            "vae_encode": (("vae",), _vae_encode), "denoise": (("transformer", "transformer_2"), _denoise),
            "decode": (("vae",), _decode)},
    calls=_calls, fp32=("vae", "image_encoder"), text_off="cpu", group_level="block", reference="wan_reference")


# ----------------------------------------------------------------------------
# The published component configs of the registry's Wan models (diffusers' folders on the hub). Written from the
# model cards and the diffusers folders' config.json files as known; what could not be checked offline is marked
# "unverified". Shapes only: latents_mean/std do not change a count.
def wan_configs(name: str) -> dict:
    """{"transformer", "transformer_2" (A14B's second expert, else None), "vae", "text_encoder" (UMT5 XXL),
    "image_encoder" (Wan 2.1's CLIP ViT-H/14 vision tower, else None)} for a registry Wan entry's name."""
    t14 = {"patch_size": [1, 2, 2], "num_attention_heads": 40, "attention_head_dim": 128, "in_channels": 36,
           "out_channels": 16, "text_dim": 4096, "freq_dim": 256, "ffn_dim": 13824, "num_layers": 40,
           "cross_attn_norm": True, "qk_norm": "rms_norm_across_heads", "eps": 1e-6, "rope_max_seq_len": 1024}
    vae21 = {"base_dim": 96, "z_dim": 16, "dim_mult": [1, 2, 4, 4], "num_res_blocks": 2,
             "temperal_downsample": [False, True, True], "scale_factor_spatial": 8, "scale_factor_temporal": 4}
    umt5 = {"vocab_size": 256384, "d_model": 4096, "d_kv": 64, "d_ff": 10240, "num_layers": 24, "num_heads": 64,
            "relative_attention_num_buckets": 32, "relative_attention_max_distance": 128,
            "feed_forward_proj": "gated-gelu", "tie_word_embeddings": False}
    clip = {"hidden_size": 1280, "intermediate_size": 5120, "num_hidden_layers": 32, "num_attention_heads": 16,
            "image_size": 224, "patch_size": 14, "hidden_act": "gelu", "projection_dim": 1024}
    if name.startswith("wan2.1"):  # I2V 14B 480p and 720p share every shape
        return {"transformer": t14 | {"image_dim": 1280, "added_kv_proj_dim": 5120}, "transformer_2": None,
                "vae": vae21, "text_encoder": umt5, "image_encoder": clip}
    if name == "wan2.2-i2v-a14b":  # two 14B experts (high / low noise), no CLIP: the image goes in through the VAE
        return {"transformer": t14, "transformer_2": dict(t14), "vae": vae21, "text_encoder": umt5,
                "image_encoder": None}
    if name == "wan2.2-ti2v-5b":
        # unverified offline: in/out_channels 12 (3 x patch 2 x 2: the patchified pixels), decoder_base_dim 256 (the 2.2
        # VAE's wider decoder) and the 5B's freq_dim/eps (taken as the 14B's)
        return {"transformer": t14 | {"num_attention_heads": 24, "ffn_dim": 14336, "num_layers": 30,
                                      "in_channels": 48, "out_channels": 48},
                "transformer_2": None,
                "vae": {"base_dim": 160, "decoder_base_dim": 256, "z_dim": 48, "dim_mult": [1, 2, 4, 4],
                        "num_res_blocks": 2, "temperal_downsample": [False, True, True], "is_residual": True,
                        "in_channels": 12, "out_channels": 12,
                        "patch_size": 2, "scale_factor_spatial": 16, "scale_factor_temporal": 4,
                        "latents_mean": [0.0] * 48, "latents_std": [1.0] * 48},
                "text_encoder": umt5, "image_encoder": None}
    raise KeyError(name)


def apply_plan(pipe, plan, active, device: str, dtype):
    """dit_plan.apply_plan with Wan's layout (what families/wan.py's apply_plan runs)."""
    from .dit_plan import apply_plan as apply

    return apply(pipe, plan, active, device, dtype, WAN)


wan_shape = entry_shapes(WAN, wan_classes, wan_configs, "Wan", maxsize=8)
