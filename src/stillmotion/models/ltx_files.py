"""ComfyUI's LTX-2 files -> an LTX2ImageToVideoPipeline, assembled offline (as wan_files.py does for Wan).

The files (Lightricks' one-file checkpoints in models/checkpoints/, ComfyUI's Gemma-3 file in models/text_encoders/)
and their key layout are described in ltx_inspect.py, which says what a file is from its header alone (configs from
its shapes, checked on meta). `resolve_ltx_file()` assembles the folder (`<cache>/ltx-files/<key>/`: configs,
model_index.json, scheduler, `ltx_files.json` saying where each component's weights are); `load_components()` loads
the transformer and the video VAE through diffusers' single-file loaders (`from_single_file(STATE, config=FOLDER)`),
the audio VAE through diffusers' converter (its class has no from_single_file in 0.42.1), the connectors and the
vocoder, which diffusers has no single-file converter for, through the plain key renames of diffusers' own
conversion script (scripts/convert_ltx2_to_diffusers.py), checked against the modules' state_dict names, and fp8
weights upcast to the run's dtype with their per-tensor scales (comfy_files.upcast).

Always from the Lightricks/LTX-2 repo in the Hugging Face cache (never fetched here; refused with the command that
fetches them): the Gemma tokenizer (ComfyUI's `spiece_model` would need sentencepiece to read; the repo's is the same
vocabulary), the scheduler, and the text encoder's config. The text encoder's weights come from ComfyUI's Gemma file
when it holds the whole model (with its vision tower) in ComfyUI's layout, a plain prefix away from transformers'
Gemma3ForConditionalGeneration, and fits the repo's config key for key (`gemma_misfit`, on meta), else from the
repo. The record's `notes` say which, and why.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Optional

from ..errors import ModelUnavailable
from ..util import quiet_diffusers
from .comfy_files import (INPUT_SCALES, WEIGHT_SCALES, assembled_folder, comfy_root, files_under, hub_component,
                          not_a_model, upcast, write_config)
from .folder_info import write_folder_info
from .hashes import cached_sha256
from .ltx_inspect import LtxFile, classes, inspect_ltx_file, looks_like_ltx_file, split
from .registry import REGISTRY

FILES_RECORD = "ltx_files.json"  # in an assembled folder: component -> where its weights are
REPO_MODEL = "ltx-2"  # the registry entry whose repo holds the tokenizer, scheduler and text encoder
TEXT_FOLDERS = ("text_encoders", "clip")  # ComfyUI's folders for text encoders (clip: the older name)
# ComfyUI's Gemma-3 keys -> transformers' Gemma3ForConditionalGeneration (5.x)
GEMMA_RENAMES = (("model.", "model.language_model."),
                 ("vision_model.", "model.vision_tower.", "model.vision_tower.vision_model."),
                 ("multi_modal_projector.", "model.multi_modal_projector."))

# --------------------------------------------------------------------------- assemble
def text_encoder_files(root: Optional[Path]) -> list[LtxFile]:
    """ComfyUI's Gemma-3 files under models/text_encoders (or clip), the gemma_3_12B_it* ones first."""
    found = []
    for f in files_under(root, TEXT_FOLDERS, (".safetensors",)) if root else []:
        if looks_like_ltx_file(f):
            info = inspect_ltx_file(f)
            if info.kind == "text_encoder":
                found.append(info)
    return sorted(found, key=lambda i: (not i.path.name.lower().startswith("gemma_3_12b_it"), i.path.name))


def resolve_ltx_file(path: str | Path, comfy_dir: Optional[Path] = None) -> tuple[Path, dict]:
    """(the assembled folder, the record the sidecar keeps) for an LTX-2 checkpoint file; offline."""
    path = Path(path).expanduser()
    info = inspect_ltx_file(path)
    if info.kind != "checkpoint":
        raise not_a_model(path, info.label,
                          "the LTX-2 checkpoint (ComfyUI's models/checkpoints/ltx-2-19b-*.safetensors)")
    root = comfy_root(path, comfy_dir)
    entry = REGISTRY[REPO_MODEL]
    digest = cached_sha256(path)
    weights = {"file": str(path.resolve()), "format": "safetensors", "sha256": digest}
    parts: dict[str, dict] = {name: dict(weights) for name in info.configs}
    notes = ["connectors, vocoder: no single-file converter in diffusers; mapped by its conversion script's key "
             "renames (checked against the modules' names)"]
    if info.scaled:
        notes.append("fp8 weights: upcast to the run's dtype with their per-tensor scales")
    elif info.fp8:
        notes.append("fp8 weights: upcast to the run's dtype")
    text, note, snapshot = _text_parts(root, entry, f"{path.name} ({info.label.split(' (')[0]})")
    parts.update(text)
    notes.append(note)
    record = {"path": str(path.resolve()), "sha256": digest, "model": info.model, "label": info.label,
              "format": "safetensors", "fp8": info.fp8, "components": parts, "notes": notes}
    folder = assembled_folder("ltx-files", parts, FILES_RECORD,
                              lambda tmp: _write_folder(tmp, info, parts, snapshot, record))
    return folder, record


def _text_parts(root: Optional[Path], entry, why: str) -> tuple[dict, str, Path]:
    """(the text encoder's and tokenizer's parts, the note saying where they come from, the repo snapshot): ComfyUI's
    Gemma file when it holds the whole model and fits the repo's config, else the repo's text encoder."""
    gemma = text_encoder_files(root)
    usable = [g for g in gemma if g.vision]
    if usable:
        snapshot = hub_component(entry, ("tokenizer",), why, ("text_encoder/config.json",))
        misfit = gemma_misfit(usable[0].path, snapshot / "text_encoder")
        if misfit is None:
            file = usable[0].path
            return ({"text_encoder": {"file": str(file.resolve()), "format": "safetensors",
                                      "sha256": cached_sha256(file), "config": str(snapshot / "text_encoder")},
                     "tokenizer": _repo_part(entry, snapshot, "tokenizer")},
                    f"text_encoder: {file.name} with {entry.repo_id}'s config; tokenizer: {entry.repo_id}'s (the "
                    "file's spiece_model is the same vocabulary)", snapshot)
        have = f"{usable[0].path.name} does not fit {entry.repo_id}'s Gemma-3 ({misfit})"
    else:
        have = f"{gemma[0].path.name} holds the text layers only" if gemma else \
            f"no Gemma-3 file in {root / 'models' / 'text_encoders' if root else 'a ComfyUI folder'}"
    snapshot = hub_component(entry, ("text_encoder", "tokenizer"), why)
    return ({name: _repo_part(entry, snapshot, name) for name in ("text_encoder", "tokenizer")},
            f"text_encoder, tokenizer: {have}; {entry.repo_id}'s are used", snapshot)


def _repo_part(entry, snapshot: Path, name: str) -> dict:
    return {"folder": str(snapshot / name), "repo_id": entry.repo_id, "commit": snapshot.name}


def gemma_misfit(path: Path, config_folder: Path) -> Optional[str]:
    """Why ComfyUI's Gemma file cannot load into the repo's Gemma3ForConditionalGeneration (a key missing, left over
    or of another shape, after the prefix renames), or None when it fits; from its header, on meta."""
    import transformers
    from accelerate import init_empty_weights

    from .single_file import read_header

    config = transformers.AutoConfig.from_pretrained(config_folder)
    with init_empty_weights():
        model = transformers.Gemma3ForConditionalGeneration(config)
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    names = set(want)
    have = {_rename_gemma(k, names): tuple(s) for k, (_d, s) in read_header(path)[0].items()
            if k not in ("spiece_model", "scaled_fp8") and not k.endswith(WEIGHT_SCALES + INPUT_SCALES)}
    missing = sorted(set(want) - set(have) - {"lm_head.weight"})
    extra = sorted(set(have) - set(want))
    shaped = [k for k in have if k in want and have[k] != want[k]]
    if missing or extra or shaped:
        return f"{'missing' if missing else 'unexpected' if extra else 'another shape of'} {(missing + extra + shaped)[0]}"
    return None


def _write_folder(out: Path, info: LtxFile, parts: dict, snapshot: Path, record: dict) -> None:
    """model_index.json, scheduler/, each component's config.json, ltx_files.json and stillmotion.json."""
    import diffusers

    out.mkdir(parents=True)
    index = {"_class_name": "LTX2ImageToVideoPipeline", "_diffusers_version": diffusers.__version__,
             "transformer": ["diffusers", "LTX2VideoTransformer3DModel"], "vae": ["diffusers", "AutoencoderKLLTX2Video"],
             "audio_vae": ["diffusers", "AutoencoderKLLTX2Audio"], "connectors": ["ltx2", "LTX2TextConnectors"],
             "vocoder": ["ltx2", "LTX2Vocoder"], "text_encoder": ["transformers", "Gemma3ForConditionalGeneration"],
             "tokenizer": ["transformers", "GemmaTokenizerFast"],
             "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"]}
    (out / "model_index.json").write_text(json.dumps(index, indent=2))
    if (snapshot / "scheduler" / "scheduler_config.json").is_file():  # the repo's scheduler (its shift terms)
        shutil.copytree(snapshot / "scheduler", out / "scheduler")
    else:
        diffusers.FlowMatchEulerDiscreteScheduler().save_pretrained(out / "scheduler")
    for name, cls in classes().items():
        write_config(out / name, cls, info.configs[name])
    (out / "text_encoder").mkdir()
    shutil.copy(snapshot / "text_encoder" / "config.json", out / "text_encoder" / "config.json")
    (out / FILES_RECORD).write_text(json.dumps(parts, indent=2))
    write_folder_info(out, REGISTRY[info.model].defaults, single_file=record)


# --------------------------------------------------------------------------- load
def is_assembled(folder) -> bool:
    return (Path(folder) / FILES_RECORD).is_file()


def _read(path: str, dtype) -> dict:
    """A safetensors file's tensors, fp8 ones upcast with their scales."""
    from safetensors.torch import load_file

    return upcast(load_file(path), dtype, Path(path).name)


def load_components(folder, dtype) -> dict:
    """The LTX2ImageToVideoPipeline components of an assembled folder: the transformer and the VAEs through
    diffusers' single-file converters, the connectors and the vocoder by their renames, the text encoder from
    ComfyUI's Gemma file (prefix renames) or the repo, the tokenizer and the scheduler from their folders."""
    import diffusers
    import transformers

    folder = Path(folder)
    parts = json.loads((folder / FILES_RECORD).read_text())
    state = _read(parts["transformer"]["file"], dtype)
    comps = split(state)
    del state
    out: dict = {"scheduler": diffusers.FlowMatchEulerDiscreteScheduler.from_pretrained(folder / "scheduler")}
    for name, cls in classes().items():
        if hasattr(cls, "from_single_file"):  # the transformer and the video VAE (the audio VAE's class has no
            # from_single_file in diffusers 0.42.1, though its converter exists: split() ran it)
            with quiet_diffusers():  # (its cast to `dtype` logs a notice about float32 modules LTX-2 has none of)
                out[name] = cls.from_single_file(comps.pop(name), config=str(folder), subfolder=name,
                                                 torch_dtype=dtype, local_files_only=True)
        else:
            out[name] = _load_plain(cls, folder / name, comps.pop(name), dtype)
    text = parts["text_encoder"]
    if "file" in text:
        config = transformers.AutoConfig.from_pretrained(folder / "text_encoder")
        gemma = {k: v for k, v in _read(text["file"], dtype).items() if k != "spiece_model"}
        out["text_encoder"] = _load_plain(transformers.Gemma3ForConditionalGeneration, config, gemma, dtype,
                                          tied=("lm_head.weight",), rename=_rename_gemma)
    else:
        out["text_encoder"] = transformers.Gemma3ForConditionalGeneration.from_pretrained(text["folder"],
                                                                                          torch_dtype=dtype)
    out["tokenizer"] = transformers.AutoTokenizer.from_pretrained(parts["tokenizer"]["folder"])
    return out


def _rename_gemma(key: str, names: set) -> str:
    """ComfyUI's Gemma-3 key -> the model's: a prefix away (the vision tower's one of two, by transformers' version)."""
    for old, *news in GEMMA_RENAMES:
        if key.startswith(old):
            return next((n + key[len(old):] for n in news if n + key[len(old):] in names), news[0] + key[len(old):])
    return key


def _load_plain(cls, config, state: dict, dtype, tied: tuple[str, ...] = (), rename=None):
    """A module built on meta from its config (a folder or a config object) and given exactly `state` (its keys
    through `rename(key, the module's names)` first); a key missing or left over is a layout stillmotion does not
    know, refused in one line."""
    import torch
    from accelerate import init_empty_weights

    with init_empty_weights():
        if isinstance(config, Path):
            model = cls.from_config(cls.load_config(config))
        else:
            model = cls._from_config(config) if hasattr(cls, "_from_config") else cls(config)
    names = set(model.state_dict())
    if rename is not None:
        state = {rename(k, names): v for k, v in state.items()}
    missing = sorted(names - set(state) - set(tied))
    extra = sorted(set(state) - names)
    if missing or extra:
        raise ModelUnavailable(f"{cls.__name__}: the file's keys do not match it (missing {missing[:2]}, unexpected "
                               f"{extra[:2]}); stillmotion runs LTX-2 (2.0) files as Lightricks and ComfyUI publish "
                               "them.")
    model.load_state_dict({k: v.to(dtype) for k, v in state.items()}, strict=False, assign=True)
    if tied:
        model.tie_weights()
    return model.to(torch.device("cpu")).eval()
