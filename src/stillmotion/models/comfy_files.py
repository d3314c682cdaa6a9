"""What ComfyUI's model files share, whatever the model (wan_files.py, ltx_files.py assemble them).

ComfyUI keeps a model in its original code's key layout, in one or several files under models/<kind>/. Each
family's module says what a file is from its header and assembles a small folder in the cache around it: diffusers
configs, model_index.json, the scheduler, and a record of where each component's weights are. Here: finding the
ComfyUI folder a file belongs to, the components of the model's diffusers repo in the Hugging Face cache (never
fetched here: refused with the command that fetches them), a component's config.json, and fp8 weights upcast
with their scales.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

from ..errors import ModelUnavailable

# safetensors dtypes of fp8 weights (Lightricks' *-fp8 files, ComfyUI's *_fp8_scaled / *_fp8_e4m3fn files)
FP8_DTYPES = ("F8_E4M3", "F8_E5M2")
# a weight's scale: Lightricks'/diffusers' spelling, ComfyUI's; and the activation scales, which mean nothing once the
# weight is upcast
WEIGHT_SCALES = (".weight_scale", ".scale_weight")
INPUT_SCALES = (".input_scale", ".scale_input")


def comfy_root(path: Path, given: Optional[Path] = None) -> Optional[Path]:
    """The ComfyUI folder a file belongs to: `given`, else the folder above its models/<kind>/, else
    $STILLMOTION_COMFYUI_DIR."""
    if given is not None:
        return Path(given).expanduser()
    for parent in path.resolve().parents:
        if parent.name == "models" and parent.parent != parent:
            return parent.parent
    if os.environ.get("STILLMOTION_COMFYUI_DIR"):
        return Path(os.environ["STILLMOTION_COMFYUI_DIR"]).expanduser()
    return None


def files_under(root: Path, folders: tuple[str, ...], suffixes: tuple[str, ...]) -> list[Path]:
    """The model files under a ComfyUI folder's models/<folder>/ (recursively), in name order."""
    found = []
    for sub in folders:
        folder = root / "models" / sub
        found += [f for f in sorted(folder.rglob("*")) if f.is_file() and f.suffix.lower() in suffixes] \
            if folder.is_dir() else []
    return found


def hub_component(repo_entry, names: tuple[str, ...], why: str, files: tuple[str, ...] = ()) -> Path:
    """The cached hub snapshot of `repo_entry` holding the component folders `names` (and the files `files`, paths
    inside it); refused (with the command that fetches them) when they are not cached. Never downloads."""
    from .hub import cached_snapshot

    folder = cached_snapshot(repo_entry, complete=False)
    missing = [n for n in names if folder is None or not _whole(folder / n)]
    missing += [f for f in files if folder is None or not (folder / f).is_file()]
    if missing:
        includes = " ".join([f"'{n}/*'" for n in names] + [f"'{f}'" for f in files])
        raise ModelUnavailable(
            f"{why}: {', '.join(missing)} of {repo_entry.repo_id} are not in the Hugging Face cache; fetch them once "
            f"with `hf download {repo_entry.repo_id} {includes} model_index.json 'scheduler/*'`, then run again.")
    return folder


def not_a_model(path: Path, label: str, what: str) -> ModelUnavailable:
    """The refusal of a part (a VAE, a text encoder) given as --model: what it is, and which file to pass."""
    return ModelUnavailable(f"{path} is a {label.split(' (')[0]}, not a model: pass {what} as --model.")


def assembled_folder(kind: str, parts: dict, record_file: str, write) -> Path:
    """The cache folder `<cache>/<kind>/<key>/` of an assembly whose `parts` (component -> where its weights are)
    give the key; written whole by `write(temporary folder)` the first time (util.atomic_path), found after."""
    import hashlib

    from .paths import cache_root

    key = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]
    folder = cache_root() / kind / key
    if not (folder / record_file).is_file():
        from ..util import atomic_path

        with atomic_path(folder) as tmp:
            write(tmp)
    return folder


def _whole(folder: Path) -> bool:
    """Whether a cached component folder holds more than its config (a config alone is what fetching the configs
    leaves: the component's weights or tokenizer files are still missing)."""
    return folder.is_dir() and any(f.is_file() and f.name != "config.json" for f in folder.iterdir())


def write_config(folder: Path, cls, config: dict) -> None:
    """A diffusers component's config.json (`cls` a diffusers class), with only the keys its __init__ takes."""
    import diffusers

    init = dict(cls.extract_init_dict(config)[0])
    folder.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"_class_name": cls.__name__, "_diffusers_version": diffusers.__version__, **init}, indent=2,
                      default=list)
    (folder / "config.json").write_text(text)


def fp8_scaled(header: dict) -> tuple[bool, bool]:
    """(whether a header's tensors include fp8 ones, whether they come with per-tensor weight scales)."""
    fp8 = any(dtype in FP8_DTYPES for dtype, _shape in header.values())
    return fp8, fp8 and any(k.endswith(WEIGHT_SCALES) for k in header)


def upcast(state: dict, dtype, where: str) -> dict:
    """A state dict with its fp8 weights in `dtype`: each times its scale (`NAME.weight_scale` or ComfyUI's
    `NAME.scale_weight`: one number, or one per output row) where the file has one; the scale and activation-scale
    keys dropped. Other tensors are left as stored (the loader casts them)."""
    import torch

    fp8 = (torch.float8_e4m3fn, torch.float8_e5m2)
    out = {}
    for key, value in state.items():
        if key.endswith(WEIGHT_SCALES + INPUT_SCALES) or key == "scaled_fp8":
            continue
        if value.dtype in fp8:
            value = value.to(torch.float32)
            stem = key[: -len(".weight")] if key.endswith(".weight") else key
            scale = next((state[stem + s] for s in WEIGHT_SCALES if stem + s in state), None)
            if scale is not None:
                scale = scale.to(torch.float32)
                if scale.numel() == value.shape[0] and scale.numel() > 1:
                    scale = scale.reshape(-1, *([1] * (value.ndim - 1)))
                elif scale.numel() != 1:
                    raise ModelUnavailable(f"{where}: {key}'s scale has shape {tuple(scale.shape)}, neither one number "
                                           "nor one per row, which stillmotion cannot apply: use the bf16 file.")
                value = value * scale
            value = value.to(dtype)
        out[key] = value
    return out
