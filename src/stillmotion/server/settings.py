"""Server settings: one plain object built by `stillmotion serve` (or a test) and
handed to create_app(). How the model runs is one EngineConfig (`engine`), handed
as it is to every worker. Nothing here reads the environment at import time."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ..engine.config import EngineConfig
from ..jobs.types import AFFINITY_PASSES, AFFINITY_WAIT_S


@dataclass
class Settings:
    data_dir: Path = Path("stillmotion-data")
    engine: EngineConfig = field(default_factory=EngineConfig)  # model, device, threads, ... of every worker
    models: tuple = ()  # further models served beside engine.model (the default); `serve --model A --model B`
    loras: dict = field(default_factory=dict)  # served LoRA adapters: name -> a `stillmotion train --lora` folder
    affinity_passes: int = AFFINITY_PASSES  # a queued job lets at most this many loaded-model jobs go first
    affinity_wait: float = AFFINITY_WAIT_S  # ... and none once it has waited this many seconds
    warmup: bool = True
    workers: Optional[int] = None  # worker processes (None: one per visible GPU, one on a CPU)
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

    def __post_init__(self):
        self.data_dir = Path(self.data_dir).expanduser().absolute()
        if self.api_key is None:
            self.api_key = os.environ.get("STILLMOTION_API_KEY") or None
        if self.webhook_secret is None:
            self.webhook_secret = os.environ.get("STILLMOTION_WEBHOOK_SECRET") or None
        self.models = tuple(m for m in self.models if m != self.engine.model)
        if len(set(self.models)) != len(self.models):
            from ..errors import InvalidInput

            raise InvalidInput("--model: each model once; the first one given is the default.")
        self.loras = {str(k): Path(v).expanduser().absolute() for k, v in self.loras.items()}

    @property
    def served_models(self) -> list[str]:
        """Every model this server runs; the first (engine.model) is a request's default."""
        return [self.engine.model, *self.models]

    @property
    def db_path(self) -> Path:
        return self.data_dir / "jobs.sqlite3"

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    def worker_config(self, device: Optional[str] = None) -> dict:
        """What a worker process is started with (JSON; jobs/worker.py reads it back). `device`: this
        worker's device, when the supervisor gives each its own GPU."""
        engine = self.engine.replace(device=device) if device else self.engine
        out = {"engine": engine.to_json(), "warmup": self.warmup}
        if self.models or self.loras:  # several models or adapters; one model alone keeps the plain worker
            out.update(models=self.served_models, loras={k: str(v) for k, v in self.loras.items()},
                       affinity={"max_passed": self.affinity_passes, "max_wait": self.affinity_wait})
        return out


def parse_ui_auth(value: Optional[str]) -> Optional[tuple[str, str]]:
    if not value:
        return None
    from ..errors import InvalidInput

    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise InvalidInput("--ui-auth must look like user:password")
    return user, password
