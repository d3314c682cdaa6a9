"""The worker process: loads the Engine once, then drains the job queue in order.

    python -m stillmotion.jobs.worker --data-dir DIR --worker-id ID --config JSON

The config is server.Settings.worker_config(): the EngineConfig as JSON, the
served models and LoRAs, the queue's affinity bounds and whether to warm up.
A job's files are where jobs/layout.py says; run_job() reads a job
(read_inputs), runs it (generate: model, LoRA, progress, cancel), writes its
video and sidecar (write_outputs) and records how it ended.

Several models (`serve --model A --model B`): the worker keeps an Engine per
model, least recently used first. A model loads beside the resident ones when
`fits_beside()` says so (the weights' bytes against engine.memory.device_budget
or --max-memory, a quarter kept for a run's activations; on a CPU with no
--max-memory, at most CPU_MAX_RESIDENT pipelines); otherwise the least recently
used one is dropped first (a swap: counted, timed, shown on /readyz and
/metrics). The worker claims with affinity for the model it used last
(jobs/store.py claim_preferring: bounded wait). LoRAs (`--lora NAME=FOLDER`)
are read once, put on the model unmerged for the jobs that name them, the
family's way (Family.attach_lora: SVD's UNet through models/lora.attach_adapter,
Wan's experts through diffusers' load_lora_weights) and taken off after each
(Family.detach_lora), so every other job runs the base exactly.

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
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..engine.config import EngineConfig
from ..errors import Cancelled, ModelUnavailable, StillmotionError
from ..spec import GenerationSpec
from .layout import AUDIO, find_audio, find_end_image, job_dir, output_record, read_record
from .store import SQLiteJobStore
from .types import Job, JobStore

log = logging.getLogger("stillmotion.worker")

PROGRESS_INTERVAL = 0.1  # seconds between progress writes (a stage change always writes)
HEARTBEAT_INTERVAL = 1.0
IDLE_POLL_S = 0.1  # an idle worker looks at the queue this often (the API also wakes it through stdin)
CPU_MAX_RESIDENT = 2  # pipelines kept loaded on a CPU with no --max-memory (no budget to plan against)
ACTIVATION_SHARE = 0.25  # of the budget kept free for a run's activations when pipelines stay resident


@dataclass(frozen=True)
class JobInputs:
    """What one job runs, read from its row and its folder (jobs/layout.py)."""

    spec: GenerationSpec
    image: Path
    end_image: Optional[Path]  # keyframes
    model: str
    lora: Optional[str]
    lora_scale: float
    batch: Optional[dict]  # recorded in the sidecar as a local batch records it
    output_name: Optional[str]  # the video's file name (default: the job id)
    audio: Optional[Path] = None  # a soundtrack for the model to follow (--audio)
    audio_source: Optional[str] = None  # its uploaded file's name, for the sidecar (else the input's name)


class JobWorker:
    """Loads the Engine once and runs claimed jobs. `store`: by default the SQLite file in data_dir
    (a Ray replica passes the store actor's RayJobStore)."""

    def __init__(self, data_dir: Path, worker_id: str, config: EngineConfig, store: Optional[JobStore] = None, *,
                 warmup: bool = True, models: Optional[list] = None, loras: Optional[dict] = None,
                 affinity: Optional[dict] = None):
        self.data_dir = Path(data_dir)
        self.worker_id = worker_id
        self.config = config
        self.models: list[str] = list(models or [config.model])  # the served models; the first is the default
        self.loras: dict[str, Path] = {k: Path(v) for k, v in (loras or {}).items()}
        self.affinity: dict = dict(affinity or {})  # store.claim's max_wait / max_passed
        self.engines: OrderedDict = OrderedDict()  # model -> Engine, least recently used first
        self.swaps = 0  # models loaded after the first one
        self.swap_seconds = 0.0
        self._adapters: dict = {}  # (family, LoRA name) -> its adapter (Family.read_lora), read once
        self.store: JobStore = store if store is not None else SQLiteJobStore(self.data_dir / "jobs.sqlite3")
        self.stop = threading.Event()
        self.wake = threading.Event()  # set when the API says a job was queued (a byte on stdin)
        self.engine = None
        self.info: dict = {}
        self.warmup = warmup

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
        while self.engines and not fits_beside(cfg, list(self.engines.values())):
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

    @contextmanager
    def lora(self, engine, name: Optional[str], scale: float):
        """The LoRA `name` at `scale` on the engine's model for the block, the family's way (families/: the
        adapter is read once per family and kept), the base back after it. Never merged: the base weights never
        change. None: the base."""
        if name is None:
            yield
            return
        family, pipe = engine.family, engine.pipe
        key = (family.name, name)
        if key not in self._adapters:
            self._adapters[key] = family.read_lora(self.loras[name])
        family.attach_lora(pipe, self._adapters[key], scale)
        try:
            yield
        finally:
            family.detach_lora(pipe)

    def _warmup(self) -> None:
        """One throw-away generation at the smallest size and the fewest frames its family makes (SVD 2, Wan 5),
        so the first job is not slow."""
        from PIL import Image

        frames = next(n for n in range(2, 258) if self.engine.family.frames_rule(n) is None)
        spec = GenerationSpec(width=64, height=64, num_frames=frames, num_inference_steps=1, seed=0)
        self.engine.generate(Image.new("RGB", (64, 64), (128, 128, 128)), spec)

    def run(self) -> None:
        self.start_heartbeat()
        while not self.stop.is_set():
            self.wake.clear()  # before claiming, so a job queued meanwhile is not missed
            job = self.claim_next()
            if job is None:
                self.wake.wait(IDLE_POLL_S)
                continue
            self.run_job(job)
        self.store.worker_state(self.worker_id, "stopped")

    def claim_next(self) -> Optional[Job]:
        """The next job (JobStore.claim); several models prefer the one in use, within the queue's bounds
        (JobStore.claim_preferring)."""
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

    # ------------------------------------------------------------------ one job
    def run_job(self, job: Job) -> None:
        """Run one claimed job: read it (read_inputs), run it on its model and LoRA (generate), write its files
        (write_outputs), record how it ended (finish)."""
        folder = job_dir(self.data_dir, job.id)
        t0 = time.perf_counter()
        try:
            inputs = self.read_inputs(job, folder)
            result = self.generate(job, inputs)
            output = self.write_outputs(result, inputs, folder, job.id)
        except Exception as e:  # noqa: BLE001 - the job fails (or was canceled), the worker lives on
            status, error = _ending(job.id, e)
            self.finish(job.id, folder, status, error=error)
        else:
            self.finish(job.id, folder, "succeeded", output=output, spec=result.spec.model_dump(mode="json"),
                        timings=dict(result.timings, run=round(time.perf_counter() - t0, 4)))

    def read_inputs(self, job: Job, folder: Path) -> JobInputs:
        """The job's spec, files and model and LoRA; ModelUnavailable for a model or LoRA this worker does not
        serve (a job queued before a restart with other --model/--lora flags)."""
        spec = GenerationSpec.build(**job.spec)
        record = read_record(folder)
        model, lora = job.model or self.models[0], record.get("lora")
        if (len(self.models) > 1 and model not in self.models) or (lora is not None and lora not in self.loras):
            raise ModelUnavailable(f"This server no longer serves {lora if lora else model!r} (it serves "
                                   f"{', '.join(self.models + list(self.loras))}); submit the job again.")
        return JobInputs(spec=spec, image=folder / job.input_name, end_image=find_end_image(folder), model=model,
                         lora=lora, lora_scale=float(record.get("lora_scale", 1.0)), batch=record.get("batch"),
                         output_name=record.get("output_name"), audio=find_audio(folder),
                         audio_source=record.get("audio_source"))

    def generate(self, job: Job, inputs: JobInputs):
        """The GenerationResult of the job on its model's Engine, its LoRA on for this run only; Cancelled when a
        cancel was asked (progress goes to the store as it runs)."""
        engine = self.use_model(inputs.model) if len(self.models) > 1 else self.engine
        watch = ProgressWriter(self.store, job.id, self.worker_id)
        with self.lora(engine, inputs.lora, inputs.lora_scale):
            result = engine.generate(inputs.image, inputs.spec, on_progress=watch.report, should_cancel=watch.cancelled,
                                     source=job.input_source or None, end_image=inputs.end_image, audio=inputs.audio,
                                     audio_source=(inputs.audio_source or AUDIO) if inputs.audio else None)
        if watch.cancelled():
            raise Cancelled()
        return result

    def write_outputs(self, result, inputs: JobInputs, folder: Path, job_id: str) -> dict:
        """The video and its sidecar in the job's folder; returns the job's output record. The sidecar names the
        LoRA beside the base model (with its hashes) and the request's batch key, as a local run records them."""
        if inputs.lora is not None:
            from ..models.local import describe_lora

            described = describe_lora(self.loras[inputs.lora])
            result.metadata.setdefault("model", {})["lora"] = {
                "name": inputs.lora, "path": described["path"], "scale": inputs.lora_scale,
                "weights": described["weights"]}
        if inputs.batch is not None:  # recorded as a local batch records it, so its resume works
            result.metadata["batch"] = inputs.batch
        # the name a client asked for (its local name, which the video's metadata records), else the job id
        artifact = result.save(folder / (inputs.output_name or f"{job_id}.{result.spec.format}"))
        return output_record(artifact, folder)

    def finish(self, job_id: str, folder: Path, status: str, **fields) -> None:
        """Record how the job ended (store.finish); a job deleted (or recovered) meanwhile leaves nothing behind."""
        if self.store.finish(job_id, self.worker_id, status, **fields):
            return
        log.info("job %s changed under the worker; its result was dropped", job_id)
        try:
            self.store.get(job_id)
        except StillmotionError:
            shutil.rmtree(folder, ignore_errors=True)


class ProgressWriter:
    """One running job's progress, written to the store at most every PROGRESS_INTERVAL (always on a stage change
    and the last step), and its cancel flag, read back as often (a progress write also answers it)."""

    def __init__(self, store: JobStore, job_id: str, worker: str):
        self.store, self.job_id, self.worker = store, job_id, worker
        self.last, self.stage, self.cancel = 0.0, None, False

    def report(self, p) -> None:
        now = time.monotonic()
        if p.stage != self.stage or now - self.last >= PROGRESS_INTERVAL or p.step == p.total:
            self.last, self.stage = now, p.stage
            if self.store.progress(self.job_id, self.worker, fraction=p.fraction, stage=p.stage, step=p.step,
                                   total=p.total, message=p.message):
                self.cancel = True

    def cancelled(self) -> bool:
        if not self.cancel and time.monotonic() - self.last >= PROGRESS_INTERVAL:
            self.last = time.monotonic()
            self.cancel = self.store.cancel_requested(self.job_id)
        return self.cancel


def _ending(job_id: str, e: Exception) -> tuple[str, dict]:
    """(status, error) of a job that raised `e`: canceled, or failed with our error's code and message (an
    unexpected one is logged with its traceback)."""
    if isinstance(e, Cancelled):
        return "canceled", {"code": Cancelled.code, "message": "Canceled while running; no output was written."}
    if isinstance(e, StillmotionError):
        return "failed", e.to_dict()
    log.error("job %s failed:\n%s", job_id, traceback.format_exc())
    return "failed", {"code": "internal_error", "message": f"Generation failed with an unexpected "
                      f"{type(e).__name__}: {str(e)[:300]}; see the server log."}


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
    p.add_argument("--config", default="{}", help="JSON: engine (an EngineConfig), warmup, models, loras, affinity")
    p.add_argument("--watch-stdin", action="store_true", help="exit when stdin closes (the API process died)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s worker %(levelname)s %(message)s")
    cfg = json.loads(args.config)
    worker = JobWorker(Path(args.data_dir), args.worker_id, EngineConfig.from_json(cfg.get("engine") or {}),
                       warmup=cfg.get("warmup", True), models=cfg.get("models"),
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
