"""Keyframes: a video from a first and a last image, training-free, on SVD's own weights.

ViBiDSampler (Yang, Kwon and Ye, ICLR 2025, arXiv 2410.05651): bidirectional
sampling. SVD only knows how to continue from one image, so each denoising
step is taken twice, once in each direction of time:

  sigma_i -> sigma_i+1, conditioned on the first image (frames in order);
     the clean estimate's last frame is set to the last image's latent;
  re-noise back to sigma_i (fresh noise, from the run's CPU generator);
  flip the frames in time;
  sigma_i -> sigma_i+1, conditioned on the last image (the video played
     backwards starts from it); the clean estimate's last frame (the first
     frame, unflipped) is set to the first image's latent;
  flip back.

The reference implementation's "DDS" step solves a masked least-squares
problem with conjugate gradients; with its mask (one frame) the solution is
that frame replaced by the keyframe's latent, which is what this does. Two
things differ from the reference, on purpose: guidance is SVD's own (the
pipeline's per-frame linspace of min..max guidance and a plain Euler step from
the guided estimate, so --min-cfg/--max-cfg mean what they mean without an
end image; the reference uses CFG++ at scale 1), and the scheduler is
diffusers' (EulerDiscreteScheduler, its sigmas and timesteps). The keyframe
latents are the VAE posterior's mode (deterministic; the reference samples it).

Each step costs two UNet passes (with CFG, each on a batch of two), so a
keyframe video costs about twice a plain one at the same steps; the memory
planner counts the second conditioning held through denoising.

Everything else is what diffusers' StableVideoDiffusionPipeline does: its CLIP
image encoding (`_encode_image`, private: tests/test_diffusers_api.py checks it),
`prepare_latents`, and, written out here on public calls, the VAE latents of the
noise-augmented image, the added time ids, CFG batching and the VAE upcast in fp16.
"""

from __future__ import annotations

from typing import Callable, Optional

from ..errors import InvalidInput

METHOD = "vibidsampler"
PAPER = "arXiv:2410.05651 (ICLR 2025)"
MAX_KEYFRAMES = 32


def load_end_images(end_image, end_source=None) -> tuple[list, object]:
    """The end image (or the keyframes after the first), loaded like the first image -> (PIL images,
    what the sidecar's "input" records: {source, sha256, size}, or a list of them for several)."""
    from .. import images

    many = isinstance(end_image, (list, tuple))
    items = list(end_image) if many else [end_image]
    names = list(end_source) if isinstance(end_source, (list, tuple)) else [end_source] * len(items)
    if not items:
        raise InvalidInput("keyframes: give at least one image after the first.")
    if len(items) > MAX_KEYFRAMES:
        raise InvalidInput(f"keyframes: at most {MAX_KEYFRAMES + 1} images, got {len(items) + 1}.")
    pils, infos = [], []
    for item, name in zip(items, names + [None] * (len(items) - len(names))):
        pil, info = images.open_input(item, name)
        pils.append(pil)
        infos.append(info)
    return pils, (infos if many and len(infos) > 1 else infos[0])


def check_spec(spec, keyframes: bool = False) -> None:
    """Refuse, in one line, what does not go with an end image (`keyframes`: given as a list, --keyframes)."""
    if (spec.duration is not None or spec.segments is not None) and keyframes:
        raise InvalidInput("--duration/--segments do not go with --keyframes: the keyframes set the segments "
                           "(one per pair); leave them out.")
    if spec.duration is not None or spec.segments is not None:
        raise InvalidInput("--duration/--segments do not go with an end image: for a longer video through "
                           "keyframes give them all (--keyframes a.jpg,b.jpg,c.jpg: one segment per pair).")
    if spec.num_frames is not None and spec.num_frames < 3:
        raise InvalidInput(f"An end image needs at least 3 frames (first, in between, last), got --frames {spec.num_frames}.")


def loop_ends(ends: list, image, spec) -> list:
    """The images to sample towards: with --loop blend, one more segment, back to the first image."""
    return [*ends, image] if spec.loop == "blend" else ends


def close_loop(frames, spec, run):
    """After a keyframe loop (--loop blend), which ends on the first frame: drop the repeat (and its sound: the
    soundtrack is cut to the frames kept); the loop is done, so post-processing runs with loop "none" ->
    (frames, the spec for post-processing)."""
    if spec.loop != "blend":
        return frames, spec
    run.keyframes = {**(run.keyframes or {}), "loop": "keyframe (last segment back to the first image)"}
    if run.audio is not None:
        from ..video.audio import fit

        run.audio = fit(run.audio, len(frames) - 1, spec.fps)
    return frames[:-1], spec.update(loop="none")


def describe(spec) -> dict:
    """What the sidecar records about the sampler."""
    return {"method": METHOD, "paper": PAPER, "unet_passes_per_step": 2, "guidance": "svd-linspace",
            "steps": spec.num_inference_steps}


class _Conditioning:
    """One image's conditioning, as the pipeline builds it: CLIP embedding, noise-augmented VAE latents
    (both doubled for CFG), and the clean latent the other direction's last frame is set to."""

    def __init__(self, pipe, image, spec, generator, device, cfg: bool, num_frames: int):
        import torch
        from diffusers.utils.torch_utils import randn_tensor

        self.embeddings = pipe._encode_image(image, device, 1, cfg)
        pixels = pipe.video_processor.preprocess(image, height=spec.height, width=spec.width).to(device)
        noise = randn_tensor(pixels.shape, generator=generator, device=device, dtype=pixels.dtype)
        noisy = pixels + spec.noise_aug_strength * noise
        vae = pipe.vae
        upcast = vae.dtype == torch.float16 and vae.config.force_upcast
        if upcast:
            vae.to(dtype=torch.float32)
        latents = vae.encode(noisy.to(device=device, dtype=vae.dtype)).latent_dist.mode()
        if cfg:  # the unconditional half: zeros, as the pipeline batches it
            latents = torch.cat([torch.zeros_like(latents), latents])
        clean = vae.encode(pixels.to(vae.dtype)).latent_dist.mode() * vae.config.scaling_factor
        if upcast:
            vae.to(dtype=torch.float16)
        dtype = self.embeddings.dtype
        self.latents = latents.to(dtype).unsqueeze(1).repeat(1, num_frames, 1, 1, 1)
        self.target = clean.to(dtype)  # (1, C, h, w), scaled like the latents being denoised


def denoise(pipe, image, end_image, spec, generator, *, on_step_end: Optional[Callable] = None, cache=None):
    """Bidirectional sampling from `image` (first frame) to `end_image` (last frame) -> latents (1, T, C, h, w).

    `on_step_end(pipe, i, t, {})` is called after each step, as the pipeline calls it (progress,
    cancel); `cache` is the fast mode's DeepCache, kept apart for each direction of time.
    """
    import torch
    from diffusers.pipelines.stable_video_diffusion.pipeline_stable_video_diffusion import retrieve_timesteps
    from diffusers.utils.torch_utils import randn_tensor

    scheduler = pipe.scheduler
    prediction = scheduler.config.prediction_type
    if prediction not in ("v_prediction", "epsilon"):
        raise InvalidInput(f"An end image needs a scheduler predicting v or epsilon; this model's predicts "
                           f"{prediction!r}: leave out the end image.")
    num_frames, steps = spec.num_frames, spec.num_inference_steps
    device = pipe._execution_device  # where the weights run (differs from pipe.device under CPU offload)
    cfg = spec.uses_cfg  # as the pipeline decides classifier-free guidance

    # 1. Encode both images (noise for the first image, then the last, from the run's generator)
    start = _Conditioning(pipe, image, spec, generator, device, cfg, num_frames)
    end = _Conditioning(pipe, end_image, spec, generator, device, cfg, num_frames)
    dtype = start.embeddings.dtype

    # 2. Added time ids (the pipeline conditions on fps - 1), timesteps, initial noise
    ids = torch.tensor([[spec.effective_conditioning_fps - 1, spec.motion_bucket_id, spec.noise_aug_strength]],
                       dtype=dtype)
    added_time_ids = (torch.cat([ids, ids]) if cfg else ids).to(device)
    timesteps, _ = retrieve_timesteps(scheduler, steps, device, None, None)
    sigmas = scheduler.sigmas.to(torch.float32)
    latents = pipe.prepare_latents(1, num_frames, pipe.unet.config.in_channels, spec.height, spec.width, dtype,
                                   device, generator, None)

    # 3. Guidance per frame, as the pipeline sets it (also in the flipped pass: frames near the
    #    conditioning image get the low end)
    guidance = torch.linspace(spec.min_guidance_scale, spec.max_guidance_scale, num_frames)
    guidance = guidance.to(device, dtype).view(1, num_frames, 1, 1, 1)  # (1, T) broadcast over (1, T, C, h, w)

    passes = _CachePerDirection(cache)

    def clean_estimate(x, t, sigma, cond: _Conditioning, direction: str):
        """The guided x0 estimate of latents `x` at noise level `sigma` (the scheduler's formulas)."""
        model_in = torch.cat([x] * 2) if cfg else x
        model_in = model_in / ((sigma**2 + 1) ** 0.5)  # scheduler.scale_model_input
        model_in = torch.cat([model_in.to(dtype), cond.latents], dim=2)
        with passes.use(direction):
            out = pipe.unet(model_in, t, encoder_hidden_states=cond.embeddings, added_time_ids=added_time_ids,
                            return_dict=False)[0]
        if cfg:
            uncond, text = out.chunk(2)
            out = uncond + guidance * (text - uncond)
        out, x = out.to(torch.float32), x.to(torch.float32)
        if prediction == "v_prediction":
            return out * (-sigma / (sigma**2 + 1) ** 0.5) + x / (sigma**2 + 1)
        return x - sigma * out  # epsilon

    def euler(x, x0, sigma, nxt):
        return (x0 + (x.to(torch.float32) - x0) / sigma * nxt).to(dtype)

    # 4. Denoising: per step, forward in time from the first image, re-noise, backward from the last
    for i, t in enumerate(timesteps):
        sigma, nxt = sigmas[i].to(device), sigmas[i + 1].to(device)
        x0 = clean_estimate(latents, t, sigma, start, "forward")
        x0[:, -1] = end.target
        latents = euler(latents, x0, sigma, nxt)

        noise = randn_tensor(latents.shape, generator=generator, device=device, dtype=torch.float32)
        latents = (latents.to(torch.float32) + noise * (sigma**2 - nxt**2).clamp(min=0) ** 0.5).to(dtype)

        flipped = latents.flip(1)
        x0 = clean_estimate(flipped, t, sigma, end, "backward")
        x0[:, -1] = start.target
        latents = euler(flipped, x0, sigma, nxt).flip(1)

        if on_step_end is not None:
            on_step_end(pipe, i, t, {})
    pipe.maybe_free_model_hooks()
    return latents


class _CachePerDirection:
    """Fast mode: DeepCache's deep features are reused within one direction of time, never across
    (the two passes see different conditioning and a flipped clip). One attached cache, its state
    swapped per direction, so each direction runs full every `interval` of its own steps."""

    def __init__(self, cache):
        self.cache = cache
        self.state = {"forward": (0, None), "backward": (0, None)}

    def use(self, direction: str):
        import contextlib

        cache = self.cache
        if cache is None:
            return contextlib.nullcontext()

        @contextlib.contextmanager
        def swapped():
            cache.step, cache.cached = self.state[direction]
            try:
                yield
            finally:
                self.state[direction] = (cache.step, cache.cached)

        return swapped()
