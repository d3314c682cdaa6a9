"""AsyncClient: the server's API as coroutines, on httpx.AsyncClient."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Optional, Union

import httpx

from .common import (
    _Again, auth_headers, check, _CONNECTION_ERRORS, _Download, _EventStream, ImageArg, is_last, list_params,
    OnEvent, _Retrying, server_from_env, SpecArg, submit_request,
)


class AsyncClient:
    """Client's methods as coroutines, on httpx.AsyncClient."""

    def __init__(self, base_url: Optional[str] = None, api_key: Optional[str] = None, *, timeout: float = 60.0,
                 retries: int = 5, busy_for: float = 900.0, http: Optional[httpx.AsyncClient] = None):
        self.base_url = server_from_env(base_url)
        self.retries = retries  # tries after a dropped connection
        self.busy_for = busy_for  # seconds to keep retrying 503/429 (after each Retry-After) before giving up
        self.http = http or httpx.AsyncClient(base_url=self.base_url, headers=auth_headers(api_key), timeout=timeout)

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.http.aclose()

    async def _request(self, method: str, url: str, **kw) -> httpx.Response:
        tries = _Retrying(self.base_url, self.retries, self.busy_for)
        while True:
            try:
                r = await self.http.request(method, url, **kw)
            except _CONNECTION_ERRORS as e:
                await asyncio.sleep(tries.dropped(e))
                continue
            if (wait := tries.busy(r)) is None:
                return check(r)
            await asyncio.sleep(wait)

    async def submit(self, image: ImageArg, spec: SpecArg = None, *, idempotency_key: Optional[str] = None,
                     model: Optional[str] = None, webhook: Optional[str] = None, inputs: Optional[dict] = None,
                     audio: Optional[ImageArg] = None, **fields) -> dict:
        kw = submit_request(image, spec, fields, model=model, webhook=webhook, inputs=inputs,
                            idempotency_key=idempotency_key, audio=audio)
        return (await self._request("POST", "/v1/videos", **kw)).json()

    async def get(self, job_id: str) -> dict:
        return (await self._request("GET", f"/v1/videos/{job_id}")).json()

    async def list(self, *, status: Optional[str] = None, limit: int = 20, cursor: Optional[str] = None) -> dict:
        return (await self._request("GET", "/v1/videos", params=list_params(status, limit, cursor))).json()

    async def cancel(self, job_id: str) -> dict:
        return (await self._request("POST", f"/v1/videos/{job_id}/cancel")).json()

    async def delete(self, job_id: str) -> dict:
        return (await self._request("DELETE", f"/v1/videos/{job_id}")).json()

    async def wait(self, job_id: str, *, on_event: Optional[OnEvent] = None, reconnect_for: float = 300.0) -> dict:
        """Follow the job's event stream (reconnecting with Last-Event-ID) until it ends; the final job."""
        stream = _EventStream(job_id, reconnect_for)
        while True:
            try:
                async with self.http.stream("GET", stream.url, headers=stream.headers(),
                                            timeout=httpx.Timeout(30.0, read=60.0)) as r:
                    stream.opened(r)
                    if r.status_code >= 400:
                        await r.aread()
                        check(r)
                    stream.connected()
                    async for line in r.aiter_lines():
                        if (got := stream.event(line)) is None:
                            continue
                        name, job = got
                        if on_event is not None:
                            on_event(name, job)
                        if is_last(name):
                            return job
            except httpx.ReadTimeout:
                continue
            except (_Again, httpx.TransportError) as e:
                await asyncio.sleep(stream.lost(e))

    async def download(self, job_id: str, path: Union[str, os.PathLike], *, variant: str = "video") -> Path:
        dl = _Download(path, job_id, variant, self.retries)
        for attempt in range(self.retries + 1):
            try:
                async with self.http.stream("GET", dl.url, params=dl.params, headers=dl.headers()) as r:
                    if dl.already_whole(r):
                        return dl.finish(r)
                    if (wait := dl.busy(r, attempt)) is not None:
                        await asyncio.sleep(wait)
                        continue
                    if r.status_code >= 400:
                        await r.aread()
                        check(r)
                    with dl.open(r) as f:
                        async for chunk in r.aiter_bytes():
                            f.write(chunk)
                    return dl.finish(r)
            except httpx.TransportError:
                await asyncio.sleep(dl.broke(attempt))
        raise dl.stayed_busy()
