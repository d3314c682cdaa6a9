"""Known models: names -> hub repo, pinned revision, variant and per-model defaults.

The defaults here are the only model-specific defaults in stillmotion: a
GenerationSpec leaves a field as None to mean "the model's default".
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import ModelUnavailable


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
    builtin: bool = False
    description: str = ""
    approx_size_gb: float = 0.0
    defaults: ModelDefaults = field(default_factory=ModelDefaults)
    # "video" (an SVD pipeline) or "interpolation" (single weight files, used by --interpolate-backend)
    kind: str = "video"
    # single-file models: exactly these repo files are fetched and verified (no pipeline layout)
    files: tuple[str, ...] = ()


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
        builtin=True,
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
        builtin=True,
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


LOCAL_DEFAULTS_FILE = "stillmotion.json"


def read_local_defaults(folder) -> ModelDefaults:
    """Defaults a saved model carries in `stillmotion.json` (written by tiny, train); else SVD-XT's."""
    import json
    from pathlib import Path

    f = Path(folder) / LOCAL_DEFAULTS_FILE
    if not f.is_file():
        return ModelDefaults()
    try:
        raw = json.loads(f.read_text()).get("defaults", {})
    except (OSError, ValueError):
        return ModelDefaults()
    known = {k: v for k, v in raw.items() if k in ModelDefaults.__dataclass_fields__}
    for k in ("landscape", "portrait", "square"):
        if k in known:
            known[k] = tuple(known[k])
    return ModelDefaults(**known)


def write_local_defaults(folder, defaults: ModelDefaults) -> None:
    import dataclasses
    import json
    from pathlib import Path

    (Path(folder) / LOCAL_DEFAULTS_FILE).write_text(json.dumps({"defaults": dataclasses.asdict(defaults)}, indent=2))


def get_entry(name: str) -> ModelEntry:
    """The registry entry for a known name; raises ModelUnavailable otherwise."""
    try:
        return REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(REGISTRY))
        raise ModelUnavailable(
            f"Unknown model {name!r}: use one of {known}, a local diffusers folder, or a hub id like org/name."
        ) from None


def entry_for(name_or_path: str) -> ModelEntry:
    """Registry entry for a name, or an ad-hoc entry for a local folder or hub id.

    Ad-hoc entries take SVD-XT's defaults, except that the frame count is read
    from the model's own config at load time when it differs.
    """
    if name_or_path in REGISTRY:
        return REGISTRY[name_or_path]
    from pathlib import Path

    p = Path(name_or_path).expanduser()
    from .single_file import looks_like_single_file

    if looks_like_single_file(name_or_path):  # a single-file checkpoint: what it is, from its header
        from .single_file import inspect_file

        info = inspect_file(p)
        return ModelEntry(
            name=str(p), repo_id=None, variant=None, description=f"single file ({info.label})",
            defaults=ModelDefaults(num_frames=info.num_frames),
        )
    if p.is_dir():
        return ModelEntry(
            name=str(p), repo_id=None, variant=None, description="local folder", defaults=read_local_defaults(p)
        )
    if "/" in name_or_path and not name_or_path.startswith((".", "/", "~")) and name_or_path.count("/") == 1:
        return ModelEntry(name=name_or_path, repo_id=name_or_path, variant=None, description="hub model")
    return get_entry(name_or_path)
