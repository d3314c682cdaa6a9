"""Where a model's files are: built-in, a local diffusers folder, or the hub cache.

`resolve(name_or_path)` returns a LocalModel whose `path` is a diffusers folder
ready for `from_pretrained`. Hub downloads, offline mode and sha256
verification live in hub.py.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InvalidInput, ModelUnavailable
from .registry import ModelEntry, entry_for

WEIGHT_SUFFIXES = (".safetensors",)


@dataclass
class LocalModel:
    entry: ModelEntry
    path: Path
    source: str  # "builtin" | "local" | "hub"
    repo_id: str | None = None
    revision: str | None = None
    commit: str | None = None
    variant: str | None = None
    lora: Path | None = None  # a LoRA folder (stillmotion train --lora) applied on top of this model
    _hashes: dict | None = field(default=None, repr=False)

    def weight_files(self) -> list[Path]:
        return sorted(p for p in self.path.rglob("*") if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))

    def weight_hashes(self) -> dict[str, str]:
        """relative path -> sha256 of every safetensors file (cached by size and mtime)."""
        if self._hashes is None:
            self._hashes = {str(p.relative_to(self.path)): cached_sha256(p) for p in self.weight_files()}
        return self._hashes

    def describe(self) -> dict:
        return {
            "name": self.entry.name,
            "source": self.source,
            "repo_id": self.repo_id,
            "revision": self.revision,
            "commit": self.commit,
            "variant": self.variant,
            "weights": self.weight_hashes(),
            **({"lora": self.lora_describe()} if self.lora else {}),
        }

    def lora_describe(self) -> dict:
        files = sorted(p for p in self.lora.glob("*.safetensors"))
        return {"path": str(self.lora), "weights": {p.name: cached_sha256(p) for p in files}}


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
            from .tiny import ensure_tiny

            path = ensure_tiny()
            if not (path / "stillmotion-manifest.json").is_file():  # built before manifests existed
                from .integrity import write_folder_manifest

                write_folder_manifest(path, name="tiny")
            return LocalModel(entry=entry, path=path, source="builtin")
        if entry.name == "demo":  # shipped inside the package (trained by scripts/train_demo.py)
            path = Path(__file__).resolve().parent.parent / "data" / "demo"
            if (path / "model_index.json").is_file():
                return LocalModel(entry=entry, path=path, source="builtin")
        raise ModelUnavailable(f"Built-in model {entry.name!r} is not available in this install.")
    if entry.repo_id is None:
        path = Path(entry.name)
        from ..train.lora import lora_record

        record = lora_record(path)
        if record is not None:  # LoRA adapters over a base model: resolve the base, carry the folder
            import dataclasses

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
    from .hub import resolve_hub

    return resolve_hub(entry, download=download, progress=progress)


def _local_variant(path: Path) -> str | None:
    """fp16 when the folder holds only fp16 files for the UNet."""
    unet = path / "unet"
    if (unet / "diffusion_pytorch_model.safetensors").is_file():
        return None
    if (unet / "diffusion_pytorch_model.fp16.safetensors").is_file():
        return "fp16"
    return None


def sha256_file(path: Path, chunk: int = 8 * 1024 * 1024) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def _hash_record(path: Path) -> Path:
    from .tiny import cache_root

    st = path.stat()
    key = hashlib.sha256(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:32]
    return cache_root() / "hashes" / f"{key}.json"


def cached_sha256(path: Path) -> str:
    """sha256 of a file, remembered by (path, size, mtime) so a 4 GB file is hashed once.

    For the sidecar record only: `models verify` always reads the bytes again.
    """
    rec = _hash_record(path)
    try:
        return json.loads(rec.read_text())["sha256"]
    except (OSError, ValueError, KeyError):
        pass
    digest = sha256_file(path)
    remember_sha256(path, digest)
    return digest


def remember_sha256(path: Path, digest: str) -> None:
    """Store a digest just computed (download, verify) so the next cached_sha256 is free."""
    try:
        rec = _hash_record(path)
        rec.parent.mkdir(parents=True, exist_ok=True)
        tmp = rec.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps({"path": str(path), "sha256": digest}))
        os.replace(tmp, rec)
    except OSError:
        pass
