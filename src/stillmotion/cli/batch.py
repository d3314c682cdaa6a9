"""`stillmotion batch SOURCE OUT_DIR`: a folder or manifest of images -> videos, resumable."""

from __future__ import annotations

import sys
import time

import click

from ..errors import Cancelled, InvalidInput
from .options import CancelOnSigint, engine_config_from, engine_options, pop_spec_fields, spec_options
from .remote import server_options


@click.command()
@click.argument("source", type=click.Path())
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("-r", "--recursive", is_flag=True, help="include images in sub-folders (outputs mirror the tree)")
@click.option("--pattern", default=None, help='comma-separated globs on the file name, e.g. "*.jpg,*.png"')
@click.option("--variants", type=int, default=1, show_default=True, help="videos per image, each with its own seed (NAME.s<seed>.mp4)")
@click.option("--force", is_flag=True, help="redo every item, even those whose video is up to date")
@click.option("--max-failures", type=int, default=None, help="stop (after the current item) once this many items failed")
@click.option("--dry-run", is_flag=True, help="list what would be done and estimate the time; loads no model")
@click.option("--pipeline/--no-pipeline", default=None,
              help="decode/encode beside the model (default: on for GPUs, off on the CPU)")
@click.option("--devices", default=None, help="one worker per device, e.g. 0,1 (GPUs) or cpu,cpu; overrides --device")
@click.option("--ray", "use_ray", is_flag=True, help="run on a Ray cluster: a Ray Data actor pool (pip install 'stillmotion[ray]')")
@click.option("--ray-address", default=None, help="with --ray: the cluster to join (default: RAY_ADDRESS, else a local one)")
@click.option("--actors", type=click.IntRange(1), default=None, help="with --ray: actors in the pool (default: one per GPU, else 1)")
@spec_options
@engine_options
@server_options
@click.option("--concurrency", type=click.IntRange(1, 64), default=2, show_default=True,
              help="with --server: jobs sent at a time (the server queues them)")
@click.option("-q", "--quiet", is_flag=True, help="no progress display")
def batch(source, out_dir, recursive, pattern, variants, force, max_failures, dry_run, pipeline, devices, use_ray,
          ray_address, actors, server, api_key, concurrency, quiet, **kwargs):
    """Turn every image in SOURCE (a folder, an s3:// gs:// abfs:// hdfs:// prefix, or a .csv/.jsonl
    manifest) into a video under OUT_DIR.

    \b
    stillmotion batch ./images ./videos --model svd-xt --fps 7
    stillmotion batch s3://bucket/images ./videos --ray   # AWS_* variables for credentials/endpoint
    stillmotion batch ./images ./videos --recursive --pattern "*.jpg,*.png" --seed 1234
    stillmotion batch manifest.csv ./videos        # columns: image, output, any spec field
    stillmotion batch ./images ./videos --variants 3

    Each item's seed derives from --seed (default 0) and the image's path
    relative to SOURCE, so re-runs and split batches give the same videos.
    Re-running skips items whose video and sidecar match; --force redoes them.
    OUT_DIR/batch-report.json records every item. Exit code 1 if any failed.
    """
    from ..batch import expected_seconds, plan_batch, run_batch

    fields = pop_spec_fields(kwargs)
    seed = fields.pop("seed", None)
    if server:  # the plan names the model the server runs: its sidecars record it, and resume compares it
        from .remote import server_model

        kwargs["model"] = server_model(server, api_key, kwargs.get("model"))
    config = engine_config_from(kwargs)
    if max_failures is not None and max_failures < 1:
        raise InvalidInput(f"--max-failures must be at least 1, got {max_failures}.")
    device_list = [d.strip() for d in devices.split(",") if d.strip()] if devices else None
    if devices is not None and not device_list:
        raise InvalidInput("--devices is empty; give e.g. 0,1 or cpu,cpu.")
    patterns = [p.strip() for p in pattern.split(",") if p.strip()] if pattern else None

    # 1. Plan: inputs, seeds, outputs, clashes, what is up to date. No model yet.
    plan = plan_batch(source, out_dir, model=config.model, fields=fields, seed=seed, variants=variants,
                      recursive=recursive, patterns=patterns, force=force)
    if not plan.items:
        raise InvalidInput(f"No images found in {source}" + (" (try --recursive)" if not recursive else "")
                           + (f" matching {pattern}" if pattern else "") + ".")
    todo, skipped = plan.to_run, plan.skipped
    if dry_run:
        notice = (lambda text: click.echo(text, err=True)) if sys.stderr.isatty() else (lambda _: None)
        seconds, basis = expected_seconds(plan, config, device_list, notice=notice)
        for item in plan.items:
            mark = "skip" if item.status == "skipped" else "make"
            click.echo(f"{mark}  {item.key}  ->  {item.output}  (seed {item.seed})")
        for name in plan.ignored:
            click.echo(f"ignore  {name}  (not an image)")
        click.echo(f"{len(todo)} to make, {len(skipped)} up to date, {len(plan.ignored)} ignored; "
                   f"about {_duration(seconds)} ({basis}).")
        return 0

    # 2. Run, with live progress on a terminal and a line per item otherwise
    show = not quiet
    live = show and sys.stderr.isatty()
    ui = _LiveUI(len(todo)) if live else None
    start = time.perf_counter()
    if show:
        click.echo(f"{len(todo)} to make, {len(skipped)} up to date"
                   + (f", {len(plan.ignored)} ignored" if plan.ignored else "") + f" -> {plan.out_dir}", err=True)

    def on_event(ctl, kind, index, data):
        item = plan.items[index] if index >= 0 else None
        if ui is not None:
            ui.update(ctl, kind, item, data)
        elif show and kind in ("done", "failed", "retry"):
            n = ctl.finished_runs
            what = {"done": f"done {item.output}", "failed": f"FAILED: {data.get('error')}",
                    "retry": f"retry: {data.get('error')}"}[kind]
            secs = f" ({data['seconds']:.1f}s)" if data.get("seconds") is not None else ""
            click.echo(f"[{n}/{len(todo)}] {item.key}: {what}{secs}", err=True)

    with CancelOnSigint() as cancel:
        try:
            if ui is not None:
                ui.start()
            if server:  # same plan, names, seeds and report; the items run as jobs on a stillmotion server
                from .remote import batch_on_server

                ctl = batch_on_server(server, api_key, plan, concurrency=concurrency, max_failures=max_failures,
                                      should_cancel=cancel, on_event=on_event)
            elif use_ray:  # same plan, names, seeds and report; the items run on a Ray actor pool
                from ..ray.data import run_batch_ray

                ctl = run_batch_ray(plan, config, actors=actors, address=ray_address, max_failures=max_failures,
                                    should_cancel=cancel, on_event=on_event)
            else:
                ctl = run_batch(plan, config, devices=device_list, max_failures=max_failures, should_cancel=cancel,
                                on_event=on_event, pipeline=pipeline)
        finally:
            if ui is not None:
                ui.stop()

    # 3. Summary and exit code
    _summary(ctl, time.perf_counter() - start)
    if ctl.outcome == "cancelled":
        raise Cancelled(f"Cancelled; finished videos are kept, see {plan.report_path}. Re-run to resume.")
    return 1 if ctl.count("failed") else 0


def _summary(ctl, wall: float) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(file=sys.stdout, highlight=False, soft_wrap=True)
    table = Table(title=f"batch {ctl.outcome}", show_header=True)
    for col in ("done", "skipped", "failed", "not run", "time", "per video"):
        table.add_column(col, justify="right")
    done, failed = ctl.count("done"), ctl.count("failed")
    per = f"{wall / done:.1f}s" if done else "-"
    table.add_row(str(done), str(ctl.count("skipped")), str(failed), str(ctl.count("not_run")), _duration(wall), per)
    console.print(table)
    bad = [i for i in ctl.plan.items if i.status == "failed"]
    for item in bad[:20]:
        console.print(f"failed: {item.key}" + (f" (line {item.line})" if item.line else "") + f": {item.error}")
    if len(bad) > 20:
        console.print(f"... and {len(bad) - 20} more failures")
    console.print(f"report: {ctl.plan.report_path}")


def _duration(seconds) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


class _LiveUI:
    """Items bar (done/failed/skipped, ETA from measured throughput) and one line per running item."""

    def __init__(self, total: int):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[detail]}"),
            transient=False,
        )
        self.items = self.progress.add_task("videos", total=total, detail="")
        self.running: dict[int, int] = {}  # item index -> task id

    def start(self):
        self.progress.start()

    def stop(self):
        self.progress.stop()

    def update(self, ctl, kind, item, data):
        p = self.progress
        if kind == "start":
            self.running[item.index] = p.add_task(f"  {item.key}", total=1, detail="loading")
        elif kind == "progress" and item.index in self.running:
            total = data.get("total") or 1
            p.update(self.running[item.index], total=total, completed=data.get("step", 0),
                     detail=f"{data.get('stage')} {data.get('step')}/{total}")
        elif kind in ("done", "failed", "not_run") and item.index in self.running:
            p.remove_task(self.running.pop(item.index))
        eta = ctl.eta_seconds()
        p.update(self.items, completed=ctl.finished_runs,
                 detail=f"done {ctl.count('done')}  failed {ctl.count('failed')}  skipped {ctl.count('skipped')}"
                        + (f"  ETA {_duration(eta)}" if eta is not None else ""))
