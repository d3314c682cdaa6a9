"""The diffusers internals stillmotion calls are still there, with the parameters it passes.

diffusers has no public API for these, so a release may rename or change them without notice;
pyproject.toml pins diffusers to the versions this test has passed on. When it fails after an
upgrade, its message names each internal that changed and where stillmotion uses it.
"""

from __future__ import annotations

import inspect

import diffusers
from diffusers import DiffusionPipeline, HunyuanVideoFramepackPipeline, StableVideoDiffusionPipeline
from diffusers.models.cache_utils import CacheMixin
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
    "HunyuanVideoFramepackPipeline._soft_append": (
        "families/framepack.py (the section cross-fade of the pipeline's own decode)", ["history", "current", "overlap"]),
    "CacheMixin._reset_stateful_cache": (
        "families/cache.py (First Block Cache afresh in each FramePack section)", ["recurse"]),
}

OWNERS = {"StableVideoDiffusionPipeline": StableVideoDiffusionPipeline, "DiffusionPipeline": DiffusionPipeline,
          "pipeline_stable_video_diffusion": svd_module, "HunyuanVideoFramepackPipeline": HunyuanVideoFramepackPipeline,
          "CacheMixin": CacheMixin}


def test_diffusers_internals_we_use_are_unchanged():
    problems = []
    for name, (where, params) in USED.items():
        owner, attr = name.split(".")
        try:
            obj = inspect.getattr_static(OWNERS[owner], attr)
        except AttributeError:
            problems.append(f"{name} is gone; used in {where}")
            continue
        if params is None:
            if not isinstance(obj, property):
                problems.append(f"{name} is no longer a property (now {type(obj).__name__}); used in {where}")
            continue
        got = [p for p in inspect.signature(obj).parameters if p != "self"][: len(params)]
        if got != params:
            problems.append(f"{name} now takes ({', '.join(got)}), we pass ({', '.join(params)}); used in {where}")
    assert not problems, (f"diffusers {diffusers.__version__} changed internals stillmotion uses:\n  "
                          + "\n  ".join(problems))
