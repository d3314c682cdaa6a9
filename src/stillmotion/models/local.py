"""LocalModel: a model resolved to a diffusers folder on this machine, and what a run records of it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .hashes import WEIGHT_SUFFIXES, cached_sha256
from .registry import ModelEntry


@dataclass
class LocalModel:
    entry: ModelEntry
    path: Path
    source: str  # "builtin" | "local" | "hub" | "single-file"
    repo_id: str | None = None
    revision: str | None = None
    commit: str | None = None
    variant: str | None = None
    lora: Path | None = None  # a LoRA folder (stillmotion train --lora) applied on top of this model
    single_file: dict | None = None  # the .safetensors checkpoint this folder was converted from: path, sha256, model, frames
    parts: list | None = None  # an assembled model (registry parts): each component's repo_id and commit
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
            **({"lora": describe_lora(self.lora)} if self.lora else {}),
            **({"single_file": self.single_file} if self.single_file else {}),
            **({"parts": self.parts} if self.parts else {}),
        }


def describe_lora(folder: Path) -> dict:
    """What a run records of a LoRA folder: its path and the sha256 of each adapter file."""
    return {"path": str(folder), "weights": {p.name: cached_sha256(p) for p in sorted(folder.glob("*.safetensors"))}}
