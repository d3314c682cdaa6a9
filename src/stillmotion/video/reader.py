"""Decode a video file to frames: read_video(path) -> (uint8 (T, H, W, 3) RGB, fps).

PyAV decodes anything FFmpeg knows (mp4, webm, mov, mkv, avi, ...); Pillow
decodes GIF and animated WebP (told apart by their first bytes, not the file
name), so frame delays and disposal are honoured. Still images (a PNG or
JPEG) are refused as "not a video".
"""

from __future__ import annotations

import math
import numbers
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

from stillmotion.errors import InvalidInput, InvalidVideo, NotFound, OutOfMemory

if TYPE_CHECKING:
    import numpy as np

# FFmpeg demuxers that read single images: a still image is not a video.
_IMAGE_DEMUXERS = ("image2", "png_pipe", "jpeg_pipe", "bmp_pipe", "tiff_pipe", "webp_pipe", "jpegxl_pipe")


def read_video(path: str | Path, *, max_frames: int | None = None) -> tuple[np.ndarray, float]:
    """All frames (or the first `max_frames`) as uint8 (T, H, W, 3) RGB, and the fps.

    Raises NotFound when there is no such file and InvalidVideo when it is not
    a video or holds no frames.
    """
    path = Path(path).expanduser()
    if max_frames is not None and (
        isinstance(max_frames, bool) or not isinstance(max_frames, numbers.Integral) or max_frames < 1
    ):
        raise InvalidInput(f"max_frames must be a whole number, at least 1; got {max_frames!r}.")
    if not path.exists():
        raise NotFound(f"No video at {path}; check the path.")
    if path.is_dir():
        raise InvalidVideo(f"{path} is a folder, not a video file; pass a video file such as clip.mp4.")
    try:
        with path.open("rb") as f:
            head = f.read(16)
    except OSError as e:
        raise InvalidVideo(f"Cannot read {path}: {e.strerror or e}; check its permissions.") from None

    try:
        if head[:6] in (b"GIF87a", b"GIF89a") or (head[:4] == b"RIFF" and head[8:12] == b"WEBP"):
            frames, fps = _read_pillow(path, max_frames)
        else:
            frames, fps = _read_av(path, max_frames)
    except (InvalidVideo, NotFound):
        raise
    except MemoryError:
        raise OutOfMemory(f"Out of memory decoding {path}; pass max_frames or use a shorter video.") from None
    except Exception as e:
        raise InvalidVideo(
            f"{path} could not be decoded as a video ({e}); pass an mp4, webm, mov, gif or webp file."
        ) from None

    if not frames:
        raise InvalidVideo(f"{path} holds no video frames; pass a video with at least one frame.")
    import numpy as np

    return np.stack(frames), fps


def _read_av(path: Path, max_frames: int | None) -> tuple[list, float]:
    import av

    try:
        container = av.open(str(path), mode="r")
    except av.error.FFmpegError as e:
        raise InvalidVideo(
            f"{path} is not a video FFmpeg can read ({_reason(e)}); pass an mp4, webm, mov, gif or webp file."
        ) from None
    with container:
        if not container.streams.video:
            raise InvalidVideo(f"{path} has no video stream; pass a video file.")
        if container.format.name in _IMAGE_DEMUXERS:
            raise InvalidVideo(f"{path} is a still image, not a video; pass a video file.")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        frames = []
        try:
            for frame in container.decode(stream):
                frames.append(frame.to_ndarray(format="rgb24"))
                if max_frames is not None and len(frames) >= max_frames:
                    break
        except av.error.FFmpegError as e:
            if not frames:
                raise InvalidVideo(
                    f"{path} is damaged and no frame decodes ({_reason(e)}); pass another file."
                ) from None
            # A truncated tail: keep what decoded, as players do.
        fps = _stream_fps(stream, len(frames))
    return frames, fps


def _stream_fps(stream, count: int) -> float:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate and rate > 0:
            return _nice(float(rate))
    if stream.duration and stream.time_base and count:
        seconds = float(stream.duration * stream.time_base)
        if seconds > 0:
            return _nice(count / seconds)
    return 25.0  # FFmpeg's own default when a file says nothing


def _read_pillow(path: Path, max_frames: int | None) -> tuple[list, float]:
    import numpy as np
    from PIL import Image, ImageSequence, UnidentifiedImageError

    try:
        image = Image.open(path)
    except UnidentifiedImageError:
        raise InvalidVideo(f"{path} looks like a GIF/WebP but cannot be read; pass another file.") from None
    with image:
        frames, delays = [], []
        for frame in ImageSequence.Iterator(image):
            frames.append(np.asarray(frame.convert("RGB")))
            delays.append(frame.info.get("duration") or 0)  # WebP sets it on load
            if max_frames is not None and len(frames) >= max_frames:
                break
        granularity = 10 if image.format == "GIF" else 1
    total = sum(delays)
    if total <= 0:
        return frames, 10.0  # no delays: browsers play GIFs at 10 fps
    return frames, _snap(len(frames), total, granularity)


def _snap(count: int, total_ms: float, granularity: int) -> float:
    """fps from a frame count and total delay, snapped to a whole fps when the
    delays' rounding (`granularity` ms per frame) explains the difference."""
    fps = 1000.0 * count / total_ms
    whole = round(fps)
    if whole > 0 and abs(1000.0 * count / whole - total_ms) <= granularity:
        return float(whole)
    return fps


def _nice(fps: float) -> float:
    """7.000000001 -> 7.0; 29.97002997 stays."""
    whole = round(fps)
    if math.isclose(fps, whole, rel_tol=1e-6):
        return float(whole)
    return float(Fraction(fps).limit_denominator(1001))


def _reason(e: Exception) -> str:
    return getattr(e, "strerror", None) or str(e)
