"""A workflow from a file: a workflow .json, or the prompt ComfyUI and VideoHelperSuite embed in their outputs
(PNG text or `comf` chunks "prompt", WebP EXIF 0x0110 "prompt:{...}", MP4/WebM container tags "prompt" or
"comment")."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path
from typing import Optional

from ..errors import InvalidInput
from .graph import as_prompt, is_api_workflow

def read_from_file(path: str | Path) -> Optional[dict]:
    """The API prompt in a workflow .json or in a ComfyUI output's metadata; None for one of our sidecars.

    Raises InvalidInput when the file is neither.
    """
    path = Path(path)
    if not path.is_file():
        raise InvalidInput(f"{path} does not exist; pass a sidecar NAME.json, a ComfyUI workflow .json or a ComfyUI output.")
    with open(path, "rb") as f:
        head = f.read(16)
    if path.suffix.lower() == ".json" or head.lstrip()[:1] in (b"{", b"["):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise InvalidInput(f"{path} is not valid JSON ({e}); pass a sidecar or a ComfyUI API workflow.") from None
        if isinstance(data, dict) and str(data.get("schema", "")).startswith("stillmotion."):
            return None
        return as_prompt(data, str(path))
    prompt = workflow_from_media(path)
    if prompt is None:
        raise InvalidInput(
            f"{path} carries no ComfyUI workflow in its metadata (no \"prompt\"); ComfyUI writes one unless it runs "
            "with --disable-metadata. Pass the workflow .json instead."
        )
    return prompt



# --------------------------------------------------------------------------- embedded in outputs
def workflow_from_media(path: str | Path) -> Optional[dict]:
    """The API prompt that ComfyUI / VideoHelperSuite embedded in an output file, or None."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(16)
    texts: dict[str, str] = {}
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        texts = _png_texts(path.read_bytes())
    elif head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        texts = _webp_texts(path)
    else:
        texts = _container_texts(path)
    for key in ("prompt", "comment"):
        value = texts.get(key)
        if value is None:
            continue
        try:
            obj = json.loads(value)
        except (json.JSONDecodeError, TypeError):
            continue
        if key == "comment" and isinstance(obj, dict) and "prompt" in obj:  # older VHS: comment={"prompt": ...}
            obj = obj["prompt"]
            if isinstance(obj, str):
                try:
                    obj = json.loads(obj)
                except json.JSONDecodeError:
                    continue
        if is_api_workflow(obj):
            return as_prompt(obj)
    return None


def _png_texts(data: bytes) -> dict[str, str]:
    """tEXt, zTXt, iTXt chunks and ComfyUI's `comf` chunks (animated PNGs) of a PNG, keyword -> text."""
    out: dict[str, str] = {}
    pos = 8
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        pos += 12 + length
        try:
            if kind in (b"tEXt", b"comf"):
                key, _, text = body.partition(b"\0")
                out.setdefault(key.decode("latin-1"), text.decode("latin-1"))
            elif kind == b"zTXt":
                key, _, rest = body.partition(b"\0")
                out.setdefault(key.decode("latin-1"), zlib.decompress(rest[1:]).decode("latin-1"))
            elif kind == b"iTXt":
                key, _, rest = body.partition(b"\0")
                compressed, rest = rest[0], rest[2:]
                _lang, _, rest = rest.partition(b"\0")
                _tkey, _, text = rest.partition(b"\0")
                out.setdefault(key.decode("latin-1"), (zlib.decompress(text) if compressed else text).decode("utf-8"))
        except (zlib.error, UnicodeDecodeError, IndexError):
            continue
        if kind == b"IEND":
            break
    return out


def _webp_texts(path: Path) -> dict[str, str]:
    """ComfyUI's SaveAnimatedWEBP: EXIF 0x0110 (Model) = "prompt:{json}", 0x010F and down = "workflow:{json}"."""
    from PIL import Image

    out: dict[str, str] = {}
    try:
        with Image.open(path) as im:
            exif = im.getexif()
            values = [exif.get(tag) for tag in range(0x0100, 0x0111)] + [exif.get(0x010E)]
    except Exception:  # noqa: BLE001 - an unreadable file simply carries no workflow
        return out
    for v in values:
        if isinstance(v, bytes):
            v = v.decode("utf-8", "replace")
        if isinstance(v, str) and ":" in v:
            key, _, text = v.partition(":")
            if key in ("prompt", "workflow"):
                out.setdefault(key, text)
    return out


def _container_texts(path: Path) -> dict[str, str]:
    """VideoHelperSuite's MP4/WebM tags: `prompt` (with -movflags use_metadata_tags) or `comment` (older)."""
    import av

    try:
        with av.open(str(path)) as c:
            tags = dict(c.metadata)
            for s in c.streams:
                for k, v in s.metadata.items():
                    tags.setdefault(k, v)
    except Exception:  # noqa: BLE001 - not a container PyAV reads: no workflow
        return {}
    return {k.lower(): v for k, v in tags.items()}


