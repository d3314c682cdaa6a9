"""Completion webhooks: POST the finished job to its `webhook` URL.

Runs in its own thread (and a small pool for the calls), so a slow or dead
receiver never blocks the worker or the API. Delivery state lives in the job
row (webhook_state, webhook_attempts, webhook_next_at), so a restart resumes
pending deliveries. Retries back off 1, 2, 4 ... 300 s, up to max_attempts.

Each call carries

    Stillmotion-Event: video.succeeded | video.failed | video.canceled
    Stillmotion-Webhook-Id: <job id>
    Stillmotion-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>

Receivers recompute the HMAC over the raw body with the shared secret
(--webhook-secret / STILLMOTION_WEBHOOK_SECRET) and compare in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

from ..errors import InvalidInput
from ..jobs.types import Job, JobStore
from ..netguard import check_public_url

log = logging.getLogger("stillmotion.webhooks")


def sign(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(secret: str, header: str, body: bytes, tolerance: float = 300) -> bool:
    """For receivers (and tests): check a Stillmotion-Signature header."""
    try:
        parts = dict(p.split("=", 1) for p in header.split(","))
        ts = int(parts["t"])
    except (ValueError, KeyError):
        return False
    if abs(time.time() - ts) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, ts, body), header)


def load_or_create_secret(data_dir: Path) -> str:
    """A secret kept in the data folder when none is configured, so restarts keep it."""
    f = Path(data_dir) / "webhook_secret"
    if f.is_file():
        return f.read_text().strip()
    secret = secrets.token_hex(32)
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text(secret)
    f.chmod(0o600)
    return secret


class WebhookSender:
    def __init__(self, store: JobStore, secret: str, view: Callable[[Job], dict], *, max_attempts: int = 8,
                 timeout: float = 10.0, poll: float = 0.5, public_only: bool = True):
        self.store, self.secret, self.view = store, secret, view
        self.public_only = public_only  # refuse hosts that resolve to private addresses (netguard.py)
        self.max_attempts, self.timeout, self.poll = max_attempts, timeout, poll
        self._stop = threading.Event()
        self._busy: set[str] = set()
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="webhook")
        self._thread = threading.Thread(target=self._loop, name="webhooks", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                for job in self.store.webhooks_due(time.time()):
                    with self._lock:
                        if job.id in self._busy:
                            continue
                        self._busy.add(job.id)
                    self._pool.submit(self._deliver, job)
            except Exception:  # noqa: BLE001 - keep the loop alive
                log.exception("webhook loop")
            self._stop.wait(self.poll)

    def _deliver(self, job: Job) -> None:
        import httpx

        try:
            body = json.dumps(self.view(job), separators=(",", ":")).encode()
            ts = int(time.time())
            headers = {
                "Content-Type": "application/json",
                "User-Agent": "stillmotion-webhook",
                "Stillmotion-Event": f"video.{job.status}",
                "Stillmotion-Webhook-Id": job.id,
                "Stillmotion-Signature": sign(self.secret, ts, body),
            }
            attempts = job.webhook_attempts + 1
            try:
                if self.public_only:  # checked again here: DNS may have changed since the job was submitted
                    check_public_url(job.webhook, "webhook")
                r = httpx.post(job.webhook, content=body, headers=headers, timeout=self.timeout)
                ok = 200 <= r.status_code < 300
                why = f"HTTP {r.status_code}"
            except httpx.HTTPError as e:
                ok, why = False, type(e).__name__
            except InvalidInput as e:
                ok, why, attempts = False, e.message, self.max_attempts  # no retry: the address will not change
            if ok:
                self.store.webhook_result(job.id, "delivered", attempts, None)
            elif attempts >= self.max_attempts:
                log.warning("webhook for %s failed %d times (%s); giving up", job.id, attempts, why)
                self.store.webhook_result(job.id, "failed", attempts, None)
            else:
                delay = min(300.0, 2.0 ** (attempts - 1))
                self.store.webhook_result(job.id, "pending", attempts, time.time() + delay)
        except Exception:  # noqa: BLE001
            log.exception("webhook delivery for %s", job.id)
        finally:
            with self._lock:
                self._busy.discard(job.id)
