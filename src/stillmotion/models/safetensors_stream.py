"""safetensors files one tensor at a time: a reader by the header's offsets, a writer that knows every shape first."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Callable

from ..errors import ModelUnavailable


_TORCH_DTYPES = {"F16": "float16", "F32": "float32", "BF16": "bfloat16", "F64": "float64", "I64": "int64",
                 "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool"}


class TensorReader:
    """One tensor at a time from a .safetensors file, by its header's offsets and plain reads.

    The same lazy reading as safetensors' safe_open, without its memory map: mapped pages of a 4 GB
    file stay resident (and count in the process's RSS) until it closes, a read buffer is freed
    after each tensor.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self._f = open(self.path, "rb")
        (n,) = struct.unpack("<Q", self._f.read(8))
        header = json.loads(self._f.read(n))
        header.pop("__metadata__", None)
        self._entries = header
        self._base = 8 + n

    def get_tensor(self, key: str):
        import torch

        e = self._entries[key]
        start, end = e["data_offsets"]
        buf = bytearray(end - start)
        self._f.seek(self._base + start)
        if self._f.readinto(buf) != len(buf):
            raise ModelUnavailable(f"{self.path} is truncated (tensor {key} runs past the end): download it again.")
        dtype = getattr(torch, _TORCH_DTYPES[e["dtype"]])
        if not buf:
            return torch.empty(e["shape"], dtype=dtype)
        return torch.frombuffer(buf, dtype=dtype).reshape(e["shape"])

    def close(self):
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


_ST_DTYPES = {"torch.float16": "F16", "torch.float32": "F32", "torch.bfloat16": "BF16"}


def stream_save(path: Path, items: list[tuple[str, tuple[int, ...], Callable]], dtype, metadata: dict | None = None) -> str:
    """A .safetensors file written one tensor at a time: the header first (every shape is known), then the data.

    Returns the sha256 of the bytes written."""
    import hashlib

    import torch

    size = torch.empty((), dtype=dtype).element_size()
    header, offset = {}, 0
    for name, shape, _ in items:
        n = math.prod(shape) * size
        header[name] = {"dtype": _ST_DTYPES[str(dtype)], "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    if metadata:
        header["__metadata__"] = metadata
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    h = hashlib.sha256()
    with open(path, "wb") as f:
        for chunk in (struct.pack("<Q", len(raw)), raw):
            f.write(chunk)
            h.update(chunk)
        for name, shape, load in items:
            t = load()
            if tuple(t.shape) != tuple(shape):
                raise ModelUnavailable(f"internal: {name} came out as {list(t.shape)}, not {list(shape)}")
            if t.numel():
                data = memoryview(t.reshape(-1).view(torch.uint8).numpy())
                f.write(data)
                h.update(data)
            del t
    return h.hexdigest()
