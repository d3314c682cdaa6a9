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

import functools
import inspect
import time
from pathlib import Path
from typing import Any, Optional

from ..jobs.types import STORE_METHODS, JobStore
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


def _forwarded(name: str):
    """A RayJobStore method that runs JobStore.`name` in the store actor: the Protocol's name, docstring and
    signature (inspect.signature follows __wrapped__), its arguments checked here as SQLiteJobStore would."""
    proto = getattr(JobStore, name)
    signature = inspect.signature(proto)

    @functools.wraps(proto)
    def method(self, *args, **kwargs):
        signature.bind(self, *args, **kwargs)  # a wrong call raises TypeError here, not inside the actor
        return self._call(name, *args, **kwargs)

    method.__qualname__ = f"RayJobStore.{name}"
    return method


def _forwards_store_methods(cls):
    """Give `cls` every JobStore method it does not define itself, each forwarded to the store actor
    (jobs.types.STORE_METHODS: the Protocol is the one list of them)."""
    for name in sorted(STORE_METHODS - set(vars(cls))):
        setattr(cls, name, _forwarded(name))
    return cls


@_forwards_store_methods
class RayJobStore:
    """The JobStore (jobs.types) whose every method runs in the store actor: `store.get(id)`,
    `store.claim(worker)`, ... Errors raised there (NotFound, QueueFull, ...) are raised here unchanged.
    The methods are made from the JobStore Protocol when the class is created (_forwards_store_methods):
    a method added to the Protocol is forwarded with no change here.

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

    def close(self) -> None:
        pass  # the actor keeps the file open for everyone

    # the cluster's own
    def reap(self, stale_after: float = STALE_AFTER_S) -> list[str]:
        import ray

        return ray.get(self.actor.reap.remote(stale_after))
