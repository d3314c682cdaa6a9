"""GenerationSpec: every knob of a generation, validated once.

A field left as None means "the model's default" (see models/registry.py).
`spec.resolve(entry, image_size)` fills every None from the model entry, picks
the output size from the image's aspect when width/height are not given, and
draws a seed when the seed is negative. The resolved spec is what the engine
runs and what the sidecar records; feeding it back reproduces the video.
"""

from __future__ import annotations

import functools
import secrets
from typing import Callable, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import InvalidInput

MAX_SEED = 2**32 - 1

Resize = Literal["crop", "pad", "stretch"]
Format = Literal["mp4", "webm", "gif", "webp", "png"]
Speed = Literal["exact", "fast"]
Loop = Literal["none", "pingpong", "blend"]
InterpolateBackend = Literal["flow", "rife"]
SigmaSchedule = Literal["default", "distilled"]
# what the _size validator checks, in the JSON schema too (the API contract shows it); each model family
# narrows the multiple (SVD 64, Wan 16 or 32: families/*.py)
_SIZE_SCHEMA = {"minimum": 64, "maximum": 2048, "multipleOf": 16}
# `x-families`: the model families that take a field (families/); a field without it is every family's.
# A family refuses a field it does not take (families/base.Family.check), and the UI shows only its own.
SVD = {"x-families": ["svd"]}
PROMPTED = {"x-families": ["wan", "ltx2", "ltx", "framepack"]}
LTX2 = {"x-families": ["ltx2"]}  # LTX-2's other guidance terms (diffusers' LTX2ImageToVideoPipeline)
FRAMEPACK = {"x-families": ["framepack"]}
SOUND = {"x-families": ["ltx2"]}  # the families whose videos have a soundtrack


class GenerationSpec(BaseModel):
    """What to generate. Field names are diffusers' names where diffusers has one."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # --- the image-to-video pipelines' knobs (diffusers' names) ---
    num_frames: Optional[int] = Field(None, ge=1, le=257, description="frames the model generates (each family has its rule: SVD at most 64, Wan 4k+1, LTX 8k+1; FramePack any count, from whole sections trimmed at the end)", json_schema_extra={"x-flag": "--frames"})
    num_inference_steps: Optional[int] = Field(None, ge=1, le=200, description="denoising steps", json_schema_extra={"x-flag": "--steps"})
    min_guidance_scale: Optional[float] = Field(None, ge=0.0, le=30.0, description="guidance at the first frame", json_schema_extra={"x-flag": "--min-cfg", **SVD})
    max_guidance_scale: Optional[float] = Field(None, ge=0.0, le=30.0, description="guidance at the last frame", json_schema_extra={"x-flag": "--max-cfg", **SVD})
    fps: Optional[int] = Field(None, ge=1, le=60, description="playback rate of the file; also the model's fps conditioning")
    conditioning_fps: Optional[int] = Field(None, ge=1, le=60, description="the model's fps conditioning when it differs from the playback fps (None: the same as fps), as ComfyUI workflows set it", json_schema_extra=SVD)
    motion_bucket_id: Optional[int] = Field(None, ge=1, le=1023, description="how much motion: higher moves more", json_schema_extra={"x-flag": "--motion", **SVD})
    noise_aug_strength: Optional[float] = Field(None, ge=0.0, le=1.0, description="noise added to the conditioning image", json_schema_extra={"x-flag": "--noise-aug", **SVD})
    decode_chunk_size: Optional[int] = Field(None, ge=1, le=64, description="frames the VAE decodes at once (None: as many as fit)", json_schema_extra={"x-flag": "--decode-chunk", **SVD})
    seed: int = Field(-1, ge=-1, le=MAX_SEED, description="0..2^32-1, or -1 for a random seed (recorded)")
    prompt: Optional[str] = Field(None, max_length=4000, description="what should happen in the video (Wan, LTX, FramePack)", json_schema_extra=PROMPTED)
    negative_prompt: Optional[str] = Field(None, max_length=4000, description="what should not (Wan, LTX; default: the model's own; FramePack: with --true-cfg above 1)", json_schema_extra=PROMPTED)
    guidance_scale: Optional[float] = Field(None, ge=0.0, le=30.0, description="Wan, LTX: classifier-free guidance for the prompt (<= 1 turns it off); FramePack: the distilled guidance the transformer is conditioned on (its app: 10)", json_schema_extra={"x-flag": "--guidance", **PROMPTED})
    guidance_rescale: Optional[float] = Field(None, ge=0.0, le=1.0, description="rescales the guided prediction toward the conditional one's spread, against over-exposure (LTX; LTX-2: picture and sound; 0 turns it off)", json_schema_extra={"x-families": ["ltx2", "ltx"]})
    stg_scale: Optional[float] = Field(None, ge=0.0, le=10.0, description="spatio-temporal guidance of picture and sound: away from a pass with perturbed blocks (LTX-2; 0 turns it off, one more transformer pass per step otherwise)", json_schema_extra=LTX2)
    modality_scale: Optional[float] = Field(None, ge=0.0, le=10.0, description="modality isolation guidance of picture and sound: away from a pass without audio-video cross attention (LTX-2; 1 turns it off, one more pass per step otherwise)", json_schema_extra=LTX2)
    audio_guidance_scale: Optional[float] = Field(None, ge=0.0, le=30.0, description="classifier-free guidance of the soundtrack (LTX-2; None: the model's own)", json_schema_extra=LTX2)
    flow_shift: Optional[float] = Field(None, gt=0.0, le=100.0, description="the scheduler's flow shift, as ComfyUI's ModelSamplingSD3 sets it (Wan; None: the model's own)", json_schema_extra={"x-flag": "--shift", "x-families": ["wan"]})
    true_cfg_scale: Optional[float] = Field(None, ge=1.0, le=30.0, description="FramePack: real classifier-free guidance with the negative prompt (1 turns it off, as its app does; above 1 runs the transformer twice a step)", json_schema_extra={"x-flag": "--true-cfg", **FRAMEPACK})
    latent_window_size: Optional[int] = Field(None, ge=1, le=33, description="FramePack: latent frames per section (a section is 4x this many frames; its app: 9)", json_schema_extra={"x-flag": "--latent-window", **FRAMEPACK})
    decode_timestep: Optional[float] = Field(None, ge=0.0, le=1.0, description="the timestep a timestep-conditioned VAE decodes at (LTX-Video 0.9.1 and later: a last touch of denoising in the decoder; 0: none)", json_schema_extra={"x-families": ["ltx2", "ltx"]})
    decode_noise_scale: Optional[float] = Field(None, ge=0.0, le=1.0, description="noise mixed into the latents before that decode (LTX; None: the decode timestep)", json_schema_extra={"x-families": ["ltx2", "ltx"]})
    sigma_schedule: Optional[SigmaSchedule] = Field(None, description="the noise levels the steps visit: default (the pipeline's) or distilled (the 8 LTX-2's distilled checkpoint was trained on; --steps 8)", json_schema_extra={"x-flag": "--schedule", **LTX2})

    # --- ours ---
    width: Optional[int] = Field(None, description="output width, a multiple of 16 in 64..2048 (SVD: of 64; Wan 2.2 TI2V-5B and LTX: of 32); None: from the image's aspect",
                                 json_schema_extra=_SIZE_SCHEMA)
    height: Optional[int] = Field(None, description="output height, a multiple of 16 in 64..2048 (SVD: of 64; Wan 2.2 TI2V-5B and LTX: of 32); None: from the image's aspect",
                                  json_schema_extra=_SIZE_SCHEMA)
    resize: Resize = Field("crop", description="how the image meets the target size: crop, pad or stretch")
    format: Format = Field("mp4", description="mp4 (H.264), webm (VP9), gif, webp, or png (a folder of frames)")
    no_audio: Optional[bool] = Field(None, description="drop the soundtrack the model makes (mp4: AAC, webm: Opus, gif/webp/png: NAME.wav beside)", json_schema_extra=SOUND)

    # --- post-processing (video/) ---
    interpolate: int = Field(1, description="frame interpolation factor: 1 (off), 2, 3, 4 or 8; multiplies the playback fps",
                             json_schema_extra={"enum": [1, 2, 3, 4, 8]})
    interpolate_fps: Optional[float] = Field(None, gt=0, le=240, description="interpolate to this playback fps instead of by a factor")
    interpolate_backend: InterpolateBackend = Field("flow", description="flow (no weights) or rife")
    loop: Loop = Field("none", description="make a seamless loop: blend (--loop alone) or pingpong",
                      json_schema_extra={"x-flag-value": "blend"})
    duration: Optional[float] = Field(None, gt=0, le=600, description="seconds of video: chains segments from each last frame (FramePack: its own sections)")
    segments: Optional[int] = Field(None, ge=1, le=64, description="number of chained segments (instead of duration; FramePack: sections)")

    # --- speed (engine/) ---
    speed: Speed = Field("exact", description="exact (same frames as diffusers) or fast (feature caching)")
    cache_interval: int = Field(3, ge=2, le=10, description="fast mode: full UNet pass every N steps")

    @field_validator("width", "height")
    @classmethod
    def _size(cls, v: Optional[int], info):
        if v is None:
            return v
        if v < 64 or v > 2048 or v % 16:
            raise ValueError(f"{info.field_name} must be a multiple of 16 between 64 and 2048, got {v}")
        return v

    @field_validator("interpolate")
    @classmethod
    def _interp(cls, v: int):
        if v not in (1, 2, 3, 4, 8):
            raise ValueError(f"interpolate must be 1, 2, 3, 4 or 8, got {v}")
        return v

    @model_validator(mode="after")
    def _cross(self):
        if (
            self.min_guidance_scale is not None
            and self.max_guidance_scale is not None
            and self.min_guidance_scale > self.max_guidance_scale
        ):
            raise ValueError(
                f"min_guidance_scale ({self.min_guidance_scale}) must not exceed max_guidance_scale ({self.max_guidance_scale})"
            )
        if self.duration is not None and self.segments is not None:
            raise ValueError("give duration or segments, not both")
        if self.interpolate_fps is not None and self.interpolate > 1:
            raise ValueError("give interpolate (a factor) or interpolate_fps (a target rate), not both")
        return self

    # ------------------------------------------------------------------
    @property
    def uses_cfg(self) -> bool:
        """Classifier-free guidance (the denoiser runs on a batch of two): on when the guidance (SVD: the max
        guidance) is above 1. Of a resolved spec: None (the model's default, not known here) counts as off. Where a
        model has a real CFG scale beside a distilled guidance (FramePack's true_cfg_scale), that one decides."""
        scale = self.max_guidance_scale if self.max_guidance_scale is not None else self.guidance_scale
        if self.true_cfg_scale is not None:
            scale = self.true_cfg_scale
        return scale is not None and scale > 1

    @property
    def effective_conditioning_fps(self) -> Optional[int]:
        """The fps the model is conditioned on: conditioning_fps where given, else the playback fps."""
        return self.conditioning_fps or self.fps

    @classmethod
    def build(cls, **fields) -> "GenerationSpec":
        """Validate user input; raise InvalidInput with one line per bad field."""
        try:
            return cls(**fields)
        except ValidationError as e:
            raise InvalidInput(format_validation_error(e)) from None

    def update(self, **fields) -> "GenerationSpec":
        """A copy with fields changed, validated."""
        data = self.model_dump()
        data.update(fields)
        return GenerationSpec.build(**data)

    def resolve(self, entry, image_size: Optional[tuple[int, int]] = None) -> "GenerationSpec":
        """Every None filled from the model entry (registry.ModelEntry); size from the image's aspect (no image: the
        model's landscape size, as `estimate` and `batch --dry-run` plan); a concrete seed. Under --speed fast a model
        with a fast preset (registry.FastPreset: LTX-2's distilled LoRA) resolves with that preset's defaults."""
        d = entry.defaults_for(self.speed)
        data = self.model_dump()
        for name in DEFAULTED:  # a default of None (a field other families take) stays None
            if data[name] is None:
                data[name] = getattr(d, name)
        if data["width"] is None or data["height"] is None:
            w, h = auto_size(d, image_size, data["width"], data["height"], d.size_multiple or 64)
            data["width"], data["height"] = w, h
        if data["seed"] < 0:
            data["seed"] = secrets.randbelow(MAX_SEED + 1)
        return GenerationSpec.build(**data)


# the fields a model's registry entry gives defaults for (registry.ModelDefaults)
DEFAULTED = ("num_frames", "num_inference_steps", "fps", "motion_bucket_id", "noise_aug_strength",
             "min_guidance_scale", "max_guidance_scale", "negative_prompt", "guidance_scale", "guidance_rescale",
             "stg_scale", "modality_scale", "audio_guidance_scale", "sigma_schedule", "decode_timestep",
             "decode_noise_scale", "true_cfg_scale", "latent_window_size")


@functools.cache
def family_fields() -> dict[str, tuple[str, ...]]:
    """Spec field -> the model families that take it, for the fields that not every family takes (read-only)."""
    out = {}
    for name, f in GenerationSpec.model_fields.items():
        families = (f.json_schema_extra or {}).get("x-families")
        if families:
            out[name] = tuple(families)
    return out


def auto_size(defaults, image_size, width=None, height=None, multiple: int = 64) -> tuple[int, int]:
    """Target size by aspect: the model's landscape, portrait or square size, or where the model has a bucket list
    (FramePack) the bucket nearest the image's aspect (its app's find_nearest_bucket: ties go to the later bucket).

    If only one of width/height is given, the other follows the image's aspect
    (rounded to the model's size multiple).
    """
    if image_size is None:
        aspect = defaults.landscape[0] / defaults.landscape[1]
    else:
        aspect = image_size[0] / max(1, image_size[1])
    if width is not None:
        return width, _round(width / aspect, multiple)
    if height is not None:
        return _round(height * aspect, multiple), height
    if getattr(defaults, "buckets", None) and image_size is not None:
        w, h = image_size
        best, metric = defaults.buckets[0], float("inf")
        for bw, bh in defaults.buckets:
            m = abs(h * bw - w * bh)
            if m <= metric:
                best, metric = (bw, bh), m
        return tuple(best)
    if aspect > 1.1:
        return defaults.landscape
    if aspect < 1 / 1.1:
        return defaults.portrait
    return defaults.square


def _round(v: float, multiple: int) -> int:
    return int(min(2048 // multiple * multiple, max(64, round(v / multiple) * multiple)))


# where FastAPI puts a request's field, which the message leaves out
_REQUEST_PARTS = ("body", "query", "path", "header", "cookie")


def format_validation_error(e, what: str = "spec", name: Optional[Callable[[str], str]] = None) -> str:
    """One line for a pydantic ValidationError (or FastAPI's RequestValidationError): "Invalid <what>: <field>:
    <message> (got <value>); ...". `name` turns a field's dotted location into what the user typed (e.g. a flag)."""
    parts = []
    for err in e.errors():
        loc = ".".join(str(x) for x in err.get("loc", ()) if x not in _REQUEST_PARTS)
        loc = name(loc) if name and loc else loc
        msg = err.get("msg", "invalid")
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        if err.get("type") == "extra_forbidden":
            msg = "unknown field"
        given = err.get("input")
        if not loc or loc in msg:  # the whole input's error, or a message that names its field
            parts.append(msg)
        elif err.get("type") in ("extra_forbidden", "missing") or isinstance(given, (dict, list)):
            parts.append(f"{loc}: {msg}")
        else:
            parts.append(f"{loc}: {msg} (got {_short(given)})")
    return f"Invalid {what}: " + "; ".join(parts)


def _short(value, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


SPEC_FIELDS = tuple(GenerationSpec.model_fields)


def cli_flag(model: type[BaseModel], name: str) -> str:
    """The command-line flag of a settings field: its `x-flag`, else --name-with-dashes."""
    extra = model.model_fields[name].json_schema_extra or {}
    return extra.get("x-flag", "--" + name.replace("_", "-"))
