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

from ..util import remove, temp_name
from .folder_info import write_folder_info
from .hashes import write_folder_manifest
from .paths import cache_root
from .registry import REGISTRY
from .small_svd import clip_feature_extractor, small_image_encoder, small_unet, svd_scheduler

TINY_VERSION = "1"
# a built-in model whose architecture changed since TINY_VERSION: its own version, so a cached folder is rebuilt
# (tiny-ltx2 v2: the audio VAE's encoder compresses 4x, as LTX-2's does)
TINY_VERSIONS = {"tiny-ltx2": "2"}


def tiny_components(seed: int = 0, width: int = 32) -> dict:
    """The five pipeline components at toy width (deterministic for a seed)."""
    import torch
    from diffusers import AutoencoderKLTemporalDecoder

    w = width
    torch.manual_seed(seed)
    unet = small_unet(
        widths=(w, w, 2 * w, 2 * w),
        heads=(2, 2, 4, 4),
        attention=(True, True, True, False),
        cross_attention_dim=w,
        time_embed_dim=8,
        sample_size=8,
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
    image_encoder = small_image_encoder(w)
    return {
        "unet": unet.eval(),
        "vae": vae.eval(),
        "image_encoder": image_encoder.eval(),
        "scheduler": svd_scheduler(),
        "feature_extractor": clip_feature_extractor(),
    }


def build_tiny_pipeline(seed: int = 0):
    from diffusers import StableVideoDiffusionPipeline

    return StableVideoDiffusionPipeline(**tiny_components(seed))


TINY_WAN_VARIANT = "wan2.2-a14b"  # the built-in tiny-wan: two experts, takes a last image


def save_tiny(folder: str | os.PathLike, seed: int = 0, name: str = "tiny") -> Path:
    """Save a built-in tiny model (`tiny`: SVD; `tiny-wan`: Wan, models/tiny_wan.py; `tiny-ltx2`: LTX-2,
    models/tiny_ltx.py; `tiny-framepack`: FramePack, models/tiny_framepack.py) as a diffusers folder
    (safetensors) with its stillmotion defaults and manifest."""
    folder = Path(folder)
    if name == "tiny":
        build_tiny_pipeline(seed).save_pretrained(folder, safe_serialization=True)
    elif name == "tiny-ltx2":
        from .tiny_ltx import build_tiny_ltx, write_distilled_lora

        build_tiny_ltx(folder, "ltx2", seed)
        write_distilled_lora(folder, REGISTRY[name].fast.lora)
    elif name == "tiny-framepack":
        from .tiny_framepack import build_tiny_framepack

        build_tiny_framepack(folder, seed)
    else:
        from .tiny_wan import build_tiny_wan

        build_tiny_wan(folder, TINY_WAN_VARIANT, seed)
    write_folder_info(folder, REGISTRY[name].defaults)
    # sha256 + size of each weight file, for `stillmotion models verify`
    write_folder_manifest(folder, name=name)
    return folder


BUILT_ON_USE = ("tiny", "tiny-wan", "tiny-ltx2", "tiny-framepack")


def tiny_folder(name: str = "tiny") -> Path:
    """Where a saved built-in tiny model lives in the stillmotion cache."""
    return cache_root() / f"{name}-v{TINY_VERSIONS.get(name, TINY_VERSION)}"


def ensure_tiny(name: str = "tiny") -> Path:
    """A saved built-in tiny model's folder, building it the first time (atomic: temp folder + rename)."""
    target = tiny_folder(name)
    if (target / "model_index.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # not util.atomic_path: that replaces a folder already there, and a process that lost the race must keep it
    tmp = temp_name(target)
    try:
        save_tiny(tmp, name=name)
        try:
            os.replace(tmp, target)
        except OSError:  # another process won the race
            if not (target / "model_index.json").is_file():
                raise
    finally:
        remove(tmp)
    return target
