"""Benchmark: how faithfully the files carry a soundtrack, and what writing it costs.

    .venv/bin/python bench/bench_audio.py              # a chirp mix (24 kHz stereo) and tiny-ltx2's sound

For each muxed format (mp4: AAC at the source rate, webm: Opus at 48 kHz) the track is decoded back with PyAV and
compared with the source (resampled to the file's rate where it was): the lag of best alignment (0: the codec's
priming is trimmed by the container), the correlation and the SNR, over the whole clip and after its first 2048
samples (the encoder's start-up). The WAV beside a gif is compared for exact equality. Write seconds are for a
16-frame 64x64 clip with the sound. Results print and are saved as JSON under bench/results/; figures are
reported, never asserted (tests/test_audio.py asserts bounds below them).
"""

from __future__ import annotations

import json
import platform
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def chirp_mix(seconds: float, rate: int = 24000):
    from stillmotion.video.audio import Audio

    t = np.arange(int(round(seconds * rate))) / rate
    left = 0.4 * np.sin(2 * np.pi * (200 + 800 * t / seconds) * t)
    right = 0.3 * np.sin(2 * np.pi * 330 * t) + 0.2 * np.sin(2 * np.pi * (1500 - 500 * t / seconds) * t)
    env = np.minimum(1, np.minimum(t, seconds - t) / 0.02)
    return Audio(np.stack([left * env, right * env]).astype(np.float32), rate)


def compare(decoded: np.ndarray, ref: np.ndarray, max_lag: int = 4096) -> dict:
    """Lag of best alignment (searched up to max_lag; 0: not searched), correlation and SNR there."""
    m = min(len(decoded), len(ref))
    x, y = decoded[:m].astype(np.float64), ref[:m].astype(np.float64)
    xc, yc = x - x.mean(), y - y.mean()  # a DC offset (a random vocoder has one) would pull the peak anywhere
    lag = int(np.argmax(np.correlate(xc, yc[max_lag: m - max_lag], "valid"))) - max_lag if max_lag else 0
    xs, ys = x[max(0, lag): m + min(0, lag)], y[max(0, -lag): m - max(0, lag)]
    n = min(len(xs), len(ys))
    xs, ys = xs[:n], ys[:n]

    def snr(a, b):
        return round(float(10 * np.log10((b ** 2).sum() / max(((a - b) ** 2).sum(), 1e-20))), 2)

    return {"lag": lag, "corr": round(float(np.corrcoef(xs, ys)[0, 1]), 4), "snr_db": snr(xs, ys),
            "snr_db_after_2048": snr(xs[2048:], ys[2048:]) if n > 4096 else None}


def measure(name: str, audio, frames: np.ndarray, fps: float, folder: Path, max_lag: int = 4096) -> dict:
    from stillmotion.video import write
    from stillmotion.video.audio import read_audio, resample

    out = {"source_rate": audio.rate, "channels": audio.channels, "seconds": round(audio.seconds, 4)}
    for fmt in ("mp4", "webm", "gif"):
        t = time.perf_counter()
        art = write(frames, folder / f"{name}.{fmt}", fps=fps, audio=audio)
        seconds = round(time.perf_counter() - t, 4)
        if fmt == "gif":
            back = read_audio(art.audio)
            out["wav"] = {"exact": bool(np.array_equal(back.samples, audio.samples)), "write_s": seconds}
            continue
        back = read_audio(art.path)
        ref = resample(audio, back.rate)
        out[fmt] = {"rate": back.rate, "write_s": seconds, "bytes": art.bytes,
                    "channels": [compare(back.samples[c], ref.samples[c], max_lag) for c in range(audio.channels)]}
    return out


def main() -> None:
    from PIL import Image

    from stillmotion.engine import Engine
    from stillmotion.spec import GenerationSpec

    rng = np.random.default_rng(0)
    frames = np.stack([np.roll(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8), i, axis=1) for i in range(16)])
    results: dict = {"when": datetime.now(timezone.utc).isoformat(), "machine": platform.platform()}
    with tempfile.TemporaryDirectory() as tmp:
        results["chirp_mix"] = measure("chirp", chirp_mix(2.0), frames, 8, Path(tmp))
        engine = Engine("tiny-ltx2", device="cpu")
        image = Image.fromarray(np.random.default_rng(11).integers(0, 255, (64, 64, 3), dtype=np.uint8))
        r = engine.generate(image, GenerationSpec(width=64, height=64, num_frames=9, num_inference_steps=2, seed=5))
        # a third of a second of noise: too short to search a lag in (the chirp shows the tracks line up at 0)
        results["tiny_ltx2_noise"] = measure("ltx", r.audio, r.frames, r.fps, Path(tmp), max_lag=0)
    print(json.dumps(results, indent=2))
    out = HERE / "results" / "audio.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
