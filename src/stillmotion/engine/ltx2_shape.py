"""LTX-2's shape for the transformer planner (dit_plan.py): its published configs and its stages' dry runs.

LTX2ImageToVideoPipeline holds a 19B audio-video transformer (LTX2VideoTransformer3DModel), the Gemma-3
12B text encoder (Gemma3ForConditionalGeneration: the main cost beside the transformer, 24 GB in bf16),
the text connectors, the video VAE (32x spatial, 8x temporal, 128 latent channels), the audio VAE and the
vocoder. Stages, at the run's full size: Gemma on the padded prompt (1024 tokens; every layer's hidden
state is kept and stacked), the connectors, the VAE encode of the image, ONE transformer pass (guidance
batches the conditional and unconditional inputs: a batch of two; spatio-temporal guidance (STG) and
modality isolation add a pass each of batch one), the VAE decode (tiled: diffusers' own tiled decode, run
on meta whole) and the audio decode and vocoder. The text encoder is encoded first and freed (Gemma on a
host CPU would take minutes), the transformer streams block by block.

Published configs (registry entries): diffusers' class defaults are LTX-2 19B's for the transformer, the
video VAE, the audio VAE, the connectors and the vocoder (diffusers' scripts/convert_ltx2_to_diffusers.py
writes the same values for version "2.0"; counted: 18.9B, 1.2B, 0.05B, 1.4B, 0.06B parameters); Gemma-3
12B is google/gemma-3-12b-it's config.json (the script's text model, gemma-3-12b-it-qat-q4_0-unquantized, has
the same shapes) (text 3840 wide, 48 layers, 16 heads / 8 KV heads of 256, MLP
15360, vocabulary 262208; the SigLIP vision tower 1152 wide, 27 layers, 896 px): 12.2B parameters.
"""

from __future__ import annotations

import math

from .dit_shapes import DiTShape, Layout, entry_shapes, run_dtype
from .dryrun import DryRun

TEXT_TOKENS = 1024  # the pipeline pads every prompt to max_sequence_length = 1024 tokens
STG_DEFAULT, MODALITY_DEFAULT = 1.0, 3.0  # LTX2ImageToVideoPipeline.__call__'s defaults

GEMMA3_12B = {
    "text_config": {"hidden_size": 3840, "intermediate_size": 15360, "num_hidden_layers": 48,
                    "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 256, "vocab_size": 262208,
                    "sliding_window": 1024, "query_pre_attn_scalar": 256, "max_position_embeddings": 131072,
                    "rope_scaling": {"factor": 8.0, "rope_type": "linear"}},
    "vision_config": {"hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 27,
                      "num_attention_heads": 16, "image_size": 896, "patch_size": 14, "vision_use_head": False},
    "mm_tokens_per_image": 256,
}


# the video VAE: diffusers' defaults, with the compression ratios and the non-causal decoder that the conversion
# script ("2.0") writes (the defaults' derived spatial ratio would be 64; LTX-2's is 32)
LTX2_VAE = {"spatial_compression_ratio": 32, "temporal_compression_ratio": 8, "decoder_causal": False}


def ltx2_configs(name: str) -> dict:
    """Every component's config of a registry LTX-2 entry (the dev and distilled models share every shape)."""
    return {"transformer": {}, "vae": LTX2_VAE, "audio_vae": {}, "connectors": {}, "vocoder": {},
            "text_encoder": GEMMA3_12B}


def ltx2_classes() -> dict:
    import diffusers
    import transformers
    from diffusers.pipelines.ltx2.connectors import LTX2TextConnectors
    from diffusers.pipelines.ltx2.vocoder import LTX2Vocoder

    return {"transformer": diffusers.LTX2VideoTransformer3DModel, "vae": diffusers.AutoencoderKLLTX2Video,
            "audio_vae": diffusers.AutoencoderKLLTX2Audio, "connectors": LTX2TextConnectors, "vocoder": LTX2Vocoder,
            "text_encoder": transformers.Gemma3ForConditionalGeneration}



# ----------------------------------------------------------------------------
def _sizes(shape: DiTShape, frames: int, height: int, width: int) -> dict:
    vae, audio = shape.modules["vae"], shape.modules["audio_vae"]
    st, tt = vae.spatial_compression_ratio, vae.temporal_compression_ratio
    rate = audio.config.sample_rate / audio.config.mel_hop_length / audio.temporal_compression_ratio
    fps = 24.0  # the audio's length follows the clip's seconds; at another fps the audio tokens scale alike
    return {"lf": (frames - 1) // tt + 1, "h": height // st, "w": width // st,
            "audio": round(frames / fps * rate), "mel": audio.config.mel_bins // audio.mel_compression_ratio,
            "z": vae.config.latent_channels, "az": audio.config.latent_channels}


def _text(shape, frames, height, width, tiling, cfg, **knobs):
    import torch

    enc = shape.modules["text_encoder"]
    with DryRun() as run:
        ids = torch.zeros(1, TEXT_TOKENS, dtype=torch.long, device="meta")
        # no padding mask: the same work (a mask of 1024 x 1024 booleans is a megabyte), and meta cannot inspect one
        hidden = enc(input_ids=ids, output_hidden_states=True).hidden_states
        torch.stack(hidden, dim=-1).flatten(2, 3)
        return run.mode.peak, run.stage_flops()


def _connectors(shape, frames, height, width, tiling, cfg, **knobs):
    import torch

    conn, enc = shape.modules["connectors"], shape.modules["text_encoder"]
    b = 2 if cfg else 1
    layers = enc.config.text_config.num_hidden_layers + 1
    with DryRun() as run:
        embeds = torch.empty(b, TEXT_TOKENS, enc.config.text_config.hidden_size * layers, dtype=run_dtype(shape),
                             device="meta")
        conn(embeds, torch.ones(b, TEXT_TOKENS, dtype=torch.long, device="meta"), padding_side="left")
        return run.mode.peak, run.stage_flops()


def vae_encode(shape, frames, height, width, tiling, cfg, **knobs):
    """The LTX video VAE's encode of the image (LTX-2's and LTX-Video's)."""
    import torch

    vae = shape.modules["vae"]
    with DryRun() as run:
        vae.encode(torch.empty(1, 3, 1, height, width, dtype=run_dtype(shape), device="meta")).latent_dist.mode()
        return run.mode.peak, run.stage_flops()


def _denoise(shape, frames, height, width, tiling, cfg, **knobs):
    import torch

    sz, tr, dt = _sizes(shape, frames, height, width), shape.modules["transformer"], run_dtype(shape)
    b = 2 if cfg else 1
    tokens = sz["lf"] * sz["h"] * sz["w"]
    cap = shape.modules["connectors"]
    with DryRun() as run:
        latents = torch.empty(1, tokens, sz["z"], dtype=torch.float32, device="meta")
        audio = torch.empty(1, sz["audio"], sz["az"] * sz["mel"], dtype=torch.float32, device="meta")
        text = torch.empty(b, TEXT_TOKENS, cap.config.video_hidden_dim if not tr.config.use_prompt_embeddings
                           else tr.config.caption_channels, dtype=dt, device="meta")
        atext = torch.empty(b, TEXT_TOKENS, cap.config.audio_hidden_dim if not tr.config.use_prompt_embeddings
                            else tr.config.caption_channels, dtype=dt, device="meta")
        mask = torch.ones(b, TEXT_TOKENS, dtype=torch.long, device="meta")
        t = torch.empty(b, device="meta")
        vcoords = tr.rope.prepare_video_coords(b, sz["lf"], sz["h"], sz["w"], "meta", fps=24.0)
        acoords = tr.audio_rope.prepare_audio_coords(b, sz["audio"], "meta")
        x = latents.repeat(b, 1, 1).to(dt)
        a = audio.repeat(b, 1, 1).to(dt)
        video, sound = tr(hidden_states=x, audio_hidden_states=a, encoder_hidden_states=text,
                          audio_encoder_hidden_states=atext, timestep=torch.empty(b, tokens, device="meta"),
                          audio_timestep=t, sigma=t, encoder_attention_mask=mask, audio_encoder_attention_mask=mask,
                          num_frames=sz["lf"], height=sz["h"], width=sz["w"], fps=24.0, audio_num_frames=sz["audio"],
                          video_coords=vcoords, audio_coords=acoords, return_dict=False)
        latents = latents + video.float()[:1]  # guidance and the scheduler step (a few FLOPs)
        audio = audio + sound.float()[:1]
        return run.mode.peak, run.stage_flops()


def video_decode(shape, frames, height, width, tiling, cfg, **knobs):
    """The LTX video VAE's decode of the whole clip's latents (LTX-2's and LTX-Video's: the same VAE design; tiled:
    diffusers' own tiled decode, run on meta whole)."""
    import torch

    vae = shape.modules["vae"]
    st, tt = vae.spatial_compression_ratio, vae.temporal_compression_ratio
    if tiling:
        vae.enable_tiling()
    try:
        with DryRun() as run:
            z = torch.empty(1, vae.config.latent_channels, (frames - 1) // tt + 1, height // st, width // st,
                            dtype=run_dtype(shape), device="meta")
            t = torch.empty((), device="meta") if vae.config.timestep_conditioning else None
            video = vae.decode(z, t, return_dict=False)[0]
            (video.float() / 2 + 0.5).clamp(0, 1)
            return run.mode.peak, run.stage_flops()
    finally:
        vae.disable_tiling()


def _audio(shape, frames, height, width, tiling, cfg, **knobs):
    import torch

    sz, dt = _sizes(shape, frames, height, width), run_dtype(shape)
    with DryRun() as run:
        z = torch.empty(1, sz["az"], sz["audio"], sz["mel"], dtype=dt, device="meta")
        mel = shape.modules["audio_vae"].decode(z, return_dict=False)[0]
        shape.modules["vocoder"](mel)
        return run.mode.peak, run.stage_flops()


def _knobs(spec) -> dict:
    """The guidance passes a step runs beside the (batched) guided one: STG and modality isolation."""
    stg = getattr(spec, "stg_scale", None)
    modality = getattr(spec, "modality_scale", None)
    stg = STG_DEFAULT if stg is None else stg
    modality = MODALITY_DEFAULT if modality is None else modality
    return {"extra_passes": int(stg > 0) + int(modality > 1)}


def _calls(shape: DiTShape, frames: int, steps: int, cfg: bool, extra_passes: int = 0, **knobs) -> dict:
    """Per video: Gemma on the prompt and the negative, the connectors once, the transformer once a step (a
    batch of two with guidance) plus one pass of batch one per extra guidance term (counted as a batched pass's
    half with guidance), the decodes once."""
    passes = 1 + (extra_passes / 2 if cfg else extra_passes)
    return {"text": 2 if cfg else 1, "connectors": 1, "vae_encode": 1, "denoise": math.ceil(steps * passes),
            "decode": 1, "audio": 1}


LTX2 = Layout(
    components=("transformer", "text_encoder", "connectors", "vae", "audio_vae", "vocoder"),
    denoisers=("transformer",), text_encoders=("text_encoder",),
    stages={"text": (("text_encoder",), _text), "connectors": (("connectors",), _connectors),
            "vae_encode": (("vae",), vae_encode), "denoise": (("transformer",), _denoise),
            "decode": (("vae",), video_decode), "audio": (("audio_vae", "vocoder"), _audio)},
    calls=_calls, knobs=_knobs, text_off="first", group_level="block", reference="ltx2_reference",
    batched_cfg=True)


ltx2_shape = entry_shapes(LTX2, ltx2_classes, ltx2_configs, "LTX-2")
