"""Where each tensor of an SGM single-file SVD checkpoint goes in diffusers / transformers.

`plan_conversion()` maps every key of the file (original module names:
openaimodel's UNetModel, the temporal VideoDecoder, ldm's Encoder, OpenCLIP's
VisionTransformer) to its diffusers name and a transform (q/k/v split of
in_proj, transposed proj, 1x1 conv -> linear); known leftovers are ignored by
name, anything else is an error naming the first keys. `check_plan()` builds
the target models on the meta device and checks every parameter is filled with
the shape its config expects.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Iterable

from ..errors import ModelUnavailable
from .sgm_configs import (
    CLIP,
    DECODER,
    ENCODER_COND,
    ENCODER_FIRST,
    EXPECTED,
    IGNORED_PREFIXES,
    OPEN_CLIP,
    UNET,
    encoder_prefix,
    unfit,
)


def _ignored(key: str, enc_prefix: str) -> bool:
    if key.startswith(IGNORED_PREFIXES):
        return True
    if key.startswith(OPEN_CLIP) and not key.startswith(CLIP):  # OpenCLIP text-tower leftovers
        return True
    if key.startswith(("first_stage_model.encoder.", "first_stage_model.quant_conv.")) and enc_prefix == ENCODER_COND:
        # the same encoder twice: the conditioning one is what SVD encodes with
        return True
    return False


# --------------------------------------------------------------------------- key mapping
Transform = Callable  # tensor -> tensor
Plan = dict  # diffusers key -> (source key | None, transform)


def _resnet(rest: str, temporal: bool) -> str:
    """openaimodel ResBlock names -> diffusers SpatioTemporalResBlock (or ResnetBlock2D) names."""
    sub = {"in_layers.0": "norm1", "in_layers.2": "conv1", "emb_layers.1": "time_emb_proj",
           "out_layers.0": "norm2", "out_layers.3": "conv2", "skip_connection": "conv_shortcut"}
    if rest.startswith("time_stack."):
        mod, _, p = rest[len("time_stack."):].rpartition(".")
        return f"temporal_res_block.{sub.get(mod, mod)}.{p}"
    if rest == "time_mixer.mix_factor":
        return rest
    mod, _, p = rest.rpartition(".")
    return f"spatial_res_block.{sub.get(mod, mod)}.{p}" if temporal else f"{sub.get(mod, mod)}.{p}"


def _transformer(rest: str) -> str:
    if rest.startswith("time_stack."):
        return "temporal_transformer_blocks." + rest[len("time_stack."):]
    if rest.startswith("time_pos_embed."):
        n, _, p = rest[len("time_pos_embed."):].partition(".")
        return f"time_pos_embed.linear_{1 if n == '0' else 2}.{p}"
    return rest


def _unet_rename(key: str, cfg: dict) -> str | None:
    k = key[len(UNET):]
    fixed = {"time_embed.0.": "time_embedding.linear_1.", "time_embed.2.": "time_embedding.linear_2.",
             "label_emb.0.0.": "add_embedding.linear_1.", "label_emb.0.2.": "add_embedding.linear_2.",
             "input_blocks.0.0.": "conv_in.", "out.0.": "conv_norm_out.", "out.2.": "conv_out."}
    for a, b in fixed.items():
        if k.startswith(a):
            return b + k[len(a):]
    n = cfg["layers_per_block"]
    levels = len(cfg["block_out_channels"])
    if m := re.match(r"input_blocks\.(\d+)\.(\d+)\.(.+)", k):
        i, j, rest = int(m.group(1)), int(m.group(2)), m.group(3)
        level, r = divmod(i - 1, n + 1)
        if level >= levels:
            return None
        if r == n:
            return f"down_blocks.{level}.downsamplers.0.conv.{rest[3:]}" if rest.startswith("op.") else None
        if j == 0:
            return f"down_blocks.{level}.resnets.{r}.{_resnet(rest, True)}"
        return f"down_blocks.{level}.attentions.{r}.{_transformer(rest)}" if j == 1 else None
    if m := re.match(r"middle_block\.(\d)\.(.+)", k):
        j, rest = int(m.group(1)), m.group(2)
        if j == 1:
            return f"mid_block.attentions.0.{_transformer(rest)}"
        return f"mid_block.resnets.{j // 2}.{_resnet(rest, True)}"
    if m := re.match(r"output_blocks\.(\d+)\.(\d+)\.(.+)", k):
        i, j, rest = int(m.group(1)), int(m.group(2)), m.group(3)
        level, r = divmod(i, n + 1)
        if j == 0:
            return f"up_blocks.{level}.resnets.{r}.{_resnet(rest, True)}"
        if rest.startswith("conv."):  # Upsample
            return f"up_blocks.{level}.upsamplers.0.{rest}"
        return f"up_blocks.{level}.attentions.{r}.{_transformer(rest)}" if j == 1 else None
    return None


def _ae_resnet(rest: str, temporal: bool) -> str:
    """ldm's ResnetBlock (+ the temporal VAE's time_stack / mix_factor) -> diffusers names."""
    if rest.startswith("time_stack."):
        return _resnet(rest, True)
    if rest == "mix_factor":
        return "time_mixer.mix_factor"
    mod, _, p = rest.rpartition(".")
    mod = {"nin_shortcut": "conv_shortcut"}.get(mod, mod)
    return f"spatial_res_block.{mod}.{p}" if temporal else f"{mod}.{p}"


def _ae_attn(rest: str) -> str:
    mod, _, p = rest.rpartition(".")
    names = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}
    return f"{names.get(mod, mod)}.{p}"


def _ae_shared_rename(k: str, side: str, temporal: bool) -> str | None:
    """The parts the VAE's encoder and decoder name alike (conv_in/out, norm_out, the mid block) -> key under `side.`."""
    for a, b in {"conv_in.": "conv_in.", "conv_out.": "conv_out.", "norm_out.": "conv_norm_out."}.items():
        if k.startswith(a):
            return f"{side}." + b + k[len(a):]
    if m := re.match(r"mid\.block_(\d)\.(.+)", k):
        return f"{side}.mid_block.resnets.{int(m.group(1)) - 1}.{_ae_resnet(m.group(2), temporal)}"
    if m := re.match(r"mid\.attn_1\.(.+)", k):
        return f"{side}.mid_block.attentions.0.{_ae_attn(m.group(1))}"
    return None


def _decoder_rename(k: str, levels: int, temporal: bool) -> str | None:
    """k without the `first_stage_model.decoder.` prefix -> key under the diffusers `decoder.`."""
    if k.startswith("conv_out.time_mix_conv."):
        return "decoder.time_conv_out." + k[len("conv_out.time_mix_conv."):] if temporal else None
    if shared := _ae_shared_rename(k, "decoder", temporal):
        return shared
    if m := re.match(r"up\.(\d+)\.block\.(\d+)\.(.+)", k):
        return f"decoder.up_blocks.{levels - 1 - int(m.group(1))}.resnets.{m.group(2)}.{_ae_resnet(m.group(3), temporal)}"
    if m := re.match(r"up\.(\d+)\.upsample\.(.+)", k):
        return f"decoder.up_blocks.{levels - 1 - int(m.group(1))}.upsamplers.0.{m.group(2)}"
    return None


def _encoder_rename(k: str) -> str | None:
    """k without the `...encoder.` prefix -> key under the diffusers `encoder.`."""
    if shared := _ae_shared_rename(k, "encoder", False):
        return shared
    if m := re.match(r"down\.(\d+)\.block\.(\d+)\.(.+)", k):
        return f"encoder.down_blocks.{m.group(1)}.resnets.{m.group(2)}.{_ae_resnet(m.group(3), False)}"
    if m := re.match(r"down\.(\d+)\.downsample\.(.+)", k):
        return f"encoder.down_blocks.{m.group(1)}.downsamplers.0.{m.group(2)}"
    return None


def _clip_rename(k: str) -> list[tuple[str, Transform]]:
    ident = _identity
    fixed = {"class_embedding": "vision_model.embeddings.class_embedding",
             "conv1.weight": "vision_model.embeddings.patch_embedding.weight",
             "positional_embedding": "vision_model.embeddings.position_embedding.weight",
             "proj": "visual_projection.weight"}
    if k in fixed:
        return [(fixed[k], _transpose if k == "proj" else ident)]
    for a, b in (("ln_pre.", "vision_model.pre_layrnorm."), ("ln_post.", "vision_model.post_layernorm.")):
        if k.startswith(a):
            return [(b + k[len(a):], ident)]
    m = re.match(r"transformer\.resblocks\.(\d+)\.(.+)", k)
    if not m:
        return []
    pre, rest = f"vision_model.encoder.layers.{m.group(1)}.", m.group(2)
    if m2 := re.fullmatch(r"attn\.in_proj_(weight|bias)", rest):
        p = m2.group(1)
        return [(f"{pre}self_attn.{n}_proj.{p}", _chunk(i)) for i, n in enumerate("qkv")]
    sub = {"ln_1": "layer_norm1", "ln_2": "layer_norm2", "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2",
           "attn.out_proj": "self_attn.out_proj"}
    mod, _, p = rest.rpartition(".")
    return [(f"{pre}{sub[mod]}.{p}", ident)] if mod in sub else []


def _identity(t):
    return t


def _transpose(t):
    return t.t()


def _chunk(i):
    def f(t):
        return t.chunk(3, dim=0)[i]

    return f


def _as_linear(t):  # a 1x1 convolution's weight in the VAE's attention -> a Linear's
    return t[:, :, 0, 0] if t.ndim == 4 else t


@dataclass
class Component:
    name: str  # unet | vae | image_encoder
    cls: str  # the diffusers / transformers class name
    library: str
    config: dict
    plan: dict = field(default_factory=dict)  # target key -> (source key | None, transform)


def vae_class(kind: str) -> str:
    """The diffusers VAE class for a file's decoder kind ("temporal" | "image": decoded frame by frame)."""
    return "AutoencoderKLTemporalDecoder" if kind == "temporal" else "AutoencoderKL"


def plan_conversion(info, keys: Iterable[str]) -> list[Component]:
    """Where every tensor of the file goes (info: a single_file.FileInfo); raises ModelUnavailable naming keys it cannot place."""
    keys = set(keys)
    unet = Component("unet", "UNetSpatioTemporalConditionModel", "diffusers", info.unet_config)
    temporal = info.vae == "temporal"
    vae = Component("vae", vae_class(info.vae), "diffusers", info.vae_config)
    enc = Component("image_encoder", "CLIPVisionModelWithProjection", "transformers", info.clip_config)
    levels = len(info.vae_config["block_out_channels"])
    enc_prefix = encoder_prefix(keys)
    unknown = []
    for key in sorted(keys):
        targets: list[tuple[Component, str, Transform]] = []
        if key.startswith(UNET):
            t = _unet_rename(key, info.unet_config)
            targets = [(unet, t, _identity)] if t else []
        elif key.startswith(DECODER):
            t = _decoder_rename(key[len(DECODER):], levels, temporal)
            targets = [(vae, t, _as_linear if ".attn_1." in key else _identity)] if t else []
        elif key.startswith(enc_prefix + "encoder."):
            t = _encoder_rename(key[len(enc_prefix + "encoder."):])
            targets = [(vae, t, _as_linear if ".attn_1." in key else _identity)] if t else []
        elif key.startswith(enc_prefix + "quant_conv."):
            targets = [(vae, "quant_conv." + key.rsplit(".", 1)[1], _identity)]
        elif key.startswith(ENCODER_FIRST + "post_quant_conv.") and not temporal:
            targets = [(vae, "post_quant_conv." + key.rsplit(".", 1)[1], _identity)]
        elif key.startswith(CLIP):
            targets = [(enc, t, f) for t, f in _clip_rename(key[len(CLIP):])]
        elif _ignored(key, enc_prefix):
            continue
        if not targets:
            unknown.append(key)
            continue
        for comp, t, f in targets:
            comp.plan[t] = (key, f)
    if unknown:
        raise ModelUnavailable(
            f"{info.path}: {len(unknown)} unexpected key(s) for {EXPECTED}: {', '.join(unknown[:4])}"
            + (", ..." if len(unknown) > 4 else "")
            + "."
        )
    if "quant_conv.weight" not in vae.plan:  # SGM's video autoencoder has none: identity
        vae.plan["quant_conv.weight"] = (None, "eye")
        vae.plan["quant_conv.bias"] = (None, "zeros")
    return [unet, vae, enc]


def meta_model(comp: Component):
    """The target module on the meta device (shapes only)."""
    import torch

    with torch.device("meta"):
        if comp.library == "transformers":
            from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

            return CLIPVisionModelWithProjection(CLIPVisionConfig(**comp.config))
        import diffusers

        return getattr(diffusers, comp.cls).from_config(comp.config)


def check_plan(info, comps: list[Component], shapes: dict) -> dict[str, dict[str, tuple[int, ...]]]:
    """Every target parameter filled, with the shape its config expects; returns {component: {key: shape}}."""
    out = {}
    for comp in comps:
        model = meta_model(comp)
        expected = {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.endswith("position_ids")}
        missing = sorted(set(expected) - set(comp.plan))
        extra = sorted(set(comp.plan) - set(expected))
        if missing or extra:
            names = missing[:4] or [comp.plan[k][0] for k in extra[:4]]
            what = "missing for" if missing else "without a place in"
            raise ModelUnavailable(
                f"{info.path}: {len(missing or extra)} tensor(s) {what} SVD's {comp.name} "
                f"({', '.join(str(n) for n in names)}{', ...' if len(missing or extra) > 4 else ''}); expected {EXPECTED}."
            )
        for k, shape in expected.items():
            src, f = comp.plan[k]
            if src is None:
                continue
            got = _planned_shape(shapes[src][1], f)
            if got != shape:
                raise unfit(info.path, f"{src} has shape {list(shapes[src][1])}, {comp.name} {k} needs {list(shape)}")
        out[comp.name] = expected
    return out


def _planned_shape(shape: tuple[int, ...], f) -> tuple[int, ...]:
    if f is _transpose:
        return (shape[1], shape[0])
    if f is _as_linear and len(shape) == 4:
        return shape[:2]
    if getattr(f, "__name__", "") == "f":  # q/k/v thirds of in_proj
        return (shape[0] // 3, *shape[1:])
    return tuple(shape)
