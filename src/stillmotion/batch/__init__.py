"""Batch: a folder (or manifest) of images -> videos, resumable and reproducible.

    plan = plan_batch("images/", "videos/", model="svd-xt", fields={"fps": 7}, seed=1234)
    ctl = run_batch(plan, model="svd-xt")          # writes videos/batch-report.json
    ctl.count("failed")

plan.py decides what to do (inputs, seeds, outputs, clashes, resume) without
loading the model; run.py is one pipelined worker; control.py runs workers
(here, or one process per device) and keeps the report.
"""

from .control import Controller, run_batch
from .estimate import estimate
from .plan import REPORT_NAME, Item, Plan, derive_seed, plan_batch

__all__ = ["Controller", "Item", "Plan", "REPORT_NAME", "derive_seed", "estimate", "plan_batch", "run_batch"]
