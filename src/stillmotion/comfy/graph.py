"""The ComfyUI nodes stillmotion runs, and parse_workflow(): an API-format workflow -> spec fields."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from ..errors import InvalidInput
from ..spec import MAX_SEED, SPEC_FIELDS, GenerationSpec

LOADER = "ImageOnlyCheckpointLoader"
CONDITIONING = "SVD_img2vid_Conditioning"
GUIDANCE = "VideoLinearCFGGuidance"
SAMPLERS = ("KSampler", "KSamplerAdvanced")
DECODE = "VAEDecode"
LOAD_IMAGE = "LoadImage"
SAVERS = ("SaveAnimatedWEBP", "SaveAnimatedPNG", "VHS_VideoCombine", "SaveWEBM", "SaveVideo")
PREVIEW = "PreviewImage"
KNOWN_NODES = {LOADER, CONDITIONING, GUIDANCE, DECODE, LOAD_IMAGE, PREVIEW, "CreateVideo", *SAMPLERS, *SAVERS}

# VideoHelperSuite's format names -> ours
VHS_FORMATS = {
    "video/h264-mp4": "mp4",
    "video/vp9-webm": "webm",
    "video/webm": "webm",
    "image/gif": "gif",
    "image/webp": "webp",
    "video/8bit-png": "png",
}
VHS_FOR_FORMAT = {"mp4": "video/h264-mp4", "webm": "video/vp9-webm", "gif": "image/gif"}

# Inputs that only change how a save node encodes its file (bytes, not frames):
# accepted, listed in the notes, not applied.
ENCODING_ONLY = {
    "SaveAnimatedWEBP": ("filename_prefix", "lossless", "quality", "method"),
    "SaveAnimatedPNG": ("filename_prefix", "compress_level"),
    "SaveWEBM": ("filename_prefix", "crf"),
    "SaveVideo": ("filename_prefix",),
    "VHS_VideoCombine": ("filename_prefix", "save_output", "save_metadata", "crf", "pix_fmt", "trim_to_audio",
                         "meta_batch"),
    PREVIEW: (),
}

# spec fields a workflow's nodes carry; the rest travel in the sampler's _meta.stillmotion
NODE_FIELDS = ("width", "height", "num_frames", "motion_bucket_id", "conditioning_fps", "fps", "noise_aug_strength",
               "min_guidance_scale", "max_guidance_scale", "num_inference_steps", "seed", "format")


@dataclass
class Workflow:
    """What a ComfyUI workflow asks for, in our terms."""

    fields: dict                      # GenerationSpec fields
    ckpt_name: Optional[str] = None   # ImageOnlyCheckpointLoader.ckpt_name as written
    image: Optional[str] = None       # LoadImage.image as written
    notes: list = field(default_factory=list)  # settings accepted but not applied, and why
    origin: dict = field(default_factory=dict)  # spec field -> "node 3 SVD_img2vid_Conditioning.fps"
    settings: dict = field(default_factory=dict)  # model settings that are no spec field (Wan: flow_shift), checked
    files: dict = field(default_factory=dict)  # the other model files a workflow loads (Wan: vae, text_encoder, ...)

    def record(self, source: Optional[str] = None) -> dict:
        """The sidecar's `workflow` block."""
        out = {"ckpt_name": self.ckpt_name, "image": self.image, "from": self.origin, "notes": self.notes,
               **({"settings": self.settings} if self.settings else {}), **({"files": self.files} if self.files else {})}
        if source:
            out = {"source": source, **out}
        return out



# --------------------------------------------------------------------------- detection
def is_api_workflow(data: Any) -> bool:
    """A ComfyUI API-format prompt ({id: {class_type, inputs}}), bare or as POST /prompt's {"prompt": ...}."""
    if isinstance(data, dict) and isinstance(data.get("prompt"), dict) and "class_type" not in data["prompt"]:
        data = data["prompt"]
    return (
        isinstance(data, dict)
        and bool(data)
        and all(isinstance(v, dict) and "class_type" in v for v in data.values())
    )


def _is_ui_workflow(data: Any) -> bool:
    return isinstance(data, dict) and isinstance(data.get("nodes"), list) and "links" in data


def as_prompt(data: Any, where: str = "the workflow") -> dict:
    """The API-format node dict from a workflow object; refuses the UI format with the way to export."""
    if isinstance(data, dict) and isinstance(data.get("prompt"), dict) and "class_type" not in data["prompt"]:
        data = data["prompt"]
    if is_api_workflow(data):
        return data
    if _is_ui_workflow(data):
        raise InvalidInput(
            f"{where} is a ComfyUI UI workflow (nodes and links), not the API format: in ComfyUI use "
            "Workflow > Export (API) and pass that file."
        )
    raise InvalidInput(
        f"{where} is not a ComfyUI API workflow (an object of nodes, each with class_type and inputs); "
        "in ComfyUI use Workflow > Export (API)."
    )


# --------------------------------------------------------------------------- parsing
class _Graph:
    def __init__(self, prompt: dict):
        self.nodes = prompt

    def where(self, nid: str, name: Optional[str] = None) -> str:
        cls = self.nodes[nid].get("class_type")
        return f"node {nid} {cls}" + (f".{name}" if name else "")

    def inputs(self, nid: str) -> dict:
        ins = self.nodes[nid].get("inputs")
        return ins if isinstance(ins, dict) else {}

    def link(self, nid: str, name: str, want: tuple[str, ...]) -> str:
        """The node that input `name` of node `nid` comes from, checked to be one of `want`."""
        value = self.inputs(nid).get(name)
        if not (isinstance(value, list) and len(value) == 2 and str(value[0]) in self.nodes):
            raise InvalidInput(f"{self.where(nid, name)}: not connected; connect it to a {' or '.join(want)} node.")
        src = str(value[0])
        cls = self.nodes[src].get("class_type")
        if cls not in want:
            raise InvalidInput(
                f"{self.where(nid, name)} comes from node {src} {cls}: stillmotion supports {' or '.join(want)} there."
            )
        return src

    def value(self, nid: str, name: str, kinds=(int, float), default: Any = None, required: bool = True) -> Any:
        ins = self.inputs(nid)
        if name not in ins:
            if required and default is None:
                raise InvalidInput(f"{self.where(nid, name)}: missing; give it a value.")
            return default
        v = ins[name]
        if isinstance(v, list):
            raise InvalidInput(
                f"{self.where(nid, name)} comes from node {v[0] if v else '?'}: give it a value in the node instead."
            )
        if kinds and (not isinstance(v, kinds) or isinstance(v, bool) and bool not in kinds):
            raise InvalidInput(f"{self.where(nid, name)}: {v!r} is not a {'/'.join(k.__name__ for k in kinds)}.")
        return v


def parse_svd_workflow(data: Any, *, where: str = "the workflow") -> Workflow:
    """Spec fields (and the checkpoint and image names) from a ComfyUI API workflow of SVD's nodes
    (comfy/wan_graph.parse_workflow picks this or Wan's by the nodes the workflow has).

    Refuses (InvalidInput, exit 2) any node or setting stillmotion cannot honour,
    naming the node id, its class and the input.
    """
    g, wf, put = start(data, where, KNOWN_NODES,
                       f"{LOADER}, {CONDITIONING}, {GUIDANCE}, KSampler, {DECODE} and a save node")

    # 1. The sampler
    ks = only_sampler(g, where)
    sampler_name = g.value(ks, "sampler_name", (str,))
    if sampler_name != "euler":
        raise InvalidInput(
            f"{g.where(ks, 'sampler_name')} = {sampler_name!r}: stillmotion samples with SVD's Euler scheduler only; "
            "set it to euler."
        )
    scheduler = g.value(ks, "scheduler", (str,))
    if scheduler not in ("karras", "normal"):
        raise InvalidInput(
            f"{g.where(ks, 'scheduler')} = {scheduler!r}: stillmotion runs SVD's Karras sigmas; set it to karras."
        )
    if scheduler == "normal":
        wf.notes.append(f"{g.where(ks, 'scheduler')} = 'normal' ran as karras (SVD's Euler scheduler with Karras sigmas)")
    cfg = sample_settings(g, put, ks)

    # 2. Guidance and the checkpoint: sampler.model <- VideoLinearCFGGuidance <- ImageOnlyCheckpointLoader
    src = g.link(ks, "model", (GUIDANCE, LOADER))
    if g.nodes[src]["class_type"] == GUIDANCE:
        min_cfg = g.value(src, "min_cfg", (int, float))
        put("min_guidance_scale", float(min_cfg), src, "min_cfg")
        loader = g.link(src, "model", (LOADER,))
    else:
        loader, min_cfg = src, cfg  # no linear guidance node: the same cfg on every frame
        put("min_guidance_scale", float(cfg), ks, "cfg")
    put("max_guidance_scale", float(cfg), ks, "cfg")
    if float(min_cfg) > float(cfg):
        raise InvalidInput(
            f"{wf.origin['min_guidance_scale']} = {min_cfg} is above {g.where(ks, 'cfg')} = {cfg}: stillmotion ramps "
            "guidance up from the first frame to the last; make min_cfg <= cfg."
        )
    ckpt = g.value(loader, "ckpt_name", (str,))
    wf.ckpt_name = ckpt.replace("\\", "/")

    # 3. The conditioning: positive, negative and latent all from one SVD_img2vid_Conditioning
    cond = g.link(ks, "positive", (CONDITIONING,))
    for name in ("negative", "latent_image"):
        if g.link(ks, name, (CONDITIONING,)) != cond:
            raise InvalidInput(f"{g.where(ks, name)}: must come from the same {CONDITIONING} node as positive ({cond}).")
    for name in ("clip_vision", "vae"):
        if g.link(cond, name, (LOADER,)) != loader:
            raise InvalidInput(f"{g.where(cond, name)}: must come from the sampler's checkpoint (node {loader}).")
    put("width", g.value(cond, "width", (int,)), cond, "width")
    put("height", g.value(cond, "height", (int,)), cond, "height")
    put("num_frames", g.value(cond, "video_frames", (int,)), cond, "video_frames")
    put("motion_bucket_id", g.value(cond, "motion_bucket_id", (int,)), cond, "motion_bucket_id")
    cond_fps = g.value(cond, "fps", (int,))
    put("conditioning_fps", cond_fps, cond, "fps")
    aug = g.value(cond, "augmentation_level", (int, float))
    put("noise_aug_strength", float(aug), cond, "augmentation_level")
    image_node = g.link(cond, "init_image", (LOAD_IMAGE,))
    wf.image = g.value(image_node, "image", (str,))

    # 4. Decode and save; 5. stillmotion's own settings
    finish(g, wf, put, ks, where, vae=(loader, (LOADER,)), fallback_fps=(cond_fps, cond, "fps"))
    if wf.fields["fps"] == wf.fields["conditioning_fps"]:
        wf.fields["conditioning_fps"] = None  # one rate for both, as a spec without a workflow says it
        wf.origin.pop("conditioning_fps")
    GenerationSpec.build(**wf.fields)  # the whole set, checked together
    return wf


# --------------------------------------------------------------------------- steps every model's graph shares
def start(data: Any, where: str, known: set, runs: str) -> tuple[_Graph, Workflow, Callable]:
    """The graph, an empty Workflow, and put(field, value, node, input): a value checked as a spec field (refused
    naming node and input) and recorded with where it came from. Every node must be one of `known`."""
    prompt = as_prompt(data, where)
    g = _Graph({str(k): v for k, v in prompt.items()})
    wf = Workflow(fields={})
    for nid, node in g.nodes.items():
        if node.get("class_type") not in known:
            raise InvalidInput(f"{g.where(nid)}: stillmotion cannot run this node (it runs {runs}); remove it or run "
                               "this workflow in ComfyUI.")

    def put(name: str, value: Any, nid: str, input_name: str) -> None:
        try:
            GenerationSpec.build(**{name: value})
        except InvalidInput as e:
            reason = e.message.removeprefix("Invalid spec: ")
            raise InvalidInput(f"{g.where(nid, input_name)} = {value!r}: stillmotion cannot honour it ({reason}).") from None
        wf.fields[name] = value
        wf.origin[name] = g.where(nid, input_name)

    return g, wf, put


def only_sampler(g: _Graph, where: str) -> str:
    samplers = [nid for nid, n in g.nodes.items() if n["class_type"] in SAMPLERS]
    if len(samplers) != 1:
        found = ", ".join(g.where(n) for n in samplers) or "none"
        raise InvalidInput(f"{where}: needs exactly one KSampler or KSamplerAdvanced node (found {found}).")
    return samplers[0]


def sample_settings(g: _Graph, put: Callable, ks: str) -> Any:
    """The sampler's seed and steps (put), its whole-schedule settings checked; returns its cfg."""
    advanced = g.nodes[ks]["class_type"] == "KSamplerAdvanced"
    seed = g.value(ks, "noise_seed" if advanced else "seed", (int,))
    if not 0 <= seed <= MAX_SEED:
        raise InvalidInput(
            f"{g.where(ks, 'noise_seed' if advanced else 'seed')} = {seed}: stillmotion seeds are 0..{MAX_SEED}; "
            "pick a seed in that range."
        )
    put("seed", seed, ks, "noise_seed" if advanced else "seed")
    steps = g.value(ks, "steps", (int,))
    put("num_inference_steps", steps, ks, "steps")
    if advanced:
        checks = (("add_noise", "enable"), ("return_with_leftover_noise", "disable"))
        for name, want in checks:
            got = g.value(ks, name, (str,), default=want, required=False)
            if got != want:
                raise InvalidInput(f"{g.where(ks, name)} = {got!r}: stillmotion runs the whole schedule; set it to {want!r}.")
        start = g.value(ks, "start_at_step", (int,), default=0, required=False)
        end = g.value(ks, "end_at_step", (int,), default=10000, required=False)
        if start != 0:
            raise InvalidInput(f"{g.where(ks, 'start_at_step')} = {start}: stillmotion runs from step 0; set it to 0.")
        if end < steps:
            raise InvalidInput(
                f"{g.where(ks, 'end_at_step')} = {end}: stillmotion runs all {steps} steps; set it to {steps} or more."
            )
    else:
        denoise = g.value(ks, "denoise", (int, float), default=1.0, required=False)
        if float(denoise) != 1.0:
            raise InvalidInput(
                f"{g.where(ks, 'denoise')} = {denoise}: stillmotion generates from pure noise (denoise 1.0); set it to 1.0."
            )
    cfg = g.value(ks, "cfg", (int, float))
    return cfg


def finish(g: _Graph, wf: Workflow, put: Callable, ks: str, where: str, *, vae: tuple[str, tuple],
           fallback_fps: Optional[tuple] = None, node_fields: tuple = NODE_FIELDS) -> None:
    """Decode and save nodes (every VAEDecode from the sampler and `vae` = (node, classes)), the playback rate
    (else `fallback_fps` = (value, node, input)), and the sampler's _meta.stillmotion settings."""
    decoders = [nid for nid, n in g.nodes.items() if n["class_type"] == DECODE]
    for nid in decoders:
        g.link(nid, "samples", SAMPLERS)
        if g.link(nid, "vae", vae[1]) != vae[0]:
            raise InvalidInput(f"{g.where(nid, 'vae')}: must come from node {vae[0]}, as the sampler's latents do.")
    savers = [nid for nid, n in g.nodes.items() if n["class_type"] in SAVERS]
    if len(savers) > 1:
        raise InvalidInput(
            f"{where}: {len(savers)} save nodes ({', '.join(g.where(n) for n in savers)}); stillmotion writes one "
            "file per run: keep one."
        )
    for nid in [n for n, node in g.nodes.items() if node["class_type"] in (*SAVERS, PREVIEW)]:
        cls = g.nodes[nid]["class_type"]
        known: tuple = ("images", *ENCODING_ONLY[cls])
        rate_node = nid  # the node whose input sets the playback rate
        if cls == "SaveVideo":  # ComfyUI's core video nodes: CreateVideo (images, fps) -> SaveVideo (format, codec)
            rate_node = g.link(nid, "video", ("CreateVideo",))
            known = ("video", "format", "codec", *ENCODING_ONLY[cls])
            for name, allowed in (("format", ("auto", "mp4")), ("codec", ("auto", "h264"))):
                got = g.value(nid, name, (str,), default="auto", required=False)
                if got not in allowed:
                    raise InvalidInput(f"{g.where(nid, name)} = {got!r}: stillmotion writes H.264 MP4 here; set it to "
                                       f"{' or '.join(allowed)} (or save with SaveWEBM / VHS_VideoCombine).")
            put("format", "mp4", nid, "format")
            extra_inputs = [k for k in g.inputs(rate_node) if k not in ("images", "fps")]
            if extra_inputs:
                raise InvalidInput(f"{g.where(rate_node, extra_inputs[0])}: stillmotion writes video only; disconnect it.")
        g.link(rate_node, "images", (DECODE,))
        ignored = [k for k in ENCODING_ONLY[cls] if k in g.inputs(nid)]
        if cls == PREVIEW:
            wf.notes.append(f"{g.where(nid)}: a preview only; stillmotion writes the saved file")
            continue
        rate_name = "frame_rate" if cls == "VHS_VideoCombine" else "fps"
        playback = g.value(rate_node, rate_name, (int, float))
        if cls == "VHS_VideoCombine":
            known = (*known, "frame_rate", "format", "pingpong", "loop_count")
            vhs = g.value(nid, "format", (str,))
            if vhs not in VHS_FORMATS:
                raise InvalidInput(
                    f"{g.where(nid, 'format')} = {vhs!r}: stillmotion writes {', '.join(VHS_FORMATS)}; pick one of those."
                )
            put("format", VHS_FORMATS[vhs], nid, "format")
            loops = g.value(nid, "loop_count", (int,), default=0, required=False)
            if loops != 0:
                raise InvalidInput(
                    f"{g.where(nid, 'loop_count')} = {loops}: stillmotion writes the clip once (players loop it); set it to 0."
                )
            if g.value(nid, "pingpong", (bool,), default=False, required=False):
                put("loop", "pingpong", nid, "pingpong")
        elif cls == "SaveWEBM":
            known = (*known, "fps", "codec")
            codec = g.value(nid, "codec", (str,), default="vp9", required=False)
            if codec != "vp9":
                raise InvalidInput(f"{g.where(nid, 'codec')} = {codec!r}: stillmotion writes VP9 WebM; set it to vp9.")
            put("format", "webm", nid, "codec")
        elif cls in ("SaveAnimatedWEBP", "SaveAnimatedPNG"):
            known = (*known, "fps")
            put("format", "webp" if cls == "SaveAnimatedWEBP" else "png", nid, "class_type")
            if cls == "SaveAnimatedPNG":
                wf.notes.append(f"{g.where(nid)}: stillmotion writes the frames as a folder of PNGs, not one animated PNG")
        if float(playback) != int(playback):
            raise InvalidInput(
                f"{g.where(rate_node, rate_name)} = {playback}: stillmotion writes whole frame rates; use {round(playback)}."
            )
        put("fps", int(playback), rate_node, rate_name)
        unknown = [k for k in g.inputs(nid) if k not in known]
        if unknown:
            raise InvalidInput(f"{g.where(nid, unknown[0])}: stillmotion has no such setting; remove it.")
        if ignored:
            wf.notes.append(f"{g.where(nid)}: {', '.join(ignored)} only change how ComfyUI names or encodes the "
                            "file; not applied")
    if "fps" not in wf.fields and fallback_fps is not None:
        put("fps", *fallback_fps)

    # stillmotion's own settings, carried by a workflow we exported
    extra = (g.nodes[ks].get("_meta") or {}).get("stillmotion") or {}
    if not isinstance(extra, dict):
        raise InvalidInput(f"{g.where(ks)}: _meta.stillmotion must be an object of spec fields.")
    for name, value in extra.items():
        if name not in SPEC_FIELDS or name in node_fields:
            raise InvalidInput(f"{g.where(ks)}: _meta.stillmotion.{name} is not a setting it may carry; remove it.")
        wf.fields[name] = value
        wf.origin[name] = f"{g.where(ks)} _meta.stillmotion.{name}"



