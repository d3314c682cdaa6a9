"""Long videos: chained segments, each started from a frame of the one before.

    frames, fps, run = generate_long(engine.sample, prepared_image, spec, report, cancel)

Continuing from the last frame drifts (colours wash out, contrast creeps), so:
  - each segment's colour statistics (per-channel mean and spread in CIE Lab)
    are matched to the first segment's;
  - segment k>0 is conditioned on the frame `overlap` frames before the end of
    what we have, and its first `overlap` frames are flow-morphed in over the
    previous segment's last ones, so the seam is spread over a few frames;
  - segment 0 uses the spec's seed (one segment is exactly a normal run); the
    others use seeds derived from it (sha256 of "seed:index"), so the whole
    video is reproducible from the one seed the sidecar records.

How many frames: `duration` seconds at the spec's fps (before interpolation),
or `segments` full segments. The sidecar gets "segments" (index, seed, frames,
seam_at, conditioned_on) and "long" (the plan and the colour drift measures), both
from the RunRecord this returns.

Through keyframes (`generate_keyframes`): one segment per pair of given images,
each sampled to end on its next image (keyframes.py), seams shared.

Sound (a family that makes it, LTX-2): each segment's soundtrack is placed at
its first frame's time in the joined video (seam_at / fps) and cross-faded into
the one before where they overlap: over the `overlap` frames the picture is
morphed across (a keyframe seam: the one shared frame), so picture and sound
change hands together; the whole is cut to the video's length
(video/audio.join, fit).
"""

from __future__ import annotations

import hashlib
import math
import time
from typing import Callable

import numpy as np

from ..errors import Cancelled
from ..spec import MAX_SEED, GenerationSpec
from .types import CancelFn, Progress, ProgressFn, RunRecord

SampleFn = Callable[..., tuple[np.ndarray, RunRecord]]


def segment_seed(seed: int, index: int) -> int:
    """Segment 0 keeps the base seed; segment k gets a seed derived from (seed, k)."""
    if index == 0:
        return int(seed)
    digest = hashlib.sha256(f"stillmotion-segment:{int(seed)}:{int(index)}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & MAX_SEED


def overlap_for(num_frames: int) -> int:
    """Frames shared by neighbouring segments: a quarter of a segment, 1..4 (none for 1-2 frame segments)."""
    if num_frames < 3:
        return 0
    return max(1, min(4, num_frames // 4))


def plan(spec: GenerationSpec) -> dict:
    """Frames wanted, frames per segment, overlap and the number of segments."""
    n = spec.num_frames
    overlap = overlap_for(n)
    step = n - overlap
    if spec.segments is not None:
        count = spec.segments
        total = n + (count - 1) * step
    else:
        total = max(1, round(spec.duration * spec.fps))
        count = 1 + max(0, math.ceil((total - n) / step))
    return {"target_frames": int(total), "frames_per_segment": n, "overlap": overlap, "segments": int(count)}


# ----------------------------------------------------------------------------
# colour statistics
def lab_stats(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lab = _to_lab(frames).reshape(-1, 3)
    return lab.mean(axis=0), lab.std(axis=0)


def match_colour(frames: np.ndarray, ref: tuple[np.ndarray, np.ndarray], max_gain: float = 2.0) -> np.ndarray:
    """Shift and scale each Lab channel so the clip's mean and spread are the reference's (Reinhard et al. 2001)."""
    import cv2

    mu_ref, sd_ref = ref
    lab = _to_lab(frames)
    mu, sd = lab.reshape(-1, 3).mean(axis=0), lab.reshape(-1, 3).std(axis=0)
    gain = np.clip(sd_ref / np.maximum(sd, 1e-3), 1 / max_gain, max_gain).astype(np.float32)
    lab = (lab - mu.astype(np.float32)) * gain + mu_ref.astype(np.float32)
    lab[..., 0] = np.clip(lab[..., 0], 0, 100)
    t, h, w, _ = frames.shape
    rgb = cv2.cvtColor(lab.reshape(t * h, w, 3), cv2.COLOR_Lab2RGB).reshape(t, h, w, 3)
    return np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)


def _to_lab(frames: np.ndarray) -> np.ndarray:
    import cv2

    t, h, w, _ = frames.shape
    flat = frames.reshape(t * h, w, 3).astype(np.float32) / 255.0
    return cv2.cvtColor(flat, cv2.COLOR_RGB2Lab).reshape(t, h, w, 3)


def blend_seam(old: np.ndarray, new: np.ndarray, interp) -> np.ndarray:
    """Frame i of the overlap is old[i] morphed (i+1)/(O+1) of the way to new[i]."""
    o = len(old)
    out = np.empty_like(old)
    for i in range(o):
        out[i] = interp.at(interp.prepare(old[i], new[i]), (i + 1) / (o + 1))
    return out


# ----------------------------------------------------------------------------
SEED_RULE = "segment 0: seed; segment k: sha256('stillmotion-segment:{seed}:{k}')[:4]"


class _Chain:
    """What chained segments share: cancel and progress per segment, the segment seeds, summed stage
    timings and one RunRecord that collects every segment's fallbacks and keeps the last one's plan."""

    def __init__(self, spec: GenerationSpec, count: int):
        self.spec, self.count = spec, count
        self.run = RunRecord(segments=[])
        self.sums = {"encode": 0.0, "denoise": 0.0, "decode": 0.0}
        self.seconds: list[float] = []
        self.parts: list[tuple] = []  # each segment's (soundtrack or None, first frame in the joined video)

    def sample(self, sample: SampleFn, k: int, cond, report: ProgressFn, cancel: CancelFn, spec_changes: dict,
               **kwargs) -> tuple[np.ndarray, int, RunRecord]:
        """Segment k sampled from `cond` -> (its frames, its seed, its RunRecord)."""
        if cancel():
            raise Cancelled()
        lo, hi = 0.98 * k / self.count, 0.98 * (k + 1) / self.count
        report(Progress("segment", k, self.count, lo, f"segment {k + 1}/{self.count}"))
        seed = segment_seed(self.spec.seed, k)
        t0 = time.perf_counter()
        frames, seg = sample(cond, self.spec.update(seed=seed, **spec_changes), report, cancel, (lo, hi), **kwargs)
        self.seconds.append(round(time.perf_counter() - t0, 4))
        for key in self.sums:
            self.sums[key] += float(seg.timings.get(key, 0.0))
        run = self.run
        run.fallbacks.extend(seg.fallbacks)
        run.memory, run.speed, run.decode_chunk_size = seg.memory, seg.speed, seg.decode_chunk_size
        self.parts.append((seg.audio, None))  # its place is set by the caller, which knows the seam
        return frames, seed, seg

    def finish(self) -> RunRecord:
        self.run.timings = {key: round(v, 4) for key, v in self.sums.items()}
        self.run.timings["segments"] = self.seconds
        return self.run


def generate_long(sample: SampleFn, image, spec: GenerationSpec, report: ProgressFn, cancel: CancelFn
                  ) -> tuple[np.ndarray, float, RunRecord]:
    """Chained segments for spec.duration / spec.segments -> (frames, fps, what the chain did).

    `sample(image, spec, report, cancel, progress_span)` runs one segment (Engine.sample)."""
    from PIL import Image

    from ..video import quality
    from ..video.interpolate import FlowInterpolator

    # 1. Plan the segments
    p = plan(spec)
    n, overlap, count, total = p["frames_per_segment"], p["overlap"], p["segments"], p["target_frames"]
    step = n - overlap
    interp = FlowInterpolator()
    chain = _Chain(spec, count)
    out: np.ndarray | None = None
    ref = None
    first_raw = last_raw = last_matched = None
    cond = image

    for k in range(count):
        # 2. Sample segment k from the current conditioning frame
        raw, seed, seg = chain.sample(sample, k, cond, report, cancel, {"duration": None, "segments": None})

        # 3. Hold the colours to the first segment's
        if k == 0:
            ref = lab_stats(raw)
            first_raw, frames = raw, raw
        else:
            frames = match_colour(raw, ref)
        last_raw, last_matched = raw, frames

        # 4. Append, morphing the overlap in over the previous segment's tail (its sound cross-faded the same)
        seam_at = k * step
        chain.parts[-1] = (seg.audio, seam_at)
        if out is None:
            out = frames
        else:
            seam = blend_seam(out[seam_at : seam_at + overlap], frames[:overlap], interp) if overlap else frames[:0]
            out = np.concatenate([out[:seam_at], seam, frames[overlap:]], axis=0)
        chain.run.segments.append({
            "index": k,
            "seed": seed,
            "frames": int(len(raw)),
            "seam_at": seam_at,
            "conditioned_on": "image" if k == 0 else int(seam_at),
        })

        # 5. The next segment starts from the frame `overlap` before our end
        if k + 1 < count:
            nxt = (k + 1) * step
            cond = Image.fromarray(out[nxt])

    assert out is not None
    out = out[:total]
    run = chain.finish()
    run.audio = _joined(chain.parts, len(out), spec.fps)
    run.long = {
        **p,
        "frames": int(len(out)),
        "seed_rule": SEED_RULE,
        "colour_match": "lab-mean-std",
        "seam_blend": "flow",
        "colour_drift_raw": quality.colour_drift(first_raw, last_raw),  # first vs last segment as sampled (delta E of mean Lab)
        "colour_drift": quality.colour_drift(first_raw, last_matched),  # first vs last segment after matching
    }
    return out, float(spec.fps), run


def _joined(parts: list[tuple], frames: int, fps: float):
    """The segments' soundtracks joined at their seams and cut to `frames` frames (None: no segment had sound)."""
    from ..video.audio import fit, join

    audio = join(parts, fps)
    return None if audio is None else fit(audio, frames, fps)


# ----------------------------------------------------------------------------
def generate_keyframes(sample: SampleFn, image, keyframes: list, spec: GenerationSpec, report: ProgressFn,
                       cancel: CancelFn) -> tuple[np.ndarray, float, RunRecord]:
    """Through several keyframes: one segment per pair (image -> keyframes[0] -> keyframes[1] ...),
    each sampled from its own first and last image (`sample(..., end_image=)`, keyframes.py).
    -> (frames, fps, what the chain did).

    Neighbouring segments share their seam frame: segment k ends on keyframe k, segment k+1 starts
    on it, and the frame is kept once (segment k+1's, whose first frame is set to the keyframe's
    latent). Anchored on real images at both ends, segments need no colour matching or seam morphing.
    Seeds as for long videos: segment 0 the spec's seed, segment k one derived from it."""
    count = len(keyframes)
    chain = _Chain(spec, count)
    out: np.ndarray | None = None
    starts = [image, *keyframes[:-1]]
    for k in range(count):
        frames, seed, seg = chain.sample(sample, k, starts[k], report, cancel, {}, end_image=keyframes[k])
        chain.run.keyframes = seg.keyframes
        seam_at = 0 if out is None else len(out) - 1
        chain.parts[-1] = (seg.audio, seam_at)
        out = frames if out is None else np.concatenate([out[:-1], frames], axis=0)
        chain.run.segments.append({"index": k, "seed": seed, "frames": int(len(frames)), "seam_at": seam_at,
                             "conditioned_on": ["image" if k == 0 else f"keyframe {k}", f"keyframe {k + 1}"]})
    assert out is not None
    run = chain.finish()
    run.audio = _joined(chain.parts, len(out), spec.fps)
    run.keyframes = {**(run.keyframes or {}), "pairs": count, "frames": int(len(out)), "seed_rule": SEED_RULE}
    return out, float(spec.fps), run
