"""Pixels of an input image: decode it safely, size it for the model.

    load_image()   1. read bytes (sources.read_source_bytes)  2. open (whitelisted formats only)
                   3. check size from the header  4. decode strictly
                   5. apply EXIF orientation  6. convert to RGB
    prepare()      crop / pad / stretch to the model's width x height

Untrusted input never reaches a caller as a raw Pillow error: every failure
becomes an errors.StillmotionError subclass with a one-line message.
"""

from __future__ import annotations

import io
import threading

import numpy as np
from PIL import Image, ImageColor, ImageFile, ImageOps

from .errors import ImageTooLarge, InvalidImage, InvalidInput
from .util import one_line, show
from .sources import DEFAULT_MAX_BYTES, ImageSource, read_source_bytes, sha256_of

DEFAULT_MAX_PIXELS = 64_000_000
MIN_SIDE = 16

# The only Pillow plugins we let near untrusted bytes. (The JPEG opener also
# returns the multi-picture "MPO" JPEGs many phone cameras write.)
FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF")
RESIZE_MODES = ("crop", "pad", "stretch")

_FORMATS_HINT = "use a JPEG, PNG, WebP, BMP, TIFF or GIF file"


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
    what = f"Image {show(origin)}" if origin else "The image data"

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
            f"{what} could not be decoded, it is truncated or corrupt ({one_line(exc)}); "
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
            f"{what} uses colour mode {im.mode}, which cannot be converted to RGB ({one_line(exc)}); "
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


def open_input(image, source: str | None = None) -> tuple[Image.Image, dict]:
    """An input image (path, URL, bytes or PIL image) -> (RGB PIL image, what a sidecar records of it:
    source, sha256 of the bytes and size). `source` names where bytes came from."""
    if isinstance(image, Image.Image):
        pil, info = image.convert("RGB"), {}
    else:
        data, where = read_source_bytes(image)
        pil = load_image(data)
        info = {"source": source or where, "sha256": sha256_of(data)}
    info["size"] = list(pil.size)
    return pil, info


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


def _mp(pixels: int) -> str:
    if pixels < 1_000_000:
        return f"{pixels} pixels"
    return f"{pixels // 1_000_000} megapixels" if pixels % 1_000_000 == 0 else f"{pixels / 1e6:.1f} megapixels"
