"""verify(): check every weight file of a model against the best reference hashes available.

    verify(name)   sha256 + size of every weight file against the hub's LFS hashes
                   (online), or the manifest written at download time (offline), or
                   for a local folder / tiny its own manifest (hashes.py); every file
                   is also checked to be a complete safetensors file. A bad file
                   raises ModelCorrupted naming it and the command that repairs it.
"""

from __future__ import annotations

import json
import struct
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import ModelCorrupted, ModelUnavailable
from .hashes import (
    FOLDER_MANIFEST,
    folder_manifest_path,
    hub_manifest_path,
    looks_like_sha256,
    read_manifest,
    remember_sha256,
    sha256_file,
    weight_relpaths,
)
from .hub import cached_snapshot, entry_wants, hub_hashes, is_offline, pieces, snapshot_model
from .local import LocalModel
from .registry import ModelEntry
from .resolve import entry_for, resolve


@dataclass
class FileCheck:
    path: str  # relative to the model folder
    status: str  # ok | altered | truncated | missing | unreadable | unverified
    size: int | None = None
    expected_size: int | None = None
    sha256: str | None = None
    expected_sha256: str | None = None
    detail: str = ""

    @property
    def bad(self) -> bool:
        return self.status in ("altered", "truncated", "missing", "unreadable")


@dataclass
class VerifyReport:
    name: str
    path: str
    source: str  # builtin | local | hub
    reference: str  # hub | manifest | hf-cache | none
    repo_id: str | None = None
    commit: str | None = None
    variant: str | None = None
    files: list[FileCheck] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(f.bad for f in self.files)

    @property
    def bad(self) -> list[FileCheck]:
        return [f for f in self.files if f.bad]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ok"] = self.ok
        return d


def repair_hint(entry: ModelEntry, source: str) -> str:
    if source == "local":
        return f"re-save or re-copy the folder {entry.name} (it cannot be downloaded)"
    return f"run `stillmotion models download {entry.name} --force` to repair it"


def verify(name_or_path: str, online: bool | None = None) -> VerifyReport:
    """Check every weight file of a model; returns the report, or raises ModelCorrupted naming bad files.

    online=None: the hub's LFS hashes when reachable (and HF_HUB_OFFLINE is not
    set), else the manifest. online=True: the hub or an error. online=False: the
    manifest only.
    """
    entry = entry_for(name_or_path)
    # 1. Find the files: a hub snapshot as it is in the cache (even incomplete), else the resolved folder; an
    #    assembled model (registry parts): each of its repos' snapshots, checked against that repo's reference
    if entry.parts:
        report = None
        for piece in pieces(entry):
            one = _report(piece, _snapshot(piece), online)
            for f in one.files:
                f.path = f"{piece.repo_id}/{f.path}"
            one.notes = [f"{piece.repo_id}: {n}" for n in one.notes]
            if report is None:
                report = one
            else:
                report.files += one.files
                report.notes += one.notes
                report.reference = ", ".join(dict.fromkeys(report.reference.split(", ") + [one.reference]))
        return _judge(entry, report, "hub")
    local = _snapshot(entry) if entry.repo_id is not None else resolve(name_or_path, download=False, progress=False)
    return _judge(entry, _report(entry, local, online), local.source)


def _snapshot(entry: ModelEntry) -> LocalModel:
    folder = cached_snapshot(entry, complete=False)
    if folder is None:
        raise ModelUnavailable(
            f"{entry.name} is not downloaded, so there is nothing to verify: run `stillmotion models download {entry.name}`."
        )
    return snapshot_model(entry, folder)


def _report(entry: ModelEntry, local: LocalModel, online: bool | None) -> VerifyReport:
    """Steps 2-3 of verify: the reference hashes and each file's check."""
    report = VerifyReport(
        name=entry.name,
        path=str(local.path),
        source=local.source,
        reference="none",
        repo_id=local.repo_id,
        commit=local.commit,
        variant=local.variant,
    )

    # 2. The reference hashes: hub, manifest, or the hub cache's blob names
    expected = _expected_hashes(local, report, online)

    # 3. Check each file: complete safetensors, then size and sha256 against the reference
    present = [p for p in weight_relpaths(local.path) if local.source != "hub" or entry_wants(local.entry, p)]
    for rel in sorted(set(present) | set(expected)):
        report.files.append(_check_file(local.path, rel, expected.get(rel)))
    for f in report.files:
        if f.status == "ok" and f.sha256:
            remember_sha256(local.path / f.path, f.sha256)
    return report


def _judge(entry: ModelEntry, report: VerifyReport, source: str) -> VerifyReport:
    """Step 4 of verify: name the bad files and the command that repairs them (ModelCorrupted), or the report."""
    bad = report.bad
    if not report.files:
        message = f"{entry.name}: {report.path} holds no .safetensors weight files; {repair_hint(entry, source)}."
    elif bad:
        what = "; ".join(f"{f.path} ({f.detail or f.status})" for f in bad)
        files = "weight file fails" if len(bad) == 1 else f"{len(bad)} weight files fail"
        message = f"{entry.name}: {files} verification: {what}; {repair_hint(entry, source)}."
    else:
        return report
    err = ModelCorrupted(message)
    err.report = report
    raise err


def _expected_hashes(local: LocalModel, report: VerifyReport, online: bool | None) -> dict[str, tuple[str | None, int | None]]:
    """relative path -> (sha256, size) from the best reference available; sets report.reference."""
    if local.source == "hub":
        if online is True or (online is None and not is_offline()):
            try:
                expected = hub_hashes(local)
                report.reference = "hub"
                return expected
            except ModelUnavailable as e:
                if online is True:
                    raise ModelUnavailable(
                        f"Cannot verify {local.entry.name} against the hub: {e.message}; "
                        "use --offline to check against the download manifest."
                    ) from None
                report.notes.append(f"hub not used: {e.message}")
        manifest = read_manifest(hub_manifest_path(local.repo_id, local.commit))
        if manifest is not None:
            report.reference = "manifest"
            return _from_manifest(manifest)
        blobs = {}
        for rel in weight_relpaths(local.path):
            blob = (local.path / rel).resolve().name
            if looks_like_sha256(blob):
                blobs[rel] = (blob, None)
        if blobs:
            report.reference = "hf-cache"
            report.notes.append("no download manifest: checked against the hub cache's blob names (LFS sha256)")
            return blobs
        report.notes.append("no reference hashes: only checked that each file is a complete safetensors file")
        return {}
    manifest = read_manifest(folder_manifest_path(local.path))
    if manifest is None:
        report.notes.append(
            f"no {FOLDER_MANIFEST} in the folder: only checked that each file is a complete safetensors file "
            "(`stillmotion models verify PATH --write-manifest` records the current hashes)"
        )
        return {}
    report.reference = "manifest"
    return _from_manifest(manifest)


def _from_manifest(manifest: dict) -> dict:
    return {rel: (v.get("sha256"), v.get("size")) for rel, v in manifest["files"].items()}


def _check_file(folder: Path, rel: str, expected: tuple[str | None, int | None] | None) -> FileCheck:
    path = folder / rel
    if not path.is_file():
        want_sha, want_size = expected or (None, None)
        return FileCheck(rel, "missing", expected_size=want_size, expected_sha256=want_sha, detail="missing")
    size = path.stat().st_size
    check = FileCheck(rel, "unverified", size=size)
    if expected is not None:
        check.expected_sha256, check.expected_size = expected
    # a file shorter than its own header says is truncated, whatever the reference
    problem = safetensors_problem(path, size)
    if check.expected_size is not None and size < check.expected_size:
        check.status, check.detail = "truncated", f"truncated: {size} of {check.expected_size} bytes"
        return check
    if problem:
        check.status = "truncated" if problem.startswith("truncated") else "unreadable"
        check.detail = problem
        return check
    check.sha256 = sha256_file(path)
    if check.expected_sha256:
        if check.sha256 != check.expected_sha256:
            check.status = "altered"
            sizes = "" if check.expected_size in (None, size) else f", {size} bytes instead of {check.expected_size}"
            check.detail = f"sha256 {check.sha256[:12]}… instead of {check.expected_sha256[:12]}…{sizes}"
        else:
            check.status = "ok"
    elif check.expected_size is not None and size != check.expected_size:
        check.status, check.detail = "altered", f"{size} bytes instead of {check.expected_size}"
    return check


def safetensors_problem(path: Path, size: int | None = None) -> str | None:
    """Why a file is not a complete safetensors file (None when it is): header length, JSON, data extent."""
    size = path.stat().st_size if size is None else size
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                return f"truncated: {size} bytes, not even a safetensors header"
            (n,) = struct.unpack("<Q", head)
            if n > 100_000_000:
                return "not a safetensors file (header length is implausible)"
            raw = f.read(n)
    except OSError as e:
        return f"unreadable: {e.strerror or e}"
    if len(raw) < n:
        return f"truncated: {size} bytes, inside the safetensors header"
    try:
        header = json.loads(raw)
        end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        return "not a safetensors file (header is not valid JSON)"
    want = 8 + n + end
    if size < want:
        return f"truncated: {size} of {want} bytes"
    if size > want:
        return f"{size - want} unexpected bytes after the tensor data"
    return None
