"""Server settings: one plain object built by `stillmotion serve` (or a test) and
handed to create_app(). Nothing here reads the environment at import time."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional


@dataclass
class Settings:
    data_dir: Path = Path("stillmotion-data")
    model: str = "svd-xt"
    device: Optional[str] = None
    dtype: Optional[str] = None
    offload: str = "none"
    forward_chunking: bool = False
    warmup: bool = True
    engine_options: dict = field(default_factory=dict)  # more Engine(...) keywords: memory, max_memory, compile
    workers: Optional[int] = None  # worker processes (None: one per visible GPU, one on a CPU)
    cpu_threads: Optional[int] = None  # torch intra-op threads in the worker (None: torch's default)
    api_key: Optional[str] = None  # every /v1 call then needs Authorization: Bearer KEY
    ui: bool = True
    ui_auth: Optional[tuple[str, str]] = None
    max_queue: int = 100
    max_upload_mb: float = 20.0
    max_wait: float = 60.0  # the longest Prefer: wait=N we honour
    drain_timeout: float = 60.0
    allow_private_urls: bool = False  # let clients' image and webhook URLs reach private/local addresses
    keep_days: Optional[float] = None  # finished jobs and their files are deleted this long after finishing
    webhook_secret: Optional[str] = None
    webhook_max_attempts: int = 8
    start_worker: bool = True
    worker_poll: float = 0.1
    sse_poll: float = 0.1
    extra_worker_config: dict = field(default_factory=dict)

    def __post_init__(self):
        self.data_dir = Path(self.data_dir).expanduser().absolute()
        if self.api_key is None:
            self.api_key = os.environ.get("STILLMOTION_API_KEY") or None
        if self.webhook_secret is None:
            self.webhook_secret = os.environ.get("STILLMOTION_WEBHOOK_SECRET") or None

    @property
    def db_path(self) -> Path:
        return self.data_dir / "jobs.sqlite3"

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    def worker_config(self) -> dict:
        return {
            "model": self.model,
            "device": self.device,
            "dtype": self.dtype,
            "offload": self.offload,
            "forward_chunking": self.forward_chunking,
            "warmup": self.warmup,
            "threads": self.cpu_threads,
            "engine_options": dict(self.engine_options),
            "poll": self.worker_poll,
            **self.extra_worker_config,
        }


def parse_ui_auth(value: Optional[str]) -> Optional[tuple[str, str]]:
    if not value:
        return None
    from ..errors import InvalidInput

    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise InvalidInput("--ui-auth must look like user:password")
    return user, password
