"""ComfyUI's Wan image-to-video workflows <-> spec fields, and `parse_workflow`, which every workflow enters by.

ComfyUI's own Wan 2.1 I2V example (and TI2V-5B with the same nodes) is wired:

    UNETLoader (unet_name) -> ModelSamplingSD3 (shift) ------------------------> KSampler (seed, steps, cfg,
    CLIPLoader (type wan) -> CLIPTextEncode (text) x2 -> WanImageToVideo (width,   uni_pc, simple)
    VAELoader (vae_name) ----------------------------->   height, length)  ------>  | positive 0, negative 1,
    LoadImage -> CLIPVisionEncode <- CLIPVisionLoader ->   start_image,              | latent 2
                                                           clip_vision_output        v
                                                           VAEDecode (vae) -> a save node (as SVD's)

TI2V-5B (ComfyUI's template): the two CLIPTextEncode go straight to the KSampler, and its latent comes from
Wan22ImageToVideoLatent (vae, width, height, length, start_image); each model is held to the node its ComfyUI
template uses.

The spec gets prompt, negative_prompt, guidance_scale (cfg), width, height, num_frames (length), steps, seed and
the save node's fps and format, and flow_shift (ModelSamplingSD3.shift; `--shift`). What stillmotion has no spec
field for is checked against the model at run time (`check_wan_model`, before loading): the VAELoader must name
the VAE file the model is assembled with (models/wan_files.py), A14B's experts meet where its boundary says. The text encoder and CLIP vision files
are noted, not loaded: diffusers has no converter for ComfyUI's layout of them (the model's repo supplies them).
Wan 2.2 A14B is ComfyUI's two-sampler graph: a UNETLoader -> ModelSamplingSD3 -> KSamplerAdvanced per expert,
the high-noise one from step 0 to `end_at_step` (returning its leftover noise), the low-noise one from there to
the end. The pipeline switches experts at its boundary ratio, so that step must be the one the boundary gives
for the steps and the shift (`expert_switch_step`); another split is refused, naming the node.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from ..errors import InvalidInput, ModelUnavailable
from ..spec import GenerationSpec
from .graph import (DECODE, LOAD_IMAGE, PREVIEW, SAMPLERS, SAVERS, Workflow, as_prompt, finish, only_sampler,
                    parse_svd_workflow, sample_settings, start)

UNET_LOADER = "UNETLoader"
SHIFT = "ModelSamplingSD3"
CLIP_LOADER = "CLIPLoader"
TEXT = "CLIPTextEncode"
VISION_LOADER = "CLIPVisionLoader"
VISION_ENCODE = "CLIPVisionEncode"
VAE_LOADER = "VAELoader"
WAN_I2V = "WanImageToVideo"
WAN22_LATENT = "Wan22ImageToVideoLatent"  # ComfyUI's TI2V-5B node: the start image into the latent, no conditioning
WAN_NODES = {UNET_LOADER, SHIFT, CLIP_LOADER, TEXT, VISION_LOADER, VISION_ENCODE, VAE_LOADER, WAN_I2V, WAN22_LATENT, DECODE,
             LOAD_IMAGE, PREVIEW, "CreateVideo", *SAMPLERS, *SAVERS}
WAN_NODE_FIELDS = ("width", "height", "num_frames", "fps", "guidance_scale", "prompt", "negative_prompt",
                   "flow_shift", "num_inference_steps", "seed", "format")
I2V_INPUTS = ("positive", "negative", "vae", "width", "height", "length", "batch_size", "clip_vision_output",
              "start_image")
# Comfy-Org's repackaged file names for the registry's Wan models (what export writes for a hub model)
COMFY_FILES = {"wan2.1-i2v-480p": "wan2.1_i2v_480p_14B_fp16.safetensors",
               "wan2.1-i2v-720p": "wan2.1_i2v_720p_14B_fp16.safetensors",
               "wan2.2-i2v-a14b": "wan2.2_i2v_high_noise_14B_fp16.safetensors",
               "wan2.2-i2v-a14b/low": "wan2.2_i2v_low_noise_14B_fp16.safetensors",
               "wan2.2-ti2v-5b": "wan2.2_ti2v_5B_fp16.safetensors"}
TEXT_ENCODER_FILE = "umt5_xxl_fp16.safetensors"
CLIP_VISION_FILE = "clip_vision_h.safetensors"


def parse_workflow(data: Any, *, where: str = "the workflow") -> Workflow:
    """Spec fields (and the model and image names) from a ComfyUI API workflow: Wan's nodes (WanImageToVideo)
    here, else SVD's (graph.parse_svd_workflow). Refuses what stillmotion cannot honour, naming node and input."""
    prompt = as_prompt(data, where)
    if not any(isinstance(n, dict) and n.get("class_type") in (WAN_I2V, WAN22_LATENT, UNET_LOADER)
               for n in prompt.values()):
        return parse_svd_workflow(prompt, where=where)
    g, wf, put = start(prompt, where, WAN_NODES, f"{UNET_LOADER}, {SHIFT}, {CLIP_LOADER}, {TEXT}, {VISION_LOADER}, "
                       f"{VISION_ENCODE}, {VAE_LOADER}, {WAN_I2V} or {WAN22_LATENT}, KSampler, {DECODE} and a save "
                       "node")
    # 1. The sampler(s): UniPC on the model's flow sigmas; A14B: one KSamplerAdvanced per expert
    samplers = [nid for nid, n in g.nodes.items() if n["class_type"] in SAMPLERS]
    if len(samplers) == 2:
        ks, low = _experts(g, samplers, wf, put)
    else:
        ks, low = only_sampler(g, where), None
        if g.nodes[ks]["class_type"] != "KSampler":
            raise InvalidInput(f"{g.where(ks)}: stillmotion runs a one-transformer Wan with one KSampler over the "
                               "whole schedule; use a KSampler.")
        cfg = sample_settings(g, put, ks)
        put("guidance_scale", float(cfg), ks, "cfg")
    for nid in [ks] + ([low] if low else []):
        _unipc(g, nid, wf)

    # 2. The model: sampler.model <- ModelSamplingSD3 (shift) <- UNETLoader (A14B: one per expert, one shift)
    for nid, file_key in ((ks, None), (low, "transformer_2")):
        if nid is None:
            continue
        src = g.link(nid, "model", (SHIFT, UNET_LOADER))
        unet = src
        if g.nodes[src]["class_type"] == SHIFT:
            shift = float(g.value(src, "shift", (int, float)))
            if "flow_shift" in wf.fields and shift != wf.fields["flow_shift"]:
                raise InvalidInput(f"{g.where(src, 'shift')} = {shift:g}: both experts run one scheduler; set it to "
                                   f"{wf.fields['flow_shift']:g} as in {wf.origin['flow_shift']}.")
            if "flow_shift" not in wf.fields:
                put("flow_shift", shift, src, "shift")
            unet = g.link(src, "model", (UNET_LOADER,))
        else:
            wf.notes.append(f"{g.where(nid, 'model')}: no {SHIFT}; the model's own flow shift is used")
        name = g.value(unet, "unet_name", (str,)).replace("\\", "/")
        if file_key is None:
            wf.ckpt_name = name
        else:
            wf.files[file_key] = name
            wf.origin[file_key] = g.where(unet, "unet_name")
        dtype = g.value(unet, "weight_dtype", (str,), default="default", required=False)
        if dtype != "default":
            wf.notes.append(f"{g.where(unet, 'weight_dtype')} = {dtype!r}: weight storage is the memory plan's choice "
                            "(--offload, fp8 storage); not applied")

    # 3. The conditioning: positive 0, negative 1, latent 2 of one WanImageToVideo; or (TI2V-5B) the texts straight
    #    into the sampler and its latent from Wan22ImageToVideoLatent
    cond = g.link(ks, "latent_image", (WAN_I2V, WAN22_LATENT))
    wf.settings["latent_node"] = g.nodes[cond]["class_type"]
    wf.origin["latent_node"] = g.where(cond)
    texts = {}
    for nid in [ks] + ([low] if low else []):
        for name, slot in (("positive", 0), ("negative", 1), ("latent_image", 2)):
            if nid == low and name == "latent_image":
                if g.link(low, name, SAMPLERS) != ks or g.inputs(low)[name][1] != 0:
                    raise InvalidInput(f"{g.where(low, name)}: must be the high-noise sampler's output (node {ks}).")
            elif wf.settings["latent_node"] == WAN22_LATENT and name != "latent_image":
                text = g.link(nid, name, (TEXT,))
                if texts.setdefault(name, text) != text:
                    raise InvalidInput(f"{g.where(nid, name)}: must be the same {TEXT} as node {ks}'s {name}.")
            else:
                node, slot = wf.settings["latent_node"], (0 if wf.settings["latent_node"] == WAN22_LATENT else slot)
                if g.link(nid, name, (node,)) != cond or g.inputs(nid)[name][1] != slot:
                    raise InvalidInput(f"{g.where(nid, name)}: must be output {slot} of node {cond} {node}.")
    extra = [k for k in g.inputs(cond) if k not in I2V_INPUTS or
             (wf.settings["latent_node"] == WAN22_LATENT and k in ("positive", "negative", "clip_vision_output"))]
    if extra:
        raise InvalidInput(f"{g.where(cond, extra[0])}: stillmotion has no such setting; remove it.")
    put("width", g.value(cond, "width", (int,)), cond, "width")
    put("height", g.value(cond, "height", (int,)), cond, "height")
    put("num_frames", g.value(cond, "length", (int,)), cond, "length")
    batch = g.value(cond, "batch_size", (int,), default=1, required=False)
    if batch != 1:
        raise InvalidInput(f"{g.where(cond, 'batch_size')} = {batch}: stillmotion makes one video per run; set it to 1.")
    clip = None
    for name, fld in (("positive", "prompt"), ("negative", "negative_prompt")):
        text = texts[name] if texts else g.link(cond, name, (TEXT,))
        put(fld, g.value(text, "text", (str,), default="", required=False), text, "text")
        loader = g.link(text, "clip", (CLIP_LOADER,))
        if clip not in (None, loader):
            raise InvalidInput(f"{g.where(text, 'clip')}: must come from the same {CLIP_LOADER} as the positive text.")
        clip = loader
    kind = g.value(clip, "type", (str,))
    if kind != "wan":
        raise InvalidInput(f"{g.where(clip, 'type')} = {kind!r}: Wan's text encoder is UMT5 (type wan); set it to wan.")
    wf.files["text_encoder"] = g.value(clip, "clip_name", (str,))
    vae = g.link(cond, "vae", (VAE_LOADER,))
    wf.files["vae"] = g.value(vae, "vae_name", (str,))
    wf.origin["vae"] = g.where(vae, "vae_name")
    image_node = g.link(cond, "start_image", (LOAD_IMAGE,))
    wf.image = g.value(image_node, "image", (str,))
    if "clip_vision_output" in g.inputs(cond):
        enc = g.link(cond, "clip_vision_output", (VISION_ENCODE,))
        if g.link(enc, "image", (LOAD_IMAGE,)) != image_node:
            raise InvalidInput(f"{g.where(enc, 'image')}: must be the start image (node {image_node}).")
        wf.files["image_encoder"] = g.value(g.link(enc, "clip_vision", (VISION_LOADER,)), "clip_name", (str,))
        crop = g.value(enc, "crop", (str,), default="none", required=False)
        wf.notes.append(f"{g.where(enc, 'crop')} = {crop!r}: the model's CLIPImageProcessor prepares the image")

    # 4. Decode and save (as SVD's; A14B: the low-noise sampler's latents); 5. stillmotion's own settings
    if low is not None:
        for nid in [n for n, node in g.nodes.items() if node["class_type"] == DECODE]:
            if g.link(nid, "samples", SAMPLERS) != low:
                raise InvalidInput(f"{g.where(nid, 'samples')}: must be the low-noise sampler's output (node {low}).")
    finish(g, wf, put, ks, where, vae=(vae, (VAE_LOADER,)), node_fields=WAN_NODE_FIELDS)
    GenerationSpec.build(**wf.fields)  # the whole set, checked together
    return wf


def _unipc(g, nid: str, wf: Workflow) -> None:
    sampler_name = g.value(nid, "sampler_name", (str,))
    if sampler_name not in ("uni_pc", "uni_pc_bh2"):
        raise InvalidInput(f"{g.where(nid, 'sampler_name')} = {sampler_name!r}: stillmotion samples Wan with the "
                           "model's UniPC flow scheduler; set it to uni_pc.")
    scheduler = g.value(nid, "scheduler", (str,))
    if scheduler != "simple":
        raise InvalidInput(f"{g.where(nid, 'scheduler')} = {scheduler!r}: stillmotion runs the model's own flow "
                           "sigmas; set it to simple.")
    wf.notes.append(f"{g.where(nid)}: {sampler_name}/{scheduler} ran as diffusers' UniPCMultistepScheduler with the "
                    "model's flow shift (close to ComfyUI's, not bit for bit)")


def _experts(g, samplers: list, wf: Workflow, put) -> tuple[str, str]:
    """Wan 2.2 A14B's two KSamplerAdvanced: the high-noise one (from step 0, adds the noise, hands its leftover
    noise on) and the low-noise one (its latents from the first, to the end). The step where they meet is checked
    against the model's expert boundary at run time (check_wan_model)."""
    for nid in samplers:
        if g.nodes[nid]["class_type"] != "KSamplerAdvanced":
            raise InvalidInput(f"{g.where(nid)}: two samplers are Wan 2.2 A14B's two experts, each a KSamplerAdvanced.")
    high = next((n for n in samplers if g.nodes[g.link(n, "latent_image", (WAN_I2V, *SAMPLERS))]["class_type"]
                 == WAN_I2V), samplers[0])
    low = next(n for n in samplers if n != high)
    want = {high: (("add_noise", "enable"), ("return_with_leftover_noise", "enable")),
            low: (("add_noise", "disable"), ("return_with_leftover_noise", "disable"))}
    for nid, checks in want.items():
        for name, value in checks:
            got = g.value(nid, name, (str,))
            if got != value:
                raise InvalidInput(f"{g.where(nid, name)} = {got!r}: the {'high' if nid == high else 'low'}-noise "
                                   f"expert's sampler runs with {name} {value!r}; set it.")
    seed = g.value(high, "noise_seed", (int,))
    put("seed", seed, high, "noise_seed")
    steps = g.value(high, "steps", (int,))
    put("num_inference_steps", steps, high, "steps")
    cfg = g.value(high, "cfg", (int, float))
    put("guidance_scale", float(cfg), high, "cfg")
    for name, value in (("steps", steps), ("cfg", cfg)):
        got = g.value(low, name, (int, float))
        if got != value:
            raise InvalidInput(f"{g.where(low, name)} = {got}: stillmotion runs both experts with one {name}; set it "
                               f"to {value} as in {g.where(high, name)}.")
    start = g.value(high, "start_at_step", (int,), default=0, required=False)
    if start != 0:
        raise InvalidInput(f"{g.where(high, 'start_at_step')} = {start}: stillmotion runs from step 0; set it to 0.")
    switch = g.value(high, "end_at_step", (int,))
    if g.value(low, "start_at_step", (int,)) != switch:
        raise InvalidInput(f"{g.where(low, 'start_at_step')}: must be where the high-noise expert ends "
                           f"({g.where(high, 'end_at_step')} = {switch}).")
    end = g.value(low, "end_at_step", (int,), default=10000, required=False)
    if end < steps:
        raise InvalidInput(f"{g.where(low, 'end_at_step')} = {end}: stillmotion runs all {steps} steps; set it to "
                           f"{steps} or more.")
    wf.settings["expert_switch_step"] = switch
    wf.origin["expert_switch_step"] = g.where(high, "end_at_step")
    return high, low


def expert_switch_step(folder, steps: int, shift: Optional[float] = None) -> Optional[int]:
    """The step at which a two-expert model's pipeline hands over to transformer_2: the number of its scheduler's
    timesteps (at flow `shift`, else its own) at or above boundary_ratio x num_train_timesteps
    (WanImageToVideoPipeline's rule); None for one."""
    from diffusers import UniPCMultistepScheduler

    index = json.loads((Path(folder) / "model_index.json").read_text())
    ratio = index.get("boundary_ratio")
    if ratio is None or (index.get("transformer_2") or [None])[0] is None:
        return None
    scheduler = UniPCMultistepScheduler.from_pretrained(Path(folder) / "scheduler",
                                                        **({"flow_shift": shift} if shift is not None else {}))
    scheduler.set_timesteps(steps)
    boundary = ratio * scheduler.config.num_train_timesteps
    return int(sum(1 for t in scheduler.timesteps if t >= boundary))


# --------------------------------------------------------------------------- against the model
def check_wan_model(wf: Workflow, model: str) -> None:
    """What a Wan workflow sets beside the spec, checked against the model it runs (resolved, not loaded):
    VAELoader.vae_name against the VAE file it is assembled with, A14B's switch step against its boundary. A
    mismatch is refused naming the node; the loaders stillmotion does not use are noted; a shift equal to the
    model's own becomes None (the model's)."""
    from ..models.resolve import resolve

    if "vae" not in wf.files:
        return
    local = resolve(model, download=False, progress=False)
    if wf.fields.get("flow_shift") is not None and wf.fields["flow_shift"] == model_flow_shift(local.path):
        wf.fields["flow_shift"] = None  # the model's own shift, as a spec without a workflow says it
    parts = (local.single_file or {}).get("components") or {}
    ti2v = bool(json.loads((local.path / "model_index.json").read_text()).get("expand_timesteps"))
    want = WAN22_LATENT if ti2v else WAN_I2V
    if wf.settings.get("latent_node", want) != want:
        raise InvalidInput(f"{wf.origin['latent_node']}: this model is {'TI2V-5B' if ti2v else 'an I2V model'}, which "
                           f"ComfyUI conditions with {want}; use {want}.")
    switch = expert_switch_step(local.path, int(wf.fields["num_inference_steps"]), wf.fields.get("flow_shift"))
    if switch is None and "expert_switch_step" in wf.settings:
        raise InvalidInput(f"{wf.origin['expert_switch_step']}: two samplers are Wan 2.2 A14B's experts, but this "
                           "model has one transformer; use one KSampler.")
    if switch is not None and wf.settings.get("expert_switch_step") != switch:
        where = wf.origin.get("expert_switch_step", "the workflow's KSampler")
        raise InvalidInput(f"{where}: this model switches to its low-noise expert after step {switch} of "
                           f"{wf.fields['num_inference_steps']} (its boundary); use two KSamplerAdvanced that meet at "
                           f"step {switch}.")
    second = (parts.get("transformer_2") or {}).get("file")
    if second and "transformer_2" in wf.files and Path(second).name != Path(wf.files["transformer_2"]).name:
        raise InvalidInput(f"{wf.origin['transformer_2']} = {wf.files['transformer_2']!r}: this model's low-noise "
                           f"expert is {Path(second).name}; set unet_name to it.")
    vae_file = (parts.get("vae") or {}).get("file")
    if vae_file and Path(vae_file).name != Path(wf.files["vae"]).name:
        raise InvalidInput(f"{wf.origin['vae']} = {wf.files['vae']!r}: this model is assembled with "
                           f"{Path(vae_file).name} (the Wan VAE in models/vae); set vae_name to it.")
    if not vae_file:
        wf.notes.append(f"{wf.origin['vae']} = {wf.files['vae']!r}: the model's own VAE is used "
                        f"({(parts.get('vae') or {}).get('repo_id') or 'its folder'})")
    for name in ("text_encoder", "image_encoder"):
        if name in wf.files:
            src = (parts.get(name) or {}).get("repo_id") or "its folder"
            wf.notes.append(f"{wf.files[name]}: not loaded (no converter for ComfyUI's layout); the model's {name} "
                            f"({src}) is used")


def model_flow_shift(folder) -> Optional[float]:
    """The flow shift of a model folder's scheduler, or None when it has none."""
    try:
        value = json.loads((Path(folder) / "scheduler" / "scheduler_config.json").read_text()).get("flow_shift")
    except (OSError, ValueError):
        return None
    return None if value is None else float(value)


# --------------------------------------------------------------------------- export
def export_wan(spec: GenerationSpec, record: dict, image: str, save: dict, extra: dict, notes: list) -> dict:
    """The Wan graph for a sidecar: ComfyUI's node and input names, `save` (the save node, reading node 9)."""
    from ..models.resolve import resolve

    model = record.get("model") or {}
    name = str(model.get("name") or "")
    try:
        local = resolve(name, download=False, progress=False)
    except ModelUnavailable as e:
        raise InvalidInput(f"The sidecar's model {name!r} is not here to read its flow shift and layout ({e.message}); "
                           "export where it ran.") from None
    index = json.loads((local.path / "model_index.json").read_text())
    parts = (local.single_file or {}).get("components") or {}
    unet = Path(parts["transformer"]["file"]).name if parts else COMFY_FILES.get(name, name)
    switch = expert_switch_step(local.path, spec.num_inference_steps, spec.flow_shift)
    vae_cfg = json.loads((local.path / "vae" / "config.json").read_text())
    vae = Path(parts["vae"]["file"]).name if "file" in (parts.get("vae") or {}) else \
        ("wan2.2_vae.safetensors" if vae_cfg.get("z_dim") == 48 else "wan_2.1_vae.safetensors")
    if not parts or "file" not in parts.get("vae", {}):
        notes.append(f"node 4 VAELoader names {vae}, Comfy-Org's file of this VAE; stillmotion used the model's own")
    notes.append(f"node 3 CLIPLoader names {TEXT_ENCODER_FILE}, Comfy-Org's UMT5-XXL; stillmotion used the model's "
                 "text encoder")
    shift = spec.flow_shift if spec.flow_shift is not None else model_flow_shift(local.path)
    sampler_meta: dict = {"title": "KSampler", **({"stillmotion": extra} if extra else {})}
    prompt = {
        "1": {"class_type": UNET_LOADER, "inputs": {"unet_name": unet, "weight_dtype": "default"},
              "_meta": {"title": "Load Diffusion Model"}},
        "2": {"class_type": SHIFT, "inputs": {"model": ["1", 0], "shift": shift}, "_meta": {"title": SHIFT}},
        "3": {"class_type": CLIP_LOADER, "inputs": {"clip_name": TEXT_ENCODER_FILE, "type": "wan", "device": "default"},
              "_meta": {"title": "Load CLIP"}},
        "4": {"class_type": VAE_LOADER, "inputs": {"vae_name": vae}, "_meta": {"title": "Load VAE"}},
        "5": {"class_type": LOAD_IMAGE, "inputs": {"image": image, "upload": "image"}, "_meta": {"title": "Load Image"}},
        "6": {"class_type": TEXT, "inputs": {"text": spec.prompt or "", "clip": ["3", 0]},
              "_meta": {"title": "CLIP Text Encode (Positive Prompt)"}},
        "7": {"class_type": TEXT, "inputs": {"text": spec.negative_prompt or "", "clip": ["3", 0]},
              "_meta": {"title": "CLIP Text Encode (Negative Prompt)"}},
        "8": {"class_type": WAN_I2V, "inputs": {
            "positive": ["6", 0], "negative": ["7", 0], "vae": ["4", 0], "start_image": ["5", 0],
            "width": spec.width, "height": spec.height, "length": spec.num_frames, "batch_size": 1},
              "_meta": {"title": WAN_I2V}},
        "10": {"class_type": "KSampler", "inputs": {
            "model": ["2", 0], "seed": spec.seed, "steps": spec.num_inference_steps, "cfg": spec.guidance_scale,
            "sampler_name": "uni_pc", "scheduler": "simple", "positive": ["8", 0], "negative": ["8", 1],
            "latent_image": ["8", 2], "denoise": 1.0}, "_meta": sampler_meta},
        "9": {"class_type": DECODE, "inputs": {"samples": ["10", 0], "vae": ["4", 0]}, "_meta": {"title": "VAE Decode"}},
        "11": {**save, "_meta": {"title": save["class_type"]}},
    }
    if index.get("expand_timesteps"):  # TI2V-5B: ComfyUI's Wan22ImageToVideoLatent; the texts go to the sampler
        inputs = prompt["8"]["inputs"]
        prompt["8"] = {"class_type": WAN22_LATENT, "inputs": {k: inputs[k] for k in (
            "vae", "start_image", "width", "height", "length", "batch_size")}, "_meta": {"title": WAN22_LATENT}}
        prompt["10"]["inputs"].update(positive=["6", 0], negative=["7", 0], latent_image=["8", 0])
    if switch is not None:  # A14B: node 10 runs the high-noise expert to the switch, node 15 the low-noise one on
        low = Path(parts["transformer_2"]["file"]).name if parts else COMFY_FILES.get(name + "/low", name)
        prompt["14"] = {"class_type": UNET_LOADER, "inputs": {"unet_name": low, "weight_dtype": "default"},
                        "_meta": {"title": "Load Diffusion Model (low noise)"}}
        prompt["16"] = {"class_type": SHIFT, "inputs": {"model": ["14", 0], "shift": shift}, "_meta": {"title": SHIFT}}
        high_inputs = prompt["10"]["inputs"]
        seed = high_inputs.pop("seed")
        high_inputs.pop("denoise")
        common = {"steps": spec.num_inference_steps, "cfg": spec.guidance_scale, "sampler_name": "uni_pc",
                  "scheduler": "simple", "positive": ["8", 0], "negative": ["8", 1]}
        prompt["10"] = {"class_type": "KSamplerAdvanced", "inputs": {
            "model": ["2", 0], "add_noise": "enable", "noise_seed": seed, **common, "latent_image": ["8", 2],
            "start_at_step": 0, "end_at_step": switch, "return_with_leftover_noise": "enable"},
            "_meta": {**sampler_meta, "title": "KSamplerAdvanced (high noise)"}}
        prompt["15"] = {"class_type": "KSamplerAdvanced", "inputs": {
            "model": ["16", 0], "add_noise": "disable", "noise_seed": seed, **common, "latent_image": ["10", 0],
            "start_at_step": switch, "end_at_step": 10000, "return_with_leftover_noise": "disable"},
            "_meta": {"title": "KSamplerAdvanced (low noise)"}}
        prompt["9"]["inputs"]["samples"] = ["15", 0]
    if (index.get("image_encoder") or [None])[0] is not None:
        prompt["12"] = {"class_type": VISION_LOADER, "inputs": {"clip_name": CLIP_VISION_FILE},
                        "_meta": {"title": "Load CLIP Vision"}}
        prompt["13"] = {"class_type": VISION_ENCODE, "inputs": {"clip_vision": ["12", 0], "image": ["5", 0],
                                                                "crop": "none"}, "_meta": {"title": VISION_ENCODE}}
        prompt["8"]["inputs"]["clip_vision_output"] = ["13", 0]
    return prompt
