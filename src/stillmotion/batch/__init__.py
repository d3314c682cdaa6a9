"""Batch: a folder (or manifest) of images -> videos, resumable and reproducible.

    plan = plan_batch("images/", "videos/", model="svd-xt", fields={"fps": 7}, seed=1234)
    ctl = run_batch(plan, EngineConfig(model="svd-xt"))   # writes videos/batch-report.json
    ctl.count("failed")

plan.py decides what to do (inputs, seeds, outputs, clashes, resume) without
loading the model; run.py is one pipelined runner; control.py runs runners
(here, or one process per device), keeps the report, and says beforehand how
long the items should take (`expected_seconds`, for --dry-run).
"""

from .control import Controller, expected_seconds, run_batch
from .plan import REPORT_NAME, BatchPlan, Item, derive_seed, plan_batch

__all__ = ["BatchPlan", "Controller", "Item", "REPORT_NAME", "derive_seed", "expected_seconds", "plan_batch",
           "run_batch"]
