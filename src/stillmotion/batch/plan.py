"""Planning a batch: which images, which outputs, which seeds, what is already done.

Everything here runs before the model loads (and is all `--dry-run` does):

    1. find the inputs      a folder (recursive, --pattern, images only, hidden
                            files skipped), local or remote (s3://, gs:// ...:
                            remote.py), or a manifest (CSV / JSONL rows:
                            `image` plus any spec field as an override)
    2. one item per image   x variant: its key (relative path), its seed, its
                            requested spec, its output path mirroring the tree
    3. check clashes        two items may never write the same file
    4. resume               an item whose output + sidecar exist and record the
                            same request, model and (local) input bytes is
                            skipped (unless force)

No torch here: planning stays instant, even for thousands of images.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ..errors import InvalidInput, NotFound
from ..models.registry import DEFAULT_MODEL
from ..spec import MAX_SEED, GenerationSpec
from .manifest import MANIFEST_SUFFIXES, MAX_ERRORS_SHOWN, Row, read_manifest

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")
REPORT_NAME = "batch-report.json"


@dataclass
class Item:
    """One video to make: an image (x a variant) with its seed, spec and output."""

    index: int
    key: str  # the image's path relative to the input folder (posix); seeds derive from it
    source: str  # absolute path, or URI (s3://...), or URL (from a manifest) to read the image from
    output: Path  # the video file (or, for png, the folder of frames)
    sidecar: Path
    seed: int
    variant: int
    requested: dict  # spec fields asked for (flags + manifest row), seed included
    line: Optional[int] = None  # manifest line number
    status: str = "pending"  # pending | skipped | done | failed | not_run
    error: Optional[str] = None
    seconds: Optional[float] = None
    end_source: Optional[str] = None  # the end image (a manifest's end_image column), read like `source`

    @property
    def spec(self) -> GenerationSpec:
        return GenerationSpec(**self.requested)

    @property
    def format(self) -> str:
        return self.requested.get("format") or "mp4"

    def to_report(self) -> dict:
        row = {
            "input": _public(self.source),
            "output": str(self.output),
            "seed": self.seed,
            "variant": self.variant,
            "status": self.status,
            "error": self.error,
            "seconds": self.seconds,
        }
        if self.line is not None:
            row["line"] = self.line
        return row


@dataclass
class BatchPlan:
    """What a batch will do: its items (with seeds and outputs) and what is already done."""

    source: Path | str  # the input folder or manifest file; a str for a remote URI (s3://...)
    out_dir: Path
    model: str  # the model's registry name (what sidecars record)
    base_seed: int
    variants: int
    items: list[Item]
    ignored: list[str] = field(default_factory=list)  # files that are not images (relative paths)

    @property
    def to_run(self) -> list[Item]:
        return [i for i in self.items if i.status == "pending"]

    @property
    def skipped(self) -> list[Item]:
        return [i for i in self.items if i.status == "skipped"]

    @property
    def report_path(self) -> Path:
        return self.out_dir / REPORT_NAME


def derive_seed(base_seed: int, key: str, variant: int = 0) -> int:
    """The item's seed: 32 bits of sha256("base:key:variant"). Independent of order and of other files."""
    digest = hashlib.sha256(f"{base_seed}:{key}:{variant}".encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big")


def plan_batch(
    source,
    out_dir,
    *,
    model: str = DEFAULT_MODEL,
    fields: Optional[dict] = None,
    seed: Optional[int] = None,
    variants: int = 1,
    recursive: bool = False,
    patterns: Optional[list[str]] = None,
    force: bool = False,
) -> BatchPlan:
    """Inputs -> items with seeds and outputs; raises InvalidInput before any work when something is wrong."""
    from .. import remote
    from ..families import family_for
    from ..models.resolve import entry_for

    remote_uri = str(source).strip() if remote.is_remote(source) else None
    source = remote_uri or Path(source).expanduser()
    out_dir = Path(out_dir).expanduser()
    fields = {k: v for k, v in (fields or {}).items() if v is not None}
    fields.pop("seed", None)
    if seed is None:
        seed = 0
    if not 0 <= seed <= MAX_SEED:
        raise InvalidInput(f"--seed must be 0..{MAX_SEED} for a batch (each item's seed derives from it); got {seed}.")
    if variants < 1:
        raise InvalidInput(f"--variants must be at least 1, got {variants}.")
    base = GenerationSpec.build(**fields)  # flags checked once, before the rows
    entry = entry_for(model)
    model_name = entry.name
    family_for(entry).check(base, entry)  # and against the model's family (a Wan model takes no --motion)

    # 1. Find the inputs
    ignored: list[str] = []
    if remote_uri:  # listed before any work: a missing bucket or prefix stops here
        uris = dict(remote.list_files(remote_uri, recursive))  # key -> URI, in a local scan's order
        rows = [Row(key=key, source=uris[key], overrides={}) for key in _select(uris, patterns, ignored)]
    elif not source.exists():
        raise NotFound(f"{source} does not exist; pass a folder of images or a .csv/.jsonl manifest.")
    elif source.is_dir():
        rows = [Row(key=key, source=str((source / key).absolute()), overrides={}) for key in
                _scan(source, out_dir, recursive, patterns, ignored)]
    elif source.suffix.lower() in MANIFEST_SUFFIXES:
        if patterns or recursive:
            raise InvalidInput("--pattern and --recursive apply to folders; a manifest lists its images itself.")
        rows = read_manifest(source, base, model)
    else:
        raise InvalidInput(f"{source} is neither a folder nor a manifest; pass a folder, a .csv or a .jsonl file.")

    # 2. Items: one per row and variant
    items: list[Item] = []
    for row in rows:
        row_seed = row.overrides.get("seed")
        for v in range(variants):
            if row_seed is not None:
                item_seed = row_seed if v == 0 else derive_seed(row_seed, row.key, v)
            else:
                item_seed = derive_seed(seed, row.key, v)
            requested = {**base.model_dump(exclude_defaults=True), **row.overrides, "seed": item_seed}
            fmt = requested.get("format", "mp4")
            output = _output_path(out_dir, row, fmt, item_seed if variants > 1 else None)
            items.append(Item(index=len(items), key=row.key, source=row.source, output=output,
                              sidecar=_sidecar(output), seed=item_seed, variant=v, requested=requested, line=row.line,
                              end_source=row.end_image))

    # 3. Clashes, before any work
    check_clashes(items)

    # 4. Resume
    if not force:
        for item in items:
            if is_up_to_date(item, model_name):
                item.status = "skipped"
    return BatchPlan(source=_public(source) if remote_uri else source, out_dir=out_dir, model=model_name,
                     base_seed=seed, variants=variants, items=items, ignored=ignored)


# --------------------------------------------------------------------------- inputs


def _scan(root: Path, out_dir: Path, recursive: bool, patterns: Optional[list[str]], ignored: list[str]) -> list[str]:
    """Relative posix paths of the images under root, sorted; hidden files and folders skipped."""
    try:
        out_abs = out_dir.resolve()
    except OSError:
        out_abs = None
    rels = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        # never descend into hidden folders or into the output folder (its frames are not inputs)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and (here / d).resolve() != out_abs)
        if not recursive:
            dirnames[:] = []
        rels += [(here / name).relative_to(root).as_posix() for name in sorted(filenames)]
    return _select(rels, patterns, ignored, is_file=lambda rel: (root / rel).is_file())


def _select(rels: Iterable[str], patterns: list[str] | None, ignored: list[str],
            is_file=lambda rel: True) -> list[str]:
    """The folder rules, one copy for local and remote trees, so both pick the same images: hidden files
    and folders skipped, --pattern on the name or the relative path, images only (the rest go to `ignored`)."""
    keys = []
    for rel in rels:
        name = rel.rsplit("/", 1)[-1]
        if any(part.startswith(".") for part in rel.split("/")):
            continue
        if patterns and not any(fnmatch.fnmatch(name, p) or fnmatch.fnmatch(rel, p) for p in patterns):
            continue
        if Path(name).suffix.lower() not in IMAGE_SUFFIXES or not is_file(rel):
            ignored.append(rel)
            continue
        keys.append(rel)
    return sorted(keys)


def _public(source: str) -> str:
    """A source as the report shows it: a URL or URI without its user:password@."""
    from ..util import redact

    return redact(source)


# --------------------------------------------------------------------------- outputs


def _output_path(out_dir: Path, row: Row, fmt: str, variant_seed: Optional[int]) -> Path:
    """a/b/cat.jpg -> OUT/a/b/cat.mp4 (cat.s<seed>.mp4 with variants); png: the folder OUT/a/b/cat."""
    if row.output:
        rel = Path(str(row.output))
        stem = rel.name
        from ..video import format_from_path

        if format_from_path(stem):
            stem = stem[: -len(Path(stem).suffix)]
        parent = rel.parent
    else:
        if "://" in row.key:  # a URL row in a manifest: its file name
            rel = Path(row.key.split("?")[0].rstrip("/").rsplit("/", 1)[-1] or "image")
        else:
            rel = Path(row.key)
        stem, parent = rel.stem, rel.parent
        if rel.is_absolute() or ".." in rel.parts:
            parent = Path()
    if variant_seed is not None:
        stem = f"{stem}.s{variant_seed}"
    name = stem if fmt == "png" else f"{stem}.{fmt}"
    return out_dir / parent / name


def _sidecar(output: Path) -> Path:
    from ..video.metadata import sidecar_path

    return sidecar_path(output)


def check_clashes(items: list[Item]) -> None:
    """Two items writing the same video or sidecar (case-insensitively) is an error before any work."""
    seen: dict[str, Item] = {}
    clashes = []
    for item in items:
        for path in {str(item.output).lower(), str(item.sidecar).lower()}:
            other = seen.get(path)
            if other is not None and other is not item:
                clashes.append(f"{_where(other)} and {_where(item)} -> {path if path != str(item.output).lower() else item.output}")
            seen[path] = item
    if clashes:
        shown = clashes[:MAX_ERRORS_SHOWN]
        raise InvalidInput(
            f"{len(clashes)} output name clash(es), nothing was run: " + "; ".join(shown)
            + ". Rename one of each pair, narrow --pattern, or give a manifest with an `output` column."
        )


def _where(item: Item) -> str:
    return f"{item.key} (line {item.line})" if item.line else item.key


# --------------------------------------------------------------------------- resume


def is_up_to_date(item: Item, model_name: str) -> bool:
    """Output and sidecar exist, the sidecar records this model, this request and this input, and the file is whole.

    The input is compared by sha256 for local files (an image replaced under the same name is made again);
    remote inputs (s3:// ...) are not re-read for it, so there the name stands for the content."""
    from ..video.metadata import read_sidecar

    if not item.output.exists() or not item.sidecar.is_file():
        return False
    try:
        record = read_sidecar(item.sidecar)
    except InvalidInput:
        return False
    if (record.get("model") or {}).get("name") != model_name:
        return False
    recorded = (record.get("batch") or {}).get("requested")
    if recorded is not None:
        if _plain(recorded) != _plain(item.requested):
            return False
    else:  # a video made outside batch: every field we ask for must match what it recorded
        spec = record.get("spec") or {}
        if any(_plain(spec.get(k)) != _plain(v) for k, v in item.requested.items()):
            return False
    size = (record.get("output") or {}).get("bytes")
    if item.output.is_file() and size is not None and item.output.stat().st_size != size:
        return False  # truncated or replaced since
    end = (record.get("input") or {}).get("end_image")  # keyframes: the end image counts as input too
    if bool(item.end_source) != bool(end) or (end and not _same_input(item.end_source, end.get("sha256"))):
        return False
    return _same_input(item.source, (record.get("input") or {}).get("sha256"))


def _same_input(source: str, recorded_sha256: Optional[str]) -> bool:
    """False only when a local input file's bytes differ from what the video was made from."""
    from ..models.hashes import sha256_file

    if not recorded_sha256 or "://" in source or not os.path.isfile(source):
        return True  # remote inputs (s3://, http://) are not re-read to compare
    return sha256_file(Path(source)) == recorded_sha256


def _plain(value):
    return json.loads(json.dumps(value, default=str))
