"""Frame interpolation: more frames between the ones we have, the playback fps multiplied.

Three back ends behind one small interface, the `Interpolator` protocol
(`prepare(a, b)` once per pair of neighbours, then `at(state, t)` for each
intermediate time 0 < t < 1):

    flow   (default) DIS optical flow both ways, both neighbours warped to time t,
           blended with weights that drop where the forward-backward check says
           a pixel is hidden in the other frame. No weights, CPU-fast.
    rife   the RIFE v4 network (video/rife.py) on user-supplied weights.
    blend  plain cross-fade; the baseline the others are measured against.

`interpolate(frames, factor)` gives (T-1)*factor+1 frames (T*factor with
cyclic=True, where the last frame also leads back into the first: loops).
`retime(frames, fps, target_fps)` resamples to any higher playback rate.
The model's fps conditioning is never touched here: only the playback rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Callable, Optional, Protocol, Sequence

import numpy as np

from ..errors import Cancelled, InvalidInput

FACTORS = (2, 3, 4, 8)
BACKENDS = ("flow", "rife", "blend")
MAX_FPS = 240


# ----------------------------------------------------------------------------
# back ends
class Interpolator(Protocol):
    """A back end. Adding one: a class with these, and a name in BACKENDS and make_interpolator."""

    name: str  # recorded in the output's metadata

    def prepare(self, a: np.ndarray, b: np.ndarray) -> Any:
        """The work shared by every time between uint8 (H, W, 3) frames a and b (flows, features)."""
        ...

    def at(self, state: Any, t: float) -> np.ndarray:
        """The uint8 (H, W, 3) frame at time t (0 < t < 1) from prepare()'s state."""
        ...


class BlendInterpolator:
    """Cross-fade: (1-t)*a + t*b. Ghosts on anything that moves."""

    name = "blend"

    def prepare(self, a: np.ndarray, b: np.ndarray):
        return a.astype(np.float32), b.astype(np.float32)

    def at(self, state, t: float) -> np.ndarray:
        a, b = state
        return _to_uint8(a * (1.0 - t) + b * t)


@dataclass
class _FlowPair:
    a: np.ndarray  # uint8 (H, W, 3)
    b: np.ndarray
    f01: np.ndarray  # float32 (H, W, 2): where each pixel of a goes in b
    f10: np.ndarray
    vis0: np.ndarray  # float32 (H, W) in 0..1: pixel of a is still visible in b
    vis1: np.ndarray


class FlowInterpolator:
    """Dense optical flow (OpenCV DIS) with occlusion-aware blending.

    For a time t the flows from t back to each neighbour are approximated from
    the two frame-to-frame flows (Jiang et al., Super SloMo, 2018):
        F_t0 = -(1-t) t F01 + t^2 F10,   F_t1 = (1-t)^2 F01 - t (1-t) F10
    Each neighbour is warped to t; a neighbour's weight is its temporal
    closeness times the other neighbour's visibility from the forward-backward
    check, so content that appears or disappears comes from the frame that has it.
    """

    name = "flow"

    def __init__(self, preset: str = "medium", flow_scale: Optional[float] = None):
        """flow_scale: resolution the flow is computed at; None: full up to 640 px, half above
        (at 1024x576 half-resolution flow is both faster and steadier on large motion)."""
        self.preset = preset
        self.flow_scale = flow_scale
        self._dis = None

    def _flow(self, ga: np.ndarray, gb: np.ndarray) -> np.ndarray:
        import cv2

        if self._dis is None:
            preset = {
                "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
                "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
                "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
            }[self.preset]
            self._dis = cv2.DISOpticalFlow_create(preset)
        s = self.flow_scale or (1.0 if max(ga.shape) <= 640 else 0.5)
        if s == 1.0:
            return self._dis.calc(ga, gb, None)
        h, w = ga.shape
        small = (max(8, round(w * s)), max(8, round(h * s)))
        f = self._dis.calc(cv2.resize(ga, small, interpolation=cv2.INTER_AREA),
                           cv2.resize(gb, small, interpolation=cv2.INTER_AREA), None)
        return cv2.resize(f, (w, h), interpolation=cv2.INTER_LINEAR) * np.float32(1.0 / s)

    def prepare(self, a: np.ndarray, b: np.ndarray) -> _FlowPair:
        import cv2

        a = np.ascontiguousarray(a)
        b = np.ascontiguousarray(b)
        ga = cv2.cvtColor(a, cv2.COLOR_RGB2GRAY)
        gb = cv2.cvtColor(b, cv2.COLOR_RGB2GRAY)
        f01 = self._flow(ga, gb)
        f10 = self._flow(gb, ga)
        return _FlowPair(a, b, f01, f10, _visibility(f01, f10), _visibility(f10, f01))

    def at(self, p: _FlowPair, t: float) -> np.ndarray:
        import cv2

        ft0 = p.f01 * np.float32(-(1 - t) * t) + p.f10 * np.float32(t * t)
        ft1 = p.f01 * np.float32((1 - t) ** 2) + p.f10 * np.float32(-t * (1 - t))
        gx, gy = _grid(p.a.shape[:2])
        m0x, m0y = gx + ft0[..., 0], gy + ft0[..., 1]
        m1x, m1y = gx + ft1[..., 0], gy + ft1[..., 1]
        lin, rep = cv2.INTER_LINEAR, cv2.BORDER_REPLICATE
        w0img = cv2.remap(p.a, m0x, m0y, lin, borderMode=rep).astype(np.float32)
        w1img = cv2.remap(p.b, m1x, m1y, lin, borderMode=rep).astype(np.float32)
        # a's pixel hidden in b -> b has nothing for it here: trust a (and the other way round)
        keep1 = cv2.remap(p.vis0, m0x, m0y, lin, borderMode=rep)
        keep0 = cv2.remap(p.vis1, m1x, m1y, lin, borderMode=rep)
        w0 = np.float32(1 - t) * keep0 + np.float32(1e-3 * (1 - t))
        w1 = np.float32(t) * keep1 + np.float32(1e-3 * t)
        out = (w0img * w0[..., None] + w1img * w1[..., None]) / (w0 + w1)[..., None]
        return _to_uint8(out)


_GRIDS: dict = {}


def _grid(shape) -> tuple[np.ndarray, np.ndarray]:
    g = _GRIDS.get(shape)
    if g is None:
        h, w = shape
        gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
        g = _GRIDS[shape] = (gx, gy)
        if len(_GRIDS) > 8:
            _GRIDS.pop(next(iter(_GRIDS)))
    return g


def _visibility(fwd: np.ndarray, bwd: np.ndarray) -> np.ndarray:
    """Soft forward-backward consistency (Sundaram et al. 2010): 1 where going there and back lands home."""
    import cv2

    gx, gy = _grid(fwd.shape[:2])
    back = cv2.remap(bwd, gx + fwd[..., 0], gy + fwd[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    err2 = ((fwd + back) ** 2).sum(-1)
    tol = 0.01 * ((fwd**2).sum(-1) + (back**2).sum(-1)) + 0.5
    vis = np.exp(-np.maximum(err2 - tol, 0) / (4 * tol)).astype(np.float32)
    # also out of frame: the pixel leaves the picture
    h, w = fwd.shape[:2]
    x, y = gx + fwd[..., 0], gy + fwd[..., 1]
    vis[(x < -0.5) | (x > w - 0.5) | (y < -0.5) | (y > h - 0.5)] = 0.0
    return cv2.GaussianBlur(vis, (5, 5), 1.0)


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def make_interpolator(backend: str = "flow", *, rife_weights=None, device: Optional[str] = None) -> Interpolator:
    """A back end by name. `rife` needs weights (a .safetensors path; see video/rife.py)."""
    if backend == "flow":
        return FlowInterpolator()
    if backend == "blend":
        return BlendInterpolator()
    if backend == "rife":
        from .rife import RifeInterpolator

        return RifeInterpolator.from_weights(rife_weights, device=device)
    raise InvalidInput(f"interpolation backend must be one of {', '.join(BACKENDS)}, got {backend!r}")


# ----------------------------------------------------------------------------
# times
def times_for_factor(n: int, factor: int, cyclic: bool = False) -> list[float]:
    """Source-frame positions of the output frames: k/factor, covering (T-1) gaps, or T with cyclic."""
    count = n * factor if cyclic else (n - 1) * factor + 1
    return [k / factor for k in range(max(count, 1 if n else 0))]


def times_for_fps(n: int, fps: float, target_fps: float, cyclic: bool = False) -> list[float]:
    """Positions for playback at target_fps covering the same span as n frames at fps."""
    if n == 0:
        return []
    r = Fraction(fps).limit_denominator(10000) / Fraction(target_fps).limit_denominator(10000)
    if cyclic:
        count = max(1, round(n / r))
        return [float(Fraction(k * n, count)) for k in range(count)]
    count = math.floor((n - 1) / r) + 1
    return [float(k * r) for k in range(count)]


def check_factor(factor: int) -> int:
    if factor not in FACTORS:
        raise InvalidInput(f"interpolation factor must be 2, 3, 4 or 8, got {factor}.")
    return factor


def check_target_fps(fps: float, target_fps: float) -> float:
    if not (target_fps > 0 and target_fps <= MAX_FPS):
        raise InvalidInput(f"target fps must be above 0 and at most {MAX_FPS}, got {target_fps:g}.")
    if target_fps <= fps:
        raise InvalidInput(f"target fps ({target_fps:g}) must be higher than the clip's {fps:g} fps to interpolate.")
    return float(target_fps)


# ----------------------------------------------------------------------------
# the one loop every caller uses
def resample(
    frames: np.ndarray,
    times: Sequence[float],
    interp: Interpolator,
    *,
    cyclic: bool = False,
    should_cancel: Optional[Callable[[], bool]] = None,
    on_progress: Optional[Callable[[int, int], None]] = None,
) -> np.ndarray:
    """Frames at fractional source positions; each neighbour pair is prepared once."""
    frames = np.asarray(frames)
    n = len(frames)
    if n == 0:
        raise InvalidInput("there are no frames to interpolate.")
    out = np.empty((len(times),) + frames.shape[1:], dtype=np.uint8)
    key, state = None, None
    eps = 1e-6
    for k, pos in enumerate(times):
        if should_cancel is not None and should_cancel():
            raise Cancelled()
        i = int(math.floor(pos + eps))
        t = pos - i
        if abs(t) < eps or n == 1:
            out[k] = frames[i % n]
        else:
            j = (i + 1) % n if cyclic else min(i + 1, n - 1)
            if key != i:
                state, key = interp.prepare(frames[i % n], frames[j]), i
            out[k] = interp.at(state, t)
        if on_progress is not None:
            on_progress(k + 1, len(times))
    return out


def interpolate(
    frames: np.ndarray,
    factor: int = 2,
    *,
    backend: str = "flow",
    cyclic: bool = False,
    interp: Optional[Interpolator] = None,
    rife_weights=None,
    device: Optional[str] = None,
    should_cancel=None,
    on_progress=None,
) -> np.ndarray:
    """(T, H, W, 3) -> ((T-1)*factor+1, H, W, 3), or T*factor with cyclic. Originals are kept as they are."""
    check_factor(factor)
    interp = interp or make_interpolator(backend, rife_weights=rife_weights, device=device)
    return resample(frames, times_for_factor(len(frames), factor, cyclic), interp, cyclic=cyclic,
                    should_cancel=should_cancel, on_progress=on_progress)


def retime(
    frames: np.ndarray,
    fps: float,
    target_fps: float,
    *,
    backend: str = "flow",
    cyclic: bool = False,
    interp: Optional[Interpolator] = None,
    rife_weights=None,
    device: Optional[str] = None,
    should_cancel=None,
    on_progress=None,
) -> tuple[np.ndarray, float]:
    """Resample to target_fps (higher than fps) over the same time span; returns (frames, target_fps)."""
    check_target_fps(fps, target_fps)
    interp = interp or make_interpolator(backend, rife_weights=rife_weights, device=device)
    times = times_for_fps(len(frames), fps, target_fps, cyclic)
    return resample(frames, times, interp, cyclic=cyclic, should_cancel=should_cancel,
                    on_progress=on_progress), float(target_fps)
