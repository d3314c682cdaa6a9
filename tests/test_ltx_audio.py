"""A model that makes sound (the built-in tiny-ltx2: LTX-2's architecture at toy width, random weights, so its sound is
noise) end to end: the engine's soundtrack is the stock pipeline's waveform, and generate, batch, the API, `--server`
and the web UI write and play the same sound. The writers and the timeline operations on a real waveform are in
test_audio.py."""

from __future__ import annotations

import hashlib
import shutil

import av
import httpx
import numpy as np
import pytest

from conftest import ServeProcess, cached_engine, run_cli
from stillmotion.spec import GenerationSpec
from stillmotion.video import read_sidecar
from stillmotion.video.audio import frame_sample, pcm_sha256, read_audio

MODEL = "tiny-ltx2"
SPEC = dict(width=64, height=64, num_frames=9, num_inference_steps=2, seed=5)
SIZE = ["--width", "64", "--height", "64", "--frames", "9", "--steps", "2"]
FLAGS = [*SIZE, "--seed", "5"]
CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def engine():
    return cached_engine(MODEL, device="cpu")


@pytest.fixture(scope="module")
def image():
    from PIL import Image

    rng = np.random.default_rng(11)
    return Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def result(engine, image):
    return engine.generate(image, GenerationSpec(**SPEC))


def test_the_soundtrack_is_the_stock_pipelines_and_every_format_carries_it(engine, image, result, tmp_path):
    import torch

    # the stock LTX2ImageToVideoPipeline, called with the same arguments, makes the same waveform
    spec = result.spec
    out = engine.pipe(image=image, prompt="", height=spec.height, width=spec.width, num_frames=spec.num_frames,
                      frame_rate=spec.fps, num_inference_steps=spec.num_inference_steps,
                      generator=torch.Generator("cpu").manual_seed(spec.seed), output_type="np")
    stock = out.audio[0].float().cpu().numpy()
    sound = result.audio
    assert sound is not None and sound.channels == 2 and sound.rate == engine.pipe.vocoder.config.output_sampling_rate
    np.testing.assert_allclose(sound.samples, stock, atol=1e-5)

    # frame formats: the WAV beside equals it exactly; the sidecar names it and hashes its samples
    for fmt in ("gif", "png"):
        art = result.save(tmp_path / f"clip.{fmt}")
        wav = read_audio(tmp_path / "clip.wav")
        assert np.array_equal(wav.samples, sound.samples) and wav.rate == sound.rate
        rec = read_sidecar(art.path)["audio"]
        assert rec["file"] == "clip.wav" and rec["sha256"] == pcm_sha256(sound) and rec["channels"] == 2
        assert rec["source_rate"] == rec["sample_rate"] == sound.rate

    # mp4: an AAC track at the model's rate (16 kHz is an AAC rate). The sound is noise (random weights) and AAC is
    # lossy, worst on noise: decoded after the encoder's priming it lines up (no lag) with correlation over 0.9
    # (measured 0.977 and 0.986 for the two channels of this clip), not sample for sample. (Opus codes noise by its
    # band energies, not its waveform: 0.12-0.30 here, so its waveform is checked on a chirp mix in test_audio.py.)
    art = result.save(tmp_path / "clip.mp4")
    with av.open(str(art.path)) as c:
        (a,) = c.streams.audio
        assert a.codec_context.name == "aac" and a.codec_context.sample_rate == sound.rate
    back = read_audio(art.path)
    for ch in range(2):
        x, y = back.samples[ch, : len(sound)], sound.samples[ch]
        assert len(back) >= len(sound)
        assert float(np.corrcoef(x, y)[0, 1]) > 0.9
    assert read_sidecar(art.path)["audio"]["sha256"] == pcm_sha256(sound)


def test_no_audio_pingpong_blend_and_interpolation(engine, image, result, tmp_path):
    from stillmotion.errors import InvalidInput
    from stillmotion.video.loop import blend_length

    quiet = engine.generate(image, GenerationSpec(**SPEC, no_audio=True))
    assert quiet.audio is None and np.array_equal(quiet.frames, result.frames)
    art = quiet.save(tmp_path / "quiet.mp4")
    with av.open(str(art.path)) as c:
        assert not c.streams.audio
    assert "audio" not in read_sidecar(art.path)

    with pytest.raises(InvalidInput, match="pingpong would play .* backwards"):
        engine.generate(image, GenerationSpec(**SPEC, loop="pingpong"))
    assert engine.generate(image, GenerationSpec(**SPEC, loop="pingpong", no_audio=True)).audio is None

    n, fps = len(result.frames), result.fps
    looped = engine.generate(image, GenerationSpec(**SPEC, loop="blend"))
    k = blend_length(n)
    assert len(looped.frames) == n - k and len(looped.audio) == frame_sample(n - k, fps, result.audio.rate)

    doubled = engine.generate(image, GenerationSpec(**SPEC, interpolate=2))  # the duration does not change: nor the sound
    assert doubled.fps == 2 * fps and np.array_equal(doubled.audio.samples, result.audio.samples)


def test_duration_chaining_joins_the_segments_sound(engine, image):
    long = engine.generate(image, GenerationSpec(**SPEC, segments=2))
    frames = len(long.frames)
    assert frames > SPEC["num_frames"] and len(long.audio) == frame_sample(frames, long.fps, long.audio.rate)
    seg0 = engine.generate(image, GenerationSpec(**SPEC)).audio  # segment 0 is the plain run: its sound leads
    seam = frame_sample(long.metadata["segments"][1]["seam_at"], long.fps, seg0.rate)
    np.testing.assert_array_equal(long.audio.samples[:, :seam], seg0.samples[:, :seam])


def test_cli_and_batch_write_the_sound_and_refuse_in_one_line(tmp_path, result):
    from PIL import Image

    Image.fromarray(np.asarray(result.frames[0])).save(tmp_path / "in.png")
    out = tmp_path / "v.gif"
    code, _, err = run_cli("generate", str(tmp_path / "in.png"), "--model", MODEL, *FLAGS, "-o", str(out))
    assert code == 0, err
    wav = tmp_path / "v.wav"
    assert wav.is_file() and read_sidecar(out)["audio"]["file"] == "v.wav"

    # refused before any work, one line, nothing written
    for flags, says in ((["--loop", "pingpong"], "backwards"), (["--audio", str(wav), "--loop", "pingpong"], "backwards")):
        code, _, err = run_cli("generate", str(tmp_path / "in.png"), "--model", MODEL, *FLAGS, *flags,
                               "-o", str(tmp_path / "no.mp4"))
        assert code == 2 and says in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "no.mp4").exists()

    # batch writes what a local run of the item's seed writes: the gif, the WAV beside it, the sidecar
    (tmp_path / "imgs").mkdir()
    shutil.copy(tmp_path / "in.png", tmp_path / "imgs" / "v.png")
    code, _, err = run_cli("batch", str(tmp_path / "imgs"), str(tmp_path / "batch"), "--model", MODEL, *SIZE,
                           "--format", "gif", "--device", "cpu")
    assert code == 0, err
    seed = read_sidecar(tmp_path / "batch" / "v.gif")["spec"]["seed"]
    code, _, err = run_cli("generate", str(tmp_path / "in.png"), "--model", MODEL, *SIZE, "--seed", str(seed),
                           "-o", str(tmp_path / "local" / "v.gif"))
    assert code == 0, err
    for name in ("v.gif", "v.wav"):
        assert (tmp_path / "batch" / name).read_bytes() == (tmp_path / "local" / name).read_bytes(), name
    assert read_sidecar(tmp_path / "batch" / "v.gif")["audio"] == read_sidecar(tmp_path / "local" / "v.gif")["audio"]


@pytest.fixture(scope="module")
def sound_server(tmp_path_factory):
    srv = ServeProcess(tmp_path_factory.mktemp("ltx-serve"), model=MODEL)
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


def test_api_and_server_runs_write_what_a_local_run_writes(sound_server, tmp_path, result):
    from PIL import Image

    Image.fromarray(np.asarray(result.frames[0])).save(tmp_path / "in.png")
    # the API's content is the muxed file
    with open(tmp_path / "in.png", "rb") as f:
        r = httpx.post(sound_server.url + "/v1/videos", files={"image": ("in.png", f, "image/png")},
                       data={k: str(v) for k, v in SPEC.items()}, headers={"Prefer": "wait=120"}, timeout=180)
    job = r.json()
    assert job["status"] == "succeeded", job
    body = httpx.get(sound_server.url + job["urls"]["content"], timeout=60).content
    (tmp_path / "api.mp4").write_bytes(body)
    with av.open(str(tmp_path / "api.mp4")) as c:
        assert c.streams.audio[0].codec_context.name == "aac"
    assert job["output"]["audio_url"] is None  # mp4 carries it inside

    # --server: an mp4 with its AAC track, a gif with the WAV beside it, the bytes of a local run's
    for where in ("remote", "local"):
        (tmp_path / where).mkdir()
        server = ["--server", sound_server.url] if where == "remote" else ["--model", MODEL, "--device", "cpu"]
        for name in ("c.gif", "m.mp4"):
            code, _, err = run_cli("generate", str(tmp_path / "in.png"), *server, *FLAGS, "-o", str(tmp_path / where / name))
            assert code == 0, err
    assert not (tmp_path / "remote" / "m.wav").exists()
    for name in ("c.gif", "c.wav", "m.mp4"):
        assert (tmp_path / "remote" / name).read_bytes() == (tmp_path / "local" / name).read_bytes(), name
    remote = read_sidecar(tmp_path / "remote" / "c.gif")["audio"]
    assert remote == read_sidecar(tmp_path / "local" / "c.gif")["audio"] and remote["file"] == "c.wav"
    wav = (tmp_path / "remote" / "c.wav").read_bytes()
    assert hashlib.sha256(wav[wav.index(b"data") + 8:]).hexdigest() == remote["sha256"]


@pytest.mark.browser
@pytest.mark.skipif(shutil.which(CHROMIUM) is None, reason="Debian chromium is not installed")
def test_the_web_page_plays_the_sound(sound_server, tmp_path, result):
    from PIL import Image
    from playwright.sync_api import sync_playwright

    from test_server_ui import ARGS, _set_number

    Image.fromarray(np.asarray(result.frames[0])).save(tmp_path / "in.png")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[*ARGS, "--autoplay-policy=no-user-gesture-required"])
        try:
            page = browser.new_page()
            page.goto(sound_server.url + "/", wait_until="domcontentloaded", timeout=120_000)
            page.locator("#sm-image input[type=file]").set_input_files(str(tmp_path / "in.png"), timeout=120_000)
            page.locator("#sm-crop img").wait_for(timeout=60_000)
            page.get_by_text("Advanced settings").click()
            _set_number(page, "sm-width", 64)
            _set_number(page, "sm-height", 64)
            _set_number(page, "sm-steps", 2)
            page.locator("#sm-generate").click()
            page.wait_for_function("() => { const v = document.querySelector('#sm-video video');"
                                   " return v && v.readyState >= 2 && v.duration > 0; }", timeout=240_000)
            played = page.evaluate("""async () => {
                const v = document.querySelector('#sm-video video');
                v.currentTime = 0; await v.play();
                await new Promise(r => setTimeout(r, 1500));
                return {muted: v.muted, volume: v.volume, audio: v.webkitAudioDecodedByteCount,
                        video: v.webkitVideoDecodedByteCount};
            }""")
            assert played["muted"] is False and played["volume"] > 0, played
            assert played["audio"] > 0 and played["video"] > 0, played  # Chromium decoded the AAC track
        finally:
            browser.close()


# --------------------------------------------------------------------------- --audio FILE: the video follows a soundtrack
def _tones(rate: int, seconds: float, channels: int) -> np.ndarray:
    """A chord that AAC keeps well (tones, not noise): (channels, n) float32."""
    t = np.arange(int(rate * seconds)) / rate
    waves = [0.4 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 1320 * t),
             0.4 * np.sin(2 * np.pi * 660 * t) + 0.2 * np.sin(2 * np.pi * 990 * t)]
    return np.stack(waves[:channels]).astype(np.float32)


def _write_m4a(path, samples: np.ndarray, rate: int) -> None:
    """An AAC .m4a written with PyAV, the way a phone or an editor hands one over."""
    with av.open(str(path), "w", format="mp4") as c:
        stream = c.add_stream("aac", rate=rate, layout="mono" if len(samples) == 1 else "stereo")
        for start in range(0, samples.shape[1], 1024):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples[:, start:start + 1024]), format="fltp",
                                               layout="mono" if len(samples) == 1 else "stereo")
            frame.sample_rate, frame.pts = rate, start
            for packet in stream.encode(frame):
                c.mux(packet)
        for packet in stream.encode(None):
            c.mux(packet)


def _slaney_log_mel(wave: np.ndarray, rate: int, hop: int, bins: int) -> np.ndarray:
    """LTX-2's log-mel written out in numpy (librosa's slaney filters and a centred, reflect-padded periodic-Hann STFT
    of 1024, magnitude, log of at least 1e-5): (1, channels, frames, bins), the audio VAE's input."""
    n_fft = 1024
    padded = np.pad(wave.astype(np.float64), ((0, 0), (n_fft // 2, n_fft // 2)), mode="reflect")
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    count = 1 + wave.shape[1] // hop
    frames = np.stack([padded[:, i * hop:i * hop + n_fft] * window for i in range(count)], axis=1)
    magnitude = np.abs(np.fft.rfft(frames, axis=-1))  # (channels, frames, 513)

    def to_mel(f):
        f = np.asarray(f, dtype=np.float64)
        return np.where(f < 1000, f * 3 / 200, 15 + np.log(np.maximum(f, 1e-9) / 1000) / (np.log(6.4) / 27))

    def to_hz(m):
        return np.where(m < 15, m * 200 / 3, 1000 * np.exp((m - 15) * np.log(6.4) / 27))

    points = to_hz(np.linspace(to_mel(0), to_mel(rate / 2), bins + 2))
    ramps = points[:, None] - np.linspace(0, rate / 2, n_fft // 2 + 1)[None, :]
    width = np.diff(points)
    bank = np.maximum(0, np.minimum(-ramps[:-2] / width[:-1, None], ramps[2:] / width[1:, None]))
    bank *= (2.0 / (points[2:] - points[:-2]))[:, None]  # slaney: each filter's area is one
    mel = np.einsum("mf,ctf->ctm", bank, magnitude)
    return np.log(np.maximum(mel, 1e-5))[None].astype(np.float32)


def _reference_latents(pipe, audio, frames: int, fps: float):
    """The soundtrack's raw audio latents, written out: at the audio VAE's rate, cut or padded to frames / fps, both
    channels, the log-mel above, the posterior's mean, the pipeline's audio_num_frames of it."""
    import torch

    from stillmotion.video.audio import resample

    vae = pipe.audio_vae
    rate, hop, bins = vae.config.sample_rate, vae.config.mel_hop_length, vae.config.mel_bins
    n = round(frames / fps * rate)
    wave = resample(audio, rate).samples[:, :n]
    wave = np.concatenate([wave, np.zeros((wave.shape[0], n - wave.shape[1]), np.float32)], axis=1)
    wave = np.repeat(wave, 2, axis=0) if len(wave) == 1 else wave
    with torch.no_grad():
        z = vae.encode(torch.from_numpy(_slaney_log_mel(wave, rate, hop, bins))).latent_dist.mode()
    return z[:, :, :round(frames / fps * rate / hop / 4)]


def _stock_following(pipe, image, spec, latents, end_image=None):
    """What LTX2DFRPipeline's freeze_audio does, on the stock LTX2ImageToVideoPipeline (with an end image, the stock
    LTX2ConditionPipeline on the same components, the image at latent index 0 and the end image at -1), written out
    plainly: the latents go in as audio_latents, and every transformer call reads them clean (packed, normalised) at
    audio timestep and sigma 0."""
    import torch
    from diffusers import LTX2ConditionPipeline
    from diffusers.pipelines.ltx2.pipeline_ltx2_condition import LTX2VideoCondition

    tokens = pipe._normalize_audio_latents(pipe._pack_audio_latents(latents), pipe.audio_vae.latents_mean,
                                           pipe.audio_vae.latents_std)

    def clean(_module, args, kwargs):
        batch = kwargs["audio_hidden_states"].shape[0]
        kwargs["audio_hidden_states"] = tokens.expand(batch, -1, -1).to(kwargs["audio_hidden_states"].dtype)
        kwargs["audio_timestep"] = kwargs["audio_sigma"] = torch.zeros(batch)
        return args, kwargs

    handle = pipe.transformer.register_forward_pre_hook(clean, with_kwargs=True)
    try:
        args = dict(prompt="", height=spec.height, width=spec.width, num_frames=spec.num_frames, frame_rate=spec.fps,
                    num_inference_steps=spec.num_inference_steps, audio_latents=latents,
                    generator=torch.Generator("cpu").manual_seed(spec.seed), output_type="np")
        if end_image is None:
            out = pipe(image=image, **args)
        else:
            cond = LTX2ConditionPipeline(**pipe.components)
            out = cond(conditions=[LTX2VideoCondition(frames=image, index=0),
                                   LTX2VideoCondition(frames=end_image, index=-1)], **args)
    finally:
        handle.remove()
    return np.clip(np.round(out.frames[0] * 255), 0, 255).astype(np.uint8), tokens


@pytest.fixture(scope="module")
def voice(tmp_path_factory):
    """A 0.5 s stereo WAV at 44.1 kHz (longer than the 9-frame clip: trimmed) and a 0.25 s mono 22.05 kHz m4a
    (shorter: padded with silence)."""
    from stillmotion.video.audio import Audio, write_wav

    folder = tmp_path_factory.mktemp("voice")
    write_wav(folder / "voice.wav", Audio(_tones(44100, 0.5, 2), 44100))
    _write_m4a(folder / "short.m4a", _tones(22050, 0.25, 1), 22050)
    return folder


def test_the_video_follows_a_given_soundtrack_as_the_stock_pipeline_does(engine, image, result, voice, tmp_path):
    """diffusers' LTX2DFRPipeline(freeze_audio=True) is not the reference here: it is the distilled DFR sampler (no
    CFG, its frame conditioning blended in x0 on a padded canvas with generated keyframe slots, which need an LTX-2.5
    transformer), not LTX2ImageToVideoPipeline's steps, so no argument list makes the two the same run. The reference
    is the stock LTX2ImageToVideoPipeline with freeze_audio written out (_stock_following), on latents encoded in
    numpy (_reference_latents); the run must also show that every transformer call saw those latents at sigma 0."""
    import torch

    from stillmotion.families.ltx_audio import log_mel
    from stillmotion.video.audio import fit, frame_sample, read_audio, resample

    spec = result.spec
    given = read_audio(voice / "voice.wav")
    pipe = engine.pipe

    # the log-mel is LTX-2's: torch.stft + transformers' slaney bank = the numpy one written out above
    wave = resample(given, 16000).samples[:, :frame_sample(9, spec.fps, 16000)]
    np.testing.assert_allclose(log_mel(wave, 16000, 160, 8).numpy(), _slaney_log_mel(wave, 16000, 160, 8), atol=2e-4)

    # the CLI run: frames within 2 levels of the stock pipeline following the same latents
    from PIL import Image

    Image.fromarray(np.asarray(image)).save(tmp_path / "in.png")
    code, _, err = run_cli("generate", str(tmp_path / "in.png"), "--model", MODEL, *FLAGS, "--audio",
                           str(voice / "voice.wav"), "-o", str(tmp_path / "f.png"))
    assert code == 0, err
    frames = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in sorted((tmp_path / "f").glob("*.png"))])
    latents = _reference_latents(pipe, given, spec.num_frames, spec.fps)
    stock, tokens = _stock_following(pipe, image, spec, latents)
    assert frames.shape == stock.shape
    assert np.abs(frames.astype(int) - stock).max() <= 2
    assert np.abs(frames.astype(int) - result.frames).mean() > 1  # the sound really conditions the picture

    # every transformer call (the CFG batch, STG, modality isolation) read the clean latents at timestep and sigma 0
    seen = []

    def look(_module, _args, kwargs, _out):
        seen.append((kwargs["audio_hidden_states"].clone(), kwargs["audio_timestep"].clone(),
                     kwargs["audio_sigma"].clone(), kwargs["timestep"].abs().max().item()))

    handle = pipe.transformer.register_forward_hook(look, with_kwargs=True)
    try:
        again = engine.generate(image, GenerationSpec(**SPEC), audio=given, audio_source="voice.wav")
    finally:
        handle.remove()
    assert np.array_equal(again.frames, frames) and not pipe.transformer._forward_pre_hooks  # the hook is off again
    assert len(seen) >= spec.num_inference_steps and any(t > 0 for *_, t in seen)  # the video did denoise
    for states, step, sigma, _ in seen:
        torch.testing.assert_close(states, tokens.expand(len(states), -1, -1).to(states.dtype))
        assert not step.any() and not sigma.any()

    # the PNG frames' WAV is the given soundtrack, cut to the video's length at its own rate, exactly
    wav = read_audio(tmp_path / "f.wav")
    fitted = fit(given, spec.num_frames, spec.fps)
    assert wav.rate == 44100 and np.array_equal(wav.samples, fitted.samples)
    rec = read_sidecar(tmp_path / "f")["audio"]  # -o f.png: the frames folder f/
    assert rec["given"] == {"source": str(voice / "voice.wav"), "rate": 44100, "channels": 2, "seconds": 0.5,
                            "trimmed_seconds": round(0.5 - len(fitted) / 44100, 6), "padded_seconds": 0.0}
    assert rec["sha256"] == pcm_sha256(fitted) and rec["file"] == "f.wav"


def test_an_m4a_soundtrack_is_padded_and_muxed_and_no_audio_drops_it(image, result, voice, tmp_path):
    from PIL import Image

    from stillmotion.video.audio import fit, read_audio

    Image.fromarray(np.asarray(image)).save(tmp_path / "in.png")
    code, _, err = run_cli("generate", str(tmp_path / "in.png"), "--model", MODEL, *FLAGS, "--audio",
                           str(voice / "short.m4a"), "-o", str(tmp_path / "m.mp4"))
    assert code == 0, err
    given = read_audio(voice / "short.m4a")
    fitted = fit(given, result.spec.num_frames, result.spec.fps)
    rec = read_sidecar(tmp_path / "m.mp4")["audio"]
    assert rec["codec"] == "aac" and rec["sample_rate"] == 22050 and rec["sha256"] == pcm_sha256(fitted)
    assert rec["given"]["padded_seconds"] == round((len(fitted) - len(given)) / 22050, 6) > 0
    # the MP4's AAC track decodes to the given sound (tones) after the codec's padding
    back = read_audio(tmp_path / "m.mp4")
    assert back.rate == 22050 and len(back) >= len(fitted)
    x, y = back.samples[0, :len(given)], fitted.samples[0, :len(given)]
    assert float(np.corrcoef(x, y)[0, 1]) > 0.95, float(np.corrcoef(x, y)[0, 1])
    assert np.abs(back.samples[0, len(given) + 2048:len(fitted)]).max() < 0.05  # the padding is silence

    # --no-audio: the video still follows the sound (the same frames) but is written without it
    code, _, err = run_cli("generate", str(tmp_path / "in.png"), "--model", MODEL, *FLAGS, "--audio",
                           str(voice / "short.m4a"), "--no-audio", "-o", str(tmp_path / "q.mp4"))
    assert code == 0, err
    with av.open(str(tmp_path / "q.mp4")) as c:
        assert not c.streams.audio
    assert "audio" not in read_sidecar(tmp_path / "q.mp4")


def test_audio_input_refusals_exit_2_with_nothing_written(voice, tmp_path):
    from PIL import Image

    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "in.png")
    (tmp_path / "bad.wav").write_bytes(b"RIFF....WAVEnot really a sound file" * 20)
    cases = [(["--model", "tiny", "--width", "64", "--height", "64", "--frames", "4", "--steps", "2"],
              voice / "voice.wav", "cannot follow a soundtrack"),
             (["--model", "tiny-wan", "--width", "64", "--height", "64", "--frames", "5", "--steps", "2"],
              voice / "voice.wav", "cannot follow a soundtrack"),
             (["--model", MODEL, *FLAGS], tmp_path / "bad.wav", "could not be read as audio")]
    for flags, sound, says in cases:
        code, _, err = run_cli("generate", str(tmp_path / "in.png"), *flags, "--audio", str(sound),
                               "-o", str(tmp_path / "no.mp4"))
        assert code == 2 and says in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "no.mp4").exists() and not (tmp_path / "no.json").exists()


def test_the_api_follows_an_uploaded_soundtrack_and_writes_a_local_runs_bytes(sound_server, engine, image, voice,
                                                                              tmp_path):
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(image)).save(buf, format="PNG")
    png, sound = buf.getvalue(), (voice / "voice.wav").read_bytes()
    r = httpx.post(sound_server.url + "/v1/videos", files={"image": ("in.png", png, "image/png"),
                                                           "audio": ("voice.wav", sound, "audio/wav")},
                   data={k: str(v) for k, v in SPEC.items()}, headers={"Prefer": "wait=120"}, timeout=180)
    job = r.json()
    assert job["status"] == "succeeded", job
    body = httpx.get(sound_server.url + job["urls"]["content"], timeout=60).content
    side = httpx.get(sound_server.url + job["urls"]["content"], params={"variant": "sidecar"}, timeout=60).json()
    assert side["audio"]["given"]["source"] == "voice.wav" and side["input"]["audio"]["source"] == "voice.wav"
    # a local run of the same inputs under the same names (the MP4 carries its sidecar, file name included)
    local = engine.generate(png, GenerationSpec(**SPEC), source="in.png", audio=sound, audio_source="voice.wav")
    art = local.save(tmp_path / side["output"]["file"])
    assert body == art.path.read_bytes()


def test_an_end_image_and_a_soundtrack_together(engine, image, voice):
    """The condition pipeline (the end image) takes audio_latents the same way: the run is the stock
    LTX2ConditionPipeline's with freeze_audio written out, within 2 levels, and differs from the run without sound."""
    from PIL import Image

    from stillmotion.video.audio import fit, read_audio

    end = Image.fromarray(np.asarray(image)[::-1].copy())
    given = read_audio(voice / "voice.wav")
    run = engine.generate(image, GenerationSpec(**SPEC), end_image=end, audio=given)
    spec = run.spec
    stock, _ = _stock_following(engine.pipe, image, spec, _reference_latents(engine.pipe, given, 9, spec.fps), end)
    assert np.abs(run.frames.astype(int) - stock).max() <= 2
    silent = engine.generate(image, GenerationSpec(**SPEC), end_image=end)
    assert np.abs(run.frames.astype(int) - silent.frames).mean() > 1
    assert np.array_equal(run.audio.samples, fit(given, spec.num_frames, spec.fps).samples)


def test_ltx2s_published_audio_vae_encodes_a_soundtrack_to_the_transformers_length():
    """The tiny model's audio VAE is LTX-2's at toy width; at LTX-2's own config (diffusers' defaults: 64 mel bins,
    8 latent channels, 4x in time and mel), on the meta device (shapes only, as engine/ltx2_shape.py counts it), a
    soundtrack encodes to the pipeline's audio_num_frames (25 latents a second) x 16 bins, at 24 and 25 fps."""
    import types

    import torch
    from diffusers import AutoencoderKLLTX2Audio

    from stillmotion.families.ltx_audio import encode_soundtrack
    from stillmotion.video.audio import Audio

    with torch.device("meta"):
        vae = AutoencoderKLLTX2Audio().eval()
    pipe = types.SimpleNamespace(audio_vae=vae, audio_sampling_rate=16000, audio_hop_length=160,
                                 audio_vae_temporal_compression_ratio=vae.temporal_compression_ratio,
                                 audio_vae_mel_compression_ratio=vae.mel_compression_ratio,
                                 _execution_device=torch.device("meta"))
    sound = Audio(np.random.default_rng(0).standard_normal((1, 48000)).astype(np.float32) * 0.1, 48000)
    for frames, fps in ((121, 24), (161, 25)):
        assert tuple(encode_soundtrack(pipe, sound, frames, fps).shape) == (1, 8, round(frames / fps * 25), 16)


def test_server_sends_the_soundtrack_and_writes_a_local_runs_files(sound_server, image, voice, tmp_path):
    """`generate --server URL --audio FILE`: the file goes up under the name a local run records, and the mp4, the gif
    with its WAV beside, and their sidecars' sound are a local run's."""
    from PIL import Image

    Image.fromarray(np.asarray(image)).save(tmp_path / "in.png")
    for where in ("remote", "local"):
        (tmp_path / where).mkdir()
        server = ["--server", sound_server.url] if where == "remote" else ["--model", MODEL, "--device", "cpu"]
        for name in ("c.gif", "m.mp4"):
            code, _, err = run_cli("generate", str(tmp_path / "in.png"), *server, *FLAGS, "--audio",
                                   str(voice / "voice.wav"), "-o", str(tmp_path / where / name))
            assert code == 0, err
    for name in ("c.gif", "c.wav", "m.mp4"):
        assert (tmp_path / "remote" / name).read_bytes() == (tmp_path / "local" / name).read_bytes(), name
    remote = read_sidecar(tmp_path / "remote" / "c.gif")["audio"]
    assert remote == read_sidecar(tmp_path / "local" / "c.gif")["audio"]
    assert remote["given"]["source"] == str(voice / "voice.wav") and remote["file"] == "c.wav"


def test_the_web_page_takes_a_soundtrack_to_follow(sound_server, image, voice, tmp_path):
    """The UI's soundtrack input (shown for LTX-2) goes through the same submit as the API's `audio`: the UI's
    endpoint, called as gradio_client calls it, makes a video whose sidecar names the uploaded file as the given
    soundtrack."""
    from gradio_client import Client, handle_file
    from PIL import Image

    Image.fromarray(np.asarray(image)).save(tmp_path / "in.png")
    c = Client(sound_server.url + "/", verbose=False, download_files=str(tmp_path))
    video, _, info = c.predict(image=handle_file(str(tmp_path / "in.png")), seed=5, random_seed=False, frames=9,
                               steps=2, width=64, height=64, audio=handle_file(str(voice / "voice.wav")),
                               api_name="/generate")
    assert "Seed used: 5" in info, info
    jobs = httpx.get(sound_server.url + "/v1/videos", params={"source": "ui"}, timeout=30).json()["data"]
    side = httpx.get(sound_server.url + f"/v1/videos/{jobs[0]['id']}/content", params={"variant": "sidecar"},
                     timeout=30).json()
    assert side["audio"]["given"]["source"] == "voice.wav" and side["audio"]["given"]["trimmed_seconds"] > 0
