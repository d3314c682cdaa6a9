"""The worker process: loads the Engine once, then drains the job queue in order.

    python -m stillmotion.jobs.worker --data-dir DIR --worker-id ID --config JSON

The config is server.Settings.worker_config(): the EngineConfig as JSON, the
served models and LoRAs, the queue's affinity bounds, whether to warm up and
how often to poll.

Several models (`serve --model A --model B`): the worker keeps an Engine per
model, least recently used first. A model loads beside the resident ones when
`fits_beside()` says so (the weights' bytes against engine.memory.device_budget
or --max-memory, a quarter kept for a run's activations; on a CPU with no
--max-memory, at most CPU_MAX_RESIDENT pipelines); otherwise the least recently
used one is dropped first (a swap: counted, timed, shown on /readyz and
/metrics). The worker claims with affinity for the model it used last
(jobs/store.py claim_preferring: bounded wait). LoRAs (`--lora NAME=FOLDER`)
are read once, put on the UNet as unmerged peft adapters for the jobs that name
them (models/lora.attach_adapter) and taken off after each (detach_adapters puts
the same base layers back), so every other job runs the base exactly.

It talks to the API only through the SQLite store (jobs.store). The API
process supervises it (server/supervisor.py): it reads the worker's stdin and
exits at once when the API goes away (EOF), so an orphaned worker never keeps
running a job that a restarted server will run again. SIGTERM (or SIGINT)
means "drain": finish the running job, claim nothing more, exit 0.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import sys
import threading
import time
import traceback
import zipfile
from pathlib import Path
from typing import Optional

from collections import OrderedDict

from ..engine.config import EngineConfig
from ..errors import Cancelled, ModelUnavailable, StillmotionError
from ..util import atomic_path
from .store import SQLiteJobStore
from .types import Job, JobStore

END_IMAGE = "end_image"  # a job's end image (keyframes) is kept as end_image.<ext> beside its input
RECORD_FILE = "record.json"  # sidecar keys the request gave (the `batch` of `stillmotion batch --server`)
log = logging.getLogger("stillmotion.worker")

PROGRESS_INTERVAL = 0.1  # seconds between progress writes (a stage change always writes)
HEARTBEAT_INTERVAL = 1.0
CPU_MAX_RESIDENT = 2  # pipelines kept loaded on a CPU with no --max-memory (no budget to plan against)
ACTIVATION_SHARE = 0.25  # of the budget kept free for a run's activations when pipelines stay resident


def job_dir(data_dir: Path, job_id: str) -> Path:
    return Path(data_dir) / "jobs" / job_id


class JobWorker:
    """Loads the Engine once and runs claimed jobs. `store`: by default the SQLite file in data_dir
    (a Ray replica passes the store actor's RayJobStore)."""

    def __init__(self, data_dir: Path, worker_id: str, config: EngineConfig, store: Optional[JobStore] = None, *,
                 warmup: bool = True, poll: float = 0.1, models: Optional[list] = None, loras: Optional[dict] = None,
                 affinity: Optional[dict] = None, max_resident: Optional[int] = None):
        self.data_dir = Path(data_dir)
        self.worker_id = worker_id
        self.config = config
        self.models: list[str] = list(models or [config.model])  # the served models; the first is the default
        self.loras: dict[str, Path] = {k: Path(v) for k, v in (loras or {}).items()}
        self.affinity: dict = dict(affinity or {})  # store.claim's max_wait / max_passed
        self.max_resident = max_resident  # a cap on resident pipelines beside fits_beside (bench: 1, a full GPU)
        self.engines: OrderedDict = OrderedDict()  # model -> Engine, least recently used first
        self.swaps = 0  # models loaded after the first one
        self.swap_seconds = 0.0
        self._adapters: dict = {}  # LoRA name -> its tensors (models/lora.read_adapter), read once
        self.store: JobStore = store if store is not None else SQLiteJobStore(self.data_dir / "jobs.sqlite3")
        self.stop = threading.Event()
        self.wake = threading.Event()  # set when the API says a job was queued (a byte on stdin)
        self.engine = None
        self.info: dict = {}
        self.warmup = warmup
        self.poll = float(poll)

    # ------------------------------------------------------------------
    def load(self) -> None:
        self.store.worker_state(self.worker_id, "loading", pid=os.getpid(), model=self.models[0])
        self.use_model(self.models[0])
        t = time.perf_counter()
        if self.warmup:
            self._warmup()
        import dataclasses

        info = {
            "device": self.engine.device,
            "dtype": str(self.engine.dtype).replace("torch.", ""),
            "defaults": dataclasses.asdict(self.engine.entry.defaults),
            "load_seconds": self.engine.timings.get("load"),
            "warmup_seconds": round(time.perf_counter() - t, 3),
        }
        self.info = dict(info, **self.model_info())
        self.store.worker_state(self.worker_id, "ready", info=self.info)

    # ------------------------------------------------------------------ several models
    def model_info(self) -> dict:
        """What /readyz and /metrics show: the served models, the resident ones, the one in use, swaps."""
        return {"models": list(self.models), "loaded": list(self.engines), "model": self.current,
                "swaps": self.swaps, "swap_seconds": round(self.swap_seconds, 3)}

    @property
    def current(self) -> Optional[str]:
        return next(reversed(self.engines), None) if self.engines else None

    def use_model(self, name: str):
        """The Engine for `name`: resident already (now the most recently used), or loaded, after
        dropping the least recently used ones it does not fit beside."""
        from ..engine import Engine
        from ..engine.device import free_memory

        if name in self.engines:
            moved = name != self.current
            self.engines.move_to_end(name)
            self.engine = self.engines[name]
            if moved:
                self._publish()
            return self.engine
        t = time.perf_counter()
        cfg = self.config.replace(model=name, progress=False)  # no progress bars in a server's log
        while self.engines and (not fits_beside(cfg, list(self.engines.values()))
                                or (self.max_resident is not None and len(self.engines) >= self.max_resident)):
            old, _ = self.engines.popitem(last=False)
            log.info("unloading %s to make room for %s", old, name)
            self.engine = None
            free_memory()
        swap = bool(self.info) or self.swaps > 0 or bool(self.engines)
        engine = Engine(cfg)
        self.engines[name] = self.engine = engine
        if swap:
            self.swaps += 1
            self.swap_seconds += time.perf_counter() - t
        self._publish()
        return engine

    def _publish(self) -> None:
        """Tell the store which models are resident now (once the worker is ready)."""
        if self.info:
            self.info.update(self.model_info())
            self.store.worker_state(self.worker_id, "ready", info=self.info)

    def _lora(self, engine, name: Optional[str], scale: float) -> None:
        """Wrap the engine's UNet with the LoRA `name` at `scale` for one job (the adapter's tensors are read
        once and kept), or put the base layers back (None). Never merged: the base weights never change."""
        from ..models.lora import attach_adapter, detach_adapters, read_adapter

        unet = engine.pipe.unet
        if name is None:
            detach_adapters(unet)
            return
        if name not in self._adapters:
            self._adapters[name] = read_adapter(self.loras[name])
        detach_adapters(unet)
        attach_adapter(unet, self._adapters[name], scale)

    def _warmup(self) -> None:
        """One throw-away generation at the smallest size, so the first job is not slow."""
        from PIL import Image

        from ..spec import GenerationSpec

        spec = GenerationSpec(width=64, height=64, num_frames=2, num_inference_steps=1, seed=0)
        self.engine.generate(Image.new("RGB", (64, 64), (128, 128, 128)), spec)

    def run(self) -> None:
        self.start_heartbeat()
        while not self.stop.is_set():
            self.wake.clear()  # before claiming, so a job queued meanwhile is not missed
            job = self.claim_next()
            if job is None:
                self.wake.wait(self.poll)
                continue
            self.run_job(job)
        self.store.worker_state(self.worker_id, "stopped")

    def claim_next(self) -> Optional[Job]:
        """The next job: several models prefer the one in use, within the store's bounds (jobs/store.py claim_preferring)."""
        if len(self.models) > 1:
            return self.store.claim_preferring(self.worker_id, self.current, default_model=self.models[0],
                                               **self.affinity)
        return self.store.claim(self.worker_id)

    def start_heartbeat(self) -> threading.Thread:
        """Record this worker as alive every HEARTBEAT_INTERVAL (with its GPU memory), in a daemon thread."""
        beat = threading.Thread(target=self._heartbeat, name="heartbeat", daemon=True)
        beat.start()
        return beat

    def _heartbeat(self) -> None:
        while True:
            gpu = _gpu_memory()
            info = dict(self.info, gpu_memory_bytes=gpu) if gpu is not None else None
            state = "draining" if self.stop.is_set() else "ready" if self.info else "loading"
            try:
                self.store.worker_state(self.worker_id, state, info=info)
            except Exception:  # noqa: BLE001 - a busy file must not kill the heartbeat
                log.exception("heartbeat failed")
            time.sleep(HEARTBEAT_INTERVAL)

    # ------------------------------------------------------------------
    def run_job(self, job: Job) -> None:
        from ..spec import GenerationSpec

        job_id, me = job.id, self.worker_id
        folder = job_dir(self.data_dir, job_id)
        last = {"t": 0.0, "stage": None, "cancel": False}

        def on_progress(p) -> None:
            now = time.monotonic()
            if p.stage != last["stage"] or now - last["t"] >= PROGRESS_INTERVAL or p.step == p.total:
                last.update(t=now, stage=p.stage)
                if self.store.progress(job_id, me, fraction=p.fraction, stage=p.stage, step=p.step,
                                       total=p.total, message=p.message):
                    last["cancel"] = True

        def should_cancel() -> bool:
            if not last["cancel"] and time.monotonic() - last["t"] >= PROGRESS_INTERVAL:
                last["t"] = time.monotonic()
                last["cancel"] = self.store.cancel_requested(job_id)
            return last["cancel"]

        t0 = time.perf_counter()
        try:
            spec = GenerationSpec.build(**job.spec)
            image = folder / job.input_name
            end = next(iter(sorted(folder.glob(END_IMAGE + ".*"))), None)  # keyframes (server/submit.py)
            record = json.loads((folder / RECORD_FILE).read_text()) if (folder / RECORD_FILE).is_file() else {}
            lora, scale = record.get("lora"), float(record.get("lora_scale", 1.0))
            model = job.model or self.models[0]
            if (len(self.models) > 1 and model not in self.models) or (lora is not None and lora not in self.loras):
                # queued before a restart with other --model/--lora flags
                raise ModelUnavailable(f"This server no longer serves {lora if lora else model!r} (it serves "
                                       f"{', '.join(self.models + list(self.loras))}); submit the job again.")
            engine = self.use_model(model) if len(self.models) > 1 else self.engine
            if lora is not None:
                self._lora(engine, lora, scale)
            try:
                result = engine.generate(image, spec, on_progress=on_progress, should_cancel=should_cancel,
                                         source=job.input_source or None, end_image=end)
            finally:
                if lora is not None:
                    self._lora(engine, None, 1.0)
            if should_cancel():
                raise Cancelled()
            if lora is not None:  # the sidecar names the adapter beside the base model, with its hashes
                from ..models.local import describe_lora

                described = describe_lora(self.loras[lora])
                result.metadata.setdefault("model", {})["lora"] = {"name": lora, "path": described["path"],
                                                                   "scale": scale, "weights": described["weights"]}
            if record.get("batch") is not None:  # recorded as a local batch records it, so its resume works
                result.metadata["batch"] = record["batch"]
            # the name a client asked for (its local name, which the video's metadata records), else the job id
            name = record.get("output_name") or f"{job_id}.{result.spec.format}"
            artifact = result.save(folder / name)
            output = _output_record(artifact, folder)
            timings = dict(result.timings, run=round(time.perf_counter() - t0, 4))
            ok = self.store.finish(job_id, me, "succeeded", output=output, timings=timings,
                                   spec=result.spec.model_dump(mode="json"))
        except Cancelled:
            ok = self.store.finish(job_id, me, "canceled", error={
                "code": Cancelled.code, "message": "Canceled while running; no output was written."})
        except StillmotionError as e:
            ok = self.store.finish(job_id, me, "failed", error=e.to_dict())
        except Exception as e:  # noqa: BLE001 - the job fails, the worker lives on
            log.error("job %s failed:\n%s", job_id, traceback.format_exc())
            ok = self.store.finish(job_id, me, "failed", error={
                "code": "internal_error",
                "message": f"Generation failed with an unexpected {type(e).__name__}: {str(e)[:300]}; see the server log."})
        if not ok:  # deleted (or recovered) meanwhile: leave nothing behind for a job that is gone
            log.info("job %s changed under the worker; its result was dropped", job_id)
            try:
                self.store.get(job_id)
            except StillmotionError:
                shutil.rmtree(folder, ignore_errors=True)


def fits_beside(config: EngineConfig, resident: list) -> bool:
    """Whether a pipeline for `config` may load while the `resident` Engines stay loaded: on a GPU (or
    with --max-memory) when all their weights plus the new model's files fit in the budget
    (engine.memory.device_budget, or --max-memory) with ACTIVATION_SHARE of it left for a run; on a CPU with
    no --max-memory, while fewer than CPU_MAX_RESIDENT are loaded; with no budget figure (MPS), never."""
    if not resident:
        return True
    device = resident[0].device
    if config.max_memory is None and device == "cpu":
        return len(resident) < CPU_MAX_RESIDENT
    from ..engine.memory import device_budget
    from ..models.resolve import resolve

    budget = config.max_memory if config.max_memory is not None else device_budget(device)
    if budget is None:
        return False
    held = sum(_weight_bytes(e.pipe) for e in resident)
    new = sum(p.stat().st_size for p in resolve(config.model, download=config.download, progress=False).weight_files())
    return held + new <= budget * (1 - ACTIVATION_SHARE)


def _weight_bytes(pipe) -> int:
    total = 0
    for comp in pipe.components.values():
        if hasattr(comp, "parameters"):
            total += sum(p.numel() * p.element_size() for p in comp.parameters())
    return total


def _output_record(artifact, folder: Path) -> dict:
    path = Path(artifact.path)
    name = path.name
    if artifact.format == "png":  # a folder of frames is served as one zip
        zpath = folder / f"{path.name}.zip"
        with atomic_path(zpath) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as z:
            for f in sorted(path.iterdir()):
                z.write(f, f.name)
        name = zpath.name
    d = artifact.to_dict()
    d.pop("path", None)
    d["file"] = name
    d["sidecar"] = Path(artifact.sidecar).name if artifact.sidecar else None
    d["bytes"] = (folder / name).stat().st_size
    return d


def _gpu_memory():
    if "torch" not in sys.modules:
        return None
    import torch

    if not torch.cuda.is_available():
        return None
    return int(torch.cuda.memory_allocated())


def _watch_parent(wake: threading.Event) -> None:
    """stdin is a pipe from the API process: a byte means "a job was queued", EOF means
    the API died, so stop now."""
    try:
        while sys.stdin.buffer.read(1):
            wake.set()
    except Exception:  # noqa: BLE001
        pass
    os._exit(3)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m stillmotion.jobs.worker")
    p.add_argument("--data-dir", required=True)
    p.add_argument("--worker-id", required=True)
    p.add_argument("--config", default="{}", help="JSON: engine (an EngineConfig), warmup, poll")
    p.add_argument("--watch-stdin", action="store_true", help="exit when stdin closes (the API process died)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s worker %(levelname)s %(message)s")
    cfg = json.loads(args.config)
    worker = JobWorker(Path(args.data_dir), args.worker_id, EngineConfig.from_json(cfg.get("engine") or {}),
                       warmup=cfg.get("warmup", True), poll=cfg.get("poll", 0.1), models=cfg.get("models"),
                       loras=cfg.get("loras"), affinity=cfg.get("affinity"))
    if args.watch_stdin:
        threading.Thread(target=_watch_parent, args=(worker.wake,), name="parent-watch", daemon=True).start()

    def drain(signum, frame):
        log.info("draining: finishing the running job, then exiting")
        worker.stop.set()
        worker.wake.set()

    signal.signal(signal.SIGTERM, drain)
    signal.signal(signal.SIGINT, drain)
    try:
        worker.load()
    except StillmotionError as e:
        worker.store.worker_state(worker.worker_id, "failed", info={"error": e.to_dict()})
        log.error("could not load the model: %s", e.message)
        return 3
    worker.run()
    return 0


if __name__ == "__main__":
    code = main()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # not sys.exit: the stdin-watch thread must not race interpreter shutdown
