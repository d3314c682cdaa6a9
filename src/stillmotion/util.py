"""Small helpers every layer shares: atomic files, one-line error text, sizes, dtypes.

Imports nothing of stillmotion's but `errors`, and never torch at import time.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
from pathlib import Path
from typing import Iterator, Optional, Union

GiB = 1024**3
MiB = 1024**2

DTYPE_NAMES = ("fp16", "bf16", "fp32")


# ----------------------------------------------------------------------------
# files that appear whole or not at all
def temp_name(target: Union[str, Path]) -> Path:
    """A hidden name beside `target` for its unfinished version (`.NAME.tmp-1a2b3c4d`)."""
    target = Path(target)
    return target.with_name(f".{target.name}.tmp-{secrets.token_hex(4)}")


@contextlib.contextmanager
def atomic_path(target: Union[str, Path]) -> Iterator[Path]:
    """Yield a temp path beside `target` to write (a file or a folder); rename it over `target` when the
    block ends without error, remove it when it fails. An existing folder is replaced only after."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(target)
    try:
        yield tmp
        replace(tmp, target)
    finally:
        remove(tmp)


def atomic_write(target: Union[str, Path], data: Union[str, bytes]) -> Path:
    """Write text (UTF-8) or bytes to `target` through a temp file and a rename."""
    with atomic_path(target) as tmp:
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            tmp.write_text(data, encoding="utf-8")
    return Path(target)


def replace(tmp: Path, target: Path) -> None:
    """Rename `tmp` over `target`; a folder target is moved aside first and removed only after."""
    if not (target.is_dir() and not target.is_symlink()):
        os.replace(tmp, target)
        return
    old = target.with_name(f".{target.name}.old-{secrets.token_hex(4)}")
    os.replace(target, old)
    try:
        os.replace(tmp, target)
    except BaseException:
        os.replace(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


def remove(path: Optional[Path]) -> None:
    """Remove a file or folder if it is there (None: nothing); never raises."""
    if path is None:
        return
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    except OSError:
        pass


# ----------------------------------------------------------------------------
# errors from libraries, as one line for a user
def first_line(e: BaseException) -> str:
    """The first line of an exception's text, or its type's name when it has none."""
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def one_line(value) -> str:
    """All of `value`'s text on one line, whitespace collapsed (its type's name when empty).

    Unlike first_line it keeps every line: some library errors (arrow's) span several.
    """
    return " ".join(str(value).split()) or type(value).__name__


def show(text: str, limit: int = 200) -> str:
    """A path or URL for a message: one line, at most `limit` characters."""
    text = one_line(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def redact(url: str) -> str:
    """The URL without user:password@, for messages and the record."""
    return re.sub(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/@?#]*@", r"\1", url)


def last_line(e: BaseException, limit: int = 300) -> str:
    """The last line of an exception's text (where a remote traceback puts the error), at most `limit` chars."""
    text = str(e).strip().splitlines()
    return (text[-1] if text else type(e).__name__)[:limit]


# ----------------------------------------------------------------------------
# sizes: "8GB", "512MiB", "1.5g" -> bytes
def parse_size(text: Union[str, int, float]) -> int:
    """'8GB' / '8G' / '8GiB' / '512MB' / a number of bytes -> bytes (GB = GiB, as GPU specs mean it)."""
    if isinstance(text, (int, float)):
        return int(text)
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)(i?b?)\s*", str(text).lower())
    if not m:
        from .errors import InvalidInput

        raise InvalidInput(f"--max-memory {text!r}: give a size like 8GB, 12.5GB or 800MB.")
    num, unit = float(m.group(1)), m.group(2)
    return int(num * {"": 1, "k": 1024, "m": MiB, "g": GiB, "t": 1024 * GiB}[unit])


def fmt_bytes(n: float) -> str:
    if n >= GiB:
        return f"{n / GiB:.2f} GB"
    return f"{n / MiB:.0f} MB"


# ----------------------------------------------------------------------------
def torch_dtype(name: str):
    """'fp16' | 'bf16' | 'fp32' -> the torch dtype (imports torch)."""
    import torch

    from .errors import InvalidInput

    try:
        return {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[name]
    except KeyError:
        raise InvalidInput(f"dtype must be fp16, bf16 or fp32, got {name!r}") from None


class quiet_diffusers:
    """Silence diffusers' 'modules that should be kept in float32' notice while casting modules (meta ones when
    planning; single-file loads cast as they load)."""

    def __enter__(self):
        from diffusers.utils import logging as dlog

        self._level = dlog.get_verbosity()
        dlog.set_verbosity_error()

    def __exit__(self, *exc):
        from diffusers.utils import logging as dlog

        dlog.set_verbosity(self._level)
        return False
