"""Training: fine-tune SVD (full or LoRA) on clips, and the procedural data behind the `demo` model.

    from stillmotion.train import TrainConfig, train
    summary = train(TrainConfig(base="svd-xt", clips="./clips", lora_rank=64, steps=2000, output="./my-svd"))

Modules: data (clip folders -> windows), objective (the SVD/EDM loss), trainer
(TrainConfig, the accelerate loop), checkpoints (save, resume), validation
(validation videos, the loss plot), lora (saving adapters), synthetic
(procedural clips), demo (the built-in demo model's recipe).
Importing this package does not import torch.
"""

from __future__ import annotations

__all__ = ["TrainConfig", "train"]


def __getattr__(name):
    if name in ("TrainConfig", "train"):
        from . import trainer

        return getattr(trainer, name)
    raise AttributeError(name)
