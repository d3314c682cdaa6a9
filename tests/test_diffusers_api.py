"""The diffusers internals stillmotion calls are still there, with the parameters it passes.

diffusers has no public API for these, so a release may rename or change them without notice;
pyproject.toml pins diffusers to the versions this test has passed on. When it fails after an
upgrade, its message names each internal that changed and where stillmotion uses it.
"""

from __future__ import annotations

import inspect

import diffusers
from diffusers import DiffusionPipeline, StableVideoDiffusionPipeline
from diffusers.pipelines.stable_video_diffusion import pipeline_stable_video_diffusion as svd_module

# what we use -> (where, and the leading parameter names we rely on, in order; None: a property)
USED = {
    "StableVideoDiffusionPipeline._encode_image": (
        "engine/keyframes.py (each keyframe's CLIP embedding, called positionally)",
        ["image", "device", "num_videos_per_prompt", "do_classifier_free_guidance"]),
    "DiffusionPipeline._execution_device": (
        "engine/keyframes.py (the device the weights run on under CPU offload)", None),
    "pipeline_stable_video_diffusion._resize_with_antialiasing": (
        "train/objective.py (the CLIP input resize of the training objective)", ["input", "size"]),
    # not private by name, but internal to the pipeline module, and called positionally
    "pipeline_stable_video_diffusion.retrieve_timesteps": (
        "engine/keyframes.py (called positionally)",
        ["scheduler", "num_inference_steps", "device", "timesteps", "sigmas"]),
    "StableVideoDiffusionPipeline.prepare_latents": (
        "engine/keyframes.py (called positionally)",
        ["batch_size", "num_frames", "num_channels_latents", "height", "width", "dtype", "device", "generator",
         "latents"]),
    # LTX (families/ltx.py decodes the latents the pipelines return with output_type="latent", as their __call__ ends)
    "LTX2ImageToVideoPipeline._normalize_latents": (
        "families/ltx.py (LTX-2's latents come back denormalised; renormalised to decode as the pipeline does)",
        ["latents", "latents_mean", "latents_std", "scaling_factor"]),
    "LTX2ImageToVideoPipeline._denormalize_latents": (
        "families/ltx.py (the video latents before the VAE)", ["latents", "latents_mean", "latents_std",
                                                              "scaling_factor"]),
    "LTXImageToVideoPipeline._denormalize_latents": (
        "families/ltx.py (the video latents before the VAE)", ["latents", "latents_mean", "latents_std",
                                                              "scaling_factor"]),
    "LTXImageToVideoPipeline._unpack_latents": (
        "families/ltx.py (LTX-Video's packed latents, called positionally)",
        ["latents", "num_frames", "height", "width", "patch_size", "patch_size_t"]),
    # --audio (families/ltx_audio.py): the given soundtrack's latents packed and normalised as the pipeline does, and
    # the transformer's audio stream, timestep and sigma replaced by keyword in a forward pre-hook
    "LTX2ImageToVideoPipeline._pack_audio_latents": (
        "families/ltx_audio.py (the clean audio tokens the transformer reads)", ["latents"]),
    "LTX2ImageToVideoPipeline._normalize_audio_latents": (
        "families/ltx_audio.py (the clean audio tokens the transformer reads)",
        ["latents", "latents_mean", "latents_std"]),
    "LTX2VideoTransformer3DModel.forward": (
        "families/ltx_audio.py (freeze_audio: audio_hidden_states, audio_timestep, audio_sigma set by keyword)",
        ["hidden_states", "audio_hidden_states", "encoder_hidden_states", "audio_encoder_hidden_states", "timestep",
         "audio_timestep", "sigma", "audio_sigma"]),
    # First Block Cache (families/caching.py): LTX-2's block registered, the passes counted
    "TransformerBlockRegistry.register": (
        "families/caching.py (LTX-2's audio-video block for First Block Cache)", ["model_class", "metadata"]),
    "TransformerBlockMetadata._get_parameter_from_args_kwargs": (
        "families/caching.py (overridden: the audio stream where the hook reads encoder_hidden_states)",
        ["identifier", "args", "kwargs"]),
    "FBCHeadBlockHook._should_compute_remaining_blocks": (
        "families/caching.py (wrapped to count full and cached passes)", ["hidden_states_residual"]),
    "HunyuanVideoFramepackPipeline._soft_append": (
        "families/framepack.py (the section cross-fade of the pipeline's own decode)", ["history", "current", "overlap"]),
    "CacheMixin._reset_stateful_cache": (
        "families/caching.py (First Block Cache afresh in each FramePack section)", ["recurse"]),
}


def _owners() -> dict:
    from diffusers import (HunyuanVideoFramepackPipeline, LTX2ImageToVideoPipeline, LTX2VideoTransformer3DModel,
                           LTXImageToVideoPipeline)
    from diffusers.models.cache_utils import CacheMixin
    from diffusers.hooks._helpers import TransformerBlockMetadata, TransformerBlockRegistry
    from diffusers.hooks.first_block_cache import FBCHeadBlockHook

    return {"StableVideoDiffusionPipeline": StableVideoDiffusionPipeline, "DiffusionPipeline": DiffusionPipeline,
            "pipeline_stable_video_diffusion": svd_module, "LTX2ImageToVideoPipeline": LTX2ImageToVideoPipeline,
            "LTXImageToVideoPipeline": LTXImageToVideoPipeline, "TransformerBlockRegistry": TransformerBlockRegistry,
            "TransformerBlockMetadata": TransformerBlockMetadata, "FBCHeadBlockHook": FBCHeadBlockHook,
            "HunyuanVideoFramepackPipeline": HunyuanVideoFramepackPipeline, "CacheMixin": CacheMixin,
            "LTX2VideoTransformer3DModel": LTX2VideoTransformer3DModel}


def test_the_first_block_cache_hook_name_is_still_there():
    """families/caching.py finds the head block's hook by this registry name to count passes."""
    from diffusers.hooks import first_block_cache

    assert isinstance(getattr(first_block_cache, "_FBC_LEADER_BLOCK_HOOK", None), str)


def test_diffusers_internals_we_use_are_unchanged():
    problems = []
    owners = _owners()
    for name, (where, params) in USED.items():
        owner, attr = name.split(".")
        try:
            obj = inspect.getattr_static(owners[owner], attr)
        except AttributeError:
            problems.append(f"{name} is gone; used in {where}")
            continue
        if params is None:
            if not isinstance(obj, property):
                problems.append(f"{name} is no longer a property (now {type(obj).__name__}); used in {where}")
            continue
        fn = obj.__func__ if isinstance(obj, (staticmethod, classmethod)) else obj
        got = [p for p in inspect.signature(fn).parameters if p not in ("self", "cls")][: len(params)]
        if got != params:
            problems.append(f"{name} now takes ({', '.join(got)}), we pass ({', '.join(params)}); used in {where}")
    assert not problems, (f"diffusers {diffusers.__version__} changed internals stillmotion uses:\n  "
                          + "\n  ".join(problems))
