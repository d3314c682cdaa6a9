"""The /v1 routes: submit, list, get, content, events, cancel, delete.

Handlers that only touch SQLite are plain `def` (FastAPI runs them in its
thread pool); the async ones hand blocking work to threads, so the event loop
never waits on generation or on the disk.
"""

from __future__ import annotations

import asyncio
import hmac
import re
import shutil
from pathlib import Path
from typing import Annotated, Literal, Optional

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from ..errors import BadRequest, Conflict, InvalidInput, NotFound, Unauthorized
from ..jobs.events import job_events, parse_last_event_id
from ..jobs.store import TERMINAL
from ..jobs.types import Job
from ..jobs.layout import job_dir
from .contract import IDEMPOTENCY_KEY_PATTERN
from .submit import parse_request, submit
from .views import check_job_id, job_view, JobStatus

_PREFER_WAIT = re.compile(r"(?:^|[,;\s])wait\s*=\s*(\d+(?:\.\d+)?)", re.I)
_IDEMPOTENCY_KEY = re.compile(IDEMPOTENCY_KEY_PATTERN)


def get_svc(request: Request):
    return request.app.state.svc


_BEARER = HTTPBearer(auto_error=False, description="the server's --api-key (STILLMOTION_API_KEY); "
                     "needed only when the server has one")


def require_api_key(request: Request,
                    credentials: Annotated[Optional[HTTPAuthorizationCredentials], Depends(_BEARER)] = None) -> None:
    key = request.app.state.svc.settings.api_key
    if not key:
        return
    given = credentials.credentials if credentials is not None else ""
    if not hmac.compare_digest(given.strip().encode(), key.encode()):
        raise Unauthorized("Missing or wrong API key: send `Authorization: Bearer <key>` (the server's --api-key).")


router = APIRouter(prefix="/v1", dependencies=[Depends(require_api_key)], tags=["videos"])


def _view(svc, job: Job) -> dict:
    return job_view(job, svc.store.queue_position(job))


@router.post("/videos", status_code=202, summary="Queue a video from an image", operation_id="create_video")
async def create_video(
    request: Request,
    idempotency_key: Annotated[Optional[str], Header()] = None,
    prefer: Annotated[Optional[str], Header()] = None,
):
    """multipart/form-data (`image` file + GenerationSpec fields, `model`, `webhook`) or
    application/json (`image` as base64, a data: URL or an http(s) URL). Answers 202 with the
    job; with `Prefer: wait=N` it holds the answer up to N seconds (200 when done by then)."""
    svc = get_svc(request)
    if idempotency_key is not None and not _IDEMPOTENCY_KEY.match(idempotency_key):
        raise BadRequest("Idempotency-Key must be 1-255 visible ASCII characters.")
    sub = await parse_request(request, svc.settings.max_upload_bytes + 64 * 1024 + svc.settings.max_upload_bytes // 3)
    job, created = await run_in_threadpool(submit, svc, sub, source="api", idempotency_key=idempotency_key)
    headers = {"Location": f"/v1/videos/{job.id}"}
    if not created:
        headers["Idempotent-Replayed"] = "true"
    wait = _prefer_wait(prefer, svc.settings.max_wait)
    if wait:
        headers["Preference-Applied"] = f"wait={wait:g}"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while job.status not in TERMINAL and loop.time() < deadline:
            await asyncio.sleep(0.05)
            job = await run_in_threadpool(svc.store.get, job.id)
    status = 200 if job.status in TERMINAL else 202
    return JSONResponse(await run_in_threadpool(_view, svc, job), status_code=status, headers=headers)


def _prefer_wait(prefer: Optional[str], cap: float) -> float:
    if not prefer:
        return 0.0
    m = _PREFER_WAIT.search(prefer)
    return min(float(m.group(1)), cap) if m else 0.0


@router.get("/videos", summary="List jobs, newest first", operation_id="list_videos")
def list_videos(
    request: Request,
    status: Optional[JobStatus] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Optional[str] = None,
    source: Optional[str] = None,
):
    svc = get_svc(request)
    before = None
    if cursor:
        if not re.fullmatch(r"c\d{1,18}", cursor):
            raise InvalidInput("cursor: not a cursor from a previous page's next_cursor.")
        before = int(cursor[1:])
    rows = svc.store.list(status=status, limit=limit + 1, before_seq=before, source=source)
    more = len(rows) > limit
    rows = rows[:limit]
    return {
        "object": "list",
        "data": [_view(svc, j) for j in rows],
        "has_more": more,
        "next_cursor": f"c{rows[-1].seq}" if more else None,
    }


@router.get("/videos/{job_id}", summary="One job", operation_id="get_video")
def get_video(request: Request, job_id: str):
    svc = get_svc(request)
    return _view(svc, svc.store.get(check_job_id(job_id)))


@router.get("/videos/{job_id}/content", summary="The video file (Range requests supported)", operation_id="get_content")
def get_content(request: Request, job_id: str, variant: Literal["video", "sidecar", "audio"] = "video",
                range_: Annotated[Optional[str], Header(alias="Range", description="bytes=START-END: part of the file (206)")] = None):
    svc = get_svc(request)
    job = svc.store.get(check_job_id(job_id))
    if job.status != "succeeded":
        raise Conflict(f"Job {job_id} is {job.status}; its content exists once it has succeeded.")
    out = job.output or {}
    folder = job_dir(svc.settings.data_dir, job_id)
    if variant == "video":
        name, media = out.get("file"), out.get("content_type") or "application/octet-stream"
    elif variant == "audio":  # the NAME.wav beside a gif/webp/png video (mp4 and webm carry their sound inside)
        name, media = out.get("audio"), "audio/wav"
        if not name:
            raise NotFound(f"Job {job_id} has no soundtrack beside its video (mp4 and webm carry it inside; "
                           "a model without sound makes none).")
    else:  # sidecar (FastAPI refuses any other variant with 422)
        name, media = out.get("sidecar"), "application/json"
    path = folder / name if name else None
    if path is None or Path(name).name != name or not path.is_file():
        raise NotFound(f"The {variant} file of job {job_id} is gone from the data folder.")
    fmt = out.get("format", "mp4")
    ext = {"png": "zip"}.get(fmt, fmt) if variant == "video" else {"sidecar": "json", "audio": "wav"}[variant]
    return FileResponse(path, media_type=media, filename=f"{job_id}.{ext}", content_disposition_type="inline")


@router.get("/videos/{job_id}/events", summary="Server-Sent Events until the job ends", operation_id="get_events")
def get_events(request: Request, job_id: str,
               last_event_id: Annotated[Optional[str], Header(description="the id of the last event received: "
                                                              "resume after it")] = None):
    svc = get_svc(request)
    svc.store.get(check_job_id(job_id))  # 404 before the stream starts
    gen = job_events(svc.store, job_id, lambda j: _view(svc, j), last_event_id=parse_last_event_id(last_event_id))
    return StreamingResponse(gen, media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@router.post("/videos/{job_id}/cancel", summary="Cancel a queued or running job", operation_id="cancel_video")
def cancel_video(request: Request, job_id: str):
    """A queued job is canceled at once; a running one stops between steps (watch its status or events)."""
    svc = get_svc(request)
    return _view(svc, svc.store.request_cancel(check_job_id(job_id)))


@router.delete("/videos/{job_id}", summary="Delete a job and its files", operation_id="delete_video")
def delete_video(request: Request, job_id: str):
    """A running job is canceled first; its files go with it."""
    svc = get_svc(request)
    job = svc.store.delete(check_job_id(job_id))
    shutil.rmtree(job_dir(svc.settings.data_dir, job_id), ignore_errors=True)
    return {"id": job.id, "object": "video", "deleted": True}


@router.api_route("/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"], include_in_schema=False)
def not_found(path: str):
    raise NotFound(f"No API route /v1/{path[:100]}; see /docs or /openapi.json.")
