"""The job queue: one SQLite file (WAL) that the API, the UI and the worker share.

The store is the single source of truth. The API inserts jobs, the worker
claims them (one atomic UPDATE ... WHERE status='queued', in submission order;
with several models, jobs for the worker's loaded model first, bounded: claim_preferring()),
reports progress and finishes them; the API reads them back for status, SSE,
metrics and webhooks. Every process and every thread opens its own connection.

    queued -> running -> succeeded | failed | canceled

A job whose worker dies is put back in the queue once (`attempts` counts the
claims) and failed on the next death. A finished job is never run again: every
transition out of `running` checks the row is still running for that worker.
Jobs leave the store as `types.Job`; SQLiteJobStore satisfies `types.JobStore`.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Optional

from ..errors import Conflict, InvalidInput, NotFound, QueueFull
from .types import AFFINITY_PASSES, AFFINITY_WAIT_S, Job

STATES = ("queued", "running", "succeeded", "failed", "canceled")
TERMINAL = ("succeeded", "failed", "canceled")
MAX_ATTEMPTS = 2  # the first run and one retry after a worker died

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL,
    source TEXT NOT NULL DEFAULT 'api',
    model TEXT,
    spec TEXT NOT NULL,
    input_name TEXT,
    input_source TEXT,
    idempotency_key TEXT UNIQUE,
    request_hash TEXT,
    webhook TEXT,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    heartbeat_at REAL,
    progress REAL NOT NULL DEFAULT 0,
    stage TEXT,
    step INTEGER,
    total INTEGER,
    message TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    worker TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    error_code TEXT,
    error_message TEXT,
    output TEXT,
    timings TEXT,
    webhook_state TEXT,
    webhook_attempts INTEGER NOT NULL DEFAULT 0,
    webhook_next_at REAL,
    passed INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status, seq);
CREATE TABLE IF NOT EXISTS workers (
    id TEXT PRIMARY KEY,
    pid INTEGER,
    state TEXT NOT NULL,
    model TEXT,
    info TEXT,
    started_at REAL,
    heartbeat_at REAL
);
"""

_JSON_COLUMNS = ("spec", "output", "timings")


def new_job_id() -> str:
    return "vid_" + secrets.token_hex(10)


class SQLiteJobStore:
    """The JobStore on one SQLite file. Thread-safe: one connection per thread."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        db = self._conn()
        db.executescript(_SCHEMA)
        if "passed" not in {r[1] for r in db.execute("PRAGMA table_info(jobs)")}:  # a queue from before affinity
            db.execute("ALTER TABLE jobs ADD COLUMN passed INTEGER NOT NULL DEFAULT 0")

    # ------------------------------------------------------------------ plumbing
    def _conn(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA busy_timeout=30000")
            self._local.db = db
        return db

    class _Tx:
        def __init__(self, db):
            self.db = db

        def __enter__(self):
            self.db.execute("BEGIN IMMEDIATE")
            return self.db

        def __exit__(self, exc_type, exc, tb):
            self.db.execute("ROLLBACK" if exc_type else "COMMIT")
            return False

    def _tx(self):
        return self._Tx(self._conn())

    def _one(self, sql: str, args: Iterable = ()) -> Optional[Job]:
        row = self._conn().execute(sql, tuple(args)).fetchone()
        return _row(row)

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None

    # ------------------------------------------------------------------ API side
    def create(
        self,
        spec: dict,
        *,
        job_id: Optional[str] = None,
        model: Optional[str] = None,
        source: str = "api",
        input_name: Optional[str] = None,
        input_source: Optional[str] = None,
        idempotency_key: Optional[str] = None,
        request_hash: Optional[str] = None,
        webhook: Optional[str] = None,
        max_queue: Optional[int] = None,
    ) -> tuple[Job, bool]:
        """Insert a queued job; returns (job, created). An Idempotency-Key already
        used returns the existing job with created=False (409 if the request differs)."""
        job_id = job_id or new_job_id()
        with self._tx() as db:
            if idempotency_key is not None:
                old = _row(db.execute("SELECT * FROM jobs WHERE idempotency_key=?", (idempotency_key,)).fetchone())
                if old is not None:
                    if request_hash and old.request_hash and old.request_hash != request_hash:
                        raise Conflict(
                            "This Idempotency-Key was already used for a different request; use a new key for a new job."
                        )
                    return old, False
            if max_queue is not None:
                (depth,) = db.execute("SELECT COUNT(*) FROM jobs WHERE status IN ('queued','running')").fetchone()
                if depth >= max_queue:
                    raise QueueFull(f"The queue is full ({depth} jobs waiting or running); try again shortly.")
            db.execute(
                "INSERT INTO jobs (id, status, source, model, spec, input_name, input_source, idempotency_key,"
                " request_hash, webhook, created_at, webhook_state) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (job_id, "queued", source, model, json.dumps(spec), input_name, input_source, idempotency_key,
                 request_hash, webhook, time.time(), "pending" if webhook else None),
            )
        return self.get(job_id), True

    def get(self, job_id: str) -> Job:
        job = self._one("SELECT * FROM jobs WHERE id=?", (job_id,))
        if job is None:
            raise NotFound(f"No job with id {job_id!r}; list jobs with GET /v1/videos.")
        return job

    def list(self, *, status: Optional[str] = None, limit: int = 20, before_seq: Optional[int] = None,
             source: Optional[str] = None) -> list[Job]:
        """Newest first; `before_seq` pages on (the cursor)."""
        where, args = [], []
        if status is not None:
            if status not in STATES:
                raise InvalidInput(f"status must be one of {', '.join(STATES)}, got {status!r}")
            where.append("status=?")
            args.append(status)
        if source is not None:
            where.append("source=?")
            args.append(source)
        if before_seq is not None:
            where.append("seq<?")
            args.append(before_seq)
        sql = "SELECT * FROM jobs" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY seq DESC LIMIT ?"
        rows = self._conn().execute(sql, (*args, int(limit))).fetchall()
        return [_row(r) for r in rows]

    def counts(self) -> dict[str, int]:
        out = {s: 0 for s in STATES}
        for status, n in self._conn().execute("SELECT status, COUNT(*) FROM jobs GROUP BY status"):
            out[status] = n
        return out

    def queue_position(self, job: Job) -> Optional[int]:
        if job.status != "queued":
            return None
        (n,) = self._conn().execute("SELECT COUNT(*) FROM jobs WHERE status='queued' AND seq<?", (job.seq,)).fetchone()
        return n

    def request_cancel(self, job_id: str) -> Job:
        """A queued job is canceled at once; a running one is flagged and stops between steps."""
        with self._tx() as db:
            job = _row(db.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone())
            if job is None:
                raise NotFound(f"No job with id {job_id!r}; list jobs with GET /v1/videos.")
            if job.status == "queued":
                db.execute(
                    "UPDATE jobs SET status='canceled', finished_at=?, error_code='canceled',"
                    " error_message='Canceled before it started.' WHERE id=?",
                    (time.time(), job_id),
                )
            elif job.status == "running":
                db.execute("UPDATE jobs SET cancel_requested=1 WHERE id=?", (job_id,))
            else:
                raise Conflict(f"Job {job_id} has already {job.status}; only queued or running jobs can be canceled.")
        return self.get(job_id)

    def delete(self, job_id: str) -> Job:
        """Remove a job's row. A running job's worker sees the row gone, stops between
        steps and drops its result (see JobWorker.run_job)."""
        with self._tx() as db:
            job = _row(db.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone())
            if job is None:
                raise NotFound(f"No job with id {job_id!r}; list jobs with GET /v1/videos.")
            db.execute("DELETE FROM jobs WHERE id=?", (job_id,))
        return job

    def finished_before(self, cutoff: float, limit: int = 500) -> list[str]:
        """Ids of succeeded/failed/canceled jobs that finished before `cutoff` (oldest first)."""
        rows = self._conn().execute(
            "SELECT id FROM jobs WHERE status IN ('succeeded','failed','canceled') AND finished_at<?"
            " ORDER BY finished_at LIMIT ?", (cutoff, limit)).fetchall()
        return [r[0] for r in rows]

    # ------------------------------------------------------------------ worker side
    def claim(self, worker: str) -> Optional[Job]:
        """Atomically take the oldest queued job, or None."""
        return self.claim_preferring(worker)

    def claim_preferring(self, worker: str, prefer: Optional[str] = None, *, default_model: Optional[str] = None,
                         max_wait: float = AFFINITY_WAIT_S, max_passed: int = AFFINITY_PASSES) -> Optional[Job]:
        """claim() with model affinity, for a worker serving several models (not on Ray: one model there).

        Model affinity (`prefer`: the model the worker has loaded; jobs with no model are `default_model`'s):
        when the oldest job wants another model, the oldest job for `prefer` goes first instead, unless
        the oldest job has waited `max_wait` seconds or was already passed over `max_passed` times. Each
        job passed over counts one pass, so no job waits behind more than `max_passed` affinity picks.
        `max_passed=0` (or no `prefer`) is plain submission order."""
        if self._conn().execute("SELECT 1 FROM jobs WHERE status='queued' LIMIT 1").fetchone() is None:
            return None  # the common idle case: no write lock taken
        now = time.time()
        with self._tx() as db:
            oldest = db.execute("SELECT seq, COALESCE(model, ?), created_at, passed FROM jobs WHERE status='queued'"
                                " ORDER BY seq LIMIT 1", (default_model,)).fetchone()
            if oldest is None:
                return None
            seq = oldest[0]
            if (prefer is not None and max_passed > 0 and oldest[1] != prefer and oldest[3] < max_passed
                    and now - oldest[2] < max_wait):
                pick = db.execute("SELECT seq FROM jobs WHERE status='queued' AND COALESCE(model, ?)=?"
                                  " ORDER BY seq LIMIT 1", (default_model, prefer)).fetchone()
                if pick is not None:
                    seq = pick[0]
                    db.execute("UPDATE jobs SET passed=passed+1 WHERE status='queued' AND seq<?", (seq,))
            row = db.execute(
                "UPDATE jobs SET status='running', worker=?, started_at=?, heartbeat_at=?, attempts=attempts+1,"
                " progress=0, stage='starting', step=NULL, total=NULL, message=NULL"
                " WHERE seq=? AND status='queued' RETURNING id",
                (worker, now, now, seq),
            ).fetchone()
        return self.get(row[0]) if row else None

    def progress(self, job_id: str, worker: str, *, fraction: float, stage: str, step: int, total: int,
                 message: str = "") -> bool:
        """Record progress; returns whether a cancel was requested."""
        db = self._conn()
        row = db.execute(
            "UPDATE jobs SET progress=?, stage=?, step=?, total=?, message=?, heartbeat_at=?"
            " WHERE id=? AND worker=? AND status='running' RETURNING cancel_requested",
            (round(float(fraction), 4), stage, step, total, message, time.time(), job_id, worker),
        ).fetchone()
        return bool(row[0]) if row else True  # row gone (deleted): stop

    def cancel_requested(self, job_id: str) -> bool:
        row = self._conn().execute("SELECT cancel_requested, status FROM jobs WHERE id=?", (job_id,)).fetchone()
        return row is None or bool(row[0]) or row[1] != "running"

    def finish(self, job_id: str, worker: str, status: str, *, output: Optional[dict] = None,
               error: Optional[dict] = None, timings: Optional[dict] = None, spec: Optional[dict] = None) -> bool:
        assert status in TERMINAL
        sets = ["status=?", "finished_at=?", "output=?", "timings=?", "error_code=?", "error_message=?"]
        args: list[Any] = [status, time.time(), json.dumps(output) if output else None,
                           json.dumps(timings) if timings else None,
                           (error or {}).get("code"), (error or {}).get("message")]
        if status == "succeeded":
            sets += ["progress=1", "stage='done'"]
        if spec is not None:
            sets.append("spec=?")
            args.append(json.dumps(spec))
        with self._tx() as db:
            cur = db.execute(f"UPDATE jobs SET {', '.join(sets)} WHERE id=? AND worker=? AND status='running'",
                             (*args, job_id, worker))
            return cur.rowcount == 1

    # ------------------------------------------------------------------ recovery
    def recover(self, worker: Optional[str] = None, *, reason: str, count_attempt: bool = True) -> list[str]:
        """Jobs left running (by `worker`, or by anyone when None): back to the queue,
        or failed when they already had MAX_ATTEMPTS tries. Returns the ids touched."""
        touched = []
        with self._tx() as db:
            sql = "SELECT id, attempts, cancel_requested FROM jobs WHERE status='running'"
            rows = db.execute(sql + (" AND worker=?" if worker else ""), (worker,) if worker else ()).fetchall()
            now = time.time()
            for job_id, attempts, cancel in rows:
                if not count_attempt:
                    attempts = max(0, attempts - 1)
                if cancel:
                    db.execute("UPDATE jobs SET status='canceled', finished_at=?, error_code='canceled',"
                               " error_message='Canceled.' WHERE id=?", (now, job_id))
                elif attempts >= MAX_ATTEMPTS:
                    db.execute(
                        "UPDATE jobs SET status='failed', finished_at=?, error_code='worker_died', error_message=?"
                        " WHERE id=?",
                        (now, f"The worker process died while running this job, {attempts} times ({reason}); "
                              "it was not retried again. Check the server log.", job_id),
                    )
                else:
                    db.execute("UPDATE jobs SET status='queued', worker=NULL, attempts=?, progress=0, stage=NULL,"
                               " step=NULL, total=NULL, message=NULL, started_at=NULL WHERE id=?", (attempts, job_id))
                touched.append(job_id)
        return touched

    # ------------------------------------------------------------------ workers table
    def worker_state(self, worker: str, state: str, *, pid: Optional[int] = None, model: Optional[str] = None,
                     info: Optional[dict] = None) -> None:
        now = time.time()
        with self._tx() as db:
            db.execute(
                "INSERT INTO workers (id, pid, state, model, info, started_at, heartbeat_at) VALUES (?,?,?,?,?,?,?)"
                # "dead" is final: a worker declared dead (its job handed to another) cannot heartbeat back to life
                " ON CONFLICT(id) DO UPDATE SET state=CASE WHEN state='dead' THEN 'dead' ELSE excluded.state END,"
                " heartbeat_at=excluded.heartbeat_at,"
                " pid=COALESCE(excluded.pid, pid), model=COALESCE(excluded.model, model),"
                " info=COALESCE(excluded.info, info)",
                (worker, pid, state, model, json.dumps(info) if info is not None else None, now, now),
            )

    def workers(self) -> list[dict]:
        out = []
        for r in self._conn().execute("SELECT * FROM workers ORDER BY started_at"):
            d = dict(r)
            d["info"] = json.loads(d["info"]) if d["info"] else {}
            out.append(d)
        return out

    def forget_workers(self) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM workers")

    # ------------------------------------------------------------------ webhooks and metrics
    def webhooks_due(self, now: float, limit: int = 20) -> list[Job]:
        rows = self._conn().execute(
            "SELECT * FROM jobs WHERE webhook_state='pending' AND status IN ('succeeded','failed','canceled')"
            " AND (webhook_next_at IS NULL OR webhook_next_at<=?) ORDER BY finished_at LIMIT ?",
            (now, limit),
        ).fetchall()
        return [_row(r) for r in rows]

    def webhook_result(self, job_id: str, state: str, attempts: int, next_at: Optional[float]) -> None:
        with self._tx() as db:
            db.execute("UPDATE jobs SET webhook_state=?, webhook_attempts=?, webhook_next_at=? WHERE id=?",
                       (state, attempts, next_at, job_id))

    def finished_timings(self) -> list[tuple[float, Optional[dict]]]:
        """(run seconds, timings) of every succeeded job, for the metrics histograms."""
        rows = self._conn().execute(
            "SELECT finished_at - started_at, timings FROM jobs WHERE status='succeeded' AND started_at IS NOT NULL"
        ).fetchall()
        return [(r[0], json.loads(r[1]) if r[1] else None) for r in rows]

    def recent_durations(self, n: int = 10) -> list[float]:
        rows = self._conn().execute(
            "SELECT finished_at - started_at FROM jobs WHERE status='succeeded' AND started_at IS NOT NULL"
            " ORDER BY finished_at DESC LIMIT ?", (n,)).fetchall()
        return [r[0] for r in rows]


def _row(row) -> Optional[Job]:
    if row is None:
        return None
    d = dict(row)
    for k in _JSON_COLUMNS:
        if d.get(k):
            d[k] = json.loads(d[k])
    d["cancel_requested"] = bool(d["cancel_requested"])
    return Job(**d)
