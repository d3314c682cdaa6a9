"""ComfyUI's Wan files (Comfy-Org's repackaged split layout, and GGUF transformers) -> a WanImageToVideoPipeline.

ComfyUI keeps Wan in pieces, each in the original Wan code's key layout:

    models/diffusion_models/  wan2.1_i2v_480p_14B_fp16.safetensors, wan2.2_i2v_{high,low}_noise_14B_*.safetensors,
                              wan2.2_ti2v_5B_fp16.safetensors, or *.gguf (city96's quantised transformers)
    models/vae/               wan_2.1_vae.safetensors, wan2.2_vae.safetensors
    models/text_encoders/     umt5_xxl_*.safetensors
    models/clip_vision/       clip_vision_h.safetensors

`wan_inspect.inspect_wan_file()` says what a file is from its header alone. `resolve_wan_file()` assembles a model around a transformer file, offline: a small folder in the cache
(`<cache>/wan-files/<key>/`) with diffusers configs made from the files' shapes, model_index.json, the
scheduler, and `wan_files.json`, which says where each component's weights are. Nothing is copied:
`load_components()` loads the transformer(s) and the 2.1 VAE with diffusers' own single-file converters
(`from_single_file(FILE, config=FOLDER)`, GGUF through `GGUFQuantizationConfig`), at every load.

What diffusers 0.42 has no converter for is taken from the model's diffusers repo in the Hugging Face cache
(never fetched here; refused with the command that fetches it): the UMT5 text encoder and its tokenizer,
the CLIP vision encoder with its processor (2.1), and the Wan 2.2 VAE (TI2V-5B), whose key layout
`convert_wan_vae_to_diffusers` does not handle. Each such choice is listed in the record's `notes`.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Optional

from ..errors import ModelUnavailable
from .comfy_files import assembled_folder, comfy_root, files_under, hub_component, not_a_model, write_config
from .folder_info import write_folder_info
from .hashes import cached_sha256
from .registry import REGISTRY, ModelDefaults
from .wan_inspect import WAN_SUFFIXES, WanFile, gguf_orig_shapes, inspect_wan_file

FILES_RECORD = "wan_files.json"  # in an assembled folder: component -> where its weights are
# ComfyUI's folders for each kind of file (models/unet is the older name of models/diffusion_models)
FOLDERS = {"transformer": ("diffusion_models", "unet"), "vae": ("vae",), "text_encoder": ("text_encoders", "clip"),
           "image_encoder": ("clip_vision",)}


def gguf_state_dict(path) -> dict:
    """A GGUF file's tensors as diffusers' loader reads them (quantised ones as GGUFParameter), with the tensors
    ComfyUI-GGUF stored reshaped given their shape back."""
    from diffusers.models.model_loading_utils import load_gguf_checkpoint
    from gguf import GGUFReader

    state = load_gguf_checkpoint(str(path), return_tensors=True)
    for name, shape in gguf_orig_shapes(GGUFReader(str(path))).items():
        tensor = state.get(name)
        if tensor is None:
            continue
        if type(tensor).__name__ == "GGUFParameter":
            raise ModelUnavailable(f"{path}: {name} is quantised and stored reshaped, which diffusers cannot load; "
                                   "use a GGUF file that keeps it unquantised (city96's do).")
        state[name] = tensor.reshape(shape)
    return state


# --------------------------------------------------------------------------- finding the pieces
def wan_files_in(root: Path, kind: str) -> list[WanFile]:
    """The Wan files of one kind under a ComfyUI folder's models/<kind folders>/ (headers only)."""
    found = []
    for f in files_under(root, FOLDERS[kind], WAN_SUFFIXES):
        try:
            info = inspect_wan_file(f)
        except ModelUnavailable:
            continue
        if info.kind == kind:
            found.append(info)
    return found


def _partner(info: WanFile, root: Optional[Path]) -> WanFile:
    """A14B's other expert: the same name with high_noise <-> low_noise, else any file of the other expert."""
    other = "low" if info.expert == "high" else "high"
    swapped = info.path.with_name(re.sub(info.expert, other, info.path.name, count=1, flags=re.I))
    candidates = [swapped] if swapped.is_file() else []
    candidates += [w.path for w in (wan_files_in(root, "transformer") if root else [])]
    for cand in candidates:
        try:
            got = inspect_wan_file(cand)
        except ModelUnavailable:
            continue
        if got.model == info.model and got.expert == other and got.config == info.config:
            return got
    raise ModelUnavailable(f"{info.path.name} is the {info.expert}-noise expert of Wan 2.2 I2V A14B, which needs "
                           f"both: put its {other}-noise file ({swapped.name}) beside it.")


# --------------------------------------------------------------------------- assemble
def resolve_wan_file(path: str | Path, comfy_dir: Optional[Path] = None) -> tuple[Path, dict]:
    """(the assembled folder, the record the sidecar keeps) for a Wan transformer file; offline."""
    path = Path(path).expanduser()
    info = inspect_wan_file(path)
    if info.kind != "transformer":
        raise not_a_model(path, info.label, "the diffusion model file (ComfyUI's models/diffusion_models/...)")
    root = comfy_root(path, comfy_dir)
    entry = REGISTRY[info.model]
    notes: list[str] = []
    parts: dict[str, dict] = {}
    transformers = [info]
    if info.expert is not None:
        partner = _partner(info, root)
        transformers = [info, partner] if info.expert == "high" else [partner, info]
    for name, t in zip(("transformer", "transformer_2"), transformers):
        parts[name] = {"file": str(t.path.resolve()), "format": t.format, "sha256": cached_sha256(t.path)}

    # the VAE: a 2.1 file converts; the 2.2 one (TI2V-5B) has no converter: the repo's vae
    want = "2.2" if info.model == "wan2.2-ti2v-5b" else "2.1"
    vaes = [v for v in (wan_files_in(root, "vae") if root else []) if v.version == want]
    vaes.sort(key=lambda v: (not v.path.name.lower().startswith(f"wan_{want}_vae") and
                             not v.path.name.lower().startswith(f"wan{want}_vae"), v.path.name))
    hub_parts = ["text_encoder", "tokenizer"] + (["image_encoder", "image_processor"] if info.config["image_dim"] else [])
    if vaes and vaes[0].converts:
        parts["vae"] = {"file": str(vaes[0].path.resolve()), "format": "safetensors",
                        "sha256": cached_sha256(vaes[0].path), "config": vaes[0].config}
    else:
        hub_parts.append("vae")
        notes.append(f"vae: {vaes[0].path.name} has no converter in diffusers; {entry.repo_id}'s vae is used"
                     if vaes else f"vae: no Wan {want} VAE in {root or 'a ComfyUI folder'}; {entry.repo_id}'s vae is used")
    for kind, comps in (("text_encoder", ("text_encoder", "tokenizer")), ("image_encoder", ("image_encoder", "image_processor"))):
        if not any(c in hub_parts for c in comps):
            continue
        files = wan_files_in(root, kind) if root else []
        have = f"{files[0].path.name} is in ComfyUI's layout, which diffusers has no converter for" if files else \
            "no ComfyUI file"
        notes.append(f"{'/'.join(comps)}: {have}; {entry.repo_id}'s are used")
    snapshot = hub_component(entry, tuple(hub_parts), f"{path.name} ({info.label}) needs {', '.join(hub_parts)}")
    for name in hub_parts:
        parts[name] = {"folder": str(snapshot / name), "repo_id": entry.repo_id, "commit": snapshot.name}

    record = {"path": str(path.resolve()), "sha256": parts["transformer"]["sha256"], "model": info.model,
              "label": info.label, "format": info.format, "components": parts, "notes": notes}
    folder = assembled_folder("wan-files", parts, FILES_RECORD,
                              lambda tmp: _write_folder(tmp, info, parts, snapshot, entry.defaults, record))
    return folder, record


def _write_folder(out: Path, info: WanFile, parts: dict, snapshot: Path, defaults: ModelDefaults, record: dict) -> None:
    """model_index.json, scheduler/, each component's config.json, wan_files.json and stillmotion.json."""
    import diffusers

    out.mkdir(parents=True)
    index_src = snapshot / "model_index.json"
    repo_index = json.loads(index_src.read_text()) if index_src.is_file() else {}
    two = "transformer_2" in parts
    index = {
        "_class_name": "WanImageToVideoPipeline",
        "_diffusers_version": diffusers.__version__,
        "transformer": ["diffusers", "WanTransformer3DModel"],
        "transformer_2": ["diffusers", "WanTransformer3DModel"] if two else [None, None],
        "vae": ["diffusers", "AutoencoderKLWan"],
        "text_encoder": ["transformers", "UMT5EncoderModel"],
        "tokenizer": ["transformers", "T5TokenizerFast"],
        "image_encoder": ["transformers", "CLIPVisionModel"] if "image_encoder" in parts else [None, None],
        "image_processor": ["transformers", "CLIPImageProcessor"] if "image_processor" in parts else [None, None],
        "scheduler": ["diffusers", "UniPCMultistepScheduler"],
        # the pipeline's own settings: the repo's when cached, else the published ones
        "boundary_ratio": repo_index.get("boundary_ratio", 0.9 if two else None),
        "expand_timesteps": repo_index.get("expand_timesteps", info.model == "wan2.2-ti2v-5b"),
    }
    (out / "model_index.json").write_text(json.dumps(index, indent=2))
    if (snapshot / "scheduler" / "scheduler_config.json").is_file():  # the repo's scheduler (its flow shift)
        shutil.copytree(snapshot / "scheduler", out / "scheduler")
    else:
        from .tiny_wan import wan_scheduler

        wan_scheduler(3.0 if info.model == "wan2.1-i2v-480p" else 5.0).save_pretrained(out / "scheduler")
    for name in ("transformer", "transformer_2"):
        if name in parts:
            write_config(out / name, diffusers.WanTransformer3DModel, info.config)
    if "file" in parts["vae"]:
        write_config(out / "vae", diffusers.AutoencoderKLWan, parts["vae"]["config"])
    for name, part in parts.items():  # the repo's configs too, which the size rules and the planner read
        if "folder" in part and (Path(part["folder"]) / "config.json").is_file():
            (out / name).mkdir()
            shutil.copy(Path(part["folder"]) / "config.json", out / name / "config.json")
    (out / FILES_RECORD).write_text(json.dumps({k: v for k, v in parts.items()}, indent=2))
    write_folder_info(out, defaults, single_file=record)


# --------------------------------------------------------------------------- load
def is_assembled(folder) -> bool:
    return (Path(folder) / FILES_RECORD).is_file()


def load_components(folder, dtype) -> dict:
    """The WanImageToVideoPipeline components of an assembled folder: transformers and the 2.1 VAE through
    diffusers' single-file converters (GGUF files quantised, computing in `dtype`), the rest from their folders."""
    import diffusers
    import transformers

    folder = Path(folder)
    parts = json.loads((folder / FILES_RECORD).read_text())
    index = json.loads((folder / "model_index.json").read_text())
    out: dict = {"scheduler": diffusers.UniPCMultistepScheduler.from_pretrained(folder / "scheduler"),
                 "boundary_ratio": index.get("boundary_ratio"), "expand_timesteps": index.get("expand_timesteps", False)}
    loaders = {"transformer": diffusers.WanTransformer3DModel, "transformer_2": diffusers.WanTransformer3DModel,
               "vae": diffusers.AutoencoderKLWan, "text_encoder": transformers.UMT5EncoderModel,
               "tokenizer": transformers.AutoTokenizer, "image_encoder": transformers.CLIPVisionModel,
               "image_processor": transformers.CLIPImageProcessor}
    for name, cls in loaders.items():
        part = parts.get(name)
        if part is None:
            out[name] = None
        elif "file" in part:
            kw, source = {}, part["file"]
            if part["format"] == "gguf":
                from diffusers import GGUFQuantizationConfig

                kw["quantization_config"] = GGUFQuantizationConfig(compute_dtype=dtype)
                source = gguf_state_dict(source)  # (diffusers' own GGUF read, plus ComfyUI-GGUF's reshaped tensors)
            out[name] = cls.from_single_file(source, config=str(folder), subfolder=name, torch_dtype=dtype,
                                             local_files_only=True, **kw)
        elif name in ("tokenizer", "image_processor"):
            out[name] = cls.from_pretrained(part["folder"])
        else:
            out[name] = cls.from_pretrained(part["folder"], torch_dtype=dtype)
    return out
