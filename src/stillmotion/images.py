"""Safe image input: read a path, bytes or http(s) URL, decode it, size it.

Every front end (CLI, batch, HTTP API, UI) takes the same path:

    read_source_bytes()   path | bytes | URL -> raw bytes (byte limit, timeouts)
    load_image()          1. read bytes  2. open (whitelisted formats only)
                          3. check size from the header  4. decode strictly
                          5. apply EXIF orientation  6. convert to RGB
    prepare()             crop / pad / stretch to the model's width x height

Untrusted input never reaches a caller as a raw Pillow/httpx error: every
failure becomes an errors.StillmotionError subclass with a one-line message.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import threading
import time
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageColor, ImageFile, ImageOps

from stillmotion.errors import (
    ImageFetchError,
    ImageTooLarge,
    InvalidImage,
    InvalidInput,
    NotFound,
)

DEFAULT_MAX_PIXELS = 64_000_000
DEFAULT_MAX_BYTES = 50 * 1024 * 1024
MIN_SIDE = 16

ImageSource = Union[str, os.PathLike, bytes]

# The only Pillow plugins we let near untrusted bytes. (The JPEG opener also
# returns the multi-picture "MPO" JPEGs many phone cameras write.)
FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF")
RESIZE_MODES = ("crop", "pad", "stretch")

_FORMATS_HINT = "use a JPEG, PNG, WebP, BMP, TIFF or GIF file"
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):")  # 2+ chars, so C:\ stays a path
_NON_FILE_SCHEMES = {"data", "file", "ftp", "ftps", "sftp", "gopher", "javascript", "blob", "about"}


# --------------------------------------------------------------------------- reading


def read_source_bytes(
    source: ImageSource,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    timeout: float | tuple[float, float] = (5.0, 30.0),
    public_only: bool = False,
) -> tuple[bytes, str | None]:
    """Raw bytes of an image source, and the path or URL to record (None for bytes).

    `timeout` is (connect, read) in seconds, or one number for both. The read
    timeout bounds each wait for data and also the whole download together
    with the connect timeout, so a server that trickles bytes cannot hold us.
    `public_only` (a server fetching for its clients): http(s) URLs, redirects
    included, may not reach private or local addresses (netguard.py).
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        _check_byte_count(len(data), max_bytes, "The image data")
        return data, None
    if isinstance(source, str):
        text = source.strip()
        if not text:
            raise InvalidInput("No image given; pass a file path, an http(s) URL or the image bytes.")
        match = _SCHEME.match(text)
        if match:
            scheme = match.group(1).lower()
            if scheme in ("http", "https"):
                return _fetch_url(text, max_bytes=max_bytes, timeout=timeout, public_only=public_only)
            # s3://, gs://, hdfs:// ... through pyarrow.fs (loaded only for those)
            from stillmotion import remote

            if remote.is_remote(text):
                data = remote.read_bytes(text, max_bytes)
                _check_byte_count(len(data), max_bytes, f"The image at {_show(_redact(text))}")
                return data, _redact(text)
            if "://" in text or scheme in _NON_FILE_SCHEMES:
                raise ImageFetchError(
                    f"Unsupported URL scheme '{scheme}:' in {_show(_redact(text))}; "
                    "use an http:// or https:// URL or a local file path."
                )
        return _read_file(Path(source), max_bytes)
    if isinstance(source, os.PathLike):
        return _read_file(Path(os.fspath(source)), max_bytes)
    raise InvalidInput(
        f"Unsupported image source of type {type(source).__name__}; "
        "pass a file path, an http(s) URL or the image bytes."
    )


def _read_file(path: Path, max_bytes: int) -> tuple[bytes, str]:
    path = path.expanduser()
    shown = _show(str(path))
    try:
        if not path.exists():
            raise NotFound(f"Image file not found: {shown}; check the path.")
        if path.is_dir():
            raise InvalidImage(f"Image path {shown} is a folder, not a file; pass the path of an image file.")
        if not path.is_file():
            raise InvalidImage(f"Image path {shown} is not a regular file; pass the path of an image file.")
        _check_byte_count(path.stat().st_size, max_bytes, f"The image file {shown}")
        with path.open("rb") as f:
            data = f.read(max_bytes + 1)  # + 1: the file may have grown since stat()
    except PermissionError:
        raise InvalidInput(f"Cannot read {shown}: permission denied; check the file's permissions.") from None
    except OSError as exc:
        raise InvalidInput(f"Cannot read {shown} ({_one_line(exc)}); check the path.") from None
    _check_byte_count(len(data), max_bytes, f"The image file {shown}")
    return data, str(path.absolute())


def _fetch_url(url: str, *, max_bytes: int, timeout, public_only: bool = False) -> tuple[bytes, str]:
    import httpx  # only needed for URLs

    from .netguard import request_hook

    connect_s, read_s = (timeout, timeout) if isinstance(timeout, (int, float)) else timeout
    shown = _show(_redact(url))
    deadline = time.monotonic() + connect_s + read_s
    chunks: list[bytes] = []
    received = 0
    try:
        with httpx.Client(
            timeout=httpx.Timeout(connect=connect_s, read=read_s, write=read_s, pool=connect_s),
            follow_redirects=True,
            max_redirects=5,
            headers={"User-Agent": "stillmotion", "Accept": "image/*"},
            event_hooks={"request": [request_hook("image")]} if public_only else None,
        ) as client:
            with client.stream("GET", url) as response:
                if response.status_code >= 400:
                    raise ImageFetchError(
                        f"Could not fetch {shown}: the server answered HTTP {response.status_code} "
                        f"{response.reason_phrase}; check the URL."
                    )
                declared = response.headers.get("content-length", "")
                if declared.isdigit():
                    _check_byte_count(int(declared), max_bytes, f"The image at {shown}")
                for chunk in response.iter_bytes():
                    received += len(chunk)
                    _check_byte_count(received, max_bytes, f"The image at {shown}")
                    chunks.append(chunk)
                    if time.monotonic() > deadline:
                        raise ImageFetchError(
                            f"Downloading {shown} took longer than {connect_s + read_s:g} s; "
                            "check the URL or try a faster server."
                        )
    except httpx.TimeoutException:
        raise ImageFetchError(
            f"Timed out fetching {shown} (connect {connect_s:g} s, read {read_s:g} s); "
            "check the URL or try again later."
        ) from None
    except httpx.ConnectError as exc:
        raise ImageFetchError(
            f"Could not connect to fetch {shown} ({_one_line(exc)}); check the URL and your network."
        ) from None
    except httpx.HTTPError as exc:  # redirects, protocol errors, invalid URLs
        raise ImageFetchError(f"Could not fetch {shown} ({_one_line(exc)}); check the URL.") from None
    except httpx.InvalidURL as exc:
        raise ImageFetchError(f"Invalid URL {shown} ({_one_line(exc)}); check the URL.") from None
    return b"".join(chunks), _redact(url)


def _check_byte_count(n: int, max_bytes: int, what: str) -> None:
    if n == 0:
        raise InvalidImage(f"{what} is empty (0 bytes); pass a real image.")
    if n > max_bytes:
        raise ImageTooLarge(
            f"{what} is over the {_mb(max_bytes)} limit; use a smaller or more compressed image."
        )


# --------------------------------------------------------------------------- decoding


def load_image(
    source: ImageSource,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    background=(255, 255, 255),
    timeout: float | tuple[float, float] = (5.0, 30.0),
) -> Image.Image:
    """Read and decode an image safely; always returns a loaded mode-"RGB" image.

    Transparent pixels are composited on `background`. The pixel count is
    checked from the header before any pixel data is decoded.
    """
    background = _color(background)
    # 1. Read the bytes (byte limit, timeouts).
    data, origin = read_source_bytes(source, max_bytes=max_bytes, timeout=timeout)
    what = f"Image {_show(origin)}" if origin else "The image data"

    # 2. Open: parses the header only, with the whitelisted plugins only.
    try:
        im = Image.open(io.BytesIO(data), formats=FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        # Pillow's own guard fired (sizes past its MAX_IMAGE_PIXELS); the
        # warning arrives as an exception when warnings are errors.
        limit = min(max_pixels, 2 * (Image.MAX_IMAGE_PIXELS or max_pixels))
        raise ImageTooLarge(
            f"{what} is too large to open safely (over {_mp(limit)}); "
            "resize it to a smaller image and try again."
        ) from None
    except MemoryError:
        raise
    except Exception:
        raise InvalidImage(f"{what} is not an image ({_sniff(data)}); {_FORMATS_HINT}.") from None

    # 3. Size check from the header, before decoding a single pixel.
    width, height = im.size
    if width * height > max_pixels:
        raise ImageTooLarge(
            f"{what} is {width}x{height} ({_mp(width * height)}), over the {_mp(max_pixels)} "
            "limit; resize it and try again."
        )
    if width < MIN_SIDE or height < MIN_SIDE:
        raise InvalidImage(
            f"{what} is only {width}x{height}; use an image of at least {MIN_SIDE}x{MIN_SIDE} pixels."
        )

    # 4. Decode everything now, refusing truncated data.
    try:
        _load_strict(im)
    except MemoryError:
        raise
    except Exception as exc:
        raise InvalidImage(
            f"{what} could not be decoded, it is truncated or corrupt ({_one_line(exc)}); "
            "re-export or re-download the image."
        ) from None

    # 5. EXIF orientation (a broken EXIF block is not worth refusing a photo for).
    try:
        im = ImageOps.exif_transpose(im)
    except MemoryError:
        raise
    except Exception:
        pass

    # 6. Every mode becomes RGB.
    try:
        return _to_rgb(im, background)
    except MemoryError:
        raise
    except Exception as exc:
        raise InvalidImage(
            f"{what} uses colour mode {im.mode}, which cannot be converted to RGB ({_one_line(exc)}); "
            "re-export it as 8-bit RGB."
        ) from None


_truncated_lock = threading.Lock()


def _load_strict(im: Image.Image) -> None:
    """im.load(), refusing truncated data even if another library enabled
    ImageFile.LOAD_TRUNCATED_IMAGES process-wide (we switch it off around our
    own decode and put it back)."""
    if not ImageFile.LOAD_TRUNCATED_IMAGES:
        im.load()
        return
    with _truncated_lock:
        saved = ImageFile.LOAD_TRUNCATED_IMAGES
        ImageFile.LOAD_TRUNCATED_IMAGES = False
        try:
            im.load()
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = saved


def _to_rgb(im: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    icc = im.info.get("icc_profile")
    mode = im.mode
    if mode == "CMYK":
        # Pillow already undoes the inverted CMYK of Adobe JPEGs when decoding.
        return _icc_to_srgb(im, icc, "CMYK") or im.convert("RGB")
    if mode.startswith("I") or mode == "F":
        return _to_8bit(im).convert("RGB")
    if mode in ("La", "PA"):
        im = im.convert("LA" if mode == "La" else "RGBA")
    has_alpha = im.mode in ("RGBA", "LA", "RGBa") or "transparency" in im.info
    if has_alpha:
        rgba = im.convert("RGBA")
        flat = Image.new("RGB", im.size, background)
        flat.paste(rgba.convert("RGB"), mask=rgba.getchannel("A"))
        im = flat
    elif im.mode != "RGB":
        im = im.convert("RGB")
    return _icc_to_srgb(im, icc, "RGB") or im


def _to_8bit(im: Image.Image) -> Image.Image:
    """Scale 16-bit, 32-bit integer and float grayscale to 0..255 (Pillow's own
    convert() clips them instead, which turns most 16-bit images white)."""
    a = np.asarray(im).astype(np.float64)
    a[~np.isfinite(a)] = 0.0
    lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
    if im.mode.startswith("I;16"):
        scaled = a / 257.0
    elif im.mode == "F" and lo >= 0.0 and hi <= 1.0:
        scaled = a * 255.0
    elif lo >= 0.0 and hi <= 255.0:
        scaled = a
    elif im.mode == "I" and lo >= 0.0 and hi <= 65535.0:
        scaled = a / 257.0
    else:  # an unknown range: stretch what is there
        scaled = (a - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), mode="L")


def _icc_to_srgb(im: Image.Image, icc: bytes | None, mode: str) -> Image.Image | None:
    """Convert via the embedded ICC profile (Display P3 photos, print CMYK) to
    sRGB, the space the model was trained on. None when there is no usable
    profile for this mode, or it is already sRGB."""
    if not icc:
        return None
    try:
        from PIL import ImageCms

        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        if profile.profile.xcolor_space.strip() != mode.strip():
            return None
        if mode == "RGB" and "srgb" in ImageCms.getProfileDescription(profile).lower():
            return None
        srgb = ImageCms.createProfile("sRGB")
        out = ImageCms.profileToProfile(im, profile, srgb, outputMode="RGB")
        return out if out is not None and out.mode == "RGB" else None
    except Exception:  # a broken profile: fall back to the plain conversion
        return None


# --------------------------------------------------------------------------- sizing


def crop_box(image_size: tuple[int, int], width: int, height: int, resize: str) -> dict:
    """What prepare() will do to an image of `image_size`, in source pixels for
    "crop" ({"mode": "crop", "box": (l, t, r, b)}) and output pixels for "pad"
    ({"mode": "pad", "paste": (x, y, w, h)}); {"mode": "stretch"} otherwise."""
    src_w, src_h = (int(v) for v in image_size)
    _check_target(width, height, resize)
    if src_w < 1 or src_h < 1:
        raise InvalidInput(f"Image size {src_w}x{src_h} is empty; pass a real image.")
    if resize == "stretch":
        return {"mode": "stretch"}
    if resize == "crop":
        if src_w * height > width * src_h:  # source is wider than the target
            crop_w = min(src_w, max(1, round(src_h * width / height)))
            left = (src_w - crop_w) // 2
            return {"mode": "crop", "box": (left, 0, left + crop_w, src_h)}
        crop_h = min(src_h, max(1, round(src_w * height / width)))
        top = (src_h - crop_h) // 2
        return {"mode": "crop", "box": (0, top, src_w, top + crop_h)}
    scale = min(width / src_w, height / src_h)
    new_w = min(width, max(1, round(src_w * scale)))
    new_h = min(height, max(1, round(src_h * scale)))
    return {"mode": "pad", "paste": ((width - new_w) // 2, (height - new_h) // 2, new_w, new_h)}


def prepare(
    image: Image.Image, width: int, height: int, resize: str = "crop", background=(0, 0, 0)
) -> Image.Image:
    """Size `image` to exactly (width, height) RGB with LANCZOS.

    "crop": scale to cover, then center-crop. "pad": scale to fit, then center
    on `background`. "stretch": plain resize (aspect ratio not kept).
    """
    background = _color(background)
    plan = crop_box(image.size, width, height, resize)
    if image.mode != "RGB":
        image = _to_rgb(image, background)
    if plan["mode"] == "stretch":
        return image.resize((width, height), Image.Resampling.LANCZOS)
    if plan["mode"] == "crop":
        return image.resize((width, height), Image.Resampling.LANCZOS, box=plan["box"])
    x, y, new_w, new_h = plan["paste"]
    canvas = Image.new("RGB", (width, height), background)
    canvas.paste(image.resize((new_w, new_h), Image.Resampling.LANCZOS), (x, y))
    return canvas


def _check_target(width: int, height: int, resize: str) -> None:
    if resize not in RESIZE_MODES:
        raise InvalidInput(f"Unknown resize mode {resize!r}; use one of: {', '.join(RESIZE_MODES)}.")
    for name, value in (("width", width), ("height", height)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidInput(f"`{name}` must be a positive whole number of pixels, got {value!r}.")


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------- helpers


def _color(value) -> tuple[int, int, int]:
    try:
        if isinstance(value, str):
            return ImageColor.getrgb(value)[:3]
        r, g, b = (int(v) for v in value)
        if all(0 <= v <= 255 for v in (r, g, b)):
            return (r, g, b)
    except (TypeError, ValueError):
        pass
    raise InvalidInput(f"Background colour {value!r} is not valid; use an (r, g, b) triple of 0-255 or a name.")


_TEXT_HINTS = (
    (b"<!doctype html", "it is an HTML page; use a direct link to the image file"),
    (b"<html", "it is an HTML page; use a direct link to the image file"),
    (b"<svg", "SVG is not supported; convert it to PNG"),
    (b"<?xml", "it is XML or SVG text; convert it to PNG"),
    (b"%pdf", "it is a PDF document"),
)


def _sniff(data: bytes) -> str:
    """A few words on what non-image bytes look like, for the error message."""
    head = data[:512]
    low = head.lstrip().lower()
    for prefix, hint in _TEXT_HINTS:
        if low.startswith(prefix):
            return hint
    if head[4:8] == b"ftyp":
        brand = head[8:12].decode("ascii", "replace")
        if brand in ("heic", "heix", "heim", "heis", "mif1", "msf1", "avif", "avis"):
            return "HEIC/AVIF is not supported; convert it to JPEG or PNG"
        return "it looks like a video file"
    if b"\x00" not in head and len(head.decode("utf-8", "ignore").encode()) >= 0.95 * len(head):
        return "the data looks like text"
    return "unrecognised format"


def _redact(url: str) -> str:
    """The URL without user:password@, for messages and the record."""
    return re.sub(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/@?#]*@", r"\1", url)


def _show(text: str, limit: int = 200) -> str:
    text = _one_line(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _one_line(value) -> str:
    return " ".join(str(value).split()) or type(value).__name__


def _mb(n: int) -> str:
    return f"{n / 2**20:g} MB" if n % 2**20 == 0 else f"{n / 2**20:.1f} MB"


def _mp(pixels: int) -> str:
    if pixels < 1_000_000:
        return f"{pixels} pixels"
    return f"{pixels // 1_000_000} megapixels" if pixels % 1_000_000 == 0 else f"{pixels / 1e6:.1f} megapixels"
