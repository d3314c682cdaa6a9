"""AsyncClient: the server's API as coroutines, on httpx.AsyncClient."""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from pathlib import Path
from typing import Optional, Union

import httpx

from .. import errors
from .common import (
    _Again, _backoff, check, _CONNECTION_ERRORS, _finish_part, ImageArg, OnEvent,
    _part_path, retry_after, RETRY_STATUSES, server_from_env, SpecArg, SSEParser, submit_request, TERMINAL,
    _unreachable,
)


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

