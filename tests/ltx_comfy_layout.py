"""A tiny LTX-2 written the way Lightricks publish the real one and ComfyUI keeps it: one checkpoint in the original
key layout (transformer, connectors, video VAE, audio VAE, vocoder; optionally fp8 with per-tensor scales), ComfyUI's
Gemma-3 text encoder file, and the Lightricks/LTX-2 repo in a Hugging Face cache holding what the files lack.

The original keys are diffusers' conversion run backwards: `to_original()` inverts the single-file converters
(convert_ltx2_*_to_diffusers, diffusers 0.42.1) and the conversion script's connector and vocoder renames, and
`check_inverse` runs stillmotion's forward map (ltx_files.split, which calls diffusers' converters) over the result
and requires exactly the diffusers keys back, so a wrong inversion fails here, not in a comparison.
"""

from __future__ import annotations

import re
from pathlib import Path

_TRANSFORMER = [  # diffusers' LTX_2_0_TRANSFORMER_KEYS_RENAME_DICT, inverted
    ("av_cross_attn_video_scale_shift", "av_ca_video_scale_shift_adaln_single"),
    ("av_cross_attn_video_a2v_gate", "av_ca_a2v_gate_adaln_single"),
    ("av_cross_attn_audio_scale_shift", "av_ca_audio_scale_shift_adaln_single"),
    ("av_cross_attn_audio_v2a_gate", "av_ca_v2a_gate_adaln_single"),
    ("video_a2v_cross_attn_scale_shift_table", "scale_shift_table_a2v_ca_video"),
    ("audio_a2v_cross_attn_scale_shift_table", "scale_shift_table_a2v_ca_audio"),
    ("proj_in", "patchify_proj"), ("norm_q", "q_norm"), ("norm_k", "k_norm"),
]


def _transformer(key: str) -> str:
    key = re.sub(r"^audio_time_embed\.", "audio_adaln_single.", key)
    key = re.sub(r"^time_embed\.", "adaln_single.", key)
    for ours, theirs in _TRANSFORMER:
        key = key.replace(ours, theirs)
    return "model.diffusion_model." + key


def _vae(key: str) -> str:
    side, rest = key.split(".", 1) if key.startswith(("encoder.", "decoder.")) else ("", key)
    if side == "encoder":
        rest = re.sub(r"^down_blocks\.(\d+)\.downsamplers\.0\.", lambda m: f"down_blocks.{2 * int(m[1]) + 1}.", rest)
        rest = re.sub(r"^down_blocks\.(\d+)\.resnets\.", lambda m: f"down_blocks.{2 * int(m[1])}.res_blocks.", rest)
        rest = re.sub(r"^mid_block\.resnets\.", "down_blocks.8.res_blocks.", rest)
    elif side == "decoder":
        rest = re.sub(r"^mid_block\.resnets\.", "up_blocks.0.res_blocks.", rest)
        rest = re.sub(r"^up_blocks\.(\d+)\.upsamplers\.0\.", lambda m: f"up_blocks.{2 * int(m[1]) + 1}.", rest)
        rest = re.sub(r"^up_blocks\.(\d+)\.resnets\.", lambda m: f"up_blocks.{2 * int(m[1]) + 2}.res_blocks.", rest)
    rest = rest.replace("latents_mean", "per_channel_statistics.mean-of-means")
    rest = rest.replace("latents_std", "per_channel_statistics.std-of-means")
    return "vae." + (f"{side}.{rest}" if side else rest)


def _connectors(key: str) -> str:
    if key.startswith("text_proj_in."):
        return key.replace("text_proj_in", "text_embedding_projection.aggregate_embed")
    key = key.replace("transformer_blocks", "transformer_1d_blocks").replace("norm_q", "q_norm").replace("norm_k", "k_norm")
    return "model.diffusion_model." + key.replace("video_connector", "video_embeddings_connector").replace(
        "audio_connector", "audio_embeddings_connector")


def _vocoder(key: str) -> str:
    for ours, theirs in (("upsamplers.", "ups."), ("resnets", "resblocks"), ("conv_in", "conv_pre"),
                         ("conv_out", "conv_post")):
        key = key.replace(ours, theirs)
    return "vocoder." + key


INVERSE = {"transformer": _transformer, "vae": _vae, "connectors": _connectors, "vocoder": _vocoder,
           "audio_vae": lambda k: "audio_vae." + k.replace("latents_mean", "per_channel_statistics.mean-of-means")
           .replace("latents_std", "per_channel_statistics.std-of-means")}


def comfy_ltx2_components() -> dict:
    """A tiny LTX-2 whose every non-width setting is diffusers' class default (LTX-2 19B's, which is what configs made
    from a file's shapes fall back on): 128-wide video heads, 64-wide audio heads, the real VAE block layout (4
    encoder stages, spatial/temporal/spatiotemporal downsamplers), the real vocoder's upsampling (240 samples per mel
    frame, 24 kHz) at toy width, and a Gemma-3 128 wide (the connectors' width)."""
    import torch
    from diffusers import (AutoencoderKLLTX2Audio, AutoencoderKLLTX2Video, FlowMatchEulerDiscreteScheduler,
                           LTX2VideoTransformer3DModel)
    from diffusers.pipelines.ltx2 import LTX2TextConnectors
    from diffusers.pipelines.ltx2.vocoder import LTX2Vocoder

    from stillmotion.models.tiny_ltx import tiny_gemma3, tiny_gemma_tokenizer

    tokenizer = tiny_gemma_tokenizer()
    torch.manual_seed(30)
    text_encoder = tiny_gemma3(len(tokenizer), hidden_size=128)
    torch.manual_seed(31)
    transformer = LTX2VideoTransformer3DModel(in_channels=8, out_channels=8, num_attention_heads=1,
                                              cross_attention_dim=128, audio_in_channels=16, audio_out_channels=16,
                                              audio_num_attention_heads=1, audio_cross_attention_dim=64, num_layers=2,
                                              caption_channels=128).eval()
    torch.manual_seed(32)
    connectors = LTX2TextConnectors(caption_channels=128, text_proj_in_factor=3, video_connector_num_attention_heads=1,
                                    video_connector_num_layers=1, audio_connector_num_attention_heads=1,
                                    audio_connector_num_layers=1).eval()
    torch.manual_seed(33)
    vae = AutoencoderKLLTX2Video(latent_channels=8, block_out_channels=(8, 16, 32, 64),
                                 decoder_block_out_channels=(8, 16, 32), layers_per_block=(1, 1, 1, 1, 1),
                                 decoder_layers_per_block=(1, 1, 1, 1), spatial_compression_ratio=32,
                                 temporal_compression_ratio=8, decoder_causal=False).eval()
    torch.manual_seed(34)
    audio_vae = AutoencoderKLLTX2Audio(base_channels=16, latent_channels=1).eval()  # statistics: 1 x 64 mel / 4
    torch.manual_seed(35)
    vocoder = LTX2Vocoder(hidden_channels=32).eval()
    return {"scheduler": FlowMatchEulerDiscreteScheduler(), "vae": vae, "audio_vae": audio_vae,
            "text_encoder": text_encoder, "tokenizer": tokenizer, "connectors": connectors,
            "transformer": transformer, "vocoder": vocoder}


def to_original(comps: dict) -> dict:
    """The checkpoint's tensors in Lightricks' layout, with the statistics keys no diffusers module holds."""
    import torch

    out = {}
    for name, inverse in INVERSE.items():
        for key, value in comps[name].state_dict().items():
            out[inverse(key)] = value.detach().contiguous()
    n = comps["vae"].config.latent_channels
    for vae, n in (("vae", n), ("audio_vae", comps["audio_vae"].latents_mean.numel())):
        out[f"{vae}.per_channel_statistics.channel"] = torch.arange(n, dtype=torch.float32)
        out[f"{vae}.per_channel_statistics.mean-of-stds"] = torch.ones(n)
    return out


def check_inverse(original: dict, comps: dict) -> None:
    """stillmotion's forward map (diffusers' converters and the script's renames) gives back exactly the modules'
    keys and tensors."""
    from stillmotion.models.ltx_inspect import split

    back = split(dict(original))
    for name in INVERSE:
        state = comps[name].state_dict()
        assert set(back[name]) == set(state), (name, sorted(set(back[name]) ^ set(state))[:4])
        for k, v in back[name].items():
            assert v.shape == state[k].shape and bool((v == state[k]).all()), (name, k)


def to_fp8(original: dict) -> dict:
    """Lightricks' fp8 layout: every transformer block's 2-D weight as float8_e4m3fn with a per-tensor
    `weight_scale` (and the `input_scale` the file carries beside it); the rest as it was."""
    import torch

    out = {}
    for key, value in original.items():
        if key.startswith("model.diffusion_model.transformer_blocks.") and key.endswith(".weight") and value.ndim == 2:
            scale = (value.abs().max() / 448.0).clamp(min=1e-12).reshape(())
            out[key] = (value / scale).to(torch.float8_e4m3fn)
            out[key[: -len("weight")] + "weight_scale"] = scale.float()
            out[key[: -len("weight")] + "input_scale"] = torch.tensor(1.0)
        else:
            out[key] = value
    return out


def dequantized(fp8: dict) -> dict:
    """What the fp8 file's weights are worth: each upcast times its scale (the reference model's values)."""
    import torch

    return {k: (v.to(torch.float32) * fp8[k[: -len("weight")] + "weight_scale"]) if v.dtype == torch.float8_e4m3fn
            else v for k, v in fp8.items() if not k.endswith(("weight_scale", "input_scale"))}


def load_original(comps: dict, original: dict) -> dict:
    """`comps` with the weights an original-layout state dict holds (the fp8 file's dequantized ones)."""
    from stillmotion.models.ltx_inspect import split

    parts = split(dict(original))
    for name in INVERSE:
        comps[name].load_state_dict(parts[name])
    return comps


def gemma_file(text_encoder) -> dict:
    """ComfyUI's Gemma-3 file: its own key names (a prefix away from transformers'), no lm_head (tied), and the
    SentencePiece bytes ComfyUI stores as `spiece_model` (here a stand-in: stillmotion takes the repo's tokenizer)."""
    import torch

    out = {}
    for key, value in text_encoder.state_dict().items():
        if key == "lm_head.weight":
            continue
        for ours, theirs in (("model.language_model.", "model."), ("model.vision_tower.vision_model.", "vision_model."),
                             ("model.vision_tower.", "vision_model."),
                             ("model.multi_modal_projector.", "multi_modal_projector.")):
            if key.startswith(ours):
                key = theirs + key[len(ours):]
                break
        out[key] = value.detach().contiguous()
    out["spiece_model"] = torch.frombuffer(bytearray(b"not a sentencepiece model"), dtype=torch.uint8)
    return out


def save(tensors: dict, path: Path) -> Path:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path))
    return path


def to_comfy_fp8(gemma: dict) -> dict:
    """ComfyUI's `*_fp8_scaled` layout of a Gemma file: the decoder layers' 2-D weights as float8_e4m3fn with a
    per-tensor `scale_weight` (ComfyUI's spelling) and the `scaled_fp8` marker; the rest as it was."""
    import torch

    out = {"scaled_fp8": torch.zeros(2, dtype=torch.float8_e4m3fn)}
    for key, value in gemma.items():
        if key.startswith("model.layers.") and key.endswith(".weight") and value.ndim == 2:
            scale = (value.abs().max() / 448.0).clamp(min=1e-12).reshape(())
            out[key] = (value / scale).to(torch.float8_e4m3fn)
            out[key[: -len("weight")] + "scale_weight"] = scale.float()
        else:
            out[key] = value
    return out


def load_comfy_gemma(text_encoder, fp8: dict) -> None:
    """`text_encoder` given what a ComfyUI fp8 Gemma file is worth (each weight upcast times its scale)."""
    import torch

    names = set(text_encoder.state_dict())
    values = {}
    for key, value in fp8.items():
        if value.dtype != torch.float8_e4m3fn or key == "scaled_fp8":
            continue
        for ours, theirs in (("model.", "model.language_model."),):
            values[theirs + key[len(ours):]] = value.to(torch.float32) * fp8[key[: -len("weight")] + "scale_weight"]
    assert set(values) <= names
    text_encoder.load_state_dict(values, strict=False)
