"""Seamless loops: the clip is reshaped so that playing it on repeat has no visible cut.

    pingpong  0 1 .. T-1 T-2 .. 1   (then 0 again): forward, then back, no repeated ends.
    blend     the last K frames are morphed (optical flow) into frames 0..K-1,
              and the clip starts at frame K. The end->start cut is then the
              ordinary step from frame K-1 to frame K, and the hand-over from
              the end of the motion to its start is spread over K frames.

Both return frames meant to be played cyclically: interpolating a loop should
also fill the gap from its last frame back to its first (`cyclic=True`).

Sound (`loop_audio`): blend does to the soundtrack what it does to the frames
(the clip's sound from frame K on, then the last K frames' sound cross-faded
into the first K frames'), so picture and sound stay together and the loop's
sound has no cut either. pingpong refuses a soundtrack: sound played backwards
is not what anyone wants from a loop (speech turns to gibberish, a hit
becomes a swell); --no-audio or --loop blend.
"""

from __future__ import annotations

import functools
from typing import Optional

import numpy as np

from ..errors import InvalidInput
from .interpolate import FlowInterpolator

MODES = ("none", "pingpong", "blend")


def pingpong(frames: np.ndarray) -> np.ndarray:
    """Forward then backward, without repeating the last frame or the first one."""
    frames = np.asarray(frames)
    if len(frames) < 3:
        return frames.copy()
    return np.concatenate([frames, frames[-2:0:-1]], axis=0)


def blend_length(n: int) -> int:
    """Frames used for the hand-over: a quarter of the clip, at least 2, leaving at least one untouched."""
    return max(2, min(n // 4, (n - 1) // 2))


def blend(frames: np.ndarray, k: Optional[int] = None, interp=None) -> np.ndarray:
    """T frames -> T-K frames that loop: frames K..T-K-1 as they are, then K morphs ending on frame K-1.

    Morph i (0..K-1) is frame T-K+i carried a fraction (i+1)/K of the way to
    frame i along the optical flow between them (a cross-fade where flow fails).
    """
    frames = np.asarray(frames)
    n = len(frames)
    if n < 5:
        raise InvalidInput(f"--loop blend needs at least 5 frames, got {n}; use --loop pingpong or more --frames.")
    k = blend_length(n) if k is None else k
    if not 2 <= k <= (n - 1) // 2:
        raise InvalidInput(f"loop blend length must be between 2 and {(n - 1) // 2} for {n} frames, got {k}.")
    interp = interp or FlowInterpolator()
    body = frames[k : n - k]
    tail = []
    for i in range(k):
        a = frames[n - k + i]
        b = frames[i]
        alpha = (i + 1) / k
        tail.append(b.copy() if alpha >= 1.0 else interp.at(interp.prepare(a, b), alpha))
    return np.concatenate([body, np.stack(tail)], axis=0)


def loop_audio(audio, frames: int, fps: float, mode: str):
    """The soundtrack of a clip of `frames` frames at `fps`, looped like its frames (see the module notes);
    None stays None."""
    if audio is None or mode == "none":
        return audio
    if mode == "pingpong":
        raise InvalidInput("--loop pingpong would play the soundtrack backwards: use --loop blend (its sound is "
                           "cross-faded like its frames) or add --no-audio.")
    from .audio import Audio, crossfade, fit, frame_sample

    k = blend_length(frames)
    a = fit(audio, frames, fps).samples  # exactly the clip's length, so frame i's sound is at frame_sample(i)
    at = functools.partial(frame_sample, fps=fps, rate=audio.rate)
    n = at(k)
    head, tail = a[:, :n], a[:, at(frames - k):at(frames - k) + n]
    return Audio(np.concatenate([a[:, n:at(frames - k)], crossfade(tail, head)], axis=1), audio.rate)


def make_loop(frames: np.ndarray, mode: str, interp=None) -> np.ndarray:
    if mode == "none":
        return frames
    if mode == "pingpong":
        return pingpong(frames)
    if mode == "blend":
        return blend(frames, interp=interp)
    raise InvalidInput(f"loop must be one of {', '.join(MODES)}, got {mode!r}.")
