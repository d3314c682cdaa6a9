"""Frames -> a file: mp4 (H.264), webm (VP9), gif, webp, or a folder of PNGs.

Frames are a numpy uint8 array (T, H, W, 3), RGB. `write()` is the one entry
point; every output

- appears whole or not at all: it is encoded under a hidden temp name in the
  target folder (``.photo.mp4.tmp-1a2b3c4d``) and renamed over the target only
  once complete. A failure, or Ctrl-C, removes the temp file and leaves an
  existing output untouched;
- gets a sidecar NAME.json (see metadata.py), written the same way, renamed
  into place right after the video.

Format notes (what a user would notice):

- mp4: H.264 (libx264) yuv420p, BT.709 tagged, ``+faststart`` (the moov atom
  leads, so browsers start playing before the download ends). Odd sizes are
  padded by one edge-replicated row/column (yuv420p needs even sizes); the
  Artifact reports the padded size. The compact metadata JSON is also the
  container's ``comment`` tag. `quality` is the x264 CRF, 0-51 (default 18;
  lower is better and bigger).
- webm: VP9 (libvpx-vp9) yuv420p, constant quality; `quality` is the CRF,
  0-63 (default 31). Same padding and comment tag as mp4.
- gif: loops forever. GIF stores delays in 1/100 s, so frame delays alternate
  (e.g. 140/150 ms at 7 fps) to keep the total duration exact; the fastest GIF
  browsers honour is 50 fps, so higher rates are written (and reported) as
  50 fps. Each frame gets its own 256-colour palette (fast octree,
  Floyd-Steinberg dithering). Identical consecutive frames are merged by Pillow (their delays
  add up), so the file may hold fewer frames than given.
- webp: animated, loops forever, lossy; `quality` is 0-100 (default 90;
  higher is better). Identical consecutive frames may be merged, as for gif.
- audio (a video.audio.Audio, e.g. LTX-2's): mp4 gets an AAC track (at the
  model's rate when AAC has it, else 48 kHz), webm an Opus track (48 kHz);
  gif, webp and png get ``NAME.wav`` beside them (float32: the samples
  exactly), renamed into place with the video. The sidecar's "audio" says
  what was written (rates, seconds, channels, codec, sha256 of the samples).
- png: a folder of ``frame_00000.png`` ...; a ".png" suffix on `out` names the
  folder without it (``photo.png`` -> folder ``photo``). An existing folder is
  replaced only if it holds nothing but frame_NNNNN.png files. Over HTTP the
  folder is served as a zip (CONTENT_TYPES["png"] == "application/zip").

PyAV and Pillow are imported on first use, so importing stillmotion stays fast.
"""

from __future__ import annotations

import contextlib
import errno
import numbers
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

from stillmotion.errors import InvalidInput, OutOfMemory, StillmotionError
from stillmotion.util import remove, replace, temp_name
from stillmotion.video.audio import Audio, record, wav_path, write_wav
from stillmotion.video.encoders import write_av, write_gif, write_png_folder, write_webp
from stillmotion.video.metadata import VOLATILE_KEYS, build_sidecar, dumps, sidecar_path

if TYPE_CHECKING:
    import numpy as np

FORMATS = ("mp4", "webm", "gif", "webp", "png")

CONTENT_TYPES = {
    "mp4": "video/mp4",
    "webm": "video/webm",
    "gif": "image/gif",
    "webp": "image/webp",
    "png": "application/zip",  # a folder of frames; the server sends it zipped
}

# quality: (lowest, highest, default) on each format's own scale.
QUALITY = {
    "mp4": (0, 51, 18),  # x264 CRF, lower is better
    "webm": (0, 63, 31),  # VP9 CRF, lower is better
    "webp": (0, 100, 90),  # libwebp quality, higher is better
}

GIF_MAX_FPS = 50  # browsers slow down delays under 20 ms to 100 ms
MAX_FPS = 1000
_FRAME_RE = re.compile(r"frame_\d{5,}\.png")


@dataclass
class Artifact:
    """What `write()` produced."""

    path: Path  # the video file, or the folder of PNG frames
    sidecar: Path | None  # NAME.json beside it (None when sidecar=False)
    format: str
    frames: int
    width: int
    height: int
    fps: float
    bytes: int  # file size; for png, the frames' total
    audio: Path | None = None  # NAME.wav beside a gif/webp/png output that has sound (mp4/webm mux it)

    @property
    def content_type(self) -> str:
        return CONTENT_TYPES[self.format]

    def to_dict(self) -> dict:
        return {
            "path": str(self.path),
            "sidecar": str(self.sidecar) if self.sidecar is not None else None,
            "format": self.format,
            "content_type": self.content_type,
            "frames": self.frames,
            "width": self.width,
            "height": self.height,
            "fps": self.fps,
            "bytes": self.bytes,
            "audio": str(self.audio) if self.audio is not None else None,
        }


def format_from_path(path: str | Path) -> str | None:
    """".mp4" -> "mp4" (any case); no suffix, or one we do not write -> None."""
    name = Path(path).name.lower()
    if name.startswith(".") and name.count(".") == 1:  # ".mp4" alone is a suffix, not a file name
        suffix = name
    else:
        suffix = Path(name).suffix
    return suffix[1:] if suffix[1:] in FORMATS else None


def write(
    frames: np.ndarray,
    out: str | Path,
    *,
    fps: float,
    format: str | None = None,
    metadata: dict | None = None,
    sidecar: bool = True,
    quality: int | None = None,
    audio: Audio | None = None,
) -> Artifact:
    """Write `frames` (uint8 T,H,W,3 RGB) to `out`, atomically, with a sidecar.

    `format` None: from the suffix of `out`; no suffix means mp4 and ".mp4" is
    appended. `fps` is the playback rate (int, float or Fraction; 29.97 and
    30000/1001 both work). Raises InvalidInput for bad arguments or an
    unwritable place, StillmotionError when encoding fails. `audio`: the soundtrack, muxed (mp4, webm) or
    written beside as NAME.wav (gif, webp, png), and recorded in the sidecar's "audio".
    """
    # 1. Check everything before touching the disk.
    frames = _check_frames(frames)
    rate = _check_fps(fps)
    fmt, target = _resolve_target(out, format)
    crf = _check_quality(fmt, quality)
    if fmt == "gif" and rate > GIF_MAX_FPS:
        rate = Fraction(GIF_MAX_FPS)
    count, height, width, _ = frames.shape
    if fmt in ("mp4", "webm"):  # yuv420p needs even sizes
        width, height = width + width % 2, height + height % 2
    output = {
        "file": target.name,
        "format": fmt,
        "frames": count,
        "width": width,
        "height": height,
        "fps": float(rate),
    }
    if audio is not None and not isinstance(audio, Audio):
        raise InvalidInput(f"audio must be a video.audio.Audio; got {type(audio).__name__}.")
    if audio is not None and len(audio) == 0:
        audio = None  # no samples: no track (an encoder given nothing would write an empty, unplayable one)
    wav = wav_path(target) if audio is not None and fmt not in ("mp4", "webm") else None
    if audio is not None:
        given = (metadata or {}).get("audio") or {}  # what the run says of its soundtrack (a given one: "given")
        metadata = {**(metadata or {}), "audio": {**given, **record(audio, fmt, wav.name if wav else None)}}
    stable = {k: v for k, v in (metadata or {}).items() if k not in VOLATILE_KEYS}
    comment = dumps(build_sidecar(stable, output), pretty=False)  # also checks metadata is JSON-able
    side = sidecar_path(target) if sidecar else None

    # 2. Make the folder; refuse to replace something that is not ours.
    _prepare_target(target, fmt)

    # 3. Encode under temp names, 4. rename into place: video, its WAV, then sidecar.
    tmp: Path | None = temp_name(target)
    side_tmp: Path | None = None
    wav_tmp: Path | None = None
    try:
        with _library_errors(fmt, target):
            if wav is not None:
                if wav.is_dir():
                    raise InvalidInput(f"{wav} is a folder; the sound beside {target.name} goes there: move it.")
                wav_tmp = temp_name(wav)
                write_wav(wav_tmp, audio)
            if fmt in ("mp4", "webm"):
                write_av(tmp, frames, fmt, rate, crf, comment, audio)
            elif fmt == "gif":
                write_gif(tmp, frames, rate)
            elif fmt == "webp":
                write_webp(tmp, frames, rate, crf)
            else:
                write_png_folder(tmp, frames)
            output["bytes"] = _size(tmp)
            if side is not None:
                side_tmp = temp_name(side)
                side_tmp.write_text(dumps(build_sidecar(metadata, output)), encoding="utf-8")
            replace(tmp, target)  # a frames folder: the old one goes only after
            tmp = None
            if wav_tmp is not None:
                replace(wav_tmp, wav)
                wav_tmp = None
            if side_tmp is not None:
                replace(side_tmp, side)
                side_tmp = None
    except BaseException:
        remove(tmp)
        remove(wav_tmp)
        remove(side_tmp)
        raise

    return Artifact(
        path=target,
        sidecar=side,
        format=fmt,
        frames=count,
        width=width,
        height=height,
        fps=float(rate),
        bytes=output["bytes"],
        audio=wav,
    )


# --- checks -----------------------------------------------------------------


def _check_frames(frames):
    import numpy as np

    if not isinstance(frames, np.ndarray):
        try:
            frames = np.asarray(frames)
        except Exception as e:  # ragged lists and the like
            raise InvalidInput(
                f"frames must be a uint8 array (T, H, W, 3); got {type(frames).__name__} ({e})."
            ) from None
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise InvalidInput(f"frames must have shape (T, H, W, 3) RGB; got shape {tuple(frames.shape)}.")
    if frames.dtype != np.uint8:
        raise InvalidInput(
            f"frames must be uint8 (0..255); got {frames.dtype}. "
            "Convert with (x * 255).round().clip(0, 255).astype('uint8')."
        )
    if 0 in frames.shape[:3]:
        raise InvalidInput(f"frames is empty (shape {tuple(frames.shape)}); there is nothing to write.")
    return frames


def _check_fps(fps) -> Fraction:
    try:
        if isinstance(fps, bool):
            raise TypeError
        rate = Fraction(fps) if isinstance(fps, (int, Fraction)) else Fraction(float(fps)).limit_denominator(1001)
    except (TypeError, ValueError, OverflowError):
        raise InvalidInput(f"fps must be a positive number; got {fps!r}.") from None
    if not 0 < rate <= MAX_FPS:
        raise InvalidInput(f"fps must be above 0 and at most {MAX_FPS}; got {fps!r}.")
    return rate


def _resolve_target(out, format: str | None) -> tuple[str, Path]:
    if format is not None:
        format = str(format).lower().lstrip(".")
        if format not in FORMATS:
            raise InvalidInput(f"Unknown format {format!r}; use one of {', '.join(FORMATS)}.")
    if not str(out).strip():
        raise InvalidInput("The output path is empty; give a file name such as out.mp4.")
    target = Path(out).expanduser()
    suffix = target.suffix.lower()
    from_suffix = format_from_path(target)
    if format is None:
        if from_suffix is not None:
            format = from_suffix
        elif suffix == "":
            format = "mp4"
            target = target.with_name(target.name + ".mp4")
        else:
            raise InvalidInput(
                f"Cannot tell the video format from {target.name!r}; end the name with "
                f"{', '.join('.' + f for f in FORMATS)} or pass the format."
            )
    elif from_suffix is not None and from_suffix != format:
        raise InvalidInput(
            f"The output {target.name!r} ends in {suffix!r} but the format is {format!r}; "
            f"make them agree (e.g. {target.with_suffix('.' + format).name!r})."
        )
    elif from_suffix is None and format != "png":
        target = target.with_name(target.name + "." + format)
    if format == "png" and suffix == ".png":
        target = target.with_suffix("")  # photo.png -> folder photo/
    if target.name in ("", ".", ".."):
        raise InvalidInput(f"{out!s} is not a file name; give one such as out.{format}.")
    return format, target


def _check_quality(fmt: str, quality) -> int | None:
    if fmt not in QUALITY:
        return None  # gif and png have no quality knob
    low, high, default = QUALITY[fmt]
    if quality is None:
        return default
    whole = isinstance(quality, numbers.Integral) or (isinstance(quality, float) and quality.is_integer())
    if isinstance(quality, bool) or not whole:
        raise InvalidInput(f"quality must be a whole number {low}..{high} for {fmt}; got {quality!r}.")
    if not low <= quality <= high:
        better = "lower" if fmt in ("mp4", "webm") else "higher"
        raise InvalidInput(f"quality for {fmt} must be {low}..{high} ({better} is better); got {quality}.")
    return int(quality)


def _prepare_target(target: Path, fmt: str) -> None:
    with _library_errors(fmt, target):
        target.parent.mkdir(parents=True, exist_ok=True)
        _check_replaceable(target, fmt)


def _check_replaceable(target: Path, fmt: str) -> None:
    if fmt != "png":
        if target.is_dir():
            example = target / ("video." + fmt)
            raise InvalidInput(f"{target} is a folder; give a file name inside it, such as {example}.")
        return
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        raise InvalidInput(f"{target} exists and is not a folder of frames; choose another name or remove it.")
    if target.is_dir():
        others = [p.name for p in target.iterdir() if not _FRAME_RE.fullmatch(p.name)]
        if others:
            raise InvalidInput(
                f"{target} already exists and holds files other than frames (e.g. {others[0]!r}); "
                "choose a new name or empty it."
            )


# --- files ------------------------------------------------------------------------


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.iterdir())
    return path.stat().st_size


@contextlib.contextmanager
def _library_errors(fmt: str, target: Path):
    """PyAV, Pillow and OS errors -> stillmotion errors that say what to do."""
    try:
        yield
    except StillmotionError:
        raise
    except MemoryError:
        raise OutOfMemory(f"Out of memory while writing {target}; write fewer or smaller frames.") from None
    except OSError as e:  # includes PyAV's PermissionError, FileNotFoundError, ...
        raise _os_error(e, target, fmt) from None
    except Exception as e:
        if _is_library_error(e):
            raise StillmotionError(f"Could not encode {fmt} {target}: {e}; try another format (e.g. mp4).") from None
        raise


def _os_error(e: OSError, target: Path, fmt: str) -> StillmotionError:
    code = getattr(e, "errno", None)
    where = target.parent
    if code in (errno.EACCES, errno.EPERM):
        return InvalidInput(
            f"Permission denied writing {target}; choose a folder you can write to or fix the permissions of {where}."
        )
    if code == errno.EROFS:
        return InvalidInput(f"{where} is on a read-only file system; choose another output folder.")
    if code in (errno.ENOTDIR, errno.EEXIST):
        return InvalidInput(
            f"Cannot create {where}: part of that path is a file, not a folder; choose another output path."
        )
    if code == errno.ENAMETOOLONG:
        return InvalidInput(f"The output name {target.name!r} is too long for the file system; choose a shorter one.")
    if code == errno.EISDIR:
        return InvalidInput(f"{target} is a folder; give a file name inside it.")
    if code in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
        return StillmotionError(f"No space left writing {target}; free some disk space or choose another folder.")
    return StillmotionError(f"Could not write {fmt} {target}: {e.strerror or e}; check the folder and try again.")


def _is_library_error(e: BaseException) -> bool:
    module = type(e).__module__ or ""
    return module.startswith(("av", "PIL")) or isinstance(e, (ValueError, EOFError))
