"""The engine: load once, run a spec, progress, cancel, seeds."""

from .config import EngineConfig

__all__ = ["Engine", "EngineConfig", "GenerationResult", "Progress", "RunRecord", "pick_device"]


def __getattr__(name: str):
    # the CLI's options and batch import engine.config: the rest (numpy, torch) loads on first use only
    if name == "Engine":
        from .core import Engine

        return Engine
    if name == "pick_device":
        from .device import pick_device

        return pick_device
    if name in ("GenerationResult", "Progress", "RunRecord"):
        from . import types

        return getattr(types, name)
    raise AttributeError(f"module 'stillmotion.engine' has no attribute {name!r}")
