"""A client for a stillmotion server (`stillmotion serve`), on httpx: the API as a laptop drives a GPU box.

    from stillmotion import Client
    with Client("http://gpu-box:7860", api_key="...") as c:      # or STILLMOTION_SERVER / STILLMOTION_API_KEY
        job = c.submit("photo.jpg", {"seed": 42, "num_frames": 14})
        job = c.wait(job["id"], on_event=lambda name, job: print(name, job["progress"]["fraction"]))
        c.download(job["id"], "photo.mp4")                    # and "photo.json" with variant="sidecar"

`AsyncClient` has the same methods as coroutines. Both:
- retry 503 and 429 answers after the server's Retry-After (a full queue: for up to `busy_for` s, 15 min by
  default) and dropped connections (`retries` times);
- send every submit with an Idempotency-Key (a fresh one unless you give yours), so a retried submit
  never makes two videos: the server answers a repeated key with the job it already made;
- follow a job's event stream and reconnect with Last-Event-ID when it drops, so no event is missed;
- resume an interrupted download with a Range request, and write the file whole or not at all;
- raise the errors of stillmotion.errors from the server's error codes (InvalidInput for 422, ...).

The request building and answer reading are shared functions; the two classes only do the I/O.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from pathlib import Path
from typing import Callable, Iterator, Optional, Union

import httpx

from . import errors
from .spec import GenerationSpec

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
class Client:
    """A stillmotion server at `base_url` (default: STILLMOTION_SERVER); `api_key` (default: STILLMOTION_API_KEY)."""

    def __init__(self, base_url: Optional[str] = None, api_key: Optional[str] = None, *, timeout: float = 60.0,
                 retries: int = 5, busy_for: float = 900.0, http: Optional[httpx.Client] = None):
        self.base_url = server_from_env(base_url)
        api_key = api_key if api_key is not None else os.environ.get("STILLMOTION_API_KEY") or None
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.retries = retries  # tries after a dropped connection
        self.busy_for = busy_for  # seconds to keep retrying 503/429 (after each Retry-After) before giving up
        self.http = http or httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def _request(self, method: str, url: str, **kw) -> httpx.Response:
        """One call: retried after Retry-After while the server is busy (503/429, up to `busy_for` s), and
        after a dropped connection (up to `retries` times)."""
        busy_until, failures = time.monotonic() + self.busy_for, 0
        while True:
            try:
                r = self.http.request(method, url, **kw)
            except _CONNECTION_ERRORS as e:
                failures += 1
                if failures > self.retries:
                    raise _unreachable(self.base_url, e) from None
                time.sleep(_backoff(failures - 1))
                continue
            if r.status_code in RETRY_STATUSES and time.monotonic() + retry_after(r) < busy_until:
                time.sleep(retry_after(r))
                continue
            return check(r)

    # the API -----------------------------------------------------------------
    def submit(self, image: ImageArg, spec: SpecArg = None, *, idempotency_key: Optional[str] = None,
               model: Optional[str] = None, webhook: Optional[str] = None, inputs: Optional[dict] = None,
               **fields) -> dict:
        """Queue a video: `image` a path, bytes, or an http(s) URL the server fetches; `spec` a GenerationSpec
        or a dict of its fields (or give fields as keywords); `inputs` other inputs of the request. Returns the
        job. Without `idempotency_key` a fresh one is sent, so the retries inside never queue it twice."""
        kw = submit_request(image, spec, fields, model=model, webhook=webhook, inputs=inputs)
        headers = {"Idempotency-Key": idempotency_key or f"sm-{uuid.uuid4().hex}"}
        return self._request("POST", "/v1/videos", headers=headers, **kw).json()

    def get(self, job_id: str) -> dict:
        return self._request("GET", f"/v1/videos/{job_id}").json()

    def list(self, *, status: Optional[str] = None, limit: int = 20, cursor: Optional[str] = None) -> dict:
        """One page of jobs, newest first: {"data": [...], "has_more", "next_cursor"}."""
        params = {k: v for k, v in (("status", status), ("limit", limit), ("cursor", cursor)) if v is not None}
        return self._request("GET", "/v1/videos", params=params).json()

    def cancel(self, job_id: str) -> dict:
        return self._request("POST", f"/v1/videos/{job_id}/cancel").json()

    def delete(self, job_id: str) -> dict:
        return self._request("DELETE", f"/v1/videos/{job_id}").json()

    def ready(self) -> dict:
        """/readyz as it is (ready or not)."""
        try:
            return self.http.get("/readyz").json()
        except (httpx.TransportError, ValueError) as e:
            raise errors.ServiceUnavailable(f"Cannot reach {self.base_url} ({type(e).__name__}); "
                                            "is the server running?") from None

    def events(self, job_id: str, *, reconnect_for: float = 300.0,
               should_cancel: Optional[Callable[[], bool]] = None) -> Iterator[tuple[str, dict]]:
        """(event name, job) for each event of the job until its last one, reconnecting with Last-Event-ID.
        `should_cancel`: checked about every second; when it says yes the job is canceled on the server
        (the stream then ends with its `canceled` event)."""
        last_id: Optional[str] = None
        failing_since: Optional[float] = None
        canceled = False
        attempt = 0
        while True:
            headers = {"Accept": "text/event-stream"}
            if last_id is not None:
                headers["Last-Event-ID"] = last_id
            read = 1.0 if should_cancel is not None else 60.0
            try:
                with self.http.stream("GET", f"/v1/videos/{job_id}/events", headers=headers,
                                      timeout=httpx.Timeout(30.0, read=read)) as r:
                    if r.status_code in RETRY_STATUSES:
                        raise _Again(retry_after(r))
                    check(r)
                    failing_since, attempt = None, 0
                    parser = SSEParser()
                    for line in r.iter_lines():
                        got = parser.feed(line)
                        if got is None:
                            continue
                        eid, name, data = got
                        last_id = eid or last_id
                        job = json.loads(data)
                        yield name, job
                        if name in TERMINAL or name == "deleted":
                            return
                        if should_cancel is not None and not canceled and should_cancel():
                            canceled = True
                            self._cancel_quietly(job_id)
            except httpx.ReadTimeout:
                if should_cancel is not None and not canceled and should_cancel():
                    canceled = True
                    self._cancel_quietly(job_id)
                continue  # quiet stream: resume where it was
            except (_Again, httpx.TransportError) as e:
                now = time.monotonic()
                failing_since = failing_since or now
                if now - failing_since > reconnect_for:
                    raise errors.ServiceUnavailable(f"Lost the event stream of job {job_id} for over "
                                                    f"{reconnect_for:g} s; the job may still run on the server.")
                time.sleep(e.seconds if isinstance(e, _Again) else _backoff(attempt))
                attempt += 1

    def _cancel_quietly(self, job_id: str) -> None:
        try:
            self.cancel(job_id)
        except errors.Conflict:
            pass  # it ended meanwhile

    def wait(self, job_id: str, *, on_event: Optional[OnEvent] = None, should_cancel: Optional[Callable[[], bool]] = None,
             reconnect_for: float = 300.0) -> dict:
        """Follow the job until it ends; returns the final job (whatever its status)."""
        job = None
        for name, job in self.events(job_id, reconnect_for=reconnect_for, should_cancel=should_cancel):
            if on_event is not None:
                on_event(name, job)
        return job

    def download(self, job_id: str, path: Union[str, os.PathLike], *, variant: str = "video") -> Path:
        """The job's video (or variant="sidecar": its JSON sidecar) to `path`, whole or not at all: an interrupted
        download resumes with a Range request (also in a later call)."""
        path = Path(path)
        part = _part_path(path, job_id, variant)
        path.parent.mkdir(parents=True, exist_ok=True)
        for attempt in range(self.retries + 1):
            have = part.stat().st_size if part.exists() else 0
            headers = {"Range": f"bytes={have}-"} if have else {}
            try:
                with self.http.stream("GET", f"/v1/videos/{job_id}/content", params={"variant": variant},
                                      headers=headers) as r:
                    if r.status_code == 416 and have:  # the part is all there is
                        return _finish_part(part, path, r, have)
                    if r.status_code in RETRY_STATUSES and attempt < self.retries:
                        time.sleep(retry_after(r))
                        continue
                    check(r)
                    with open(part, "ab" if r.status_code == 206 else "wb") as f:
                        for chunk in r.iter_bytes():
                            f.write(chunk)
                    return _finish_part(part, path, r, None)
            except httpx.TransportError:
                if attempt == self.retries:
                    raise errors.ServiceUnavailable(f"The download of job {job_id} kept breaking off; run it again "
                                                    "to resume it.") from None
                time.sleep(_backoff(attempt))
        raise errors.ServiceUnavailable(f"The server stayed busy; the download of job {job_id} did not finish.")


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


# --------------------------------------------------------------------------- async
class AsyncClient:
    """Client's methods as coroutines, on httpx.AsyncClient."""

    def __init__(self, base_url: Optional[str] = None, api_key: Optional[str] = None, *, timeout: float = 60.0,
                 retries: int = 5, busy_for: float = 900.0, http: Optional[httpx.AsyncClient] = None):
        self.base_url = server_from_env(base_url)
        api_key = api_key if api_key is not None else os.environ.get("STILLMOTION_API_KEY") or None
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.retries = retries  # tries after a dropped connection
        self.busy_for = busy_for  # seconds to keep retrying 503/429 (after each Retry-After) before giving up
        self.http = http or httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=timeout)

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.http.aclose()

    async def _request(self, method: str, url: str, **kw) -> httpx.Response:
        busy_until, failures = time.monotonic() + self.busy_for, 0
        while True:
            try:
                r = await self.http.request(method, url, **kw)
            except _CONNECTION_ERRORS as e:
                failures += 1
                if failures > self.retries:
                    raise _unreachable(self.base_url, e) from None
                await asyncio.sleep(_backoff(failures - 1))
                continue
            if r.status_code in RETRY_STATUSES and time.monotonic() + retry_after(r) < busy_until:
                await asyncio.sleep(retry_after(r))
                continue
            return check(r)

    async def submit(self, image: ImageArg, spec: SpecArg = None, *, idempotency_key: Optional[str] = None,
                     model: Optional[str] = None, webhook: Optional[str] = None, inputs: Optional[dict] = None,
                     **fields) -> dict:
        kw = submit_request(image, spec, fields, model=model, webhook=webhook, inputs=inputs)
        headers = {"Idempotency-Key": idempotency_key or f"sm-{uuid.uuid4().hex}"}
        return (await self._request("POST", "/v1/videos", headers=headers, **kw)).json()

    async def get(self, job_id: str) -> dict:
        return (await self._request("GET", f"/v1/videos/{job_id}")).json()

    async def list(self, *, status: Optional[str] = None, limit: int = 20, cursor: Optional[str] = None) -> dict:
        params = {k: v for k, v in (("status", status), ("limit", limit), ("cursor", cursor)) if v is not None}
        return (await self._request("GET", "/v1/videos", params=params)).json()

    async def cancel(self, job_id: str) -> dict:
        return (await self._request("POST", f"/v1/videos/{job_id}/cancel")).json()

    async def delete(self, job_id: str) -> dict:
        return (await self._request("DELETE", f"/v1/videos/{job_id}")).json()

    async def wait(self, job_id: str, *, on_event: Optional[OnEvent] = None, reconnect_for: float = 300.0) -> dict:
        """Follow the job's event stream (reconnecting with Last-Event-ID) until it ends; the final job."""
        last_id: Optional[str] = None
        failing_since: Optional[float] = None
        attempt = 0
        while True:
            headers = {"Accept": "text/event-stream", **({"Last-Event-ID": last_id} if last_id else {})}
            try:
                async with self.http.stream("GET", f"/v1/videos/{job_id}/events", headers=headers,
                                            timeout=httpx.Timeout(30.0, read=60.0)) as r:
                    if r.status_code in RETRY_STATUSES:
                        raise _Again(retry_after(r))
                    if r.status_code >= 400:
                        await r.aread()
                        check(r)
                    failing_since, attempt = None, 0
                    parser = SSEParser()
                    async for line in r.aiter_lines():
                        got = parser.feed(line)
                        if got is None:
                            continue
                        eid, name, data = got
                        last_id = eid or last_id
                        job = json.loads(data)
                        if on_event is not None:
                            on_event(name, job)
                        if name in TERMINAL or name == "deleted":
                            return job
            except httpx.ReadTimeout:
                continue
            except (_Again, httpx.TransportError) as e:
                now = time.monotonic()
                failing_since = failing_since or now
                if now - failing_since > reconnect_for:
                    raise errors.ServiceUnavailable(f"Lost the event stream of job {job_id} for over "
                                                    f"{reconnect_for:g} s; the job may still run on the server.")
                await asyncio.sleep(e.seconds if isinstance(e, _Again) else _backoff(attempt))
                attempt += 1

    async def download(self, job_id: str, path: Union[str, os.PathLike], *, variant: str = "video") -> Path:
        path = Path(path)
        part = _part_path(path, job_id, variant)
        path.parent.mkdir(parents=True, exist_ok=True)
        for attempt in range(self.retries + 1):
            have = part.stat().st_size if part.exists() else 0
            headers = {"Range": f"bytes={have}-"} if have else {}
            try:
                async with self.http.stream("GET", f"/v1/videos/{job_id}/content", params={"variant": variant},
                                            headers=headers) as r:
                    if r.status_code == 416 and have:
                        return _finish_part(part, path, r, have)
                    if r.status_code in RETRY_STATUSES and attempt < self.retries:
                        await asyncio.sleep(retry_after(r))
                        continue
                    if r.status_code >= 400:
                        await r.aread()
                        check(r)
                    with open(part, "ab" if r.status_code == 206 else "wb") as f:
                        async for chunk in r.aiter_bytes():
                            f.write(chunk)
                    return _finish_part(part, path, r, None)
            except httpx.TransportError:
                if attempt == self.retries:
                    raise errors.ServiceUnavailable(f"The download of job {job_id} kept breaking off; run it again "
                                                    "to resume it.") from None
                await asyncio.sleep(_backoff(attempt))
        raise errors.ServiceUnavailable(f"The server stayed busy; the download of job {job_id} did not finish.")


__all__ = ["AsyncClient", "Client", "error_for", "job_error"]