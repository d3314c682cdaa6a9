"""What one of ComfyUI's LTX-2 files is, from its header alone (models/ltx_files.py assembles and loads them).

Lightricks publish LTX-2 as one file in their original key layout, which ComfyUI keeps in models/checkpoints/:
`ltx-2-19b-dev.safetensors` (bf16), `ltx-2-19b-dev-fp8.safetensors` (float8_e4m3fn weights) and
`ltx-2-19b-distilled*.safetensors`. One file holds the transformer (`model.diffusion_model.*`), the text connectors
(`model.diffusion_model.{video,audio}_embeddings_connector.*` and `text_embedding_projection.*`), the video VAE
(`vae.*`), the audio VAE (`audio_vae.*`) and the vocoder (`vocoder.*`). ComfyUI's Gemma-3 12B text encoder is
`models/text_encoders/gemma_3_12B_it*.safetensors`: ComfyUI's Gemma keys (`model.*`, `vision_model.*`,
`multi_modal_projector.*`) and its SentencePiece model (`spiece_model`), no config.

Each component's keys are run through the conversion the load runs (`split`: diffusers' single-file converters for
the transformer and the VAEs, the renames of diffusers' conversion script for the connectors and the vocoder), its
diffusers config made from the shapes over the class defaults (which are LTX-2 19B's: engine/ltx2_shape.py), and the
model that config builds (on meta) must have exactly the file's keys and shapes, else the file is refused in one line.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ..errors import ModelUnavailable
from .comfy_files import fp8_scaled
from .single_file import read_header

# the marker keys of an LTX-2 checkpoint (diffusers' CHECKPOINT_KEY_NAMES["ltx2"]) and of ComfyUI's Gemma-3 file
TRANSFORMER_MARK = "model.diffusion_model.av_ca_a2v_gate_adaln_single.emb.timestep_embedder.linear_1.weight"
GEMMA_MARK = re.compile(r"^model\.layers\.\d+\.self_attn\.q_norm\.weight$")

# where each component's keys are in Lightricks' file
PREFIXES = {"transformer": ("model.diffusion_model.",), "vae": ("vae.",), "audio_vae": ("audio_vae.",),
            "vocoder": ("vocoder.",),
            "connectors": ("model.diffusion_model.video_embeddings_connector.",
                           "model.diffusion_model.audio_embeddings_connector.", "text_embedding_projection.")}
CONNECTOR_RENAMES = (  # diffusers' LTX_2_0_CONNECTORS_KEYS_RENAME_DICT, after the transformer's prefix
    ("model.diffusion_model.", ""), ("video_embeddings_connector", "video_connector"),
    ("audio_embeddings_connector", "audio_connector"), ("transformer_1d_blocks", "transformer_blocks"),
    ("text_embedding_projection.aggregate_embed", "text_proj_in"), ("q_norm", "norm_q"), ("k_norm", "norm_k"))
VOCODER_RENAMES = (("vocoder.", ""), ("ups.", "upsamplers."), ("resblocks", "resnets"), ("conv_pre", "conv_in"),
                   ("conv_post", "conv_out"))  # diffusers' LTX_2_0_VOCODER_RENAME_DICT
# LTX-2 19B's video VAE beside diffusers' defaults (ltx2_shape.LTX2_VAE; the conversion script's "2.0" values)
VAE_DEFAULTS = {"spatial_compression_ratio": 32, "temporal_compression_ratio": 8, "decoder_causal": False}
STATS_DROPPED = ("per_channel_statistics.channel", "per_channel_statistics.mean-of-stds")
STRIDES = {"spatial": 4, "temporal": 2, "spatiotemporal": 8}  # channels a downsampler folds in, per type


@dataclass
class LtxFile:
    """What one ComfyUI LTX-2 file is, from its header."""

    path: Path
    kind: str  # "checkpoint" | "text_encoder"
    label: str
    model: Optional[str] = None  # checkpoint: the registry entry whose defaults apply
    configs: dict = field(default_factory=dict)  # checkpoint: component -> diffusers config
    fp8: bool = False
    scaled: bool = False  # fp8 weights with per-tensor scales
    vision: bool = False  # text encoder: holds the vision tower too (the whole Gemma3ForConditionalGeneration)


# --------------------------------------------------------------------------- keys
def classes() -> dict:
    import diffusers
    from diffusers.pipelines.ltx2 import LTX2TextConnectors
    from diffusers.pipelines.ltx2.vocoder import LTX2Vocoder

    return {"transformer": diffusers.LTX2VideoTransformer3DModel, "vae": diffusers.AutoencoderKLLTX2Video,
            "audio_vae": diffusers.AutoencoderKLLTX2Audio, "connectors": LTX2TextConnectors, "vocoder": LTX2Vocoder}


def _rename(key: str, renames) -> str:
    for old, new in renames:
        key = key.replace(old, new)
    return key


def split(state: dict) -> dict:
    """Lightricks' {key: value} -> {component: its keys in diffusers' names}: the transformer and both VAEs through
    diffusers' single-file converters, the connectors and the vocoder through its conversion script's renames."""
    from diffusers.loaders import single_file_utils as sfu

    converters = {"transformer": sfu.convert_ltx2_transformer_to_diffusers, "vae": sfu.convert_ltx2_vae_to_diffusers,
                  "audio_vae": sfu.convert_ltx2_audio_vae_to_diffusers}
    parts: dict[str, dict] = {name: {} for name in PREFIXES}
    for key, value in state.items():
        for name in ("connectors", "audio_vae", "vocoder", "vae", "transformer"):  # the longer prefixes first
            if key.startswith(PREFIXES[name]):
                parts[name][key] = value
                break
    out = {name: converters[name](parts[name]) for name in converters}
    for key in STATS_DROPPED:  # per-channel statistics no diffusers module holds: the video VAE's converter drops
        out["audio_vae"].pop(key, None)  # them; the audio VAE's (0.42.1) does not, so they go here
    out["connectors"] = {_rename(k, CONNECTOR_RENAMES): v for k, v in parts["connectors"].items()}
    out["vocoder"] = {_rename(k, VOCODER_RENAMES): v for k, v in parts["vocoder"].items()}
    return out


# --------------------------------------------------------------------------- configs from shapes
def _count(shapes: dict, pattern: str) -> int:
    found = {int(m[1]) for k in shapes if (m := re.match(pattern, k))}
    return max(found) + 1 if found else 0


def _transformer_config(s: dict, d: dict) -> dict:
    inner, audio_inner = s["proj_in.weight"][0], s["audio_proj_in.weight"][0]
    head, audio_head = d["attention_head_dim"], d["audio_attention_head_dim"]
    config = {"in_channels": s["proj_in.weight"][1], "out_channels": s["proj_out.weight"][0],
              "num_attention_heads": max(1, inner // head), "attention_head_dim": min(head, inner),
              "cross_attention_dim": s["transformer_blocks.0.attn2.to_k.weight"][1],
              "audio_in_channels": s["audio_proj_in.weight"][1], "audio_out_channels": s["audio_proj_out.weight"][0],
              "audio_num_attention_heads": max(1, audio_inner // audio_head),
              "audio_attention_head_dim": min(audio_head, audio_inner),
              "audio_cross_attention_dim": s["transformer_blocks.0.audio_attn2.to_k.weight"][1],
              "num_layers": _count(s, r"transformer_blocks\.(\d+)\.")}
    if "caption_projection.linear_1.weight" in s:
        config["caption_channels"] = s["caption_projection.linear_1.weight"][1]
    return config


def _vae_config(s: dict, d: dict) -> dict:
    n = _count(s, r"encoder\.down_blocks\.(\d+)\.")
    kinds = d["downsample_type"]
    out = []
    for i in range(n):
        down = s.get(f"encoder.down_blocks.{i}.downsamplers.0.conv.conv.weight")
        out.append(down[0] * STRIDES[kinds[i]] if down else (out[-1] if out else s["encoder.conv_in.conv.weight"][0]))
    layers = [_count(s, rf"encoder\.down_blocks\.{i}\.resnets\.(\d+)\.") for i in range(n)]
    layers.append(_count(s, r"encoder\.mid_block\.resnets\.(\d+)\."))
    m = _count(s, r"decoder\.up_blocks\.(\d+)\.")
    factors = tuple(reversed(d["upsample_factor"]))
    rev = [s["decoder.conv_in.conv.weight"][0]]
    rev += [factors[i] * s[f"decoder.up_blocks.{i}.resnets.0.conv2.conv.weight"][0] for i in range(1, m)]
    dec_layers = [_count(s, r"decoder\.mid_block\.resnets\.(\d+)\.")]
    dec_layers += [_count(s, rf"decoder\.up_blocks\.{i}\.resnets\.(\d+)\.") for i in range(m)]
    return {**VAE_DEFAULTS, "in_channels": 3, "out_channels": 3, "latent_channels": s["decoder.conv_in.conv.weight"][1],
            "patch_size": int(round((s["encoder.conv_in.conv.weight"][1] / 3) ** 0.5)),
            "block_out_channels": tuple(out), "layers_per_block": tuple(layers),
            "down_block_types": ("LTX2VideoDownBlock3D",) * n,
            "decoder_block_out_channels": tuple(reversed(rev)), "decoder_layers_per_block": tuple(reversed(dec_layers))}


def _audio_vae_config(s: dict, d: dict) -> dict:
    base = s["encoder.conv_in.conv.weight"][0]
    levels = _count(s, r"encoder\.down\.(\d+)\.")
    mult = [s[f"encoder.down.{i}.block.0.conv2.conv.weight"][0] // base for i in range(levels)]
    latent = s["decoder.conv_in.conv.weight"][1]
    return {"base_channels": base, "in_channels": s["encoder.conv_in.conv.weight"][1], "ch_mult": tuple(mult),
            "num_res_blocks": _count(s, r"encoder\.down\.0\.block\.(\d+)\."), "latent_channels": latent,
            "output_channels": s["decoder.conv_out.conv.weight"][0],
            "double_z": s["encoder.conv_out.conv.weight"][0] == 2 * latent}


def _connectors_config(s: dict, d: dict) -> dict:
    width, wide_in = s["text_proj_in.weight"]
    config = {"caption_channels": width, "text_proj_in_factor": wide_in // width}
    for side in ("video", "audio"):
        inner = s[f"{side}_connector.transformer_blocks.0.attn1.to_q.weight"][0]
        head = d[f"{side}_connector_attention_head_dim"]
        registers = s.get(f"{side}_connector.learnable_registers")
        config |= {f"{side}_connector_num_attention_heads": max(1, inner // head),
                   f"{side}_connector_attention_head_dim": min(head, inner),
                   f"{side}_connector_num_layers": _count(s, rf"{side}_connector\.transformer_blocks\.(\d+)\."),
                   f"{side}_connector_num_learnable_registers": registers[0] if registers else None}
    return config


def _vocoder_config(s: dict, d: dict) -> dict:
    ups = _count(s, r"upsamplers\.(\d+)\.")
    kernels = [s[f"upsamplers.{i}.weight"][2] for i in range(ups)]
    per = _count(s, r"resnets\.(\d+)\.") // max(ups, 1)
    resnet_kernels = [s[f"resnets.{j}.convs1.0.weight"][2] for j in range(per)]
    same = kernels == list(d["upsample_kernel_sizes"])
    return {"in_channels": s["conv_in.weight"][1], "hidden_channels": s["conv_in.weight"][0],
            "out_channels": s["conv_out.weight"][0], "upsample_kernel_sizes": kernels,
            "upsample_factors": list(d["upsample_factors"]) if same else [max(1, k // 2) for k in kernels],
            "resnet_kernel_sizes": resnet_kernels,
            "resnet_dilations": [list(d["resnet_dilations"][0])] * per}


CONFIGS = {"transformer": _transformer_config, "vae": _vae_config, "audio_vae": _audio_vae_config,
           "connectors": _connectors_config, "vocoder": _vocoder_config}


def _defaults(cls) -> dict:
    import inspect

    return {k: p.default for k, p in inspect.signature(cls.__init__).parameters.items()
            if k != "self" and p.default is not inspect.Parameter.empty}


def _config_of(name: str, cls, shapes: dict, path: Path) -> dict:
    """A component's diffusers config from its shapes, checked: the model it builds (on meta) has exactly these
    keys and shapes."""
    from accelerate import init_empty_weights

    try:
        config = {**_defaults(cls), **CONFIGS[name](shapes, _defaults(cls))}
        with init_empty_weights():
            model = cls.from_config(config)
    except (KeyError, IndexError, TypeError, ValueError, ZeroDivisionError) as e:
        raise ModelUnavailable(f"{path}: its {name} is not laid out as LTX-2's ({type(e).__name__}: {e}); stillmotion "
                               "runs Lightricks' LTX-2 (2.0) checkpoints.") from None
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    have = {k: tuple(v) for k, v in shapes.items()}
    if want != have:
        diff = sorted(set(want) ^ set(have)) or [k for k in want if want[k] != have[k]]
        raise ModelUnavailable(f"{path}: its {name} is not laid out as LTX-2's (first difference: {diff[0]}); "
                               "stillmotion runs Lightricks' LTX-2 (2.0) checkpoints.")
    return {k: list(v) if isinstance(v, tuple) else v for k, v in model.config.items() if not k.startswith("_")}


# --------------------------------------------------------------------------- what a file is
def is_ltx_header(header: dict) -> bool:
    return TRANSFORMER_MARK in header or any(GEMMA_MARK.match(k) for k in header)


def looks_like_ltx_file(path) -> bool:
    """Whether a file's header is one of ComfyUI's LTX-2 files (a checkpoint or the Gemma-3 text encoder)."""
    path = Path(path)
    if path.suffix.lower() != ".safetensors" or not path.is_file():
        return False
    try:
        return is_ltx_header(read_header(path)[0])
    except ModelUnavailable:
        return False


def inspect_ltx_file(path: str | Path) -> LtxFile:
    """What an LTX-2 file is, from its header; ModelUnavailable (one line) when it is none or cannot run. Cached per
    file version: every front end asks for a --model's entry, and a checkpoint's configs are checked on meta."""
    path = Path(path).expanduser().resolve()
    st = path.stat()
    return _inspect(path, st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _inspect(path: Path, _size: int, _mtime: int) -> LtxFile:
    header = read_header(path)[0]
    fp8, scaled = fp8_scaled(header)
    precision = ("fp8, scaled" if scaled else "fp8") if fp8 else None
    if any(GEMMA_MARK.match(k) for k in header) and TRANSFORMER_MARK not in header:
        vision = any(k.startswith("vision_model.") for k in header) and \
            any(k.startswith("multi_modal_projector.") for k in header)
        layers = _count(header, r"model\.layers\.(\d+)\.")
        what = "with its vision tower" if vision else "text layers only: the repo's text encoder is used"
        label = f"Gemma-3 text encoder for LTX-2 (ComfyUI layout, {layers} layers, {what}" + \
            (f", {precision})" if precision else ")")
        return LtxFile(path, "text_encoder", label, fp8=fp8, scaled=scaled, vision=vision)
    if TRANSFORMER_MARK not in header:
        raise ModelUnavailable(f"{path} is not an LTX-2 checkpoint ({TRANSFORMER_MARK.split('.')[2]} missing): "
                               f"first keys {', '.join(sorted(header)[:3]) or 'none'}.")
    if any(k.startswith("text_embedding_projection.video_aggregate_embed") for k in header):
        raise ModelUnavailable(f"{path} is an LTX-2.3 checkpoint; stillmotion runs LTX-2 (2.0) checkpoints "
                               "(ltx-2-19b-dev*.safetensors, ltx-2-19b-distilled*.safetensors).")
    shapes = split({k: s for k, (_d, s) in header.items() if not k.endswith(
        ("weight_scale", "scale_weight", "input_scale", "scale_input"))})
    names = {"vae": "video VAE (vae.*)", "audio_vae": "audio VAE (audio_vae.*)", "vocoder": "vocoder (vocoder.*)",
             "connectors": "text connectors (*_embeddings_connector.*)"}
    missing = [names[n] for n in names if not shapes[n]]
    if missing:
        raise ModelUnavailable(f"{path} holds the LTX-2 transformer but no {', '.join(missing)}: pass Lightricks' "
                               "whole checkpoint (ltx-2-19b-dev.safetensors, -fp8 or distilled), as ComfyUI's "
                               "models/checkpoints keeps it.")
    configs = {name: _config_of(name, cls, shapes[name], path) for name, cls in classes().items()}
    # the mel bins shape no weight of the audio VAE; the vocoder reads its decoded mel: channels x bins
    channels, mel_in = configs["audio_vae"]["output_channels"], configs["vocoder"]["in_channels"]
    configs["audio_vae"]["mel_bins"] = mel_in // channels if mel_in % channels == 0 else configs["audio_vae"]["mel_bins"]
    model = "ltx-2-distilled" if "distilled" in path.name.lower() else "ltx-2"
    t = configs["transformer"]
    label = (f"LTX-2 {'distilled' if model != 'ltx-2' else 'dev'} checkpoint (transformer "
             f"{t['num_attention_heads'] * t['attention_head_dim']}-wide, {t['num_layers']} blocks; video VAE, "
             f"audio VAE, vocoder, connectors" + (f"; {precision})" if precision else ")"))
    return LtxFile(path, "checkpoint", label, model=model, configs=configs, fp8=fp8, scaled=scaled)


def ltx_file(path: Path) -> Optional[LtxFile]:
    """An LTX-2 file's LtxFile, or None when the file is not one (refusing one that is, but cannot run)."""
    if not looks_like_ltx_file(path):
        return None
    return inspect_ltx_file(path)
