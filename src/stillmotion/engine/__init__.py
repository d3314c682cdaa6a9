"""The engine: load once, run a spec, progress, cancel, seeds."""

from .config import EngineConfig
from .core import Engine
from .device import pick_device
from .types import GenerationResult, Progress, RunRecord

__all__ = ["Engine", "EngineConfig", "GenerationResult", "Progress", "RunRecord", "pick_device"]
