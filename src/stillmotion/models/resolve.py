"""A model name to a LocalModel: built-in, a local diffusers folder, a LoRA folder, or the hub cache.

`resolve(name_or_path)` returns a LocalModel whose `path` is a diffusers folder
ready for `from_pretrained`. Hub downloads and offline mode live in hub.py,
sha256 verification in verify.py.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..errors import InvalidInput, ModelUnavailable
from .hashes import folder_manifest_path, write_folder_manifest
from .hub import resolve_hub
from .local import LocalModel
from .lora import lora_record
from .paths import DEMO_FOLDER
from .registry import entry_for
from .tiny import ensure_tiny


def resolve(name_or_path: str, *, download: bool = True, progress: bool = True) -> LocalModel:
    """A loadable folder for a registry name, a local folder or a hub id."""
    entry = entry_for(name_or_path)
    if entry.kind != "video":
        raise InvalidInput(
            f"{entry.name} is a frame-interpolation model, not a video model: choose a video model with --model "
            f"(svd, svd-xt, ...) and use {entry.name} with --interpolate 2 --interpolate-backend {entry.name}."
        )
    if entry.builtin:
        if entry.name == "tiny":
            path = ensure_tiny()
            if not folder_manifest_path(path).is_file():  # built before manifests existed
                write_folder_manifest(path, name="tiny")
            return LocalModel(entry=entry, path=path, source="builtin")
        if entry.name == "demo" and (DEMO_FOLDER / "model_index.json").is_file():
            return LocalModel(entry=entry, path=DEMO_FOLDER, source="builtin")
        raise ModelUnavailable(f"Built-in model {entry.name!r} is not available in this install.")
    if entry.repo_id is None:
        path = Path(entry.name)
        record = lora_record(path)
        if record is not None:  # LoRA adapters over a base model: resolve the base, carry the folder
            base_ref = str(record["base"])
            if not Path(base_ref).is_absolute() and (path / base_ref).is_dir():
                base_ref = str(path / base_ref)
            base = resolve(base_ref, download=download, progress=progress)
            return dataclasses.replace(base, entry=entry, lora=path, _hashes=None)
        if not (path / "model_index.json").is_file():
            raise ModelUnavailable(
                f"{path} is not a diffusers model folder (no model_index.json): point --model at a folder saved with save_pretrained."
            )
        return LocalModel(entry=entry, path=path, source="local", variant=_local_variant(path))
    return resolve_hub(entry, download=download, progress=progress)


def _local_variant(path: Path) -> str | None:
    """fp16 when the folder holds only fp16 files for the UNet."""
    unet = path / "unet"
    if (unet / "diffusion_pytorch_model.safetensors").is_file():
        return None
    if (unet / "diffusion_pytorch_model.fp16.safetensors").is_file():
        return "fp16"
    return None
