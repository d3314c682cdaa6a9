"""What the sync and async clients share: building requests, reading answers, errors, SSE lines."""

from __future__ import annotations

import base64
import json
import os
import time
import uuid
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


def _audio_file(audio: Optional[ImageArg]) -> Optional[tuple[str, bytes]]:
    """(name, bytes) of a soundtrack to send (a path, or bytes whose `name` attribute, if any, the sidecar records
    as its source), or None."""
    if audio is None:
        return None
    if isinstance(audio, bytes):
        return getattr(audio, "name", None) or "audio", bytes(audio)
    path = Path(audio)
    if not path.is_file():
        raise errors.InvalidInput(f"{path}: no such audio file.")
    return path.name, path.read_bytes()


def submit_request(image: ImageArg, spec: SpecArg, fields: dict, *, model: Optional[str] = None,
                   webhook: Optional[str] = None, inputs: Optional[dict] = None,
                   idempotency_key: Optional[str] = None, audio: Optional[ImageArg] = None) -> dict:
    """httpx request keywords for POST /v1/videos: multipart with the file's bytes, or JSON with an image URL.
    `inputs`: the request's other inputs (server/submit.INPUTS: workflow, batch, ...); `audio`: a soundtrack for
    the model to follow (a path or bytes). Without `idempotency_key` a fresh one is sent, so the client's retries
    never queue the video twice."""
    headers = {"Idempotency-Key": idempotency_key or f"sm-{uuid.uuid4().hex}"}
    data = _spec_fields(spec, fields)
    extra = {k: v for k, v in (("model", model), ("webhook", webhook), *(inputs or {}).items()) if v is not None}
    sound = _audio_file(audio)
    if isinstance(image, str) and image.lower().startswith(("http://", "https://", "data:")):
        if sound is not None:
            extra["audio"] = base64.b64encode(sound[1]).decode()
        return {"json": {"image": image, **data, **extra}, "headers": headers}
    if isinstance(image, bytes):  # a `name` attribute, if any, is what the sidecar records as its source
        content, name = bytes(image), getattr(image, "name", None) or "image"
    else:
        path = Path(image)
        if not path.is_file():
            raise errors.InvalidInput(f"{path}: no such image file.")
        content, name = path.read_bytes(), path.name
    form = {k: json.dumps(v) if isinstance(v, (dict, list)) else str(v) for k, v in {**data, **extra}.items()}
    files = {"image": (name, content, "application/octet-stream")}
    if sound is not None:
        files["audio"] = (*sound, "application/octet-stream")
    return {"files": files, "data": form, "headers": headers}


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


def auth_headers(api_key: Optional[str]) -> dict:
    """The Authorization header for `api_key` (default: STILLMOTION_API_KEY); none without a key."""
    api_key = api_key if api_key is not None else os.environ.get("STILLMOTION_API_KEY") or None
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def list_params(status: Optional[str], limit: int, cursor: Optional[str]) -> dict:
    return {k: v for k, v in (("status", status), ("limit", limit), ("cursor", cursor)) if v is not None}


def _backoff(attempt: int) -> float:
    return min(10.0, 0.5 * 2 ** attempt)


_CONNECTION_ERRORS = (httpx.TransportError,)


def _unreachable(base_url: str, e: Exception) -> errors.ServiceUnavailable:
    return errors.ServiceUnavailable(f"Cannot reach {base_url} ({type(e).__name__}: {e}); is the server running?")


# --------------------------------------------------------------------------- retry state, without the I/O
# Client and AsyncClient run the same loops; these hold what the loops decide, so the two only send and sleep.


class _Retrying:
    """One API call's retries: after a dropped connection (up to `retries` times), and after Retry-After while
    the server is busy (503/429, up to `busy_for` s)."""

    def __init__(self, base_url: str, retries: int, busy_for: float):
        self.base_url, self.retries = base_url, retries
        self.busy_until, self.failures = time.monotonic() + busy_for, 0

    def dropped(self, e: Exception) -> float:
        """Seconds to wait before the next try; ServiceUnavailable once the tries are spent."""
        self.failures += 1
        if self.failures > self.retries:
            raise _unreachable(self.base_url, e) from None
        return _backoff(self.failures - 1)

    def busy(self, r: httpx.Response) -> Optional[float]:
        """Seconds to wait before the next try, or None: `r` is the answer."""
        if r.status_code in RETRY_STATUSES and time.monotonic() + retry_after(r) < self.busy_until:
            return retry_after(r)
        return None


class _Again(Exception):
    def __init__(self, seconds: float):
        self.seconds = seconds


class _EventStream:
    """Following one job's event stream across reconnects: the Last-Event-ID to resume from, the SSE parser,
    and the clock that gives up after `reconnect_for` s without a working stream."""

    def __init__(self, job_id: str, reconnect_for: float):
        self.job_id, self.reconnect_for = job_id, reconnect_for
        self.url = f"/v1/videos/{job_id}/events"
        self.last_id: Optional[str] = None
        self.failing_since: Optional[float] = None
        self.attempt = 0
        self.parser = SSEParser()

    def headers(self) -> dict:
        return {"Accept": "text/event-stream", **({"Last-Event-ID": self.last_id} if self.last_id else {})}

    def opened(self, r: httpx.Response) -> None:
        """A connection answered: _Again when the server is busy; else a fresh parse begins."""
        if r.status_code in RETRY_STATUSES:
            raise _Again(retry_after(r))
        self.parser = SSEParser()

    def connected(self) -> None:
        """The stream is up (its answer checked): the give-up clock stops."""
        self.failing_since, self.attempt = None, 0

    def event(self, line: str) -> Optional[tuple[str, dict]]:
        """(event name, job) when `line` completes an event."""
        got = self.parser.feed(line)
        if got is None:
            return None
        eid, name, data = got
        self.last_id = eid or self.last_id
        return name, json.loads(data)

    def lost(self, e: Exception) -> float:
        """The stream broke (or the server was busy): seconds to wait before reconnecting; ServiceUnavailable
        once it has failed for over `reconnect_for` s."""
        now = time.monotonic()
        self.failing_since = self.failing_since or now
        if now - self.failing_since > self.reconnect_for:
            raise errors.ServiceUnavailable(f"Lost the event stream of job {self.job_id} for over "
                                            f"{self.reconnect_for:g} s; the job may still run on the server.")
        wait = e.seconds if isinstance(e, _Again) else _backoff(self.attempt)
        self.attempt += 1
        return wait


def is_last(name: str) -> bool:
    """Whether event `name` is a job's last one."""
    return name in TERMINAL or name == "deleted"


class _Download:
    """One file of a job into `path`, whole or not at all, through a `.part` file that a Range request resumes
    (also in a later call)."""

    def __init__(self, path: Union[str, os.PathLike], job_id: str, variant: str, retries: int):
        self.path, self.job_id, self.retries = Path(path), job_id, retries
        self.url, self.params = f"/v1/videos/{job_id}/content", {"variant": variant}
        self.part = self.path.with_name(f".{self.path.name}.{job_id}.{variant}.part")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.have = 0

    def headers(self) -> dict:
        """The next try's headers: a Range for what the part already has."""
        self.have = self.part.stat().st_size if self.part.exists() else 0
        return {"Range": f"bytes={self.have}-"} if self.have else {}

    def already_whole(self, r: httpx.Response) -> bool:
        return r.status_code == 416 and bool(self.have)  # the part is all there is

    def busy(self, r: httpx.Response, attempt: int) -> Optional[float]:
        """Seconds to wait before the next try while the server is busy and tries are left, else None."""
        return retry_after(r) if r.status_code in RETRY_STATUSES and attempt < self.retries else None

    def open(self, r: httpx.Response):
        """The part, to append the answer to (206) or to write from the start."""
        return open(self.part, "ab" if r.status_code == 206 else "wb")

    def broke(self, attempt: int) -> float:
        """The connection broke off: seconds to wait before resuming; ServiceUnavailable on the last try."""
        if attempt == self.retries:
            raise errors.ServiceUnavailable(f"The download of job {self.job_id} kept breaking off; run it again "
                                            "to resume it.") from None
        return _backoff(attempt)

    def stayed_busy(self) -> errors.ServiceUnavailable:
        return errors.ServiceUnavailable(f"The server stayed busy; the download of job {self.job_id} did not finish.")

    def finish(self, r: httpx.Response) -> Path:
        """Check the part is the whole file (Content-Range / Content-Length), then rename it to `path`."""
        total = None
        cr = r.headers.get("content-range", "")
        if "/" in cr and cr.rsplit("/", 1)[1].isdigit():
            total = int(cr.rsplit("/", 1)[1])
        elif r.status_code == 200 and r.headers.get("content-length", "").isdigit():
            total = int(r.headers["content-length"])
        size = self.part.stat().st_size
        if total is not None and size != total:
            if size > total:
                self.part.unlink()
            raise errors.ServiceUnavailable(f"The download of {self.path.name} stopped at {size} of {total} bytes; "
                                            "run it again to resume it.")
        os.replace(self.part, self.path)
        return self.path
