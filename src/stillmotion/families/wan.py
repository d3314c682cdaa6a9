"""Wan 2.1 / 2.2 image-to-video (diffusers' WanImageToVideoPipeline): 2.1 I2V with its CLIP image
encoder, 2.1 FLF2V (first and last frame), 2.2 I2V A14B (two experts switched at a boundary) and
2.2 TI2V-5B (48-channel VAE, expand_timesteps).

Rules: 4k+1 frames; sizes in multiples of 16 (32 for TI2V-5B: the VAE's 16x times the 2x patch); the
pipeline would round both down with a warning, we refuse instead. A prompt and a negative prompt, one
guidance scale (A14B uses it for both experts unless its folder says otherwise). An end image is the
pipeline's own `last_image`, honoured by FLF2V and the two-expert A14B; 2.1 I2V fails on it and TI2V
ignores it, so they refuse it.

`--speed fast` is diffusers' First Block Cache (FirstBlockCacheConfig, through the transformers'
CacheMixin.enable_cache) on every denoiser: each transformer pass runs its first block, and when that
block's residual changed by less than FAST_THRESHOLD (relative mean absolute difference) since the last
full pass, the other blocks are skipped and their cached residual is added. Enabled for one run and
always disabled after it, so an exact run after a fast one is exact again. bench/bench_wan.py measures it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from .base import Family, pipeline_kwargs, to_uint8
from .caching import FirstBlockCache


# First Block Cache threshold for --speed fast: the relative change of the first block's residual (mean |diff| over
# mean |residual| against the last full pass) below which a transformer pass reuses the other blocks' cached residual.
# Chosen with bench/bench_wan.py on a mid-size random Wan 2.2 A14B layout (40 steps, CFG 5): diffusers' default 0.05
# and 0.08 skipped nothing there, 0.12 and 0.13 gave 1.4x and 1.7x fewer FLOPs; 0.15 is the smallest tried that gives
# the 1.6x with a margin: 56 of 80 passes cached, 2.5x fewer FLOPs, 2.3x wall / 2.1x CPU time, PSNR 60 dB
# against exact where another seed is 33 dB (bench/results/wan-cpu-20261202.json). Random weights: a trained Wan's
# residuals move differently between steps, so its speed-up and fidelity at this threshold are not measured yet.
FAST_THRESHOLD = 0.15

LORA_ADAPTER = "stillmotion"  # the adapter name a LoRA gets in each expert


class WanFamily(Family):
    name = "wan"
    label = "Wan"
    speeds = frozenset({"exact", "fast"})
    end_image = True
    lora = True  # diffusers' WanLoraLoaderMixin, into every expert (the LoRA methods below)
    plans_memory = True  # engine/dit_plan.py on engine/wan_shape.py: weights on meta, dry-run stages, the plan axes

    def size_multiple(self, entry) -> int:
        return entry.defaults.size_multiple or _folder_multiple(entry) or 16

    def folder_defaults(self, folder):
        """A folder runs with the pipeline's own defaults for every knob no flag sets (its __call__'s: 81 frames,
        50 steps, guidance 5.0, 832x480, no negative prompt); playback at Wan's 16 fps."""
        import inspect

        from diffusers import WanImageToVideoPipeline

        from ..models.registry import ModelDefaults

        d = {k: p.default for k, p in inspect.signature(WanImageToVideoPipeline.__call__).parameters.items()}
        w, h = d["width"], d["height"]
        side = (w * h) ** 0.5 // 16 * 16
        return ModelDefaults(num_frames=d["num_frames"], num_inference_steps=d["num_inference_steps"], fps=16,
                             motion_bucket_id=None, noise_aug_strength=None, min_guidance_scale=None,
                             max_guidance_scale=None, negative_prompt=None, guidance_scale=None,
                             landscape=(w, h), portrait=(h, w), square=(int(side), int(side)))

    def frames_rule(self, n: int) -> Optional[str]:
        if (n - 1) % 4 == 0:
            return None
        lo, hi = (n - 1) // 4 * 4 + 1, ((n - 1) // 4 + 1) * 4 + 1
        return f"Wan makes 4k+1 frames: use {lo} or {hi}"

    def supports_end_image(self, entry) -> bool:
        takes = _folder_takes_last_image(entry)
        return entry.defaults.end_image if takes is None else takes

    def end_image_hint(self, entry) -> str:
        return ("of the Wan models only FLF2V (first-last-frame) and Wan 2.2 I2V A14B take a last image; "
                "Wan 2.1 I2V fails on one and TI2V-5B ignores it.")

    # ------------------------------------------------------------------
    def load(self, path, variant, dtype):
        import torch
        from diffusers import WanImageToVideoPipeline

        from ..models.wan_files import is_assembled, load_components

        if is_assembled(path):  # ComfyUI's split files (models/wan_files.py): converted as they load
            pipe = WanImageToVideoPipeline(**load_components(path, dtype))
        else:
            pipe = WanImageToVideoPipeline.from_pretrained(path, torch_dtype=dtype, variant=variant,
                                                           use_safetensors=True)
        if dtype != torch.float32:  # the model cards' recipe: the VAE and the CLIP image encoder stay in fp32
            from ..util import quiet_diffusers

            with quiet_diffusers():
                pipe.vae.to(torch.float32)
                if pipe.image_encoder is not None:
                    pipe.image_encoder.to(torch.float32)
        return pipe

    def denoisers(self, pipe) -> list:
        """Every transformer the steps run: `transformer`, and A14B's low-noise expert `transformer_2`."""
        return [m for m in (pipe.transformer, getattr(pipe, "transformer_2", None)) if m is not None]

    def speed_cache(self, spec, pipe):
        return FirstBlockCache(self.denoisers(pipe), FAST_THRESHOLD) if spec.speed == "fast" else None

    def run(self, pipe, image, spec, *, generator, on_step_end, end_image=None, cache=None):
        """The pipeline to latents; with --speed fast the cache is on for this call only (the engine passes the one it
        attached; called without one, run makes its own), and off again when it returns or raises."""
        scheduler = pipe.scheduler
        try:
            if spec.flow_shift is not None and spec.flow_shift != scheduler.config.get("flow_shift"):
                # --shift (ComfyUI's ModelSamplingSD3): the same scheduler with another shift, for this run only
                pipe.scheduler = type(scheduler).from_config(scheduler.config, flow_shift=spec.flow_shift)
            with self.cache_on(spec, pipe, cache):
                return pipe(
                    image=image,
                    prompt=spec.prompt or "",
                    **pipeline_kwargs(negative_prompt=spec.negative_prompt, guidance_scale=spec.guidance_scale,
                                      last_image=end_image),
                    height=spec.height,
                    width=spec.width,
                    num_frames=spec.num_frames,
                    num_inference_steps=spec.num_inference_steps,
                    generator=generator,
                    output_type="latent",
                    callback_on_step_end=on_step_end,
                ).frames
        finally:
            pipe.scheduler = scheduler

    def decode(self, pipe, latents, spec, chunk, report, cancel, span):
        """The end of WanImageToVideoPipeline.__call__ (un-normalise, decode, postprocess), as one step:
        the causal Wan VAE decodes the whole clip at once."""
        import torch

        from ..engine.types import Progress

        vae = pipe.vae
        with torch.inference_mode():
            latents = latents.to(vae.dtype)
            mean = torch.tensor(vae.config.latents_mean).view(1, vae.config.z_dim, 1, 1, 1).to(latents.device, latents.dtype)
            std = 1.0 / torch.tensor(vae.config.latents_std).view(1, vae.config.z_dim, 1, 1, 1).to(latents.device, latents.dtype)
            video = vae.decode(latents / std + mean, return_dict=False)[0]
            video = pipe.video_processor.postprocess_video(video, output_type="np")[0]
        report(Progress("decode", spec.num_frames, spec.num_frames, span[1], f"decoded {spec.num_frames} frames"))
        return to_uint8(video)

    # ------------------------------------------------------------------ LoRAs
    # diffusers' WanLoraLoaderMixin loads them: its lora_state_dict converts the common non-diffusers layouts
    # (lightx2v / Kijai / ComfyUI "diffusion_model." keys, musubi "lora_unet_"); load_lora_weights puts one into
    # `transformer`, or with load_into_transformer_2=True into A14B's second expert: a LoRA goes into both.
    def read_lora(self, folder):
        from diffusers import WanImageToVideoPipeline

        from ..errors import ModelUnavailable
        from ..models.lora import lora_record

        folder = Path(folder)
        record = lora_record(folder) or {}
        path = folder / str(record.get("lora", ""))
        if not path.is_file():
            raise ModelUnavailable(f"LoRA weights {path} are missing; copy the whole folder.")
        try:
            state = WanImageToVideoPipeline.lora_state_dict(str(folder), weight_name=path.name)
        except (OSError, ValueError, KeyError) as e:
            raise ModelUnavailable(f"{path} is not a Wan LoRA diffusers can read: {e}") from None
        return {"state": state, "path": path}

    def attach_lora(self, pipe, adapter, scale=1.0):
        from ..errors import ModelUnavailable

        self.detach_lora(pipe)
        for second, module in ((False, pipe.transformer), (True, pipe.transformer_2)):
            if module is None:
                continue
            try:
                pipe.load_lora_weights(dict(adapter["state"]), adapter_name=LORA_ADAPTER,
                                       load_into_transformer_2=second)
            except (ValueError, RuntimeError, KeyError) as e:
                self.detach_lora(pipe)
                raise ModelUnavailable(f"LoRA weights {adapter['path']} do not fit this Wan model: "
                                       f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
            module.set_adapters([LORA_ADAPTER], weights=[float(scale)])

    def detach_lora(self, pipe):
        pipe.unload_lora_weights()  # every expert's LoRA layers replaced by their base layers again

    def apply_lora(self, pipe, folder):
        """A LoRA folder as the model: its adapter fused into every expert, the LoRA layers then taken off."""
        self.attach_lora(pipe, self.read_lora(folder))
        pipe.fuse_lora(components=[c for c in ("transformer", "transformer_2") if getattr(pipe, c) is not None],
                       lora_scale=1.0, adapter_names=[LORA_ADAPTER])
        pipe.unload_lora_weights()  # the fused weights stay (diffusers' fuse-then-unload)

    def encoder_module(self, pipe):
        return pipe.image_encoder  # Wan 2.1's CLIP; None on 2.2 (the image goes in through the VAE)

    def describe_run(self, spec, end_image):
        return {"method": "wan last_image (the pipeline's own first-last-frame conditioning)"}

    # ------------------------------------------------------------------ memory plan (engine/dit_plan.py)
    def plan_layout(self):
        from ..engine.wan_shape import WAN

        return WAN

    def plan_shape(self, entry, dtype_name, attention):
        from ..engine.wan_shape import wan_shape

        return wan_shape(entry, dtype_name or "bf16")

    def apply_plan(self, pipe, plan, active, device, dtype):
        """The planner's plan, less fp8 storage over a quantised (GGUF) transformer: its weights are stored
        quantised already, and layerwise casting would cast those blocks of bytes as if they were weights."""
        from dataclasses import replace

        if plan.fp8 and any(getattr(m, "is_quantized", False) for m in self.denoisers(pipe)):
            plan = replace(plan, fp8=False)
        return super().apply_plan(pipe, plan, active, device, dtype)


def _folder(entry) -> Optional[Path]:
    p = Path(entry.name).expanduser()
    return p if (p / "model_index.json").is_file() else None


def _config(folder: Path, component: str) -> dict:
    try:
        return json.loads((folder / component / "config.json").read_text())
    except (OSError, ValueError):
        return {}


def _folder_multiple(entry) -> Optional[int]:
    """A local folder's size multiple: the VAE's spatial factor times the transformer's patch."""
    folder = _folder(entry)
    if folder is None:
        return None
    vae = _config(folder, "vae")
    factor = vae.get("scale_factor_spatial") or 2 ** len(vae.get("temperal_downsample") or [0, 0, 0])
    patch = (_config(folder, "transformer") or _config(folder, "transformer_2")).get("patch_size") or [1, 2, 2]
    return max(16, factor * patch[1])


def _folder_takes_last_image(entry) -> Optional[bool]:
    """Whether a local folder's model takes `last_image` (FLF2V's pos_embed_seq_len, or two experts)."""
    folder = _folder(entry)
    if folder is None:
        return None
    index = json.loads((folder / "model_index.json").read_text())
    if (index.get("transformer_2") or [None])[0] is not None:
        return True
    return _config(folder, "transformer").get("pos_embed_seq_len") is not None
