"""Runs the worker processes beside the API and keeps them alive.

One worker per GPU (one on a CPU-only machine, or --workers N). Each runs the
Engine in its own process (jobs/worker.py) and claims jobs from the shared
store, so they drain one queue in order. When a worker dies (segfault, CUDA
fatal error, OOM killer, kill -9) the API keeps answering: the supervisor
marks its job for one retry (or fails it after the second death, see
SQLiteJobStore.recover) and starts a fresh worker on the same device, backing off
when it keeps dying. On shutdown it drains: SIGTERM to every worker, each
finishes its running job and exits; after the drain timeout the rest are
killed and their jobs go back to the queue for the next start.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from typing import Optional

from ..jobs.types import JobStore
from .settings import Settings

log = logging.getLogger("stillmotion.server")


def worker_devices(settings: Settings) -> list[Optional[str]]:
    """The device of each worker (None: auto): --workers N if given, else one per visible GPU, else one."""
    device = settings.engine.device_or_none
    gpus = visible_gpus() if device in (None, "auto", "cuda") else 0
    n = settings.workers or max(1, gpus)
    if device in (None, "auto", "cuda") and gpus > 1:
        return [f"cuda:{i % gpus}" for i in range(n)]
    return [device] * n


def visible_gpus() -> int:
    """NVIDIA GPUs this process may use, without importing torch in the API process."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return len([d for d in env.split(",") if d.strip() and d.strip() != "-1"])
    if shutil.which("nvidia-smi") is None:
        return 0
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


class WorkerSlot:
    """One worker process on one device, restarted in place when it dies."""

    def __init__(self, index: int, device: Optional[str]):
        self.index, self.device = index, device
        self.proc: Optional[subprocess.Popen] = None
        self.worker_id: Optional[str] = None
        self.restarts = 0
        self.backoff = 0.5
        self.restart_at: Optional[float] = None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class Supervisor:
    """The WorkerPool (jobs.types) of worker processes on this machine: one per slot, each restarted when it dies."""

    def __init__(self, settings: Settings, store: JobStore):
        self.settings = settings
        self.store = store
        self.slots = [WorkerSlot(i, d) for i, d in enumerate(worker_devices(settings))]
        self.draining = False
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: Optional[threading.Thread] = None

    @property
    def restarts(self) -> int:
        return sum(s.restarts for s in self.slots)

    @property
    def alive(self) -> bool:
        return any(s.alive for s in self.slots)

    # ------------------------------------------------------------------
    def start(self) -> None:
        requeued = self.store.recover(reason="the server stopped while it ran")
        if requeued:
            log.info("re-queued %d job(s) left running by the last server: %s", len(requeued), ", ".join(requeued))
        self.store.forget_workers()
        for slot in self.slots:
            self._spawn(slot)
        self._thread = threading.Thread(target=self._monitor, name="worker-supervisor", daemon=True)
        self._thread.start()

    def _spawn(self, slot: WorkerSlot) -> None:
        slot.worker_id = f"w{slot.index}-{os.getpid()}-{secrets.token_hex(3)}"
        config = self.settings.worker_config(device=slot.device)
        cmd = [
            sys.executable, "-m", "stillmotion.jobs.worker",
            "--data-dir", str(self.settings.data_dir),
            "--worker-id", slot.worker_id,
            "--config", json.dumps(config),
            "--watch-stdin",
        ]
        # its own session: a Ctrl-C in the terminal reaches the server, which drains the worker itself
        slot.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, start_new_session=True)
        os.set_blocking(slot.proc.stdin.fileno(), False)  # notify() must never block an API thread
        slot.restart_at = None
        log.info("started worker %s on %s (pid %d)", slot.worker_id, slot.device or "auto", slot.proc.pid)

    def _monitor(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                if self.draining:
                    return
                for slot in self.slots:
                    self._check(slot)
            self._stop.wait(0.2)

    def _check(self, slot: WorkerSlot) -> None:
        now = time.monotonic()
        if slot.restart_at is not None:
            if now >= slot.restart_at:
                slot.restarts += 1
                self._spawn(slot)
            return
        rc = slot.proc.poll() if slot.proc is not None else None
        if rc is None:
            return
        touched = self.store.recover(slot.worker_id, reason=f"exit code {rc}")
        log.error("worker %s exited with code %s; %s", slot.worker_id, rc,
                  f"its job {touched[0]} is retried or failed" if touched else "no job was running")
        row = self.worker_row(slot)
        was_ready = row is not None and row["state"] in ("ready", "draining")
        slot.backoff = 0.5 if was_ready else min(slot.backoff * 2, 30.0)  # a worker that cannot load backs off
        slot.restart_at = now + slot.backoff

    def notify(self) -> None:
        """Wake idle workers now instead of at their next poll (a byte on each one's stdin)."""
        for s in self.slots:
            try:
                if s.alive and s.proc.stdin is not None:
                    s.proc.stdin.write(b"\n")
                    s.proc.stdin.flush()
            except (OSError, ValueError):
                pass  # dying or restarting: the monitor deals with it

    # ------------------------------------------------------------------
    def worker_row(self, slot: Optional[WorkerSlot] = None) -> Optional[dict]:
        wid = (slot or self.slots[0]).worker_id
        for w in self.store.workers():
            if w["id"] == wid:
                return w
        return None

    def describe(self) -> list[dict]:
        rows = {w["id"]: w for w in self.store.workers()}
        out = []
        for s in self.slots:
            row = rows.get(s.worker_id) or {}
            info = {k: v for k, v in (row.get("info") or {}).items() if k != "defaults"}
            out.append({"id": s.worker_id, "pid": s.proc.pid if s.proc else None, "device": s.device or "auto",
                        "alive": s.alive, "state": row.get("state"), "restarts": s.restarts, **info})
        return out

    def ready(self) -> tuple[bool, str]:
        """Ready when at least one worker has its model loaded and warmed."""
        if self.draining:
            return False, "draining: finishing the running job before shutting down"
        reasons = []
        for slot in self.slots:
            row = self.worker_row(slot)
            if not slot.alive:
                reasons.append("the worker process is restarting")
            elif row is None or row["state"] == "loading":
                reasons.append("loading the model")
            elif row["state"] == "failed":
                err = (row["info"] or {}).get("error", {})
                reasons.append(f"the model failed to load: {err.get('message', 'see the server log')}")
            elif row["state"] == "ready":
                return True, "ready"
            else:
                reasons.append(f"worker is {row['state']}")
        return False, reasons[0] if reasons else "no worker"

    def drain(self, timeout: float) -> bool:
        """Stop taking jobs, let running ones finish (up to `timeout` s), stop the workers.
        Returns True when every worker finished in time."""
        with self._lock:
            self.draining = True
        self._stop.set()
        live = [s for s in self.slots if s.alive]
        for s in live:
            s.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + max(0.0, timeout)
        clean = True
        for s in live:
            try:
                s.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                clean = False
                log.warning("drain timeout (%.0f s): stopping worker %s; its job stays queued for the next start",
                            timeout, s.worker_id)
                s.proc.kill()
                s.proc.wait()
                self.store.recover(s.worker_id, reason="drain timeout", count_attempt=False)
            finally:
                if s.proc.stdin:
                    try:
                        s.proc.stdin.close()
                    except OSError:
                        pass
        return clean
