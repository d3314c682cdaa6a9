"""Known models: names -> hub repo, pinned revision, variant and per-model defaults.

The defaults here are the only model-specific defaults in stillmotion: a
GenerationSpec leaves a field as None to mean "the model's default". The entry
of any other --model value (a folder, a single file, a hub id) is made by
resolve.entry_for().
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ..errors import ModelUnavailable

# Where a model comes from: how it resolves to a folder (resolve.py) and how its shapes are known without loading
# it (engine/shapes.py): "registry" a name below, fetched from the hub, with published component configs;
# "builtin" tiny (built from code into the cache) and demo (shipped in the package); "single-file" a .safetensors
# checkpoint (configs from its header); "local" a diffusers folder (or a LoRA folder over a base); "hub" any other
# hub id.
Source = Literal["registry", "builtin", "single-file", "local", "hub"]


@dataclass(frozen=True)
class ModelDefaults:
    num_frames: int = 25
    num_inference_steps: int = 25
    fps: int = 7
    motion_bucket_id: int = 127
    noise_aug_strength: float = 0.02
    min_guidance_scale: float = 1.0
    max_guidance_scale: float = 3.0
    # (width, height) for auto sizing by aspect
    landscape: tuple[int, int] = (1024, 576)
    portrait: tuple[int, int] = (576, 1024)
    square: tuple[int, int] = (768, 768)


@dataclass(frozen=True)
class ModelEntry:
    name: str
    repo_id: str | None  # None for built-in models
    revision: str = "main"
    variant: str | None = "fp16"
    gated: bool = False
    source: Source = "registry"
    description: str = ""
    approx_size_gb: float = 0.0
    defaults: ModelDefaults = field(default_factory=ModelDefaults)
    # "video" (an SVD pipeline) or "interpolation" (single weight files, used by --interpolate-backend)
    kind: str = "video"
    # single-file models: exactly these repo files are fetched and verified (no pipeline layout)
    files: tuple[str, ...] = ()

    @property
    def builtin(self) -> bool:
        return self.source == "builtin"


# Hub revisions: pinned to the commit that the project was tested against is
# best; where the commit is not known offline we pin to "main" and record the
# commit actually resolved in every sidecar (see resolve.resolve()).
REGISTRY: dict[str, ModelEntry] = {
    "svd": ModelEntry(
        name="svd",
        repo_id="stabilityai/stable-video-diffusion-img2vid",
        description="Stable Video Diffusion, 14 frames at 576x1024",
        approx_size_gb=4.3,
        defaults=ModelDefaults(num_frames=14),
    ),
    "svd-xt": ModelEntry(
        name="svd-xt",
        repo_id="stabilityai/stable-video-diffusion-img2vid-xt",
        description="Stable Video Diffusion XT, 25 frames at 576x1024",
        approx_size_gb=4.3,
        defaults=ModelDefaults(num_frames=25),
    ),
    "svd-xt-1-1": ModelEntry(
        name="svd-xt-1-1",
        repo_id="stabilityai/stable-video-diffusion-img2vid-xt-1-1",
        gated=True,
        description="SVD-XT 1.1 (gated: accept the licence on the hub and set HF_TOKEN)",
        approx_size_gb=4.3,
        defaults=ModelDefaults(num_frames=25),
    ),
    "rife": ModelEntry(
        name="rife",
        kind="interpolation",
        repo_id="Comfy-Org/frame_interpolation",  # Practical-RIFE v4.26 (MIT) as safetensors, repacked by Comfy-Org
        variant=None,
        files=("frame_interpolation/rife_v4.26.safetensors",),
        description="RIFE v4.26 frame interpolation weights, for --interpolate-backend rife (not a video model)",
        approx_size_gb=0.023,
    ),
    "tiny": ModelEntry(
        name="tiny",
        repo_id=None,
        variant=None,
        source="builtin",
        description="built-in smoke-test model: SVD architecture at toy width, random weights (output is noise)",
        approx_size_gb=0.01,
        defaults=ModelDefaults(
            num_frames=8,
            num_inference_steps=4,
            landscape=(128, 64),
            portrait=(64, 128),
            square=(64, 64),
        ),
    ),
    "demo": ModelEntry(
        name="demo",
        repo_id=None,
        variant=None,
        source="builtin",
        description="built-in demo: SVD architecture trained here on procedural clips; pans right with a push-in (CPU, seconds)",
        approx_size_gb=0.02,
        defaults=ModelDefaults(  # train/demo.py and the shipped stillmotion.json use these (a test checks)
            num_frames=8,
            num_inference_steps=6,  # 6 Euler steps: the most coherent of 4..8 on held-out images
            fps=8,
            motion_bucket_id=127,
            noise_aug_strength=0.02,
            min_guidance_scale=1.0,
            max_guidance_scale=1.0,
            landscape=(128, 64),
            portrait=(64, 128),
            square=(64, 64),
        ),
    ),
}

DEFAULT_MODEL = "svd-xt"  # the one place the default model is named


def get_entry(name: str) -> ModelEntry:
    """The registry entry for a known name; raises ModelUnavailable otherwise."""
    try:
        return REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(REGISTRY))
        raise ModelUnavailable(
            f"Unknown model {name!r}: use one of {known}, a local diffusers folder, or a hub id like org/name."
        ) from None
