"""Hub models: download only what SVD needs, into the standard HF cache; work offline from it.

    resolve_hub(entry)  cache first (no network), then snapshot_download of the
                        files diffusers loads: model_index.json, each component's
                        config, and safetensors weights of the entry's variant
                        (never .bin/.ckpt, never the repo's original checkpoint);
                        then a manifest of what arrived (hashes.py).
    hub_hashes(local)   the hub's LFS sha256 and size of each weight file at the
                        resolved commit, for `stillmotion models verify`.

Settings are read from the environment on every call (HF_HUB_CACHE, HF_HOME,
HF_HUB_OFFLINE, HF_ENDPOINT, HF_TOKEN), not when huggingface_hub was imported,
so a long-lived server and the tests see changes.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from ..errors import ModelUnavailable
from ..version import __version__
from .hashes import WEIGHT_SUFFIXES, hub_manifest_path, write_manifest
from .local import LocalModel
from .paths import hub_cache_dir, repo_folder
from .registry import ModelEntry, Piece

CONFIG_ONLY = ("scheduler", "feature_extractor", "tokenizer", "tokenizer_2", "safety_checker_config", "processor")
# a tokenizer's or processor's own files beside its *_config.json (fast tokenizers, sentencepiece models,
# vocabularies, chat templates): Wan's T5, LTX-2's Gemma-3 and its processor read them
TOKENIZER_FILES = ["*/tokenizer.json", "*/tokenizer.model", "*/spiece.model", "*/special_tokens_map.json",
                   "*/added_tokens.json", "*/vocab.json", "*/vocab.txt", "*/merges.txt", "*/chat_template.json",
                   "*/chat_template.jinja"]


# --------------------------------------------------------------------------- environment
def hub_endpoint() -> str | None:
    return os.environ.get("HF_ENDPOINT") or None


def is_offline() -> bool:
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().upper() in ("1", "ON", "YES", "TRUE")


# --------------------------------------------------------------------------- what to fetch
def allow_patterns(variant: str | None) -> list[str]:
    """The files diffusers reads for a pipeline: configs and safetensors of one variant (never .bin/.ckpt)."""
    configs = ["model_index.json", "*/config.json", "*/*_config.json", *TOKENIZER_FILES]
    if variant:  # diffusers names: x.fp16.safetensors, shards x.fp16-00001-of-00002.safetensors
        return configs + [
            f"*/*.{variant}.safetensors",
            f"*/*.{variant}-*-of-*.safetensors",
            f"*/*.safetensors.index.{variant}.json",
        ]
    return configs + ["*/*.safetensors", "*/*.safetensors.index.json"]


def ignore_patterns(variant: str | None) -> list[str] | None:
    # without a variant, skip variant files (name.fp16.safetensors) that "*/*.safetensors" also matches
    return None if variant else ["*/*.*.safetensors"]


def fetch_patterns(entry: ModelEntry) -> dict:
    """allow/ignore patterns for snapshot_download: a single-file entry's files, a piece of an assembled model's, else
    a pipeline's."""
    if entry.piece is not None:
        return {"allow_patterns": list(entry.piece.allow), "ignore_patterns": list(entry.piece.ignore) or None}
    if entry.files:
        return {"allow_patterns": list(entry.files), "ignore_patterns": None}
    return {"allow_patterns": allow_patterns(entry.variant), "ignore_patterns": ignore_patterns(entry.variant)}


def entry_wants(entry: ModelEntry, relpath: str) -> bool:
    """True for a weight file that a download of this entry fetches and verify checks."""
    if entry.piece is not None:
        from fnmatch import fnmatch

        piece = entry.piece
        return (relpath.endswith(WEIGHT_SUFFIXES) and any(fnmatch(relpath, a) for a in piece.allow)
                and not any(fnmatch(relpath, i) for i in piece.ignore))
    return relpath in entry.files if entry.files else is_wanted_weight(relpath, entry.variant)


def entry_missing(entry: ModelEntry, folder: Path) -> list[str]:
    """What a cached snapshot of this entry lacks (empty when complete; an assembled model: what its repos lack)."""
    if entry.parts:
        missing = []
        for piece in pieces(entry):
            snap = cached_snapshot(piece, complete=False)
            missing += [f"{piece.repo_id}: everything"] if snap is None else [
                f"{piece.repo_id}/{m}" for m in entry_missing(piece, snap)]
        return missing
    if entry.piece is not None:
        return _piece_missing(entry, folder)
    if entry.files:
        return [f for f in entry.files if not (folder / f).is_file()]
    return missing_files(folder, entry.variant)


def is_wanted_weight(relpath: str, variant: str | None) -> bool:
    """True for a weight file that a download of this variant fetches (component folders only)."""
    parts = relpath.split("/")
    if len(parts) != 2 or not parts[1].endswith(WEIGHT_SUFFIXES):
        return False
    stem = parts[1][: -len(".safetensors")]
    if variant:
        return stem.endswith(f".{variant}") or re.search(rf"\.{re.escape(variant)}-\d+-of-\d+$", stem) is not None
    return "." not in stem


def missing_files(folder: Path, variant: str | None, skip: tuple[str, ...] = ()) -> list[str]:
    """What a complete pipeline folder lacks: model_index.json, a component's config or its weights (`skip`: the
    components an assembled model takes from other repos)."""
    index = folder / "model_index.json"
    try:
        components = json.loads(index.read_text())
    except (OSError, ValueError):
        return ["model_index.json"]
    missing = []
    for name, value in components.items():
        if name.startswith("_") or not isinstance(value, list) or None in value or name in skip:
            continue
        sub = folder / name
        if name == "scheduler":
            need = ["scheduler_config.json"]
        elif name == "feature_extractor":
            need = ["preprocessor_config.json"]
        elif name.startswith("tokenizer") or name == "processor":
            continue
        else:
            need = ["config.json"]
        missing += [f"{name}/{n}" for n in need if not (sub / n).is_file()]
        if name not in CONFIG_ONLY and not any(
            is_wanted_weight(f"{name}/{p.name}", variant) for p in (sub.iterdir() if sub.is_dir() else ())
        ):
            missing.append(f"{name}/*{'.' + variant if variant else ''}.safetensors")
    return missing


# --------------------------------------------------------------------------- several repos assembled into one model
_NOT_WEIGHTS = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.msgpack", "*.h5", "*.onnx", "*.gguf")


def pieces(entry: ModelEntry) -> list[ModelEntry]:
    """The repos an assembled entry (registry `parts`) is fetched from, each as an entry of its own (the same name,
    so messages name the model): the base repo without the parts' components, then each part's component."""
    import dataclasses

    taken = tuple(p.component for p in entry.parts)
    variant_files = () if entry.variant else ("*/*.*.safetensors",)  # as ignore_patterns(): no variant files
    base = dataclasses.replace(entry, parts=(), piece=Piece(
        allow=("model_index.json", "*/*.json", "*/*.txt", "*/*.model", "*/*.safetensors"),
        ignore=tuple(f"{c}/*" for c in taken) + _NOT_WEIGHTS + variant_files))
    out = [base]
    for part in entry.parts:
        prefix = f"{part.subfolder}/" if part.subfolder else ""
        allow = tuple(f"{prefix}*.{ext}" for ext in ("json", "txt", "safetensors"))
        out.append(dataclasses.replace(entry, repo_id=part.repo_id, revision=part.revision, variant=None, parts=(),
                                       piece=Piece(allow, _NOT_WEIGHTS, part.component, part.subfolder)))
    return out


def _piece_missing(piece: ModelEntry, folder: Path) -> list[str]:
    """What one repo of an assembled model lacks: the base its pipeline files, a part its config and weights."""
    component, sub = piece.piece.component, piece.piece.subfolder
    if component is None:
        skip = tuple(i.split("/")[0] for i in piece.piece.ignore if i.endswith("/*"))
        return missing_files(folder, piece.variant, skip=skip)
    where = folder / sub if sub else folder
    if component in CONFIG_ONLY:
        return [] if any(where.glob("*config.json")) else [f"{sub + '/' if sub else ''}*config.json"]
    missing = [] if (where / "config.json").is_file() else [f"{sub + '/' if sub else ''}config.json"]
    if not any(where.glob("*.safetensors")):
        missing.append(f"{sub + '/' if sub else ''}*.safetensors")
    return missing


def _component_class(folder: Path, component: str) -> list[str]:
    """[library, class] of a component folder, as model_index.json names it (from its own config)."""
    for name in ("config.json", "preprocessor_config.json", "scheduler_config.json"):
        try:
            config = json.loads((folder / name).read_text())
        except (OSError, ValueError):
            continue
        if config.get("_class_name"):
            return ["diffusers", config["_class_name"]]
        if config.get("architectures"):
            return ["transformers", config["architectures"][0]]
        if config.get("image_processor_type") or config.get("feature_extractor_type"):
            return ["transformers", config.get("image_processor_type") or config["feature_extractor_type"]]
    raise ModelUnavailable(f"{folder} does not say what {component} it holds (no class in its config)")


def assemble(entry: ModelEntry, snapshots: list[Path]) -> LocalModel:
    """One diffusers folder for an assembled model: the base repo's model_index.json with the parts' components
    (their classes from their own configs) and `_class_name` the entry's pipeline, and every file linked from the
    snapshots (real folders, linked files: rglob and the weight hashes see them). Kept under the stillmotion cache,
    named by the repos' commits; rebuilt only when one changes."""
    import hashlib

    from ..util import atomic_path
    from .paths import cache_root

    parts = pieces(entry)
    commits = [s.name for s in snapshots]
    key = hashlib.sha256(" ".join(f"{p.repo_id}@{c}" for p, c in zip(parts, commits)).encode()).hexdigest()[:40]
    folder = cache_root() / "assembled" / entry.name / key
    if not (folder / "model_index.json").is_file():
        with atomic_path(folder) as tmp:
            tmp.mkdir(parents=True, exist_ok=True)
            base = snapshots[0]
            index = json.loads((base / "model_index.json").read_text())
            taken = {p.piece.component for p in parts[1:]}
            for name, value in list(index.items()):
                if name.startswith("_") or name in taken or not isinstance(value, list):
                    continue
                if (base / name).is_dir():
                    _link_tree(base / name, tmp / name)
            for piece, snap in zip(parts[1:], snapshots[1:]):
                component, sub = piece.piece.component, piece.piece.subfolder
                src = snap / sub if sub else snap
                _link_tree(src, tmp / component, only=lambda p: p.suffix in (".json", ".txt", ".safetensors"))
                index[component] = _component_class(src, component)
            if entry.pipeline_class:
                index["_class_name"] = entry.pipeline_class
            (tmp / "model_index.json").write_text(json.dumps(index, indent=2))
    described = [{"component": p.piece.component or "base", "repo_id": p.repo_id, "commit": c}
                 for p, c in zip(parts, commits)]
    return LocalModel(entry=entry, path=folder, source="hub", repo_id=entry.repo_id, revision=entry.revision,
                      commit=commits[0], variant=entry.variant, parts=described)


def _link_tree(src: Path, dst: Path, only=None) -> None:
    for path in sorted(src.rglob("*")):
        if not path.is_file() or (only is not None and not only(path)):
            continue
        target = dst / path.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(path.resolve(), target)


def _assembled_snapshot(entry: ModelEntry, complete: bool) -> Path | None:
    snaps = [cached_snapshot(p, complete=complete) for p in pieces(entry)]
    if any(s is None for s in snaps):
        return None
    try:
        return assemble(entry, snaps).path
    except (ModelUnavailable, OSError, ValueError):  # a part not whole yet: the base repo's snapshot says "partial"
        if complete:
            return None
        return snaps[0]


def resolve_assembled(entry: ModelEntry, download: bool = True, progress: bool = True, *, force: bool = False
                      ) -> LocalModel:
    """An assembled model: each repo from the cache or downloaded (resolve_hub: offline rules, manifests), then one
    folder made of them."""
    return assemble(entry, [resolve_hub(p, download, progress, force=force).path for p in pieces(entry)])


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
    from huggingface_hub.utils import LocalEntryNotFoundError

    if entry.parts:  # several repos: the assembled folder once each is cached
        return _assembled_snapshot(entry, complete)
    try:
        folder = Path(
            snapshot_download(
                entry.repo_id,
                revision=entry.revision,
                cache_dir=hub_cache_dir(),
                **fetch_patterns(entry),
                local_files_only=True,
            )
        )
    except LocalEntryNotFoundError as e:
        # huggingface_hub >= 2 says IncompleteSnapshotError (with its path) when files of a known listing are missing
        snapshot = getattr(e, "snapshot_path", None)
        return None if complete or not snapshot else Path(snapshot)
    except (OSError, ValueError):
        return None
    if complete and entry_missing(entry, folder):
        return None
    return folder


def snapshot_model(entry: ModelEntry, folder: Path) -> LocalModel:
    """The LocalModel of a cached hub snapshot (its folder name is the commit)."""
    if entry.parts:
        return assemble(entry, [cached_snapshot(p, complete=False) for p in pieces(entry)])
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
    if entry.parts:
        return resolve_assembled(entry, download, progress, force=force)
    # 1. The cache first: a cached model works with no network at all
    if not force:
        folder = cached_snapshot(entry)
        if folder is not None:
            return snapshot_model(entry, folder)

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
    missing = entry_missing(entry, folder)
    if missing and (entry.files or entry.piece is not None):
        raise ModelUnavailable(f"{entry.repo_id} at {folder.name} does not hold {', '.join(missing)}: check the registry entry.")
    if missing:
        raise ModelUnavailable(
            f"{entry.repo_id} at {folder.name} is not a diffusers pipeline with safetensors "
            f"{entry.variant or ''} weights (missing {', '.join(missing[:3])}); only safetensors are loaded."
        )
    local = snapshot_model(entry, folder)

    # 4. Record what arrived: sha256 + size of every weight file, for offline verify
    write_manifest(
        folder,
        hub_manifest_path(local.repo_id, local.commit),
        name=entry.name,
        source=local.source,
        repo_id=local.repo_id,
        revision=local.revision,
        commit=local.commit,
        variant=local.variant,
    )
    return local


def fetch_file(repo_id: str, relpath: str, revision: str = "main", *, what: str) -> Path:
    """One file of a hub repo (a fast preset's LoRA): from the cache, else downloaded into the same cache
    (huggingface_hub's resumable hf_hub_download). `what` names what needs it, in messages."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.utils import EntryNotFoundError, GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError

    cache_dir = hub_cache_dir()
    hint = f"`hf download {repo_id} {relpath}` on a machine with network (into {cache_dir})"
    try:
        return Path(hf_hub_download(repo_id, relpath, revision=revision, cache_dir=cache_dir, endpoint=hub_endpoint(),
                                    local_files_only=is_offline(), library_name="stillmotion",
                                    library_version=__version__))
    except GatedRepoError:
        raise ModelUnavailable(f"{repo_id} is gated: accept its licence at https://huggingface.co/{repo_id} while "
                               f"logged in and set HF_TOKEN, then run again ({what}).") from None
    except LocalEntryNotFoundError as e:  # before its base EntryNotFoundError: offline or unreachable, not cached
        why = "HF_HUB_OFFLINE=1 forbids downloading" if is_offline() else \
            f"the Hugging Face Hub is unreachable ({type(e.__cause__ or e).__name__})"
        raise ModelUnavailable(f"{what} needs {relpath} from {repo_id}, which is not in the cache and {why}: "
                               f"run {hint}.") from None
    except EntryNotFoundError:
        raise ModelUnavailable(f"{repo_id} has no {relpath} at {revision}: {what} cannot run; "
                               "check the registry entry.") from None
    except HfHubHTTPError as e:
        status = getattr(getattr(e, "response", None), "status_code", None)
        raise ModelUnavailable(f"The hub answered HTTP {status} for {repo_id}/{relpath}: try again later, or "
                               f"run {hint}.") from None
    except (ConnectionError, TimeoutError, *_transport_errors()) as e:
        raise ModelUnavailable(f"{what} needs {relpath} from {repo_id}: the Hugging Face Hub is unreachable "
                               f"({type(e).__name__}): run {hint}.") from None
    except OSError as e:
        raise ModelUnavailable(f"Cannot write {relpath} into {cache_dir}: {e.strerror or e}.") from None


def _download(entry: ModelEntry, cache_dir: Path, *, progress: bool, force: bool) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.utils import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        return Path(
            snapshot_download(
                entry.repo_id,
                revision=entry.revision,
                cache_dir=cache_dir,
                **fetch_patterns(entry),
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
    except (LocalEntryNotFoundError, ConnectionError, TimeoutError, *_transport_errors()) as e:
        raise ModelUnavailable(
            f"Cannot download {_name(entry)}: the Hugging Face Hub is unreachable ({type(e.__cause__ or e).__name__}) and "
            f"{entry.repo_id} is not in the cache at {cache_dir}: {_fetch_hint(entry, cache_dir)}."
        ) from None
    except OSError as e:
        raise ModelUnavailable(f"Cannot write {entry.repo_id} into {cache_dir}: {e.strerror or e}.") from None


def _transport_errors() -> tuple[type[BaseException], ...]:
    """The HTTP client's connection errors (httpx2 for huggingface_hub 2.x, httpx or requests before)."""
    import importlib

    found = []
    for module, name in (("httpx2", "HTTPError"), ("httpx", "HTTPError"), ("requests", "RequestException")):
        try:
            found.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            continue
    return tuple(found)


def _quiet_tqdm():
    """A tqdm that never draws (progress=False); huggingface_hub passes it every bar it makes."""
    from tqdm.auto import tqdm

    class QuietTqdm(tqdm):
        def __init__(self, *args, **kwargs):
            kwargs.pop("name", None)
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

    return QuietTqdm


# --------------------------------------------------------------------------- the hub's hashes
def hub_hashes(local: LocalModel) -> dict[str, tuple[str | None, int | None]]:
    """The hub's LFS sha256 and size of every weight file this variant uses, at the resolved commit."""
    from huggingface_hub import HfApi
    from huggingface_hub.utils import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    try:
        info = HfApi(endpoint=hub_endpoint()).model_info(local.repo_id, revision=local.commit, files_metadata=True)
    except GatedRepoError:
        raise ModelUnavailable(_gated_message(local.entry, _has_token())) from None
    except RepositoryNotFoundError:
        raise ModelUnavailable(f"{local.repo_id} was not found on the hub (a private repo needs HF_TOKEN).") from None
    except HfHubHTTPError as e:
        status = getattr(getattr(e, "response", None), "status_code", None)
        raise ModelUnavailable(f"the hub answered HTTP {status} for {local.repo_id}") from None
    except (OSError, *_transport_errors()) as e:
        raise ModelUnavailable(f"the hub is unreachable ({type(e).__name__})") from None
    expected = {}
    for s in info.siblings or []:
        if not entry_wants(local.entry, s.rfilename):
            continue
        lfs = s.lfs
        sha = getattr(lfs, "sha256", None) if lfs is not None else None
        size = getattr(lfs, "size", None) if lfs is not None else s.size
        expected[s.rfilename] = (sha, size if size is not None else s.size)
    return expected
