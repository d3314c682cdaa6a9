"""What jobs and errors look like on the wire: one job envelope, one error shape.
The errors themselves (with their HTTP status and code) are the tree in errors.py."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Optional

from fastapi.responses import JSONResponse

from ..errors import NotFound, ServiceUnavailable, StillmotionError, Unauthorized
from ..jobs.types import Job

JOB_ID = re.compile(r"^vid_[0-9a-f]{20}$")
RETRY_AFTER_S = 5  # Retry-After of a ServiceUnavailable that does not say


def check_job_id(job_id: str) -> str:
    """Ids are ours (vid_ + 20 hex); anything else cannot name a job, and never reaches the disk."""
    if not JOB_ID.match(job_id or ""):
        shown = job_id if len(job_id or "") <= 80 else job_id[:80] + "..."
        raise NotFound(f"No job with id {shown!r}; job ids look like vid_0123456789abcdef0123.")
    return job_id


def iso(ts: Optional[float]) -> Optional[str]:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def job_view(job: Job, queue_position: Optional[int] = None) -> dict:
    """The public job object (Replicate/OpenAI-like envelope)."""
    jid = job.id
    spec = job.spec or {}
    out = job.output
    view = {
        "id": jid,
        "object": "video",
        "status": job.status,
        "model": job.model,
        "source": job.source,
        "created_at": iso(job.created_at),
        "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at),
        "progress": {
            "fraction": job.progress or 0.0,
            "stage": job.stage,
            "step": job.step,
            "total": job.total,
            "message": job.message,
        },
        "queue_position": queue_position,
        "seed": spec.get("seed"),
        "spec": spec,
        "attempts": job.attempts,
        "cancel_requested": job.cancel_requested,
        "error": {"code": job.error_code, "message": job.error_message} if job.error_code else None,
        "output": None,
        "webhook": {"url": job.webhook, "state": job.webhook_state, "attempts": job.webhook_attempts}
        if job.webhook else None,
        "urls": {
            "self": f"/v1/videos/{jid}",
            "events": f"/v1/videos/{jid}/events",
            "cancel": f"/v1/videos/{jid}/cancel",
            "content": f"/v1/videos/{jid}/content" if job.status == "succeeded" else None,
        },
    }
    if out:
        view["output"] = {k: out.get(k) for k in ("format", "content_type", "frames", "width", "height", "fps", "bytes")}
        view["output"]["sidecar_url"] = f"/v1/videos/{jid}/content?variant=sidecar"
    if job.timings:
        view["timings"] = {k: v for k, v in job.timings.items() if k != "step_seconds"}
    return view


def error_response(e: StillmotionError, headers: Optional[dict] = None) -> JSONResponse:
    headers = dict(headers or {})
    if isinstance(e, ServiceUnavailable) and "Retry-After" not in headers:
        headers["Retry-After"] = str(RETRY_AFTER_S if e.retry_after is None else e.retry_after)
    if isinstance(e, Unauthorized):
        headers.setdefault("WWW-Authenticate", "Bearer")
    return JSONResponse({"error": e.to_dict()}, status_code=e.http_status, headers=headers)


def error_json(status: int, code: str, message: str, headers: Optional[dict] = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)
