"""Training: fine-tune SVD (full or LoRA) on clips, and the procedural data behind the `demo` model.

    from stillmotion.train import TrainConfig, train
    summary = train(TrainConfig(base="svd-xt", clips="./clips", lora_rank=64, steps=2000, output="./my-svd"))

Modules: data (clip folders -> windows), objective (the SVD/EDM loss), loop
(accelerate loop, checkpoints, validation), lora (adapters: add, save, apply),
synthetic (procedural clips), demo (the built-in demo model's recipe).
Importing this package does not import torch.
"""

from __future__ import annotations

__all__ = ["TrainConfig", "train", "apply_lora", "lora_record"]


def __getattr__(name):
    if name in ("TrainConfig", "train"):
        from . import loop

        return getattr(loop, name)
    if name in ("apply_lora", "lora_record"):
        from . import lora

        return getattr(lora, name)
    raise AttributeError(name)
