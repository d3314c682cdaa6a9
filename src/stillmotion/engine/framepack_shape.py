"""FramePack's shape for the transformer planner (dit_plan.py): its published configs and its stages' dry runs.

HunyuanVideoFramepackPipeline holds the 13B HunyuanVideo transformer with FramePack's packing
(HunyuanVideoFramepackTransformer3DModel), two text encoders (the Llama of llava-llama-3-8b, 7.5B, and
CLIP-L's text tower), SigLIP (so400m, 384 px) for the image, and the HunyuanVideo VAE. A video is made
section by section: each section is `latent_window_size` latent frames (4 frames each), denoised with the
image, the latest frames and a compressed history packed beside them, so one transformer pass is the same
size however long the video is. Stages, at the run's full size: the Llama on the templated prompt (256
tokens + the template's 95), CLIP on 77, SigLIP, the VAE encode of the image, ONE transformer pass of a
section (the distilled guidance is an embedding: one pass a step; a real CFG scale above 1 runs a second,
after the first), and one section's VAE decode (families/framepack.py decodes section by section and
blends them into a video kept in host memory). The text encoders run first and are freed; the transformer streams layer by
layer (leaf-level group offload, on a CUDA stream): the 6 GB tier.

Published configs (registry entries): the transformer is diffusers' HunyuanVideo defaults with FramePack's
image projection (SigLIP's 1152) and clean-latent embedders, as lllyasviel/FramePackI2V_HY's config.json
(the same values Kijai's loaders write); the VAE is diffusers' AutoencoderKLHunyuanVideo defaults
(hunyuanvideo-community/HunyuanVideo); the Llama is that folder's text_encoder (Llama-3-8B shapes, 128320
tokens); CLIP-L is openai/clip-vit-large-patch14's text tower; SigLIP is google/siglip-so400m-patch14-384's
vision tower (lllyasviel/flux_redux_bfl's image_encoder).
"""

from __future__ import annotations

import math

from .dit_shapes import (DiTShape, Layout, entry_shapes, run_dtype, spatial_tiles,
                         tiled_decode)
from .dryrun import DryRun

LLAMA_TOKENS = 256 + 95  # max_sequence_length + the prompt template's crop_start (the template is encoded too)
CLIP_TOKENS = 77
HISTORY = (1, 2, 16)  # the history latent frames kept at 1x, 2x and 4x compression (both sampling types)
WINDOW = 9  # latent_window_size, FramePack's default

TRANSFORMER = {"has_image_proj": True, "image_proj_dim": 1152, "has_clean_x_embedder": True}
LLAMA = {"hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
         "num_key_value_heads": 8, "vocab_size": 128320, "rope_theta": 500000.0, "max_position_embeddings": 8192,
         "rms_norm_eps": 1e-5}
CLIP_L = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
          "vocab_size": 49408, "max_position_embeddings": 77, "projection_dim": 768, "hidden_act": "quick_gelu"}
SIGLIP = {"hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 27, "num_attention_heads": 16,
          "image_size": 384, "patch_size": 14}


def framepack_configs(name: str) -> dict:
    """Every component's config of a registry FramePack entry (FramePack and F1 share every shape)."""
    return {"transformer": TRANSFORMER, "vae": {}, "text_encoder": LLAMA, "text_encoder_2": CLIP_L,
            "image_encoder": SIGLIP}


def framepack_classes() -> dict:
    import diffusers
    import transformers

    return {"transformer": diffusers.HunyuanVideoFramepackTransformer3DModel,
            "vae": diffusers.AutoencoderKLHunyuanVideo, "text_encoder": transformers.LlamaModel,
            "text_encoder_2": transformers.CLIPTextModel, "image_encoder": transformers.SiglipVisionModel}



def sections(frames: int, window: int = WINDOW) -> int:
    """The sections a video of `frames` takes: 4 x window frames each, after the first frame."""
    return max(1, math.ceil((frames - 1) / (4 * window)))


# ----------------------------------------------------------------------------
def _text(shape, frames, height, width, tiling, cfg, **knobs):
    import torch

    with DryRun() as run:
        ids = torch.zeros(1, LLAMA_TOKENS, dtype=torch.long, device="meta")
        shape.modules["text_encoder"](input_ids=ids, output_hidden_states=True).hidden_states[-3]  # no mask: same work
        return run.mode.peak, run.stage_flops()


def _text_2(shape, frames, height, width, tiling, cfg, **knobs):
    import torch

    with DryRun() as run:
        shape.modules["text_encoder_2"](torch.zeros(1, CLIP_TOKENS, dtype=torch.long, device="meta")).pooler_output
        return run.mode.peak, run.stage_flops()


def _image(shape, frames, height, width, tiling, cfg, **knobs):
    import torch

    enc = shape.modules["image_encoder"]
    size = enc.config.image_size  # SigLIP so400m: 384 px (the feature extractor resizes to it)
    with DryRun() as run:
        enc(pixel_values=torch.empty(1, 3, size, size, dtype=run_dtype(shape), device="meta")).last_hidden_state
        return run.mode.peak, run.stage_flops()


def _vae_encode(shape, frames, height, width, tiling, cfg, **knobs):
    import torch

    vae = shape.modules["vae"]
    with DryRun() as run:
        vae.encode(torch.empty(1, 3, 1, height, width, dtype=run_dtype(shape), device="meta")).latent_dist.sample()
        return run.mode.peak, run.stage_flops()


def _denoise(shape, frames, height, width, tiling, cfg, window: int = WINDOW, **knobs):
    """One transformer pass of a section: its latents with the image, the latest frames and the history."""
    import torch

    tr, dt = shape.modules["transformer"], run_dtype(shape)
    vae = shape.modules["vae"]
    c, s = tr.config.in_channels, vae.spatial_compression_ratio
    h, w = height // s, width // s
    lat = lambda n, dtype=dt: torch.empty(1, c, n, h, w, dtype=dtype, device="meta")  # noqa: E731
    idx = lambda n: torch.arange(n)  # noqa: E731  (indices stay on the CPU, as the pipeline makes them)
    siglip = shape.modules["image_encoder"]
    tokens = (siglip.config.image_size // siglip.config.patch_size) ** 2 if siglip is not None else 729
    # the prompt's mask stays on the CPU so that the model can read the prompt's length, as it does in a real run;
    # its token refiner gets a meta copy
    mask = torch.ones(1, LLAMA_TOKENS - 95, dtype=torch.long)
    refiner = tr.context_embedder.forward
    tr.context_embedder.forward = lambda states, t, m: refiner(states, t, m.to("meta"))
    try:
        with DryRun() as run:
            latents = lat(window, torch.float32)
            out = tr(hidden_states=latents.to(dt), timestep=torch.empty(1, device="meta"),
                     encoder_hidden_states=torch.empty(1, LLAMA_TOKENS - 95, tr.config.text_embed_dim, dtype=dt,
                                                       device="meta"),
                     encoder_attention_mask=mask,
                     pooled_projections=torch.empty(1, tr.config.pooled_projection_dim, dtype=dt, device="meta"),
                     image_embeds=torch.empty(1, tokens, tr.config.image_proj_dim, dtype=dt, device="meta"),
                     indices_latents=idx(window), guidance=torch.empty(1, dtype=dt, device="meta"),
                     latents_clean=lat(1 + HISTORY[0]), indices_latents_clean=idx(1 + HISTORY[0]),
                     latents_history_2x=lat(HISTORY[1]), indices_latents_history_2x=idx(HISTORY[1]),
                     latents_history_4x=lat(HISTORY[2]), indices_latents_history_4x=idx(HISTORY[2]),
                     return_dict=False)[0]
            latents = latents + out.float()  # the scheduler step
            return run.mode.peak, run.stage_flops()
    finally:
        del tr.context_embedder.forward


def _decode(shape, frames, height, width, tiling, cfg, window: int = WINDOW, **knobs):
    """One section's decode: the latest 2 x window + 1 latent frames at most (a video of one section decodes
    window + 1). The family decodes section by section and keeps the video in host memory (dit_plan.host_bytes
    counts it there), so the device holds one section's. Tiled: one tile's dry run (dit_shapes.tiled_decode;
    the VAE decodes frame chunks either way, its framewise decoding). FLOPs: one section's decode."""
    import torch

    vae, dt = shape.modules["vae"], run_dtype(shape)
    s, tt = vae.spatial_compression_ratio, vae.temporal_compression_ratio
    n = window + 1 if sections(frames, window) == 1 else 2 * window + 1
    tile = spatial_tiles(vae, height, width, s) if tiling else None
    h, w = (tile["h"], tile["w"]) if tile else (height, width)
    with DryRun() as run:
        z = torch.empty(1, vae.config.latent_channels, n, h // s, w // s, dtype=dt, device="meta")
        vae.decode(z, return_dict=False)[0]
        peak, flops = run.mode.peak, run.stage_flops()
    if tile:
        element = torch.empty((), dtype=dt).element_size()
        return tiled_decode(peak, flops, tile, (n - 1) * tt + 1, height, width, element)
    return peak, flops


def _knobs(spec) -> dict:
    window = getattr(spec, "latent_window_size", None) or WINDOW
    true_cfg = getattr(spec, "true_cfg_scale", None)
    return {"window": window, "true_cfg": bool(true_cfg is not None and true_cfg > 1)}


def _calls(shape: DiTShape, frames: int, steps: int, cfg: bool, window: int = WINDOW, true_cfg: bool = False,
           **knobs) -> dict:
    """Per video: the encoders once (twice with a real CFG: the negative prompt), every section's steps (two
    passes each with a real CFG; FramePack's distilled guidance is one), every section's decode."""
    n, passes = sections(frames, window), 2 if true_cfg else 1
    return {"text": passes, "text_2": passes, "image": 1, "vae_encode": 1, "denoise": n * steps * passes,
            "decode": n}


FRAMEPACK = Layout(
    components=("transformer", "text_encoder", "text_encoder_2", "image_encoder", "vae"),
    denoisers=("transformer",), text_encoders=("text_encoder", "text_encoder_2"),
    stages={"text": (("text_encoder",), _text), "text_2": (("text_encoder_2",), _text_2),
            "image": (("image_encoder",), _image), "vae_encode": (("vae",), _vae_encode),
            "denoise": (("transformer",), _denoise), "decode": (("vae",), _decode)},
    calls=_calls, knobs=_knobs, profile_knobs=("window",), text_off="first", group_level="leaf", reference="framepack_reference",
    text_stages=("text", "text_2"))


framepack_shape = entry_shapes(FRAMEPACK, framepack_classes, framepack_configs, "FramePack")
