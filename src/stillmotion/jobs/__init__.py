"""The persistent job queue (SQLite, WAL) and the worker process that drains it.

    types.Job              a job as the store hands it out; JobStore and WorkerPool, the queue's seams
    store.SQLiteJobStore   one file, shared by the API, the UI and the worker
    layout.job_dir         a job's folder: what the API writes there, the worker reads and writes
    worker.JobWorker       loads the Engine once, claims jobs in order, runs them
    events.job_events      Server-Sent Events for one job, by polling the store
"""

from .store import MAX_ATTEMPTS, STATES, TERMINAL, SQLiteJobStore
from .types import Job, JobStore, WorkerPool

__all__ = ["Job", "JobStore", "WorkerPool", "SQLiteJobStore", "STATES", "TERMINAL", "MAX_ATTEMPTS"]
