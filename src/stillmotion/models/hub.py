"""Hub models: download only what SVD needs, work offline from the cache, verify weights.

    resolve_hub(entry)  cache first (no network), then snapshot_download of the
                        files diffusers loads: model_index.json, each component's
                        config, and safetensors weights of the entry's variant.
    verify(name)        sha256 + size of every weight file against the hub's LFS
                        hashes (online) or the manifest written at download time
                        (offline); a bad file raises ModelCorrupted naming it.

Settings are read from the environment on every call (HF_HUB_CACHE, HF_HOME,
HF_HUB_OFFLINE, HF_ENDPOINT, HF_TOKEN), not when huggingface_hub was imported,
so a long-lived server and the tests see changes.

Manifests (what was downloaded, with sha256 and size of each weight file):
    hub models         <stillmotion cache>/manifests/<org>--<name>/<commit>.json
    local folders, tiny  <folder>/stillmotion-manifest.json
"""

from __future__ import annotations

import json
import os
import re
import struct
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from ..errors import ModelCorrupted, ModelUnavailable
from .checkpoints import WEIGHT_SUFFIXES, LocalModel, remember_sha256, sha256_file
from .registry import ModelEntry, entry_for

FOLDER_MANIFEST = "stillmotion-manifest.json"
CONFIG_ONLY = ("scheduler", "feature_extractor", "tokenizer", "tokenizer_2", "safety_checker_config")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


# --------------------------------------------------------------------------- environment
def hub_cache_dir() -> Path:
    """The standard Hugging Face cache: HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(xdg) / "huggingface" / "hub"


def hub_endpoint() -> str | None:
    return os.environ.get("HF_ENDPOINT") or None


def is_offline() -> bool:
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().upper() in ("1", "ON", "YES", "TRUE")


def repo_folder(repo_id: str) -> str:
    return "models--" + repo_id.replace("/", "--")


# --------------------------------------------------------------------------- what to fetch
def allow_patterns(variant: str | None) -> list[str]:
    """The files diffusers reads for a pipeline: configs and safetensors of one variant (never .bin/.ckpt)."""
    configs = ["model_index.json", "*/config.json", "*/*_config.json"]
    if variant:
        return configs + [f"*/*.{variant}.safetensors", f"*/*.safetensors.index.{variant}.json"]
    return configs + ["*/*.safetensors", "*/*.safetensors.index.json"]


def ignore_patterns(variant: str | None) -> list[str] | None:
    # without a variant, skip variant files (name.fp16.safetensors) that "*/*.safetensors" also matches
    return None if variant else ["*/*.*.safetensors"]


def is_wanted_weight(relpath: str, variant: str | None) -> bool:
    """True for a weight file that a download of this variant fetches (component folders only)."""
    parts = relpath.split("/")
    if len(parts) != 2 or not parts[1].endswith(WEIGHT_SUFFIXES):
        return False
    stem = parts[1][: -len(".safetensors")]
    return stem.endswith(f".{variant}") if variant else "." not in stem


def missing_files(folder: Path, variant: str | None) -> list[str]:
    """What a complete pipeline folder lacks: model_index.json, a component's config or its weights."""
    index = folder / "model_index.json"
    try:
        components = json.loads(index.read_text())
    except (OSError, ValueError):
        return ["model_index.json"]
    missing = []
    for name, value in components.items():
        if name.startswith("_") or not isinstance(value, list) or None in value:
            continue
        sub = folder / name
        if name == "scheduler":
            need = ["scheduler_config.json"]
        elif name == "feature_extractor":
            need = ["preprocessor_config.json"]
        elif name.startswith("tokenizer"):
            continue
        else:
            need = ["config.json"]
        missing += [f"{name}/{n}" for n in need if not (sub / n).is_file()]
        if name not in CONFIG_ONLY and not any(
            is_wanted_weight(f"{name}/{p.name}", variant) for p in (sub.iterdir() if sub.is_dir() else ())
        ):
            missing.append(f"{name}/*{'.' + variant if variant else ''}.safetensors")
    return missing


# --------------------------------------------------------------------------- messages
def _name(entry: ModelEntry) -> str:
    return entry.name


def _fetch_hint(entry: ModelEntry, cache_dir: Path) -> str:
    return (
        f"run `stillmotion models download {_name(entry)}` on a machine with network, "
        f"or copy its Hugging Face cache folder {repo_folder(entry.repo_id)} into {cache_dir}"
    )


def _gated_message(entry: ModelEntry, has_token: bool) -> str:
    who = "your HF_TOKEN has no access to it" if has_token else "no HF_TOKEN is set"
    return (
        f"{entry.repo_id} is gated and {who}: accept its licence at https://huggingface.co/{entry.repo_id} "
        f"while logged in, set HF_TOKEN to a token of that account, then run `stillmotion models download {_name(entry)}`."
    )


def _has_token() -> bool:
    try:
        from huggingface_hub import get_token

        return bool(get_token())
    except Exception:  # noqa: BLE001 - a broken token file is the same as none here
        return False


# --------------------------------------------------------------------------- resolve
def cached_snapshot(entry: ModelEntry, *, complete: bool = True) -> Path | None:
    """The cached snapshot folder for the entry's revision (no network), or None.

    Uses huggingface_hub's own lookup (`snapshot_download(local_files_only=True)`):
    refs/<revision> -> snapshots/<commit>. With complete=True a folder that lacks
    a config or weight file counts as not cached.
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import IncompleteSnapshotError, LocalEntryNotFoundError

    try:
        folder = Path(
            snapshot_download(
                entry.repo_id,
                revision=entry.revision,
                cache_dir=hub_cache_dir(),
                allow_patterns=allow_patterns(entry.variant),
                ignore_patterns=ignore_patterns(entry.variant),
                local_files_only=True,
            )
        )
    except IncompleteSnapshotError as e:  # files missing from a snapshot whose file list is known
        snapshot = getattr(e, "snapshot_path", None)
        return None if complete or not snapshot else Path(snapshot)
    except (LocalEntryNotFoundError, OSError, ValueError):
        return None
    if complete and missing_files(folder, entry.variant):
        return None
    return folder


def _local_model(entry: ModelEntry, folder: Path) -> LocalModel:
    return LocalModel(
        entry=entry,
        path=folder,
        source="hub",
        repo_id=entry.repo_id,
        revision=entry.revision,
        commit=folder.name,
        variant=entry.variant,
    )


def resolve_hub(entry: ModelEntry, download: bool = True, progress: bool = True, *, force: bool = False) -> LocalModel:
    """A loadable snapshot folder for a hub model: from the cache when it is there, else downloaded.

    force=True downloads every file again (repairs a corrupted cache).
    """
    # 1. The cache first: a cached model works with no network at all
    if not force:
        folder = cached_snapshot(entry)
        if folder is not None:
            return _local_model(entry, folder)

    # 2. Not cached (or forced): only now may we touch the network
    cache_dir = hub_cache_dir()
    if is_offline():
        raise ModelUnavailable(
            f"{_name(entry)} ({entry.repo_id}) is not in the Hugging Face cache at {cache_dir} and HF_HUB_OFFLINE=1 "
            f"forbids downloading: {_fetch_hint(entry, cache_dir)}."
        )
    if not download:
        raise ModelUnavailable(f"{_name(entry)} is not downloaded: run `stillmotion models download {_name(entry)}`.")

    # 3. Download the files diffusers needs, resumable, into the standard cache
    folder = _download(entry, cache_dir, progress=progress, force=force)
    missing = missing_files(folder, entry.variant)
    if missing:
        raise ModelUnavailable(
            f"{entry.repo_id} at {folder.name} is not a diffusers pipeline with safetensors "
            f"{entry.variant or ''} weights (missing {', '.join(missing[:3])}); only safetensors are loaded."
        )
    local = _local_model(entry, folder)

    # 4. Record what arrived: sha256 + size of every weight file, for offline verify
    write_manifest(local, hub_manifest_path(entry.repo_id, folder.name))
    return local


def _download(entry: ModelEntry, cache_dir: Path, *, progress: bool, force: bool) -> Path:
    import httpx2
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    from .. import __version__

    try:
        return Path(
            snapshot_download(
                entry.repo_id,
                revision=entry.revision,
                cache_dir=cache_dir,
                allow_patterns=allow_patterns(entry.variant),
                ignore_patterns=ignore_patterns(entry.variant),
                force_download=force,
                endpoint=hub_endpoint(),
                tqdm_class=None if progress else _quiet_tqdm(),
                library_name="stillmotion",
                library_version=__version__,
            )
        )
    except GatedRepoError:
        raise ModelUnavailable(_gated_message(entry, _has_token())) from None
    except RevisionNotFoundError:
        raise ModelUnavailable(
            f"{entry.repo_id} has no revision {entry.revision!r} on the hub: check the registry pin or the name."
        ) from None
    except RepositoryNotFoundError:
        raise ModelUnavailable(
            f"{entry.repo_id} was not found on the hub: check the name; a private repo needs HF_TOKEN set."
        ) from None
    except HfHubHTTPError as e:
        status = getattr(getattr(e, "response", None), "status_code", None)
        if status in (401, 403):
            raise ModelUnavailable(_gated_message(entry, _has_token())) from None
        raise ModelUnavailable(
            f"The hub answered HTTP {status} for {entry.repo_id}: try again later, or {_fetch_hint(entry, cache_dir)}."
        ) from None
    except (LocalEntryNotFoundError, httpx2.HTTPError, ConnectionError, TimeoutError) as e:
        raise ModelUnavailable(
            f"Cannot download {_name(entry)}: the Hugging Face Hub is unreachable ({type(e.__cause__ or e).__name__}) and "
            f"{entry.repo_id} is not in the cache at {cache_dir}: {_fetch_hint(entry, cache_dir)}."
        ) from None
    except OSError as e:
        raise ModelUnavailable(f"Cannot write {entry.repo_id} into {cache_dir}: {e.strerror or e}.") from None


def _quiet_tqdm():
    """A tqdm that never draws (progress=False); huggingface_hub passes it every bar it makes."""
    from tqdm.auto import tqdm

    class QuietTqdm(tqdm):
        def __init__(self, *args, **kwargs):
            kwargs.pop("name", None)
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

    return QuietTqdm


# --------------------------------------------------------------------------- manifests
def hub_manifest_path(repo_id: str, commit: str) -> Path:
    from .tiny import cache_root

    return cache_root() / "manifests" / repo_folder(repo_id).removeprefix("models--") / f"{commit}.json"


def folder_manifest_path(folder: Path) -> Path:
    return Path(folder) / FOLDER_MANIFEST


def manifest_path_for(local: LocalModel) -> Path:
    if local.source == "hub":
        return hub_manifest_path(local.repo_id, local.commit)
    return folder_manifest_path(local.path)


def _weight_relpaths(folder: Path) -> list[str]:
    return sorted(
        str(p.relative_to(folder)).replace(os.sep, "/")
        for p in folder.rglob("*")
        if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES)
    )


def build_manifest(folder: Path, **meta) -> dict:
    """sha256 and size of every weight file in a folder (and, in the hub cache, a check against the blob name)."""
    files = {}
    for rel in _weight_relpaths(folder):
        path = folder / rel
        digest = sha256_file(path)
        blob = path.resolve().name
        if _SHA256.match(blob) and blob != digest:
            raise ModelCorrupted(
                f"{rel} arrived corrupted (sha256 {digest[:12]}…, the hub says {blob[:12]}…): "
                f"run `stillmotion models download {meta.get('name') or 'NAME'} --force`."
            )
        remember_sha256(path, digest)
        files[rel] = {"sha256": digest, "size": path.stat().st_size}
    return {
        "format": 1,
        **meta,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "files": files,
    }


def _atomic_write_json(target: Path, data: dict) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    os.replace(tmp, target)


def write_manifest(local: LocalModel, target: Path | None = None) -> Path:
    """Hash every weight file of a resolved model and record it (atomic write)."""
    target = target or manifest_path_for(local)
    meta = {
        "name": local.entry.name,
        "source": local.source,
        "repo_id": local.repo_id,
        "revision": local.revision,
        "commit": local.commit,
        "variant": local.variant,
    }
    _atomic_write_json(target, build_manifest(local.path, **meta))
    return target


def write_folder_manifest(folder: str | os.PathLike, name: str | None = None) -> Path:
    """Manifest for a diffusers folder saved with save_pretrained (tiny, local models, fine-tunes)."""
    folder = Path(folder)
    target = folder_manifest_path(folder)
    _atomic_write_json(target, build_manifest(folder, name=name or str(folder), source="local"))
    return target


def read_manifest(path: Path) -> dict | None:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data.get("files"), dict) else None


# --------------------------------------------------------------------------- verify
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
    from .checkpoints import resolve

    entry = entry_for(name_or_path)
    # 1. Find the files: a hub snapshot as it is in the cache (even incomplete), else the resolved folder
    if entry.repo_id is not None:
        folder = cached_snapshot(entry, complete=False)
        if folder is None:
            raise ModelUnavailable(
                f"{entry.name} is not downloaded, so there is nothing to verify: run `stillmotion models download {entry.name}`."
            )
        local = _local_model(entry, folder)
    else:
        local = resolve(name_or_path, download=False, progress=False)
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
    present = [p for p in _weight_relpaths(local.path) if local.source != "hub" or is_wanted_weight(p, local.variant)]
    for rel in sorted(set(present) | set(expected)):
        report.files.append(_check_file(local.path, rel, expected.get(rel)))
    if not report.files:
        report.notes.append("no weight files found")

    # 4. Name the bad files and the command that repairs them
    bad = report.bad
    if bad or not report.files:
        what = "; ".join(f"{f.path} ({f.detail or f.status})" for f in bad) or "no .safetensors weight files"
        err = ModelCorrupted(
            f"{entry.name}: {len(bad) or 'its'} weight file{'s' if len(bad) != 1 else ''} failed verification: "
            f"{what}; {repair_hint(entry, local.source)}."
        )
        err.report = report
        raise err
    for f in report.files:
        if f.status == "ok" and f.sha256:
            remember_sha256(local.path / f.path, f.sha256)
    return report


def _expected_hashes(local: LocalModel, report: VerifyReport, online: bool | None) -> dict[str, tuple[str | None, int | None]]:
    """relative path -> (sha256, size) from the best reference available; sets report.reference."""
    if local.source == "hub":
        if online is True or (online is None and not is_offline()):
            try:
                expected = _hub_hashes(local)
                report.reference = "hub"
                return expected
            except ModelUnavailable as e:
                if online is True:
                    raise ModelUnavailable(
                        f"Cannot verify {local.entry.name} against the hub: {e.message}; "
                        "use --offline to check against the download manifest."
                    ) from None
                report.notes.append(f"hub not used ({e.message}): checked against the download manifest")
        manifest = read_manifest(hub_manifest_path(local.repo_id, local.commit))
        if manifest is not None:
            report.reference = "manifest"
            return _from_manifest(manifest)
        blobs = {}
        for rel in _weight_relpaths(local.path):
            blob = (local.path / rel).resolve().name
            if _SHA256.match(blob):
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


def _hub_hashes(local: LocalModel) -> dict:
    """The hub's LFS sha256 and size of every weight file this variant uses, at the resolved commit."""
    import httpx2
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    try:
        info = HfApi(endpoint=hub_endpoint()).model_info(local.repo_id, revision=local.commit, files_metadata=True)
    except GatedRepoError:
        raise ModelUnavailable(_gated_message(local.entry, _has_token())) from None
    except RepositoryNotFoundError:
        raise ModelUnavailable(f"{local.repo_id} was not found on the hub (a private repo needs HF_TOKEN).") from None
    except HfHubHTTPError as e:
        status = getattr(getattr(e, "response", None), "status_code", None)
        raise ModelUnavailable(f"the hub answered HTTP {status} for {local.repo_id}") from None
    except (httpx2.HTTPError, OSError) as e:
        raise ModelUnavailable(f"the hub is unreachable ({type(e).__name__})") from None
    expected = {}
    for s in info.siblings or []:
        if not is_wanted_weight(s.rfilename, local.variant):
            continue
        lfs = s.lfs
        sha = getattr(lfs, "sha256", None) if lfs is not None else None
        size = getattr(lfs, "size", None) if lfs is not None else s.size
        expected[s.rfilename] = (sha, size if size is not None else s.size)
    return expected


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
