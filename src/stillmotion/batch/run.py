"""One runner: load the model once, then generate item after item, pipelined.

While item N denoises, a loader thread reads, decodes and sizes image N+1 and
a writer thread encodes video N-1 (PyAV and Pillow release the GIL for most
of that work), so the accelerator does not wait on file I/O:

    loader   [read+decode N+1]          [read+decode N+2]
    engine   [denoise+decode N      ]   [denoise+decode N+1    ]
    writer   [encode+write N-1]         [encode+write N]

On the CPU the model itself already uses every core, and threads beside it
only steal them (bench/bench_batch.py measured it slower on 2 cores), so
there the phases run in line unless `pipeline=True` is asked for.

The runner reports through `emit(kind, index, **data)`; kinds are "start",
"progress", "retry", "done", "failed" and "not_run". Item status lives in the
controller (control.py), which runs in this process or, with several devices,
in the parent process.
"""

from __future__ import annotations

import contextlib
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional

from ..engine.config import EngineConfig
from ..errors import Cancelled, InvalidInput, OutOfMemory, StillmotionError
from ..spec import GenerationSpec
from ..util import remove
from .plan import Item

Emit = Callable[..., None]


@dataclass
class Loaded:
    image: Any  # PIL image, already at the spec's size
    spec: GenerationSpec  # resolved
    input: dict  # source, sha256, original size
    seconds: float
    end_image: Any = None  # the end image (keyframes), prepared like `image`


class BatchRunner:
    """Runs items on one Engine, built from `config` (or the `engine` given). `next_item()` returns the
    next Item or None when there are no more."""

    def __init__(self, config: EngineConfig, emit: Emit, *,
                 should_stop: Callable[[], bool] = lambda: False,
                 should_cancel: Callable[[], bool] = lambda: False,
                 engine=None, pipeline: Optional[bool] = None):
        self.config = config
        self.pipeline = pipeline  # None: on for GPUs/MPS, off on the CPU (see run())
        self.emit = emit
        self.should_stop = should_stop
        self.should_cancel = should_cancel
        self.engine = engine
        self.hidden = {"load": 0.0, "write": 0.0}  # seconds of I/O done beside the engine

    def _engine(self):
        if self.engine is None:
            from ..engine import Engine

            self.engine = Engine(self.config.replace(progress=False))
        return self.engine

    # ------------------------------------------------------------------
    def run(self, next_item: Callable[[], Optional[Item]]) -> None:
        engine = self._engine()
        self.entry, self.family = engine.entry, engine.family
        if self.pipeline is None:
            # On the CPU the model already uses every core: I/O threads beside it only steal them
            # (measured: bench/bench_batch.py). On an accelerator they keep it fed.
            self.pipeline = str(engine.device) != "cpu"
        if self.pipeline:
            loader = ThreadPoolExecutor(1, thread_name_prefix="batch-load")
            writer = ThreadPoolExecutor(1, thread_name_prefix="batch-write")
        else:
            loader = writer = _Inline()
        pending: Optional[tuple[Item, Future, float]] = None  # the video being written
        try:
            current = None if self.should_stop() else next_item()
            current_load = loader.submit(self._load, current) if current else None
            while current is not None:
                if self.should_stop():
                    break  # e.g. --max-failures reached: items not started stay "not run"
                # 1. Start reading the next image now; it decodes while this one denoises
                following = None if self.should_stop() or self.should_cancel() else next_item()
                following_load = loader.submit(self._load, following) if following else None
                # 2. Generate this one
                item, t0 = current, time.perf_counter()
                self.emit("start", item.index)
                try:
                    loaded = current_load.result()
                    result = self._generate(item, loaded)
                except Cancelled:
                    self.emit("not_run", item.index, error="cancelled")
                    if following is not None:
                        self.emit("not_run", following.index, error="cancelled")
                    break
                except Exception as e:  # noqa: BLE001 - one item's bug must not end the batch
                    self.emit("failed", item.index, error=item_error(e), seconds=round(time.perf_counter() - t0, 3))
                else:
                    # 3. Hand the frames to the writer; wait for the previous video first (bounded memory)
                    self._finish(pending)
                    gen_seconds = time.perf_counter() - t0
                    pending = (item, writer.submit(self._save, item, result), gen_seconds)
                current, current_load = following, following_load
        finally:
            self._finish(pending)
            loader.shutdown(wait=True, cancel_futures=True)
            writer.shutdown(wait=True)

    def _finish(self, pending) -> None:
        if pending is None:
            return
        item, future, gen_seconds = pending
        try:
            write_seconds = future.result()
        except StillmotionError as e:
            self.emit("failed", item.index, error=e.message, seconds=round(gen_seconds, 3))
        except Exception as e:  # noqa: BLE001
            self.emit("failed", item.index, error=f"could not write: {type(e).__name__}: {e}", seconds=round(gen_seconds, 3))
        else:
            self.emit("done", item.index, seconds=round(gen_seconds + write_seconds, 3))

    # ------------------------------------------------------------------
    def _load(self, item: Item) -> Loaded:
        """Read, decode and size the image (in the loader thread): the engine's own steps 1-3, on the
        model entry rather than the engine (it may be rebuilt meanwhile) and without its lock."""
        from ..engine.core import prepare_inputs

        t = time.perf_counter()
        with naming_image(item.key):
            prepared, spec, info, ends = prepare_inputs(self.entry, item.source, item.spec, family=self.family,
                                                        end_image=item.end_source or None)
        seconds = time.perf_counter() - t
        self.hidden["load"] += seconds
        return Loaded(image=prepared, spec=spec, input=info, seconds=seconds, end_image=ends[0] if ends else None)

    def _generate(self, item: Item, loaded: Loaded):
        def on_progress(p):
            self.emit("progress", item.index, stage=p.stage, step=p.step, total=p.total)

        engine = self._engine()
        oom = None
        try:
            result = engine.generate(loaded.image, loaded.spec, on_progress=on_progress, should_cancel=self.should_cancel,
                                     end_image=loaded.end_image)
        except OutOfMemory as first:
            oom = first.message  # leave the except block first: its traceback holds the engine's memory
        if oom is not None:
            # One retry with lower-memory settings before the item counts as failed.
            spec = loaded.spec.update(decode_chunk_size=1)
            how = "decode_chunk_size=1"
            if engine.device != "cpu" and engine.config.offload == "none":
                from ..engine.device import free_memory

                self.engine = engine = None
                free_memory()
                self.config = self.config.replace(offload="model")  # kept for the rest of this runner's items
                how += ", offload=model"
            self.emit("retry", item.index, error=f"{oom} Retrying with {how}.")
            result = self._engine().generate(loaded.image, spec, on_progress=on_progress, should_cancel=self.should_cancel,
                                             end_image=loaded.end_image)
            # recorded like the engine's own step-downs (RunRecord.fallbacks)
            result.metadata.setdefault("fallbacks", []).append({"stage": "batch", "error": oom[:200], "to": how})
        result.metadata["input"] = loaded.input
        result.metadata.setdefault("timings", {})["prepare"] = round(loaded.seconds, 4)
        result.metadata["batch"] = {"key": item.key, "variant": item.variant, "requested": item.requested}
        return result

    def _save(self, item: Item, result) -> float:
        """Write the video (atomically), then its sidecar; returns the seconds it took (writer thread)."""
        t = time.perf_counter()
        save_result(result, item)
        seconds = time.perf_counter() - t
        self.hidden["write"] += seconds
        return seconds


class _Inline:
    """An executor that runs each task at once, in the calling thread (no pipelining)."""

    def submit(self, fn, *args) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args))
        except BaseException as e:  # noqa: BLE001 - delivered through the future, as a pool would
            future.set_exception(e)
        return future

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        pass


def save_result(result, item: Item) -> None:
    """Video and NAME.json, atomically (the writer keeps run-dependent keys out of the video's bytes)."""
    result.save(item.output, format=result.spec.format)


def item_error(e: Exception) -> str:
    """What a failed batch item records: a stillmotion error's message, or an unexpected error's type and text."""
    return e.message if isinstance(e, StillmotionError) else f"internal error: {type(e).__name__}: {e}"


@contextlib.contextmanager
def naming_image(key: str) -> Iterator[None]:
    """An image error in the block names the batch item (`The image a/cat.jpg ...`), not "The image data"."""
    try:
        yield
    except InvalidInput as e:
        raise type(e)(e.message.replace("The image data", f"The image {key}", 1)) from None


def remove_stale_temps(items) -> None:
    """Remove the temp files a killed run left beside our outputs (util.temp_name: `.cat.mp4.tmp-1a2b3c4d`)."""
    for item in items:
        for target in (item.output, item.sidecar):
            folder = target.parent
            if not folder.is_dir():
                continue
            for stale in folder.glob(f".{target.name}.tmp-*"):
                remove(stale)
