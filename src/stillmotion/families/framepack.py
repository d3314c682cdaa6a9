"""FramePack (diffusers' HunyuanVideoFramepackPipeline): HunyuanVideo 13B made to predict the next section of a
video from a packed history of the sections before it, so memory stays flat as the video grows.

Length: the pipeline makes whole sections. A section is `latent_window_size` latent frames, 4 frames each; S
sections make 4 x window x S + 1 frames (the first image's latent is part of the video). `--frames N` asks for the
fewest sections that cover N and trims the end; the pipeline's own `num_frames` only picks the section count
(ceil(num_frames / ((window - 1) x 4 + 1))), so we pass S times that window. `--duration`/`--segments` are FramePack's
own sections too (Family.long_frames), not the engine's last-frame chaining. The sidecar's "length" records it all.

Sampling type: inverted anti-drifting (FramePack: sections made from the end back to the start, anchored on the
first image; takes a last image) or vanilla (F1: forward), a property of the trained model, from its registry
entry or its folder's stillmotion.json (Family.bind), never a flag.

Guidance: `guidance_scale` is the distilled guidance the transformer is conditioned on (the app's 10);
`true_cfg_scale` above 1 is real classifier-free guidance with the negative prompt (a second transformer pass each
step; the app's default 1 turns it off, and a negative prompt without it is refused, not dropped).

Decoding is the pipeline's own, section by section (each section's latents decoded and cross-faded over the
overlap onto the video so far, pipe._soft_append), with progress and cancel between sections; the video so far is
kept in host memory, so the device holds one section's decode at a time.

`--speed fast` is First Block Cache (families/caching.py); the pipeline opens no cache context, so the transformer's
forward is wrapped in one ("cond", and "uncond" for true CFG's second pass).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

from .base import Family, pipeline_kwargs, refusal, to_uint8

TEMPORAL = 4  # HunyuanVideo's VAE: frames per latent frame (pipe.vae_scale_factor_temporal)

# First Block Cache threshold for --speed fast: the relative change of the first block's residual since the last full
# pass below which the other blocks' cached residual is reused. 0.15 is FramePack's own TeaCache threshold (its app's
# rel_l1_thresh, a relative L1 change of the same kind). Not tuned on random weights: on bench/bench_framepack.py's
# mid-size random FramePack (25 steps) the residual moves 0.30-0.50 a step, so nothing is cached below 0.35; 0.4
# caches 10 of 25 passes (1.7x CPU time, 63.8 dB against exact), 0.5 caches 20 of 25 (2.0x, 56.8 dB; another seed is
# 14.2 dB) (bench/results/framepack-cpu-20261202*.json). A trained model's residuals move differently, and its
# speed-up at this threshold is not measured yet (no weights offline).
FAST_THRESHOLD = 0.15


def sections_for(frames: int, window: int) -> int:
    """The fewest sections of `window` latent frames whose 4 x window x S + 1 frames cover `frames`."""
    return max(1, math.ceil((frames - 1) / (TEMPORAL * window)))


def frames_made(sections: int, window: int) -> int:
    return TEMPORAL * window * sections + 1


@dataclass
class SectionLatents:
    """What `run` hands to `decode`: the pipeline's latent history after each section (output_type="latent"), and
    how the video was laid out."""

    history: list
    sampling_type: str
    window: int
    sections: int
    frames: int  # frames wanted: the decoded video is trimmed to these


class FramePackFamily(Family):
    name = "framepack"
    label = "FramePack"
    speeds = frozenset({"exact", "fast"})
    end_image = True  # inverted anti-drifting's last_image (not F1's vanilla sampling: supports_end_image)
    plans_memory = True  # engine/dit_plan.py on engine/framepack_shape.py: text encoders first, leaf-level group offload

    def plan_layout(self):
        from ..engine.framepack_shape import FRAMEPACK

        return FRAMEPACK

    def plan_shape(self, entry, dtype_name, attention):
        from ..engine.framepack_shape import framepack_shape

        return framepack_shape(entry, dtype_name or "bf16")

    # ------------------------------------------------------------------ rules and defaults
    def size_multiple(self, entry) -> int:
        return entry.defaults.size_multiple or 16  # the pipeline refuses other sizes

    def folder_defaults(self, folder):
        """A folder runs with the pipeline's own __call__ defaults for every knob no flag sets (50 steps, guidance 6,
        window 9, 1280x720; its num_frames 129 makes 4 sections = 145 frames), playback at FramePack's 30 fps."""
        import inspect

        from diffusers import HunyuanVideoFramepackPipeline

        from ..models.folder_info import read_folder_info
        from ..models.registry import ModelDefaults

        d = {k: p.default for k, p in inspect.signature(HunyuanVideoFramepackPipeline.__call__).parameters.items()}
        window = d["latent_window_size"]
        sections = max(1, math.ceil(d["num_frames"] / ((window - 1) * TEMPORAL + 1)))
        w, h = d["width"], d["height"]
        side = int((w * h) ** 0.5 // 16 * 16)
        sampling = (read_folder_info(folder).get("defaults") or {}).get("sampling_type")
        return ModelDefaults(num_frames=frames_made(sections, window), num_inference_steps=d["num_inference_steps"],
                             fps=30, motion_bucket_id=None, noise_aug_strength=None, min_guidance_scale=None,
                             max_guidance_scale=None, negative_prompt=None, guidance_scale=d["guidance_scale"],
                             true_cfg_scale=d["true_cfg_scale"], latent_window_size=window, landscape=(w, h),
                             portrait=(h, w), square=(side, side), sampling_type=sampling,
                             end_image=sampling != "vanilla")

    def supports_end_image(self, entry) -> bool:
        return entry.defaults.end_image and entry.defaults.sampling_type != "vanilla"

    def end_image_hint(self, entry) -> str:
        return ("FramePack takes a last image with its inverted anti-drifting sampling (framepack); F1's vanilla "
                "sampling (framepack-f1) has none: use framepack.")

    def check(self, spec, entry, *, end_image: bool = False, audio: bool = False) -> None:
        super().check(spec, entry, end_image=end_image, audio=audio)
        d = entry.defaults
        cfg = spec.true_cfg_scale if spec.true_cfg_scale is not None else (d.true_cfg_scale or 1.0)
        if spec.negative_prompt is not None and cfg <= 1:
            raise refusal("negative_prompt", "--negative-prompt (negative_prompt): FramePack uses a negative prompt "
                                             "only with real guidance: add --true-cfg (true_cfg_scale) above 1, e.g. "
                                             "1.5, or leave it out.")

    def long_frames(self, spec) -> Optional[int]:
        """FramePack makes long videos itself, section by section: --segments N is N sections, --duration S is
        S x fps frames (trimmed from whole sections)."""
        if spec.segments is not None:
            return frames_made(spec.segments, spec.latent_window_size)
        if spec.duration is not None:
            return max(1, round(spec.duration * spec.fps))
        return None

    def layout(self, spec) -> tuple[int, int, int]:
        """(frames wanted, sections, latent window) of a resolved spec."""
        frames = self.long_frames(spec) or spec.num_frames
        window = spec.latent_window_size
        return frames, sections_for(frames, window), window

    def denoise_steps(self, spec) -> int:
        return self.layout(spec)[1] * spec.num_inference_steps

    def step_message(self, spec, n: int) -> str:
        steps, sections = spec.num_inference_steps, self.layout(spec)[1]
        return f"section {(n - 1) // steps + 1}/{sections}, step {(n - 1) % steps + 1}/{steps}"

    def describe_length(self, pipe, spec) -> Optional[dict]:
        frames, sections, window = self.layout(spec)
        made = frames_made(sections, window)
        return {"method": "framepack sections", "sampling_type": _sampling(pipe), "latent_window_size": window,
                "sections": sections, "frames_per_section": TEMPORAL * window, "frames_made": made,
                "frames": frames, "trimmed": made - frames}

    # ------------------------------------------------------------------ running
    def load(self, path, variant, dtype):
        from diffusers import HunyuanVideoFramepackPipeline

        return HunyuanVideoFramepackPipeline.from_pretrained(path, torch_dtype=dtype, variant=variant,
                                                             use_safetensors=True)

    def bind(self, pipe, entry) -> None:
        """The sampling type is the model's (its entry's defaults; a folder that says none: the pipeline's own
        default), kept with the pipeline for run and decode."""
        import inspect

        default = inspect.signature(type(pipe).__call__).parameters["sampling_type"].default
        pipe._stillmotion_sampling_type = entry.defaults.sampling_type or getattr(default, "value", default)

    def speed_cache(self, spec, pipe):
        if spec.speed != "fast":
            return None
        from .caching import FirstBlockCache

        contexts = ("cond", "uncond") if spec.uses_cfg else ("cond",)  # true CFG: a second (negative) pass a step
        return FirstBlockCache([pipe.transformer], FAST_THRESHOLD, contexts=contexts,
                               reset_every=len(contexts) * spec.num_inference_steps)  # afresh in each section

    def run(self, pipe, image, spec, *, generator, on_step_end, end_image=None, cache=None):
        """The pipeline to each section's latents (output_type="latent"), with progress and cancel at every step
        of every section through its callback; the cache (--speed fast) on for this call only."""
        frames, sections, window = self.layout(spec)
        sampling = _sampling(pipe)
        with self.cache_on(spec, pipe, cache):
            history = pipe(
                image=image,
                prompt=spec.prompt or "",
                **pipeline_kwargs(last_image=end_image, sampling_type=sampling,
                                  negative_prompt=(spec.negative_prompt or "") if spec.uses_cfg else None,
                                  true_cfg_scale=spec.true_cfg_scale, guidance_scale=spec.guidance_scale),
                height=spec.height,
                width=spec.width,
                num_frames=sections * ((window - 1) * pipe.vae_scale_factor_temporal + 1),  # picks S sections
                latent_window_size=window,
                num_inference_steps=spec.num_inference_steps,
                generator=generator,
                output_type="latent",
                callback_on_step_end=on_step_end,
            ).frames
        return SectionLatents(history=list(history), sampling_type=sampling or "inverted_anti_drifting",
                              window=window, sections=sections, frames=frames)

    def decode(self, pipe, latents: SectionLatents, spec, chunk, report, cancel, span):
        """The pipeline's own decode (the end of HunyuanVideoFramepackPipeline.__call__'s section loop and its
        postprocess), section by section with progress and cancel; the video so far in host memory."""
        import torch

        from ..errors import Cancelled
        from ..engine.types import Progress

        vae = pipe.vae
        t = pipe.vae_scale_factor_temporal
        w = latents.window
        inverted = latents.sampling_type == "inverted_anti_drifting"
        overlap = (w - 1) * t + 1
        n = len(latents.history)
        video = None
        with torch.inference_mode():
            for k, real in enumerate(latents.history):
                if cancel():
                    raise Cancelled()
                if k:
                    last = k == n - 1
                    size = (2 * w + 1) if (inverted and last) else 2 * w
                    real = real[:, :, :size] if inverted else real[:, :, -size:]
                part = vae.decode(real.to(vae.dtype) / vae.config.scaling_factor, return_dict=False)[0].cpu()
                if video is None:
                    video = part
                else:
                    video = pipe._soft_append(part, video, overlap) if inverted else pipe._soft_append(video, part, overlap)
                latents.history[k] = None  # decoded: let it go
                done = k + 1
                report(Progress("decode", done, n, span[0] + (span[1] - span[0]) * done / n,
                                f"decoded section {done}/{n}"))
            made = (video.size(2) - 1) // t * t + 1
            video = pipe.video_processor.postprocess_video(video[:, :, :made], output_type="np")[0]
        return to_uint8(video[: latents.frames])

    def encoder_module(self, pipe):
        return pipe.image_encoder  # SigLIP: the image embedding

    def describe_run(self, spec, end_image):
        return {"method": "framepack last_image (the pipeline's own: the last image's latent in the first section's "
                          "clean history, its SigLIP embedding averaged with the first image's)"}


def _sampling(pipe) -> Optional[str]:
    return getattr(pipe, "_stillmotion_sampling_type", None)
