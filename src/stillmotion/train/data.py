"""Training data: a folder of clips -> windows of `num_frames` frames at a chosen fps and size.

    data = ClipFolder("./clips", num_frames=14, width=1024, height=576, fps=7)
    sample = data[i]   # {"frames": uint8 (T, H, W, 3), "fps": 7, "motion_bucket": 93, "name": ...}

A clip is a video file (mp4, webm, mov, mkv, avi, gif, webp) or a folder of
frames (png/jpg, in name order; played at `frames_fps`). Each clip is decoded
once, resampled in time to `fps` (every k-th frame, k = round(source fps /
fps)), and sized like generation sizes an image (images.prepare: crop, pad or
stretch). Every run of `num_frames` consecutive frames is a training window,
with its first frame as the conditioning image; each window's motion bucket
is measured from its optical flow (metrics.motion_bucket) the first time it
is drawn.

Unreadable clips and clips shorter than `num_frames` are skipped and listed in
`skipped`; a folder with no usable clip is an InvalidInput that says why.
Decoded frames are kept in memory at the training size.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InvalidInput, StillmotionError

VIDEO_SUFFIXES = (".mp4", ".webm", ".mov", ".mkv", ".avi", ".m4v", ".gif", ".webp")
FRAME_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


@dataclass
class Skipped:
    name: str
    reason: str

    def __str__(self) -> str:
        return f"{self.name} ({self.reason})"


def _frame_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in FRAME_SUFFIXES)


def find_clips(folder: Path) -> list[Path]:
    """Video files and frame folders directly inside `folder`, sorted by name."""
    out = []
    for p in sorted(folder.iterdir()):
        if p.name.startswith("."):
            continue
        if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES:
            out.append(p)
        elif p.is_dir() and _frame_files(p):
            out.append(p)
    return out


def read_clip(path: Path, frames_fps: float = 8.0) -> tuple[np.ndarray, float]:
    """uint8 (T, H, W, 3) frames and fps of a video file or a folder of frames."""
    if path.is_dir():
        from PIL import Image

        files = _frame_files(path)
        frames = []
        for f in files:
            try:
                with Image.open(f) as im:
                    frames.append(np.asarray(im.convert("RGB")))
            except Exception as e:  # noqa: BLE001 - reported as a skipped clip
                raise InvalidInput(f"frame {f.name} is not a readable image ({e})") from None
        if len({fr.shape for fr in frames}) > 1:
            raise InvalidInput("its frames differ in size")
        return np.stack(frames), float(frames_fps)
    from ..video import read_video

    return read_video(path)


def _fit(frames: np.ndarray, width: int, height: int, resize: str) -> np.ndarray:
    from PIL import Image

    from ..images import prepare

    if frames.shape[1] == height and frames.shape[2] == width:
        return frames
    return np.stack([np.asarray(prepare(Image.fromarray(f), width, height, resize)) for f in frames])


class ClipFolder:
    """Every `num_frames` window of every usable clip in a folder (see the module doc)."""

    def __init__(self, folder, *, num_frames: int, width: int, height: int, fps: int, resize: str = "crop",
                 frames_fps: float = 8.0, motion_bucket: int | None = None):
        self.folder = Path(folder).expanduser()
        self.num_frames, self.width, self.height, self.fps = int(num_frames), int(width), int(height), int(fps)
        self.fixed_bucket = motion_bucket
        if not self.folder.exists():
            raise InvalidInput(f"No clips folder at {self.folder}; pass a folder of mp4/webm/gif clips or frame folders.")
        if not self.folder.is_dir():
            raise InvalidInput(f"{self.folder} is a file; pass the folder that holds your clips.")
        paths = find_clips(self.folder)
        if not paths:
            raise InvalidInput(
                f"{self.folder} holds no clips: put video files ({', '.join(s[1:] for s in VIDEO_SUFFIXES)}) "
                "or folders of PNG/JPEG frames in it."
            )
        self.clips: list[tuple[str, np.ndarray]] = []
        self.skipped: list[Skipped] = []
        for p in paths:
            try:
                frames, src_fps = read_clip(p, frames_fps)
            except StillmotionError as e:
                self.skipped.append(Skipped(p.name, f"unreadable: {e.message}"))
                continue
            except Exception as e:  # noqa: BLE001 - any decoder failure skips the clip
                self.skipped.append(Skipped(p.name, f"unreadable: {e}"))
                continue
            stride = max(1, round(src_fps / self.fps)) if src_fps and src_fps > 0 else 1
            frames = frames[::stride]
            if len(frames) < self.num_frames:
                self.skipped.append(Skipped(
                    p.name, f"too short: {len(frames)} frames at {self.fps} fps, needs {self.num_frames}"))
                continue
            self.clips.append((p.name, _fit(frames, self.width, self.height, resize)))
        if not self.clips:
            reasons = "; ".join(str(s) for s in self.skipped[:3]) + (" ..." if len(self.skipped) > 3 else "")
            raise InvalidInput(f"No usable clip in {self.folder} ({len(self.skipped)} skipped: {reasons}).")
        self.windows = [(c, s) for c, (_, fr) in enumerate(self.clips) for s in range(len(fr) - self.num_frames + 1)]
        self._buckets: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, i: int) -> dict:
        c, s = self.windows[i]
        name, frames = self.clips[c]
        window = frames[s : s + self.num_frames]
        if self.fixed_bucket is not None:
            bucket = int(self.fixed_bucket)
        else:
            if i not in self._buckets:
                from ..metrics import motion_bucket

                self._buckets[i] = motion_bucket(window)
            bucket = self._buckets[i]
        return {"frames": window, "fps": self.fps, "motion_bucket": bucket, "name": f"{name}@{s}"}

    def describe(self) -> str:
        text = f"{len(self.clips)} clips, {len(self)} windows of {self.num_frames} frames at {self.width}x{self.height}, {self.fps} fps"
        if self.skipped:
            text += f"; skipped {len(self.skipped)}: " + "; ".join(str(s) for s in self.skipped)
        return text
