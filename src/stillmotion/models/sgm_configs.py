"""Stability's SGM single-file layout for SVD: its key prefixes, and diffusers configs read from its shapes.

Each `*_config_from(path, shapes)` reads a component's sizes from the tensor
shapes of a file's header ({key: (dtype, shape)}) and checks SVD's structure
on the way (8 input channels, temporal layers, 4 latent channels, ...); a
file that does not fit raises ModelUnavailable saying what differs.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Iterable

from ..errors import ModelUnavailable
from .small_svd import unet_block_types

UNET = "model.diffusion_model."
DECODER = "first_stage_model.decoder."
ENCODER_COND = "conditioner.embedders.3.encoder."  # encoder.*, quant_conv.* (plus an unused decoder)
ENCODER_FIRST = "first_stage_model."  # encoder.*, quant_conv.*
CLIP = "conditioner.embedders.0.open_clip.model.visual."
OPEN_CLIP = "conditioner.embedders.0.open_clip.model."

EXPECTED = "a Stable Video Diffusion single-file checkpoint (Stability's SGM layout: svd.safetensors, svd_xt.safetensors, ...)"
SVD_HEAD_DIM = 64  # SVD's UNet: num_head_channels=64
CLIP_HEAD_DIM = 80  # OpenCLIP ViT-H/14: 16 heads of 80 at width 1280

# Keys these files carry that SVD does not use, ignored by name.
IGNORED_PREFIXES = (
    "model_ema.",  # EMA copies
    "denoiser.",  # sigma tables (buffers; SVD's scheduler config comes from the package)
    "conditioner.embedders.3.encoder.decoder.",  # the conditioning autoencoder's unused decoder
    "conditioner.embedders.3.encoder.post_quant_conv.",
    "first_stage_model.loss.",
)


_CLIP_LAYER = re.compile(re.escape(CLIP) + r"transformer\.resblocks\.(\d+)\.")


def _shape(path, shapes, key, what) -> tuple[int, ...]:
    if key not in shapes:
        raise ModelUnavailable(f"{path} is not {EXPECTED}: missing key {key} ({what}).")
    return shapes[key][1]


def unfit(path, msg) -> ModelUnavailable:
    return ModelUnavailable(f"{path}: its shapes do not fit SVD's architecture: {msg}; expected {EXPECTED}.")


def unet_config_from(path: Path, shapes: dict) -> dict:
    """UNetSpatioTemporalConditionModel config read from the UNet's shapes (SVD's structure checked)."""
    keys = set(shapes)
    conv_in = _shape(path, shapes, UNET + "input_blocks.0.0.weight", "UNet input convolution")
    mc, in_ch = conv_in[0], conv_in[1]
    out_ch = _shape(path, shapes, UNET + "out.2.weight", "UNet output convolution")[0]
    temb = _shape(path, shapes, UNET + "time_embed.0.weight", "UNet time embedding")[0]
    adm = _shape(path, shapes, UNET + "label_emb.0.0.weight", "UNet added-time embedding")[1]
    if in_ch != 8 or out_ch != 4:
        raise unfit(path, f"{UNET}input_blocks.0.0.weight takes {in_ch} channels and out.2 gives {out_ch}; SVD's UNet takes 8 (noise + image latents) and gives 4")
    if temb != 4 * mc:
        raise unfit(path, f"time embedding width {temb} is not 4 x {mc}")
    if adm % 3:
        raise unfit(path, f"label_emb takes {adm} inputs, not 3 time ids (fps, motion bucket, noise augmentation)")
    if not any(k.startswith(UNET) and ".time_stack." in k for k in keys):
        raise unfit(path, "the UNet has no temporal layers (time_stack): an image model, not a video model")
    widths, attention, depths, res_counts = [], [], [], []
    count, level_attn, width = 0, None, mc
    i = 1
    while any(k.startswith(f"{UNET}input_blocks.{i}.") for k in keys):
        pre = f"{UNET}input_blocks.{i}."
        if pre + "0.op.weight" in keys:
            widths.append(width)
            attention.append(bool(level_attn))
            res_counts.append(count)
            count, level_attn = 0, None
        else:
            width = _shape(path, shapes, pre + "0.out_layers.3.weight", "UNet res block")[0]
            has = pre + "1.proj_in.weight" in keys
            level_attn = has if level_attn is None else level_attn
            if has != level_attn:
                raise unfit(path, f"input_blocks.{i} differs from its level in having attention")
            if has:
                block_norm = re.compile(re.escape(pre) + r"1\.transformer_blocks\.\d+\.norm1\.weight")
                depths.append(sum(1 for k in keys if block_norm.fullmatch(k)))
            count += 1
        i += 1
    widths.append(width)
    attention.append(bool(level_attn))
    res_counts.append(count)
    if len(set(res_counts)) != 1 or res_counts[0] < 1:
        raise unfit(path, f"res blocks per level {res_counts} are not the same at every level")
    if depths and len(set(depths)) != 1:
        raise unfit(path, f"transformer depths {depths} differ between levels")
    ctx_keys = sorted(k for k in keys if k.startswith(UNET) and k.endswith("transformer_blocks.0.attn2.to_k.weight"))
    if not ctx_keys:
        raise unfit(path, "the UNet has no cross-attention")
    context = shapes[ctx_keys[0]][1][1]
    down, up = unet_block_types(attention)
    return {
        "sample_size": 96,
        "in_channels": in_ch,
        "out_channels": out_ch,
        "down_block_types": list(down),
        "up_block_types": list(up),
        "block_out_channels": widths,
        "addition_time_embed_dim": adm // 3,
        "projection_class_embeddings_input_dim": adm,
        "layers_per_block": res_counts[0],
        "cross_attention_dim": context,
        "transformer_layers_per_block": depths[0] if depths else 1,
        "num_attention_heads": [max(1, w // SVD_HEAD_DIM) for w in widths],
    }


def encoder_prefix(keys: Iterable[str]) -> str:
    keys = set(keys)
    return ENCODER_COND if any(k.startswith(ENCODER_COND + "encoder.") for k in keys) else ENCODER_FIRST


def vae_config_from(path: Path, shapes: dict, kind: str) -> dict:
    keys = set(shapes)
    enc = encoder_prefix(keys) + "encoder."
    in_ch = _shape(path, shapes, enc + "conv_in.weight", "VAE encoder input")[1]
    level = re.compile(re.escape(enc) + r"down\.(\d+)\.")
    levels = sorted({int(m.group(1)) for k in keys if (m := level.match(k))})
    widths = [_shape(path, shapes, f"{enc}down.{i}.block.0.conv1.weight", "VAE encoder block")[0] for i in levels]
    block = re.compile(re.escape(enc) + r"down\.0\.block\.(\d+)\.")
    layers = len({m.group(1) for k in keys if (m := block.match(k))})
    latent = _shape(path, shapes, DECODER + "conv_in.weight", "VAE decoder input")[1]
    out_ch = _shape(path, shapes, DECODER + "conv_out.weight", "VAE decoder output")[0]
    z = _shape(path, shapes, enc + "conv_out.weight", "VAE encoder output")[0]
    if z != 2 * latent:
        raise unfit(path, f"the VAE encoder gives {z} channels, not mean and log-variance of the decoder's {latent}")
    if latent != 4:
        raise unfit(path, f"the VAE has {latent} latent channels; SVD's has 4")
    cfg = {
        "in_channels": in_ch,
        "out_channels": out_ch,
        "down_block_types": ["DownEncoderBlock2D"] * len(widths),
        "block_out_channels": widths,
        "layers_per_block": layers,
        "latent_channels": latent,
        "sample_size": 768,
        "scaling_factor": 0.18215,
        "force_upcast": True,
    }
    if kind == "image":
        cfg.update(
            up_block_types=["UpDecoderBlock2D"] * len(widths),
            act_fn="silu",
            norm_num_groups=32,
            use_quant_conv=True,
            use_post_quant_conv=ENCODER_FIRST + "post_quant_conv.weight" in keys,
        )
    return cfg


def clip_config_from(path: Path, shapes: dict) -> dict:
    keys = set(shapes)
    hidden = _shape(path, shapes, CLIP + "class_embedding", "image encoder class embedding")[0]
    patch = _shape(path, shapes, CLIP + "conv1.weight", "image encoder patch embedding")[-1]
    positions = _shape(path, shapes, CLIP + "positional_embedding", "image encoder positions")[0]
    side = math.isqrt(positions - 1)
    if side * side != positions - 1:
        raise unfit(path, f"{positions} image-encoder positions are not a square grid plus a class token")
    layers = len({m.group(1) for k in keys if (m := _CLIP_LAYER.match(k))})
    inter = _shape(path, shapes, CLIP + "transformer.resblocks.0.mlp.c_fc.weight", "image encoder MLP")[0]
    proj = _shape(path, shapes, CLIP + "proj", "image encoder projection")
    heads = hidden // CLIP_HEAD_DIM if hidden % CLIP_HEAD_DIM == 0 else max(1, hidden // 64)
    return {
        "hidden_size": hidden,
        "intermediate_size": inter,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "projection_dim": proj[1],
        "image_size": side * patch,
        "patch_size": patch,
        "hidden_act": "gelu",
        "layer_norm_eps": 1e-5,
    }
