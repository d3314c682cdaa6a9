"""LoRA adapters for SVD's UNet: the folder format, adding adapters, applying a saved folder.

A LoRA model folder written by `stillmotion train --lora RANK` holds:

    lora.safetensors     the adapter weights only (peft's state dict), with the
                         rank, alpha and target modules in the safetensors metadata
    stillmotion.json     {"base": "svd-xt" (or a folder), "lora": "lora.safetensors",
                          "defaults": {...}, "trained": {...}}

Loading lives here (resolve and the Engine use it); training adds adapters with
add_lora and writes them with train/lora.py's save_lora. To generate with one:

    record = lora_record(folder)          # None for an ordinary diffusers folder
    pipe = StableVideoDiffusionPipeline.from_pretrained(resolve(record["base"]).path, ...)
    apply_lora(pipe, folder)              # adds the adapters, loads them, merges them

A server applies a served LoRA per job instead (jobs/worker.py), never merged:

    adapter = read_adapter(folder)        # tensors, rank, alpha, targets: read once
    attach_adapter(pipe.unet, adapter, scale)   # wraps the target layers for one job
    detach_adapters(pipe.unet)            # the very same base layers back: the base runs exactly

Other families load their LoRAs their own way (families/: `Family.apply_lora`, `read_lora`, `attach_lora`,
`detach_lora`; Wan's go through diffusers' WanLoraLoaderMixin). What a LoRA folder recommends (steps,
guidance: a step- and CFG-distilled LoRA runs at 4 steps and guidance 1) is `lora_defaults(folder)`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Optional

from ..errors import InvalidInput, ModelUnavailable
from .folder_info import read_folder_info

DEFAULT_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
ADAPTER = "default"


def _peft():
    try:
        import peft  # noqa: F401
    except ImportError:
        raise InvalidInput("LoRA needs peft: pip install 'stillmotion[train]'.") from None


def add_lora(unet, rank: int, alpha: Optional[float] = None, targets=DEFAULT_TARGETS) -> None:
    """Freeze the UNet and add trainable LoRA adapters (B = 0: the model starts unchanged)."""
    _peft()
    from peft import LoraConfig, inject_adapter_in_model

    unet.requires_grad_(False)
    config = LoraConfig(r=int(rank), lora_alpha=float(alpha or rank), init_lora_weights=True,
                        target_modules=list(targets))
    inject_adapter_in_model(config, unet, adapter_name=ADAPTER)
    unet._stillmotion_lora = {"rank": int(rank), "alpha": float(alpha or rank), "targets": sorted(targets)}
    for name, p in unet.named_parameters():
        p.requires_grad_("lora_" in name)


def lora_state_dict(unet) -> dict:
    """The adapter tensors only (names as peft injects them)."""
    return {k: v for k, v in unet.state_dict().items() if ".lora_A." in k or ".lora_B." in k}


def lora_record(folder) -> Optional[dict]:
    """The stillmotion.json of a LoRA folder (with "base" and "lora"), or None for any other folder."""
    record = read_folder_info(folder)
    return record if record.get("lora") and record.get("base") else None


# a LoRA file name that says it is step-distilled (lightx2v, Lightning, CausVid, "4steps", "step_distill")
_DISTILLED = re.compile(r"lightx2v|lightning|causvid|step[-_ ]?distill", re.I)
_STEPS = re.compile(r"(?<![a-z0-9])(\d+)[-_ ]?steps?(?![a-z])", re.I)
RECOMMENDED = ("num_inference_steps", "guidance_scale")  # what a per-job LoRA may set for the job


def lora_defaults(folder) -> dict:
    """What a LoRA folder recommends over its base model's defaults (registry.ModelDefaults fields): its
    stillmotion.json "defaults" (only the fields it names), else what its file name says: a step- and
    CFG-distilled LoRA (lightx2v, Lightning, CausVid, "step_distill", "4steps") runs at the steps the name
    gives (4 when it gives none) and guidance 1. Flags still win over these."""
    from .registry import ModelDefaults

    record = lora_record(folder) or {}
    raw = record.get("defaults")
    out = {k: (tuple(v) if isinstance(v, list) else v) for k, v in (raw if isinstance(raw, dict) else {}).items()
           if k in ModelDefaults.__dataclass_fields__}
    name = Path(str(record.get("lora", ""))).stem
    steps = _STEPS.search(name)
    if steps or _DISTILLED.search(name):
        named = {"num_inference_steps": int(steps.group(1)) if steps else 4, "guidance_scale": 1.0}
        out = {**named, **out}
    return out


def apply_lora(pipe, folder, *, merge: bool = True):
    """Add the folder's LoRA adapters to pipe.unet and load their weights (merged into the UNet by default)."""
    _peft()
    adapter = read_adapter(folder)
    unet = pipe.unet
    add_lora(unet, adapter["rank"], adapter["alpha"], adapter["targets"])
    dtype = next(unet.parameters()).dtype
    sd = adapter["state"]
    if not _fits(sd, lora_state_dict(unet)):
        raise ModelUnavailable(f"LoRA weights {adapter['path']} do not fit this base model: retrain them on "
                               f"{lora_record(folder)['base']}.")
    unet.load_state_dict({k: v.to(dtype) for k, v in sd.items()}, strict=False)
    unet.requires_grad_(False)
    if merge:
        from peft.tuners.tuners_utils import BaseTunerLayer

        for m in unet.modules():
            if isinstance(m, BaseTunerLayer):
                m.merge()
    return pipe


def _fits(sd: dict, expected: dict) -> bool:
    """Whether adapter tensors are exactly the ones peft injected: the same names with the same shapes."""
    return set(sd) == set(expected) and all(sd[k].shape == expected[k].shape for k in sd)


def _rank_from(sd: dict) -> int:
    for k, v in sd.items():
        if "lora_A" in k:
            return int(v.shape[0])
    raise ModelUnavailable("LoRA file holds no lora_A weights.")


# --------------------------------------------------------------------------- per-job adapters (the server)
def _read_lora(folder) -> tuple[dict, dict, Path]:
    from safetensors import safe_open

    folder = Path(folder)
    record = lora_record(folder)
    if record is None:
        raise ModelUnavailable(f"{folder} is not a LoRA folder: its stillmotion.json names no base and lora file.")
    path = folder / record["lora"]
    if not path.is_file():
        raise ModelUnavailable(f"LoRA weights {path} are missing; retrain or copy the whole folder.")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        sd = {k: f.get_tensor(k) for k in f.keys()}
    return sd, meta, path


def read_adapter(folder) -> dict:
    """A LoRA folder's adapter, read once and kept in memory: its tensors, rank, alpha and target modules."""
    sd, meta, path = _read_lora(folder)
    rank = int(meta.get("rank", 0)) or _rank_from(sd)
    return {"state": sd, "rank": rank, "alpha": float(meta.get("alpha", rank)), "path": path,
            "targets": json.loads(meta["targets"]) if "targets" in meta else list(DEFAULT_TARGETS)}


def attach_adapter(unet, adapter: dict, scale: float = 1.0) -> None:
    """Wrap the UNet's target layers with the adapter (from read_adapter) at `scale`, unmerged: the base
    weights are not touched, and detach_adapters() puts the very same layers back."""
    _peft()
    from peft import LoraConfig, inject_adapter_in_model
    from peft.tuners.lora import LoraLayer

    config = LoraConfig(r=adapter["rank"], lora_alpha=adapter["alpha"], init_lora_weights=True,
                        target_modules=list(adapter["targets"]))
    if not hasattr(unet, "_stillmotion_grads"):  # peft freezes the base; detach restores the flags exactly
        unet._stillmotion_grads = {n: p.requires_grad for n, p in unet.named_parameters()}
    inject_adapter_in_model(config, unet, adapter_name=ADAPTER)
    expected = lora_state_dict(unet)
    sd = adapter["state"]
    if not _fits(sd, expected):
        detach_adapters(unet)
        raise ModelUnavailable(f"LoRA weights {adapter['path']} do not fit this base model: retrain them on it.")
    ref = next(iter(expected.values()))
    unet.load_state_dict({k: v.to(device=ref.device, dtype=ref.dtype) for k, v in sd.items()}, strict=False)
    for m in unet.modules():
        if isinstance(m, LoraLayer):
            m.set_scale(ADAPTER, float(scale))
            m.requires_grad_(False)


def detach_adapters(unet) -> None:
    """Put back the layers attach_adapter() wrapped: the UNet is again exactly the base model."""
    from peft.tuners.lora import LoraLayer

    for name, module in list(unet.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, LoraLayer):
                setattr(module, child_name, child.get_base_layer())
    grads = unet.__dict__.pop("_stillmotion_grads", None)
    if grads is not None:
        for n, p in unet.named_parameters():
            p.requires_grad_(grads.get(n, p.requires_grad))
    unet.__dict__.pop("peft_config", None)
