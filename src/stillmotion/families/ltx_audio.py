"""LTX-2 following a given soundtrack (--audio FILE): audio-to-video on the stock image-to-video pipeline.

LTX-2 follows a soundtrack the way it was trained to and the way diffusers' LTX2DFRPipeline does it with
`freeze_audio=True`: the audio latents are held clean (timestep and sigma 0, no audio step) while the video denoises
and attends to them through the audio-to-video cross-attention. LTX2ImageToVideoPipeline (and LTX2ConditionPipeline)
have no such switch, so it is built from what they have: the soundtrack's latents go in as `audio_latents` (which sets
the audio length), and for the one run a forward pre-hook on the transformer hands every call (the CFG batch, STG and
modality-isolation passes) those clean latents at audio timestep and sigma 0, whatever the pipeline's own audio
state has become. The transformer falls back from `audio_sigma` to the video's `sigma` when the pipeline does not
pass it (LTX-2.3's cross-timestep modulation reads it), so the hook sets it too.

Encoding is LTX-2's own (Lightricks' ltx-core `AudioProcessor` and `encode_audio`): the waveform at the audio VAE's
`sample_rate`, stereo, to a log-mel spectrogram (`n_fft` 1024 = the window, the VAE's `mel_hop_length`, `mel_bins`
slaney-scale slaney-normalised filters from 0 to half the rate, magnitude, centred with reflect padding, log of at
least 1e-5), encoded by the audio VAE; the latents are the posterior's mean (ltx-core keeps the first half of the
encoder's channels), cut to the pipeline's `audio_num_frames` for the video's duration (frames / fps).
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np

N_FFT = 1024  # LTX-2's STFT filter length (ltx-core: the audio VAE config's preprocessing.stft.filter_length)
LOG_FLOOR = 1e-5  # the log-mel's floor (ltx-core's clamp)


def audio_num_frames(pipe, num_frames: int, fps: float) -> int:
    """The audio latent length the pipeline gives a video of `num_frames` at `fps` (its `audio_num_frames`)."""
    per_second = pipe.audio_sampling_rate / pipe.audio_hop_length / float(pipe.audio_vae_temporal_compression_ratio)
    return round(num_frames / fps * per_second)


def log_mel(samples: np.ndarray, rate: int, hop: int, mel_bins: int):
    """(channels, n) float32 at `rate` -> the audio VAE's input, a log-mel spectrogram (1, channels, frames, mel_bins)
    as ltx-core computes it (torchaudio's MelSpectrogram with LTX-2's settings, here on torch.stft and transformers'
    slaney filter bank: torchaudio has no build for every torch)."""
    import torch
    from transformers.audio_utils import mel_filter_bank

    wave = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))
    spec = torch.stft(wave, n_fft=N_FFT, hop_length=hop, win_length=N_FFT, window=torch.hann_window(N_FFT),
                      center=True, pad_mode="reflect", normalized=False, onesided=True, return_complex=True).abs()
    bank = mel_filter_bank(num_frequency_bins=N_FFT // 2 + 1, num_mel_filters=mel_bins, min_frequency=0.0,
                           max_frequency=rate / 2.0, sampling_rate=rate, norm="slaney", mel_scale="slaney")
    mel = torch.einsum("fm,cft->cmt", torch.from_numpy(bank).float(), spec)  # (channels, mel_bins, frames)
    return torch.log(torch.clamp(mel, min=LOG_FLOOR)).permute(0, 2, 1).unsqueeze(0).contiguous()


def encode_soundtrack(pipe, audio, num_frames: int, fps: float):
    """A soundtrack (video.audio.Audio) -> the raw audio latents (1, channels, audio_num_frames, latent mel bins) the
    pipeline takes as `audio_latents`, for a video of `num_frames` at `fps`: resampled to the audio VAE's rate, cut or
    padded with silence to the video's duration, stereo (a mono file on both channels)."""
    import torch

    from ..errors import InvalidInput
    from ..video.audio import fit_length, frame_sample, resample

    vae = pipe.audio_vae
    rate, hop, bins = int(vae.config.sample_rate), int(vae.config.mel_hop_length), int(vae.config.mel_bins)
    n = frame_sample(num_frames, fps, rate)
    # the STFT's reflect padding needs more than half a window: a shorter clip is padded with silence (the latents
    # past the video's length are cut off below)
    samples = fit_length(fit_length(resample(audio, rate).samples, n), max(n, N_FFT // 2 + 1))
    channels = int(vae.config.in_channels)
    if samples.shape[0] != channels:
        samples = np.repeat(samples[:1], channels, axis=0) if samples.shape[0] == 1 else samples.mean(0, keepdims=True)
    mel = log_mel(samples, rate, hop, bins)
    device = pipe._execution_device
    with torch.inference_mode():
        latents = vae.encode(mel.to(device=device, dtype=vae.dtype)).latent_dist.mode()
    length = audio_num_frames(pipe, num_frames, fps)
    want = (int(vae.config.latent_channels), bins // pipe.audio_vae_mel_compression_ratio)
    if (latents.shape[1], latents.shape[3]) != want or latents.shape[2] < length:
        raise InvalidInput(f"This model's audio VAE encodes a soundtrack to {tuple(latents.shape[1:])} latents, not the "
                           f"{want[0]} channels x {length} frames x {want[1]} bins its transformer takes: it cannot "
                           "follow a soundtrack; leave --audio out.")
    return latents[:, :, :length].float()


def clean_tokens(pipe, latents):
    """Raw audio latents (1, C, L, M) -> what the transformer's audio stream reads: packed (1, L, C*M) and normalised
    with the audio VAE's statistics, as the pipeline's prepare_audio_latents makes them at noise 0."""
    packed = pipe._pack_audio_latents(latents)
    return pipe._normalize_audio_latents(packed, pipe.audio_vae.latents_mean, pipe.audio_vae.latents_std)


@contextlib.contextmanager
def frozen_audio(transformer, tokens):
    """For the calls inside: every transformer call's audio stream is `tokens` (repeated to the call's batch) at
    audio timestep and sigma 0 (LTX2DFRPipeline's freeze_audio); the hook is off again when the block ends or raises."""
    import torch

    def hook(_module, args: tuple, kwargs: dict[str, Any]):
        given = kwargs["audio_hidden_states"]
        batch = given.shape[0]
        kwargs["audio_hidden_states"] = tokens.to(device=given.device, dtype=given.dtype).expand(batch, -1, -1)
        step = kwargs.get("audio_timestep")
        step = kwargs["timestep"] if step is None else step
        zero = torch.zeros(batch, device=step.device, dtype=step.dtype)
        kwargs["audio_timestep"] = zero
        kwargs["audio_sigma"] = zero
        return args, kwargs

    handle = transformer.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()
