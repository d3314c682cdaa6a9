"""Training checkpoints in OUTPUT/checkpoints/step-N: save, find the newest, resume from it.

Safetensors + JSON only (stillmotion never loads pickles): the trainable
weights, the optimizer's tensors, the EMA weights and a state.json with the
step, the loss history and the optimizer's scalar settings. A checkpoint
folder appears whole or not at all (written beside, then renamed), so the
newest one is always complete.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Callable, Optional

from ..errors import InvalidInput
from ..util import atomic_path

CHECKPOINTS = "checkpoints"


def latest_checkpoint(out: Path) -> Optional[Path]:
    root = Path(out) / CHECKPOINTS
    if not root.is_dir():
        return None
    done = [p for p in root.glob("step-*") if (p / "state.json").is_file()]
    return max(done, key=lambda p: int(p.name.split("-")[1]), default=None)


def resume(out: Path, params, opt, ema, log: Callable[[str], None]) -> Optional[dict]:
    """Load the newest checkpoint in `out` into params, opt and ema; its state, or None when there is none."""
    ckpt = latest_checkpoint(out)
    if ckpt is None:
        return None
    state = load_checkpoint(ckpt, params, opt, ema)
    log(f"resumed from {ckpt} at step {state['step']}")
    return state


def save_checkpoint(out: Path, state: dict, params, opt, ema, keep: int) -> Path:
    """Write checkpoints/step-N for state["step"]; old ones pruned to `keep`."""
    from safetensors.torch import save_file

    root = out / CHECKPOINTS
    target = root / f"step-{state['step']:07d}"
    with atomic_path(target) as tmp:
        tmp.mkdir()
        save_file({f"p{i}": p.detach().contiguous().cpu() for i, p in enumerate(params)}, tmp / "trainable.safetensors")
        if ema is not None:
            save_file({f"p{i}": e.contiguous().cpu() for i, e in enumerate(ema)}, tmp / "ema.safetensors")
        osd = opt.state_dict()
        tensors, scalars = {}, {}
        for idx, st in osd["state"].items():
            for k, v in st.items():
                if hasattr(v, "shape"):
                    tensors[f"{idx}.{k}"] = v.detach().contiguous().cpu()
                else:
                    scalars[f"{idx}.{k}"] = v
        save_file(tensors, tmp / "optimizer.safetensors")
        meta = dict(state, optimizer={"param_groups": osd["param_groups"], "scalars": scalars}, n_params=len(params))
        (tmp / "state.json").write_text(json.dumps(meta))
    done = sorted((p for p in root.glob("step-*") if p.is_dir()), key=lambda p: int(p.name.split("-")[1]))
    for old in done[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return target


def load_checkpoint(ckpt: Path, params, opt, ema) -> dict:
    """Copy a checkpoint's tensors into params, opt and ema (when both have one); the run's state."""
    import torch
    from safetensors.torch import load_file

    meta = json.loads((ckpt / "state.json").read_text())
    if meta.get("n_params") != len(params):
        raise InvalidInput(
            f"Checkpoint {ckpt} holds {meta.get('n_params')} trainable tensors but this run trains {len(params)}: "
            "it was made with other settings (--lora, --base); use another --output or --no-resume."
        )
    w = load_file(ckpt / "trainable.safetensors")
    with torch.no_grad():
        for i, p in enumerate(params):
            p.copy_(w[f"p{i}"].to(p.dtype))
    if ema is not None and (ckpt / "ema.safetensors").is_file():
        e = load_file(ckpt / "ema.safetensors")
        for i, t in enumerate(ema):
            t.copy_(e[f"p{i}"])
    tensors = load_file(ckpt / "optimizer.safetensors")
    state: dict = {}
    for key, v in tensors.items():
        idx, k = key.split(".", 1)
        state.setdefault(int(idx), {})[k] = v
    for key, v in meta["optimizer"]["scalars"].items():
        idx, k = key.split(".", 1)
        state.setdefault(int(idx), {})[k] = v
    opt.load_state_dict({"state": state, "param_groups": meta["optimizer"]["param_groups"]})
    return {"step": meta["step"], "losses": meta["losses"], "validations": meta.get("validations", []),
            "seconds": meta.get("seconds", 0.0)}
