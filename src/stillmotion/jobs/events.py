"""Job events for Server-Sent Events, read by polling the store.

    event: queued     (once, while it waits; data: the job)
    event: running    (when a worker claims it)
    event: progress   (each time progress, stage or step changes)
    event: succeeded | failed | canceled   (last event; the stream ends)

Every `data:` line is the public job object as JSON. A comment line is sent
every `keepalive` seconds so proxies keep the connection open.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import AsyncIterator, Callable

from .store import TERMINAL
from .types import Job, JobStore


def sse(event: str, data: dict, event_id: int) -> str:
    return f"id: {event_id}\nevent: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


async def job_events(
    store: JobStore,
    job_id: str,
    view: Callable[[Job], dict],
    *,
    poll: float = 0.1,
    keepalive: float = 15.0,
    timeout: float = 24 * 3600.0,
) -> AsyncIterator[str]:
    last_status, last_progress, n = None, None, 0
    last_sent = time.monotonic()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            job = await asyncio.to_thread(store.get, job_id)
        except Exception:  # noqa: BLE001 - deleted while we watched
            n += 1
            yield sse("deleted", {"id": job_id, "object": "video", "deleted": True}, n)
            return
        status = job.status
        progress = (job.progress, job.stage, job.step)
        if status != last_status:
            n += 1
            last_status, last_progress = status, progress
            yield sse(status, view(job), n)
            last_sent = time.monotonic()
            if status in TERMINAL:
                return
        elif status == "running" and progress != last_progress:
            n += 1
            last_progress = progress
            yield sse("progress", view(job), n)
            last_sent = time.monotonic()
        elif time.monotonic() - last_sent > keepalive:
            last_sent = time.monotonic()
            yield ": keepalive\n\n"
        await asyncio.sleep(poll)
