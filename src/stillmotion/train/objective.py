"""The SVD training objective, as published and as diffusers samples it.

EDM preconditioning with sigma_data = 1 (Karras et al. 2022), exactly the maths
of EulerDiscreteScheduler with prediction_type="v_prediction" and
timestep_type="continuous", which StableVideoDiffusionPipeline samples with:

    c_in    = 1 / sqrt(sigma^2 + 1)          scheduler.scale_model_input
    c_noise = 0.25 * log(sigma)              the "timestep" the UNet sees
    c_skip  = 1 / (sigma^2 + 1)              scheduler.step: x0 = c_skip * x + c_out * F
    c_out   = -sigma / sqrt(sigma^2 + 1)

Noise levels are log-normal, ln sigma ~ N(p_mean, p_std^2) (SVD shifts them
up from the image EDM default, to 0.7 / 1.6). With EDM's loss weight
(sigma^2 + 1) / sigma^2 the denoiser loss equals plain MSE on the target
F* = (x0 - c_skip * x) / c_out, which is what `svd_loss` computes.

Conditioning, as the pipeline builds it at sampling time:
  * the first frame, noise-augmented (x + aug * N(0, 1), ln aug ~ N(-3, 0.5^2)),
    encoded by the VAE (latent mode, not scaled) and concatenated to every
    frame's noisy latent on the channel axis;
  * the CLIP image embedding of the clean first frame (resized to 224 with
    antialiasing as the pipeline does) as the single cross-attention token;
  * added time ids [fps - 1, motion_bucket_id, aug];
  * conditioning dropout: with probability `cond_dropout` both the CLIP
    embedding and the image latent are zeroed, which is exactly the
    unconditional branch the pipeline uses for classifier-free guidance.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class ObjectiveConfig:
    p_mean: float = 0.7
    p_std: float = 1.6
    aug_mean: float = -3.0  # ln of the noise-augmentation strength
    aug_std: float = 0.5
    cond_dropout: float = 0.1


def precondition(sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """c_skip, c_out, c_in, c_noise for noise levels `sigma` (any shape)."""
    s2 = sigma**2 + 1
    return 1 / s2, -sigma / s2.sqrt(), 1 / s2.sqrt(), 0.25 * sigma.log()


def sample_sigmas(n: int, cfg: ObjectiveConfig, generator=None) -> torch.Tensor:
    return torch.exp(cfg.p_mean + cfg.p_std * torch.randn(n, generator=generator))


def sample_aug(n: int, cfg: ObjectiveConfig, generator=None) -> torch.Tensor:
    return torch.exp(cfg.aug_mean + cfg.aug_std * torch.randn(n, generator=generator))


def clip_embeddings(image_encoder, feature_extractor, first: torch.Tensor) -> torch.Tensor:
    """(B, 1, D) CLIP image embeddings of frames in -1..1, preprocessed as the SVD pipeline does."""
    from diffusers.pipelines.stable_video_diffusion.pipeline_stable_video_diffusion import _resize_with_antialiasing

    x = _resize_with_antialiasing(first, (224, 224))
    x = (x + 1.0) / 2.0
    mean = torch.tensor(feature_extractor.image_mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(feature_extractor.image_std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    x = ((x - mean) / std).to(next(image_encoder.parameters()).dtype)
    return image_encoder(x).image_embeds.unsqueeze(1)


@torch.no_grad()
def encode_conditioning(vae, image_encoder, feature_extractor, frames: torch.Tensor, fps, buckets,
                        cfg: ObjectiveConfig, generator=None, encode=None) -> dict:
    """Latents and conditioning for a batch of clips (B, T, 3, H, W) in -1..1 (frozen VAE and CLIP).

    `encode` (frames -> unscaled latent mode) replaces vae.encode when given: a faster
    function computing the same latents (the demo's linear VAE has one).
    """
    b, t = frames.shape[:2]
    dtype = next(vae.parameters()).dtype
    if encode is None:
        def encode(x):
            return vae.encode(x).latent_dist.mode()
    x0 = encode(frames.flatten(0, 1).to(dtype))
    x0 = (x0 * vae.config.scaling_factor).unflatten(0, (b, t)).float()
    first = frames[:, 0]
    aug = sample_aug(b, cfg, generator).to(first.device)
    noisy_first = first + aug.view(b, 1, 1, 1) * torch.randn(first.shape, generator=generator).to(first.device)
    cond = encode(noisy_first.to(dtype)).float()  # not scaled: as the pipeline does
    emb = clip_embeddings(image_encoder, feature_extractor, first).float()
    keep = (torch.rand(b, generator=generator) >= cfg.cond_dropout).to(first.device).float()
    cond = cond * keep.view(b, 1, 1, 1)
    emb = emb * keep.view(b, 1, 1)
    fps = torch.as_tensor(fps, dtype=torch.float32).reshape(-1).expand(b)
    buckets = torch.as_tensor(buckets, dtype=torch.float32).reshape(-1).expand(b)
    ids = torch.stack([fps - 1, buckets, aug.cpu()], dim=1).to(first.device)
    return {"x0": x0, "cond": cond, "emb": emb, "added_time_ids": ids}


def svd_loss(unet, batch: dict, cfg: ObjectiveConfig, generator=None) -> torch.Tensor:
    """EDM / v-prediction loss of the UNet on one encoded batch (see the module doc)."""
    x0 = batch["x0"]
    b, t = x0.shape[:2]
    sigma = sample_sigmas(b, cfg, generator).to(x0.device)
    noise = torch.randn(x0.shape, generator=generator).to(x0.device)
    s = sigma.view(b, 1, 1, 1, 1)
    x = x0 + s * noise
    c_skip, c_out, c_in, c_noise = precondition(s)
    cond = batch["cond"].unsqueeze(1).expand(-1, t, -1, -1, -1)
    inp = torch.cat([c_in * x, cond], dim=2)
    dtype = next(unet.parameters()).dtype
    out = unet(inp.to(dtype), c_noise.view(b).to(dtype), encoder_hidden_states=batch["emb"].to(dtype),
               added_time_ids=batch["added_time_ids"].to(dtype)).sample
    target = (x0 - c_skip * x) / c_out
    return torch.mean((out.float() - target) ** 2)
