"""What one of ComfyUI's Wan files is, from its header alone (models/wan_files.py assembles them).

A .safetensors file's JSON header, or a GGUF file's tensor infos (with ComfyUI-GGUF's `comfy.gguf.orig_shape.*`
arrays for tensors it stores reshaped), give the keys and shapes; diffusers' own marker keys say transformer or
VAE, the shapes give their diffusers configs (heads: the width over 128, as ComfyUI's model detection takes it),
and the channels and the file name which model: Wan 2.1 I2V (480p/720p), a Wan 2.2 I2V A14B expert (high or low
noise), Wan 2.2 TI2V-5B. UMT5 and CLIP vision files are recognised (and listed) but not converted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ..errors import ModelUnavailable
from .single_file import read_header

WAN_SUFFIXES = (".safetensors", ".gguf")
HEAD_DIM = 128  # every Wan model's attention head width; ComfyUI's model detection assumes it too (heads = dim // 128)


@dataclass
class WanFile:
    """What one ComfyUI Wan file is, from its header."""

    path: Path
    kind: str  # "transformer" | "vae" | "text_encoder" | "image_encoder"
    label: str
    format: str = "safetensors"  # or "gguf"
    model: Optional[str] = None  # transformer: the registry entry whose layout it has
    expert: Optional[str] = None  # A14B: "high" or "low" (noise)
    version: Optional[str] = None  # vae: "2.1" | "2.2"
    config: dict = field(default_factory=dict)  # transformer / 2.1 VAE: the diffusers config
    converts: bool = True  # whether diffusers has a converter for it (else its repo's component is used)


# --------------------------------------------------------------------------- headers
def read_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """{key: shape} of a .safetensors or .gguf file, from its header (GGUF: the tensor infos, logical order)."""
    if path.suffix.lower() != ".gguf":
        return {k: s for k, (_d, s) in read_header(path)[0].items()}
    try:
        from gguf import GGUFReader
    except ImportError as e:  # pragma: no cover - gguf is a dependency
        raise ModelUnavailable(f"{path} is a GGUF file and the gguf package is missing: pip install gguf.") from e
    try:
        reader = GGUFReader(str(path))  # memory-maps the file; tensor data is not read
    except (OSError, ValueError) as e:
        raise ModelUnavailable(f"{path} is not a readable GGUF file ({e}).") from e
    shapes = {t.name: tuple(int(n) for n in reversed(t.shape.tolist())) for t in reader.tensors}
    return {**shapes, **gguf_orig_shapes(reader)}


ORIG_SHAPE = "comfy.gguf.orig_shape."  # ComfyUI-GGUF's metadata for tensors stored reshaped (GGUF holds <= 4 dims)


def gguf_orig_shapes(reader) -> dict[str, tuple[int, ...]]:
    """{tensor: its shape} for the tensors a GGUF file stores reshaped (Wan's 5-D patch embedding, in city96's
    files), from their `comfy.gguf.orig_shape.NAME` arrays; diffusers' GGUF loader does not read these."""
    out = {}
    for name, fld in reader.fields.items():
        if name.startswith(ORIG_SHAPE):
            out[name[len(ORIG_SHAPE):]] = tuple(int(fld.parts[i][0]) for i in fld.data)
    return out


def _strip(shapes: dict) -> dict:
    prefix = "model.diffusion_model."
    return {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in shapes.items()}


def looks_like_wan_file(path: Path) -> bool:
    """Whether a file's header is one of ComfyUI's Wan files (transformer, VAE, UMT5, CLIP vision)."""
    try:
        inspect_wan_file(path)
    except ModelUnavailable:
        return False
    return True


def inspect_wan_file(path: str | Path) -> WanFile:
    """What a Wan file is, from its header; ModelUnavailable (one line) when it is none or cannot run."""
    path = Path(path).expanduser()
    shapes = _strip(read_shapes(path))
    fmt = "gguf" if path.suffix.lower() == ".gguf" else "safetensors"
    if "head.modulation" in shapes:  # diffusers' own marker of a Wan transformer (CHECKPOINT_KEY_NAMES["wan"])
        return _transformer(path, shapes, fmt)
    if "decoder.middle.0.residual.0.gamma" in shapes:  # ... and of a Wan VAE
        return _vae(path, shapes)
    if any(k.startswith("encoder.block.0.layer.0.SelfAttention.") for k in shapes):
        return WanFile(path, "text_encoder", "UMT5-XXL text encoder (ComfyUI layout; no converter: its Wan repo's "
                       "text_encoder and tokenizer are used)", fmt, converts=False)
    if any(k.startswith(("vision_model.", "visual.")) for k in shapes):
        return WanFile(path, "image_encoder", "CLIP vision encoder (ComfyUI layout; no converter: its Wan repo's "
                       "image_encoder is used)", fmt, converts=False)
    raise ModelUnavailable(f"{path} is not a Wan file ComfyUI keeps (transformer, VAE, UMT5, CLIP vision): "
                           f"first keys {', '.join(sorted(shapes)[:3]) or 'none'}.")


def _transformer(path: Path, shapes: dict, fmt: str) -> WanFile:
    if any(k.endswith(".scale_weight") or k == "scaled_fp8" for k in shapes):
        raise ModelUnavailable(f"{path} holds ComfyUI's scaled fp8 weights, which diffusers cannot load: use the "
                               "fp16/bf16 file of the same model or a GGUF one.")
    if "img_emb.emb_pos" in shapes:
        raise ModelUnavailable(f"{path} is Wan 2.1 FLF2V, whose image position embedding diffusers' converter does "
                               "not map: use --model with the Wan-AI FLF2V diffusers repo instead.")
    if any(k.startswith(("vace_", "motion_encoder.", "face_adapter.")) for k in shapes):
        raise ModelUnavailable(f"{path} is a Wan VACE/Animate transformer; stillmotion runs image-to-video Wan only.")
    inner, in_ch, *patch = shapes["patch_embedding.weight"]
    patch = list(patch)
    layers = 1 + max(int(k.split(".")[1]) for k in shapes if k.startswith("blocks."))
    out_ch = shapes["head.head.weight"][0] // (patch[0] * patch[1] * patch[2])
    image_dim = shapes["img_emb.proj.0.weight"][0] if "img_emb.proj.0.weight" in shapes else None
    config = {
        "patch_size": patch,
        "num_attention_heads": max(1, inner // HEAD_DIM),
        "attention_head_dim": HEAD_DIM if inner >= HEAD_DIM else inner,
        "in_channels": in_ch,
        "out_channels": out_ch,
        "text_dim": shapes["text_embedding.0.weight"][1],
        "freq_dim": shapes["time_embedding.0.weight"][1],
        "ffn_dim": shapes["blocks.0.ffn.0.weight"][0],
        "num_layers": layers,
        "cross_attn_norm": "blocks.0.norm3.weight" in shapes,
        "qk_norm": "rms_norm_across_heads" if "blocks.0.self_attn.norm_q.weight" in shapes else None,
        "eps": 1e-6,
        "image_dim": image_dim,
        "added_kv_proj_dim": shapes["blocks.0.cross_attn.k_img.weight"][0] if image_dim else None,
        "rope_max_seq_len": 1024,
        "pos_embed_seq_len": None,
    }
    stem = path.name.lower()
    size = f"{inner}-wide, {layers} blocks"
    expert = None
    if in_ch == 2 * out_ch + 4 and image_dim:
        model = "wan2.1-i2v-720p" if "720" in stem else "wan2.1-i2v-480p"
        label = f"Wan 2.1 I2V transformer ({'720p' if '720' in stem else '480p'}, {size})"
    elif in_ch == 2 * out_ch + 4:
        model = "wan2.2-i2v-a14b"
        said = re.search(r"(high|low)[_\- ]?noise", stem) or re.search(r"(high|low)", stem)
        expert = said[1] if said else None
        if expert is None:
            raise ModelUnavailable(f"{path} is a Wan 2.2 I2V A14B expert, but its name says neither high_noise nor "
                                   "low_noise: keep ComfyUI's names (wan2.2_i2v_high_noise_14B_..., ..._low_noise_...).")
        label = f"Wan 2.2 I2V A14B {expert}-noise expert ({size})"
    elif in_ch == out_ch == 48:
        model, label = "wan2.2-ti2v-5b", f"Wan 2.2 TI2V-5B transformer ({size})"
    else:
        raise ModelUnavailable(f"{path} is a Wan text-to-video transformer ({in_ch} input channels); stillmotion runs "
                               "image-to-video Wan (2.1 I2V, 2.2 I2V A14B, 2.2 TI2V-5B).")
    if fmt == "gguf":
        label += ", GGUF"
    return WanFile(path, "transformer", label, fmt, model=model, expert=expert, config=config)


def _vae(path: Path, shapes: dict) -> WanFile:
    z = shapes["conv1.weight"][0] // 2 if "conv1.weight" in shapes else 0
    if z == 48 or any(".downsamples.0.downsamples." in k for k in shapes):
        return WanFile(path, "vae", "Wan 2.2 VAE (no converter in diffusers: its Wan repo's vae is used)",
                       version="2.2", converts=False)
    # the 2.1 layout: encoder.downsamples.{i} is a residual block (.residual.*) or a resample (.resample.*)
    blocks = sorted({int(k.split(".")[2]) for k in shapes if k.startswith("encoder.downsamples.")})
    resample = [i for i in blocks if any(k.startswith(f"encoder.downsamples.{i}.resample.") for k in shapes)]
    per_level = resample[0] if resample else len(blocks)
    base = shapes["encoder.conv1.weight"][0]
    outs = [shapes[f"encoder.downsamples.{i}.residual.6.weight"][0] for i in blocks if i not in resample]
    dim_mult = [outs[j * per_level] // base for j in range(len(outs) // max(per_level, 1))]
    temporal = [f"encoder.downsamples.{i}.time_conv.weight" in shapes for i in resample]
    if per_level != 2 or len(dim_mult) != 4:  # convert_wan_vae_to_diffusers hard-codes the real decoder's indices
        raise ModelUnavailable(f"{path} is a Wan 2.1 VAE with {per_level} residual blocks per level and {len(dim_mult)} "
                               "levels; diffusers' converter handles Wan's own layout (2 and 4) only.")
    config = {"base_dim": base, "z_dim": z, "dim_mult": dim_mult, "num_res_blocks": per_level,
              "attn_scales": [], "temperal_downsample": temporal, "dropout": 0.0}
    return WanFile(path, "vae", f"Wan 2.1 VAE (z {z}, base {base})", version="2.1", config=config)
