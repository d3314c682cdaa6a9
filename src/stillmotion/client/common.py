"""What the sync and async clients share: building requests, reading answers, errors, SSE lines."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Optional, Union

import httpx

from .. import errors
from ..spec import GenerationSpec

TERMINAL = ("succeeded", "failed", "canceled")
RETRY_STATUSES = (429, 503)
ImageArg = Union[str, os.PathLike, bytes]
SpecArg = Union[GenerationSpec, dict, None]
OnEvent = Callable[[str, dict], None]


# --------------------------------------------------------------------------- shared: requests and answers
def server_from_env(base_url: Optional[str]) -> str:
    url = base_url or os.environ.get("STILLMOTION_SERVER")
    if not url:
        raise errors.InvalidInput("No server given: pass base_url (or --server URL), or set STILLMOTION_SERVER.")
    if not url.lower().startswith(("http://", "https://")):
        url = "http://" + url
    return url.rstrip("/")


def _spec_fields(spec: SpecArg, fields: dict) -> dict:
    if isinstance(spec, GenerationSpec):
        data = spec.model_dump(mode="json", exclude_none=True)
    else:
        data = {k: v for k, v in dict(spec or {}).items() if v is not None}
        GenerationSpec.build(**data)  # the server checks again; this fails before any upload
    data.update({k: v for k, v in fields.items() if v is not None})
    return data


def submit_request(image: ImageArg, spec: SpecArg, fields: dict, *, model: Optional[str] = None,
                   webhook: Optional[str] = None, inputs: Optional[dict] = None) -> dict:
    """httpx request keywords for POST /v1/videos: multipart with the file's bytes, or JSON with an image URL.
    `inputs`: the request's other inputs (server/submit.INPUTS: workflow, batch, ...)."""
    data = _spec_fields(spec, fields)
    extra = {k: v for k, v in (("model", model), ("webhook", webhook), *(inputs or {}).items()) if v is not None}
    if isinstance(image, str) and image.lower().startswith(("http://", "https://", "data:")):
        return {"json": {"image": image, **data, **extra}}
    if isinstance(image, bytes):  # a `name` attribute, if any, is what the sidecar records as its source
        content, name = bytes(image), getattr(image, "name", None) or "image"
    else:
        path = Path(image)
        if not path.is_file():
            raise errors.InvalidInput(f"{path}: no such image file.")
        content, name = path.read_bytes(), path.name
    form = {k: json.dumps(v) if isinstance(v, (dict, list)) else str(v) for k, v in {**data, **extra}.items()}
    return {"files": {"image": (name, content, "application/octet-stream")}, "data": form}


def _error_classes() -> tuple[dict[str, type], dict[int, type]]:
    by_code: dict[str, type] = {}
    by_status: dict[int, type] = {}
    todo = [errors.StillmotionError]
    while todo:
        cls = todo.pop(0)
        todo.extend(cls.__subclasses__())
        by_code.setdefault(cls.code, cls)
        by_status.setdefault(cls.http_status, cls)
    by_code["invalid_input"] = errors.InvalidInput
    return by_code, by_status


def error_for(code: Optional[str], message: str, status: Optional[int] = None,
              retry_after: Optional[float] = None) -> errors.StillmotionError:
    """The stillmotion error for an error code (a server's answer, or a failed job's error)."""
    by_code, by_status = _error_classes()
    cls = by_code.get(code or "") or (by_status.get(status) if status else None)
    if cls is None:
        cls = errors.BadRequest if status and 400 <= status < 500 else errors.StillmotionError
    if issubclass(cls, errors.ServiceUnavailable):
        return cls(message, retry_after=int(retry_after) if retry_after is not None else None)
    return cls(message)


def check(response: httpx.Response) -> httpx.Response:
    """The response when it is a success; else the stillmotion error its body names."""
    if response.status_code < 400:
        return response
    code, message = None, None
    try:
        body = json.loads(response.read() if not response.is_stream_consumed else response.content)
        code, message = body["error"]["code"], body["error"]["message"]
    except Exception:  # noqa: BLE001 - not our error shape (a proxy's page, ...)
        message = f"The server answered {response.status_code} {response.reason_phrase} to {response.request.url}."
    raise error_for(code, f"server: {message}", response.status_code, retry_after(response))


def retry_after(response: httpx.Response, default: float = 1.0) -> float:
    value = response.headers.get("retry-after", "")
    try:
        return max(0.0, float(value))
    except ValueError:
        return default


def job_error(job: dict) -> errors.StillmotionError:
    """The error a job that did not succeed ended with (Cancelled for a canceled job)."""
    err = job.get("error") or {}
    if job.get("status") == "canceled":
        return errors.Cancelled(f"Job {job.get('id')} was canceled on the server; no output was written.")
    return error_for(err.get("code"), f"server: job {job.get('id')} failed: {err.get('message') or 'no reason given'}")


class SSEParser:
    """Feed it lines of an event stream; it yields (id, event, data) for each complete event."""

    def __init__(self):
        self.id = self.event = None
        self.data: list[str] = []

    def feed(self, line: str) -> Optional[tuple[Optional[str], str, str]]:
        if line == "":
            if not self.data and self.event is None:
                return None
            out = (self.id, self.event or "message", "\n".join(self.data))
            self.event, self.data = None, []
            return out
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "id":
            self.id = value
        elif name == "event":
            self.event = value
        elif name == "data":
            self.data.append(value)
        return None


def _part_path(path: Path, job_id: str, variant: str) -> Path:
    return path.with_name(f".{path.name}.{job_id}.{variant}.part")


def _backoff(attempt: int) -> float:
    return min(10.0, 0.5 * 2 ** attempt)


_CONNECTION_ERRORS = (httpx.TransportError,)


def _unreachable(base_url: str, e: Exception) -> errors.ServiceUnavailable:
    return errors.ServiceUnavailable(f"Cannot reach {base_url} ({type(e).__name__}: {e}); is the server running?")


# --------------------------------------------------------------------------- sync


class _Again(Exception):
    def __init__(self, seconds: float):
        self.seconds = seconds


def _finish_part(part: Path, path: Path, r: httpx.Response, have: Optional[int]) -> Path:
    """Check the part is the whole file (Content-Range / Content-Length), then rename it to `path`."""
    total = None
    cr = r.headers.get("content-range", "")
    if "/" in cr and cr.rsplit("/", 1)[1].isdigit():
        total = int(cr.rsplit("/", 1)[1])
    elif r.status_code == 200 and r.headers.get("content-length", "").isdigit():
        total = int(r.headers["content-length"])
    size = part.stat().st_size
    if total is not None and size != total:
        if size > total:
            part.unlink()
        raise errors.ServiceUnavailable(f"The download of {path.name} stopped at {size} of {total} bytes; "
                                        "run it again to resume it.")
    os.replace(part, path)
    return path
