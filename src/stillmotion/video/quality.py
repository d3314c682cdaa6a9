"""Quality measures that need no real weights: used in tests, reported in benchmarks.

    psnr(a, b), ssim(a, b)           a rebuilt frame against the true one
    held_out(frames, rebuild)        drop every other frame, rebuild it, score it
    steps(frames), loop_jump(frames) frame-to-frame change; the end->start cut against it
    colour_drift(a, b)               CIE Lab distance between two clips' mean colours

Frames are uint8 (T, H, W, 3) RGB, single frames uint8 (H, W, 3).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from ..metrics import psnr  # the one PSNR (metrics.py); also one of this module's measures


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean structural similarity on luma, Gaussian window (sigma 1.5), as in Wang et al. 2004."""
    import cv2

    def luma(x):
        x = np.asarray(x)
        if x.ndim == 3:
            x = cv2.cvtColor(x, cv2.COLOR_RGB2GRAY)
        return x.astype(np.float64)

    x, y = luma(a), luma(b)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def blur(z):
        return cv2.GaussianBlur(z, (11, 11), 1.5)

    mx, my = blur(x), blur(y)
    sxx = blur(x * x) - mx * mx
    syy = blur(y * y) - my * my
    sxy = blur(x * y) - mx * my
    m = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return float(m.mean())


def held_out(frames: np.ndarray, rebuild: Callable[[np.ndarray], np.ndarray]) -> dict:
    """Keep frames 0, 2, 4, ...; `rebuild(kept)` must return the 2x clip; score the odd frames it made.

    Returns {"psnr", "ssim"} averaged over the rebuilt frames, plus "frames" scored.
    """
    kept = frames[::2]
    n = len(kept)
    out = rebuild(kept)
    if len(out) != 2 * n - 1:
        raise ValueError(f"rebuild returned {len(out)} frames for {n} kept ones; expected {2 * n - 1}")
    p, s = [], []
    for i in range(1, len(out), 2):
        p.append(psnr(out[i], frames[i]))
        s.append(ssim(out[i], frames[i]))
    return {"psnr": round(float(np.mean(p)), 3), "ssim": round(float(np.mean(s)), 4), "frames": len(p)}


def step_sizes(frames: np.ndarray, cyclic: bool = False) -> np.ndarray:
    """Mean absolute difference (0..255) between consecutive frames; with cyclic, the last->first too."""
    f = frames.astype(np.int16)
    d = np.abs(np.diff(f, axis=0)).mean(axis=(1, 2, 3))
    if cyclic:
        d = np.append(d, np.abs(f[0] - f[-1]).mean())
    return d


def loop_jump(frames: np.ndarray) -> dict:
    """How big the end->start cut is against a normal step.

    {"jump": mean |first - last|, "median_step": median of the consecutive steps,
     "ratio": jump / median_step, "max_step_ratio": largest in-clip step / median}
    A seamless loop has ratio <= ~1.5.
    """
    inner = step_sizes(frames)
    f = frames.astype(np.int16)
    jump = float(np.abs(f[0] - f[-1]).mean())
    med = float(np.median(inner)) if len(inner) else 0.0
    eps = 1e-6
    return {
        "jump": round(jump, 4),
        "median_step": round(med, 4),
        "ratio": round(jump / max(med, eps), 4),
        "max_step_ratio": round(float(inner.max()) / max(med, eps), 4) if len(inner) else 0.0,
    }


def mean_lab(frames: np.ndarray) -> np.ndarray:
    """Mean CIE Lab colour (L 0..100, a and b around 0) of a clip or a frame."""
    import cv2

    f = np.asarray(frames)
    if f.ndim == 3:
        f = f[None]
    flat = f.reshape(-1, f.shape[-2], 3).astype(np.float32) / 255.0
    lab = cv2.cvtColor(flat, cv2.COLOR_RGB2Lab)
    return lab.reshape(-1, 3).mean(axis=0).astype(np.float64)


def colour_drift(first: np.ndarray, last: np.ndarray) -> float:
    """Distance (delta E 1976) between the mean Lab colours of two clips: 0 is no drift, ~2.3 just noticeable."""
    return round(float(np.linalg.norm(mean_lab(first) - mean_lab(last))), 4)
