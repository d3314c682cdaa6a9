"""The job queue's types: a Job as the store hands it out, and the two seams of the queue.

    Job         one row of the queue, typed (the API, the UI, the worker and webhooks read these)
    JobStore    where jobs live: jobs.store.SQLiteJobStore on one machine,
                ray.store.RayJobStore (the same file behind a Ray actor) on a cluster
    WorkerPool  what runs them: server.supervisor.Supervisor (worker processes on this
                machine) or ray.serve.ReplicaPool (model replicas on Ray Serve)
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Optional, Protocol

AFFINITY_PASSES = 4  # a queued job lets at most this many jobs for the loaded model go before it
AFFINITY_WAIT_S = 60.0  # ... and none once it has waited this long


@dataclass(frozen=True)
class Job:
    """One job, as stored. `spec` is the resolved GenerationSpec (JSON); `output` and `timings` are set
    when it succeeded."""

    seq: int
    id: str
    status: str  # one of store.STATES
    created_at: float
    spec: dict
    source: str = "api"
    model: Optional[str] = None
    input_name: Optional[str] = None
    input_source: Optional[str] = None
    idempotency_key: Optional[str] = None
    request_hash: Optional[str] = None
    webhook: Optional[str] = None
    started_at: Optional[float] = None
    finished_at: Optional[float] = None
    heartbeat_at: Optional[float] = None
    progress: float = 0.0
    stage: Optional[str] = None
    step: Optional[int] = None
    total: Optional[int] = None
    message: Optional[str] = None
    attempts: int = 0
    worker: Optional[str] = None
    cancel_requested: bool = False
    error_code: Optional[str] = None
    error_message: Optional[str] = None
    output: Optional[dict] = None
    timings: Optional[dict] = None
    webhook_state: Optional[str] = None
    webhook_attempts: int = 0
    webhook_next_at: Optional[float] = None
    passed: int = 0  # times a job for the worker's loaded model went before it (store.claim's affinity)


class JobStore(Protocol):
    """The job queue every front end and worker shares. Every transition out of `running` checks that
    the job is still running for that worker, so a stale worker can never finish a job twice."""

    # API side
    def create(self, spec: dict, *, job_id: Optional[str] = None, model: Optional[str] = None, source: str = "api",
               input_name: Optional[str] = None, input_source: Optional[str] = None,
               idempotency_key: Optional[str] = None, request_hash: Optional[str] = None,
               webhook: Optional[str] = None, max_queue: Optional[int] = None) -> tuple[Job, bool]: ...
    def get(self, job_id: str) -> Job: ...
    def list(self, *, status: Optional[str] = None, limit: int = 20, before_seq: Optional[int] = None,
             source: Optional[str] = None) -> list[Job]: ...
    def counts(self) -> dict[str, int]: ...
    def queue_position(self, job: Job) -> Optional[int]: ...
    def request_cancel(self, job_id: str) -> Job: ...
    def delete(self, job_id: str) -> Job: ...
    def finished_before(self, cutoff: float, limit: int = 500) -> list[str]: ...

    # worker side
    def claim(self, worker: str) -> Optional[Job]: ...
    def claim_preferring(self, worker: str, prefer: Optional[str] = None, *, default_model: Optional[str] = None,
                         max_wait: float = AFFINITY_WAIT_S, max_passed: int = AFFINITY_PASSES) -> Optional[Job]:
        """claim() with affinity for the model `prefer` (the worker's loaded one), bounded by max_wait and
        max_passed; jobs with no model are `default_model`'s."""
        ...
    def progress(self, job_id: str, worker: str, *, fraction: float, stage: str, step: int, total: int,
                 message: str = "") -> bool: ...
    def cancel_requested(self, job_id: str) -> bool: ...
    def finish(self, job_id: str, worker: str, status: str, *, output: Optional[dict] = None,
               error: Optional[dict] = None, timings: Optional[dict] = None, spec: Optional[dict] = None) -> bool: ...
    def recover(self, worker: Optional[str] = None, *, reason: str, count_attempt: bool = True) -> list[str]: ...

    # the workers table
    def worker_state(self, worker: str, state: str, *, pid: Optional[int] = None, model: Optional[str] = None,
                     info: Optional[dict] = None) -> None: ...
    def workers(self) -> list[dict[str, Any]]: ...
    def forget_workers(self) -> None: ...

    # webhooks and metrics
    def webhooks_due(self, now: float, limit: int = 20) -> list[Job]: ...
    def webhook_result(self, job_id: str, state: str, attempts: int, next_at: Optional[float]) -> None: ...
    def finished_timings(self) -> list[tuple[float, Optional[dict]]]: ...
    def recent_durations(self, n: int = 10) -> list[float]: ...

    def close(self) -> None: ...


class WorkerPool(Protocol):
    """The processes or replicas that run the jobs, as the API sees them (server.app.Services)."""

    def start(self) -> None: ...
    def drain(self, timeout: float) -> bool:
        """Stop taking jobs, let running ones finish (up to `timeout` s); True when all finished in time."""
        ...
    def ready(self) -> tuple[bool, str]:
        """(True, why) once at least one worker has its model loaded; else (False, the reason)."""
        ...
    def describe(self) -> list[dict[str, Any]]:
        """One dict per worker for /readyz and /metrics: id, pid, device, alive, state, restarts, ..."""
        ...
    def notify(self) -> None:
        """A job was queued: wake idle workers now (may do nothing)."""
        ...
    @property
    def restarts(self) -> int: ...


STORE_METHODS: frozenset[str] = frozenset(
    name for name, member in vars(JobStore).items() if not name.startswith("_") and inspect.isfunction(member))
"""The JobStore's methods, read off the Protocol: what RayJobStore forwards and its store actor runs."""
