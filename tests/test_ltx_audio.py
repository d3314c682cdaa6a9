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
    for flags, says in ((["--loop", "pingpong"], "backwards"), (["--audio", str(wav)], "cannot follow a soundtrack")):
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
