"""Audio end to end, on a real waveform through the real writers and readers (PyAV): the muxed tracks, the WAV beside
frame formats, the sidecar's record, and the timeline operations (loops, chaining, interpolation) keeping picture and
sound together. The model that makes sound (LTX-2) is tested in test_ltx_audio.py."""

from __future__ import annotations

import hashlib
import json

import av
import numpy as np
import pytest

from stillmotion.errors import InvalidInput
from stillmotion.spec import GenerationSpec
from stillmotion.video import read_sidecar, read_video, write
from stillmotion.video.audio import Audio, crossfade, frame_sample, join, pcm_sha256, read_audio, resample, \
    soundtrack_of, wav_path

from conftest import run_cli

RATE = 24000  # LTX-2's vocoder rate (an AAC rate, not an Opus one)


def chirp_mix(seconds: float, rate: int = RATE) -> Audio:
    """Stereo: a 200 -> 1800 Hz chirp on the left, a 330 Hz tone + a 1500 -> 1000 Hz chirp on the right, faded in and out."""
    t = np.arange(int(round(seconds * rate))) / rate
    left = 0.4 * np.sin(2 * np.pi * (200 + 800 * t / seconds) * t)
    right = 0.3 * np.sin(2 * np.pi * 330 * t) + 0.2 * np.sin(2 * np.pi * (1500 - 500 * t / seconds) * t)
    env = np.minimum(1, np.minimum(t, seconds - t) / 0.02)
    return Audio(np.stack([left * env, right * env]).astype(np.float32), rate)


def frames_for(n: int, size: int = 32) -> np.ndarray:
    rng = np.random.default_rng(n)
    base = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
    return np.stack([np.roll(base, i, axis=1) for i in range(n)])


def aligned(decoded: np.ndarray, ref: np.ndarray, max_lag: int = 4096) -> tuple[int, float, float]:
    """(lag, correlation, SNR dB) of a decoded channel against the reference at its best alignment."""
    m = min(len(decoded), len(ref))
    x, y = decoded[:m].astype(np.float64), ref[:m].astype(np.float64)
    corr = np.correlate(x, y[max_lag: m - max_lag], "valid")  # decoded shifted by -max_lag..max_lag
    lag = int(np.argmax(corr)) - max_lag
    xs = x[max(0, lag): m + min(0, lag)]
    ys = y[max(0, -lag): m - max(0, lag)]
    n = min(len(xs), len(ys))
    xs, ys = xs[:n], ys[:n]
    return lag, float(np.corrcoef(xs, ys)[0, 1]), float(10 * np.log10((ys ** 2).sum() / ((xs - ys) ** 2).sum()))


# --------------------------------------------------------------------------- files
@pytest.mark.parametrize("fmt, codec, rate", [("mp4", "aac", RATE), ("webm", "opus", 48000)])
def test_muxed_track_decodes_back_to_the_waveform(tmp_path, fmt, codec, rate):
    """MP4 carries AAC at the model's rate (24 kHz is an AAC rate), WebM Opus at 48 kHz (resampled once, with
    libswresample). Decoded with PyAV, after the codec's priming (the container's edit list / pre-skip), the sound
    is the waveform: no lag, correlation > 0.99. Both codecs are lossy, so SNR is a measured bound. On this chirp
    mix, measured: AAC (FFmpeg's encoder, 96 kb/s a channel) 27 dB over the whole clip, all of the loss in its first
    frames (12 dB over samples 0..2047, its encoder starting up; 63 dB after); Opus (64 kb/s a channel) 41-47 dB
    over the clip, 39 dB after its first 2048 samples. Asserted: the whole clip at 20 (AAC) and 30 dB (Opus), after
    the first 2048 samples at 40 (AAC) and 30 dB (Opus)."""
    audio = chirp_mix(2.0)
    art = write(frames_for(16), tmp_path / f"clip.{fmt}", fps=8, audio=audio)
    assert art.audio is None and not wav_path(art.path).exists()  # muxed, nothing beside
    with av.open(str(art.path)) as c:
        (a,) = c.streams.audio
        assert a.codec_context.name == codec and a.codec_context.sample_rate == rate and a.codec_context.channels == 2
        assert len(c.streams.video) == 1
    back = read_audio(art.path)
    ref = resample(audio, rate)
    assert back.rate == rate and back.channels == 2
    assert abs(len(back) - len(ref)) <= 2048  # only the codec's frame padding
    for ch in range(2):
        lag, corr, snr = aligned(back.samples[ch], ref.samples[ch])
        assert lag == 0 and corr > 0.99 and snr > (20 if fmt == "mp4" else 30), (ch, lag, corr, snr)
        _, _, settled = aligned(back.samples[ch, 2048:], ref.samples[ch, 2048:])
        assert settled > (40 if fmt == "mp4" else 30), (ch, settled)
    frames, fps = read_video(art.path)  # the picture is untouched by the sound
    assert len(frames) == 16 and fps == 8
    side = read_sidecar(art.path)["audio"]
    assert side == {"codec": codec, "sample_rate": rate, "source_rate": RATE,
                    "channels": 2, "samples": len(audio), "seconds": 2.0, "sha256": pcm_sha256(audio)}


def test_aac_resamples_a_rate_it_does_not_have(tmp_path):
    audio = chirp_mix(1.0, rate=22000)  # not an AAC rate
    art = write(frames_for(8), tmp_path / "odd.mp4", fps=8, audio=audio)
    back = read_audio(art.path)
    assert back.rate == 48000 and read_sidecar(art.path)["audio"]["sample_rate"] == 48000
    lag, corr, _ = aligned(back.samples[0], resample(audio, 48000).samples[0])
    assert lag == 0 and corr > 0.99


@pytest.mark.parametrize("fmt", ["gif", "webp", "png"])
def test_frame_formats_get_the_exact_samples_beside_as_wav(tmp_path, fmt):
    audio = chirp_mix(1.0)
    art = write(frames_for(8), tmp_path / f"clip.{fmt}", fps=8, audio=audio)
    wav = tmp_path / "clip.wav"
    assert art.audio == wav and wav.is_file()
    back = read_audio(wav)
    assert back.rate == RATE and np.array_equal(back.samples, audio.samples)  # float32: bit for bit
    side = read_sidecar(art.path)
    assert side["audio"]["file"] == "clip.wav" and side["audio"]["codec"] == "wav"
    # the sidecar's sha256 is that of the WAV's data chunk (float32 little-endian, interleaved)
    data = wav.read_bytes()
    assert side["audio"]["sha256"] == hashlib.sha256(data[data.index(b"data") + 8:]).hexdigest()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temp file left


def test_a_failed_write_leaves_no_wav(tmp_path, monkeypatch):
    import stillmotion.video.writers as writers

    def broken(*a, **k):
        raise ValueError("encoder exploded")

    monkeypatch.setattr(writers, "write_gif", broken)
    with pytest.raises(Exception, match="exploded"):
        write(frames_for(4), tmp_path / "clip.gif", fps=8, audio=chirp_mix(0.5))
    assert list(tmp_path.iterdir()) == []


def test_mono_and_no_audio(tmp_path):
    mono = Audio(chirp_mix(0.5).samples[:1], RATE)
    art = write(frames_for(4), tmp_path / "m.mp4", fps=8, audio=mono)
    assert read_audio(art.path).channels == 1 and read_sidecar(art.path)["audio"]["channels"] == 1
    art = write(frames_for(4), tmp_path / "silent.mp4", fps=8)
    with av.open(str(art.path)) as c:
        assert not c.streams.audio
    assert "audio" not in read_sidecar(art.path) and soundtrack_of(art.path) is None


def test_read_audio_refuses_what_is_not_sound(tmp_path):
    (tmp_path / "x.wav").write_bytes(b"RIFF1234WAVEnot really")
    with pytest.raises(InvalidInput, match="could not be read as audio"):
        read_audio(tmp_path / "x.wav")
    art = write(frames_for(4), tmp_path / "silent.mp4", fps=8)
    with pytest.raises(InvalidInput, match="no audio stream"):
        read_audio(art.path)
    with pytest.raises(Exception, match="No audio file"):
        read_audio(tmp_path / "absent.mp3")


# --------------------------------------------------------------------------- the timeline
def test_blend_loop_crossfades_the_sound_like_the_frames():
    from stillmotion.video.loop import blend_length
    from stillmotion.video.postprocess import apply_audio

    n, fps = 20, 10
    audio = chirp_mix(n / fps)
    k = blend_length(n)
    out = apply_audio(audio, n, fps, GenerationSpec(loop="blend"))
    at = lambda i: frame_sample(i, fps, RATE)  # noqa: E731
    assert len(out) == at(n - k)  # the looped clip's length: T - K frames
    # frames K..T-K-1 play first, with their own sound
    np.testing.assert_array_equal(out.samples[:, : at(n - 2 * k)], audio.samples[:, at(k): at(n - k)])
    # then the last K frames' sound fades into the first K frames' sound, ending on it: the wrap is seamless
    tail = out.samples[:, at(n - 2 * k):]
    np.testing.assert_allclose(tail, crossfade(audio.samples[:, at(n - k):], audio.samples[:, : at(k)]), atol=1e-6)
    assert np.abs(tail[:, -1] - audio.samples[:, at(k) - 1]).max() < 0.01


def test_pingpong_refuses_a_soundtrack():
    from stillmotion.video.postprocess import apply_audio

    with pytest.raises(InvalidInput, match="backwards.*--no-audio"):
        apply_audio(chirp_mix(1.0), 10, 10, GenerationSpec(loop="pingpong"))
    assert apply_audio(None, 10, 10, GenerationSpec(loop="pingpong")) is None


def test_join_crossfades_where_segments_overlap_and_keeps_each_in_place():
    fps = 8
    a = Audio(np.full((1, RATE), 0.5, np.float32), RATE)  # one second: frames 0..7
    b = Audio(np.full((1, RATE), -0.5, np.float32), RATE)  # starts at frame 6: two frames of overlap
    out = join([(a, 0), (b, 6)], fps).samples[0]
    s6, s8 = frame_sample(6, fps, RATE), frame_sample(8, fps, RATE)
    assert len(out) == s6 + RATE
    assert np.all(out[:s6] == 0.5) and np.all(out[s8:] == -0.5)
    seam = out[s6:s8]
    assert seam[0] > 0.45 and seam[-1] < -0.45 and np.all(np.diff(seam) <= 0)  # a fade, no jump
    assert join([(None, 0), (None, 6)], fps) is None


class SoundingModel:
    """A stand-in for a family that makes sound: frame i of a segment is grey level 10 * i, and its sound is a tone
    of the segment's own frequency, so where each segment's sound lands in the joined video can be read back."""

    def __init__(self, n):
        self.n, self.calls = n, 0

    def sample(self, image, spec, report, cancel, progress_span=(0.0, 1.0), end_image=None):
        from stillmotion.engine import RunRecord

        k, self.calls = self.calls, self.calls + 1
        frames = np.stack([np.full((32, 32, 3), 10 * i + 5 * k, np.uint8) for i in range(self.n)])
        t = np.arange(frame_sample(self.n, spec.fps, RATE)) / RATE
        run = RunRecord(audio=Audio(0.5 * np.sin(2 * np.pi * self.freq(k) * t)[None].astype(np.float32), RATE))
        return frames, run

    @staticmethod
    def freq(k: int) -> float:
        return 300.0 * (k + 1)


def _tone_at(samples: np.ndarray, start: int, stop: int, freqs: list[float]) -> float:
    """The frequency among `freqs` that dominates samples start..stop."""
    x = samples[start:stop]
    t = np.arange(len(x)) / RATE
    power = [abs(np.dot(x, np.exp(-2j * np.pi * f * t))) for f in freqs]
    return freqs[int(np.argmax(power))]


def test_duration_chaining_joins_the_sound_in_sync_with_the_frames():
    from PIL import Image

    from stillmotion.engine.long import generate_long

    model = SoundingModel(8)
    spec = GenerationSpec(width=64, height=64, num_frames=8, num_inference_steps=1, fps=8, seed=3, segments=3)
    frames, fps, run = generate_long(model.sample, Image.new("RGB", (32, 32)), spec, lambda p: None, lambda: False)
    audio = run.audio
    assert audio is not None and len(audio) == frame_sample(len(frames), fps, RATE)  # as long as the video
    freqs = [model.freq(k) for k in range(3)]
    at = lambda i: frame_sample(i, fps, RATE)  # noqa: E731
    for seg in run.segments:  # outside the overlaps, each frame's sound is its own segment's
        k, start, overlap = seg["index"], seg["seam_at"], run.long["overlap"]
        end = run.segments[k + 1]["seam_at"] if k + 1 < len(run.segments) else len(frames)
        lo = start + (overlap if k else 0)
        assert _tone_at(audio.samples[0], at(lo), at(end), freqs) == freqs[k], k
        if k:  # and over the seam, old and new sound are cross-faded: both are there
            seam = audio.samples[0, at(start): at(start + overlap)]
            t = np.arange(len(seam)) / RATE
            both = [abs(np.dot(seam, np.exp(-2j * np.pi * f * t))) for f in (freqs[k - 1], freqs[k])]
            assert min(both) > 0.2 * max(both)


def test_keyframe_chaining_joins_the_sound_at_the_shared_frames():
    from PIL import Image

    from stillmotion.engine.long import generate_keyframes

    model = SoundingModel(5)
    spec = GenerationSpec(width=64, height=64, num_frames=5, num_inference_steps=1, fps=5, seed=3)
    img = Image.new("RGB", (32, 32))
    frames, fps, run = generate_keyframes(model.sample, img, [img, img], spec, lambda p: None, lambda: False)
    assert len(frames) == 9 and len(run.audio) == frame_sample(9, fps, RATE)
    at = lambda i: frame_sample(i, fps, RATE)  # noqa: E731
    freqs = [model.freq(0), model.freq(1)]
    assert _tone_at(run.audio.samples[0], 0, at(4), freqs) == freqs[0]
    assert _tone_at(run.audio.samples[0], at(5), at(9), freqs) == freqs[1]


def test_keyframe_loop_cuts_the_sound_with_the_repeated_frame():
    from stillmotion.engine import RunRecord
    from stillmotion.engine.keyframes import close_loop

    run = RunRecord(audio=chirp_mix(1.0))
    spec = GenerationSpec(fps=10, loop="blend")
    frames, post = close_loop(frames_for(10), spec, run)
    assert len(frames) == 9 and post.loop == "none" and len(run.audio) == frame_sample(9, 10, RATE)


# --------------------------------------------------------------------------- the CLI and the families
@pytest.mark.parametrize("src_fmt, out_fmt", [("mp4", "mp4"), ("webm", "gif")])
def test_interpolate_cli_keeps_the_sound(tmp_path, src_fmt, out_fmt):
    audio = chirp_mix(1.0)
    src = write(frames_for(8), tmp_path / f"in.{src_fmt}", fps=8, audio=audio).path
    before = read_audio(src)
    out = tmp_path / f"out.{out_fmt}"
    code, stdout, err = run_cli("interpolate", str(src), "--factor", "2", "-o", str(out), "--json", "--backend", "blend")
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["audio"] == "kept" and summary["fps"] == 16
    after = read_audio(out) if out_fmt == "mp4" else read_audio(tmp_path / "out.wav")
    if out_fmt == "gif":  # the decoded track, exactly, beside the gif
        np.testing.assert_array_equal(after.samples, before.samples)
    else:  # re-encoded: the same sound, in place (the duration did not change)
        lag, corr, _ = aligned(after.samples[0], before.samples[0])
        assert lag == 0 and corr > 0.99
    code, stdout, err = run_cli("interpolate", str(src), "-o", str(tmp_path / "quiet.mp4"), "--json", "--no-audio",
                                "--backend", "blend")
    assert code == 0 and json.loads(stdout)["audio"] == "dropped"
    assert soundtrack_of(tmp_path / "quiet.mp4") is None


def test_interpolate_cli_reads_the_wav_beside_a_gif(tmp_path):
    audio = chirp_mix(1.0)
    src = write(frames_for(8), tmp_path / "in.gif", fps=8, audio=audio).path
    code, _, err = run_cli("interpolate", str(src), "-o", str(tmp_path / "out.webp"), "--backend", "blend")
    assert code == 0, err
    np.testing.assert_array_equal(read_audio(tmp_path / "out.wav").samples, audio.samples)


def test_no_audio_and_audio_input_are_refused_on_models_without_sound(tmp_path, image_file):
    (tmp_path / "song.wav").write_bytes(b"")
    wav = tmp_path / "tone.wav"
    from stillmotion.video.audio import write_wav

    write_wav(wav, chirp_mix(0.5))
    out = tmp_path / "v.mp4"
    code, _, err = run_cli("generate", str(image_file), "--model", "tiny", "--no-audio", "-o", str(out))
    assert code == 2 and "--no-audio (no_audio) is a setting of ltx2 models" in err and not out.exists()
    code, _, err = run_cli("generate", str(image_file), "--model", "tiny", "--audio", str(wav), "-o", str(out))
    assert code == 2 and "cannot follow a soundtrack (--audio)" in err and not out.exists()
    code, _, err = run_cli("generate", str(image_file), "--model", "tiny", "--audio", str(tmp_path / "song.wav"),
                           "-o", str(out))
    assert code == 2 and "could not be read as audio" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli("generate", str(image_file), "--model", "tiny", "--audio", str(tmp_path / "none.mp3"),
                           "-o", str(out))
    assert code == 2 and "No audio file" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["input.png", "song.wav", "tone.wav"]


def test_pingpong_is_refused_before_any_work_for_a_family_with_sound():
    from stillmotion.families.base import Family
    from stillmotion.models.registry import get_entry

    class Sounding(Family):
        name, label, sound = "ltx2", "LTX-2", True

    entry = get_entry("tiny")
    with pytest.raises(InvalidInput, match="pingpong would play tiny's soundtrack backwards"):
        Sounding().check(GenerationSpec(loop="pingpong"), entry)
    Sounding().check(GenerationSpec(loop="pingpong", no_audio=True), entry)
    Sounding().check(GenerationSpec(loop="blend"), entry)
