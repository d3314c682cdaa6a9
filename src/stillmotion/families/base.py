"""What one family of image-to-video models declares (the seam the engine runs every model through).

A family says which spec fields it takes (the `x-families` of GenerationSpec's fields: the CLI flags,
the OpenAPI contract, batch columns and the UI all read that one schema), its frame and size rules,
how to load its diffusers pipeline, how to run it to latents with progress and cancel, and how to
decode them. What a family cannot honour is refused by `check()` before any work, naming the setting
and the rule (InvalidInput: exit 2, HTTP 422); nothing is dropped or rounded in silence.
"""

from __future__ import annotations

import contextlib

from typing import Any, Callable, ClassVar, Optional

import numpy as np

from ..errors import InvalidInput
from ..spec import GenerationSpec, cli_flag, family_fields


class Family:
    name: ClassVar[str]  # as in registry entries and the spec's x-families
    label: ClassVar[str]  # for people: "SVD", "Wan"
    article: ClassVar[str] = "a"  # "an SVD model"
    speeds: ClassVar[frozenset[str]] = frozenset({"exact"})  # the --speed modes it runs
    plans_memory: ClassVar[bool] = False  # engine/memory.py counts this family's stages
    end_image: ClassVar[bool] = False  # --end-image (and --keyframes) can be honoured
    lora: ClassVar[bool] = False  # --lora / LoRA folders attach to it
    sound: ClassVar[bool] = False  # its decode makes a soundtrack (video.audio.Audio) with the frames
    audio_input: ClassVar[bool] = False  # --audio FILE: `run` takes a soundtrack to follow (audio=)

    # ------------------------------------------------------------------ defaults
    def entry_for_folder(self, entry, folder):
        """The entry to run a resolved model with: a local folder that carries no stillmotion defaults gets this
        family's (folder_defaults); every other entry is its own."""
        import dataclasses

        from ..models.folder_info import read_folder_info
        from ..models.lora import lora_defaults, lora_record
        from ..models.resolve import entry_for, lora_base

        if entry.source != "local" or "defaults" in read_folder_info(folder):
            return entry
        lora = lora_record(entry.name) is not None  # a LoRA folder over a base: `folder` is the base's
        if lora and entry_for(lora_base(entry.name)).source != "local":
            return entry  # a named base: resolve.entry_for gave its defaults, with the LoRA's over them
        defaults = dataclasses.replace(self.folder_defaults(folder), **(lora_defaults(entry.name) if lora else {}))
        return dataclasses.replace(entry, family=self.name, defaults=defaults)

    def folder_defaults(self, folder):
        """registry.ModelDefaults for a diffusers folder with no stillmotion.json."""
        from ..models.registry import ModelDefaults

        return ModelDefaults()

    # ------------------------------------------------------------------ rules
    def takes(self, field: str) -> bool:
        """Whether this family takes a spec field (every family takes a field without `x-families`)."""
        return self.name in family_fields().get(field, (self.name,))

    def size_multiple(self, entry) -> int:
        """Width and height must be multiples of this (the entry may say, e.g. Wan 2.2 TI2V-5B's 32)."""
        return entry.defaults.size_multiple or 64

    def frames_rule(self, n: int) -> Optional[str]:
        """None when `n` frames can be made; else the rule and the nearest counts that can."""
        return None

    def check(self, spec: GenerationSpec, entry, *, end_image: bool = False, audio: bool = False) -> None:
        """Refuse what this family cannot honour (InvalidInput naming the setting and the rule).
        Works on a spec before or after resolve(): only the fields that are set are checked.
        `audio`: a soundtrack is given to follow (--audio FILE)."""
        for field, families in family_fields().items():
            if getattr(spec, field) is not None and not self.takes(field):
                names = sorted(families)
                takes = " and ".join(names) if len(names) < 3 else ", ".join(names[:-1]) + " and " + names[-1]
                raise refusal(field, f"{cli_flag(GenerationSpec, field)} ({field}) is a setting of {takes} models; "
                                     f"{entry.name} is {self.article} {self.label} model: leave it out.")
        if spec.speed not in self.speeds:
            raise refusal("speed", f"--speed {spec.speed} is not built for {self.label} models ({entry.name}) yet: "
                                   f"use --speed {' or '.join(sorted(self.speeds))}.")
        if audio and not self.audio_input:
            raise InvalidInput(f"{entry.name} cannot follow a soundtrack (--audio): {self.label} models take no "
                               "audio input; leave --audio out.")
        if audio and (spec.duration is not None or spec.segments is not None):
            raise InvalidInput("--audio with --duration/--segments is not built: one soundtrack cannot follow "
                               "chained segments yet; leave one of them out.")
        if spec.loop == "pingpong" and (self.sound and not spec.no_audio):
            raise refusal("loop", f"--loop pingpong would play {entry.name}'s soundtrack backwards: use --loop blend "
                                  "(its sound is cross-faded like its frames) or add --no-audio.")
        if end_image and not self.supports_end_image(entry):
            raise InvalidInput(f"{entry.name} cannot end on an image (--end-image, --keyframes): "
                               f"{self.end_image_hint(entry)}")
        m = self.size_multiple(entry)
        for side in ("width", "height"):
            v = getattr(spec, side)
            if v is not None and v % m:
                lo, hi = v // m * m, (v // m + 1) * m
                nearest = f"{lo} or {hi}" if lo >= 64 else f"{hi}"
                raise refusal(side, f"--{side} {v}: {self.label} sizes are multiples of {m} for {entry.name}: use {nearest}.")
        if spec.num_frames is not None and (why := self.frames_rule(spec.num_frames)):
            raise refusal("num_frames", f"--frames {spec.num_frames}: {why}.")

    def supports_end_image(self, entry) -> bool:
        return self.end_image

    def end_image_hint(self, entry) -> str:
        return f"{self.label} models have no end-image conditioning."

    def long_frames(self, spec: GenerationSpec) -> Optional[int]:
        """The frames this family makes in one run for --duration/--segments, when it makes long videos itself
        (FramePack's sections); None: the engine chains segments on the last frame (engine/long.py)."""
        return None

    def check_engine(self, config, entry, *, lora: bool = False) -> None:
        """Refuse the engine settings this family has no implementation of (before loading)."""
        refused = [(config.attention != "sdpa", "--attention math"), (config.compile, "--compile"),
                   (config.forward_chunking, "--forward-chunking"), (lora and not self.lora, "a LoRA")]
        for given, what in refused:
            if given and not self.engine_setting(what):
                raise InvalidInput(f"{what} is not built for {self.label} models ({entry.name}) yet: leave it out.")

    def engine_setting(self, what: str) -> bool:
        """Whether an engine setting named as in check_engine is honoured."""
        return False

    # ------------------------------------------------------------------ LoRAs (where `lora` is True)
    def apply_lora(self, pipe, folder) -> None:
        """A LoRA folder run as the model (`--model LORA_FOLDER`): its adapters on for good (merged/fused)."""
        raise InvalidInput(f"LoRAs are not built for {self.label} models yet.")

    def read_lora(self, folder) -> Any:
        """A served LoRA folder's adapter, read once and kept (what attach_lora takes)."""
        raise InvalidInput(f"LoRAs are not built for {self.label} models yet.")

    def attach_lora(self, pipe, adapter, scale: float = 1.0) -> None:
        """A served LoRA (from read_lora) on for one job at `scale`, unmerged: detach_lora gives the base back."""
        raise InvalidInput(f"LoRAs are not built for {self.label} models yet.")

    def detach_lora(self, pipe) -> None:
        """Take off what attach_lora put on: the pipeline runs the base model exactly again."""

    # ------------------------------------------------------------------ running
    def denoiser(self, pipe):
        """The network the steps run (a UNet, a transformer): what speed modes and chunking act on."""
        return pipe.transformer

    def speed_setup(self, pipe, device: str, dtype, attention: str) -> dict:
        """Lossless settings for the pipeline on `device`; returns what was applied, for the sidecar."""
        from ..engine.speed import cuda_settings

        return {"attention": attention} | cuda_settings(device, dtype)

    def speed_cache(self, spec: GenerationSpec, pipe):
        """What `--speed fast` runs with, or None for exact: an object with attach(), detach() and stats() (the
        engine attaches it around `run`, always detaches it, and records {"mode": "fast", **stats()}).
        By default DeepCache on the denoiser every `spec.cache_interval` steps (engine/speed.py)."""
        from ..engine.speed import deepcache_for

        return deepcache_for(spec, self.denoiser(pipe))

    @contextlib.contextmanager
    def cache_on(self, spec: GenerationSpec, pipe, cache=None):
        """The `--speed fast` cache on for one `run` call, and off again when it returns or raises: the one the
        engine passes (attached already: attach() is then a no-op), or for a call made without one, this family's
        own (speed_cache; None for exact)."""
        if cache is None:
            cache = self.speed_cache(spec, pipe)
        try:
            if cache is not None:
                cache.attach()
            yield
        finally:
            if cache is not None:
                cache.detach()

    def load(self, path, variant: Optional[str], dtype) -> Any:
        """The diffusers pipeline from a folder (raises what from_pretrained raises: the engine converts it)."""
        raise NotImplementedError

    def bind(self, pipe, entry) -> None:
        """Keep with a loaded pipeline what running it needs from the model's entry beyond its folder (FramePack:
        the sampling type the model was trained for). Nothing by default."""

    def denoise_steps(self, spec: GenerationSpec) -> int:
        """How many times a run calls the step callback (FramePack: steps in each of its sections)."""
        return spec.num_inference_steps

    def step_message(self, spec: GenerationSpec, n: int) -> str:
        """The progress line after the n-th step callback of a run (1-based)."""
        return f"step {n}/{spec.num_inference_steps}"

    def describe_length(self, pipe, spec: GenerationSpec) -> Optional[dict]:
        """What the sidecar records about how the frame count was made ("length"; FramePack: sections and trimming).
        None: the spec's frames, made as asked."""
        return None

    def run(self, pipe, image, spec: GenerationSpec, *, generator, on_step_end: Callable, end_image=None,
            cache=None, audio=None) -> Any:
        """Denoise to latents (diffusers' own loop; `on_step_end` is its callback_on_step_end). `audio`
        (video.audio.Audio) is passed only where `audio_input` is True: a soundtrack the video follows."""
        raise NotImplementedError

    def decode(self, pipe, latents, spec: GenerationSpec, chunk: int, report: Callable, cancel: Callable,
               span: tuple[float, float]) -> np.ndarray:
        """Latents -> uint8 frames (T, H, W, 3), with progress and cancel where the VAE allows; a family that makes
        sound returns (frames, video.audio.Audio), which the engine carries to GenerationResult.audio."""
        raise NotImplementedError

    def encoder_module(self, pipe):
        """The module whose forward time is recorded as `timings.encode` (None: not recorded)."""
        return None

    def describe_run(self, spec: GenerationSpec, end_image) -> Optional[dict]:
        """What the sidecar records about an end-image run (None: nothing to add)."""
        return None

    # ------------------------------------------------------------------ memory plan (None: engine/memory.py's)
    # A transformer family opts into engine/dit_plan.py with plans_memory = True, its plan_layout() (its
    # engine/*_shape.py Layout) and plan_shape(); the other hooks below then follow from the layout.
    def plan_layout(self):
        """The transformer planner's layout of this family (engine/dit_shapes.Layout); None: SVD's planner."""
        return None

    def plan_shape(self, entry, dtype_name: Optional[str], attention: str):
        """The shape the planner counts this family on (None: shapes.model_shape, SVD's)."""
        return None

    def given_plan(self, config):
        """The plan the engine settings name, when this family has its own plan type (None: memory.MemoryPlan)."""
        layout = self.plan_layout()
        if layout is None:
            return None
        from ..engine.dit_plan import given_plan

        return given_plan(layout, config.offload)

    def pipeline_shape(self, pipe, dtype, name: str):
        """The planner's shape of a loaded pipeline (its components' configs on meta)."""
        from ..engine.dit_shapes import pipe_shape

        return pipe_shape(self.plan_layout(), pipe, dtype, name)

    def choose_plan(self, shape, spec: GenerationSpec, budget: int, device: str, config):
        """The fastest of the layout's plans that fits `budget` for this resolved spec (a PeakEstimate)."""
        from ..engine.dit_plan import choose_plan

        return choose_plan(shape, spec.num_frames, spec.height, spec.width, budget, device=device,
                           user_offload=config.offload, cfg=spec.uses_cfg, knobs=shape.layout.knobs(spec))[0]

    def apply_plan(self, pipe, plan, active, device: str, dtype):
        """Set the pipeline up for `plan`; returns the plan in force."""
        from ..engine.dit_plan import apply_plan

        return apply_plan(pipe, plan, active, device, dtype, self.plan_layout())


def refusal(field: str, message: str) -> InvalidInput:
    """The InvalidInput of a refused setting; `.field` names the spec field (a workflow's node is named from it)."""
    e = InvalidInput(message)
    e.field = field
    return e


def to_uint8(video) -> np.ndarray:
    """A [0, 1] float video (T, H, W, 3) from diffusers' postprocess_video -> uint8, rounded as every family does."""
    return np.clip(np.round(np.asarray(video) * 255.0), 0, 255).astype(np.uint8)


def pipeline_kwargs(**values) -> dict:
    """The keyword arguments that are set: a None leaves the pipeline's own default in force."""
    return {k: v for k, v in values.items() if v is not None}
