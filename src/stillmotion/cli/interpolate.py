"""`stillmotion interpolate VIDEO`: more frames for any video, the playback fps multiplied; its sound (an audio
track, or the NAME.wav beside a gif/webp/frames folder) is kept as it is, since the duration does not change."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

from ..errors import InvalidInput, InvalidVideo
from .options import CancelOnSigint, rich_progress


@click.command()
@click.argument("video", type=click.Path(dir_okay=True))
@click.option("-o", "--output", type=click.Path(dir_okay=True), default=None,
              help="output file (default: VIDEO's name + -2x, beside it)")
@click.option("--factor", type=int, default=None, help="2, 3, 4 or 8 (default 2): frames and fps multiplied")
@click.option("--fps", "target_fps", type=float, default=None, help="target playback fps, instead of a factor")
@click.option("--backend", type=click.Choice(["flow", "rife", "blend"]), default="flow", show_default=True,
              help="flow (optical flow, no weights), rife (`stillmotion models download rife`, or --rife-weights) or blend (plain cross-fade)")
@click.option("--rife-weights", type=click.Path(), default=None,
              help="RIFE v4 weights, a .safetensors file (or set STILLMOTION_RIFE_WEIGHTS; default: the downloaded rife)")
@click.option("--device", default=None, help="rife only: cpu, cuda, cuda:N (default: a GPU when there is one)")
@click.option("--format", "fmt", type=click.Choice(["mp4", "webm", "gif", "webp", "png"]), default=None,
              help="output format (default: from -o, else mp4)")
@click.option("--no-audio", is_flag=True, help="drop the video's soundtrack (kept by default: the duration is unchanged)")
@click.option("--json", "as_json", is_flag=True, help="print one machine-readable JSON line with the result")
@click.option("-q", "--quiet", is_flag=True, help="no progress bar")
def interpolate(video, output, factor, target_fps, backend, rife_weights, device, fmt, no_audio, as_json, quiet):
    """Interpolate frames of VIDEO (any format PyAV reads, GIF and WebP too).

    \b
    stillmotion interpolate clip.mp4 --factor 2 -o clip2x.mp4
    stillmotion interpolate clip.mp4 --fps 30 -o clip30.mp4
    stillmotion interpolate clip.mp4 --backend rife --rife-weights rife.safetensors
    """
    from ..video import format_from_path, read_video, write
    from ..video.audio import soundtrack_of
    from ..video.interpolate import check_factor, check_target_fps, make_interpolator, resample, times_for_factor, \
        times_for_fps

    # 1. Check the request before reading anything
    if factor is not None and target_fps is not None:
        raise InvalidInput("give --factor or --fps, not both.")
    if target_fps is None:
        factor = check_factor(2 if factor is None else factor)
    fmt = fmt or (format_from_path(output) if output else None) or "mp4"
    out = Path(output) if output else _default_output(video, factor, target_fps, fmt)

    # 2. Read the video
    t0 = time.perf_counter()
    frames, fps_in = read_video(video)
    audio = None if no_audio else soundtrack_of(video)
    if len(frames) < 2:
        raise InvalidVideo(f"{video} has {len(frames)} frame(s); interpolation needs at least 2.")
    if target_fps is not None:
        check_target_fps(fps_in, target_fps)
        times = times_for_fps(len(frames), fps_in, target_fps)
        fps_out = float(target_fps)
    else:
        times = times_for_factor(len(frames), factor)
        fps_out = float(fps_in) * factor
    timings = {"read": round(time.perf_counter() - t0, 4)}

    # 3. Interpolate, with progress and Ctrl-C
    interp = make_interpolator(backend, rife_weights=rife_weights, device=device)
    show = not quiet and not as_json and sys.stderr.isatty()
    progress, _, update = rich_progress(enabled=show)
    t = time.perf_counter()
    with progress, CancelOnSigint() as cancel:
        update(stage="interpolate", detail=f"{len(frames)} -> {len(times)} frames")
        result = resample(frames, times, interp, should_cancel=cancel,
                          on_progress=lambda d, n: update(completed=d / n, detail=f"{d}/{n} frames"))
        timings["interpolate"] = round(time.perf_counter() - t, 4)

        # 4. Write (atomically, with a sidecar)
        update(stage="writing", detail=str(out))
        meta = {
            "interpolate": {
                "source": str(video),
                "backend": interp.name,
                **({"rife": interp.info} if getattr(interp, "info", None) else {}),
                "factor": factor if target_fps is None else None,
                "target_fps": target_fps,
                "frames_in": int(len(frames)),
                "fps_in": float(fps_in),
                "frames_out": int(len(result)),
                "fps_out": fps_out,
                "audio": "kept" if audio is not None else ("dropped" if no_audio else "none"),
            },
            "timings": timings,
        }
        t = time.perf_counter()
        artifact = write(result, out, fps=fps_out, format=fmt, metadata=meta, audio=audio)
        timings["write"] = round(time.perf_counter() - t, 4)
        update(completed=1.0, stage="done", detail="")

    summary = {
        "output": str(artifact.path),
        "sidecar": str(artifact.sidecar) if artifact.sidecar else None,
        "backend": interp.name,
        "frames_in": int(len(frames)),
        "frames": artifact.frames,
        "width": artifact.width,
        "height": artifact.height,
        "fps_in": float(fps_in),
        "fps": artifact.fps,
        "audio": meta["interpolate"]["audio"],
        "wav": str(artifact.audio) if artifact.audio else None,
        "timings": timings,
    }
    if as_json:
        click.echo(json.dumps(summary))
    else:
        click.echo(f"wrote {artifact.path} ({len(frames)} -> {artifact.frames} frames, {artifact.width}x{artifact.height}, "
                   f"{fps_in:g} -> {artifact.fps:g} fps, {interp.name}) in {sum(timings.values()):.1f}s")


def _default_output(video: str, factor, target_fps, fmt: str) -> Path:
    p = Path(video)
    tag = f"{factor}x" if target_fps is None else f"{target_fps:g}fps"
    return p.with_name(f"{p.stem}-{tag}.{fmt}" if fmt != "png" else f"{p.stem}-{tag}-frames")
