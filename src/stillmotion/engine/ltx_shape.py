"""LTX-Video 0.9.x's shape for the transformer planner (dit_plan.py): its published configs and its stages' dry runs.

LTXImageToVideoPipeline holds a DiT (LTXVideoTransformer3DModel: 2B in 0.9.0-0.9.6, 13B in 0.9.7/0.9.8), the T5
v1.1 XXL text encoder (4.8B: 9.5 GB in bf16) and the video VAE (32x spatial, 8x temporal, 128 latent channels,
patch size 1: one token per latent). Stages, at the run's full size: T5 on the padded prompt (128 tokens), the
VAE encode of the image, ONE transformer pass (guidance batches the conditional and unconditional inputs: a batch
of two), the VAE decode (timestep-conditioned from 0.9.1 on; tiled: diffusers' own tiled decode, run on meta
whole). The text encoder is encoded first and freed, the transformer streams block by block.

Published configs (the `ltx-video-0.9.7-distilled` entry): the 13B transformer is Lightricks/LTX-Video-0.9.7-dev's
transformer/config.json (32 heads of 128, 48 layers, cross-attention 4096; the distilled model shares every
shape); the VAE is the 0.9.5-and-later one (LTXVideo095DownBlock3D, encoder 128..2048 wide, decoder 256..1024,
timestep-conditioned; the same config as the 0.9.8 repos publish); T5 is google/t5-v1_1-xxl's encoder config.

Seconds: no published LTX-Video 0.9.7 timing is named here; the efficiency is LTX-2's (gpus.json `ltx2_reference`,
the nearest published run of an LTX DiT in bf16), which the estimate's basis line names.
"""

from __future__ import annotations


from .dit_shapes import DiTShape, Layout, encoder_stage, entry_shapes, run_dtype
from .dryrun import DryRun
from .ltx2_shape import vae_encode, video_decode

TEXT_TOKENS = 128  # the pipelines pad every prompt to max_sequence_length = 128 tokens

LTXV_13B = {"in_channels": 128, "out_channels": 128, "patch_size": 1, "patch_size_t": 1, "num_attention_heads": 32,
            "attention_head_dim": 128, "cross_attention_dim": 4096, "num_layers": 48, "caption_channels": 4096,
            "activation_fn": "gelu-approximate", "qk_norm": "rms_norm_across_heads", "norm_elementwise_affine": False,
            "norm_eps": 1e-6, "attention_bias": True, "attention_out_bias": True}
LTXV_095_VAE = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 128, "block_out_channels": [128, 256, 512, 1024, 2048],
    "decoder_block_out_channels": [256, 512, 1024], "layers_per_block": [4, 6, 6, 2, 2],
    "decoder_layers_per_block": [5, 5, 5, 5], "spatio_temporal_scaling": [True, True, True, True],
    "decoder_spatio_temporal_scaling": [True, True, True], "decoder_inject_noise": [False, False, False, False],
    "down_block_types": ["LTXVideo095DownBlock3D"] * 4,
    "downsample_type": ["spatial", "temporal", "spatiotemporal", "spatiotemporal"],
    "upsample_residual": [True, True, True], "upsample_factor": [2, 2, 2], "timestep_conditioning": True,
    "patch_size": 4, "patch_size_t": 1, "resnet_norm_eps": 1e-6, "scaling_factor": 1.0, "encoder_causal": True,
    "decoder_causal": False, "spatial_compression_ratio": 32, "temporal_compression_ratio": 8}
T5_XXL = {"vocab_size": 32128, "d_model": 4096, "d_kv": 64, "d_ff": 10240, "num_layers": 24, "num_heads": 64,
          "relative_attention_num_buckets": 32, "relative_attention_max_distance": 128,
          "feed_forward_proj": "gated-gelu", "tie_word_embeddings": False}


def ltx_configs(name: str) -> dict:
    """Every component's config of a registry LTX-Video entry (0.9.7 13B)."""
    return {"transformer": LTXV_13B, "vae": LTXV_095_VAE, "text_encoder": T5_XXL}


def ltx_classes() -> dict:
    import diffusers
    import transformers

    return {"transformer": diffusers.LTXVideoTransformer3DModel, "vae": diffusers.AutoencoderKLLTXVideo,
            "text_encoder": transformers.T5EncoderModel}



# ----------------------------------------------------------------------------
def _sizes(shape: DiTShape, frames: int, height: int, width: int) -> dict:
    vae, tr = shape.modules["vae"], shape.modules["transformer"].config
    st, tt = vae.spatial_compression_ratio, vae.temporal_compression_ratio
    lf, h, w = (frames - 1) // tt + 1, height // st, width // st
    return {"lf": lf, "h": h, "w": w, "tokens": lf // tr.patch_size_t * (h // tr.patch_size) * (w // tr.patch_size)}


def _denoise(shape, frames, height, width, tiling, cfg, **knobs):
    import torch

    sz, tr, dt = _sizes(shape, frames, height, width), shape.modules["transformer"], run_dtype(shape)
    b = 2 if cfg else 1
    with DryRun() as run:
        latents = torch.empty(1, sz["tokens"], tr.config.in_channels, dtype=torch.float32, device="meta")
        text = torch.empty(b, TEXT_TOKENS, tr.config.caption_channels, dtype=dt, device="meta")
        mask = torch.ones(b, TEXT_TOKENS, dtype=torch.long, device="meta")
        noise = tr(hidden_states=latents.repeat(b, 1, 1).to(dt), encoder_hidden_states=text,
                   timestep=torch.empty(b, sz["tokens"], device="meta"), encoder_attention_mask=mask,
                   num_frames=sz["lf"], height=sz["h"], width=sz["w"], rope_interpolation_scale=(0.32, 32, 32),
                   return_dict=False)[0]
        latents + noise.float()[:1]  # guidance and the scheduler step (a few FLOPs)
        return run.mode.peak, run.stage_flops()


def _calls(shape: DiTShape, frames: int, steps: int, cfg: bool, **knobs) -> dict:
    """Per video: T5 on the prompt and the negative, the transformer once a step (a batch of two with guidance),
    the decodes once."""
    return {"text": 2 if cfg else 1, "vae_encode": 1, "denoise": steps, "decode": 1}


LTX = Layout(
    components=("transformer", "text_encoder", "vae"), denoisers=("transformer",), text_encoders=("text_encoder",),
    stages={"text": (("text_encoder",), encoder_stage(TEXT_TOKENS)), "vae_encode": (("vae",), vae_encode),
            "denoise": (("transformer",), _denoise), "decode": (("vae",), video_decode)},
    calls=_calls, text_off="first", group_level="block", reference="ltx2_reference", batched_cfg=True)


ltx_shape = entry_shapes(LTX, ltx_classes, ltx_configs, "LTX-Video")
