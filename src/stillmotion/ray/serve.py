"""`stillmotion serve --ray`: the same /v1 app as a Ray Serve application.

    HTTP -> Serve proxy -> Ingress (N replicas, 0 CPU)     create_app(settings): the same routes,
                              |                            reading and writing the store actor
                              v
                          StoreActor (1, head node)        the SQLite job queue (store.py)
                              ^
                          Dispatcher (1 replica, 0 CPU)    one `run()` request per queued job
                              |
                              v
                          ModelWorker (min..max replicas)  Engine loaded once; `run()` claims the
                          num_gpus=1 (0 on CPU),           oldest queued job and runs it
                          max_ongoing_requests=1

Why a dispatcher: Serve autoscales on the requests waiting for a deployment.
Turning each queued job into one waiting `run()` request makes the model
deployment's queue *be* the job queue, so `--min-replicas/--max-replicas`
autoscaling follows queue length, while the jobs themselves stay in the store
(which survives any replica). A `run()` that gets no job (already taken)
returns at once, so over-dispatching costs nothing.

Faults: a model replica that dies stops heartbeating; the store's `reap()`
puts its job back in the queue (retried once, as on one machine), the
dispatcher sends a new `run()`, and Serve replaces the replica. A replica whose
`check_health` fails (engine gone, store unreachable, or declared dead by the
reaper because its heartbeat stalled) is replaced by Serve.
Graceful shutdown: Serve lets an ongoing `run()` (the running job) finish
within `graceful_shutdown_timeout_s` (--drain-timeout); queued jobs stay in the
store for the next start. /readyz is 503 until a model replica is ready.

The job files (uploads, videos) live under --data-dir, which on a multi-node
cluster must be a volume every node mounts (see deploy/kuberay-rayservice.yaml).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Optional

from ..jobs.types import JobStore
from . import require_ray
from .store import STALE_AFTER_S, RayJobStore, get_or_create_store

log = logging.getLogger("stillmotion.ray")

APP_NAME = "stillmotion"
DISPATCH_POLL_S = 0.1
REAP_EVERY_S = 2.0


# --------------------------------------------------------------------------- the model replicas


class ModelWorker:
    """One Engine per replica. `run()` takes the oldest queued job from the store and runs it to the end."""

    def __init__(self, settings):
        from ray import serve

        from ..jobs.worker import JobWorker

        replica = serve.get_replica_context().replica_id.unique_id
        self.worker = JobWorker(settings.data_dir, f"ray-{replica}", settings.engine, store=RayJobStore(),
                                warmup=settings.warmup)
        # beating while the model loads: a load slower than the store's STALE_AFTER_S (a real SVD on a
        # busy node) must not get the replica declared dead before it ever served
        self.beat = self.worker.start_heartbeat()
        self.worker.load()  # engine + warm-up; the store records this replica as ready

    def run(self) -> Optional[str]:
        if self.worker.stop.is_set() or self._declared_dead():
            return None
        job = self.worker.claim_next()
        if job is None:
            return None
        self.worker.run_job(job)
        return job.id

    def _declared_dead(self) -> bool:
        """The store's reaper took this replica for dead (its heartbeat stalled) and re-queued its job:
        it must take nothing more, and its health check fails so that Serve replaces it."""
        me = next((w for w in self.worker.store.workers() if w["id"] == self.worker.worker_id), None)
        return me is not None and me["state"] == "dead"

    def check_health(self) -> None:
        """Serve calls this every few seconds; raising makes Serve replace the replica."""
        if self.worker.engine is None or not self.beat.is_alive():
            raise RuntimeError("the engine or the heartbeat thread is gone")
        if self._declared_dead():  # also proves the store actor answers
            self.worker.stop.set()
            raise RuntimeError(f"the job store declared {self.worker.worker_id} dead; a new replica takes its place")

    def __del__(self):
        # Serve waits for the ongoing run() (graceful_shutdown_timeout_s) before this; take nothing new.
        try:
            self.worker.stop.set()
            self.worker.store.worker_state(self.worker.worker_id, "stopped")
        except Exception:  # noqa: BLE001 - shutting down; the store's reap() covers the rest
            pass


class ReplicaPool:
    """The model replicas as the API sees them (a jobs.types.WorkerPool): ready, described and
    counted from their rows in the store; Serve starts and stops them."""

    def __init__(self, store: JobStore, min_replicas: int = 1):
        self.store = store
        self.min_replicas = min_replicas

    def live(self) -> list[dict]:
        now = time.time()
        return [w for w in self.store.workers()
                if w["state"] in ("loading", "ready", "draining") and now - (w["heartbeat_at"] or 0) < STALE_AFTER_S]

    def ready(self) -> tuple[bool, str]:  # (Services.ready answers "draining" before asking)
        n = sum(w["state"] == "ready" for w in self.live())
        if n:
            return True, f"{n} model replica(s) ready"
        if self.min_replicas == 0:
            return True, "no model replica yet; one starts with the first job (min_replicas=0)"
        return False, "waiting for a model replica to load the model"

    def describe(self) -> list[dict]:
        return [{"id": w["id"], "pid": w["pid"], "device": (w["info"] or {}).get("device", "auto"), "alive": True,
                 "state": w["state"], "restarts": 0,
                 **{k: v for k, v in (w["info"] or {}).items() if k != "defaults"}} for w in self.live()]

    @property
    def restarts(self) -> int:
        """Replicas the store declared dead (Serve replaced each)."""
        return sum(w["state"] == "dead" for w in self.store.workers())

    def start(self) -> None:
        pass  # Serve starts the replicas

    def notify(self) -> None:
        pass  # the dispatcher polls the store

    def drain(self, timeout: float) -> bool:
        return True  # Serve drains the replicas (graceful_shutdown_timeout_s)


# --------------------------------------------------------------------------- the dispatcher


class Dispatcher:
    """Keeps one waiting `ModelWorker.run()` per queued job, and reaps dead replicas' jobs."""

    def __init__(self, worker_handle):
        self.worker = worker_handle
        self.store = RayJobStore()
        self.inflight: set = set()
        self.errors = 0
        try:
            self.task = asyncio.get_running_loop().create_task(self._loop())
        except RuntimeError:  # the constructor ran outside the replica's event loop: give the loop a thread
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="dispatch", daemon=True).start()
            self.task = asyncio.run_coroutine_threadsafe(self._loop(), loop)

    async def _loop(self) -> None:
        last_reap = 0.0
        while True:
            try:
                if time.monotonic() - last_reap > REAP_EVERY_S:
                    last_reap = time.monotonic()
                    await self.store.actor.reap.remote(STALE_AFTER_S)
                kind, counts = await self.store.actor.call.remote("counts")
                want = counts["queued"] + counts["running"] - len(self.inflight)
                for _ in range(max(0, want)):
                    t = asyncio.ensure_future(self._run_one())
                    self.inflight.add(t)
                    t.add_done_callback(self.inflight.discard)
            except Exception:  # noqa: BLE001 - the store may be restarting; try again
                log.exception("dispatch loop")
            await asyncio.sleep(DISPATCH_POLL_S)

    async def _run_one(self) -> None:
        try:
            await self.worker.run.remote()
        except Exception as e:  # noqa: BLE001 - a replica died mid-job: reap() requeues it, the loop redispatches
            self.errors += 1
            log.warning("a model replica failed a run(): %s", type(e).__name__)
            await asyncio.sleep(1.0)

    def check_health(self) -> None:
        if self.task.done():
            raise RuntimeError("the dispatch loop ended")

    def stats(self) -> dict:
        return {"inflight": len(self.inflight), "errors": self.errors}


# --------------------------------------------------------------------------- the ingress


class Ingress:
    """The FastAPI app of the one-machine server, built in each replica on the store actor."""

    def __init__(self, settings, dispatcher, min_replicas: int = 1):
        self.settings = settings
        self.dispatcher = dispatcher
        self.min_replicas = min_replicas

    def __serve_build_asgi_app__(self):
        return build_api(self.settings, self.min_replicas)

    def check_health(self) -> None:
        RayJobStore().counts()  # the store actor answers


def build_api(settings, min_replicas: int = 1):
    """create_app(settings) on the store actor, with the model replicas as its worker pool and no webhook
    thread (the store actor sends webhooks once for the whole cluster)."""
    from ..server.app import create_app

    store = RayJobStore()
    return create_app(settings, store=store, pool=ReplicaPool(store, min_replicas), webhooks=False)


# --------------------------------------------------------------------------- putting it together


def build_app(settings, *, replicas: Optional[int] = None, min_replicas: int = 1, max_replicas: int = 1,
              gpus_per_replica: Optional[float] = None, cpus_per_replica: float = 1.0, ingress_replicas: int = 1):
    """The Serve application (not yet running): Ingress -> Dispatcher -> ModelWorker.

    `replicas` fixes the model replica count; otherwise it autoscales between min and max on queued jobs.
    """
    ray = require_ray()
    from ray import serve

    if gpus_per_replica is None:
        on_gpu = settings.engine.device != "cpu" and ray.cluster_resources().get("GPU", 0) > 0
        gpus_per_replica = 1 if on_gpu else 0
    if not gpus_per_replica and settings.engine.device == "auto":
        settings.engine = settings.engine.replace(device="cpu")
    scale = {"num_replicas": replicas} if replicas else {"autoscaling_config": {
        "min_replicas": min_replicas, "initial_replicas": max(1, min_replicas), "max_replicas": max_replicas,
        "target_ongoing_requests": 1, "upscale_delay_s": 5, "downscale_delay_s": 120}}
    worker = serve.deployment(
        ModelWorker, name="ModelWorker", max_ongoing_requests=1, max_queued_requests=-1,
        ray_actor_options={"num_gpus": gpus_per_replica, "num_cpus": 0 if gpus_per_replica else cpus_per_replica},
        health_check_period_s=5, health_check_timeout_s=30,
        graceful_shutdown_wait_loop_s=1, graceful_shutdown_timeout_s=settings.drain_timeout, **scale)
    dispatcher = serve.deployment(Dispatcher, name="Dispatcher", num_replicas=1,
                                  ray_actor_options={"num_cpus": 0}, max_ongoing_requests=100)
    ingress = serve.deployment(serve.ingress()(Ingress), name="Ingress", num_replicas=ingress_replicas,
                               ray_actor_options={"num_cpus": 0}, max_ongoing_requests=200,
                               graceful_shutdown_timeout_s=settings.drain_timeout)
    floor = replicas or min_replicas
    return ingress.bind(settings, dispatcher.bind(worker.bind(settings)), floor)


def start(settings, *, host: str = "0.0.0.0", port: int = 7860, address: Optional[str] = None,
          blocking: bool = False, queue_dir=None, **scaling):
    """Connect to (or start) Ray, create the store actor, and run the app on HTTP host:port."""
    if settings.models or settings.loras:  # one model per replica for now (issue 15: several models per server)
        from ..errors import InvalidInput

        raise InvalidInput("--ray serves one model without LoRAs for now; drop the extra --model/--lora flags, "
                           "or serve several models without --ray.")
    ray = require_ray()
    from ray import serve

    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, namespace="stillmotion")
    get_or_create_store(settings, queue_dir=queue_dir)
    serve.start(http_options={"host": host, "port": port})
    serve.run(build_app(settings, **scaling), name=APP_NAME, route_prefix="/", blocking=blocking)


def shutdown() -> None:
    """Stop the Serve app (running jobs finish within the drain timeout); queued jobs stay in the store."""
    from ray import serve
    from ray.serve.exceptions import RayServeException

    try:
        serve.delete(APP_NAME)
    except (RayServeException, ValueError):
        pass  # Serve is not running (any more): nothing to stop


def app_builder(args: dict):
    """For config-driven deploys (`serve run stillmotion.ray.serve:app_builder model=svd-xt ...`, KubeRay's
    serveConfigV2 `import_path`): args are EngineConfig fields (model, device, threads, ...), Settings
    fields, and replicas / min_replicas / max_replicas / gpus_per_replica. Creates the store actor if it is not
    there yet."""
    from ..engine.config import EngineConfig
    from ..server.settings import Settings

    args = dict(args or {})
    queue_dir = args.pop("queue_dir", None)
    engine = {k: args.pop(k) for k in list(args) if k in EngineConfig.model_fields}
    scaling = {k: _number(args.pop(k)) for k in ("replicas", "min_replicas", "max_replicas", "gpus_per_replica",
                                                  "cpus_per_replica", "ingress_replicas") if k in args}
    for k in ("max_queue", "webhook_max_attempts"):
        if k in args:
            args[k] = int(args[k])
    for k in ("max_upload_mb", "drain_timeout", "keep_days"):
        if k in args:
            args[k] = float(args[k])
    for k in ("ui", "warmup", "allow_private_urls"):
        if k in args and isinstance(args[k], str):
            args[k] = args[k].lower() in ("1", "true", "yes")
    settings = Settings(engine=EngineConfig.build(**engine), **args)
    get_or_create_store(settings, queue_dir=queue_dir)
    return build_app(settings, **scaling)


def _number(v):
    f = float(v)
    return int(f) if f.is_integer() else f


def serve_forever(settings, *, host: str = "0.0.0.0", port: int = 7860, address: Optional[str] = None,
                  **scaling) -> None:
    """`stillmotion serve --ray`: deploy, print where, and on SIGINT/SIGTERM delete the app gracefully
    (running jobs finish within --drain-timeout; queued ones stay in the store for the next start)."""
    import signal

    start(settings, host=host, port=port, address=address, **scaling)
    log.warning("stillmotion on Ray: UI/API at http://%s:%d/ (data in %s)", host, port, settings.data_dir)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(1.0):
        pass
    log.warning("draining: running jobs finish (up to %.0f s), queued jobs stay queued", settings.drain_timeout)
    # In a terminal, Ctrl-C also reaches a local cluster's own processes; never hang on a controller that is gone.
    done = threading.Thread(target=shutdown, name="serve-delete", daemon=True)
    done.start()
    done.join(settings.drain_timeout + 15)
