"""`stillmotion batch --ray`: the same batch plan, run by an actor pool through Ray Data.

    1. plan on the driver    plan_batch(): the same inputs, names, seeds, clash
                             checks and resume rules as the one-machine batch
    2. a dataset of items    one row per item to make (the Item: source, end
                             image, output, seed, requested spec), in plan order
    3. map_batches           an actor pool; each actor loads the Engine once (from
                             the driver's EngineConfig, as JSON) and runs its rows
                             through batch's own BatchRunner (pipelined load /
                             generate / write, atomic files, same sidecars)
    4. report on the driver  rows come back as they finish; batch's Controller
                             keeps item status and writes the same batch-report.json

Outputs are written by the actors straight to OUT_DIR, so on a multi-node
cluster OUT_DIR (and a local input folder) must be a path every node sees (a
shared volume); s3:// and other remote inputs are read by each actor itself. An actor that dies mid-item is restarted by Ray and the item is run
again; output files appear whole or not at all, so a re-run resumes.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Callable, Optional

from ..engine.config import EngineConfig
from . import require_ray


def item_rows(items) -> list[dict]:
    """One dataset row per item: every field of the Item, as JSON, so Arrow never retypes one (a spec field,
    a missing end image) and a field added to Item travels without a change here."""
    return [{"item": json.dumps({**dataclasses.asdict(i), "output": str(i.output), "sidecar": str(i.sidecar)})}
            for i in items]


def _items_from_batch(batch: dict) -> list:
    from ..batch import Item

    items = []
    for text in batch["item"]:
        fields = json.loads(text)
        items.append(Item(**{**fields, "output": Path(fields["output"]), "sidecar": Path(fields["sidecar"])}))
    return items


class ItemRunner:
    """One actor of the pool: the Engine loads once (in __init__, from `config`: EngineConfig.to_json()),
    then batches of rows run through batch's BatchRunner."""

    def __init__(self, config: dict):
        import os

        from ..engine import Engine

        self.config = EngineConfig.from_json(config)
        self.engine = Engine(self.config.replace(progress=False))  # it sets config.threads torch threads
        self.where = f"{os.uname().nodename}:{os.getpid()}"

    def __call__(self, batch: dict) -> dict:
        from ..batch.run import BatchRunner

        items = _items_from_batch(batch)
        finals: dict[int, dict] = {}

        def emit(kind, index, **data):
            if kind in ("done", "failed", "not_run"):
                finals[index] = {"status": kind, "error": data.get("error"), "seconds": data.get("seconds")}
            elif kind == "retry":
                finals.setdefault(index, {})["retry"] = data.get("error")

        pending = iter(items)
        runner = BatchRunner(self.config, emit, engine=self.engine)
        runner.run(lambda: next(pending, None))
        # an out-of-memory retry may have rebuilt the engine with offload: keep it, and its config
        self.engine, self.config = runner.engine, runner.config
        out = {"index": [], "status": [], "error": [], "seconds": [], "load_s": [], "write_s": [], "actor": []}
        for n, item in enumerate(items):
            f = finals.get(item.index) or {"status": "not_run", "error": "the worker stopped before this item"}
            out["index"].append(item.index)
            out["status"].append(f.get("status", "not_run"))
            out["error"].append(f.get("error") or "")
            out["seconds"].append(float(f["seconds"]) if f.get("seconds") is not None else -1.0)
            out["load_s"].append(runner.hidden["load"] if n == 0 else 0.0)  # per batch, counted once
            out["write_s"].append(runner.hidden["write"] if n == 0 else 0.0)
            out["actor"].append(self.where)
        return out


def run_batch_ray(plan, config: EngineConfig, *, actors: Optional[int] = None,
                  gpus_per_actor: Optional[float] = None, cpus_per_actor: Optional[float] = None,
                  batch_size: int = 1, max_failures: Optional[int] = None,
                  should_cancel: Callable[[], bool] = lambda: False, on_event=None, address: Optional[str] = None):
    """Run every pending item of `plan` on a Ray actor pool, each actor's Engine built from `config`;
    returns batch's Controller (report written).

    `gpus_per_actor` defaults to 1 when the cluster has GPUs and the device is not cpu, else 0.
    On a CPU, torch's results depend on its thread count, so each actor uses as many threads as the
    driver (what a plain batch here would use); `config.threads` overrides that. Byte-identical
    files on a CPU need one thread on both sides: with several, MKL/oneDNN results varied from
    process to process on a busy machine even for the plain batch (measured on 2 cores).
    `address` joins an existing cluster ("auto", "ray://host:10001"); without one, Ray starts locally.
    """
    from ..batch.control import controlled

    ray = require_ray()
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    if gpus_per_actor is None:
        has_gpu = ray.cluster_resources().get("GPU", 0) > 0
        gpus_per_actor = 1 if has_gpu and config.device != "cpu" else 0
    if actors is None:
        actors = max(1, int(ray.cluster_resources().get("GPU", 0) // gpus_per_actor)) if gpus_per_actor else 1
    if cpus_per_actor is None:
        cpus_per_actor = 1
    device = config.device_or_none or ("cuda" if gpus_per_actor else "cpu")
    threads = config.threads or (None if gpus_per_actor else _plain_threads())
    config = config.replace(device=device, threads=threads)

    todo = plan.to_run
    with controlled(plan, devices=[f"ray:{device}"] * actors, max_failures=max_failures, on_event=on_event,
                    should_cancel=should_cancel) as ctl:
        try:
            if todo:
                # 2. One row per item, in plan order
                ds = ray.data.from_items(item_rows(todo), override_num_blocks=max(1, min(len(todo), 4 * actors)))
                # 3. The actor pool: each actor loads the model once; a killed actor is restarted and its rows rerun
                ds = ds.map_batches(
                    ItemRunner,
                    fn_constructor_kwargs={"config": config.to_json()},
                    batch_size=batch_size,
                    batch_format="numpy",
                    compute=ray.data.ActorPoolStrategy(size=actors),
                    num_gpus=gpus_per_actor,
                    num_cpus=cpus_per_actor,
                    max_restarts=-1,
                    max_task_retries=-1,
                )
                # 4. Rows come back as items finish: the Controller keeps status and the report
                for row in ds.iter_rows():
                    index = int(row["index"])
                    ctl.handle("start", index)
                    data = {"error": row["error"] or None, "seconds": None if row["seconds"] < 0 else row["seconds"]}
                    ctl.handle(str(row["status"]), index, **data)
                    ctl.hidden["load"] += float(row["load_s"])
                    ctl.hidden["write"] += float(row["write_s"])
                    if ctl.stop.is_set() or should_cancel():
                        break
        except ray.exceptions.RayError as e:  # e.g. no actor could load the model: ours, on one line
            from ..errors import StillmotionError
            from ..util import last_line

            ctl.fatal = StillmotionError(f"The Ray batch stopped: {last_line(e, 300)}; "
                                         f"finished videos are kept, re-run to resume.")
    if ctl.fatal is not None:
        raise ctl.fatal
    return ctl


def _plain_threads() -> int:
    """The torch thread count a plain batch uses here (Ray sets OMP_NUM_THREADS=1 inside its workers)."""
    import torch

    return torch.get_num_threads()
