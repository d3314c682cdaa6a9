"""stillmotion: turn a still image into a short video with Stable Video Diffusion.

    from stillmotion import Engine, GenerationSpec
    engine = Engine("svd-xt")
    result = engine.generate("photo.jpg", GenerationSpec(seed=42, fps=7))
    result.save("photo.mp4")

Importing stillmotion does not import torch; the Engine does, when it is built.
"""

from __future__ import annotations

from .errors import (
    Cancelled,
    ImageFetchError,
    ImageTooLarge,
    InvalidImage,
    InvalidInput,
    InvalidVideo,
    ModelCorrupted,
    ModelUnavailable,
    NotFound,
    OutOfMemory,
    StillmotionError,
)
from .spec import GenerationSpec

from .version import __version__

__all__ = [
    "Client",
    "AsyncClient",
    "Engine",
    "EngineConfig",
    "GenerationResult",
    "RunRecord",
    "GenerationSpec",
    "Progress",
    "generate",
    "StillmotionError",
    "InvalidInput",
    "InvalidImage",
    "ImageTooLarge",
    "ImageFetchError",
    "InvalidVideo",
    "NotFound",
    "ModelUnavailable",
    "ModelCorrupted",
    "OutOfMemory",
    "Cancelled",
    "__version__",
]


def __getattr__(name: str):
    # Engine and friends import torch: load them on first use only.
    if name in ("Client", "AsyncClient"):  # a stillmotion server's client (httpx; no torch)
        from . import client

        return getattr(client, name)
    if name in ("Engine", "EngineConfig", "GenerationResult", "Progress", "RunRecord"):
        from . import engine

        return getattr(engine, name)
    raise AttributeError(f"module 'stillmotion' has no attribute {name!r}")


def generate(image, out=None, *, model: str | None = None, spec: GenerationSpec | None = None, **fields):
    """One-shot helper: load `model` (default: models.registry.DEFAULT_MODEL), generate, optionally
    save to `out`. Returns the GenerationResult."""
    from .engine import Engine

    spec = spec or GenerationSpec.build(**fields)
    result = Engine(model).generate(image, spec)
    if out is not None:
        result.save(out)
    return result
