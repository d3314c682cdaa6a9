"""`stillmotion export-workflow SIDECAR.json -o WORKFLOW.json`: the ComfyUI workflow of a video we made."""

from __future__ import annotations

import click


@click.command("export-workflow")
@click.argument("sidecar", type=click.Path())
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="the workflow .json to write (default: SIDECAR's name + .workflow.json)")
def export_workflow(sidecar, output):
    """Write the ComfyUI API workflow for the video SIDECAR describes.

    The nodes are ComfyUI's own (SVD: ImageOnlyCheckpointLoader, SVD_img2vid_Conditioning,
    VideoLinearCFGGuidance; Wan: UNETLoader, ModelSamplingSD3, CLIPLoader, CLIPTextEncode,
    VAELoader, WanImageToVideo, CLIPVisionLoader/Encode; then KSampler, VAEDecode and a save
    node), so the workflow opens
    in ComfyUI (Workflow > Open); `stillmotion generate --from WORKFLOW.json` runs the
    same spec again.

    \b
    stillmotion export-workflow clip.json -o clip.workflow.json
    """
    from pathlib import Path

    from ..comfy import export_workflow as build, write_workflow
    from ..video import read_sidecar

    record = read_sidecar(sidecar)
    prompt, notes = build(record)
    src = Path(sidecar)
    out = Path(output) if output else src.with_name(src.stem + ".workflow.json")
    write_workflow(prompt, out)
    for note in notes:
        click.echo(f"note: {note}", err=True)
    model = prompt["1"]["inputs"].get("ckpt_name") or prompt["1"]["inputs"].get("unet_name")  # SVD's or Wan's loader
    click.echo(f"wrote {out} ({len(prompt)} nodes, {model})")
