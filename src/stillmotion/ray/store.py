"""The job store on a Ray cluster: one named, detached actor that owns the SQLite file.

Why this and not something else:

- The API replicas and the model replicas are separate processes, possibly on
  separate machines, and they must agree on every job's state. SQLite in WAL
  mode is only safe on one machine (its shared-memory index does not work over
  NFS or other network file systems), so the file may not simply sit on a
  shared volume.
- Ray already gives every node a way to reach one process by name: a named
  actor. `StoreActor` owns the same `jobs.store.SQLiteJobStore` (the same
  schema, the same atomic claim / finish / recover transactions) on the head
  node's local disk, and every caller goes through `RayJobStore`, which has the
  same methods (both are a `jobs.types.JobStore`). No new wire protocol, no
  second database to install, and the /v1 contract cannot drift from the
  one-machine server.
- `lifetime="detached"` and `max_restarts=-1`: the store outlives the driver
  that created it (and a redeploy of the Serve app); if its process dies Ray
  restarts it on the head node and it reopens the same file. The file lives
  under `--data-dir` (or `queue_dir`) on the head node's local disk.

For a service with many API replicas on many nodes, an external database a
user already runs (Postgres) would scale further; the seam is the same
JobStore protocol.

The actor also runs the things that must happen exactly once per cluster:
webhook delivery, and `reap()`, which puts back the jobs of model replicas that
stopped heartbeating (killed, node lost) so another replica runs them.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Optional

from ..jobs.types import STORE_METHODS, Job
from . import require_ray

STORE_NAME = "stillmotion-store"
NAMESPACE = "stillmotion"
STALE_AFTER_S = 10.0  # a model replica silent this long is taken for dead and its job goes back to the queue


class StoreActor:
    """The actor's class (made remote in `get_or_create_store`). Thread-safe: SQLiteJobStore opens one connection per thread."""

    def __init__(self, data_dir: str, webhook_secret: Optional[str] = None, webhook_max_attempts: int = 8,
                 queue_dir: Optional[str] = None, public_only: bool = True):
        from ..jobs.store import SQLiteJobStore

        self.data_dir = Path(data_dir)
        self.store = SQLiteJobStore(Path(queue_dir or data_dir) / "jobs.sqlite3")
        self.webhooks = None
        self._start_webhooks(webhook_secret, webhook_max_attempts, public_only)

    def _start_webhooks(self, secret, max_attempts, public_only) -> None:
        try:
            from ..server.views import job_view
            from ..server.webhooks import WebhookSender, load_or_create_secret
        except ImportError:  # the server part is not installed: no webhooks
            return
        secret = secret or load_or_create_secret(self.data_dir)
        self.webhooks = WebhookSender(self.store, secret, job_view, max_attempts=max_attempts, public_only=public_only)
        self.webhooks.start()

    def call(self, method: str, args: tuple = (), kwargs: Optional[dict] = None) -> tuple[str, Any]:
        """Run one JobStore method. Our own errors come back as values so the caller re-raises them unchanged."""
        from ..errors import StillmotionError

        if method not in STORE_METHODS:
            return "err", AttributeError(f"JobStore has no method {method!r}")
        try:
            return "ok", getattr(self.store, method)(*args, **(kwargs or {}))
        except StillmotionError as e:
            return "err", e

    def reap(self, stale_after: float = STALE_AFTER_S) -> list[str]:
        """Jobs of replicas whose heartbeat stopped go back to the queue (or fail after their retry)."""
        now = time.time()
        touched = []
        for w in self.store.workers():
            if w["state"] in ("stopped", "dead", "failed") or now - (w["heartbeat_at"] or 0) < stale_after:
                continue
            touched += self.store.recover(w["id"], reason=f"Ray replica {w['id']} stopped answering")
            self.store.worker_state(w["id"], "dead")
        return touched

    def ping(self) -> str:
        return str(self.data_dir)


def get_or_create_store(settings, queue_dir=None):
    """The store actor's handle for a server's Settings; created on the head node the first time (later
    calls get the same one).

    The SQLite file goes in `queue_dir` on the head node's local disk (default: `settings.data_dir`, right
    on one machine; on a cluster whose data_dir is a network volume, give a local folder)."""
    ray = require_ray()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    remote = ray.remote(StoreActor).options(
        name=STORE_NAME,
        namespace=NAMESPACE,
        lifetime="detached",
        get_if_exists=True,
        max_restarts=-1,
        max_task_retries=3,
        max_concurrency=32,
        num_cpus=0,
        resources={"node:__internal_head__": 0.001},  # the SQLite file stays on the head node's local disk
    )
    actor = remote.remote(str(settings.data_dir), settings.webhook_secret, settings.webhook_max_attempts,
                          str(Path(queue_dir).expanduser().absolute()) if queue_dir else None,
                          not settings.allow_private_urls)
    ray.get(actor.ping.remote())
    return actor


def get_store_actor():
    ray = require_ray()
    return ray.get_actor(STORE_NAME, namespace=NAMESPACE)


class RayJobStore:
    """The JobStore (jobs.types) whose every method runs in the store actor: `store.get(id)`,
    `store.claim(worker)`, ... Errors raised there (NotFound, QueueFull, ...) are raised here unchanged.

    Picklable (it carries only the actor's name), so it can be handed to replicas.
    """

    def __init__(self, actor=None):
        self._actor = actor

    @property
    def actor(self):
        if self._actor is None:
            self._actor = get_store_actor()
        return self._actor

    def __getstate__(self):
        return {}

    def __setstate__(self, state):
        self._actor = None

    def _call(self, method: str, *args, **kwargs):
        import ray

        kind, value = ray.get(self.actor.call.remote(method, args, kwargs))
        if kind == "err":
            raise value
        return value

    # API side
    def create(self, spec: dict, *, job_id: Optional[str] = None, model: Optional[str] = None, source: str = "api",
               input_name: Optional[str] = None, input_source: Optional[str] = None,
               idempotency_key: Optional[str] = None, request_hash: Optional[str] = None,
               webhook: Optional[str] = None, max_queue: Optional[int] = None) -> tuple[Job, bool]:
        return self._call("create", spec, job_id=job_id, model=model, source=source, input_name=input_name,
                          input_source=input_source, idempotency_key=idempotency_key, request_hash=request_hash,
                          webhook=webhook, max_queue=max_queue)

    def get(self, job_id: str) -> Job:
        return self._call("get", job_id)

    def list(self, *, status: Optional[str] = None, limit: int = 20, before_seq: Optional[int] = None,
             source: Optional[str] = None) -> list[Job]:
        return self._call("list", status=status, limit=limit, before_seq=before_seq, source=source)

    def counts(self) -> dict[str, int]:
        return self._call("counts")

    def queue_position(self, job: Job) -> Optional[int]:
        return self._call("queue_position", job)

    def request_cancel(self, job_id: str) -> Job:
        return self._call("request_cancel", job_id)

    def delete(self, job_id: str) -> Job:
        return self._call("delete", job_id)

    def finished_before(self, cutoff: float, limit: int = 500) -> list[str]:
        return self._call("finished_before", cutoff, limit)

    # worker side
    def claim(self, worker: str) -> Optional[Job]:
        return self._call("claim", worker)

    def progress(self, job_id: str, worker: str, *, fraction: float, stage: str, step: int, total: int,
                 message: str = "") -> bool:
        return self._call("progress", job_id, worker, fraction=fraction, stage=stage, step=step, total=total,
                          message=message)

    def cancel_requested(self, job_id: str) -> bool:
        return self._call("cancel_requested", job_id)

    def finish(self, job_id: str, worker: str, status: str, *, output: Optional[dict] = None,
               error: Optional[dict] = None, timings: Optional[dict] = None, spec: Optional[dict] = None) -> bool:
        return self._call("finish", job_id, worker, status, output=output, error=error, timings=timings, spec=spec)

    def recover(self, worker: Optional[str] = None, *, reason: str, count_attempt: bool = True) -> list[str]:
        return self._call("recover", worker, reason=reason, count_attempt=count_attempt)

    # the workers table
    def worker_state(self, worker: str, state: str, *, pid: Optional[int] = None, model: Optional[str] = None,
                     info: Optional[dict] = None) -> None:
        return self._call("worker_state", worker, state, pid=pid, model=model, info=info)

    def workers(self) -> list[dict[str, Any]]:
        return self._call("workers")

    def forget_workers(self) -> None:
        return self._call("forget_workers")

    # webhooks and metrics
    def webhooks_due(self, now: float, limit: int = 20) -> list[Job]:
        return self._call("webhooks_due", now, limit)

    def webhook_result(self, job_id: str, state: str, attempts: int, next_at: Optional[float]) -> None:
        return self._call("webhook_result", job_id, state, attempts, next_at)

    def finished_timings(self) -> list[tuple[float, Optional[dict]]]:
        return self._call("finished_timings")

    def recent_durations(self, n: int = 10) -> list[float]:
        return self._call("recent_durations", n)

    def close(self) -> None:
        pass  # the actor keeps the file open for everyone

    # the cluster's own
    def reap(self, stale_after: float = STALE_AFTER_S) -> list[str]:
        import ray

        return ray.get(self.actor.reap.remote(stale_after))
