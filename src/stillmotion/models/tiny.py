"""The built-in `tiny` model: SVD's real architecture at toy width, from code.

Every component is the diffusers / transformers class the real SVD uses
(UNetSpatioTemporalConditionModel with four levels, AutoencoderKLTemporalDecoder
with its temporal decoder, CLIPVisionModelWithProjection, EulerDiscreteScheduler
with SVD's settings), built with a fixed seed so the weights are the same on
every machine. Its output is noise: it exists to exercise every code path
(loading, sampling, decoding, writing) in seconds on a CPU with no download.

`ensure_tiny()` saves it once, with save_pretrained in safetensors, under the
stillmotion cache folder and returns that folder; from then on it is loaded
like any other diffusers folder.
"""

from __future__ import annotations

import os
from pathlib import Path

TINY_VERSION = "1"


def tiny_components(seed: int = 0, width: int = 32) -> dict:
    """The five pipeline components at toy width (deterministic for a seed)."""
    import torch
    from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel

    w = width
    torch.manual_seed(seed)
    unet = UNetSpatioTemporalConditionModel(
        sample_size=8,
        in_channels=8,
        out_channels=4,
        down_block_types=(
            "CrossAttnDownBlockSpatioTemporal",
            "CrossAttnDownBlockSpatioTemporal",
            "CrossAttnDownBlockSpatioTemporal",
            "DownBlockSpatioTemporal",
        ),
        up_block_types=(
            "UpBlockSpatioTemporal",
            "CrossAttnUpBlockSpatioTemporal",
            "CrossAttnUpBlockSpatioTemporal",
            "CrossAttnUpBlockSpatioTemporal",
        ),
        block_out_channels=(w, w, 2 * w, 2 * w),
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=24,
        layers_per_block=1,
        cross_attention_dim=w,
        transformer_layers_per_block=1,
        num_attention_heads=(2, 2, 4, 4),
        num_frames=8,
    )
    torch.manual_seed(seed + 1)
    vae = AutoencoderKLTemporalDecoder(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        block_out_channels=(w, w, 2 * w, 2 * w),
        layers_per_block=1,
        latent_channels=4,
        sample_size=64,
    )
    torch.manual_seed(seed + 2)
    image_encoder = toy_image_encoder(w)
    return {
        "unet": unet.eval(),
        "vae": vae.eval(),
        "image_encoder": image_encoder.eval(),
        "scheduler": svd_scheduler(),
        "feature_extractor": clip_feature_extractor(),
    }


def toy_image_encoder(width: int = 32):
    """A CLIP vision tower with CLIP ViT's structure at toy width (224 px input, as SVD feeds it)."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    return CLIPVisionModelWithProjection(
        CLIPVisionConfig(
            hidden_size=width,
            projection_dim=width,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=2 * width,
            image_size=224,
            patch_size=32,
        )
    ).eval()


def svd_scheduler():
    """EulerDiscreteScheduler with the settings of SVD's own scheduler config (v-prediction, Karras sigmas)."""
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler(
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        interpolation_type="linear",
        num_train_timesteps=1000,
        prediction_type="v_prediction",
        sigma_max=700.0,
        sigma_min=0.002,
        steps_offset=1,
        timestep_spacing="leading",
        timestep_type="continuous",
        use_karras_sigmas=True,
    )


def clip_feature_extractor():
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(crop_size=224, size={"shortest_edge": 224})


def build_tiny_pipeline(seed: int = 0):
    from diffusers import StableVideoDiffusionPipeline

    return StableVideoDiffusionPipeline(**tiny_components(seed))


def save_tiny(folder: str | os.PathLike, seed: int = 0) -> Path:
    """Save the tiny model as a diffusers folder (safetensors) with its stillmotion defaults and manifest."""
    from .registry import REGISTRY, write_local_defaults

    folder = Path(folder)
    pipe = build_tiny_pipeline(seed)
    pipe.save_pretrained(folder, safe_serialization=True)
    write_local_defaults(folder, REGISTRY["tiny"].defaults)
    # sha256 + size of each weight file, for `stillmotion models verify`
    from .integrity import write_folder_manifest

    write_folder_manifest(folder, name="tiny")
    return folder


def cache_root() -> Path:
    """stillmotion's own cache (tiny model, manifests, compile caches)."""
    base = os.environ.get("STILLMOTION_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "stillmotion"
    )
    return Path(base)


def ensure_tiny() -> Path:
    """The saved tiny model's folder, building it the first time (atomic: temp folder + rename)."""
    import shutil
    import tempfile

    target = cache_root() / f"tiny-v{TINY_VERSION}"
    if (target / "model_index.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tiny-", dir=target.parent))
    try:
        save_tiny(tmp)
        try:
            os.replace(tmp, target)
        except OSError:  # another process won the race
            if not (target / "model_index.json").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target
