"""Which device and dtype a run uses, and giving memory back after an out-of-memory."""

from __future__ import annotations

from typing import Optional

from ..errors import InvalidInput
from ..util import torch_dtype


def pick_device(device: Optional[str] = None) -> str:
    """'auto' (or None) -> cuda, mps or cpu, whichever is there; a named device is checked."""
    import torch

    if device and device != "auto":
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise InvalidInput(f"--device {device}: no CUDA GPU is visible to PyTorch; use --device cpu or auto.")
        if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise InvalidInput("--device mps: MPS is not available on this machine; use --device cpu or auto.")
        if device not in ("cpu", "mps") and not device.startswith("cuda"):
            raise InvalidInput(f"--device {device!r}: use auto, cpu, cuda, cuda:N or mps.")
        return device
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def pick_dtype(device: str, name: Optional[str] = None):
    """fp32 on a CPU and fp16 elsewhere, unless a dtype is named."""
    import torch

    if name is None:
        return torch.float32 if device == "cpu" else torch.float16
    return torch_dtype(name)


def free_memory() -> None:
    """Collect garbage and return cached GPU blocks (after an out-of-memory, before retrying)."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
