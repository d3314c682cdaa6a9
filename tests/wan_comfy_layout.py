"""Tiny Wan models written the way ComfyUI keeps real ones: split files in the original Wan code's key layout
(Comfy-Org's repackaged files), a GGUF transformer, and the Wan diffusers repo in a Hugging Face cache for the
components diffusers has no converter for.

The original keys are diffusers' own conversion map run backwards: `convert_wan_transformer_to_diffusers` and
`convert_wan_vae_to_diffusers` in diffusers/loaders/single_file_utils.py (0.42.1) map original -> diffusers;
`to_original_*` below invert them, and `check_inverse` runs diffusers' forward map over the result and requires
exactly the diffusers keys back, so a wrong inversion fails here, not silently in a comparison.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np

# diffusers' transformer rename table (TRANSFORMER_KEYS_RENAME_DICT), inverted; applied in this order
_TRANSFORMER_INVERSE = [
    ("condition_embedder.time_embedder.linear_1", "time_embedding.0"),
    ("condition_embedder.time_embedder.linear_2", "time_embedding.2"),
    ("condition_embedder.text_embedder.linear_1", "text_embedding.0"),
    ("condition_embedder.text_embedder.linear_2", "text_embedding.2"),
    ("condition_embedder.time_proj", "time_projection.1"),
    ("condition_embedder.image_embedder.norm1", "img_emb.proj.0"),
    ("condition_embedder.image_embedder.ff.net.0.proj", "img_emb.proj.1"),
    ("condition_embedder.image_embedder.ff.net.2", "img_emb.proj.3"),
    ("condition_embedder.image_embedder.norm2", "img_emb.proj.4"),
    ("attn1", "self_attn"),
    ("attn2", "cross_attn"),
    (".to_out.0.", ".o."),
    (".to_q.", ".q."),
    (".to_k.", ".k."),
    (".to_v.", ".v."),
    (".add_k_proj.", ".k_img."),
    (".add_v_proj.", ".v_img."),
    (".norm_added_k.", ".norm_k_img."),
    ("ffn.net.0.proj", "ffn.0"),
    ("ffn.net.2", "ffn.2"),
    # diffusers swaps the original norm2 / norm3 (its "placeholder" hack): swap back
    ("norm2", "norm__swap"),
    ("norm3", "norm2"),
    ("norm__swap", "norm3"),
    ("proj_out", "head.head"),
]


def to_original_transformer(state: dict) -> dict:
    out = {}
    for key, value in state.items():
        if key == "scale_shift_table":
            new = "head.modulation"
        else:
            new = key.replace(".scale_shift_table", ".modulation")
            for ours, theirs in _TRANSFORMER_INVERSE:
                new = new.replace(ours, theirs)
        out[new] = value
    return out


_RESIDUAL = {"norm1.gamma": "residual.0.gamma", "conv1.weight": "residual.2.weight", "conv1.bias": "residual.2.bias",
             "norm2.gamma": "residual.3.gamma", "conv2.weight": "residual.6.weight", "conv2.bias": "residual.6.bias",
             "conv_shortcut.weight": "shortcut.weight", "conv_shortcut.bias": "shortcut.bias"}


def to_original_vae(state: dict) -> dict:
    """The Wan 2.1 VAE layout (2 residual blocks per level, 4 levels: what diffusers' converter handles)."""
    out = {}
    for key, value in state.items():
        new = key
        m = re.match(r"(encoder|decoder)\.mid_block\.resnets\.(\d)\.(.+)$", key)
        a = re.match(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.+)$", key)
        d = re.match(r"encoder\.down_blocks\.(\d+)\.(.+)$", key)
        u = re.match(r"decoder\.up_blocks\.(\d)\.resnets\.(\d)\.(.+)$", key)
        s = re.match(r"decoder\.up_blocks\.(\d)\.upsamplers\.0\.(.+)$", key)
        if m:
            new = f"{m[1]}.middle.{2 * int(m[2])}.{_RESIDUAL[m[3]]}"
        elif a:
            new = f"{a[1]}.middle.1.{a[2]}"
        elif key.startswith(("encoder.norm_out.", "decoder.norm_out.")):
            new = key.replace("norm_out.gamma", "head.0.gamma")
        elif key.startswith(("encoder.conv_out.", "decoder.conv_out.")):
            new = key.replace("conv_out.", "head.2.")
        elif key.startswith(("encoder.conv_in.", "decoder.conv_in.")):
            new = key.replace("conv_in.", "conv1.")
        elif key.startswith("quant_conv."):
            new = key.replace("quant_conv.", "conv1.")
        elif key.startswith("post_quant_conv."):
            new = key.replace("post_quant_conv.", "conv2.")
        elif d:
            rest = _RESIDUAL.get(d[2], d[2])
            new = f"encoder.downsamples.{d[1]}.{rest}"
        elif u:
            block, res, rest = int(u[1]), int(u[2]), u[3]
            if rest.startswith("conv_shortcut."):
                assert (block, res) == (1, 0), key  # the only shortcut diffusers' converter places
                new = "decoder.upsamples.4." + rest.replace("conv_shortcut.", "shortcut.")
            else:
                new = f"decoder.upsamples.{4 * block + res}.{_RESIDUAL[rest]}"
        elif s:
            new = f"decoder.upsamples.{4 * int(s[1]) + 3}.{s[2]}"
        out[new] = value
    return out


def check_inverse(original: dict, diffusers_state: dict, kind: str) -> None:
    """diffusers' forward converter must give back exactly the diffusers keys (and the same tensors)."""
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers, convert_wan_vae_to_diffusers

    forward = convert_wan_transformer_to_diffusers if kind == "transformer" else convert_wan_vae_to_diffusers
    back = forward(dict(original))
    assert set(back) == set(diffusers_state), sorted(set(back) ^ set(diffusers_state))[:6]
    for k, v in back.items():
        assert v is diffusers_state[k] or bool((v == diffusers_state[k]).all()), k


def comfy_components(variant: str) -> dict:
    """tiny_wan_components(variant) with what ComfyUI's files need: 128-wide heads (ComfyUI and diffusers' single-file
    configs assume them) and, for the 2.1 VAE, Wan's own block layout (2 residual blocks per level, dim_mult 1,2,4,4,
    its published latent statistics) at base width 4. Every variant gets the same 2.1 VAE (seed 11), as ComfyUI
    users share one wan_2.1_vae file."""
    import torch
    from diffusers import AutoencoderKLWan

    from stillmotion.models import tiny_wan

    comps = tiny_wan.tiny_wan_components(variant)
    z = comps["vae"].config.z_dim
    if variant != "wan2.2-ti2v-5b":
        torch.manual_seed(11)
        comps["vae"] = AutoencoderKLWan(base_dim=4, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2,
                                        temperal_downsample=[False, True, True]).eval()
    image_dim = tiny_wan.CLIP_DIM if comps["image_encoder"] is not None else None
    inch = z if variant == "wan2.2-ti2v-5b" else 2 * z + 4
    for i, name in enumerate(("transformer", "transformer_2")):
        if comps[name] is not None:
            torch.manual_seed(21 + i)
            comps[name] = tiny_wan.tiny_transformer(inch, z, image_dim=image_dim, heads=1, head_dim=128)
    return comps


def save_folder(comps: dict, folder: Path) -> Path:
    from diffusers import WanImageToVideoPipeline

    WanImageToVideoPipeline(**comps).save_pretrained(folder, safe_serialization=True)
    return folder


def write_safetensors(module, path: Path, kind: str, prefix: str = "") -> None:
    """`prefix`: "model.diffusion_model." as some Wan transformer files (Kijai's, older exports) carry it."""
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous() for k, v in module.state_dict().items()}
    original = to_original_transformer(state) if kind == "transformer" else to_original_vae(state)
    check_inverse(original, state, kind)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({prefix + k: v for k, v in original.items()}, str(path))


def write_gguf(module, path: Path, quantize: bool = True) -> dict:
    """The transformer in the original layout as GGUF (gguf's writer): 2-D weights whose rows split into 32-blocks
    as Q8_0 (what city96's files hold for most weights), the rest F32, and 5-D ones (the patch embedding) stored
    flattened to 2-D with ComfyUI-GGUF's `comfy.gguf.orig_shape.NAME` array, as its converter keeps GGUF within
    4 dims. Returns the diffusers state dict with the values the file holds (Q8_0 dequantized), to build the
    folder it must equal."""
    import gguf
    import torch

    state = {k: v.detach().contiguous() for k, v in module.state_dict().items()}
    original = to_original_transformer(state)
    check_inverse(original, state, "transformer")
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(path), arch="wan")
    held = {}
    for name, tensor in original.items():
        arr = tensor.float().numpy()
        if quantize and arr.ndim == 2 and arr.shape[-1] % 32 == 0:
            q = gguf.quants.quantize(arr, gguf.GGMLQuantizationType.Q8_0)
            writer.add_tensor(name, q, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
            arr = gguf.quants.dequantize(q, gguf.GGMLQuantizationType.Q8_0).reshape(arr.shape)
        elif arr.ndim > 4:
            writer.add_array(f"comfy.gguf.orig_shape.{name}", [int(n) for n in arr.shape])
            writer.add_tensor(name, arr.reshape(arr.shape[0], -1).astype(np.float32))
        else:
            writer.add_tensor(name, arr.astype(np.float32))
        held[name] = torch.from_numpy(np.ascontiguousarray(arr))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

    return convert_wan_transformer_to_diffusers(held)


def hub_snapshot(hub: Path, repo_id: str, folder: Path, parts: tuple[str, ...], commit: str = "c" * 40) -> Path:
    """A Hugging Face cache entry for `repo_id` holding only `parts` of a saved pipeline folder (plus
    model_index.json and the scheduler), as `hf download REPO --include ...` leaves it."""
    repo = hub / ("models--" + repo_id.replace("/", "--"))
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True, exist_ok=True)
    for name in (*parts, "scheduler"):
        shutil.copytree(folder / name, snap / name, dirs_exist_ok=True)
    shutil.copy(folder / "model_index.json", snap / "model_index.json")
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return snap


def write_recognisable_vae22(vae, path: Path) -> None:
    """The tiny 2.2 VAE as a file stillmotion recognises as ComfyUI's wan2.2_vae. diffusers has no converter for
    that layout, so stillmotion only reads its header (and takes the repo's vae): the keys it reads carry the
    original names (the middle block's first norm, conv1 = quant_conv), the rest keep diffusers' names."""
    from safetensors.torch import save_file

    state = {}
    for k, v in vae.state_dict().items():
        k = re.sub(r"^(encoder|decoder)\.mid_block\.resnets\.0\.norm1\.gamma$", r"\1.middle.0.residual.0.gamma", k)
        k = re.sub(r"^quant_conv\.", "conv1.", k)
        state[k] = v.detach().contiguous()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path))


def write_named(path: Path, shapes: dict) -> None:
    """A file with only the keys (zeros) by which a ComfyUI file is recognised: for files stillmotion lists but
    does not load (ComfyUI's UMT5 and CLIP vision files: no converter)."""
    import torch
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: torch.zeros(s) for k, s in shapes.items()}, str(path))
