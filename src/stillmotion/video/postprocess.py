"""Post-processing the engine runs on its frames: loop, then interpolate.

    frames, fps, info = apply(frames, fps, spec, should_cancel=...)

1. Loop (spec.loop): reshape the clip so it plays on repeat without a cut.
2. Interpolate (spec.interpolate factor, or spec.interpolate_fps target): more
   frames, the playback fps multiplied; a loop is interpolated cyclically, so
   the step from its last frame back to its first is filled in too.
`info` goes into the sidecar under "postprocess": what was done, frame counts,
rates, the back end (and RIFE weight hash), timings and the loop's jump measure.

The soundtrack (`apply_audio`): interpolation leaves it as it is (the duration
does not change); a loop reshapes it like the frames (loop.loop_audio: blend
cross-fades it, pingpong refuses it).
"""

from __future__ import annotations

import time
from typing import Callable, Optional

import numpy as np

from . import quality
from .interpolate import check_factor, check_target_fps, interpolate, make_interpolator, retime
from .loop import loop_audio, make_loop


def apply_audio(audio, frames: int, fps: float, spec):
    """The soundtrack of `frames` frames at `fps` after `apply(..., spec)`: looped like the frames, else unchanged.
    Call it first: it refuses what it cannot do (pingpong with sound) before the frames are worked on."""
    return loop_audio(audio, frames, fps, spec.loop)


def apply(
    frames: np.ndarray,
    fps: float,
    spec,
    *,
    should_cancel: Optional[Callable[[], bool]] = None,
    on_progress: Optional[Callable[[int, int], None]] = None,
    rife_weights=None,
) -> tuple[np.ndarray, float, dict]:
    """Loop and interpolate per the spec; returns (frames, playback fps, info for the sidecar)."""
    frames = np.asarray(frames)
    target_fps = getattr(spec, "interpolate_fps", None)
    factor = spec.interpolate
    info: dict = {"frames_in": int(len(frames)), "fps_in": float(fps)}
    wants_interp = factor > 1 or target_fps is not None

    # 1. Check the request before any work
    if factor > 1:
        check_factor(factor)
    if target_fps is not None:
        check_target_fps(fps, target_fps)
    interp = None
    if wants_interp or spec.loop == "blend":
        backend = spec.interpolate_backend if wants_interp else "flow"
        interp = make_interpolator(backend, rife_weights=rife_weights)
        info["backend"] = interp.name
        if getattr(interp, "info", None):
            info["rife"] = interp.info

    # 2. Loop
    cyclic = spec.loop != "none"
    if cyclic:
        t = time.perf_counter()
        frames = make_loop(frames, spec.loop, interp=interp)
        info["loop"] = {
            "mode": spec.loop,
            "frames": int(len(frames)),
            "seconds": round(time.perf_counter() - t, 4),
            **quality.loop_jump(frames),
        }

    # 3. Interpolate
    if wants_interp:
        t = time.perf_counter()
        if factor > 1:
            frames = interpolate(frames, factor, interp=interp, cyclic=cyclic, should_cancel=should_cancel,
                                 on_progress=on_progress)
            fps = float(fps) * factor
            info["factor"] = factor
        else:
            frames, fps = retime(frames, fps, target_fps, interp=interp, cyclic=cyclic,
                                 should_cancel=should_cancel, on_progress=on_progress)
            info["target_fps"] = float(target_fps)
        info["interpolate_seconds"] = round(time.perf_counter() - t, 4)

    info["frames_out"] = int(len(frames))
    info["fps_out"] = float(fps)
    return frames, float(fps), info
