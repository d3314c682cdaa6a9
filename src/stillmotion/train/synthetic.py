"""Procedural clips: scenes made of gradients, textures and shapes, filmed by a moving camera.

Used to train the built-in `demo` model (scripts/train_demo.py) and by the
tests, which need clips without shipping any. Everything is drawn with numpy
and OpenCV from a seeded generator, so a seed means the same clip everywhere.

    scene = make_scene(rng, 160)                       # uint8 (160, 160, 3) canvas
    clip = film(scene, 64, 64, 8, Camera(pan=(1.5, 0), zoom=0.01))  # uint8 (8, 64, 64, 3)

A camera pans (pixels per frame, in output pixels) and zooms (relative scale
change per frame, > 0 pushes in); objects can also move over the scene on their
own (`make_clip(..., objects=True)`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Camera:
    pan: tuple[float, float] = (0.0, 0.0)  # (dx, dy) output pixels per frame: the camera's move
    zoom: float = 0.0  # relative scale change per frame; > 0 pushes in


def _gradient(rng, size: int) -> np.ndarray:
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    if rng.random() < 0.7:
        a = rng.uniform(0, 2 * np.pi)
        t = (np.cos(a) * xx + np.sin(a) * yy)
        t = (t - t.min()) / max(1e-6, t.max() - t.min())
    else:
        cx, cy = rng.uniform(0.2, 0.8, 2)
        t = np.clip(np.hypot(xx - cx, yy - cy) / rng.uniform(0.4, 0.9), 0, 1)
    return c0 * (1 - t[..., None]) + c1 * t[..., None]


def _texture(rng, size: int) -> np.ndarray:
    """A zero-mean texture layer (H, W, 3) in -1..1 units."""
    import cv2

    kind = rng.integers(0, 3)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    if kind == 0:  # smooth noise
        cells = int(rng.integers(4, 16))
        small = rng.uniform(-1, 1, (cells, cells, 3)).astype(np.float32)
        return cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)
    if kind == 1:  # stripes
        a = rng.uniform(0, np.pi)
        f = rng.uniform(0.08, 0.35)
        s = np.sin(f * (np.cos(a) * xx + np.sin(a) * yy) + rng.uniform(0, 6.3))
        return s[..., None] * rng.uniform(-1, 1, 3)[None, None, :]
    cell = int(rng.integers(4, 12))  # checks
    s = (((xx // cell) + (yy // cell)) % 2) * 2 - 1
    return cv2.GaussianBlur(s.astype(np.float32), (0, 0), 0.7)[..., None] * rng.uniform(-1, 1, 3)[None, None, :]


def _shape_mask(rng, size: int, scale: float = 1.0) -> np.ndarray:
    import cv2

    mask = np.zeros((size, size), np.uint8)
    cx, cy = rng.uniform(0, size, 2)
    r = rng.uniform(4, 22) * scale
    kind = rng.integers(0, 4)
    if kind == 0:
        cv2.circle(mask, (int(cx), int(cy)), int(r), 255, -1, cv2.LINE_AA)
    elif kind == 1:
        w, h = rng.uniform(0.5, 1.6, 2) * r
        cv2.rectangle(mask, (int(cx - w), int(cy - h)), (int(cx + w), int(cy + h)), 255, -1, cv2.LINE_AA)
    elif kind == 2:
        angles = rng.uniform(0, 2 * np.pi) + np.array([0, 2.1, 4.2]) + rng.uniform(-0.3, 0.3, 3)
        pts = np.stack([cx + r * np.cos(angles), cy + r * np.sin(angles)], 1).astype(np.int32)
        cv2.fillPoly(mask, [pts], 255, cv2.LINE_AA)
    else:
        axes = (int(r), int(r * rng.uniform(0.3, 0.9)))
        cv2.ellipse(mask, (int(cx), int(cy)), axes, float(rng.uniform(0, 180)), 0, 360, 255, -1, cv2.LINE_AA)
    return mask.astype(np.float32) / 255.0


def _colour_layer(rng, size: int) -> np.ndarray:
    if rng.random() < 0.5:
        return np.broadcast_to(rng.uniform(0, 255, 3), (size, size, 3)).astype(np.float32)
    return _gradient(rng, size)


def make_scene(rng: np.random.Generator, size: int = 160, shapes: tuple[int, int] = (3, 9)) -> np.ndarray:
    """A square uint8 RGB canvas: a gradient, maybe a texture, then a few shapes."""
    img = _gradient(rng, size)
    if rng.random() < 0.6:
        img = img + _texture(rng, size) * rng.uniform(10, 45)
    for _ in range(int(rng.integers(shapes[0], shapes[1] + 1))):
        m = _shape_mask(rng, size)[..., None]
        layer = _colour_layer(rng, size)
        if rng.random() < 0.3:
            layer = layer + _texture(rng, size) * rng.uniform(10, 40)
        img = img * (1 - m) + layer * m
    return np.clip(img, 0, 255).astype(np.uint8)


def _view(src: np.ndarray, width: int, height: int, cx: float, cy: float, scale: float) -> np.ndarray:
    """The output view of `src` centred at (cx, cy) with magnification `scale`."""
    import cv2

    # output pixel p -> source cx + (p - centre_out) / scale
    m = np.array(
        [[1 / scale, 0, cx - (width - 1) / 2 / scale], [0, 1 / scale, cy - (height - 1) / 2 / scale]], np.float32
    )
    return cv2.warpAffine(src, m, (width, height), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REFLECT)


def film(scene: np.ndarray, width: int, height: int, num_frames: int, camera: Camera,
         start: tuple[float, float] | None = None) -> np.ndarray:
    """Film a scene with a moving camera: uint8 (T, H, W, 3)."""
    h, w = scene.shape[:2]
    cx, cy = start if start is not None else ((w - 1) / 2, (h - 1) / 2)
    out = []
    for k in range(num_frames):
        s = (1.0 + camera.zoom) ** k
        # pans are in output pixels per frame; in scene pixels they shrink as the camera pushes in
        x = cx + sum(camera.pan[0] / (1.0 + camera.zoom) ** i for i in range(k))
        y = cy + sum(camera.pan[1] / (1.0 + camera.zoom) ** i for i in range(k))
        out.append(_view(scene, width, height, x, y, s))
    return np.stack(out)


def make_clip(rng: np.random.Generator, width: int = 64, height: int = 64, num_frames: int = 8,
              camera: Camera | None = None, objects: bool = False, speed: tuple[float, float] = (0.3, 2.5)) -> np.ndarray:
    """One clip. With camera=None a random pan direction and speed (and a little zoom) is drawn.

    objects=True adds one to three shapes that move across the scene on their own.
    """
    import cv2

    if camera is None:
        a = rng.uniform(0, 2 * np.pi)
        v = rng.uniform(*speed)
        camera = Camera(pan=(v * np.cos(a), v * np.sin(a)), zoom=float(rng.uniform(-0.01, 0.02)))
    size = int(max(width, height) * 1.25 + 2 * num_frames * (max(abs(camera.pan[0]), abs(camera.pan[1])) + 1))
    scene = make_scene(rng, size)
    clip = film(scene, width, height, num_frames, camera).astype(np.float32)
    if objects:
        for _ in range(int(rng.integers(1, 4))):
            m = _shape_mask(rng, max(width, height), 0.6)[:height, :width]
            colour = rng.uniform(0, 255, 3)
            v = rng.uniform(-2.0, 2.0, 2)
            for k in range(num_frames):
                mk = cv2.warpAffine(m, np.float32([[1, 0, v[0] * k], [0, 1, v[1] * k]]), (width, height))[..., None]
                clip[k] = clip[k] * (1 - mk) + colour * mk
    return np.clip(np.round(clip), 0, 255).astype(np.uint8)


def write_clips(folder, n: int, *, seed: int = 0, width: int = 64, height: int = 64, num_frames: int = 8,
                fps: int = 8, format: str = "mp4") -> list[Path]:
    """Write n random clips to a folder (mp4 or gif files, or 'frames': a folder of PNGs per clip)."""
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        clip = make_clip(rng, width, height, num_frames)
        if format == "frames":
            p = folder / f"clip{i:03d}"
            p.mkdir(exist_ok=True)
            for k, f in enumerate(clip):
                Image.fromarray(f).save(p / f"{k:04d}.png")
        elif format == "gif":
            p = folder / f"clip{i:03d}.gif"
            ims = [Image.fromarray(f) for f in clip]
            ims[0].save(p, save_all=True, append_images=ims[1:], duration=int(1000 / fps), loop=0)
        else:
            from ..video import write

            p = folder / f"clip{i:03d}.{format}"
            write(clip, p, fps=fps, format=format, sidecar=False)
        paths.append(p)
    return paths
