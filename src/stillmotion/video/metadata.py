"""The sidecar: NAME.json beside every output, and the JSON inside the MP4.

A sidecar is the caller's metadata (the engine passes the spec, the resolved
seed, the model id/revision/weight hashes, package versions, device, timings)
plus two keys of ours:

    {
      "schema": "stillmotion.sidecar/1",     # marks the file as ours
      ... caller's metadata ...
      "output": {"file": "photo.mp4", "format": "mp4", "frames": 25,
                 "width": 1024, "height": 576, "fps": 7.0, "bytes": 123456}
    }

Feeding it back (`stillmotion generate --from photo.json`) reproduces the video.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import json
import math
from fractions import Fraction
from pathlib import Path
from typing import Any

from stillmotion.errors import InvalidInput

SIDECAR_SCHEMA = "stillmotion.sidecar/1"
_SCHEMA_PREFIX = "stillmotion.sidecar/"

# Suffixes of the formats we write: sidecar_path() replaces these, and appends
# ".json" to any other name (a frames folder "out" -> "out.json").
_OUTPUT_SUFFIXES = (".mp4", ".webm", ".gif", ".webp", ".png")


def sidecar_path(out: str | Path) -> Path:
    """photo.mp4 -> photo.json; a frames folder "out" (or "out.png") -> out.json."""
    out = Path(out)
    if out.suffix.lower() in _OUTPUT_SUFFIXES:
        return out.with_suffix(".json")
    return out.with_name(out.name + ".json")


# Keys that differ between two runs of the same spec. They stay in NAME.json but
# not in the container's comment tag, so the same frames give byte-identical files.
VOLATILE_KEYS = ("created", "timings")


def build_sidecar(metadata: dict | None, output: dict) -> dict:
    """Our sidecar dict: schema marker first, the caller's keys, then "output"."""
    data: dict[str, Any] = {"schema": SIDECAR_SCHEMA}
    for key, value in (metadata or {}).items():
        if key in ("schema", "output"):
            continue  # ours; a caller's value would be overwritten anyway
        data[str(key)] = value
    data["output"] = output
    return data


def dumps(data: Any, *, pretty: bool = True) -> str:
    """JSON text for a sidecar (pretty) or a container tag (compact).

    Paths, numpy scalars and arrays, datetimes, enums, dataclasses and pydantic
    models become plain JSON; NaN and infinity become null (strict readers such
    as a browser's JSON.parse reject them). Anything else is an InvalidInput,
    raised before any file is written.
    """
    try:
        clean = _plain(data)
        if pretty:
            return json.dumps(clean, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
        return json.dumps(clean, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise InvalidInput(f"The output metadata cannot be saved as JSON ({e}); pass plain values.") from None


def read_sidecar(path: str | Path) -> dict:
    """Read a sidecar written by stillmotion.

    `path` is the NAME.json itself, or the video/frames folder it sits beside.
    Raises InvalidInput when the file is missing, is not JSON, or is not ours.
    """
    path = Path(path)
    if path.suffix.lower() != ".json":
        path = sidecar_path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidInput(
            f"No sidecar at {path}; pass the NAME.json that stillmotion wrote beside a video."
        ) from None
    except IsADirectoryError:
        raise InvalidInput(f"{path} is a folder, not a sidecar; pass the NAME.json beside a video.") from None
    except UnicodeDecodeError:
        raise InvalidInput(f"{path} is not a JSON text file; pass the NAME.json beside a video.") from None
    except OSError as e:
        raise InvalidInput(
            f"Cannot read sidecar {path}: {e.strerror or e}; check the path and its permissions."
        ) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise InvalidInput(
            f"{path} is not valid JSON (line {e.lineno}: {e.msg}); pass the NAME.json that stillmotion wrote."
        ) from None
    if not isinstance(data, dict) or not str(data.get("schema", "")).startswith(_SCHEMA_PREFIX):
        raise InvalidInput(
            f"{path} is JSON but not a stillmotion sidecar (no \"schema\": \"{SIDECAR_SCHEMA}\"); "
            "pass the NAME.json that stillmotion wrote beside a video."
        )
    return data


def _plain(value: Any) -> Any:
    """A copy of `value` made of dict/list/str/int/float/bool/None only."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((_plain(v) for v in value), key=repr)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Fraction):
        return _plain(float(value))
    if isinstance(value, enum.Enum):
        return _plain(value.value)
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _plain(dataclasses.asdict(value))
    if hasattr(value, "model_dump"):  # pydantic v2 (GenerationSpec)
        return _plain(value.model_dump(mode="json"))
    if hasattr(value, "tolist") and hasattr(value, "dtype"):  # numpy scalar or array
        return _plain(value.tolist())
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
