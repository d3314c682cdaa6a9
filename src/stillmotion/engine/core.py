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
    ):
        import torch

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
        if self.forward_chunking:
            pipe.unet.enable_forward_chunking()
        if self.offload != "none" and self.device != "cpu":
            if self.offload == "model":
                pipe.enable_model_cpu_offload(device=self.device)
            else:
                pipe.enable_sequential_cpu_offload(device=self.device)
        else:
            pipe.to(self.device)
        return pipe

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
            if spec.interpolate > 1 or spec.loop != "none":
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
        """One SVD run on a prepared PIL image -> uint8 frames (T, H, W, 3)."""
        import torch

        pipe = self.pipe
        lo, hi = progress_span
        steps = spec.num_inference_steps
        # decoding is weighted like a few denoising steps in the progress bar
        denoise_share = 0.85
        step_times: list[float] = []
        last = [time.perf_counter()]

        if cancel():
            raise Cancelled()

        def on_step_end(_pipe, i, _t, kwargs):
            now = time.perf_counter()
            step_times.append(now - last[0])
            last[0] = now
            report(Progress("denoise", i + 1, steps, lo + (hi - lo) * denoise_share * (i + 1) / steps, f"step {i + 1}/{steps}"))
            if cancel():
                raise Cancelled()
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
        t = time.perf_counter()
        pipe._encode_image = timed_encode
        try:
            with torch.inference_mode():
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
        except StillmotionError:
            raise
        except Exception as e:  # noqa: BLE001 - converted at the boundary
            if is_out_of_memory(e):
                raise self._oom("denoising", spec) from None
            raise
        finally:
            del pipe._encode_image
        timings["encode"] = round(encode_time[0], 4)
        timings["denoise"] = round(time.perf_counter() - t - encode_time[0], 4)
        timings["step_seconds"] = [round(s, 4) for s in step_times]

        t = time.perf_counter()
        chunk = spec.decode_chunk_size or self.decode_chunk_size or spec.num_frames
        record["decode_chunk_size"] = chunk
        try:
            video = self.decode(latents, spec.num_frames, chunk, report, cancel,
                                (lo + (hi - lo) * denoise_share, hi))
        except StillmotionError:
            raise
        except Exception as e:  # noqa: BLE001
            if is_out_of_memory(e):
                raise self._oom("decoding", spec) from None
            raise
        timings["decode"] = round(time.perf_counter() - t, 4)
        return video

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
