"""What jobs and errors look like on the wire: one job envelope, one error shape.
The errors themselves (with their HTTP status and code) are the tree in errors.py."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any, Literal, Optional

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from ..errors import NotFound, StillmotionError, Unauthorized
from ..jobs.store import STATES
from ..jobs.types import Job
from ..spec import GenerationSpec

JOB_ID = re.compile(r"^vid_[0-9a-f]{20}$")
RETRY_AFTER_S = 5  # Retry-After of a ServiceUnavailable that does not say
# error codes of the app's own handlers (app._error_handlers), beside those of errors.py
HANDLER_CODES = {404: "not_found", 405: "method_not_allowed", 422: "invalid_input", 500: "internal_error"}
OTHER_HTTP_CODE = "http_error"  # any other status a framework answers with


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
        view["output"]["audio_url"] = f"/v1/videos/{jid}/content?variant=audio" if out.get("audio") else None
    if job.timings:
        view["timings"] = {k: v for k, v in job.timings.items() if k != "step_seconds"}
    return view


def error_response(e: StillmotionError, headers: Optional[dict] = None) -> JSONResponse:
    headers = dict(headers or {})
    if e.http_status in (429, 503) and "Retry-After" not in headers:  # the contract promises it on every 503
        after = getattr(e, "retry_after", None)
        headers["Retry-After"] = str(RETRY_AFTER_S if after is None else after)
    if isinstance(e, Unauthorized):
        headers.setdefault("WWW-Authenticate", "Bearer")
    return JSONResponse({"error": e.to_dict()}, status_code=e.http_status, headers=headers)


def error_json(status: int, code: str, message: str, headers: Optional[dict] = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


# --------------------------------------------------------------------------- the bodies, as the contract declares them
# (server/contract.py puts these in /openapi.json; job_view() above builds the job body)
JobStatus = Literal[STATES]


class JobProgress(BaseModel):
    fraction: float = Field(ge=0, le=1)
    stage: Optional[str]
    step: Optional[int]
    total: Optional[int]
    message: Optional[str]


class JobError(BaseModel):
    code: str
    message: Optional[str]


class JobOutput(BaseModel):
    format: Optional[str]
    content_type: Optional[str]
    frames: Optional[int]
    width: Optional[int]
    height: Optional[int]
    fps: Optional[float]
    bytes: Optional[int]
    sidecar_url: str
    audio_url: Optional[str] = Field(None, description="the NAME.wav beside a gif/webp/png video that has sound "
                                     "(mp4 and webm carry their sound inside the file)")


class JobWebhook(BaseModel):
    url: str
    state: Optional[str]
    attempts: int


class JobUrls(BaseModel):
    self_: str = Field(alias="self")
    events: str
    cancel: str
    content: Optional[str] = Field(description="set once the job has succeeded")


class JobView(BaseModel):
    """A job: its status and progress, the resolved spec (with its seed), and its output once it succeeded."""

    model_config = ConfigDict(title="Job")
    id: str = Field(pattern=JOB_ID.pattern)
    object: Literal["video"]
    status: JobStatus
    model: Optional[str]
    source: str
    created_at: str
    started_at: Optional[str]
    finished_at: Optional[str]
    progress: JobProgress
    queue_position: Optional[int] = Field(description="jobs ahead of this one while it is queued")
    seed: Optional[int]
    spec: GenerationSpec
    attempts: int
    cancel_requested: bool
    error: Optional[JobError]
    output: Optional[JobOutput]
    webhook: Optional[JobWebhook]
    urls: JobUrls
    timings: Optional[dict[str, Any]] = None


class JobList(BaseModel):
    object: Literal["list"]
    data: list[JobView]
    has_more: bool
    next_cursor: Optional[str] = Field(description="pass as ?cursor= for the next page")


class Deleted(BaseModel):
    id: str
    object: Literal["video"]
    deleted: Literal[True]


class Health(BaseModel):
    status: Literal["ok"]


class Ready(BaseModel):
    status: Literal["ready", "unavailable"]
    detail: str
    model: str
    workers: Optional[list[dict[str, Any]]] = None
    worker: Optional[dict[str, Any]] = None
