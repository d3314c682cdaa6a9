"""Engine: load a model once, run GenerationSpecs on it.

The denoising loop is diffusers' own StableVideoDiffusionPipeline.__call__
(so the default path is SVD, frame for frame); stillmotion adds around it:
device and dtype choice, progress and cancel through the step callback, noise
from a CPU generator, chunked decoding with progress, out-of-memory handling,
post-processing and the record that goes into every sidecar.
"""

from __future__ import annotations

import logging
import platform
import threading
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Optional

import numpy as np

from ..errors import Cancelled, InvalidInput, ModelUnavailable, OutOfMemory, StillmotionError, is_out_of_memory
from ..spec import GenerationSpec

log = logging.getLogger("stillmotion.engine")

OFFLOAD_MODES = ("none", "model", "sequential")


@dataclass
class Progress:
    """One progress report. `fraction` is the whole run's progress, 0..1."""

    stage: str  # "encode" | "denoise" | "decode" | "postprocess" | "segment"
    step: int
    total: int
    fraction: float
    message: str = ""


ProgressFn = Callable[[Progress], None]
CancelFn = Callable[[], bool]


@dataclass
class GenerationResult:
    frames: np.ndarray  # uint8 (T, H, W, 3) RGB
    fps: float  # playback rate of the file
    spec: GenerationSpec  # resolved: every field concrete, the seed drawn
    metadata: dict = field(default_factory=dict)

    @property
    def seed(self) -> int:
        return self.spec.seed

    @property
    def timings(self) -> dict:
        return self.metadata.get("timings", {})

    def save(self, out, format: Optional[str] = None, sidecar: bool = True):
        """Write the video (atomically) and its sidecar JSON; returns a video.Artifact."""
        from ..video import format_from_path, write

        t = time.perf_counter()
        fmt = format or format_from_path(out) or self.spec.format
        artifact = write(self.frames, out, fps=self.fps, format=fmt, metadata=self.metadata, sidecar=sidecar)
        self.metadata.setdefault("timings", {})["write"] = round(time.perf_counter() - t, 4)
        return artifact


def pick_device(device: Optional[str] = None) -> str:
    import torch

    if device and device != "auto":
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise InvalidInput(f"--device {device}: no CUDA GPU is visible to PyTorch; use --device cpu or auto.")
        if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise InvalidInput("--device mps: MPS is not available on this machine; use --device cpu or auto.")
        if device not in ("cpu", "mps") and not device.startswith("cuda"):
            raise InvalidInput(f"--device {device!r}: use auto, cpu, cuda, cuda:N or mps.")
        return device
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


class Engine:
    """Loads a model once; `generate()` runs one spec on it. One generation at a time."""

    def __init__(
        self,
        model: str = "svd-xt",
        *,
        device: Optional[str] = None,
        dtype: Optional[str] = None,
        offload: str = "none",
        forward_chunking: bool = False,
        decode_chunk_size: Optional[int] = None,
        download: bool = True,
        progress: bool = True,
        memory: str = "auto",
        max_memory=None,
        compile: bool = False,
    ):
        import torch

        from .memory import parse_size

        from ..models.checkpoints import resolve

        if offload not in OFFLOAD_MODES:
            raise InvalidInput(f"offload must be one of {', '.join(OFFLOAD_MODES)}, got {offload!r}")
        self.device = pick_device(device)
        if dtype is None:
            self.dtype = torch.float32 if self.device == "cpu" else torch.float16
        else:
            try:
                self.dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[dtype]
            except KeyError:
                raise InvalidInput(f"dtype must be fp16, bf16 or fp32, got {dtype!r}") from None
        self.offload = offload
        self.forward_chunking = forward_chunking
        self.decode_chunk_size = decode_chunk_size
        if memory not in ("auto", "none"):
            raise InvalidInput(f"memory must be auto or none, got {memory!r}")
        self.memory = memory
        self.max_memory = parse_size(max_memory) if max_memory is not None else None
        self.compile = compile
        # tests: a callable(stage, n) that may raise, called before each denoising step
        # (n = step) and each decoded chunk (n = chunk size); env STILLMOTION_INJECT_OOM="decode:2"
        # raises a torch out-of-memory error while decoding chunks larger than 2.
        self._fault_hook: Optional[Callable[[str, int], None]] = _env_fault_hook()
        self._active = None  # the memory Plan the pipeline is set up for
        self._shape = None  # profile.ModelShape, built on first use
        self._compiled_shapes: set = set()
        self._lock = threading.Lock()
        self.timings: dict[str, float] = {}

        t0 = time.perf_counter()
        self.local = resolve(model, download=download, progress=progress)
        self.entry = self.local.entry
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
        from diffusers import StableVideoDiffusionPipeline
        from diffusers.utils import logging as dlogging

        dlogging.disable_progress_bar()
        try:
            with warnings.catch_warnings():
                # diffusers >= 0.36 renames torch_dtype to dtype; the old name works on every version
                warnings.filterwarnings("ignore", message=".*torch_dtype.*", category=FutureWarning)
                pipe = StableVideoDiffusionPipeline.from_pretrained(
                    self.local.path,
                    variant=self.local.variant,
                    torch_dtype=self.dtype,
                    use_safetensors=True,
                )
        except (OSError, ValueError, RuntimeError) as e:
            if is_out_of_memory(e):
                raise OutOfMemory(f"Out of memory while loading {self.entry.name}: {_first_line(e)}") from None
            raise ModelUnavailable(
                f"Could not load model from {self.local.path}: {_first_line(e)}; run `stillmotion models verify {self.entry.name}`."
            ) from None
        pipe.set_progress_bar_config(disable=True)
        if self.local.lora is not None:  # a `stillmotion train --lora` folder: merge its adapters into the UNet
            from ..train.lora import apply_lora

            apply_lora(pipe, self.local.lora)
        from .memory import Plan
        from .speed import apply_exact, compile_pipe

        self.pipe = pipe
        self._apply_plan(Plan(self.decode_chunk_size or 1, self.forward_chunking, self.offload))
        self.speed_settings = apply_exact(pipe, self.device, self.dtype)
        if self.compile:
            self.speed_settings["compile"] = compile_pipe(pipe)
        return pipe

    def _apply_plan(self, plan) -> None:
        """Set the pipeline up for a memory plan: forward chunking and where the weights live."""
        from .profile import set_forward_chunking

        pipe = self.pipe
        offload = plan.offload if self.device != "cpu" else "none"
        active = self._active
        if active is None or active.forward_chunking != plan.forward_chunking:
            set_forward_chunking(pipe.unet, plan.forward_chunking)
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

    def _plan(self, spec: GenerationSpec) -> tuple[Any, dict]:
        """The memory plan for this run, and what to record about it.

        --memory none: the engine's settings as given. --memory auto: the fastest plan whose
        estimate fits the device's free memory (or --max-memory); on a CPU with no --max-memory
        there is no limit to plan for, so it runs the fastest plan.
        """
        from . import memory

        frames = spec.num_frames
        chunk = spec.decode_chunk_size or self.decode_chunk_size
        given = memory.Plan(min(chunk or frames, frames), self.forward_chunking, self.offload)
        budget = self.max_memory if self.max_memory is not None else None
        if self.memory == "none" or (budget is None and self.device == "cpu"):
            why = "--memory none" if self.memory == "none" else "CPU with no --max-memory: nothing to plan for"
            return given, {"mode": self.memory, "plan": given.to_dict(), "label": given.label(), "planned": False, "why": why}
        if budget is None:
            budget = memory.device_budget(self.device)
        if budget is None:  # e.g. MPS: no reliable free-memory figure
            return given, {"mode": "auto", "plan": given.to_dict(), "label": given.label(), "planned": False,
                           "why": f"no free-memory figure on {self.device}; use --max-memory"}
        if self._shape is None:
            from .profile import model_shape_from_modules

            self._shape = model_shape_from_modules(self.pipe.unet, self.pipe.vae, self.pipe.image_encoder,
                                                   self.dtype, self.entry.name)
        cfg = spec.max_guidance_scale > 1
        est, _tried = memory.choose_plan(
            self._shape, frames, spec.height, spec.width, budget, device=self.device, cfg=cfg,
            user_chunk=chunk, user_offload=self.offload, user_forward_chunking=self.forward_chunking,
        )
        rec = {"mode": "auto", "plan": est.plan.to_dict(), "label": est.plan.label(), "planned": True,
               "estimate_bytes": est.peak_bytes, "budget_bytes": budget, "fits": est.fits}
        if est.fits:
            log.info("memory plan: %s (estimated peak %s of %s)", est.plan.label(),
                     memory.fmt_bytes(est.peak_bytes), memory.fmt_bytes(budget))
        else:
            log.warning("no plan fits %s (leanest needs about %s); trying %s anyway", memory.fmt_bytes(budget),
                        memory.fmt_bytes(est.peak_bytes), est.plan.label())
        return est.plan, rec

    def _fault(self, stage: str, n: int) -> None:
        if self._fault_hook is not None:
            self._fault_hook(stage, n)

    @property
    def model_name(self) -> str:
        return self.entry.name

    def describe(self) -> dict:
        return {
            "model": self.local.describe(),
            "device": self.device,
            "dtype": str(self.dtype).replace("torch.", ""),
            "offload": self.offload,
            "forward_chunking": self.forward_chunking,
            "memory_mode": self.memory,
            "max_memory_bytes": self.max_memory,
            "speed_settings": dict(getattr(self, "speed_settings", {})),
        }

    # ------------------------------------------------------------------
    def resolve_spec(self, spec: Optional[GenerationSpec], image_size=None) -> GenerationSpec:
        spec = spec if spec is not None else GenerationSpec()
        if isinstance(spec, dict):
            spec = GenerationSpec.build(**spec)
        return spec.resolve(self.entry, image_size)

    def generate(
        self,
        image,
        spec: Optional[GenerationSpec] = None,
        *,
        on_progress: Optional[ProgressFn] = None,
        should_cancel: Optional[CancelFn] = None,
        source: Optional[str] = None,
    ) -> GenerationResult:
        """Image (path, URL, bytes or PIL image) -> GenerationResult. Raises StillmotionError subclasses.

        `source` names where bytes came from (a path or URL) for the sidecar.
        """
        from PIL import Image

        from .. import images

        with self._lock:
            t0 = time.perf_counter()
            timings: dict[str, Any] = {}
            # 1. Load and check the image
            input_info: dict[str, Any] = {}
            if isinstance(image, Image.Image):
                pil = image.convert("RGB")
            else:
                data, where = images.read_source_bytes(image)
                pil = images.load_image(data)
                input_info = {"source": source or where, "sha256": images.sha256_of(data)}
            input_info["size"] = list(pil.size)

            # 2. Resolve the spec: model defaults, size from the aspect, a seed
            spec = self.resolve_spec(spec, pil.size)

            # 3. Fit the image to the target size
            prepared = images.prepare(pil, spec.width, spec.height, spec.resize)
            timings["prepare"] = round(time.perf_counter() - t0, 4)

            report = on_progress or (lambda p: None)
            cancel = should_cancel or (lambda: False)
            record: dict[str, Any] = {"fallbacks": []}

            # 4. Sample (one segment, or chained segments for long videos)
            if spec.duration is not None or spec.segments is not None:
                from .long import generate_long

                frames, fps, extra = generate_long(self, prepared, spec, report, cancel, timings)
                record.update(extra)
            else:
                frames = self.sample(prepared, spec, report, cancel, timings, record)
                fps = float(spec.fps)

            # 5. Post-process: interpolation and loops multiply/shape playback, never the conditioning
            if spec.interpolate > 1 or spec.interpolate_fps is not None or spec.loop != "none":
                from ..video.postprocess import apply as postprocess

                t = time.perf_counter()
                report(Progress("postprocess", 0, 1, 0.99, "post-processing"))
                frames, fps, post = postprocess(frames, fps, spec, should_cancel=cancel)
                record["postprocess"] = post
                timings["postprocess"] = round(time.perf_counter() - t, 4)

            timings["total"] = round(time.perf_counter() - t0, 4)
            timings["load"] = self.timings.get("load")
            metadata = self._metadata(spec, input_info, timings, record)
            return GenerationResult(frames=frames, fps=fps, spec=spec, metadata=metadata)

    # ------------------------------------------------------------------
    def sample(self, image, spec: GenerationSpec, report: ProgressFn, cancel: CancelFn, timings: dict, record: dict,
               progress_span: tuple[float, float] = (0.0, 0.98)) -> np.ndarray:
        """One SVD run on a prepared PIL image -> uint8 frames (T, H, W, 3).

        Runs under a memory plan (see memory.py); an out-of-memory error steps the plan down
        (smaller decode chunk, forward chunking, model offload, sequential offload) and retries
        the stage that failed, recording each step in record["fallbacks"].
        """
        lo, hi = progress_span
        denoise_share = 0.85  # decoding is weighted like a few denoising steps in the progress bar
        if cancel():
            raise Cancelled()

        # 1. Plan memory
        t = time.perf_counter()
        plan, memrec = self._plan(spec)
        timings["plan"] = round(time.perf_counter() - t, 4)
        record["memory"] = memrec
        report(Progress("encode", 0, spec.num_inference_steps, lo, f"memory plan: {plan.label()}"))

        # 2. Denoise (the whole stage is retried after an out-of-memory)
        while True:
            self._apply_plan(plan)
            try:
                latents = self._denoise(image, spec, report, cancel, timings, record, (lo, hi), denoise_share)
                break
            except StillmotionError:
                raise
            except Exception as e:  # noqa: BLE001 - converted at the boundary
                if not is_out_of_memory(e):
                    raise
                plan = self._step_down(plan, "denoising", spec, e, record)

        # 3. Decode (only decoding is retried)
        t = time.perf_counter()
        while True:
            record["decode_chunk_size"] = plan.decode_chunk_size
            try:
                video = self.decode(latents, spec.num_frames, plan.decode_chunk_size, report, cancel,
                                    (lo + (hi - lo) * denoise_share, hi))
                break
            except StillmotionError:
                raise
            except Exception as e:  # noqa: BLE001
                if not is_out_of_memory(e):
                    raise
                plan = self._step_down(plan, "decoding", spec, e, record)
                self._apply_plan(plan)
        timings["decode"] = round(time.perf_counter() - t, 4)
        if record["fallbacks"]:
            record["memory"]["final_plan"] = plan.to_dict()
        return video

    def _step_down(self, plan, stage: str, spec: GenerationSpec, error: BaseException, record: dict):
        """The next plan after an out-of-memory in `stage`, recorded; raises OutOfMemory when none is left."""
        from .memory import next_plan_down

        self._free()
        nxt = None if self.memory == "none" else next_plan_down(plan, spec.num_frames, self.device, stage)
        if nxt is None:
            raise self._oom(stage, spec) from None
        step = {"stage": stage, "error": _first_line(error)[:200], "from": plan.label(), "to": nxt.label(),
                "plan": nxt.to_dict()}
        record["fallbacks"].append(step)
        log.warning("out of memory while %s with %s; retrying with %s", stage, plan.label(), nxt.label())
        return nxt

    def _denoise(self, image, spec: GenerationSpec, report: ProgressFn, cancel: CancelFn, timings: dict,
                 record: dict, span: tuple[float, float], denoise_share: float):
        """diffusers' denoising loop (output_type="latent") with progress, cancel, timings and the speed mode."""
        import torch

        from .speed import deepcache_for

        pipe = self.pipe
        lo, hi = span
        steps = spec.num_inference_steps
        step_times: list[float] = []
        last = [time.perf_counter()]

        def on_step_end(_pipe, i, _t, kwargs):
            now = time.perf_counter()
            step_times.append(now - last[0])
            last[0] = now
            report(Progress("denoise", i + 1, steps, lo + (hi - lo) * denoise_share * (i + 1) / steps, f"step {i + 1}/{steps}"))
            if cancel():
                raise Cancelled()
            if i + 1 < steps:
                self._fault("denoise", i + 1)
            return kwargs

        generator = torch.Generator("cpu").manual_seed(spec.seed)
        encode_time = [0.0]
        orig_encode = pipe._encode_image

        def timed_encode(*a, **k):
            t = time.perf_counter()
            try:
                return orig_encode(*a, **k)
            finally:
                encode_time[0] += time.perf_counter() - t

        report(Progress("encode", 0, steps, lo, "encoding the image"))
        cache = deepcache_for(spec, pipe.unet)
        t = time.perf_counter()
        pipe._encode_image = timed_encode
        try:
            self._fault("denoise", 0)
            with torch.inference_mode():
                if cache is not None:
                    cache.attach()
                last[0] = time.perf_counter()
                latents = pipe(
                    image,
                    height=spec.height,
                    width=spec.width,
                    num_frames=spec.num_frames,
                    num_inference_steps=steps,
                    min_guidance_scale=spec.min_guidance_scale,
                    max_guidance_scale=spec.max_guidance_scale,
                    fps=spec.fps,
                    motion_bucket_id=spec.motion_bucket_id,
                    noise_aug_strength=spec.noise_aug_strength,
                    generator=generator,
                    output_type="latent",
                    callback_on_step_end=on_step_end,
                ).frames
        finally:
            if cache is not None:
                cache.detach()
            del pipe._encode_image
        timings["encode"] = round(encode_time[0], 4)
        timings["denoise"] = round(time.perf_counter() - t - encode_time[0], 4)
        timings["step_seconds"] = [round(s, 4) for s in step_times]
        if cache is not None:
            record["speed"] = {"mode": "fast", **cache.stats()}
        else:
            record["speed"] = {"mode": "exact"}
        key = (spec.num_frames, spec.height, spec.width, spec.speed)
        if self.compile and key not in self._compiled_shapes and len(step_times) > 1:
            # the first call of a new shape compiles: its extra time over a typical step
            rest = sorted(step_times[1:])
            timings["compile"] = round(max(0.0, step_times[0] - rest[len(rest) // 2]), 4)
            self._compiled_shapes.add(key)
        return latents

    def decode(self, latents, num_frames: int, chunk: int, report: ProgressFn, cancel: CancelFn,
               span: tuple[float, float]) -> np.ndarray:
        """diffusers' decode_latents, chunk by chunk with progress and cancel; then to uint8."""
        import torch

        pipe = self.pipe
        vae = pipe.vae
        latents = latents.to(vae.dtype).flatten(0, 1)
        latents = 1 / vae.config.scaling_factor * latents
        n = latents.shape[0]
        out = []
        with torch.inference_mode():
            for i in range(0, n, chunk):
                if cancel():
                    raise Cancelled()
                part = latents[i : i + chunk]
                self._fault("decode", part.shape[0])
                out.append(vae.decode(part, num_frames=part.shape[0]).sample)
                done = min(n, i + chunk)
                report(Progress("decode", done, n, span[0] + (span[1] - span[0]) * done / n, f"decoded {done}/{n} frames"))
            frames = torch.cat(out, dim=0)
            frames = frames.reshape(-1, num_frames, *frames.shape[1:]).permute(0, 2, 1, 3, 4).float()
            video = pipe.video_processor.postprocess_video(video=frames, output_type="np")[0]
        return np.clip(np.round(np.asarray(video) * 255.0), 0, 255).astype(np.uint8)

    def _oom(self, where: str, spec: GenerationSpec) -> OutOfMemory:
        self._free()
        return OutOfMemory(
            f"Out of memory while {where} {spec.num_frames} frames at {spec.width}x{spec.height} on {self.device}: "
            "try --offload model, a smaller --decode-chunk (e.g. 2), fewer --frames or a smaller size."
        )

    def _free(self) -> None:
        import gc

        import torch

        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _metadata(self, spec: GenerationSpec, input_info: dict, timings: dict, record: dict) -> dict:
        from .. import __version__

        return {
            "stillmotion": __version__,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "spec": spec.model_dump(mode="json"),
            "seed": spec.seed,
            "input": input_info,
            **self.describe(),
            **record,
            "versions": package_versions(),
            "timings": timings,
        }


def _env_fault_hook():
    """STILLMOTION_INJECT_OOM="decode:2": a torch out-of-memory error while decoding chunks larger than 2
    ("denoise:0" fails every denoising step). For tests of the step-down path; unset means no faults."""
    import os

    spec = os.environ.get("STILLMOTION_INJECT_OOM", "").strip()
    if not spec:
        return None
    stage, _, limit = spec.partition(":")
    limit_n = int(limit or 0)

    def hook(where: str, n: int) -> None:
        import torch

        if where == stage and (stage == "denoise" or n > limit_n):
            raise torch.OutOfMemoryError(f"CUDA out of memory (injected by STILLMOTION_INJECT_OOM={spec})")

    return hook


def package_versions() -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for name in ("stillmotion", "torch", "diffusers", "transformers", "av"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__
