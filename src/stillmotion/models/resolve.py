"""A --model value to its entry, and to a LocalModel: built-in, a local diffusers folder, a LoRA folder, a
single-file checkpoint (converted once into the cache, keyed by its sha256), or the hub cache.

`entry_for(name_or_path)` says what a value is (registry.ModelEntry: its source and its defaults) without
loading or downloading anything; `resolve(name_or_path)` returns a LocalModel whose `path` is a diffusers
folder ready for `from_pretrained`. Hub downloads and offline mode live in hub.py, sha256 verification in
verify.py.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..errors import InvalidInput, ModelUnavailable
from ..util import atomic_path
from .comfy_files import comfy_root
from .folder_info import folder_defaults
from .hashes import cached_sha256, folder_manifest_path, remember_sha256, write_folder_manifest
from .hub import fetch_file, resolve_hub
from .local import LocalModel
from .lora import lora_defaults, lora_record
from .paths import DEMO_FOLDER, cache_root
from .registry import REGISTRY, ModelDefaults, ModelEntry, get_entry
from .single_file import FileInfo, convert, inspect_file, looks_like_single_file, refuse_pickle
from .ltx_files import resolve_ltx_file
from .ltx_inspect import ltx_file
from .tiny import BUILT_ON_USE, ensure_tiny
from .wan_files import resolve_wan_file
from .wan_inspect import inspect_wan_file


def entry_for(name_or_path: str) -> ModelEntry:
    """The entry of a --model value: a registry name's, or one made for a single-file checkpoint (its frame count
    from its header), a local folder (the defaults of its stillmotion.json) or a hub id (SVD-XT's defaults; the
    frame count is read from the model's config at load time when it differs). Front ends read defaults here."""
    if name_or_path in REGISTRY:
        return REGISTRY[name_or_path]
    p = Path(name_or_path).expanduser()
    if looks_like_single_file(name_or_path):
        ltx = ltx_file(p) if p.is_file() else None
        if ltx is not None:
            return _ltx_file_entry(p, ltx)
        wan = _wan_file(p)
        if wan is not None:
            return _wan_file_entry(p, wan)
        return _single_file_entry(p, inspect_file(p))
    if p.is_dir():
        if lora_record(p) is not None:
            return _lora_entry(p)
        return ModelEntry(name=str(p), repo_id=None, variant=None, source="local", description="local folder",
                          defaults=folder_defaults(p))
    if "/" in name_or_path and not name_or_path.startswith((".", "/", "~")) and name_or_path.count("/") == 1:
        return ModelEntry(name=name_or_path, repo_id=name_or_path, variant=None, source="hub", description="hub model")
    return get_entry(name_or_path)


def _lora_entry(path: Path) -> ModelEntry:
    """A LoRA folder's entry: its base model's family and defaults, with what the LoRA recommends over them
    (lora.lora_defaults: its stillmotion.json "defaults", or a distilled LoRA's steps and guidance by its name)."""
    # (a local base folder with no stillmotion defaults gets its family's at load: Family.entry_for_folder)
    base = entry_for(lora_base(path))
    return ModelEntry(name=str(path), repo_id=None, variant=None, source="local", family=base.family,
                      description=f"LoRA over {base.name}", approx_size_gb=base.approx_size_gb,
                      defaults=dataclasses.replace(base.defaults, **lora_defaults(path)))


def lora_base(path) -> str:
    """The base a LoRA folder names (a name, a folder, or a folder relative to the LoRA's)."""
    path = Path(path)
    base_ref = str(lora_record(path)["base"])
    if not Path(base_ref).is_absolute() and (path / base_ref).is_dir():
        base_ref = str(path / base_ref)
    return base_ref


def _single_file_entry(path: Path, info: FileInfo) -> ModelEntry:
    return ModelEntry(name=str(path), repo_id=None, variant=None, source="single-file",
                      description=f"single file ({info.label})", defaults=ModelDefaults(num_frames=info.num_frames))


def _wan_file(path: Path):
    """A ComfyUI Wan file's WanFile (wan_files.py), or None when the file is not one (an SVD checkpoint)."""
    from ..errors import ModelUnavailable

    if not path.is_file() or path.suffix.lower() not in (".safetensors", ".gguf"):
        return None
    try:
        return inspect_wan_file(path)
    except ModelUnavailable:
        if path.suffix.lower() == ".gguf":
            raise  # only Wan transformers come as GGUF
        return None


def _comfy_file_entry(path: Path, info, family: str, runs: str, refuse) -> ModelEntry:
    """A ComfyUI file's entry (Wan: a transformer file, LTX-2: a checkpoint): the defaults of the registry model it
    is. A file of another kind (`info.kind` other than `runs`: a VAE, a text encoder) is refused by `refuse(path)`,
    which says what the file is and what to pass."""
    if info.kind != runs:
        refuse(path)
    base = REGISTRY[info.model]
    return ModelEntry(name=str(path), repo_id=None, variant=None, source="single-file", family=family,
                      description=f"single file ({info.label})", approx_size_gb=base.approx_size_gb,
                      defaults=base.defaults, fast=base.fast)


def _wan_file_entry(path: Path, info) -> ModelEntry:
    return _comfy_file_entry(path, info, "wan", "transformer", resolve_wan_file)


def _ltx_file_entry(path: Path, info) -> ModelEntry:
    """(ltx-2's defaults, or ltx-2-distilled's for a file named so: ltx_inspect.)"""
    return _comfy_file_entry(path, info, "ltx2", "checkpoint", resolve_ltx_file)


def fast_lora(entry: ModelEntry) -> Path:
    """The file of a model's fast preset LoRA (registry.FastPreset): in a built-in model's folder; for a ComfyUI
    checkpoint, ComfyUI's models/loras/ when the file is there; else from the preset's hub repo (cached, or fetched
    on first use: hub.fetch_file)."""
    preset = entry.fast
    if preset.repo_id is None:
        path = ensure_tiny(entry.name) / preset.lora
        if not path.is_file():  # a tiny-ltx2 built before it carried one
            from .tiny_ltx import write_distilled_lora

            write_distilled_lora(path.parent, preset.lora)
        return path
    root = comfy_root(Path(entry.name)) if entry.source == "single-file" else None
    if root is not None and (root / "models" / "loras" / Path(preset.lora).name).is_file():
        return root / "models" / "loras" / Path(preset.lora).name
    return fetch_file(preset.repo_id, preset.lora, preset.revision, what=f"--speed fast on {entry.name}")


def resolve(name_or_path: str, *, download: bool = True, progress: bool = True) -> LocalModel:
    """A loadable folder for a registry name, a local folder, a single .safetensors checkpoint or a hub id."""
    if looks_like_single_file(str(name_or_path)):
        return resolve_single_file(Path(name_or_path))
    entry = entry_for(name_or_path)
    if entry.kind != "video":
        raise InvalidInput(
            f"{entry.name} is a frame-interpolation model, not a video model: choose a video model with --model "
            f"(svd, svd-xt, ...) and use {entry.name} with --interpolate 2 --interpolate-backend {entry.name}."
        )
    if entry.source == "builtin":
        if entry.name in BUILT_ON_USE:
            path = ensure_tiny(entry.name)
            if not folder_manifest_path(path).is_file():  # built before manifests existed
                write_folder_manifest(path, name=entry.name)
            return LocalModel(entry=entry, path=path, source="builtin")
        if entry.name == "demo" and (DEMO_FOLDER / "model_index.json").is_file():
            return LocalModel(entry=entry, path=DEMO_FOLDER, source="builtin")
        raise ModelUnavailable(f"Built-in model {entry.name!r} is not available in this install.")
    if entry.source == "local":
        path = Path(entry.name)
        record = lora_record(path)
        if record is not None:  # LoRA adapters over a base model: resolve the base, carry the folder
            base = resolve(lora_base(path), download=download, progress=progress)
            return dataclasses.replace(base, entry=entry, lora=path, _hashes=None)
        if not (path / "model_index.json").is_file():
            raise ModelUnavailable(
                f"{path} is not a diffusers model folder (no model_index.json): point --model at a folder saved with save_pretrained."
            )
        return LocalModel(entry=entry, path=path, source="local", variant=_local_variant(path))
    return resolve_hub(entry, download=download, progress=progress)


def resolve_single_file(path: Path) -> LocalModel:
    """A single-file SVD checkpoint (Stability's SGM layout, as in ComfyUI/models/checkpoints) -> a LocalModel.

    Converted once into `<cache>/single-file/<sha256>/` (written whole through util.atomic_path);
    later runs find it there and pay only the file's cached sha256. The public entry point for other
    modules too (a ComfyUI workflow's ckpt_name resolves through here).
    """
    path = Path(path).expanduser()
    refuse_pickle(path)
    if not path.is_file():
        raise ModelUnavailable(f"{path}: no such checkpoint file; pass a .safetensors file, a model folder or a model name.")
    ltx = ltx_file(path)
    if ltx is not None:  # an LTX-2 checkpoint (Lightricks' layout, as ComfyUI keeps it): assembled around it
        folder, record = resolve_ltx_file(path)
        return LocalModel(entry=_ltx_file_entry(path, ltx), path=folder, source="single-file", single_file=record)
    wan = _wan_file(path)
    if wan is not None:  # one of ComfyUI's Wan files: assembled around it (wan_files.py)
        folder, record = resolve_wan_file(path)
        return LocalModel(entry=_wan_file_entry(path, wan), path=folder, source="single-file", single_file=record)
    info = inspect_file(path)  # header only: a file that is not SVD fails here, before hashing gigabytes
    digest = cached_sha256(path)
    folder = cache_root() / "single-file" / digest
    if not (folder / "model_index.json").is_file():
        with atomic_path(folder) as tmp:
            converted = convert(path, tmp, sha256=digest, info=info)  # writes the folder's manifest too
        for rel, d in converted.digests.items():  # the sidecar's weight hashes, without reading 4 GB again
            remember_sha256(folder / rel, d)
    entry = _single_file_entry(path, info)
    record = {"path": str(path.resolve()), "sha256": digest, "model": info.model, "label": info.label,
              "num_frames": info.num_frames, "frames_from": info.frames_from, "vae": info.vae}
    return LocalModel(entry=entry, path=folder, source="single-file", single_file=record)


def _local_variant(path: Path) -> str | None:
    """fp16 when the folder holds only fp16 files for the UNet."""
    unet = path / "unet"
    if (unet / "diffusion_pytorch_model.safetensors").is_file():
        return None
    if (unet / "diffusion_pytorch_model.fp16.safetensors").is_file():
        return "fp16"
    return None
