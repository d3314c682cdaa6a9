"""Measured motion, not a feeling: three numbers for a generated video.

    m = motion_metrics(frames, image)
    m["frame0_psnr"]     how close frame 0 is to the input image (dB; higher is closer)
    m["motion"]          how much it moves: mean optical-flow magnitude, pixels per frame
    m["coherence_psnr"]  how coherent the motion is: PSNR of each frame against the
                         previous one warped by the flow between them (dB)

Flow is OpenCV's DIS optical flow (preset FAST) on grey frames, measured backwards (frame t -> t-1) so
that warping frame t-1 by it predicts frame t. Pixels whose source lies outside
frame t-1 (content that just entered the view) are left out of the coherence
PSNR: nothing could have predicted them. Noise moves "a lot" and incoherently;
a still video is coherent and does not move; a good video does both.

`motion_bucket(frames)` turns measured motion into SVD's motion-bucket id, the
number the training loop conditions each clip on.
"""

from __future__ import annotations

import numpy as np

# DIS rather than Farneback: on a known 1.5 px/frame pan of textured scenes at 64x64,
# DIS (FAST) measures 1.50 px and Farneback 0.57-0.69 (it gives up in flat regions).
_DIS_PRESET = 1  # cv2.DISOPTICAL_FLOW_PRESET_FAST


def psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """PSNR in dB of two uint8 (or 0..255 float) images or frame stacks (inf when equal); `mask`
    (H, W) bool picks the pixels. The one PSNR: video/quality.py and the benchmarks use it."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"psnr: shapes differ, {a.shape} vs {b.shape}")
    d = (a - b) ** 2
    if mask is not None:
        d = d[mask]
    return psnr_of_mse(float(d.mean()) if d.size else 0.0)


def psnr_of_mse(mse: float) -> float:
    """PSNR in dB of a mean squared error on the 0..255 scale (inf for 0)."""
    return float("inf") if mse == 0 else float(10.0 * np.log10(255.0**2 / mse))


def _grey(frame: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)


def flow(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Dense flow (H, W, 2) with dst(y, x) ~= src(y + f[..., 1], x + f[..., 0])."""
    import cv2

    return cv2.DISOpticalFlow_create(_DIS_PRESET).calc(_grey(dst), _grey(src), None)


def warp(src: np.ndarray, f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """src warped by a backward flow (see flow()), and the mask of pixels whose source is inside src."""
    import cv2

    h, w = f.shape[:2]
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    mx, my = gx + f[..., 0], gy + f[..., 1]
    out = cv2.remap(np.ascontiguousarray(src), mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    inside = (mx >= 0) & (mx <= w - 1) & (my >= 0) & (my <= h - 1)
    return out, inside


def _check(frames) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 2:
        raise ValueError(f"frames must be uint8 (T>=2, H, W, 3), got shape {frames.shape}")
    if frames.dtype != np.uint8:
        frames = np.clip(np.round(frames), 0, 255).astype(np.uint8)
    return frames


def motion_per_frame(frames) -> list[float]:
    """Mean flow magnitude (pixels) between each pair of consecutive frames."""
    frames = _check(frames)
    return [float(np.linalg.norm(flow(frames[t - 1], frames[t]), axis=-1).mean()) for t in range(1, len(frames))]


def mean_motion(frames) -> float:
    """Mean optical-flow magnitude per frame, in pixels."""
    return float(np.mean(motion_per_frame(frames)))


def coherence_psnr(frames) -> float:
    """PSNR of each frame against the previous frame warped by the flow, pooled over the video (dB)."""
    frames = _check(frames)
    se, n = 0.0, 0
    for t in range(1, len(frames)):
        f = flow(frames[t - 1], frames[t])
        pred, inside = warp(frames[t - 1], f)
        d = (pred.astype(np.float64) - frames[t].astype(np.float64)) ** 2
        se += float(d[inside].sum())
        n += int(inside.sum()) * 3
    return psnr_of_mse(se / max(1, n))


def frame0_psnr(frames, image) -> float:
    """PSNR of frame 0 against the input image (a PIL image or uint8 array), resized to the frame if needed."""
    frames = _check(frames)
    ref = np.asarray(image.convert("RGB") if hasattr(image, "convert") else image)
    if ref.shape != frames[0].shape:
        import cv2

        ref = cv2.resize(ref, (frames.shape[2], frames.shape[1]), interpolation=cv2.INTER_AREA)
    return psnr(frames[0], ref)


def motion_metrics(frames, image=None) -> dict:
    """frame0_psnr (when the input image is given), motion (px/frame) and coherence_psnr (dB)."""
    out = {}
    if image is not None:
        out["frame0_psnr"] = round(float(frame0_psnr(frames, image)), 2)
    out["motion"] = round(float(mean_motion(frames)), 3)
    out["coherence_psnr"] = round(float(coherence_psnr(frames)), 2)
    return out


# Motion bucket: SVD conditions on a motion-bucket id (0..255, 127 by default) computed
# from optical flow; the exact mapping it was trained with is unpublished. Ours is
# linear in flow measured at a 1024-pixel-wide frame: 5 buckets per pixel per frame,
# so 127 is about 25 px/frame at 1024 wide (1.6 px/frame at 64 wide).
BUCKETS_PER_PX_AT_1024 = 5.0


def motion_bucket(frames, *, lo: int = 1, hi: int = 255) -> int:
    """The motion-bucket id for a clip, from its mean optical flow."""
    frames = _check(frames)
    width = frames.shape[2]
    if width > 256:  # flow on a smaller copy is faster and just as good for a mean
        import cv2

        s = 256 / width
        frames = np.stack([cv2.resize(f, (256, max(8, round(f.shape[0] * s))), interpolation=cv2.INTER_AREA) for f in frames])
        width = 256
    px = mean_motion(frames) * 1024.0 / width
    return int(np.clip(round(BUCKETS_PER_PX_AT_1024 * px), lo, hi))
