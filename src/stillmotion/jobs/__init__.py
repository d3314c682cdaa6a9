"""The persistent job queue (SQLite, WAL) and the worker process that drains it.

    store.JobStore     one file, shared by the API, the UI and the worker
    worker.Worker      loads the Engine once, claims jobs in order, runs them
    events.job_events  Server-Sent Events for one job, by polling the store
"""

from .store import MAX_ATTEMPTS, STATES, TERMINAL, JobStore

__all__ = ["JobStore", "STATES", "TERMINAL", "MAX_ATTEMPTS"]
