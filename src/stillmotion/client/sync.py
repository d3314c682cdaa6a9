"""Client: the server's API as blocking calls, on httpx.Client."""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Callable, Iterator, Optional, Union

import httpx

from .. import errors
from .common import (
    _Again, _backoff, check, _CONNECTION_ERRORS, _finish_part, ImageArg, OnEvent, _part_path, retry_after,
    RETRY_STATUSES, server_from_env, SpecArg, SSEParser, submit_request, TERMINAL, _unreachable,
)


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
