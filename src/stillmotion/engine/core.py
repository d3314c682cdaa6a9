"""Engine: load a model once, run GenerationSpecs on it.

The model's family (families/: SVD, Wan) loads its diffusers pipeline and runs
diffusers' own denoising loop (so the default path gives the stock pipeline's
frames); stillmotion adds around it:
device and dtype choice, progress and cancel through the step callback, noise
from a CPU generator, chunked decoding with progress, out-of-memory handling,
post-processing and the record that goes into every sidecar.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
import warnings
from typing import Any, Optional, Union

import numpy as np

from ..errors import Cancelled, InvalidInput, ModelUnavailable, OutOfMemory, is_out_of_memory
from ..families import family_for
from ..spec import GenerationSpec
from ..util import first_line, fmt_bytes
from .config import EngineConfig
from .device import pick_device, pick_dtype
from .memory import retry_on_oom
from .provenance import run_metadata
from .types import CancelFn, GenerationResult, Progress, ProgressFn, RunRecord

log = logging.getLogger("stillmotion.engine")


class Engine:
    """Loads a model once; `generate()` runs one spec on it. One generation at a time.

        Engine(EngineConfig(model="svd-xt", offload="model"))   # what front ends pass
        Engine("svd-xt", offload="model")                        # the same, from Python
    """

    def __init__(self, config: Union[EngineConfig, str, None] = None, **settings: Any):
        import torch

        from ..models.resolve import resolve

        if not isinstance(config, EngineConfig):
            config = EngineConfig.build(**({"model": config} if config else {}), **settings)
        elif settings:
            config = config.replace(**settings)
        self.config = config
        self.device = pick_device(config.device)
        self.dtype = pick_dtype(self.device, config.dtype)
        if config.threads:
            torch.set_num_threads(config.threads)  # several processes on one CPU: no oversubscription
        self._active = None  # the memory Plan the pipeline is set up for
        self._shape = None  # profile.ModelShape, built on first use
        self._compiled_shapes: set = set()
        self._lock = threading.Lock()
        self.timings: dict[str, float] = {}

        t0 = time.perf_counter()
        self.local = resolve(config.model, download=config.download, progress=config.progress)
        self.family = family_for(self.local.entry, self.local.path)  # families/: what runs this model
        self.entry = self.family.entry_for_folder(self.local.entry, self.local.path)
        if self.device == "cpu" and not self.entry.builtin and self.entry.approx_size_gb > 1:
            warnings.warn(
                f"No GPU found: running {self.entry.name} on the CPU will take a long time per video.",
                stacklevel=2,
            )
        self.pipe = self._load()
        self.timings["load"] = round(time.perf_counter() - t0, 4)

    # ------------------------------------------------------------------
    def _load(self):
        from transformers.utils import logging as tlogging

        tlogging.set_verbosity_error()  # before diffusers imports CLIP: "requires torchvision" is harmless here
        tlogging.disable_progress_bar()  # our own progress bar is the one the user sees
        from diffusers.utils import logging as dlogging

        dlogging.disable_progress_bar()
        self.family.check_engine(self.config, self.entry, lora=self.local.lora is not None)
        try:
            with warnings.catch_warnings():
                # diffusers >= 0.36 renames torch_dtype to dtype; the old name works on every version
                warnings.filterwarnings("ignore", message=".*torch_dtype.*", category=FutureWarning)
                pipe = self.family.load(self.local.path, self.local.variant, self.dtype)
        except (OSError, ValueError, RuntimeError) as e:
            if is_out_of_memory(e):
                raise OutOfMemory(f"Out of memory while loading {self.entry.name}: {first_line(e)}") from None
            raise ModelUnavailable(
                f"Could not load model from {self.local.path}: {first_line(e)}; run `stillmotion models verify {self.entry.name}`."
            ) from None
        pipe.set_progress_bar_config(disable=True)
        self.family.bind(pipe, self.entry)
        if self.local.lora is not None:  # a LoRA folder: its adapters on for good, the family's way
            self.family.apply_lora(pipe, self.local.lora)
        from .memory import MemoryPlan
        from .speed import compile_pipe

        conf = self.config
        self.pipe = pipe
        self._apply_plan(self.family.given_plan(conf) or
                         MemoryPlan(conf.decode_chunk_size or 1, conf.forward_chunking, conf.offload))
        self.speed_settings = self.family.speed_setup(pipe, self.device, self.dtype, conf.attention)
        if conf.compile:
            self.speed_settings["compile"] = compile_pipe(pipe)
        return pipe

    def _apply_plan(self, plan) -> None:
        """Set the pipeline up for a memory plan: forward chunking and where the weights live (a family with
        its own plan type, a transformer family, applies its own axes: Family.apply_plan -> engine/dit_plan.apply_plan)."""
        from .memory import MemoryPlan
        from .profile import set_forward_chunking

        if not isinstance(plan, MemoryPlan):
            self._active = self.family.apply_plan(self.pipe, plan, self._active, self.device, self.dtype)
            return
        pipe = self.pipe
        offload = plan.offload if self.device != "cpu" else "none"
        active = self._active
        if self.family.plans_memory and (active is None or active.forward_chunking != plan.forward_chunking):
            set_forward_chunking(self.family.denoiser(pipe), plan.forward_chunking)
        if active is None or (active.offload if self.device != "cpu" else "none") != offload:
            if active is not None and active.offload != "none":
                pipe.remove_all_hooks()
            if offload == "model":
                pipe.enable_model_cpu_offload(device=self.device)
            elif offload == "sequential":
                pipe.enable_sequential_cpu_offload(device=self.device)
            else:
                pipe.to(self.device)
        self._active = plan

    def _plan(self, spec: GenerationSpec, keyframe: bool = False) -> tuple[Any, dict]:
        """The memory plan for this run, and what to record about it.

        --memory none: the engine's settings as given. --memory auto: the fastest plan whose
        estimate fits the device's free memory (or --max-memory); on a CPU with no --max-memory
        there is no limit to plan for, so it runs the fastest plan.
        """
        from . import memory

        conf = self.config
        frames = spec.num_frames
        chunk = spec.decode_chunk_size or conf.decode_chunk_size
        given = self.family.given_plan(conf) or memory.MemoryPlan(min(chunk or frames, frames), conf.forward_chunking,
                                                                  conf.offload)
        budget = conf.max_memory
        if conf.memory == "none" or (budget is None and self.device == "cpu") or not self.family.plans_memory:
            why = ("--memory none" if conf.memory == "none" else
                   f"the memory planner does not count {self.family.label} models yet" if not self.family.plans_memory
                   else "CPU with no --max-memory: nothing to plan for")
            return given, {"mode": conf.memory, "plan": given.to_dict(), "label": given.label(), "planned": False, "why": why}
        budget = memory.device_budget(self.device) if budget is None else budget
        if budget is None:  # e.g. MPS: no reliable free-memory figure
            return given, {"mode": "auto", "plan": given.to_dict(), "label": given.label(), "planned": False,
                           "why": f"no free-memory figure on {self.device}; use --max-memory"}
        if not isinstance(given, memory.MemoryPlan):  # the family's own plan (Wan): its shape and its axes
            self._shape = self._shape or self.family.pipeline_shape(self.pipe, self.dtype, self.entry.name)
            est = self.family.choose_plan(self._shape, spec, budget, self.device, conf)
            return est.plan, self._plan_record(est, budget)
        if self._shape is None:
            from .shapes import model_shape_from_modules
            from .speed import set_attention

            self._shape = model_shape_from_modules(self.pipe.unet, self.pipe.vae, self.pipe.image_encoder,
                                                   self.dtype, self.entry.name)
            set_attention(self._shape.unet, conf.attention)  # the dry run counts the kernel that runs
        guided = spec.uses_cfg  # classifier-free guidance: the UNet runs on a batch of two
        est = memory.choose_plan(
            self._shape, frames, spec.height, spec.width, budget, device=self.device, cfg=guided,
            user_chunk=chunk, user_offload=conf.offload, user_forward_chunking=conf.forward_chunking, keyframe=keyframe,
        )[0]
        return est.plan, self._plan_record(est, budget)

    def _plan_record(self, est, budget: int) -> dict:
        """What the sidecar records about a planned run (and the log line)."""
        rec = {"mode": "auto", "plan": est.plan.to_dict(), "label": est.plan.label(), "planned": True,
               "estimate_bytes": est.peak_bytes, "budget_bytes": budget, "fits": est.fits}
        if est.fits:
            log.info("memory plan: %s (estimated peak %s of %s)", est.plan.label(), fmt_bytes(est.peak_bytes),
                     fmt_bytes(budget))
        else:
            log.warning("no plan fits %s (leanest needs about %s); trying %s anyway", fmt_bytes(budget),
                        fmt_bytes(est.peak_bytes), est.plan.label())
        return rec

    @property
    def model_name(self) -> str:
        return self.entry.name

    def describe(self) -> dict:
        conf = self.config
        return {
            "model": self.local.describe(),
            "device": self.device,
            "dtype": str(self.dtype).replace("torch.", ""),
            "offload": conf.offload,
            "forward_chunking": conf.forward_chunking,
            "memory_mode": conf.memory,
            "max_memory_bytes": conf.max_memory,
            "speed_settings": dict(getattr(self, "speed_settings", {})),
        }

    # ------------------------------------------------------------------
    def resolve_spec(self, spec: Optional[GenerationSpec], image_size=None) -> GenerationSpec:
        return resolve_spec(self.entry, spec, image_size)

    def generate(
        self,
        image,
        spec: Optional[GenerationSpec] = None,
        *,
        on_progress: Optional[ProgressFn] = None,
        should_cancel: Optional[CancelFn] = None,
        source: Optional[str] = None,
        end_image=None,
        end_source=None,
        audio=None,
        audio_source: Optional[str] = None,
    ) -> GenerationResult:
        """Image (path, URL, bytes or PIL image) -> GenerationResult. Raises StillmotionError subclasses.

        `source` names where bytes came from (a path or URL) for the sidecar. `end_image` (like `image`,
        or a list of them: keyframes after the first) makes the video end on it (keyframes.py);
        `end_source` names where its bytes came from (one name, or a list). `audio` (a path, bytes or
        video.audio.Audio; `audio_source` names it) is a soundtrack for the model to follow, where its family
        takes one (Family.audio_input; refused otherwise).
        """
        with self._lock:
            t0 = time.perf_counter()
            # 1-3. Load and check the image(s) (and a soundtrack), resolve the spec, fit the image(s) to the target size
            sound = None
            if audio is not None:
                from ..video.audio import open_audio

                sound, sound_info = open_audio(audio, audio_source)
            prepared, spec, input_info, ends = prepare_inputs(self.entry, image, spec, end_image, source, end_source,
                                                              family=self.family, audio=sound is not None)
            if sound is not None:
                if len(ends) > 1:
                    raise InvalidInput("--audio with --keyframes is not built: one soundtrack cannot follow chained "
                                       "segments yet; leave one of them out.")
                input_info["audio"] = sound_info
            if ends:
                from .keyframes import loop_ends

                ends = loop_ends(ends, prepared, spec)
            prepare_seconds = round(time.perf_counter() - t0, 4)

            report = on_progress or (lambda p: None)
            cancel = should_cancel or (lambda: False)

            # 4. Sample (one segment, or chained segments for long videos or several keyframes)
            if len(ends) > 1:
                from .long import generate_keyframes

                frames, fps, run = generate_keyframes(self.sample, prepared, ends, spec, report, cancel)
            elif ends:
                frames, run = self.sample(prepared, spec, report, cancel, end_image=ends[0], audio=sound)
                fps = float(spec.fps)
            elif (spec.duration is not None or spec.segments is not None) and self.family.long_frames(spec) is None:
                from .long import generate_long  # chained segments; a family that makes long videos runs once

                frames, fps, run = generate_long(self.sample, prepared, spec, report, cancel)
            else:
                frames, run = self.sample(prepared, spec, report, cancel, audio=sound)
                fps = float(spec.fps)
            run.timings = {"prepare": prepare_seconds, **run.timings}
            if sound is not None:  # the video followed it: its soundtrack is that one, fitted to its length
                from ..video.audio import given_soundtrack

                run.audio, run.soundtrack = given_soundtrack(sound, len(frames), fps, sound_info.get("source"))
            if spec.no_audio:
                run.audio = None  # --no-audio: the video without the model's soundtrack

            # 5. Post-process: interpolation and loops multiply/shape playback, never the conditioning
            post_spec = spec
            if ends:
                from .keyframes import close_loop

                frames, post_spec = close_loop(frames, spec, run)
            if post_spec.interpolate > 1 or post_spec.interpolate_fps is not None or post_spec.loop != "none":
                from ..video.postprocess import apply as postprocess
                from ..video.postprocess import apply_audio

                t = time.perf_counter()
                report(Progress("postprocess", 0, 1, 0.99, "post-processing"))
                run.audio = apply_audio(run.audio, len(frames), fps, post_spec)  # refuses first what it cannot do
                frames, fps, run.postprocess = postprocess(frames, fps, post_spec, should_cancel=cancel)
                run.timings["postprocess"] = round(time.perf_counter() - t, 4)

            run.timings["total"] = round(time.perf_counter() - t0, 4)
            run.timings["load"] = self.timings.get("load")
            metadata = run_metadata(spec, input_info, self.describe(), run)
            return GenerationResult(frames=frames, fps=fps, spec=spec, metadata=metadata, audio=run.audio)

    # ------------------------------------------------------------------
    def sample(self, image, spec: GenerationSpec, report: ProgressFn, cancel: CancelFn,
               progress_span: tuple[float, float] = (0.0, 0.98), end_image=None, audio=None
               ) -> tuple[np.ndarray, RunRecord]:
        """One SVD run on a prepared PIL image -> (uint8 frames (T, H, W, 3), what the run did).
        With a prepared `end_image` the run ends on it (keyframes.py: bidirectional sampling); with `audio`
        (video.audio.Audio) the family follows that soundtrack (Family.audio_input).

        Runs under a memory plan (see memory.py); an out-of-memory error steps the plan down
        (smaller decode chunk, forward chunking, model offload, sequential offload) and retries
        the stage that failed, recording each step in the RunRecord's fallbacks (memory.retry_on_oom).
        """
        lo, hi = progress_span
        denoise_share = 0.85  # decoding is weighted like a few denoising steps in the progress bar
        if cancel():
            raise Cancelled()
        run = RunRecord()

        # 1. Plan memory
        t = time.perf_counter()
        plan, run.memory = self._plan(spec, keyframe=end_image is not None)
        run.timings["plan"] = round(time.perf_counter() - t, 4)
        report(Progress("encode", 0, spec.num_inference_steps, lo, f"memory plan: {plan.label()}"))

        # 2. Denoise (the whole stage is retried after an out-of-memory)
        retry = functools.partial(retry_on_oom, apply_plan=self._apply_plan, spec=spec, device=self.device,
                                  fallbacks=run.fallbacks, step_down=self.config.memory != "none")
        latents, plan = retry("denoising", plan, lambda p: self._denoise(
            image, spec, report, cancel, run, (lo, hi), denoise_share, end_image, audio))

        # 3. Decode (only decoding is retried)
        t = time.perf_counter()
        decode_span = (lo + (hi - lo) * denoise_share, hi)
        video, plan = retry("decoding", plan, lambda p: self.decode(
            latents, spec, p.decode_chunk_size, report, cancel, decode_span))
        if isinstance(video, tuple):  # a family that makes sound decodes (frames, video.audio.Audio)
            video, run.audio = video
        run.decode_chunk_size = plan.decode_chunk_size if self.family.takes("decode_chunk_size") else None
        run.timings["decode"] = round(time.perf_counter() - t, 4)
        if run.fallbacks:
            run.memory["final_plan"] = plan.to_dict()
        run.length = self.family.describe_length(self.pipe, spec)
        return video, run

    def _denoise(self, image, spec: GenerationSpec, report: ProgressFn, cancel: CancelFn, run: RunRecord,
                 span: tuple[float, float], denoise_share: float, end_image=None, audio=None):
        """diffusers' denoising loop (output_type="latent") with progress, cancel, timings and the speed mode."""
        import torch

        from .speed import first_compile_seconds

        pipe = self.pipe
        lo, hi = span
        steps = self.family.denoise_steps(spec)  # FramePack: the steps of every section
        step_times: list[float] = []
        last = [time.perf_counter()]

        def on_step_end(_pipe, i, _t, kwargs):
            now = time.perf_counter()
            step_times.append(now - last[0])
            last[0] = now
            n = len(step_times)  # counted here: a pipeline's `i` restarts in each FramePack section
            report(Progress("denoise", n, steps, lo + (hi - lo) * denoise_share * n / steps,
                            self.family.step_message(spec, n)))
            if cancel():
                raise Cancelled()
            return kwargs

        generator = torch.Generator("cpu").manual_seed(spec.seed)
        report(Progress("encode", 0, steps, lo, "encoding the image"))
        cache = self.family.speed_cache(spec, pipe)  # None for exact
        t = time.perf_counter()
        encoder = _ForwardTimer(self.family.encoder_module(pipe))  # the image encoding's seconds, for the timings
        try:
            with torch.inference_mode():
                if cache is not None:
                    cache.attach()
                last[0] = time.perf_counter()
                sound = {"audio": audio} if audio is not None else {}  # only a family with audio_input takes it
                latents = self.family.run(pipe, image, spec, generator=generator, on_step_end=on_step_end,
                                          end_image=end_image, cache=cache, **sound)
                if end_image is not None:
                    run.keyframes = self.family.describe_run(spec, end_image)
        finally:
            if cache is not None:
                cache.detach()
            encoder.remove()
        run.timings["encode"] = round(encoder.seconds, 4)
        run.timings["denoise"] = round(time.perf_counter() - t - encoder.seconds, 4)
        run.timings["step_seconds"] = [round(s, 4) for s in step_times]
        run.speed = {"mode": "fast", **cache.stats()} if cache is not None else {"mode": "exact"}
        if self.config.compile:
            compiled = first_compile_seconds(spec, step_times, self._compiled_shapes)
            if compiled is not None:
                run.timings["compile"] = compiled
        return latents

    def decode(self, latents, spec: GenerationSpec, chunk: int, report: ProgressFn, cancel: CancelFn,
               span: tuple[float, float]) -> np.ndarray:
        """Latents -> uint8 frames (T, H, W, 3), the family's way, with progress and cancel."""
        return self.family.decode(self.pipe, latents, spec, chunk, report, cancel, span)


class _ForwardTimer:
    """Seconds spent in a module's forward calls, through forward hooks; `remove()` takes them off."""

    def __init__(self, module):
        self.seconds = 0.0
        self._start = 0.0
        self._hooks = [] if module is None else [module.register_forward_pre_hook(self._before),
                                                 module.register_forward_hook(self._after)]

    def _before(self, *_):
        self._start = time.perf_counter()

    def _after(self, *_):
        self.seconds += time.perf_counter() - self._start

    def remove(self) -> None:
        for hook in self._hooks:
            hook.remove()


# ----------------------------------------------------------------------------
def resolve_spec(entry, spec: Optional[GenerationSpec], image_size=None) -> GenerationSpec:
    """A spec (or a dict of its fields, or None) resolved for a model entry: defaults, size from the aspect, a seed."""
    spec = spec if spec is not None else GenerationSpec()
    if isinstance(spec, dict):
        spec = GenerationSpec.build(**spec)
    return spec.resolve(entry, image_size)


def prepare_inputs(entry, image, spec: Optional[GenerationSpec], end_image=None, source: Optional[str] = None,
                   end_source=None, family=None, audio: bool = False) -> tuple[Any, GenerationSpec, dict, list]:
    """Steps 1-3 of a run, for `Engine.generate` and batch's loader thread (no engine lock needed):
    open and check the image (and the end image or keyframes), resolve the spec for `entry`, fit the
    images to its size -> (prepared image, resolved spec, what the sidecar's "input" records,
    prepared end images: [] without `end_image`). `audio`: a soundtrack to follow is given (the family checks it)."""
    from .. import images

    # 1. Load and check the image(s)
    pil, input_info = images.open_input(image, source)
    ends: list = []  # the end image, or the keyframes after the first (keyframes.py)
    if end_image is not None:
        from .keyframes import load_end_images

        ends, end_info = load_end_images(end_image, end_source)
        input_info["end_image" if len(ends) == 1 else "keyframes"] = end_info

    # 2. Resolve the spec: model defaults, size from the aspect, a seed; refuse what the model's family cannot honour
    spec = resolve_spec(entry, spec, pil.size)
    (family or family_for(entry)).check(spec, entry, end_image=bool(ends), audio=audio)

    # 3. Fit the image(s) to the target size
    prepared = images.prepare(pil, spec.width, spec.height, spec.resize)
    if ends:
        from .keyframes import check_spec

        check_spec(spec, isinstance(end_image, (list, tuple)))
        ends = [images.prepare(e, spec.width, spec.height, spec.resize) for e in ends]
    return prepared, spec, input_info, ends
