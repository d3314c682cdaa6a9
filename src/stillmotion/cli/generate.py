"""`stillmotion generate IMAGE`: one image -> one video."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from ..errors import InvalidInput
from .options import CancelOnSigint, engine_config_from, engine_options, pop_spec_fields, rich_progress, spec_options
from .remote import generate_on_server, server_options


@click.command()
@click.argument("image", required=False)
@click.option("-o", "--output", type=click.Path(dir_okay=True), default=None, help="output file (default: IMAGE's name + format, here)")
@spec_options
@engine_options
@click.option("--from", "from_file", type=click.Path(), default=None,
              help="reproduce a video from its sidecar NAME.json, or run a ComfyUI API workflow (.json, or a ComfyUI output carrying one)")
@click.option("--comfyui-dir", type=click.Path(file_okay=False), default=None,
              help="ComfyUI's folder: a workflow's model files, and a --model given as a file name, are looked up in its "
                   "models/ folders (checkpoints, diffusion_models, vae, ...) [env: STILLMOTION_COMFYUI_DIR]")
@click.option("--end-image", default=None, metavar="PATH|URL", help="end the video on this image (keyframes, training-free)")
@click.option("--keyframes", default=None, metavar="A,B,C", help="images the video passes through, first to last: one segment per pair")
@click.option("--audio", "audio_file", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="a soundtrack the video follows and carries, cut or padded to its length (wav, mp3, m4a; LTX-2)")
@server_options
@click.option("--json", "as_json", is_flag=True, help="print one machine-readable JSON line with the result")
@click.option("-q", "--quiet", is_flag=True, help="no progress bar")
def generate(image, output, from_file, comfyui_dir, end_image, keyframes, audio_file, server, api_key, as_json, quiet,
             **kwargs):
    """Turn IMAGE (a path or an http(s) URL) into a video.

    \b
    stillmotion generate photo.jpg -o photo.mp4
    stillmotion generate photo.jpg --model tiny --frames 8 -o demo.mp4
    stillmotion generate --from photo.json -o again.mp4
    stillmotion generate first.jpg --end-image last.jpg -o between.mp4
    stillmotion generate --keyframes a.jpg,b.jpg,c.jpg -o through.mp4
    stillmotion generate photo.jpg --from svd_workflow.json --comfyui-dir ~/ComfyUI
    """
    from ..spec import GenerationSpec

    given = pop_spec_fields(kwargs)
    fields = dict(given)
    model = kwargs.pop("model")
    ends = None if end_image is None else [end_image]  # the end image, or the keyframes after the first

    # 1. Spec: from a ComfyUI workflow or a sidecar (--from; flags override either), or from flags alone
    workflow = _read_workflow(from_file) if from_file else None
    sidecar = from_file if from_file and workflow is None else None  # --from names one of our sidecars (or videos)
    if workflow is not None:
        fields, model, image, workflow = _from_workflow(workflow, from_file, given, model, image, comfyui_dir)
    elif model is not None and comfyui_dir is not None:  # --model FILE_NAME in ComfyUI's model folders
        from ..comfy import comfyui_dir as find_comfyui_dir
        from ..comfy.checkpoints import find_model_file

        model = find_model_file(model, find_comfyui_dir(comfyui_dir))
    if sidecar:
        from ..video import read_sidecar

        record = read_sidecar(sidecar)
        base = dict(record.get("spec", {}))
        if base.get("decode_chunk_size") is None and record.get("decode_chunk_size"):  # (SVD's; None for others)
            # the temporal decoder mixes frames within a chunk: reuse the chunk that ran
            base["decode_chunk_size"] = record["decode_chunk_size"]
        base.update(given)
        fields = base
        model = model or (record.get("model") or {}).get("name")
        if image is None:
            image = (record.get("input") or {}).get("source")
            if not image:
                raise InvalidInput(f"{sidecar} does not name its input image: pass IMAGE too.")
        recorded = (record.get("input") or {}).get("keyframes") or [(record.get("input") or {}).get("end_image")]
        if end_image is None and keyframes is None and recorded[0]:  # a keyframe video: its end image(s) too
            ends = [r.get("source") for r in recorded]
            if not all(ends):
                raise InvalidInput(f"{sidecar} does not name its end image: pass --end-image too.")
    if keyframes is not None:
        if image is not None or end_image is not None:
            raise InvalidInput("--keyframes names every image, first to last: leave out IMAGE and --end-image.")
        image, *ends = [k.strip() for k in keyframes.split(",") if k.strip()] or [None]
        if not ends:
            raise InvalidInput("--keyframes needs at least two images, comma-separated: --keyframes a.jpg,b.jpg.")
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
    end_data = end_where = None
    if ends is not None:  # checked and read now too; the engine loads them like the first
        from ..engine.keyframes import check_spec

        check_spec(spec, keyframes is not None)
        read = [sources.read_source_bytes(e) for e in ends]
        for d, _ in read:
            images.load_image(d)
        end_data, end_where = [d for d, _ in read], [w for _, w in read]
    sound = None
    if audio_file is not None:  # read now: a file that is not sound is refused before the model loads
        from ..video.audio import read_audio

        sound = read_audio(audio_file)

    # 3. Load, generate, write
    show = not quiet and not as_json and sys.stderr.isatty()
    if server:  # the same run on a stillmotion server; its video and sidecar are written here
        if end_data is not None or workflow is not None:
            raise InvalidInput("--end-image, --keyframes and ComfyUI workflows are not sent with --server yet; "
                               "run them here.")
        return generate_on_server(server, api_key, data, where, spec, out, model=model, as_json=as_json, show=show,
                                  audio=audio_file)
    from ..engine import Engine
    from ..families import family_for
    from ..models.resolve import entry_for

    entry = entry_for(config.model)  # what the model's family cannot honour is refused before it loads
    family_for(entry).check(spec, entry, end_image=end_data is not None, audio=sound is not None)
    progress, on_progress, update = rich_progress(enabled=show)
    with progress, CancelOnSigint() as cancel:
        update(stage="loading", detail=config.model)
        engine = Engine(config)
        result = engine.generate(data, spec, on_progress=on_progress, should_cancel=cancel, source=where,
                                 end_image=end_data, end_source=end_where, audio=sound, audio_source=audio_file)
        update(stage="writing", detail=str(out))
        if workflow is not None:
            result.metadata["workflow"] = workflow  # where the spec came from, and what was not applied
        artifact = result.save(out)
        update(completed=1.0, stage="done", detail="")

    if sidecar:
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


def _read_workflow(path: str):
    """The ComfyUI workflow that --from names (a workflow .json, or a ComfyUI output carrying one); None for
    one of our sidecars (NAME.json, or a video with its NAME.json beside it)."""
    from ..comfy import read_from_file
    from ..video import sidecar_path

    p = Path(path)
    if p.suffix.lower() != ".json" and (not p.is_file() or sidecar_path(p).is_file()):
        return None  # our video (its sidecar is beside it) or a missing path: read_sidecar says what is wrong
    return read_from_file(p)


def _from_workflow(prompt: dict, path: str, given: dict, model, image, comfyui_dir):
    """(spec fields, model, image, sidecar record) from a workflow: explicit flags win; notes are printed."""
    from ..comfy import comfyui_dir as find_comfyui_dir
    from ..comfy import parse_workflow, resolve_checkpoint

    wf = parse_workflow(prompt, where=path)
    comfy = find_comfyui_dir(comfyui_dir)
    base_dir = Path(path).resolve().parent
    if model is None and wf.ckpt_name:
        model = resolve_checkpoint(wf.ckpt_name, base_dir=base_dir, comfy_dir=comfy)
    if image is None and wf.image:
        for folder in ([comfy / "input"] if comfy else []) + [base_dir]:
            if (folder / wf.image).is_file():
                image = str(folder / wf.image)
                break
        else:
            raise InvalidInput(f"The workflow's LoadImage names {wf.image!r}, not found in ComfyUI's input folder or "
                               "next to the workflow: pass IMAGE.")
    _check_workflow_family(wf, model)
    if wf.files:  # the model files a Wan workflow loads, and its shift, against the model that runs
        from ..comfy import check_wan_model
        from ..models.registry import DEFAULT_MODEL

        check_wan_model(wf, model or DEFAULT_MODEL)
    for note in wf.notes:
        click.echo(f"note: {note}", err=True)
    return {**wf.fields, **given}, model, image, wf.record(source=str(path))


def _check_workflow_family(wf, model) -> None:
    """What the model's family cannot honour is refused naming the workflow's node and input (before any note)."""
    from ..families import family_for
    from ..models.registry import DEFAULT_MODEL
    from ..models.resolve import entry_for
    from ..spec import GenerationSpec

    entry = entry_for(model or DEFAULT_MODEL)
    try:
        family_for(entry).check(GenerationSpec.build(**wf.fields), entry)
    except InvalidInput as e:
        field = getattr(e, "field", None)
        if field not in wf.origin:
            raise
        raise InvalidInput(f"{wf.origin[field]} = {wf.fields[field]!r}: stillmotion cannot honour it ({e.message})") from None


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
