"""A workflow's ckpt_name -> what --model gets; workflows inside API requests and batch manifests."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional

from ..errors import InvalidInput, ModelUnavailable
from .graph import LOADER
from .media import read_from_file
from .wan_graph import parse_workflow

# ComfyUI's names for the checkpoints that sit at the root of Stability's hub repos
KNOWN_CHECKPOINTS = {
    "svd.safetensors": "svd",
    "svd_xt.safetensors": "svd-xt",
    "svd_xt_1_1.safetensors": "svd-xt-1-1",
}
CHECKPOINT_FOR_MODEL = {v: k for k, v in KNOWN_CHECKPOINTS.items()}

# --------------------------------------------------------------------------- the checkpoint
def comfyui_dir(given: Optional[str] = None) -> Optional[Path]:
    """--comfyui-dir, else $STILLMOTION_COMFYUI_DIR, else None."""
    value = given or os.environ.get("STILLMOTION_COMFYUI_DIR")
    return Path(value).expanduser() if value else None


def resolve_checkpoint(ckpt_name: str, *, base_dir: Optional[Path] = None, comfy_dir: Optional[Path] = None) -> str:
    """What --model gets for a workflow's ckpt_name: the file in ComfyUI's models/checkpoints, the file next to
    the workflow, the hub model of a known name (svd_xt.safetensors -> svd-xt), or a registry name as it is."""
    from ..models.registry import REGISTRY

    from .wan_graph import COMFY_FILES

    rel = Path(ckpt_name.replace("\\", "/"))
    looked = []
    if comfy_dir is not None:  # checkpoints (SVD's ckpt_name), diffusion_models and unet (Wan's unet_name)
        looked += [comfy_dir / "models" / sub for sub in MODEL_FOLDERS]
    if base_dir is not None:
        looked.append(base_dir)
    for folder in looked:
        for cand in (folder / rel, folder / rel.name):
            if cand.is_file():
                return str(cand)
    if rel.name.lower() in KNOWN_CHECKPOINTS:
        return KNOWN_CHECKPOINTS[rel.name.lower()]
    wan_names = {v.lower(): k for k, v in COMFY_FILES.items() if "/" not in k}  # (not A14B's low-noise file)
    if rel.name.lower() in wan_names:  # Comfy-Org's file of a registry Wan model: its diffusers repo
        return wan_names[rel.name.lower()]
    if ckpt_name in REGISTRY or Path(ckpt_name).expanduser().is_dir():
        return ckpt_name  # a registry name or a diffusers folder, as export_workflow writes them for such models
    where = " or ".join(str(f) for f in looked) or "no folder (no --comfyui-dir given)"
    raise ModelUnavailable(
        f"The workflow's model {ckpt_name!r} ({LOADER}.ckpt_name or UNETLoader.unet_name) was not found in {where}; "
        "pass --comfyui-dir DIR (the ComfyUI folder, holding models/) or --model."
    )


# ComfyUI's folders that hold a model file --model may name: checkpoints (SVD), diffusion models (Wan's transformers)
MODEL_FOLDERS = ("checkpoints", "diffusion_models", "unet")


def find_model_file(name: str, comfy_dir: Optional[Path]) -> str:
    """--model NAME with --comfyui-dir: a file name found in ComfyUI's model folders, else NAME as it is."""
    if comfy_dir is None or Path(name).expanduser().exists() or "/" in name.replace("\\", "/").strip("./"):
        return name
    for sub in MODEL_FOLDERS:
        cand = comfy_dir / "models" / sub / name
        if cand.is_file():
            return str(cand)
    return name


def workflow_fields(data: Any, *, where: str = "workflow", running_model: Optional[str] = None
                    ) -> tuple[dict, Optional[str]]:
    """(spec fields, the model it names) for the API and batch manifests: explicit fields are merged over these
    by the caller. The model is the known hub name or registry name of ckpt_name when there is one, else the
    file name as written. A Wan graph's VAE and expert split are checked against the model that runs
    (`running_model`, else the one it names), as generate checks them."""
    wf = parse_workflow(data, where=where)
    model = wf.ckpt_name
    if model is not None:
        try:
            model = resolve_checkpoint(model, comfy_dir=comfyui_dir())
        except ModelUnavailable:
            pass
    if wf.files:
        from ..models.registry import DEFAULT_MODEL
        from .wan_graph import check_wan_model

        check_wan_model(wf, running_model or model or DEFAULT_MODEL)
    return wf.fields, model


def apply_workflow(fields: dict, running_model: Optional[str] = None, *, base_dir: Optional[Path] = None,
                   where: str = "workflow") -> dict:
    """A request's or manifest row's fields with its `workflow` (an object, JSON text, or with `base_dir` a file
    path relative to it) turned into spec fields; the explicit fields win over the workflow's. When
    `running_model` is given, a workflow naming another checkpoint is refused."""
    fields = dict(fields)
    value = fields.pop("workflow", None)
    if value is None:
        return fields
    if isinstance(value, str) and value.strip().startswith("{"):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as e:
            raise InvalidInput(f"{where}: not valid JSON ({e.msg}); send a ComfyUI API workflow object.") from None
    elif isinstance(value, str) and base_dir is not None:
        path = Path(value).expanduser()
        path = path if path.is_absolute() else base_dir / path
        value = read_from_file(path)
        if value is None:
            raise InvalidInput(f"{where}: {path} is a stillmotion sidecar, not a ComfyUI workflow.")
    elif not isinstance(value, dict):
        raise InvalidInput(f"{where}: must be a ComfyUI API workflow object (Workflow > Export (API) in ComfyUI).")
    wf_fields, model = workflow_fields(value, where=where, running_model=running_model)
    if running_model is not None and not same_model(model, running_model):
        raise InvalidInput(
            f"{where}: its {LOADER}.ckpt_name (or UNETLoader.unet_name) runs {model!r}, but this runs "
            f"{running_model!r}; change the workflow's checkpoint or run it with that model."
        )
    return {**wf_fields, **fields}


def same_model(workflow_model: Optional[str], running: str) -> bool:
    """Whether a workflow's model is the one a server or batch runs (a name, or the same file name)."""
    if workflow_model is None:
        return True
    if workflow_model == running:
        return True
    from .wan_graph import COMFY_FILES

    a, b = Path(workflow_model).name, Path(running).name
    return (a == b or KNOWN_CHECKPOINTS.get(a.lower()) == running or KNOWN_CHECKPOINTS.get(b.lower()) == workflow_model
            or COMFY_FILES.get(workflow_model, "").lower() == b.lower())  # Comfy-Org's Wan file of that model


