"""A sidecar -> the ComfyUI API workflow of the video it describes (ComfyUI's own class and input names)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from ..errors import InvalidInput
from ..models.registry import DEFAULT_MODEL
from ..spec import SPEC_FIELDS, GenerationSpec
from .checkpoints import CHECKPOINT_FOR_MODEL
from .graph import CONDITIONING, DECODE, GUIDANCE, LOAD_IMAGE, LOADER, NODE_FIELDS, VHS_FOR_FORMAT
from .wan_graph import WAN_NODE_FIELDS, export_wan

# --------------------------------------------------------------------------- export
def export_workflow(record: dict) -> tuple[dict, list[str]]:
    """A ComfyUI API workflow for a video we made, from its sidecar; and notes on what ComfyUI will not do.

    The spec's fields say which graph: a prompted spec (guidance_scale, prompt: Wan's fields) is written with
    Wan's nodes (wan_graph.export_wan), else with SVD's."""
    spec = GenerationSpec.build(**(record.get("spec") or {}))
    prompted = spec.guidance_scale is not None
    needed = WAN_NEEDED if prompted else SVD_NEEDED
    missing = [n for n in needed if getattr(spec, n) is None]
    if missing or spec.seed < 0:
        raise InvalidInput("The sidecar's spec is not resolved (no " + ", ".join(missing or ["seed"]) + "); "
                           "pass a sidecar that stillmotion wrote beside a video.")
    notes: list[str] = []
    source = (record.get("input") or {}).get("source") or "input.png"
    image = Path(str(source).split("?")[0]).name or "input.png"
    node_fields, sampler_id, decode_id = (WAN_NODE_FIELDS, "10", "9") if prompted else (NODE_FIELDS, "5", "6")

    extra = {}
    defaults = GenerationSpec()
    for name in SPEC_FIELDS:
        if name in node_fields or name == "loop":
            continue
        value = getattr(spec, name)
        if value != getattr(defaults, name):
            extra[name] = value
            notes.append(f"{name}={value} has no ComfyUI node: kept in node {sampler_id}'s _meta.stillmotion for stillmotion")
    save = _save_node(spec, decode_id, sampler_id, extra, notes)
    if prompted:
        return export_wan(spec, record, image, save, extra, notes), notes

    ckpt = _ckpt_name(record.get("model") or {})
    if ckpt is None:  # the model a run with no --model uses
        ckpt = _ckpt_name({"name": DEFAULT_MODEL})
        notes.append(f"the record names no model: node 1 loads {DEFAULT_MODEL}'s checkpoint, {ckpt}")
    sampler_meta: dict = {"title": "KSampler"}
    if extra:
        sampler_meta["stillmotion"] = extra
    prompt = {
        "1": {"class_type": LOADER, "inputs": {"ckpt_name": ckpt}, "_meta": {"title": "Image Only Checkpoint Loader (img2vid model)"}},
        "2": {"class_type": LOAD_IMAGE, "inputs": {"image": image, "upload": "image"}, "_meta": {"title": "Load Image"}},
        "3": {"class_type": CONDITIONING, "inputs": {
            "clip_vision": ["1", 1], "init_image": ["2", 0], "vae": ["1", 2],
            "width": spec.width, "height": spec.height, "video_frames": spec.num_frames,
            "motion_bucket_id": spec.motion_bucket_id, "fps": spec.effective_conditioning_fps,
            "augmentation_level": spec.noise_aug_strength}, "_meta": {"title": "SVD_img2vid_Conditioning"}},
        "4": {"class_type": GUIDANCE, "inputs": {"model": ["1", 0], "min_cfg": spec.min_guidance_scale},
              "_meta": {"title": "VideoLinearCFGGuidance"}},
        "5": {"class_type": "KSampler", "inputs": {
            "model": ["4", 0], "seed": spec.seed, "steps": spec.num_inference_steps, "cfg": spec.max_guidance_scale,
            "sampler_name": "euler", "scheduler": "karras", "positive": ["3", 0], "negative": ["3", 1],
            "latent_image": ["3", 2], "denoise": 1.0}, "_meta": sampler_meta},
        "6": {"class_type": DECODE, "inputs": {"samples": ["5", 0], "vae": ["1", 2]}, "_meta": {"title": "VAE Decode"}},
        "7": {**save, "_meta": {"title": save["class_type"]}},
    }
    return prompt, notes


SVD_NEEDED = ("width", "height", "num_frames", "num_inference_steps", "fps", "motion_bucket_id", "noise_aug_strength",
              "min_guidance_scale", "max_guidance_scale")
WAN_NEEDED = ("width", "height", "num_frames", "num_inference_steps", "fps", "guidance_scale")


def _save_node(spec: GenerationSpec, decode_id: str, sampler_id: str, extra: dict, notes: list) -> dict:
    """The save node for the spec's format, reading the decode node; a loop it cannot say goes into `extra`."""
    fmt = spec.format
    if fmt == "webp":
        save = {"class_type": "SaveAnimatedWEBP", "inputs": {
            "images": [decode_id, 0], "filename_prefix": "stillmotion", "fps": float(spec.fps),
            "lossless": False, "quality": 85, "method": "default"}}
    elif fmt == "png":
        save = {"class_type": "SaveAnimatedPNG", "inputs": {
            "images": [decode_id, 0], "filename_prefix": "stillmotion", "fps": float(spec.fps), "compress_level": 4}}
    else:
        save = {"class_type": "VHS_VideoCombine", "inputs": {
            "images": [decode_id, 0], "frame_rate": float(spec.fps), "loop_count": 0, "filename_prefix": "stillmotion",
            "format": VHS_FOR_FORMAT[fmt], "pingpong": spec.loop == "pingpong", "save_output": True}}
    if spec.loop == "pingpong" and save["class_type"] != "VHS_VideoCombine":
        extra["loop"] = "pingpong"  # parse_workflow reads it back; a save node without pingpong cannot say it
        notes.append(f"loop=pingpong has no input on {save['class_type']}: kept in node {sampler_id}'s _meta.stillmotion")
    elif spec.loop not in ("none", "pingpong"):
        extra["loop"] = spec.loop
        notes.append(f"loop={spec.loop} has no ComfyUI node: kept in node {sampler_id}'s _meta.stillmotion for stillmotion")
    return save


def _ckpt_name(model: dict) -> Optional[str]:
    """ComfyUI's ckpt_name for the model a sidecar records (LocalModel.describe()); None when it names none."""
    name = str(model.get("name") or "")
    if name in CHECKPOINT_FOR_MODEL:
        return CHECKPOINT_FOR_MODEL[name]
    for key in ("file", "path", "single_file"):
        value = model.get(key)
        if isinstance(value, str) and value.lower().endswith(".safetensors"):
            return Path(value).name
        if isinstance(value, dict) and str(value.get("path", "")).lower().endswith(".safetensors"):
            return Path(value["path"]).name
    if name.lower().endswith(".safetensors"):
        return Path(name).name
    return name or None


def write_workflow(prompt: dict, out: str | Path) -> Path:
    """Write a workflow .json whole or not at all."""
    from ..util import atomic_write

    out = Path(out)
    atomic_write(out, (json.dumps(prompt, indent=2) + "\n").encode("utf-8"))
    return out
