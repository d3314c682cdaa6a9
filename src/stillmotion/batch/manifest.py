"""Manifests: a CSV (header row with an `image` column) or JSONL file (one object per line).

Besides `image`, a row may give `end_image` (the image the video ends on, read like
`image`: engine/keyframes.py), `output` (a path relative to the output folder),
`workflow` (a ComfyUI API workflow: a file relative to the manifest, or in JSONL
the object itself; its settings fill the row, which the row's own fields and the
command's flags override) and any spec field, by its spec name (num_frames,
motion_bucket_id, prompt, negative_prompt) or its flag name (frames, motion, decode-chunk, guidance). Empty
cells mean "not overridden". Every row is checked before any work starts, against the model's family too
(a Wan model refuses motion_bucket_id, an SVD model a prompt); each bad row is reported with its line.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from ..errors import InvalidInput
from ..spec import MAX_SEED, SPEC_FIELDS, GenerationSpec, cli_flag

MANIFEST_SUFFIXES = (".csv", ".jsonl", ".ndjson")
MAX_ERRORS_SHOWN = 20


@dataclass
class Row:
    """One image to make videos of, with its overrides."""

    key: str
    source: str
    overrides: dict
    line: Optional[int] = None
    output: Optional[str] = None  # a manifest's explicit output name, relative to out_dir
    end_image: Optional[str] = None  # the image the video ends on (keyframes), read like `image`


def _field_aliases() -> dict[str, str]:
    """Manifest columns may use spec names (num_frames) or flag names (frames, steps, decode-chunk)."""
    aliases: dict[str, str] = {}
    for name in SPEC_FIELDS:
        bare = cli_flag(GenerationSpec, name).lstrip("-")
        aliases[name] = name
        aliases[bare] = name
        aliases[bare.replace("-", "_")] = name
    return aliases


def read_manifest(path: Path, base: GenerationSpec, model: Optional[str] = None) -> list[Row]:
    """Rows of a CSV (header with an `image` column) or JSONL manifest; every bad row is reported with its line."""
    aliases = _field_aliases()
    errors: list[str] = []
    raw_rows: list[tuple[int, dict]] = []
    name = path.name
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidInput(f"Cannot read manifest {path}: {e}; pass a UTF-8 .csv or .jsonl file.") from None

    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(text.splitlines(keepends=True))
        header = [h.strip() for h in (reader.fieldnames or [])]
        if "image" not in header:
            raise InvalidInput(f"{name} line 1: the header has no `image` column (got {', '.join(header) or 'nothing'}).")
        bad = [h for h in header if h and h not in aliases and h not in ("image", "output", "workflow", "end_image")]
        if bad:
            raise InvalidInput(f"{name} line 1: unknown column(s) {', '.join(bad)}; use image, output and spec fields "
                               "such as num_frames, fps, motion_bucket_id, seed.")
        for row in reader:
            if None in row:
                errors.append(f"line {reader.line_num}: more cells than header columns")
                continue
            cells = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
            if not any(cells.values()):
                continue  # blank line
            raw_rows.append((reader.line_num, {k: v for k, v in cells.items() if v != ""}))
    else:
        for n, line in enumerate(text.splitlines(), start=1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                errors.append(f"line {n}: not valid JSON ({e.msg})")
                continue
            if not isinstance(obj, dict):
                errors.append(f"line {n}: each line must be a JSON object with an `image` key")
                continue
            raw_rows.append((n, {k: v for k, v in obj.items() if v is not None}))

    rows: list[Row] = []
    base_fields = base.model_dump(exclude_defaults=True)
    family_check = _family_check(model)
    for line, cells in raw_rows:
        image = cells.pop("image", None)
        output = cells.pop("output", None)
        workflow = cells.pop("workflow", None)
        end_image = cells.pop("end_image", None)
        if not image or not isinstance(image, str):
            errors.append(f"line {line}: no `image` given")
            continue
        overrides: dict[str, Any] = {}
        unknown = [k for k in cells if k not in aliases]
        if unknown:
            errors.append(f"line {line}: unknown field(s) {', '.join(unknown)}")
            continue
        for k, v in cells.items():
            overrides[aliases[k]] = v
        out_fmt = None  # the format the row's output name says (clip.gif: gif)
        if output is not None:
            from ..video import format_from_path

            out_fmt = format_from_path(str(output))
        if workflow is not None:  # the workflow's settings under the row's fields and the command's flags
            from ..comfy import apply_workflow

            try:
                wf_fields = apply_workflow({"workflow": workflow}, model, base_dir=path.parent, where="workflow")
            except InvalidInput as e:
                errors.append(f"line {line}: {e.message}")
                continue
            if out_fmt:
                wf_fields.pop("format", None)  # the row's output name says the format
            overrides = {**{k: v for k, v in wf_fields.items() if k not in base_fields}, **overrides}
        try:
            checked = GenerationSpec.build(**{**base_fields, **overrides})
        except InvalidInput as e:
            errors.append(f"line {line}: {e.message}")
            continue
        try:  # what the model's family cannot honour (another family's fields, its frame and size rules)
            family_check(checked, end_image is not None)
        except InvalidInput as e:
            errors.append(f"line {line}: {e.message}")
            continue
        # keep the validated (typed) values: "14" in a CSV cell becomes 14
        overrides = {k: getattr(checked, k) for k in overrides}
        if "seed" in overrides and overrides["seed"] < 0:
            errors.append(f"line {line}: seed must be 0..{MAX_SEED} in a batch, got {overrides['seed']}")
            continue
        if output is not None:
            if out_fmt and "format" in overrides and overrides["format"] != out_fmt:
                errors.append(f"line {line}: output {output!r} does not match format {overrides['format']!r}")
                continue
            if out_fmt and "format" not in overrides and "format" not in base_fields:
                overrides["format"] = out_fmt
            if Path(str(output)).is_absolute() or ".." in Path(str(output)).parts:
                errors.append(f"line {line}: output {output!r} must be a relative path inside the output folder")
                continue
        key, src = _manifest_source(path.parent, image)
        if src is None:
            errors.append(f"line {line}: image {image!r} not found")
            continue
        end_src = None
        if end_image is not None:
            end_src = _manifest_source(path.parent, str(end_image))[1] if isinstance(end_image, str) else None
            if end_src is None:
                errors.append(f"line {line}: end_image {end_image!r} not found")
                continue
            from ..engine.keyframes import check_spec

            try:
                check_spec(checked)
            except InvalidInput as e:
                errors.append(f"line {line}: {e.message}")
                continue
        rows.append(Row(key=key, source=src, overrides=overrides, line=line, output=output, end_image=end_src))

    if errors:
        shown = errors[:MAX_ERRORS_SHOWN]
        more = f" (and {len(errors) - len(shown)} more)" if len(errors) > len(shown) else ""
        raise InvalidInput(f"{name}: {len(errors)} invalid row(s), nothing was run: " + "; ".join(shown) + more)
    if not rows:
        raise InvalidInput(f"{name} lists no images; add rows with an `image` column.")
    return rows


def _family_check(model: Optional[str]):
    """check(spec, end_image) for the rows: the model's family refuses what it cannot honour (no model: nothing)."""
    if model is None:
        return lambda spec, end_image: None
    from ..families import family_for
    from ..models.resolve import entry_for

    entry = entry_for(model)
    family = family_for(entry)
    return lambda spec, end_image: family.check(spec, entry, end_image=end_image)


def _manifest_source(folder: Path, image: str) -> tuple[str, Optional[str]]:
    """(key, source) of a manifest image: relative paths are relative to the manifest's folder;
    URLs (http(s), s3://, gs:// ...) stand for themselves and are read when the item runs."""
    from .. import remote

    if image.lower().startswith(("http://", "https://")) or remote.is_remote(image):
        return image, image
    p = Path(image).expanduser()
    full = p if p.is_absolute() else folder / p
    if not full.is_file():
        return image, None
    try:
        key = full.resolve().relative_to(folder.resolve()).as_posix()
    except ValueError:
        key = Path(image).as_posix()
    return key, str(full.absolute())
