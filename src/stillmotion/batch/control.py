"""Running a plan: runners (here, or one process per device), item status, the report.

`run_batch(plan, config, ...)` is the one call. With one device the runner
works in this process; with `devices=["0", "1"]` (or `["cpu", "cpu"]`) each
device gets a spawned process that pulls items from one shared queue, so every
device gets its share however fast it is, and sends its events back here. The
Controller is the only place that changes item status, counts failures for
`max_failures`, and writes `batch-report.json` (atomically, every few seconds
and at the end), so a killed batch still leaves a report of what was done.
`expected_seconds(plan, config)` is what `--dry-run` says it will take.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import threading
import time
from datetime import datetime, timezone
from typing import Callable, Iterator, Optional

from ..engine.config import EngineConfig
from ..errors import StillmotionError
from ..util import atomic_write, first_line
from .plan import BatchPlan
from .run import BatchRunner, remove_stale_temps

REPORT_SCHEMA = "stillmotion.batch-report/1"
REPORT_EVERY_S = 5.0

EventFn = Callable[["Controller", str, int, dict], None]


class Controller:
    """Item status, failure counting and the report. Thread-safe: runners' threads call `handle`."""

    def __init__(self, plan: BatchPlan, *, devices: list[str], max_failures: Optional[int] = None,
                 on_event: Optional[EventFn] = None):
        self.plan = plan
        self.devices = devices
        self.max_failures = max_failures
        self.on_event = on_event
        self.lock = threading.RLock()
        self.stop = threading.Event()  # start no new items (max failures)
        self.started = datetime.now(timezone.utc)
        self.t0 = time.perf_counter()
        self.first_start: Optional[float] = None
        self.outcome = "running"
        self.fatal: Optional[StillmotionError] = None
        self.hidden = {"load": 0.0, "write": 0.0}
        self.pipelined = False
        self._last_report = 0.0

    # counts ---------------------------------------------------------------
    def finish(self, *, cancelled: bool) -> None:
        """Close the run: unrun items marked, the outcome named, the report written."""
        for item in self.plan.items:
            if item.status in ("pending", "running"):
                item.status = "not_run"
        if self.fatal is not None:
            self.outcome = "failed"
        elif cancelled:
            self.outcome = "cancelled"
        elif self.stop.is_set():
            self.outcome = "stopped: too many failures"
        else:
            self.outcome = "finished"
        self.write_report()

    def count(self, status: str) -> int:
        return sum(1 for i in self.plan.items if i.status == status)

    @property
    def finished_runs(self) -> int:
        return self.count("done") + self.count("failed")

    def eta_seconds(self) -> Optional[float]:
        """Remaining items x measured wall seconds per finished item (all runners together)."""
        done = self.finished_runs
        if not done or self.first_start is None:
            return None
        per_item = (time.perf_counter() - self.first_start) / done
        return per_item * (self.count("pending") + self.count("running"))

    # events ---------------------------------------------------------------
    def handle(self, kind: str, index: int, **data) -> None:
        with self.lock:
            item = self.plan.items[index] if index >= 0 else None
            if kind == "start":
                item.status = "running"
                if self.first_start is None:
                    self.first_start = time.perf_counter()
            elif kind in ("done", "failed", "not_run"):
                item.status = kind
                item.error = data.get("error")
                item.seconds = data.get("seconds")
                if kind == "failed" and self.max_failures is not None and self.count("failed") >= self.max_failures:
                    self.stop.set()
            elif kind == "retry":
                item.error = data.get("error")
            if self.on_event is not None:
                self.on_event(self, kind, index, data)
            if kind in ("done", "failed") and time.perf_counter() - self._last_report > REPORT_EVERY_S:
                self.write_report()

    # report ---------------------------------------------------------------
    def report(self) -> dict:
        with self.lock:
            counts = {s: self.count(s) for s in ("done", "skipped", "failed", "not_run")}
            wall = time.perf_counter() - self.t0
            return {
                "schema": REPORT_SCHEMA,
                "status": self.outcome,
                "input": str(self.plan.source),
                "output": str(self.plan.out_dir),
                "model": self.plan.model,
                "base_seed": self.plan.base_seed,
                "variants": self.plan.variants,
                "devices": self.devices,
                "started": self.started.isoformat(timespec="seconds"),
                "finished": datetime.now(timezone.utc).isoformat(timespec="seconds") if self.outcome != "running" else None,
                "wall_seconds": round(wall, 3),
                "counts": {**counts, "total": len(self.plan.items)},
                "ignored": self.plan.ignored,
                "pipelined": self.pipelined,
                "io_seconds": {k: round(v, 3) for k, v in self.hidden.items()},  # beside the engine when pipelined
                "items": [i.to_report() for i in self.plan.items],
            }

    def write_report(self) -> None:
        self._last_report = time.perf_counter()
        try:
            atomic_write(self.plan.report_path, json.dumps(self.report(), indent=2) + "\n")
        except OSError:
            pass  # a full disk must not end the batch; the final write will say so


# --------------------------------------------------------------------------- how long it will take (--dry-run)


def expected_seconds(plan: BatchPlan, config: EngineConfig, devices: Optional[list[str]] = None,
                     notice: Callable[[str], None] = lambda _: None) -> tuple[Optional[float], str]:
    """(seconds for the items to run, where the figure comes from), without loading the model.

    Best: the seconds per item measured by an earlier run into the same output folder (its report,
    same model). Otherwise the one time estimator (engine/timing.py): each item's FLOPs, counted on
    the model's shape, on this machine's GPU when gpus.json lists it, else on the card with a
    published measurement. `notice` is told before a first count that may take a while.
    """
    todo = plan.to_run
    devices = list(devices or [config.device])
    if not todo:
        return 0.0, "nothing to run"
    per = measured_seconds(plan)
    if per is not None:
        return per * len(todo) / len(devices), f"measured {per:.1f} s/item in the last run here"
    from ..engine import timing
    from ..families import run_entry
    from ..models.resolve import entry_for

    here = timing.card_for_device(device_name(devices[0]))
    card = here or timing.reference_card()
    notice("counting FLOPs on the model's shapes (no GPU, no weights; about 30 s for SVD-XT the first time, "
           "cached after)...")
    try:
        shape = timing.workload_shape(config)
        entry = run_entry(entry_for(config.model))  # a Wan folder's defaults are its pipeline's
    except StillmotionError as e:
        return None, f"no estimate: {first_line(e)}"
    seconds: dict[tuple, float] = {}  # one count per distinct workload
    total = 0.0
    for item in todo:  # planned as `stillmotion estimate` plans one video: the model's landscape size unless given
        job = timing.Workload(item.spec.resolve(entry), config, keyframe=bool(item.end_source))
        if job.key not in seconds:
            seconds[job.key] = job.time_on(card, shape, job.flops(shape)["per_video"]).seconds
        total += seconds[job.key]
    where = f"this machine's {card.name}" if here else f"one {card.name}, not this machine's device"
    return total / len(devices), (f"estimated for {where}: counted FLOPs at the card's {card.basis} efficiency on "
                                  f"SVD-XT; `stillmotion estimate` shows other cards")


def measured_seconds(plan: BatchPlan) -> Optional[float]:
    """Mean seconds per item of the `done` items in an earlier report for the same model, if any."""
    try:
        report = json.loads(plan.report_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if report.get("model") != plan.model:
        return None
    secs = [i["seconds"] for i in report.get("items", []) if i.get("status") == "done" and i.get("seconds")]
    if not secs:
        return None
    # wall time per item is what a user waits: use it when the run finished its items
    wall, done = report.get("wall_seconds"), len(secs)
    return max(sum(secs) / done, (wall or 0) / done) if wall and done else sum(secs) / done


# --------------------------------------------------------------------------- running


def run_batch(plan: BatchPlan, config: EngineConfig, *, devices: Optional[list[str]] = None,
              max_failures: Optional[int] = None, should_cancel: Callable[[], bool] = lambda: False,
              on_event: Optional[EventFn] = None, engine=None, pipeline: Optional[bool] = None) -> Controller:
    """Run every pending item of `plan` with engines built from `config`; returns the Controller
    (statuses, counts, report written).

    `devices`: one runner per device (default: config.device). `pipeline`: decode the next image and
    encode the last video beside the engine (threads); None picks it per device: on for accelerators,
    off on the CPU. `engine`: an Engine to reuse. Raises a StillmotionError when no item could run at
    all (e.g. the model does not load).
    """
    devices = list(devices or [config.device])
    todo = plan.to_run
    with controlled(plan, devices=devices, max_failures=max_failures, on_event=on_event,
                    should_cancel=should_cancel) as ctl:
        if todo:
            if len(devices) == 1:
                _run_here(ctl, todo, config.replace(device=device_name(devices[0])), should_cancel, engine, pipeline)
            else:
                _run_processes(ctl, todo, config, devices, should_cancel, pipeline)
    if ctl.fatal is not None:
        raise ctl.fatal
    return ctl


@contextlib.contextmanager
def controlled(plan: BatchPlan, *, devices: list[str], max_failures: Optional[int], on_event: Optional[EventFn],
               should_cancel: Callable[[], bool]) -> Iterator[Controller]:
    """The Controller of one run of `plan`, for every way of running it (here, --server, --ray): the output
    folder made and a killed run's temp files removed before, the run closed (report written) however it ends."""
    ctl = Controller(plan, devices=devices, max_failures=max_failures, on_event=on_event)
    plan.out_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(plan.to_run)
    try:
        yield ctl
    finally:
        ctl.finish(cancelled=should_cancel())


def _run_here(ctl: Controller, todo, config: EngineConfig, should_cancel, engine, pipeline) -> None:
    pending = iter(todo)
    runner = BatchRunner(config, ctl.handle, should_stop=ctl.stop.is_set, should_cancel=should_cancel, engine=engine,
                         pipeline=pipeline)
    try:
        runner.run(lambda: next(pending, None))
    finally:
        ctl.hidden = runner.hidden
        ctl.pipelined = bool(runner.pipeline)


# --------------------------------------------------------------------------- several devices


def device_name(d: str) -> str:
    """--devices entries: "0" -> cuda:0; cpu, mps, cuda:N as they are."""
    d = (d or "auto").strip()
    return f"cuda:{d}" if d.isdigit() else d


def _run_processes(ctl: Controller, todo, config: EngineConfig, devices, should_cancel, pipeline) -> None:
    import multiprocessing as mp

    ctx = mp.get_context("spawn")  # CUDA cannot be forked; spawn is also what macOS does
    tasks = ctx.Queue()
    events = ctx.Queue()
    stop = ctx.Event()
    cancel = ctx.Event()
    for item in todo:
        tasks.put(item)
    for _ in devices:
        tasks.put(None)
    cpu_share = max(1, (os.cpu_count() or 1) // len(devices))  # torch threads of each CPU runner
    procs = []
    for n, dev in enumerate(devices):
        device = device_name(dev)
        threads = config.threads or (cpu_share if device == "cpu" else None)
        child = config.replace(device=device, threads=threads).to_json()
        p = ctx.Process(target=_child_main, name=f"stillmotion-batch-{n}",
                        args=(n, child, tasks, events, stop, cancel, os.getpid(), pipeline), daemon=True)
        p.start()
        procs.append(p)
    current: dict[int, Optional[int]] = {n: None for n in range(len(devices))}
    alive = set(range(len(devices)))
    load_errors = []
    try:
        while alive:
            if ctl.stop.is_set():
                stop.set()
            if should_cancel():
                cancel.set()
            try:
                n, kind, index, data = events.get(timeout=0.2)
            except queue.Empty:
                for w in list(alive):
                    if not procs[w].is_alive():  # died without saying goodbye (killed, segfault)
                        alive.discard(w)
                        if current[w] is not None:
                            ctl.handle("failed", current[w], error=f"the worker on {devices[w]} died (exit code {procs[w].exitcode})")
                continue
            if kind == "exit":
                alive.discard(n)
                continue
            if kind == "fatal":
                load_errors.append(data["error"])
                alive.discard(n)
                continue
            if kind == "hidden":
                ctl.pipelined = data.pop("pipelined", False)
                for k, v in data.items():
                    ctl.hidden[k] = ctl.hidden.get(k, 0.0) + v
                continue
            if kind == "start":
                current[n] = index
            elif kind in ("done", "failed", "not_run") and current[n] == index:
                current[n] = None
            ctl.handle(kind, index, **data)
    finally:
        stop.set()
        tasks.cancel_join_thread()  # items nobody took must not keep this process from exiting
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.terminate()
    if load_errors and len(load_errors) == len(devices):
        ctl.fatal = load_errors[0]


def _child_main(n, config_json: dict, tasks, events, stop, cancel, parent_pid, pipeline) -> None:
    """A runner process: one Engine on one device (its config as JSON), items from the shared queue, events back."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides; it sets `cancel`

    def emit(kind, index, **data):
        events.put((n, kind, index, data))

    def next_item():
        if stop.is_set() or cancel.is_set() or os.getppid() != parent_pid:
            return None  # stopping, or the parent is gone (kill -9): take no new work
        return tasks.get()

    try:
        runner = BatchRunner(EngineConfig.from_json(config_json), emit, should_stop=stop.is_set,
                             should_cancel=lambda: cancel.is_set() or os.getppid() != parent_pid, pipeline=pipeline)
        try:
            runner.run(next_item)
        finally:
            events.put((n, "hidden", -1, {**runner.hidden, "pipelined": bool(runner.pipeline)}))
    except StillmotionError as e:
        events.put((n, "fatal", -1, {"error": e}))
    except BaseException as e:  # noqa: BLE001 - reported to the parent, which goes on with the others
        events.put((n, "fatal", -1, {"error": StillmotionError(f"worker {n} failed: {type(e).__name__}: {e}")}))
    finally:
        events.put((n, "exit", -1, {}))
