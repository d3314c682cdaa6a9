"""Writing trained LoRA adapters: lora.safetensors in the folder format that models/lora.py reads.

Adding the adapters (add_lora) and applying a saved folder (apply_lora) live in
models/lora.py, because loading a model needs them and models sits below train.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..models.lora import lora_state_dict
from ..util import atomic_path


def save_lora(unet, path) -> Path:
    """Write only the adapter weights (safetensors), with rank/alpha/targets in its metadata."""
    from safetensors.torch import save_file

    cfg = unet._stillmotion_lora
    sd = {k: v.detach().float().contiguous().cpu() for k, v in lora_state_dict(unet).items()}
    meta = {"format": "stillmotion-lora", "rank": str(cfg["rank"]), "alpha": str(cfg["alpha"]),
            "targets": json.dumps(cfg["targets"])}
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(sd, tmp, metadata=meta)
    return path
