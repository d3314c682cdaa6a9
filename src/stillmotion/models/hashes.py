"""sha256 of weight files: hashing, a cache of digests, and manifests that record them.

    cached_sha256(path)   a file's digest, remembered by (path, size, mtime) so a
                          4 GB file is hashed once (for run records, not for verify)
    write_manifest(...)   sha256 and size of every weight file of a folder, written
                          when a model is saved or downloaded, read by verify

Manifests:
    hub models           <stillmotion cache>/manifests/<org>--<name>/<commit>.json
    local folders, tiny  <folder>/stillmotion-manifest.json
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from datetime import datetime, timezone
from pathlib import Path

from ..errors import ModelCorrupted
from ..util import atomic_write
from .paths import cache_root, repo_folder

WEIGHT_SUFFIXES = (".safetensors",)
FOLDER_MANIFEST = "stillmotion-manifest.json"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


# --------------------------------------------------------------------------- file digests
def sha256_file(path: Path, chunk: int = 8 * 1024 * 1024) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def looks_like_sha256(name: str) -> bool:
    """True for a name that is a sha256 hex digest (the hub cache names LFS blobs so)."""
    return _SHA256.match(name) is not None


def _hash_record(path: Path) -> Path:
    st = path.stat()
    key = hashlib.sha256(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:32]
    return cache_root() / "hashes" / f"{key}.json"


def cached_sha256(path: Path) -> str:
    """sha256 of a file, remembered by (path, size, mtime) so a 4 GB file is hashed once.

    For the sidecar record only: `models verify` always reads the bytes again.
    """
    rec = _hash_record(path)
    try:
        return json.loads(rec.read_text())["sha256"]
    except (OSError, ValueError, KeyError):
        pass
    digest = sha256_file(path)
    remember_sha256(path, digest)
    return digest


def remember_sha256(path: Path, digest: str) -> None:
    """Store a digest just computed (download, verify) so the next cached_sha256 is free."""
    try:
        atomic_write(_hash_record(path), json.dumps({"path": str(path), "sha256": digest}))
    except OSError:
        pass


# --------------------------------------------------------------------------- manifests
def hub_manifest_path(repo_id: str, commit: str) -> Path:
    return cache_root() / "manifests" / repo_folder(repo_id).removeprefix("models--") / f"{commit}.json"


def folder_manifest_path(folder: Path) -> Path:
    return Path(folder) / FOLDER_MANIFEST


def weight_relpaths(folder: Path) -> list[str]:
    """Every weight file under a folder, as sorted "/"-separated relative paths."""
    return sorted(
        str(p.relative_to(folder)).replace(os.sep, "/")
        for p in folder.rglob("*")
        if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES)
    )


def build_manifest(folder: Path, **meta) -> dict:
    """sha256 and size of every weight file in a folder (and, in the hub cache, a check against the blob name)."""
    digests = {}
    for rel in weight_relpaths(folder):
        path = folder / rel
        digest = sha256_file(path)
        blob = path.resolve().name
        if looks_like_sha256(blob) and blob != digest:
            raise ModelCorrupted(
                f"{rel} arrived corrupted (sha256 {digest[:12]}…, the hub says {blob[:12]}…): "
                f"run `stillmotion models download {meta.get('name') or 'NAME'} --force`."
            )
        remember_sha256(path, digest)
        digests[rel] = digest
    return manifest_from(folder, digests, **meta)


def manifest_from(folder: Path, digests: dict[str, str], **meta) -> dict:
    """A manifest from digests already taken (relative path -> sha256), with each file's size on disk."""
    return {
        "format": 1,
        **meta,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "files": {rel: {"sha256": d, "size": (folder / rel).stat().st_size} for rel, d in digests.items()},
    }


def write_manifest(folder: Path, target: Path, *, digests: dict[str, str] | None = None, **meta) -> Path:
    """Record the sha256 and size of every weight file of a folder at `target` (atomic write): hashed here,
    or `digests` taken while the files were written, so a 4 GB folder is not read back just to hash it."""
    folder = Path(folder)
    manifest = build_manifest(folder, **meta) if digests is None else manifest_from(folder, digests, **meta)
    atomic_write(target, json.dumps(manifest, indent=2, sort_keys=True))
    return target


def write_folder_manifest(folder: str | os.PathLike, name: str | None = None, *,
                          digests: dict[str, str] | None = None) -> Path:
    """Manifest for a diffusers folder saved with save_pretrained (tiny, local models, fine-tunes, conversions)."""
    folder = Path(folder)
    return write_manifest(folder, folder_manifest_path(folder), digests=digests, name=name or str(folder), source="local")


def read_manifest(path: Path) -> dict | None:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("files"), dict) else None
