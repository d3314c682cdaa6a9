"""Runs the worker process beside the API and keeps it alive.

The worker (jobs/worker.py) runs the Engine in its own process. When it dies
(segfault, CUDA fatal error, OOM killer, kill -9) the API keeps answering: the
supervisor marks its job for one retry (or fails it after the second death,
see JobStore.recover) and starts a fresh worker, backing off when it keeps
dying. On shutdown it drains: SIGTERM to the worker, which finishes the
running job and exits; after the drain timeout it is killed and its job goes
back to the queue for the next start.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from typing import Optional

from ..jobs.store import JobStore
from .settings import Settings

log = logging.getLogger("stillmotion.server")


class Supervisor:
    def __init__(self, settings: Settings, store: JobStore):
        self.settings = settings
        self.store = store
        self.proc: Optional[subprocess.Popen] = None
        self.worker_id: Optional[str] = None
        self.restarts = 0
        self.deaths = 0
        self.draining = False
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: Optional[threading.Thread] = None

    # ------------------------------------------------------------------
    def start(self) -> None:
        requeued = self.store.recover(reason="the server stopped while it ran")
        if requeued:
            log.info("re-queued %d job(s) left running by the last server: %s", len(requeued), ", ".join(requeued))
        self.store.forget_workers()
        self._spawn()
        self._thread = threading.Thread(target=self._monitor, name="worker-supervisor", daemon=True)
        self._thread.start()

    def _spawn(self) -> None:
        self.worker_id = f"w-{os.getpid()}-{secrets.token_hex(3)}"
        cmd = [
            sys.executable, "-m", "stillmotion.jobs.worker",
            "--data-dir", str(self.settings.data_dir),
            "--worker-id", self.worker_id,
            "--config", json.dumps(self.settings.worker_config()),
            "--watch-stdin",
        ]
        # its own session: a Ctrl-C in the terminal reaches the server, which drains the worker itself
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, start_new_session=True)
        log.info("started worker %s (pid %d)", self.worker_id, self.proc.pid)

    def _monitor(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            with self._lock:
                proc, wid = self.proc, self.worker_id
                rc = proc.poll() if proc is not None else None
                if rc is not None and not self.draining:
                    self.deaths += 1
                    touched = self.store.recover(wid, reason=f"exit code {rc}")
                    log.error("worker %s exited with code %s; %s", wid, rc,
                              f"its job {touched[0]} is retried or failed" if touched else "no job was running")
                    ready_before = any(w["id"] == wid and w["state"] in ("ready", "draining") for w in self.store.workers())
                    backoff = 0.5 if ready_before else min(backoff * 2, 30.0)
            if rc is not None and not self.draining:
                self._stop.wait(backoff)
                with self._lock:
                    if not self.draining and not self._stop.is_set():
                        self.restarts += 1
                        self._spawn()
            self._stop.wait(0.2)

    # ------------------------------------------------------------------
    def worker_row(self) -> Optional[dict]:
        for w in self.store.workers():
            if w["id"] == self.worker_id:
                return w
        return None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def ready(self) -> tuple[bool, str]:
        if self.draining:
            return False, "draining: finishing the running job before shutting down"
        if not self.alive:
            return False, "the worker process is restarting"
        row = self.worker_row()
        if row is None or row["state"] == "loading":
            return False, "loading the model"
        if row["state"] == "failed":
            err = (row["info"] or {}).get("error", {})
            return False, f"the model failed to load: {err.get('message', 'see the server log')}"
        if row["state"] != "ready":
            return False, f"worker is {row['state']}"
        return True, "ready"

    def drain(self, timeout: float) -> bool:
        """Stop taking jobs, let the running one finish (up to `timeout` s), stop the worker.
        Returns True when the worker finished in time."""
        with self._lock:
            self.draining = True
        self._stop.set()
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return True
        try:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=max(0.0, timeout))
            return True
        except subprocess.TimeoutExpired:
            log.warning("drain timeout (%.0f s): stopping the worker; its job stays queued for the next start", timeout)
            proc.kill()
            proc.wait()
            self.store.recover(self.worker_id, reason="drain timeout", count_attempt=False)
            return False
        finally:
            if proc.stdin:
                try:
                    proc.stdin.close()
                except OSError:
                    pass

    def kill_worker(self) -> None:
        """For tests and admin: kill the worker as a crash would."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
