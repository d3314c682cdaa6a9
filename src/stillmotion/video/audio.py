"""A video's soundtrack: the one type every layer passes audio in (a family's decode makes it, the engine
carries it in GenerationResult.audio, the writers mux it or write it beside the file), and what the
timeline operations do to it.

- Files: MP4 carries AAC (at the model's rate when it is one AAC has, else 48 kHz), WebM Opus (48 kHz,
  the rate Opus decodes at); GIF, WebP and PNG frames get ``NAME.wav`` beside them, float32 so the
  samples are the model's exactly. `record()` is what the sidecar says of it.
- Time: the audio plays from the video's first frame; frame i starts at i / fps seconds, so every
  timeline operation (chaining, loops) places and cuts sound at `frame_sample(i, fps, rate)`.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InvalidInput, NotFound

# the rates the AAC encoder takes; another model rate is resampled to 48 kHz
AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)
OPUS_RATE = 48000  # Opus decodes at 48 kHz whatever it was fed; resampling once, here, keeps it exact in time
CODECS = {"mp4": "aac", "webm": "opus", "gif": "wav", "webp": "wav", "png": "wav"}  # what the sidecar names
WAV_SUFFIX = ".wav"
_VIDEO_SUFFIXES = (".mp4", ".webm", ".gif", ".webp", ".png")


@dataclass(frozen=True)
class Audio:
    """float32 samples in [-1, 1], shape (channels, n), played at `rate` Hz from the video's first frame."""

    samples: np.ndarray
    rate: int

    def __post_init__(self):
        s = np.asarray(self.samples, dtype=np.float32)
        if s.ndim == 1:
            s = s[None, :]
        if s.ndim != 2 or s.shape[0] not in (1, 2):
            raise ValueError(f"audio samples must be (channels, n) with 1 or 2 channels, got shape {s.shape}")
        if not 1 <= int(self.rate) <= 768000:
            raise ValueError(f"audio rate must be 1..768000 Hz, got {self.rate}")
        object.__setattr__(self, "samples", np.ascontiguousarray(s))
        object.__setattr__(self, "rate", int(self.rate))

    @property
    def channels(self) -> int:
        return self.samples.shape[0]

    @property
    def seconds(self) -> float:
        return self.samples.shape[1] / self.rate

    def __len__(self) -> int:
        return self.samples.shape[1]

    def cut(self, start: int, stop: int | None = None) -> "Audio":
        """Samples start..stop (a slice; out-of-range ends are clipped)."""
        return Audio(self.samples[:, start:stop], self.rate)


# ----------------------------------------------------------------------------- time
def frame_sample(i: float, fps: float, rate: int) -> int:
    """The sample at which frame i starts playing."""
    return int(round(i * rate / float(fps)))


def crossfade(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a fading out while b fades in, equal length (channels, n): equal-power (sin/cos) ramps, so uncorrelated
    sounds keep their loudness through the seam and a sound equal on both sides stays near it."""
    n = a.shape[1]
    if n == 0:
        return a.copy()
    t = (np.arange(n, dtype=np.float64) + 0.5) / n
    fade_in = np.sin(t * np.pi / 2).astype(np.float32)
    fade_out = np.cos(t * np.pi / 2).astype(np.float32)
    return a * fade_out + b * fade_in


def place(out: np.ndarray | None, seg: np.ndarray, offset: int) -> np.ndarray:
    """`seg` placed at sample `offset` of `out`: where they overlap they are cross-faded (out's tail into seg's
    head), after that seg alone. A gap (offset past the end) is silence."""
    if out is None:
        out = np.zeros((seg.shape[0], 0), np.float32)
    if offset > out.shape[1]:
        out = np.concatenate([out, np.zeros((out.shape[0], offset - out.shape[1]), np.float32)], axis=1)
    overlap = min(out.shape[1] - offset, seg.shape[1])
    mixed = crossfade(out[:, offset:offset + overlap], seg[:, :overlap])
    return np.concatenate([out[:, :offset], mixed, seg[:, overlap:]], axis=1)


def join(parts: list[tuple[Audio, float]], fps: float) -> Audio | None:
    """Segments' audio, each starting at its first frame's index (a float frame position) in the joined video,
    cross-faded where neighbours overlap -> one Audio (None when no segment had sound). A segment without
    sound among ones with it is silence, so the rest stays in sync."""
    known = [a for a, _ in parts if a is not None]
    if not known:
        return None
    rate, channels = known[0].rate, max(a.channels for a in known)
    out = None
    for audio, start in parts:
        if audio is None:
            continue
        if audio.rate != rate:
            audio = resample(audio, rate)
        seg = audio.samples if audio.channels == channels else np.repeat(audio.samples, channels, axis=0)
        out = place(out, seg, frame_sample(start, fps, rate))
    return Audio(out, rate)


def fit(audio: Audio, frames: int, fps: float) -> Audio:
    """Cut (or pad with silence) to the length of `frames` frames at `fps`."""
    n = frame_sample(frames, fps, audio.rate)
    s = audio.samples[:, :n]
    if s.shape[1] < n:
        s = np.concatenate([s, np.zeros((s.shape[0], n - s.shape[1]), np.float32)], axis=1)
    return Audio(s, audio.rate)


def given_soundtrack(audio: Audio, frames: int, fps: float, source: str | None = None) -> tuple[Audio, dict]:
    """A soundtrack the video was made to follow (--audio), as the video's own: cut, or padded with silence, to
    `frames` at `fps` (at its own rate, no resampling) -> (that Audio, what the sidecar's audio.given says of it)."""
    fitted = fit(audio, frames, fps)
    cut = len(audio) - len(fitted)
    return fitted, {"source": source, "rate": audio.rate, "channels": audio.channels,
                    "seconds": round(audio.seconds, 6), "trimmed_seconds": round(max(cut, 0) / audio.rate, 6),
                    "padded_seconds": round(max(-cut, 0) / audio.rate, 6)}


# ----------------------------------------------------------------------------- rates
def resample(audio: Audio, rate: int) -> Audio:
    """To another rate with FFmpeg's resampler (libswresample: windowed-sinc, band-limited), delay flushed, so
    sample i of the output is at time i / rate like the input's."""
    if audio.rate == rate:
        return audio
    import av

    layout = "mono" if audio.channels == 1 else "stereo"
    src = av.AudioFrame.from_ndarray(audio.samples, format="fltp", layout=layout)
    src.sample_rate, src.pts = audio.rate, 0
    resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate)
    chunks = [f.to_ndarray() for f in (*resampler.resample(src), *resampler.resample(None))]
    out = np.concatenate(chunks, axis=1) if chunks else np.zeros((audio.channels, 0), np.float32)
    n = int(round(len(audio) * rate / audio.rate))
    return Audio(fit_length(out, n), rate)


def fit_length(s: np.ndarray, n: int) -> np.ndarray:
    if s.shape[1] >= n:
        return s[:, :n]
    return np.concatenate([s, np.zeros((s.shape[0], n - s.shape[1]), np.float32)], axis=1)


def encode_rate(fmt: str, rate: int) -> int:
    """The rate the file carries for a format: Opus 48 kHz; AAC the model's rate when AAC has it; WAV as is."""
    if fmt == "webm":
        return OPUS_RATE
    if fmt == "mp4" and rate not in AAC_RATES:
        return 48000
    return rate


# ----------------------------------------------------------------------------- record
def pcm_sha256(audio: Audio) -> str:
    """sha256 of the samples as float32 little-endian, interleaved (what a float WAV's data chunk holds)."""
    return hashlib.sha256(np.ascontiguousarray(audio.samples.T, dtype="<f4").tobytes()).hexdigest()


def record(audio: Audio, fmt: str, wav: str | None = None) -> dict:
    """What the sidecar says of a soundtrack written with a `fmt` output (`wav`: the file beside it)."""
    out = {"codec": CODECS[fmt], "sample_rate": encode_rate(fmt, audio.rate), "source_rate": audio.rate,
           "channels": audio.channels, "samples": len(audio), "seconds": round(audio.seconds, 6),
           "sha256": pcm_sha256(audio)}
    if wav is not None:
        out["file"] = wav
    return out


def wav_path(target: str | Path) -> Path:
    """photo.gif -> photo.wav; a frames folder "photo" -> photo.wav."""
    target = Path(target)
    if target.suffix.lower() in _VIDEO_SUFFIXES:
        return target.with_suffix(WAV_SUFFIX)
    return target.with_name(target.name + WAV_SUFFIX)


# ----------------------------------------------------------------------------- files
def write_wav(path: Path, audio: Audio) -> None:
    """A float32 WAV (format 3, IEEE float, with the fact chunk): the samples exactly, no 16-bit rounding."""
    data = np.ascontiguousarray(audio.samples.T, dtype="<f4").tobytes()
    ch, rate = audio.channels, audio.rate
    fmt = struct.pack("<HHIIHHH", 3, ch, rate, rate * ch * 4, ch * 4, 32, 0)
    fact = struct.pack("<I", len(audio))
    body = (b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"fact" + struct.pack("<I", 4) + fact
            + b"data" + struct.pack("<I", len(data)) + data)
    with open(path, "wb") as f:
        f.write(b"RIFF" + struct.pack("<I", len(body)) + body)


def open_audio(value, source: str | None = None) -> tuple[Audio, dict]:
    """A soundtrack given to a run (an Audio, a path or the file's bytes) -> (Audio, what the sidecar's
    "input" records of it)."""
    if isinstance(value, Audio):
        audio = value
    elif isinstance(value, (bytes, bytearray, memoryview)):
        audio = read_audio(bytes(value), name=source or "the audio")
    else:
        audio = read_audio(value)
        source = source or str(value)
    info = {"rate": audio.rate, "channels": audio.channels, "seconds": round(audio.seconds, 6),
            "sha256": pcm_sha256(audio)}
    return audio, ({"source": source, **info} if source else info)


def soundtrack_of(video: str | Path) -> Audio | None:
    """A video file's soundtrack: its audio stream, else the NAME.wav stillmotion wrote beside a gif, webp or
    frames folder; None when it has neither."""
    import av

    video = Path(video).expanduser()
    beside = wav_path(video)
    if video.is_file() and video.suffix.lower() not in (".gif", ".webp"):
        try:
            with av.open(str(video), mode="r") as container:
                has = bool(container.streams.audio)
        except Exception:
            has = False
        if has:
            return read_audio(video)
    return read_audio(beside) if beside != video and beside.is_file() else None


def read_audio(path, name: str | None = None) -> Audio:
    """A sound file (wav, mp3, m4a, flac, ogg, or a video's audio track; a path or its bytes) -> Audio at its own
    rate, up to stereo. Raises NotFound for no file, InvalidInput for a file with no readable sound."""
    import io

    import av

    if isinstance(path, (bytes, bytearray)):
        src, path = io.BytesIO(path), Path(name or "the audio")
    else:
        path = Path(path).expanduser()
        if not path.exists():
            raise NotFound(f"No audio file at {path}; check the path (wav, mp3 or m4a).")
        if path.is_dir():
            raise InvalidInput(f"{path} is a folder; pass an audio file (wav, mp3 or m4a).")
        src = str(path)
    try:
        with av.open(src, mode="r") as container:
            if not container.streams.audio:
                raise InvalidInput(f"{path} has no audio stream; pass a wav, mp3 or m4a file.")
            stream = container.streams.audio[0]
            layout = "mono" if stream.codec_context.channels == 1 else "stereo"
            resampler = av.AudioResampler(format="fltp", layout=layout, rate=stream.codec_context.sample_rate)
            chunks = []
            for frame in container.decode(stream):
                chunks.extend(f.to_ndarray() for f in resampler.resample(frame))
            chunks.extend(f.to_ndarray() for f in resampler.resample(None))
            rate = stream.codec_context.sample_rate
    except InvalidInput:
        raise
    except Exception as e:
        raise InvalidInput(f"{path} could not be read as audio ({str(e).splitlines()[0] if str(e) else type(e).__name__}); "
                           "pass a wav, mp3 or m4a file.") from None
    if not chunks or sum(c.shape[1] for c in chunks) == 0:
        raise InvalidInput(f"{path} holds no audio samples; pass a wav, mp3 or m4a file with sound.")
    return Audio(np.concatenate(chunks, axis=1), rate)


def add_track(container, audio: Audio, fmt: str):
    """Add `audio` to an open PyAV output container as its AAC (mp4) or Opus (webm) track -> a function that
    encodes and muxes it (call it once every stream has been added, i.e. before the first packet is muxed)."""
    import av

    rate = encode_rate(fmt, audio.rate)
    audio = resample(audio, rate)
    layout = "mono" if audio.channels == 1 else "stereo"
    stream = container.add_stream("aac" if fmt == "mp4" else "libopus", rate=rate, layout=layout)
    stream.codec_context.format = "fltp" if fmt == "mp4" else "flt"  # float in: no 16-bit rounding on the way
    stream.codec_context.bit_rate = (96000 if fmt == "mp4" else 64000) * audio.channels  # per channel: transparent-ish

    def encode() -> None:
        fmt_name = stream.codec_context.format.name  # fltp for AAC, flt (interleaved) for libopus
        block = 1 << 14
        for start in range(0, len(audio), block):
            part = audio.samples[:, start:start + block]
            array = part if fmt_name.endswith("p") else np.ascontiguousarray(part.T).reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(array, format=fmt_name, layout=layout)
            frame.sample_rate, frame.pts = rate, start
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)

    return encode
