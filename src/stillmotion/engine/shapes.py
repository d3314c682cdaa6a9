"""Model shapes: a model's components on PyTorch's `meta` device, without weights.

The planner and `stillmotion estimate` count memory and FLOPs on these
(dryrun.py, profile.py): the components are built from their configs, so the
counts follow the real model code. `model_shape(entry)` takes them from what
the model entry says it is (models/registry.Source): a registry model's
published configs, a single-file checkpoint's header, else the folder the
model resolves to without a download (a built-in, a local folder, a cached hub
snapshot); `model_shape_from_modules` from a loaded pipeline.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

from ..util import quiet_diffusers


@dataclass
class ModelShape:
    """A model's components as shapes only (meta device), and the bytes of their weights at a dtype."""

    unet: object
    vae: object
    image_encoder: object
    weights: dict = field(default_factory=dict)  # component -> bytes at `dtype`
    largest_layer: int = 0  # bytes of the biggest leaf module (sequential offload)
    dtype_bytes: int = 4
    name: str = ""
    profiles: object = field(default=None, repr=False, compare=False)  # its profile.ProfileCache, once used

    @property
    def weights_total(self) -> int:
        return sum(self.weights.values())


def vae_upcast(shape: ModelShape) -> bool:
    """Whether the pipeline runs this VAE in fp32 under an fp16 model (its config's force_upcast)."""
    return shape.dtype_bytes == 2 and bool(getattr(shape.vae.config, "force_upcast", False))


def decode_kwargs(vae, n: int) -> dict:
    """What `vae.decode` takes besides the latents for `n` frames (the engine's and the dry run's decode)."""
    # the temporal decoder takes num_frames; a per-frame AutoencoderKL (image-decoder checkpoints) does not
    return {} if type(vae).__name__ == "AutoencoderKL" else {"num_frames": n}


def _meta_build(cls, config):
    import torch

    with torch.device("meta"):
        if hasattr(cls, "from_config"):
            return cls.from_config(config).eval()
        return cls(config).eval()


def model_shape_from_modules(unet, vae, image_encoder, dtype, name: str = "") -> ModelShape:
    """ModelShape for loaded components (their configs; their weights counted at `dtype`)."""
    return _shape(
        _meta_build(type(unet), unet.config),
        _meta_build(type(vae), vae.config),
        _meta_build(type(image_encoder), image_encoder.config),
        dtype,
        name,
    )


def _shape(unet, vae, enc, dtype, name) -> ModelShape:
    import torch

    with quiet_diffusers():  # buffers made with torch.Tensor([..]) start on the CPU: move everything
        unet, vae, enc = (m.to("meta", dtype) for m in (unet, vae, enc))

    size = torch.empty((), dtype=dtype).element_size()
    weights = {}
    largest = 0
    for comp, m in (("unet", unet), ("vae", vae), ("image_encoder", enc)):
        weights[comp] = sum(t.numel() for t in list(m.parameters()) + list(m.buffers())) * size
        for leaf in m.modules():
            if next(iter(leaf.children()), None) is None:
                largest = max(largest, sum(p.numel() for p in leaf.parameters(recurse=False)) * size)
    return ModelShape(unet, vae, enc, weights, largest, size, name)


def model_shape(model, dtype_name: str = "fp16", attention: str = "sdpa") -> ModelShape:
    """ModelShape of a model entry (or a --model value), without loading weights, with `attention`'s kernel
    (engine/speed.set_attention) so that the dry run counts the kernel that runs. Shared: do not change it."""
    if isinstance(model, str):
        from ..models.resolve import entry_for

        model = entry_for(model)
    return _entry_shape(model, dtype_name, attention)


@functools.lru_cache(maxsize=8)
def _entry_shape(entry, dtype_name: str, attention: str) -> ModelShape:
    import diffusers
    from transformers import CLIPVisionConfig

    from ..util import torch_dtype
    from .speed import set_attention

    dtype = torch_dtype(dtype_name)
    if entry.source == "registry" and entry.kind == "video":  # published configs: nothing to download
        unet_cfg, vae_cfg, clip_cfg = svd_configs(entry.defaults.num_frames)
        shape = _configs_shape(unet_cfg, diffusers.AutoencoderKLTemporalDecoder, vae_cfg, CLIPVisionConfig(**clip_cfg),
                               dtype, entry.name)
    elif entry.source == "single-file":  # configs from the file's header
        from ..models.sgm_keys import vae_class
        from ..models.single_file import inspect_file

        info = inspect_file(entry.name)
        shape = _configs_shape(info.unet_config, getattr(diffusers, vae_class(info.vae)), info.vae_config,
                               CLIPVisionConfig(**info.clip_config), dtype, entry.name)
    else:  # a built-in, a local folder or a hub snapshot: the configs of the folder it resolves to, not downloading
        from ..models.resolve import resolve

        shape = _folder_shape(resolve(entry.name, download=False, progress=False).path, dtype, entry.name)
    set_attention(shape.unet, attention)
    return shape


def _folder_shape(folder, dtype, name: str) -> ModelShape:
    """ModelShape from the component configs of a diffusers folder."""
    import diffusers
    from transformers import CLIPVisionConfig

    unet_cfg = diffusers.UNetSpatioTemporalConditionModel.load_config(folder / "unet")
    vae_cfg = diffusers.AutoencoderKLTemporalDecoder.load_config(folder / "vae")
    vae_cls = getattr(diffusers, vae_cfg.get("_class_name") or "", diffusers.AutoencoderKLTemporalDecoder)  # or AutoencoderKL
    return _configs_shape(unet_cfg, vae_cls, vae_cfg, CLIPVisionConfig.from_pretrained(folder / "image_encoder"), dtype,
                          name)


def _configs_shape(unet_cfg, vae_cls, vae_cfg, clip_cfg, dtype, name: str) -> ModelShape:
    """ModelShape built from an SVD UNet config, a VAE class and config, and a CLIPVisionConfig."""
    from diffusers import UNetSpatioTemporalConditionModel
    from transformers import CLIPVisionModelWithProjection

    return _shape(
        _meta_build(UNetSpatioTemporalConditionModel, unet_cfg),
        _meta_build(vae_cls, vae_cfg),
        _meta_build(CLIPVisionModelWithProjection, clip_cfg),
        dtype,
        name,
    )


def svd_configs(num_frames: int = 25) -> tuple[dict, dict, dict]:
    """The published SVD / SVD-XT component configs (UNet = diffusers' defaults; VAE; CLIP ViT-H/14 vision)."""
    unet = {"num_frames": num_frames}  # everything else is UNetSpatioTemporalConditionModel's default = SVD
    vae = {
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ["DownEncoderBlock2D"] * 4,
        "block_out_channels": [128, 256, 512, 512],
        "layers_per_block": 2,
        "latent_channels": 4,
        "sample_size": 768,
        "scaling_factor": 0.18215,
        "force_upcast": True,
    }
    clip = {
        "hidden_size": 1280,
        "intermediate_size": 5120,
        "num_hidden_layers": 32,
        "num_attention_heads": 16,
        "projection_dim": 1024,
        "image_size": 224,
        "patch_size": 14,
        "hidden_act": "gelu",
    }
    return unet, vae, clip
