"""Job events for Server-Sent Events, read by polling the store.

    event: queued     (once, while it waits; data: the job)
    event: running    (when a worker claims it)
    event: progress   (each time progress, stage or step changes)
    event: succeeded | failed | canceled   (last event; the stream ends)

Every `data:` line is the public job object as JSON. A comment line is sent
every `keepalive` seconds so proxies keep the connection open.

Every event has an `id:` that grows with the job's state (its status, then
progress and step), the same on every connection. A client that reconnects with
`Last-Event-ID` gets only what is newer than that id (and at least the last
event once the job has ended), so a dropped connection misses nothing: each
event carries the whole job, and the final one always comes.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import AsyncIterator, Callable, Optional

from .store import TERMINAL
from .types import Job, JobStore

_RANK = {"queued": 1, "running": 2, "succeeded": 3, "failed": 3, "canceled": 3}


def sse(event: str, data: dict, event_id: int) -> str:
    return f"id: {event_id}\nevent: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def event_id(job: Job) -> int:
    """The id of the event that shows `job` as it is now: status rank, then progress, then step."""
    rank = _RANK.get(job.status, 0)
    if rank != 2:
        return rank * 10**9
    return rank * 10**9 + int(round((job.progress or 0.0) * 10000)) * 10**4 + (job.step or 0) % 10**4


def parse_last_event_id(value: Optional[str]) -> int:
    """A Last-Event-ID header as we wrote it; anything else means "from the start"."""
    value = (value or "").strip()
    return int(value) if value.isdigit() and len(value) <= 18 else 0


async def job_events(
    store: JobStore,
    job_id: str,
    view: Callable[[Job], dict],
    *,
    poll: float = 0.1,
    keepalive: float = 15.0,
    timeout: float = 24 * 3600.0,
    last_event_id: int = 0,
) -> AsyncIterator[str]:
    last_status, last_progress = None, None
    last_sent_id = last_event_id
    last_sent = time.monotonic()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            job = await asyncio.to_thread(store.get, job_id)
        except Exception:  # noqa: BLE001 - deleted while we watched
            yield sse("deleted", {"id": job_id, "object": "video", "deleted": True}, 4 * 10**9)
            return
        status = job.status
        progress = (job.progress, job.stage, job.step)
        eid = event_id(job)
        name = None
        if status != last_status:
            name = status
        elif status == "running" and progress != last_progress:
            name = "progress"
        last_status, last_progress = status, progress
        if name is not None and (eid > last_sent_id or status in TERMINAL):  # the final event always comes
            yield sse(name, view(job), eid)
            last_sent_id = max(last_sent_id, eid)
            last_sent = time.monotonic()
            if status in TERMINAL:
                return
        elif time.monotonic() - last_sent > keepalive:
            last_sent = time.monotonic()
            yield ": keepalive\n\n"
        await asyncio.sleep(poll)
