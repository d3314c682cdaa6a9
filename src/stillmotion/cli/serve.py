"""`stillmotion serve`: the web UI and the HTTP API on one persistent job queue."""

from __future__ import annotations

import logging
import threading

import click

from ..server.settings import Settings
from .options import engine_config_from, engine_options


def _default(name: str):
    """A Settings field's default: the flags show and pass Settings' own (one place for every default)."""
    return Settings.__dataclass_fields__[name].default


def _several_models(f):
    """serve only: --model may be given several times (generate and batch keep one)."""
    params = getattr(f, "__click_params__", [])
    for i, p in enumerate(params):
        if p.name == "model":
            params[i] = click.Option([*p.opts, *p.secondary_opts, p.name], multiple=True, type=p.type,
                                     metavar=p.metavar, help=(p.help or "") + "; repeat it to serve several models "
                                     "(the first is a request's default)")
    return f


def _lora(ctx, param, values):
    out = {}
    for v in values:
        name, sep, folder = v.partition("=")
        if not sep or not name or not folder:
            raise click.BadParameter(f"{v!r}: use NAME=FOLDER (a `stillmotion train --lora` output folder)")
        if name in out:
            raise click.BadParameter(f"{name!r} is given twice")
        from ..models.lora import lora_record

        if lora_record(folder) is None:
            raise click.BadParameter(f"{folder} is not a LoRA folder (no stillmotion.json naming a base and lora "
                                     "file); train one with `stillmotion train --lora RANK`, or put a Wan LoRA file "
                                     'in a folder with a stillmotion.json {"base": MODEL, "lora": FILE}')
        out[name] = folder
    return out


@click.command()
@_several_models
@engine_options
@click.option("--lora", "loras", multiple=True, metavar="NAME=FOLDER", callback=_lora,
              help="serve a LoRA adapter (a `stillmotion train --lora` folder); requests pick it with lora=NAME. "
                   "Repeatable")
@click.option("--affinity-passes", default=_default("affinity_passes"), show_default=True, type=click.IntRange(0),
              help="several models: a queued job lets at most this many jobs for the loaded model go first "
                   "(0: strict submission order)")
@click.option("--affinity-wait", default=_default("affinity_wait"), show_default=True, type=click.FloatRange(0),
              help="several models: ... and none once it has waited this many seconds")
@click.option("--host", default="0.0.0.0", show_default=True, help="address to listen on")
@click.option("--port", default=7860, show_default=True, type=int, help="port (UI at /, API at /v1)")
@click.option("--data-dir", default=str(_default("data_dir")), show_default=True, type=click.Path(file_okay=False),
              help="job queue (SQLite), uploads and outputs")
@click.option("--api-key", default=None, envvar="STILLMOTION_API_KEY",
              help="require `Authorization: Bearer KEY` on /v1 (env STILLMOTION_API_KEY)")
@click.option("--ui-auth", default=None, metavar="USER:PASS", help="password-protect the web UI")
@click.option("--no-ui", is_flag=True, help="serve the API only")
@click.option("--max-queue", default=_default("max_queue"), show_default=True, type=click.IntRange(1),
              help="queued+running jobs before 503")
@click.option("--max-upload-mb", default=_default("max_upload_mb"), show_default=True, type=click.FloatRange(0.01),
              help="largest upload")
@click.option("--drain-timeout", default=_default("drain_timeout"), show_default=True, type=click.FloatRange(0),
              help="seconds SIGTERM waits for the running job before stopping")
@click.option("--webhook-secret", default=None, envvar="STILLMOTION_WEBHOOK_SECRET",
              help="HMAC key for webhook signatures (default: one kept in the data dir)")
@click.option("--allow-private-urls", is_flag=True,
              help="let clients' image and webhook URLs reach private/local addresses (refused by default)")
@click.option("--keep-days", default=None, type=click.FloatRange(min=0, min_open=True),
              help="delete finished jobs and their videos this many days after they finish (default: keep)")
@click.option("--workers", default=None, type=click.IntRange(1),
              help="worker processes (default: one per visible GPU, one on a CPU)")
@click.option("--no-warmup", is_flag=True, help="skip the warm-up generation before /readyz turns ready")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug"]))
@click.option("--ray", "use_ray", is_flag=True, help="run on a Ray cluster with Ray Serve (pip install 'stillmotion[ray]')")
@click.option("--ray-address", default=None, help="with --ray: the cluster to join (default: RAY_ADDRESS, else a local one)")
@click.option("--replicas", type=click.IntRange(1), default=None, help="with --ray: a fixed number of model replicas (one GPU each)")
@click.option("--min-replicas", type=click.IntRange(0), default=1, show_default=True, help="with --ray: autoscaling floor")
@click.option("--max-replicas", type=click.IntRange(1), default=1, show_default=True, help="with --ray: autoscaling ceiling")
def serve(host, port, data_dir, api_key, ui_auth, no_ui, max_queue, max_upload_mb, drain_timeout,
          webhook_secret, allow_private_urls, keep_days, workers, no_warmup, log_level, use_ray, ray_address, replicas, min_replicas, max_replicas, loras, affinity_passes, affinity_wait, **kwargs):
    """Run the web UI (/) and the HTTP API (/v1) on one SQLite job queue.

    \b
    stillmotion serve --model svd-xt                  # 0.0.0.0:7860
    stillmotion serve --model tiny --port 7860         # offline demo on a CPU
    stillmotion serve --model svd-xt --model svd --lora wave=./my-lora
    curl -F image=@photo.jpg -F seed=42 http://HOST:7860/v1/videos
    """
    import uvicorn

    from ..server.app import create_app
    from ..server.settings import parse_ui_auth

    models = list(dict.fromkeys(kwargs.pop("model", None) or ()))
    engine = engine_config_from(kwargs, **({"model": models[0]} if models else {}))
    settings = Settings(
        data_dir=data_dir, engine=engine, models=tuple(models[1:]), loras=loras, affinity_passes=affinity_passes,
        affinity_wait=affinity_wait, warmup=not no_warmup, workers=workers,
        api_key=api_key, ui=not no_ui, ui_auth=parse_ui_auth(ui_auth), max_queue=max_queue,
        max_upload_mb=max_upload_mb, drain_timeout=drain_timeout, webhook_secret=webhook_secret, keep_days=keep_days,
        allow_private_urls=allow_private_urls,
    )
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if use_ray:  # the same app as a Ray Serve application; jobs in the store actor (stillmotion/ray/)
        from ..ray.serve import serve_forever

        return serve_forever(settings, host=host, port=port, address=ray_address, replicas=replicas,
                             min_replicas=min_replicas, max_replicas=max(max_replicas, min_replicas))
    app = create_app(settings)
    app.state.svc.lock_data_dir()  # a second server on the same folder stops here, with one line
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5)
    server = DrainingServer(config, app.state.svc)
    served = ", ".join(settings.served_models) + (f"; LoRAs {', '.join(settings.loras)}" if settings.loras else "")
    click.echo(f"stillmotion: model{'s' if settings.models else ''} {served}, data in {settings.data_dir}, "
               f"UI http://{host}:{port}/ API http://{host}:{port}/v1", err=True)
    server.run()


class DrainingServer:
    """uvicorn.Server whose first SIGTERM/SIGINT drains: /readyz turns 503 and new jobs are
    refused while the running job finishes (up to --drain-timeout); then it exits. A second
    signal exits at once (the unfinished job stays queued for the next start)."""

    def __new__(cls, config, svc):
        import uvicorn

        class _Server(uvicorn.Server):
            def handle_exit(self, sig, frame):
                if getattr(self, "_drain_started", False):
                    return super().handle_exit(sig, frame)
                self._drain_started = True
                logging.getLogger("stillmotion.server").info("signal %s: draining (up to %.0f s)", sig,
                                                             svc.settings.drain_timeout)
                threading.Thread(target=self._drain, name="drain", daemon=True).start()

            def _drain(self):
                svc.drain()
                self.should_exit = True

        return _Server(config)
