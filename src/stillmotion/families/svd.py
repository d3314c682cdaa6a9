"""Stable Video Diffusion (SVD 14 frames, SVD-XT 25, XT 1.1; diffusers' StableVideoDiffusionPipeline).

Rules: at most 64 frames a run; sizes in multiples of 64; no prompt (an image and its motion knobs).
The memory planner counts it (engine/memory.py), `--speed fast` is DeepCache-style feature reuse on the
UNet (engine/speed.py), an end image is bidirectional sampling (engine/keyframes.py), LoRAs attach to
the UNet (models/lora.py), single files and ComfyUI workflows are SVD's (models/single_file.py, comfy/).
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from ..errors import Cancelled
from .base import Family, to_uint8


class SVDFamily(Family):
    name = "svd"
    label = "SVD"
    article = "an"
    speeds = frozenset({"exact", "fast"})
    plans_memory = True
    end_image = True
    lora = True

    def frames_rule(self, n: int) -> Optional[str]:
        return None if n <= 64 else "SVD makes at most 64 frames a run: use --duration or --segments for longer videos"

    def engine_setting(self, what: str) -> bool:
        return True  # every engine setting was built for SVD first

    def denoiser(self, pipe):
        return pipe.unet

    # LoRAs on the UNet (models/lora.py): a folder merged at load; a served one wrapped per job, never merged
    def apply_lora(self, pipe, folder):
        from ..models.lora import apply_lora

        apply_lora(pipe, folder)

    def read_lora(self, folder):
        from ..models.lora import read_adapter

        return read_adapter(folder)

    def attach_lora(self, pipe, adapter, scale=1.0):
        from ..models.lora import attach_adapter, detach_adapters

        detach_adapters(pipe.unet)
        attach_adapter(pipe.unet, adapter, scale)

    def detach_lora(self, pipe):
        from ..models.lora import detach_adapters

        detach_adapters(pipe.unet)

    def speed_setup(self, pipe, device, dtype, attention):
        from ..engine.speed import apply_exact

        return apply_exact(pipe, device, dtype, attention)

    def load(self, path, variant, dtype):
        from diffusers import StableVideoDiffusionPipeline

        return StableVideoDiffusionPipeline.from_pretrained(path, variant=variant, torch_dtype=dtype,
                                                           use_safetensors=True)

    def run(self, pipe, image, spec, *, generator, on_step_end, end_image=None, cache=None):
        if end_image is not None:
            from ..engine import keyframes

            return keyframes.denoise(pipe, image, end_image, spec, generator, on_step_end=on_step_end, cache=cache)
        return pipe(
            image,
            height=spec.height,
            width=spec.width,
            num_frames=spec.num_frames,
            num_inference_steps=spec.num_inference_steps,
            min_guidance_scale=spec.min_guidance_scale,
            max_guidance_scale=spec.max_guidance_scale,
            fps=spec.effective_conditioning_fps,
            motion_bucket_id=spec.motion_bucket_id,
            noise_aug_strength=spec.noise_aug_strength,
            generator=generator,
            output_type="latent",
            callback_on_step_end=on_step_end,
        ).frames

    def decode(self, pipe, latents, spec, chunk, report, cancel, span) -> np.ndarray:
        """diffusers' decode_latents, chunk by chunk with progress and cancel; then to uint8.

        Not `pipe.decode_latents`: that decodes every chunk in one call, with no place between chunks to
        report progress or stop; the operations here are its own, so the frames are the same bytes."""
        import torch

        from ..engine.shapes import decode_kwargs
        from ..engine.types import Progress

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
                out.append(vae.decode(part, **decode_kwargs(vae, part.shape[0])).sample)
                done = min(n, i + chunk)
                report(Progress("decode", done, n, span[0] + (span[1] - span[0]) * done / n, f"decoded {done}/{n} frames"))
            frames = torch.cat(out, dim=0)
            frames = frames.reshape(-1, spec.num_frames, *frames.shape[1:]).permute(0, 2, 1, 3, 4).float()
            video = pipe.video_processor.postprocess_video(video=frames, output_type="np")[0]
        return to_uint8(video)

    def encoder_module(self, pipe):
        return pipe.image_encoder

    def describe_run(self, spec, end_image):
        from ..engine import keyframes

        return keyframes.describe(spec)
