"""Model families: one module per family of image-to-video models, behind one interface (base.Family).

The registry below maps what a model says about itself to its family, the way vLLM maps a config's
`architectures` to a class: a diffusers folder's `_class_name` (model_index.json), a registry entry's
`family`. Families are imported on first use. Adding a family is a module with one Family subclass plus
one line in FAMILIES and one per pipeline class in PIPELINES (docs/architecture.md, "How to add a family").
Nothing outside families/ branches on a family's name: the engine asks the family, and the spec's fields
say which families take them (`x-families`).
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

from ..errors import ModelUnavailable
from .base import Family

# family name -> (module, class)
FAMILIES: dict[str, tuple[str, str]] = {
    "svd": ("svd", "SVDFamily"),
    "wan": ("wan", "WanFamily"),
    "ltx2": ("ltx", "LTX2Family"),
    "ltx": ("ltx", "LTXFamily"),
    "framepack": ("framepack", "FramePackFamily"),
}
# the `_class_name` a diffusers folder's model_index.json declares -> family name
PIPELINES: dict[str, str] = {
    "StableVideoDiffusionPipeline": "svd",
    "WanImageToVideoPipeline": "wan",
    # LTX-2's repos declare the text-to-video class; every LTX-2 pipeline takes the same components
    "LTX2Pipeline": "ltx2",
    "LTX2ImageToVideoPipeline": "ltx2",
    "LTX2ConditionPipeline": "ltx2",
    # LTX-Video 0.9.x: the 0.9.5+ repos declare LTXConditionPipeline, the older ones LTXPipeline
    "LTXPipeline": "ltx",
    "LTXImageToVideoPipeline": "ltx",
    "LTXConditionPipeline": "ltx",
    "HunyuanVideoFramepackPipeline": "framepack",
}

_loaded: dict[str, Family] = {}


def get_family(name: str) -> Family:
    """The family called `name` (its module imported on first use)."""
    if name not in _loaded:
        try:
            module, cls = FAMILIES[name]
        except KeyError:
            raise ModelUnavailable(f"Unknown model family {name!r}: stillmotion knows {', '.join(FAMILIES)}.") from None
        _loaded[name] = getattr(importlib.import_module(f"{__name__}.{module}"), cls)()
    return _loaded[name]


def family_of_folder(path) -> str | None:
    """The family a diffusers folder declares (model_index.json's `_class_name`), or None without one."""
    index = Path(path) / "model_index.json"
    try:
        declared = json.loads(index.read_text()).get("_class_name")
    except (OSError, ValueError):
        return None
    if declared not in PIPELINES:
        raise ModelUnavailable(
            f"{path} holds a {declared} model, which stillmotion does not run: it runs "
            f"{', '.join(sorted(PIPELINES))} folders.")
    return PIPELINES[declared]


def run_entry(entry, folder=None):
    """The entry a model runs with, as the Engine will (Family.entry_for_folder): a local folder with no stillmotion
    defaults gets its family's (e.g. a Wan folder: the pipeline's own), every other entry is its own. Front ends
    that resolve a spec before a worker loads the model (the server's submit, the UI) use this entry."""
    if folder is None and entry.source == "local":
        from ..models.lora import lora_record
        from ..models.resolve import lora_base

        folder = Path(entry.name).expanduser()
        if lora_record(folder) is not None:  # a LoRA folder: its base folder (a named base: the entry is its own)
            base = Path(lora_base(folder)).expanduser()
            folder = base if base.is_dir() else None
    return family_for(entry, folder).entry_for_folder(entry, folder) if folder is not None else entry


def family_for(entry, folder=None) -> Family:
    """The family of a model entry (registry.ModelEntry): what its folder declares (the resolved `folder`, or
    a local folder's own, a LoRA folder's base folder, a hub id's cached snapshot), else the entry's `family`
    (a hub id not downloaded yet: SVD's, until the engine reads the downloaded folder)."""
    if folder is None and entry.source == "local":
        folder = Path(entry.name).expanduser()
        from ..models.lora import lora_record

        if lora_record(folder) is not None:  # a LoRA folder: its base folder says (a named base: the entry)
            from ..models.resolve import lora_base

            base = Path(lora_base(folder)).expanduser()
            folder = base if base.is_dir() else None
    elif folder is None and entry.source == "hub":  # a hub id: its cached snapshot says, if there is one
        from ..models.hub import cached_snapshot

        folder = cached_snapshot(entry, complete=False)
    declared = family_of_folder(folder) if folder is not None else None
    return get_family(declared or entry.family)


__all__ = ["FAMILIES", "PIPELINES", "Family", "family_for", "family_of_folder", "get_family", "run_entry"]
