"""The engine: load once, run a spec, progress, cancel, seeds."""

from .core import Engine, GenerationResult, Progress, pick_device

__all__ = ["Engine", "GenerationResult", "Progress", "pick_device"]
