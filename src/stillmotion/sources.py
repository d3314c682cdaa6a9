"""Where an input image's bytes come from: a path, bytes, an http(s) URL or a remote store.

    read_source_bytes()   path | bytes | URL | s3:// ... -> raw bytes, and the origin to record
                          (byte limit, timeouts; http(s) may be kept to public addresses)
    sha256_of()           the bytes' hash, for the record

images.load_image() decodes what this returns. Remote stores (s3://, gs:// ...)
are remote.py's; this module only sends those URIs there. Every failure becomes
an errors.StillmotionError subclass with a one-line message.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from pathlib import Path
from typing import Union

from . import remote
from .errors import ImageFetchError, ImageTooLarge, InvalidImage, InvalidInput, NotFound
from .util import one_line, redact, show

DEFAULT_MAX_BYTES = 50 * 1024 * 1024

ImageSource = Union[str, os.PathLike, bytes]

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):")  # 2+ chars, so C:\ stays a path
_NON_FILE_SCHEMES = {"data", "file", "ftp", "ftps", "sftp", "gopher", "javascript", "blob", "about"}


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
            # s3://, gs://, hdfs:// ... through pyarrow.fs (remote.py loads it only for those)
            if remote.is_remote(text):
                data = remote.read_bytes(text, max_bytes)
                _check_byte_count(len(data), max_bytes, f"The image at {show(redact(text))}")
                return data, redact(text)
            if "://" in text or scheme in _NON_FILE_SCHEMES:
                raise ImageFetchError(
                    f"Unsupported URL scheme '{scheme}:' in {show(redact(text))}; "
                    "use an http:// or https:// URL or a local file path."
                )
        return _read_file(Path(source), max_bytes)
    if isinstance(source, os.PathLike):
        return _read_file(Path(os.fspath(source)), max_bytes)
    raise InvalidInput(
        f"Unsupported image source of type {type(source).__name__}; "
        "pass a file path, an http(s) URL or the image bytes."
    )


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------- helpers


def _read_file(path: Path, max_bytes: int) -> tuple[bytes, str]:
    path = path.expanduser()
    shown = show(str(path))
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
        raise InvalidInput(f"Cannot read {shown} ({one_line(exc)}); check the path.") from None
    _check_byte_count(len(data), max_bytes, f"The image file {shown}")
    return data, str(path.absolute())


def _fetch_url(url: str, *, max_bytes: int, timeout, public_only: bool = False) -> tuple[bytes, str]:
    import httpx  # only needed for URLs

    from .netguard import request_hook

    connect_s, read_s = (timeout, timeout) if isinstance(timeout, (int, float)) else timeout
    shown = show(redact(url))
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
            f"Could not connect to fetch {shown} ({one_line(exc)}); check the URL and your network."
        ) from None
    except httpx.HTTPError as exc:  # redirects, protocol errors, invalid URLs
        raise ImageFetchError(f"Could not fetch {shown} ({one_line(exc)}); check the URL.") from None
    except httpx.InvalidURL as exc:
        raise ImageFetchError(f"Invalid URL {shown} ({one_line(exc)}); check the URL.") from None
    return b"".join(chunks), redact(url)


def _check_byte_count(n: int, max_bytes: int, what: str) -> None:
    """Refuse empty data and data over `max_bytes` (`what` starts the message)."""
    if n == 0:
        raise InvalidImage(f"{what} is empty (0 bytes); pass a real image.")
    if n > max_bytes:
        raise ImageTooLarge(
            f"{what} is over the {_mb(max_bytes)} limit; use a smaller or more compressed image."
        )


def _mb(n: int) -> str:
    return f"{n / 2**20:g} MB" if n % 2**20 == 0 else f"{n / 2**20:.1f} MB"
