"""`--server URL` for generate and batch: the same command, run on a stillmotion server (stillmotion.client).

The inputs are read and checked here as a local run reads them, sent with the resolved names and seeds, and
the server's video and sidecar come back to the same paths a local run writes (whole or not at all). Errors
keep their exit codes: the server's 4xx is a bad input here (2), a canceled job is 130, and Ctrl-C cancels
the job on the server.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path
from typing import Callable, Optional

import click

from ..errors import Cancelled, InvalidInput, StillmotionError

SERVER_HELP = "run on this stillmotion server (stillmotion serve) and write the result here [env: STILLMOTION_SERVER]"


def server_options(f):
    """--server and --api-key (also from STILLMOTION_SERVER / STILLMOTION_API_KEY)."""
    f = click.option("--api-key", envvar="STILLMOTION_API_KEY", default=None, show_envvar=False,
                     help="the server's API key [env: STILLMOTION_API_KEY]")(f)
    return click.option("--server", envvar="STILLMOTION_SERVER", default=None, metavar="URL", show_envvar=False,
                        help=SERVER_HELP)(f)


def _client(server: str, api_key: Optional[str]):
    from ..client import Client

    return Client(server, api_key=api_key)


def _unsupported_format(fmt: str) -> None:
    if fmt == "png":
        raise InvalidInput("--format png (a folder of frames) is not available with --server; use mp4, webm, gif or webp.")


def _fetch(client, job: dict, out: Path, sidecar: Path, patch: Callable[[dict], None]) -> dict:
    """The job's video to `out`, the NAME.wav beside it where a gif/webp video has sound, and its sidecar to
    `sidecar` (what a local run records, in a local run's order: video, sound, sidecar); returns the sidecar."""
    from ..util import atomic_write
    from ..video.audio import wav_path
    from ..video.metadata import dumps

    client.download(job["id"], out)
    tmp = sidecar.with_name(f".{sidecar.name}.{job['id']}.server")
    client.download(job["id"], tmp, variant="sidecar")
    try:
        record = json.loads(tmp.read_text())
        if (record.get("audio") or {}).get("file"):  # the sound beside the video: a local run's name for it
            client.download(job["id"], wav_path(out), variant="audio")
        patch(record)
        atomic_write(sidecar, dumps(record))
    finally:
        tmp.unlink(missing_ok=True)
    return record


def _final(job: dict) -> dict:
    from ..client import job_error

    if job is None or job.get("status") != "succeeded":
        raise job_error(job or {"status": "failed", "error": {"message": "the event stream ended early"}})
    return job


# --------------------------------------------------------------------------- generate
def generate_on_server(server: str, api_key: Optional[str], data: bytes, where: Optional[str], spec, out: Path, *,
                       model: Optional[str], as_json: bool, show: bool, audio: Optional[str] = None) -> None:
    """`stillmotion generate ... --server URL`: one job on the server, its video and sidecar written to `out`.
    `audio`: a soundtrack file to follow, sent under the name a local run records (its path as given)."""
    from ..video.metadata import sidecar_path
    from .options import CancelOnSigint, rich_progress

    _unsupported_format(spec.format)
    t0 = time.perf_counter()
    progress, _, update = rich_progress(enabled=show)
    with _client(server, api_key) as client, progress, CancelOnSigint() as cancel:
        update(stage="queued", detail=server)
        sound = None if audio is None else _named(Path(audio).expanduser().read_bytes(), audio)
        job = client.submit(data if where is None else _named(data, where), spec.model_dump(mode="json", exclude_none=True),
                            model=model, inputs={"output_name": out.name}, audio=sound)

        def on_event(name: str, job: dict) -> None:
            p = job.get("progress") or {}
            if job["status"] == "queued":
                update(stage="queued", detail=f"{job.get('queue_position') or 0} ahead on {server}")
            else:
                update(completed=p.get("fraction") or 0.0, stage=p.get("stage") or job["status"],
                       detail=p.get("message") or "")

        job = _final(client.wait(job["id"], on_event=on_event, should_cancel=cancel))
        update(stage="writing", detail=str(out))
        sidecar = sidecar_path(out)
        record = _fetch(client, job, out, sidecar, lambda r: None)
        update(completed=1.0, stage="done", detail="")
    output = job.get("output") or {}
    summary = {"output": str(out), "sidecar": str(sidecar), "seed": job.get("seed"), "model": job.get("model"),
               "frames": output.get("frames"), "width": output.get("width"), "height": output.get("height"),
               "fps": output.get("fps"), "timings": record.get("timings") or {}, "server": server, "job": job["id"]}
    if as_json:
        click.echo(json.dumps(summary))
    else:
        click.echo(f"wrote {out} ({summary['frames']} frames, {summary['width']}x{summary['height']}, "
                   f"{summary['fps']:g} fps, seed {summary['seed']}) in {time.perf_counter() - t0:.1f}s on {server}")


class _named(bytes):
    """Image (or sound) bytes with the name the sidecar records as their source (sent as the multipart file name)."""

    def __new__(cls, data: bytes, name: str):
        obj = super().__new__(cls, data)
        obj.name = name
        return obj


# --------------------------------------------------------------------------- batch
def batch_on_server(server: str, api_key: Optional[str], plan, *, concurrency: int, max_failures: Optional[int],
                    should_cancel: Callable[[], bool], on_event):
    """Run a BatchPlan's pending items as jobs on the server, `concurrency` at a time; the same outputs,
    sidecars (with the batch key a local run records) and report as a local batch. Returns the Controller."""
    from .. import images, sources
    from ..batch.control import controlled
    from ..batch.run import item_error, naming_image

    todo = plan.to_run
    for item in todo:
        _unsupported_format(item.format)
        if item.end_source:
            raise InvalidInput(f"{plan.source}: the end_image column (keyframes) is not sent with --server yet; "
                               "run this batch here, without --server.")
    with controlled(plan, devices=[server], max_failures=max_failures, on_event=on_event,
                    should_cancel=should_cancel) as ctl:
        pending = iter(todo)
        lock = threading.Lock()

        def next_item():
            with lock:
                if ctl.stop.is_set() or should_cancel():
                    return None
                return next(pending, None)

        def run_one(client, item) -> None:
            t0 = time.perf_counter()
            ctl.handle("start", item.index)
            try:
                data, where = sources.read_source_bytes(item.source)
                with naming_image(item.key):  # name the file, as a local batch does
                    images.load_image(data)
                batch = {"key": item.key, "variant": item.variant, "requested": item.requested}
                image = _named(data, where or item.source)
                # the same item (bytes, request) has the same key: a batch killed while it waited finds its job again
                key = "batch-" + hashlib.sha256(data + json.dumps([batch, image.name], sort_keys=True).encode()).hexdigest()
                inputs = {"batch": batch, "output_name": item.output.name}
                job = client.submit(image, item.requested, model=plan.model, inputs=inputs, idempotency_key=key)
                if job["status"] in ("failed", "canceled"):  # that earlier job ended badly: this run tries again
                    job = client.submit(image, item.requested, model=plan.model, inputs=inputs)

                def on_job_event(name: str, job: dict) -> None:
                    p = job.get("progress") or {}
                    if name == "progress":
                        ctl.handle("progress", item.index, stage=p.get("stage"), step=p.get("step"), total=p.get("total"))

                job = _final(client.wait(job["id"], on_event=on_job_event, should_cancel=should_cancel))

                def patch(record: dict) -> None:
                    record.setdefault("input", {})["source"] = where or item.source

                _fetch(client, job, item.output, item.sidecar, patch)
            except Cancelled:
                ctl.handle("not_run", item.index, error="cancelled")
            except Exception as e:  # noqa: BLE001 - one item's bug must not end the batch
                ctl.handle("failed", item.index, error=item_error(e), seconds=round(time.perf_counter() - t0, 3))
            else:
                ctl.handle("done", item.index, seconds=round(time.perf_counter() - t0, 3))

        def worker(client) -> None:
            while (item := next_item()) is not None:
                run_one(client, item)

        with _client(server, api_key) as client:
            threads = [threading.Thread(target=worker, args=(client,), daemon=True, name=f"batch-server-{n}")
                       for n in range(max(1, concurrency))]
            for t in threads:
                t.start()
            for t in threads:
                while t.is_alive():
                    t.join(0.2)
    return ctl


def server_model(server: str, api_key: Optional[str], model: Optional[str]) -> str:
    """The model the jobs run on (what their sidecars record): `model` when the server serves it, else its default."""
    with _client(server, api_key) as client:
        ready = client.ready()
    name = ready.get("model")
    if not name:
        raise StillmotionError(f"{server} did not say which model it runs (/readyz); is it a stillmotion server?")
    served = [m["name"] for m in ready.get("models") or []] or [name]
    if model and model not in served:
        raise InvalidInput(f"--model {model}: the server at {server} serves {', '.join(served)}; "
                           "leave --model out (its default) or name one of those.")
    return model or name
