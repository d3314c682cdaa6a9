"""stillmotion.json: what a model folder says about itself beside diffusers' own files.

Written only by write_folder_info() (atomically), read only by read_folder_info(). One schema:

    {"defaults": {...},     the model's sampling defaults (registry.ModelDefaults; a missing field is SVD-XT's)
     "single_file": {...},  converted from a single-file checkpoint: the file, its sha256, what it is
     "trained": {...},      written by `stillmotion train`: the base, the steps, the config
     "base": "svd-xt",      a LoRA folder: the base model (a name or a folder) ...
     "lora": "lora.safetensors"}                                            ... and its adapter file

Every part but "defaults" is optional; files written before this module (partial defaults) still read.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Optional

from ..util import atomic_write
from .registry import ModelDefaults

FOLDER_INFO_FILE = "stillmotion.json"


def read_folder_info(folder) -> dict:
    """The folder's stillmotion.json as a dict; {} when it has none or it cannot be read."""
    try:
        info = json.loads((Path(folder) / FOLDER_INFO_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def folder_defaults(folder) -> ModelDefaults:
    """The defaults a saved model carries (tiny, demo, train, single-file conversions); else SVD-XT's."""
    raw = read_folder_info(folder).get("defaults")
    known = {k: v for k, v in (raw if isinstance(raw, dict) else {}).items() if k in ModelDefaults.__dataclass_fields__}
    for k in ("landscape", "portrait", "square"):
        if k in known:
            known[k] = tuple(known[k])
    if known.get("buckets"):
        known["buckets"] = tuple(tuple(b) for b in known["buckets"])
    return ModelDefaults(**known)


def write_folder_info(folder, defaults: ModelDefaults, *, single_file: Optional[dict] = None,
                      trained: Optional[dict] = None, base: Optional[str] = None, lora: Optional[str] = None) -> Path:
    """Write the folder's stillmotion.json whole (temp file + rename); the parts not given are left out."""
    info = {"defaults": dataclasses.asdict(defaults), "single_file": single_file, "trained": trained, "base": base,
            "lora": lora}
    text = json.dumps({k: v for k, v in info.items() if v is not None}, indent=2)
    return atomic_write(Path(folder) / FOLDER_INFO_FILE, text)
