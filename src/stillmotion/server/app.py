"""create_app(settings): the FastAPI app with the /v1 API, health, metrics and the
Gradio UI mounted at /. Nothing happens at import time; the worker process and
the webhook thread start in the app's lifespan and stop (draining) with it.
"""

from __future__ import annotations

import logging
import shutil
import statistics
import threading
import time
from contextlib import asynccontextmanager
from typing import Optional

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import StillmotionError
from ..jobs.store import SQLiteJobStore
from ..jobs.types import JobStore, WorkerPool
from .settings import Settings
from .views import HANDLER_CODES, OTHER_HTTP_CODE, error_json, error_response

log = logging.getLogger("stillmotion.server")

SWEEP_EVERY_S = 600.0  # how often finished jobs past --keep-days are deleted


class Services:
    """What the routes and the UI share: settings, the store, the worker pool, the drain flag.

    The pool (a jobs.types.WorkerPool) runs the jobs: by default a Supervisor of
    worker processes on this machine, made in start(); `stillmotion serve --ray`
    passes its own (model replicas reading the same store), and so can a test
    that wants an app without workers.
    """

    def __init__(self, settings: Settings, store: Optional[JobStore] = None, pool: Optional[WorkerPool] = None,
                 webhooks: bool = True):
        self.settings = settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.store: JobStore = store if store is not None else SQLiteJobStore(settings.db_path)
        self.model_entries: dict = {}
        self.entry(settings.engine.model)  # read now: a default model that is not one fails at start
        self.pool: Optional[WorkerPool] = pool
        self.send_webhooks = webhooks
        self.webhooks = None
        self.draining = False
        self._stop_sweeps = threading.Event()

    def start(self) -> None:
        from .supervisor import Supervisor
        from .views import job_view
        from .webhooks import WebhookSender, load_or_create_secret

        if self.pool is None:  # worker processes on this machine
            self.lock_data_dir()
            self.pool = Supervisor(self.settings, self.store)
        self.pool.start()
        if self.send_webhooks:
            secret = self.settings.webhook_secret or load_or_create_secret(self.settings.data_dir)
            self.webhooks = WebhookSender(self.store, secret, job_view, max_attempts=self.settings.webhook_max_attempts,
                                          public_only=not self.settings.allow_private_urls)
            self.webhooks.start()
        if self.settings.keep_days is not None:
            threading.Thread(target=self._sweep_forever, name="retention", daemon=True).start()

    def sweep(self, now: Optional[float] = None) -> list[str]:
        """Delete finished jobs older than --keep-days, with their files; returns their ids."""
        from ..errors import NotFound
        from ..jobs.layout import job_dir

        cutoff = (time.time() if now is None else now) - self.settings.keep_days * 86400
        gone = []
        for job_id in self.store.finished_before(cutoff):
            try:
                self.store.delete(job_id)
            except NotFound:  # deleted meanwhile (by a client, or another API replica's sweep)
                continue
            shutil.rmtree(job_dir(self.settings.data_dir, job_id), ignore_errors=True)
            gone.append(job_id)
        return gone

    def _sweep_forever(self) -> None:
        while True:
            try:
                gone = self.sweep()
                if gone:
                    log.info("deleted %d job(s) finished over %g day(s) ago", len(gone), self.settings.keep_days)
            except Exception:  # noqa: BLE001 - a busy store must not end the sweeps
                log.exception("retention sweep failed")
            if self._stop_sweeps.wait(SWEEP_EVERY_S):
                return

    def lock_data_dir(self) -> None:
        """One server per data folder: two would both re-queue and run the same jobs."""
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock
            return
        from ..errors import Conflict

        if getattr(self, "_lock_file", None) is not None:
            return
        self._lock_file = open(self.settings.data_dir / "server.lock", "w")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock_file.close()
            self._lock_file = None
            raise Conflict(f"Another stillmotion server is already using {self.settings.data_dir}; "
                           "stop it or pass another --data-dir.") from None

    def drain(self, timeout: Optional[float] = None) -> bool:
        """Stop taking jobs; let the running one finish (up to the drain timeout)."""
        self.draining = True
        ok = True
        if self.pool is not None:
            ok = self.pool.drain(self.settings.drain_timeout if timeout is None else timeout)
        return ok

    def stop(self) -> None:
        self._stop_sweeps.set()
        if not self.draining:
            self.drain()
        if self.webhooks is not None:
            self.webhooks.stop()

    def ready(self) -> tuple[bool, str]:
        if self.draining:
            return False, "draining: finishing the running job before shutting down"
        if self.pool is None:
            return False, "starting: no worker yet"
        return self.pool.ready()

    def retry_after(self) -> int:
        """Seconds a client should wait when the queue is full: about one job's time."""
        recent = self.store.recent_durations()
        return int(min(300, max(1, round(statistics.median(recent)) if recent else 5)))

    @property
    def model_entry(self):
        """The registry entry of the default model."""
        return self.entry(self.settings.engine.model)

    def entry(self, model: str):
        """The entry (defaults) a served model runs with, as its worker's Engine will (families.run_entry)."""
        if model not in self.model_entries:
            from ..families import run_entry
            from ..models.resolve import entry_for

            self.model_entries[model] = run_entry(entry_for(model))
        return self.model_entries[model]

    def models_view(self, workers: list[dict]) -> dict:
        """/readyz's view of the served models, from the pool's `workers` (describe()): which are loaded
        where, and the swaps so far."""
        loaded = {m for w in workers for m in (w.get("loaded") or [w.get("model")] if w.get("alive") else [])}
        served = self.settings.served_models
        return {
            "models": [{"name": m, "default": i == 0, "loaded": m in loaded} for i, m in enumerate(served)],
            "loras": sorted(self.settings.loras),
            "loaded_model": next((w.get("model") for w in workers if w.get("model")), None),
            "swaps": sum(int(w.get("swaps") or 0) for w in workers),
            "swap_seconds": round(sum(float(w.get("swap_seconds") or 0) for w in workers), 3),
        }


def create_app(settings: Optional[Settings] = None, *, store: Optional[JobStore] = None,
               pool: Optional[WorkerPool] = None, webhooks: bool = True) -> FastAPI:
    """The app. `store`, `pool` and `webhooks` are for hosts that run the jobs elsewhere
    (stillmotion.ray.serve) or not at all (a test of the API alone): another JobStore,
    another WorkerPool, and no webhook thread here when the host sends them once for
    all replicas."""
    settings = settings or Settings()
    svc = Services(settings, store=store, pool=pool, webhooks=webhooks)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        import asyncio

        await asyncio.to_thread(svc.start)
        try:
            yield
        finally:
            await asyncio.to_thread(svc.stop)

    from ..version import __version__

    app = FastAPI(
        title="stillmotion",
        version=__version__,
        description="Still image -> short video with Stable Video Diffusion. Jobs live in one SQLite queue "
        "shared with the web UI.",
        lifespan=lifespan,
    )
    app.state.svc = svc
    from .contract import install

    install(app)
    _error_handlers(app)
    _health_routes(app, svc)

    from .api import router

    app.include_router(router)
    if settings.ui:
        import gradio as gr

        from .ui import build_ui

        blocks = build_ui(svc)
        gr.mount_gradio_app(app, blocks, path="", auth=settings.ui_auth, allowed_paths=[str(settings.data_dir)],
                            footer_links=["api"])
    return app


def _error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StillmotionError)
    async def _ours(request: Request, exc: StillmotionError):
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        from ..spec import format_validation_error

        return error_json(422, "invalid_input", format_validation_error(exc, "request"))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        code = HANDLER_CODES.get(exc.status_code, OTHER_HTTP_CODE) if exc.status_code < 500 else OTHER_HTTP_CODE
        return error_json(exc.status_code, code, str(exc.detail), headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_json(500, "internal_error", f"Unexpected {type(exc).__name__}; see the server log.")


def _health_routes(app: FastAPI, svc: Services) -> None:
    from .metrics import make_registry, render

    registry = make_registry(svc)

    @app.get("/healthz", tags=["health"], summary="The process is alive", operation_id="healthz")
    def healthz():
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], summary="Model loaded and warmed; 503 until then and while draining",
             operation_id="readyz")
    def readyz():
        ok, why = svc.ready()
        body = {"status": "ready" if ok else "unavailable", "detail": why, "model": svc.settings.engine.model}
        workers = svc.pool.describe() if svc.pool is not None else []
        if svc.pool is not None:
            body["workers"] = workers
            body["worker"] = workers[0] if workers else None
        body.update(svc.models_view(workers))
        return JSONResponse(body, status_code=200 if ok else 503, headers=None if ok else {"Retry-After": "5"})

    @app.get("/metrics", tags=["health"], summary="Prometheus metrics", operation_id="metrics")
    def metrics():
        return Response(render(registry), media_type="text/plain; version=0.0.4; charset=utf-8")
