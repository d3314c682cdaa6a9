"""`stillmotion models list | download NAME | verify NAME | convert FILE -o DIR`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from ..errors import InvalidInput, ModelCorrupted


@click.group()
def models():
    """List, download and verify models.

    \b
    stillmotion models list                  # known models, what is cached, sizes
    stillmotion models download svd-xt       # fp16 safetensors into the HF cache
    stillmotion models download rife         # RIFE weights for --interpolate-backend rife
    stillmotion models verify svd-xt         # sha256 of every weight file
    stillmotion models convert svd_xt.safetensors -o svd-xt-folder   # single file -> diffusers folder
    stillmotion models list --comfyui-dir ~/ComfyUI                  # also its models/checkpoints/
    """


# --------------------------------------------------------------------------- list
@models.command("list")
@click.option("--json", "as_json", is_flag=True, help="print a JSON list instead of a table")
@click.option("--comfyui-dir", type=click.Path(file_okay=False, path_type=Path), envvar="STILLMOTION_COMFYUI_DIR",
              help="a ComfyUI folder: also list the SVD and LTX-2 checkpoints in its models/checkpoints/ and the Wan "
                   "and Gemma files in models/diffusion_models, vae, text_encoders, clip_vision (env "
                   "STILLMOTION_COMFYUI_DIR)")
def list_models(as_json, comfyui_dir):
    """Known models and the ones in the cache, with their size on disk."""
    rows = model_rows() + (checkpoint_rows(comfyui_dir) if comfyui_dir else [])
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        size = human_size(r["size_bytes"]) if r["size_bytes"] else f"~{r['approx_size_gb']:g} GB" if r["approx_size_gb"] else "-"
        where = (r["path"] if r["status"] != "not downloaded" else r["repo_id"]) or ""
        click.echo(f"{r['name']:<{width}}  {r['status']:<14}  {size:>9}  {where}")
        if r["description"]:
            click.echo(f"{'':<{width}}  {r['description']}")
    from ..models.paths import cache_root, hub_cache_dir

    click.echo(f"\nHugging Face cache: {hub_cache_dir()}   stillmotion cache: {cache_root()}")


# one row of `models list --json`, in its key order; each kind of row overrides what it knows
_ROW = {
    "name": "",
    "kind": "video",
    "repo_id": None,
    "revision": None,
    "variant": None,
    "gated": False,
    "builtin": False,
    "description": "",
    "approx_size_gb": 0.0,
    "status": "not downloaded",
    "commit": None,
    "path": None,
    "size_bytes": 0,
}


def model_rows() -> list[dict]:
    """One dict per registry model, then per other SVD pipeline found in the HF cache."""
    from ..models.hub import cached_snapshot, entry_missing, missing_files
    from ..models.paths import hub_cache_dir
    from ..models.registry import REGISTRY
    from ..models.tiny import BUILT_ON_USE, tiny_folder

    rows = []
    for entry in REGISTRY.values():
        row = {
            **_ROW,
            "name": entry.name,
            "kind": entry.kind,
            "repo_id": entry.repo_id,
            "revision": entry.revision,
            "variant": entry.variant,
            "gated": entry.gated,
            "builtin": entry.builtin,
            "description": entry.description,
            "approx_size_gb": entry.approx_size_gb,
        }
        if entry.builtin and entry.name not in BUILT_ON_USE:  # shipped inside the package (demo)
            from ..models.resolve import resolve

            folder = resolve(entry.name).path
            row.update(status="shipped", path=str(folder), size_bytes=disk_size(folder))
        elif entry.builtin:
            folder = tiny_folder(entry.name)
            if (folder / "model_index.json").is_file():
                row.update(status="cached", path=str(folder), size_bytes=disk_size(folder))
            else:
                row["status"] = "built on use"
        else:
            folder = cached_snapshot(entry, complete=False)
            if folder is not None:
                complete = not entry_missing(entry, folder)
                row.update(
                    status="cached" if complete else "partial",
                    commit=folder.name,
                    path=str(folder),
                    size_bytes=disk_size(folder),
                )
        rows.append(row)

    # other diffusers SVD pipelines in the HF cache (any hub id works as --model)
    known = {e.repo_id for e in REGISTRY.values() if e.repo_id}
    cache = hub_cache_dir()
    for repo_dir in sorted(cache.glob("models--*")) if cache.is_dir() else ():
        repo_id = repo_dir.name.removeprefix("models--").replace("--", "/")
        if repo_id in known:
            continue
        for snap in sorted((repo_dir / "snapshots").glob("*")):
            try:
                cls = json.loads((snap / "model_index.json").read_text()).get("_class_name")
            except (OSError, ValueError):
                continue
            if cls != "StableVideoDiffusionPipeline":
                continue
            rows.append(
                {
                    **_ROW,
                    "name": repo_id,
                    "repo_id": repo_id,
                    "description": "hub model in the cache",
                    "status": "partial" if all(missing_files(snap, v) for v in (None, "fp16")) else "cached",
                    "commit": snap.name,
                    "path": str(snap),
                    "size_bytes": disk_size(snap),
                }
            )
    return rows


def checkpoint_rows(comfyui_dir: Path) -> list[dict]:
    """One row per model file in a ComfyUI folder, saying what it is from its header: the single-file SVD and LTX-2
    checkpoints of models/checkpoints/ (and ComfyUI's Gemma-3 file for LTX-2), and the Wan files of models/diffusion_models (or unet), vae, text_encoders
    and clip_vision (models/wan_files.py; a Wan transformer's row is runnable with --model, the others are its
    parts)."""
    from ..errors import StillmotionError
    from ..models.ltx_files import TEXT_FOLDERS
    from ..models.ltx_inspect import inspect_ltx_file, looks_like_ltx_file
    from ..models.single_file import inspect_file
    from ..models.wan_files import FOLDERS
    from ..models.wan_inspect import inspect_wan_file

    models = Path(comfyui_dir).expanduser() / "models"
    subs = tuple(dict.fromkeys(("checkpoints", *(s for kind in FOLDERS.values() for s in kind), *TEXT_FOLDERS)))
    if not any((models / s).is_dir() for s in subs):
        raise InvalidInput(f"{comfyui_dir} has no models/checkpoints/ or models/diffusion_models/ folder: point "
                           "--comfyui-dir at the ComfyUI folder.")
    rows = []
    for sub in subs:
        folder = models / sub
        files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in
                       (".safetensors", ".gguf", ".ckpt", ".pt")) if folder.is_dir() else []
        for f in files:
            kind = "video"
            try:
                if f.suffix.lower() in (".ckpt", ".pt"):
                    what, kind = "pickle: convert to .safetensors", "other"
                elif looks_like_ltx_file(f):  # an LTX-2 checkpoint, or ComfyUI's Gemma-3 file for it
                    info = inspect_ltx_file(f)
                    what, kind = info.label, "video" if info.kind == "checkpoint" else "part"
                elif sub == "checkpoints":
                    what = inspect_file(f).label
                else:
                    info = inspect_wan_file(f)
                    what = info.label
                    kind = "video" if info.kind == "transformer" else "part"
            except StillmotionError as e:
                what = "not SVD" if sub == "checkpoints" else "not a Wan or LTX-2 file stillmotion runs"
                if f.suffix.lower() == ".safetensors" and looks_like_ltx_file(f):
                    what = str(e)  # an LTX-2 file that cannot run: why
                kind = "other"
            rows.append(
                {**_ROW, "name": f"{sub}/{f.relative_to(folder)}" if sub != "checkpoints" else f.name, "kind": kind,
                 "description": what, "status": "single file", "path": str(f), "size_bytes": f.stat().st_size}
            )
    return rows


def disk_size(folder: Path) -> int:
    """Bytes on disk under a folder, following the hub cache's symlinks once per blob."""
    seen, total = set(), 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            p = Path(root, name)
            try:
                real = p.resolve()
                if real in seen:
                    continue
                seen.add(real)
                total += real.stat().st_size
            except OSError:
                continue
    return total


def human_size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"


# --------------------------------------------------------------------------- convert
@models.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="the diffusers folder to write (replaced whole if it exists)")
def convert(file, out):
    """Convert a single-file SVD checkpoint (svd_xt.safetensors, ...) into a diffusers pipeline folder.

    The folder (fp16 safetensors, configs, stillmotion.json with the file's
    sha256) loads with StableVideoDiffusionPipeline.from_pretrained(DIR) and
    works as --model DIR. Passing the file itself as --model converts it once
    into the cache instead.
    """
    import time

    from ..models.single_file import convert as run_convert
    from ..models.single_file import inspect_file, refuse_pickle
    from ..util import atomic_path

    refuse_pickle(file)
    if not file.is_file():
        raise InvalidInput(f"{file}: no such file.")
    from ..models.wan_inspect import looks_like_wan_file

    from ..models.ltx_inspect import looks_like_ltx_file

    if looks_like_wan_file(file) or looks_like_ltx_file(file):
        raise InvalidInput(f"{file.name} is one of ComfyUI's Wan or LTX-2 files, which run as they are: pass it as --model "
                           "(the model is assembled around it in the cache; `models convert` writes SVD folders).")
    info = inspect_file(file)
    t = time.perf_counter()
    with atomic_path(out) as tmp:
        run_convert(file, tmp, info=info)  # with its manifest: `stillmotion models verify DIR` checks it
    click.echo(f"{file.name}: {info.label} (frames from {info.frames_from}) -> {out} in {time.perf_counter() - t:.1f} s")


# --------------------------------------------------------------------------- download
@models.command()
@click.argument("name")
@click.option("--force", is_flag=True, help="download every file again (repairs a corrupted cache)")
@click.option("-q", "--quiet", is_flag=True, help="no progress bar")
def download(name, force, quiet):
    """Download a model into the Hugging Face cache.

    NAME is svd, svd-xt, svd-xt-1-1, rife or a hub id (org/name); only configs
    and safetensors weights (fp16 where the model has them) are fetched, and
    their sha256 recorded for `models verify`. rife fetches one 23 MB file of
    RIFE v4.26 weights and checks that it loads. tiny is built from code;
    --force rebuilds it.
    """
    from ..models.resolve import entry_for, resolve

    entry = entry_for(name)
    if entry.builtin:
        from ..models.tiny import BUILT_ON_USE

        local = _rebuild_tiny(entry.name) if force and name in BUILT_ON_USE else resolve(name, progress=not quiet)
        click.echo(f"{entry.name}: built in, saved at {local.path}")
        return
    if entry.repo_id is None:
        raise InvalidInput(f"{name} is a local folder: there is nothing to download (`stillmotion models verify {name}` checks it).")
    from ..models.hub import cached_snapshot, resolve_hub

    was_cached = not force and cached_snapshot(entry) is not None
    local = resolve_hub(entry, download=True, progress=not quiet, force=force)
    size = human_size(disk_size(local.path))
    if entry.kind == "interpolation":  # a file that is not RIFE must fail here, not in the first job
        from ..video.rife import load_ifnet

        _, info = load_ifnet(local.path / entry.files[0])
        size += f", RIFE {info['variant']}"
    if was_cached:
        click.echo(f"{entry.name}: already in the cache at {local.path} (commit {local.commit}, {size}).")
    else:
        click.echo(f"{entry.name}: downloaded {entry.repo_id} at commit {local.commit} ({size}) to {local.path}")


def _rebuild_tiny(name: str):
    import shutil

    from ..models.resolve import resolve
    from ..models.tiny import tiny_folder

    shutil.rmtree(tiny_folder(name), ignore_errors=True)
    return resolve(name)


# --------------------------------------------------------------------------- verify
@models.command()
@click.argument("name")
@click.option("--online/--offline", default=None, help="against the hub's LFS hashes / the download manifest (default: hub when reachable)")
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON")
@click.option("--write-manifest", is_flag=True, help="local folder: record its current hashes as the reference, then verify")
def verify(name, online, as_json, write_manifest):
    """Check the sha256 and size of every weight file.

    Exits 3 and names each truncated, altered or missing file with the command
    that repairs it.
    """
    from ..models.resolve import entry_for
    from ..models.verify import verify as run_verify

    if write_manifest:
        entry = entry_for(name)
        if entry.repo_id is not None or entry.builtin:
            raise InvalidInput("--write-manifest is for local folders; hub models and tiny get theirs when saved or downloaded.")
        from ..models.hashes import write_folder_manifest
        from ..models.verify import safetensors_problem

        for p in sorted(Path(name).rglob("*.safetensors")):
            problem = safetensors_problem(p)
            if problem:
                raise ModelCorrupted(f"{p}: {problem}; not recording a manifest for a damaged folder.")
        click.echo(f"wrote {write_folder_manifest(name)}")
    try:
        report = run_verify(name, online=online)
    except ModelCorrupted as e:
        report = getattr(e, "report", None)
        if report is not None:
            _print_report(report, as_json)
        raise
    _print_report(report, as_json)


def _print_report(report, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
        return
    against = {
        "hub": f"the hub's LFS sha256 at commit {report.commit}",
        "manifest": "the manifest written when it was saved or downloaded",
        "hf-cache": "the hub cache's blob names (LFS sha256)",
        "none": "nothing (no manifest)",
    }[report.reference]
    click.echo(f"{report.name}: {report.path}")
    click.echo(f"checked against {against}")
    for f in report.files:
        mark = {"ok": "ok", "unverified": "complete"}.get(f.status, f.status.upper())
        size = human_size(f.size) if f.size is not None else "-"
        click.echo(f"  {mark:<10} {size:>9}  {f.path}" + (f"  ({f.detail})" if f.detail else ""))
    for note in report.notes:
        click.echo(f"note: {note}")
    if report.ok:
        n = sum(f.status == "ok" for f in report.files)
        if n:
            click.echo(f"{report.name}: " + ("its weight file matches." if n == 1 else f"all {n} weight files match."))
        else:
            click.echo(f"{report.name}: weight files are complete safetensors files; no reference hashes to compare.")
