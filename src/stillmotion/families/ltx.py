"""LTX (Lightricks): LTX-2, video with its own soundtrack (diffusers' LTX2ImageToVideoPipeline), and LTX-Video
0.9.x, video alone (LTXImageToVideoPipeline). Two families in one module: their rules and their decode are the same
up to the sound.

Rules: 8k+1 frames (the VAE compresses time 8x and the pipelines truncate any other count in silence: we refuse it,
naming the nearest counts); sizes in multiples of 32 (the VAE's 32x). A prompt, a negative prompt and one guidance
scale; LTX-2's other guidance terms (spatio-temporal guidance, modality isolation, the rescale and the soundtrack's
own CFG) are spec fields of their own; what no flag sets is the pipeline's own default. The fps is the pipeline's
`frame_rate`: LTX conditions its positions on it, and LTX-2 makes as many seconds of sound as frames / fps.

An end image is LTX's own keyframe conditioning: LTX-2's LTX2ConditionPipeline with the image at latent index 0
and the end image at the last latent index (-1), LTX-Video's LTXConditionPipeline with the end image at the last
frame index. Both are built once from the loaded pipeline's components (no second copy of the weights).

A soundtrack given to follow (`--audio FILE`, LTX-2 only) is held clean in the transformer's audio stream while the
video denoises, LTX2DFRPipeline's freeze_audio on these pipelines: families/ltx_audio.py.

`--speed fast` is diffusers' First Block Cache (families/caching.py) on the transformer; LTX-2's audio-video block
is registered for it there (a cached pass reuses the video and the audio residuals). FAST_THRESHOLD: see below. On a
model with a fast preset (registry.FastPreset: `ltx-2`) it is also the distilled preset: the repo's distilled LoRA on
the dev weights for the run (Lightricks made it as the difference between the dev and the distilled checkpoints) and
the distilled checkpoint's 8 sigmas at CFG 1 (the preset's defaults, which spec.resolve takes under --speed fast).

Decoding is the end of the pipelines' __call__, run here so the engine can time it and report it: the video VAE
(with its decode timestep where the VAE is timestep-conditioned), and for LTX-2 the audio VAE (latents to a mel
spectrogram) and the vocoder (mel to a stereo waveform at its `output_sampling_rate`).
"""

from __future__ import annotations

import contextlib
import inspect
from dataclasses import dataclass
from typing import Any, Optional

from .base import Family, pipeline_kwargs, to_uint8
from .caching import FirstBlockCache
from .wan import FAST_THRESHOLD as WAN_FAST_THRESHOLD

# First Block Cache threshold for --speed fast on LTX: Wan's (families/wan.py). bench/bench_ltx.py on a mid-size random
# LTX-2 (4 heads x 32, 8 blocks, 192x192, 25 frames, 20 steps at the pipeline's guidance: three caches a step, for the
# CFG batch, STG and modality isolation) measured it: 47 of 60 passes cached, 2.75x fewer FLOPs, 2.35x CPU time, PSNR
# 43 dB against exact (another seed: 19.5 dB), the sound's SNR 67 dB (tiny_ltx v2 audio VAE); 0.1 gave 1.95x FLOPs at 49 dB, 0.2 3.1x at
# 39 dB (bench/results/ltx-cpu-20261202.json). Random weights: a trained LTX-2's residuals move differently.
FAST_THRESHOLD = WAN_FAST_THRESHOLD
LORA_ADAPTER = "distilled"  # the fast preset's adapter name on the pipeline
# the pipelines' own decode_timestep default (a spec's decode_timestep None): the VAE decodes clean latents
DECODE_TIMESTEP = 0.0


@dataclass
class LTXLatents:
    """What `run` hands `decode`: the video latents, LTX-2's audio latents, and the run's generator (the decode
    noise of a timestep-conditioned VAE is drawn from it after the steps, as the pipeline draws it)."""

    video: Any
    audio: Any
    generator: Any


class _LTXBase(Family):
    speeds = frozenset({"exact", "fast"})
    end_image = True
    pipeline_class: str  # diffusers' image-to-video pipeline
    condition_class: str  # the pipeline that conditions on frames at any index (an end image)

    def size_multiple(self, entry) -> int:
        return entry.defaults.size_multiple or 32

    def frames_rule(self, n: int) -> Optional[str]:
        if (n - 1) % 8 == 0:
            return None
        lo, hi = (n - 1) // 8 * 8 + 1, ((n - 1) // 8 + 1) * 8 + 1
        return f"LTX makes 8k+1 frames: use {lo} or {hi}" if lo > 1 else f"LTX makes 8k+1 frames: use {hi}"

    def folder_defaults(self, folder):
        """A folder runs with the pipeline's own __call__ defaults for every knob no flag sets (size, frames, fps,
        steps, guidance and the other guidance terms), named in the spec so the sidecar and the UI show them."""
        import diffusers

        from ..models.registry import ltx_defaults

        d = {k: p.default for k, p in inspect.signature(getattr(diffusers, self.pipeline_class).__call__)
             .parameters.items()}
        w, h = d["width"], d["height"]
        side = int((w * h) ** 0.5 // 32 * 32)
        guidance = {k: d[k] for k in ("guidance_scale", "guidance_rescale", "stg_scale", "modality_scale",
                                      "audio_guidance_scale") if k in d and self.takes(k)}
        return ltx_defaults(num_frames=d["num_frames"] or 121, num_inference_steps=d["num_inference_steps"],
                            fps=int(d["frame_rate"]), landscape=(w, h), portrait=(h, w), square=(side, side),
                            size_multiple=None, **guidance)

    def load(self, path, variant, dtype):
        import diffusers

        from ..models.ltx_files import is_assembled, load_components

        cls = getattr(diffusers, self.pipeline_class)
        if is_assembled(path):  # an LTX-2 checkpoint as ComfyUI keeps it (models/ltx_files.py): converted as it loads
            return cls(**load_components(path, dtype))
        return cls.from_pretrained(path, torch_dtype=dtype, variant=variant, use_safetensors=True)

    def condition_pipeline(self, pipe):
        """The keyframe pipeline on the same components (built once per loaded pipeline, sharing its modules)."""
        cond = getattr(pipe, "_stillmotion_condition", None)
        if cond is None:
            import diffusers

            cls = getattr(diffusers, self.condition_class)
            names = set(inspect.signature(cls.__init__).parameters)
            cond = cls(**{k: v for k, v in pipe.components.items() if k in names})
            cond.set_progress_bar_config(disable=True)
            pipe._stillmotion_condition = cond
        return cond

    def bind(self, pipe, entry) -> None:
        """The entry rides with the pipeline for its fast preset (registry.FastPreset; None: the cache alone)."""
        pipe._stillmotion_fast_entry = entry if entry.fast is not None else None

    def speed_cache(self, spec, pipe):
        if spec.speed != "fast":
            return None
        cache = FirstBlockCache([pipe.transformer], FAST_THRESHOLD)
        entry = getattr(pipe, "_stillmotion_fast_entry", None)
        return cache if entry is None else DistilledPreset(pipe, entry, cache)

    def describe_run(self, spec, end_image):
        return {"method": f"{self.condition_class} (LTX's own keyframe conditioning: the image first, the end image "
                          f"at the last frame)"}

    def guidance(self, spec) -> dict:
        """The guidance keywords a spec sets (None: the pipeline's own default)."""
        return pipeline_kwargs(negative_prompt=spec.negative_prompt, guidance_scale=spec.guidance_scale,
                               guidance_rescale=spec.guidance_rescale)

    def run(self, pipe, image, spec, *, generator, on_step_end, end_image=None, cache=None, audio=None):
        """The pipeline (or, with an end image, its condition pipeline) to latents; --speed fast's cache on for this
        call only, off again when it returns or raises. `audio` (LTX-2, video.audio.Audio): a soundtrack the video
        follows, held clean in the transformer's audio stream (families/ltx_audio.py); the model's own sound is then
        not decoded (the engine writes the given one)."""
        if (spec.decode_timestep or spec.decode_noise_scale) and not pipe.vae.config.timestep_conditioning:
            from ..errors import InvalidInput

            raise InvalidInput("--decode-timestep / --decode-noise-scale: this model's VAE is not "
                               "timestep-conditioned, so they would change nothing: leave them out.")
        follow, frozen = {}, contextlib.nullcontext()
        if audio is not None:
            from .ltx_audio import clean_tokens, encode_soundtrack, frozen_audio

            latents = encode_soundtrack(pipe, audio, spec.num_frames, spec.fps)
            follow, frozen = {"audio_latents": latents}, frozen_audio(pipe.transformer, clean_tokens(pipe, latents))
        with self.cache_on(spec, pipe, cache), frozen:
            common = dict(prompt=spec.prompt or "", height=spec.height, width=spec.width, num_frames=spec.num_frames,
                          frame_rate=spec.fps, num_inference_steps=spec.num_inference_steps, generator=generator,
                          output_type="latent", callback_on_step_end=on_step_end, **self.guidance(spec), **follow)
            if end_image is None:
                out = pipe(image=image, **common)
            else:
                out = self.condition_pipeline(pipe)(**self.end_conditions(image, end_image, spec), **common)
            return LTXLatents(out.frames, None if audio is not None else getattr(out, "audio", None), generator)

    def end_conditions(self, image, end_image, spec) -> dict:
        raise NotImplementedError

    def decode_video(self, pipe, video, generator, dtype, spec, *, noise_first: bool):
        """The video VAE's decode of normalised, unpacked latents as the pipelines end -> [0, 1] frames (T, H, W, 3).
        A timestep-conditioned VAE gets the spec's decode timestep (DECODE_TIMESTEP when None) and noise mixed in at
        the decode noise scale (None: the timestep), drawn from the run's generator after the steps: LTX-2 mixes it
        into the normalised latents (`noise_first`), LTX-Video into the denormalised ones cast to the text encoder's
        dtype."""
        import torch
        from diffusers.utils.torch_utils import randn_tensor

        vae = pipe.vae

        def denormalise(x):
            return pipe._denormalize_latents(x, vae.latents_mean, vae.latents_std, vae.config.scaling_factor)

        video = video.to(dtype) if noise_first else denormalise(video).to(dtype)
        timestep = None
        if vae.config.timestep_conditioning:
            noise = randn_tensor(video.shape, generator=generator, device=video.device, dtype=video.dtype)
            t = DECODE_TIMESTEP if spec.decode_timestep is None else spec.decode_timestep
            noise_scale = t if spec.decode_noise_scale is None else spec.decode_noise_scale
            timestep = torch.tensor([t], device=video.device, dtype=video.dtype)
            scale = torch.tensor([noise_scale], device=video.device, dtype=video.dtype)[:, None, None, None, None]
            video = (1 - scale) * video + scale * noise
        if noise_first:
            video = denormalise(video)
        video = vae.decode(video.to(vae.dtype), timestep, return_dict=False)[0]
        return pipe.video_processor.postprocess_video(video, output_type="np")[0]

    def report_decoded(self, spec, report, span) -> None:
        from ..engine.types import Progress

        report(Progress("decode", spec.num_frames, spec.num_frames, span[1], f"decoded {spec.num_frames} frames"))


class LTX2Family(_LTXBase):
    """LTX-2 (19B audio-video DiT, Gemma-3 text encoder): frames and a stereo soundtrack from one run."""

    name = "ltx2"
    sound = True  # its decode makes a stereo soundtrack (the vocoder's waveform)
    audio_input = True  # --audio FILE: the video follows a given soundtrack (families/ltx_audio.py)
    label = "LTX-2"
    article = "an"
    pipeline_class = "LTX2ImageToVideoPipeline"
    condition_class = "LTX2ConditionPipeline"
    plans_memory = True  # engine/dit_plan.py on engine/ltx2_shape.py: Gemma encoded first and freed, fp8, group offload

    def plan_layout(self):
        from ..engine.ltx2_shape import LTX2

        return LTX2

    def plan_shape(self, entry, dtype_name, attention):
        from ..engine.ltx2_shape import ltx2_shape

        return ltx2_shape(entry, dtype_name or "bf16")

    def guidance(self, spec) -> dict:
        """STG, modality isolation and the rescale act on picture and sound alike: the pipeline's audio_* twins get the
        same value (their defaults are the same; a distilled preset must turn both off to save the passes). The
        sound's CFG has its own field (its default, 7, is not the picture's)."""
        return super().guidance(spec) | pipeline_kwargs(
            stg_scale=spec.stg_scale, audio_stg_scale=spec.stg_scale, modality_scale=spec.modality_scale,
            audio_modality_scale=spec.modality_scale, audio_guidance_rescale=spec.guidance_rescale,
            audio_guidance_scale=spec.audio_guidance_scale,
            sigmas=list(distilled_sigmas()) if spec.sigma_schedule == "distilled" else None)

    def check(self, spec, entry, *, end_image: bool = False, audio: bool = False) -> None:
        """Also: the distilled schedule (given, or the entry's default: refused before loading) is its 8 steps."""
        super().check(spec, entry, end_image=end_image, audio=audio)
        steps = len(distilled_sigmas())
        schedule = (spec.sigma_schedule if spec.sigma_schedule is not None
                    else entry.defaults_for(spec.speed).sigma_schedule)
        if schedule == "distilled" and spec.num_inference_steps not in (None, steps):
            from .base import refusal

            raise refusal("num_inference_steps", f"--steps {spec.num_inference_steps}: the distilled schedule is "
                                                 f"{steps} steps: use --steps {steps}, or --schedule default.")

    def end_conditions(self, image, end_image, spec) -> dict:
        from diffusers.pipelines.ltx2.pipeline_ltx2_condition import LTX2VideoCondition

        return {"conditions": [LTX2VideoCondition(frames=image, index=0),
                               LTX2VideoCondition(frames=end_image, index=-1)]}

    def decode(self, pipe, latents, spec, chunk, report, cancel, span):
        """LTX-2's latents come back denormalised (output_type="latent"); the video as the pipeline decodes it, the
        audio latents through the audio VAE to a mel spectrogram and the vocoder to a waveform."""
        import torch

        from ..video.audio import Audio

        vae = pipe.vae
        with torch.inference_mode():
            video = pipe._normalize_latents(latents.video, vae.latents_mean, vae.latents_std, vae.config.scaling_factor)
            frames = self.decode_video(pipe, video, latents.generator, pipe.text_encoder.dtype, spec, noise_first=True)
            if cancel():
                from ..errors import Cancelled

                raise Cancelled()
            if latents.audio is None:  # it followed a given soundtrack: the engine writes that one
                self.report_decoded(spec, report, span)
                return to_uint8(frames)
            mel = pipe.audio_vae.decode(latents.audio.to(pipe.audio_vae.dtype), return_dict=False)[0]
            wave = pipe.vocoder(mel)
        self.report_decoded(spec, report, span)
        audio = Audio(wave[0].float().cpu().numpy(), int(pipe.vocoder.config.output_sampling_rate))
        return to_uint8(frames), audio


class LTXFamily(_LTXBase):
    """LTX-Video 0.9.x (2B and 13B DiTs, T5 text encoder): video alone."""

    name = "ltx"
    label = "LTX-Video"
    pipeline_class = "LTXImageToVideoPipeline"
    condition_class = "LTXConditionPipeline"
    plans_memory = True  # engine/dit_plan.py on engine/ltx_shape.py: T5 encoded first and freed, group offload

    def plan_layout(self):
        from ..engine.ltx_shape import LTX

        return LTX

    def plan_shape(self, entry, dtype_name, attention):
        from ..engine.ltx_shape import ltx_shape

        return ltx_shape(entry, dtype_name or "bf16")

    def end_conditions(self, image, end_image, spec) -> dict:
        from diffusers.pipelines.ltx.pipeline_ltx_condition import LTXVideoCondition

        return {"conditions": [LTXVideoCondition(image=image, frame_index=0),
                               LTXVideoCondition(image=end_image, frame_index=spec.num_frames - 1)]}

    def decode(self, pipe, latents, spec, chunk, report, cancel, span):
        """LTX-Video's latents come back normalised; LTXImageToVideoPipeline's packed (batch, tokens, channels),
        LTXConditionPipeline's already unpacked."""
        import torch

        with torch.inference_mode():
            video = latents.video
            if video.ndim == 3:
                t = pipe.vae_temporal_compression_ratio
                s = pipe.vae_spatial_compression_ratio
                video = pipe._unpack_latents(video, (spec.num_frames - 1) // t + 1, spec.height // s, spec.width // s,
                                             pipe.transformer_spatial_patch_size, pipe.transformer_temporal_patch_size)
            frames = self.decode_video(pipe, video, latents.generator, pipe.text_encoder.dtype, spec, noise_first=False)
        self.report_decoded(spec, report, span)
        return to_uint8(frames)


class DistilledPreset:
    """--speed fast with a model's fast preset: its distilled LoRA on the transformer for the run, plus the First Block
    Cache, with the engine's cache protocol (attach, detach, stats). The LoRA is loaded once (diffusers'
    load_lora_weights, which converts Lightricks' layout) and kept with the pipeline; detach disables it, so the next
    exact run is the dev weights exactly. The file is found on first use (models.resolve.fast_lora: a built-in
    model's folder, or the model's hub repo, fetched into the cache)."""

    def __init__(self, pipe, entry, cache: FirstBlockCache):
        self.pipe, self.entry, self.cache = pipe, entry, cache
        self.on = False

    def attach(self) -> None:
        if self.on:
            return
        pipe = self.pipe
        if LORA_ADAPTER not in pipe.get_list_adapters().get("transformer", ()):  # loaded once, then kept
            from ..models.resolve import fast_lora

            pipe.load_lora_weights(str(fast_lora(self.entry)), adapter_name=LORA_ADAPTER)
        pipe.enable_lora()
        pipe.set_adapters([LORA_ADAPTER], [1.0])
        self.on = True
        self.cache.attach()

    def detach(self) -> None:
        self.cache.detach()
        if self.on:
            self.pipe.disable_lora()
            self.on = False

    def stats(self) -> dict:
        return {"preset": "distilled", "lora": self.entry.fast.lora, **self.cache.stats()}


def distilled_sigmas() -> tuple:
    """The noise levels LTX-2's distilled checkpoint was trained on (diffusers' DISTILLED_SIGMA_VALUES)."""
    from diffusers.pipelines.ltx2.utils import DISTILLED_SIGMA_VALUES

    return tuple(DISTILLED_SIGMA_VALUES)
