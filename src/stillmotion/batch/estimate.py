"""How long a batch will take, before loading the model (for `--dry-run`).

Best: the seconds per item measured by an earlier run into the same output
folder (its batch-report.json, same model). Otherwise a rough figure scaled
from a reference run (frames x steps x pixels), clearly labelled as a guess.
"""

from __future__ import annotations

import json
from typing import Optional

from .plan import Plan

# (seconds per item, frames, steps, width*height) for each model's defaults: rough
# guesses for one recent data-centre GPU in fp16 (tiny: measured on a 2-core CPU).
REFERENCE = {
    "svd": (35.0, 14, 25, 1024 * 576),
    "svd-xt": (60.0, 25, 25, 1024 * 576),
    "svd-xt-1-1": (60.0, 25, 25, 1024 * 576),
    "tiny": (1.5, 4, 2, 64 * 64),
}


def measured_seconds(plan: Plan) -> Optional[float]:
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


def estimate(plan: Plan, devices: int = 1) -> tuple[Optional[float], str]:
    """(seconds for the items to run, where the figure comes from)."""
    todo = plan.to_run
    if not todo:
        return 0.0, "nothing to run"
    per = measured_seconds(plan)
    if per is not None:
        return per * len(todo) / devices, f"measured {per:.1f} s/item in the last run here"
    from ..models.registry import entry_for

    entry = entry_for(plan.model)
    ref = REFERENCE.get(entry.name, REFERENCE["svd-xt"])
    total = 0.0
    for item in todo:
        spec = item.spec
        d = entry.defaults
        frames = spec.num_frames or d.num_frames
        steps = spec.num_inference_steps or d.num_inference_steps
        w, h = (spec.width or d.landscape[0]), (spec.height or d.landscape[1])
        total += ref[0] * (frames / ref[1]) * (steps / ref[2]) * ((w * h) / ref[3])
    where = "a 2-core CPU" if entry.name == "tiny" else "one recent GPU"
    return total / devices, f"rough guess for {where}; a real run measures it"
