"""`stillmotion generate IMAGE`: one image -> one video."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from ..errors import InvalidInput
from .options import CancelOnSigint, engine_config_from, engine_options, pop_spec_fields, rich_progress, spec_options


@click.command()
@click.argument("image", required=False)
@click.option("-o", "--output", type=click.Path(dir_okay=True), default=None, help="output file (default: IMAGE's name + format, here)")
@spec_options
@engine_options
@click.option("--from", "from_sidecar", type=click.Path(), default=None, help="reproduce a video from its sidecar NAME.json")
@click.option("--json", "as_json", is_flag=True, help="print one machine-readable JSON line with the result")
@click.option("-q", "--quiet", is_flag=True, help="no progress bar")
def generate(image, output, from_sidecar, as_json, quiet, **kwargs):
    """Turn IMAGE (a path or an http(s) URL) into a video.

    \b
    stillmotion generate photo.jpg -o photo.mp4
    stillmotion generate photo.jpg --model tiny --frames 8 -o demo.mp4
    stillmotion generate --from photo.json -o again.mp4
    """
    from ..spec import GenerationSpec

    given = pop_spec_fields(kwargs)
    fields = dict(given)
    model = kwargs.pop("model")

    # 1. Spec: from a sidecar (flags override it) or from flags alone
    if from_sidecar:
        from ..video import read_sidecar

        record = read_sidecar(from_sidecar)
        base = dict(record.get("spec", {}))
        if base.get("decode_chunk_size") is None and record.get("decode_chunk_size"):
            # the temporal decoder mixes frames within a chunk: reuse the chunk that ran
            base["decode_chunk_size"] = record["decode_chunk_size"]
        base.update(given)
        fields = base
        model = model or (record.get("model") or {}).get("name")
        if image is None:
            image = (record.get("input") or {}).get("source")
            if not image:
                raise InvalidInput(f"{from_sidecar} does not name its input image: pass IMAGE too.")
    if image is None:
        raise InvalidInput("No IMAGE given: pass a path or URL (or --from NAME.json).")
    if output and "format" not in given:
        from ..video import format_from_path

        fmt = format_from_path(output)  # -o clip.gif means --format gif
        if fmt:
            fields["format"] = fmt
    spec = GenerationSpec.build(**fields)
    config = engine_config_from(kwargs, model=model)

    # 2. Output path and image, checked before the model loads so bad input fails fast
    out = _output_path(image, output, spec.format)
    from .. import images, sources

    data, where = sources.read_source_bytes(image)
    images.load_image(data)

    # 3. Load, generate, write
    from ..engine import Engine

    show = not quiet and not as_json and sys.stderr.isatty()
    progress, on_progress, update = rich_progress(enabled=show)
    with progress, CancelOnSigint() as cancel:
        update(stage="loading", detail=config.model)
        engine = Engine(config)
        result = engine.generate(data, spec, on_progress=on_progress, should_cancel=cancel, source=where)
        update(stage="writing", detail=str(out))
        artifact = result.save(out)
        update(completed=1.0, stage="done", detail="")

    if from_sidecar:
        _check_reproduced(record, result)
    summary = {
        "output": str(artifact.path),
        "sidecar": str(artifact.sidecar) if artifact.sidecar else None,
        "seed": result.seed,
        "model": engine.model_name,
        "frames": artifact.frames,
        "width": artifact.width,
        "height": artifact.height,
        "fps": artifact.fps,
        "timings": result.timings,
    }
    if as_json:
        click.echo(json.dumps(summary))
    else:
        click.echo(f"wrote {artifact.path} ({artifact.frames} frames, {artifact.width}x{artifact.height}, "
                   f"{artifact.fps:g} fps, seed {result.seed}) in {result.timings.get('total', 0):.1f}s")


def _output_path(image, output, fmt: str) -> Path:
    if output:
        return Path(output)
    stem = Path(str(image).split("?")[0]).stem or "video"
    return Path(f"{stem}.{fmt}") if fmt != "png" else Path(f"{stem}-frames")


def _check_reproduced(record: dict, result) -> None:
    want = (record.get("input") or {}).get("sha256")
    got = result.metadata.get("input", {}).get("sha256")
    if want and got and want != got:
        click.echo("warning: the input image differs from the one recorded in the sidecar.", err=True)
