"""Client: the server's API as blocking calls, on httpx.Client."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable, Iterator, Optional, Union

import httpx

from .. import errors
from .common import (
    _Again, auth_headers, check, _CONNECTION_ERRORS, _Download, _EventStream, ImageArg, is_last, list_params,
    OnEvent, _Retrying, server_from_env, SpecArg, submit_request, _unreachable,
)


class Client:
    """A stillmotion server at `base_url` (default: STILLMOTION_SERVER); `api_key` (default: STILLMOTION_API_KEY)."""

    def __init__(self, base_url: Optional[str] = None, api_key: Optional[str] = None, *, timeout: float = 60.0,
                 retries: int = 5, busy_for: float = 900.0, http: Optional[httpx.Client] = None):
        self.base_url = server_from_env(base_url)
        self.retries = retries  # tries after a dropped connection
        self.busy_for = busy_for  # seconds to keep retrying 503/429 (after each Retry-After) before giving up
        self.http = http or httpx.Client(base_url=self.base_url, headers=auth_headers(api_key), timeout=timeout)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def _request(self, method: str, url: str, **kw) -> httpx.Response:
        """One call: retried after Retry-After while the server is busy (503/429, up to `busy_for` s), and
        after a dropped connection (up to `retries` times)."""
        tries = _Retrying(self.base_url, self.retries, self.busy_for)
        while True:
            try:
                r = self.http.request(method, url, **kw)
            except _CONNECTION_ERRORS as e:
                time.sleep(tries.dropped(e))
                continue
            if (wait := tries.busy(r)) is None:
                return check(r)
            time.sleep(wait)

    # the API -----------------------------------------------------------------
    def submit(self, image: ImageArg, spec: SpecArg = None, *, idempotency_key: Optional[str] = None,
               model: Optional[str] = None, webhook: Optional[str] = None, inputs: Optional[dict] = None,
               audio: Optional[ImageArg] = None, **fields) -> dict:
        """Queue a video: `image` a path, bytes, or an http(s) URL the server fetches; `spec` a GenerationSpec
        or a dict of its fields (or give fields as keywords); `inputs` other inputs of the request; `audio` a
        soundtrack for the model to follow (a path or bytes). Returns the job. Without `idempotency_key` a fresh one is sent, so the retries inside never queue it twice."""
        kw = submit_request(image, spec, fields, model=model, webhook=webhook, inputs=inputs,
                            idempotency_key=idempotency_key, audio=audio)
        return self._request("POST", "/v1/videos", **kw).json()

    def get(self, job_id: str) -> dict:
        return self._request("GET", f"/v1/videos/{job_id}").json()

    def list(self, *, status: Optional[str] = None, limit: int = 20, cursor: Optional[str] = None) -> dict:
        """One page of jobs, newest first: {"data": [...], "has_more", "next_cursor"}."""
        return self._request("GET", "/v1/videos", params=list_params(status, limit, cursor)).json()

    def cancel(self, job_id: str) -> dict:
        return self._request("POST", f"/v1/videos/{job_id}/cancel").json()

    def delete(self, job_id: str) -> dict:
        return self._request("DELETE", f"/v1/videos/{job_id}").json()

    def ready(self) -> dict:
        """/readyz as it is (ready or not)."""
        try:
            return self.http.get("/readyz").json()
        except (httpx.TransportError, ValueError) as e:
            raise _unreachable(self.base_url, e) from None

    def events(self, job_id: str, *, reconnect_for: float = 300.0,
               should_cancel: Optional[Callable[[], bool]] = None) -> Iterator[tuple[str, dict]]:
        """(event name, job) for each event of the job until its last one, reconnecting with Last-Event-ID.
        `should_cancel`: checked about every second; when it says yes the job is canceled on the server
        (the stream then ends with its `canceled` event)."""
        stream = _EventStream(job_id, reconnect_for)
        canceled = False
        read = 1.0 if should_cancel is not None else 60.0
        while True:
            try:
                with self.http.stream("GET", stream.url, headers=stream.headers(),
                                      timeout=httpx.Timeout(30.0, read=read)) as r:
                    stream.opened(r)
                    check(r)
                    stream.connected()
                    for line in r.iter_lines():
                        if (got := stream.event(line)) is None:
                            continue
                        yield got
                        if is_last(got[0]):
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
                time.sleep(stream.lost(e))

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
        """The job's video (variant="sidecar": its JSON sidecar; "audio": the WAV beside a gif/webp video with sound)
        to `path`, whole or not at all: an interrupted
        download resumes with a Range request (also in a later call)."""
        dl = _Download(path, job_id, variant, self.retries)
        for attempt in range(self.retries + 1):
            try:
                with self.http.stream("GET", dl.url, params=dl.params, headers=dl.headers()) as r:
                    if dl.already_whole(r):
                        return dl.finish(r)
                    if (wait := dl.busy(r, attempt)) is not None:
                        time.sleep(wait)
                        continue
                    check(r)
                    with dl.open(r) as f:
                        for chunk in r.iter_bytes():
                            f.write(chunk)
                    return dl.finish(r)
            except httpx.TransportError:
                time.sleep(dl.broke(attempt))
        raise dl.stayed_busy()
