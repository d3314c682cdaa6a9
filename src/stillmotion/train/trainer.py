"""`train(config)`: fine-tune (or train) SVD's UNet on clips, full or LoRA, resumable.

Reads top to bottom:
  1. load the base model (any name or folder `generate --model` takes) and the data
  2. choose what trains: the whole UNet, or LoRA adapters on its attention layers
  3. optimizer (AdamW; 8-bit AdamW when asked and bitsandbytes is present), warmup + schedule
  4. accelerate: device, mixed precision, gradient accumulation
  5. resume from the newest checkpoint in OUTPUT/checkpoints (checkpoints.py)
  6. the loop: SVD objective (objective.py), progress bar with the loss; every N steps a
     validation video and the loss plot (validation.py) and a checkpoint
  7. save: a diffusers folder (full) or lora.safetensors + stillmotion.json (LoRA)

Batches are drawn from a generator seeded by (seed, step), so a resumed run
sees the same batches it would have seen without the interruption.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple, Optional

import numpy as np

from ..errors import InvalidInput, ModelUnavailable, StillmotionError
from ..models.registry import DEFAULT_MODEL
from ..util import first_line
from .checkpoints import resume, save_checkpoint
from .objective import ObjectiveConfig, encode_conditioning, svd_loss
from .validation import plot_losses, validate

LORA_FILE = "lora.safetensors"


@dataclass
class TrainConfig:
    base: str = DEFAULT_MODEL
    output: str = "stillmotion-finetune"
    clips: Optional[str] = None
    steps: int = 1000
    batch_size: int = 1
    grad_accum: int = 1
    lr: float = 1e-5
    lr_warmup: int = 0
    lr_schedule: str = "constant"  # constant | cosine
    weight_decay: float = 1e-2
    max_grad_norm: float = 1.0
    lora_rank: Optional[int] = None  # None: full fine-tuning
    lora_alpha: Optional[float] = None  # None: the rank
    num_frames: Optional[int] = None  # None: the base model's default
    width: Optional[int] = None
    height: Optional[int] = None
    fps: Optional[int] = None
    resize: str = "crop"
    motion_bucket: Optional[int] = None  # None: measured per clip
    cond_dropout: float = 0.1
    p_mean: float = 0.7
    p_std: float = 1.6
    mixed_precision: str = "no"  # no | fp16 | bf16
    gradient_checkpointing: bool = False
    use_8bit_adam: bool = False
    ema_decay: Optional[float] = None
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    validate_every: int = 500
    validation_steps: Optional[int] = None  # sampler steps for validation videos (None: model default)
    resume: bool = True
    seed: int = 0
    device: Optional[str] = None

    def check(self) -> None:
        for name in ("steps", "batch_size", "grad_accum", "checkpoint_every", "validate_every", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise InvalidInput(f"{name} must be at least 1, got {getattr(self, name)}.")
        if self.lr <= 0:
            raise InvalidInput(f"lr must be positive, got {self.lr}.")
        if self.lora_rank is not None and self.lora_rank < 1:
            raise InvalidInput(f"--lora RANK must be at least 1, got {self.lora_rank}.")
        if self.lr_schedule not in ("constant", "cosine"):
            raise InvalidInput(f"lr_schedule must be constant or cosine, got {self.lr_schedule!r}.")
        if self.mixed_precision not in ("no", "fp16", "bf16"):
            raise InvalidInput(f"mixed_precision must be no, fp16 or bf16, got {self.mixed_precision!r}.")
        if not 0 <= self.cond_dropout < 1:
            raise InvalidInput(f"cond_dropout must be in [0, 1), got {self.cond_dropout}.")
        for name in ("width", "height"):
            v = getattr(self, name)
            if v is not None and (v < 64 or v % 64):
                raise InvalidInput(f"{name} must be a multiple of 64 (at least 64), got {v}.")
        if self.num_frames is not None and self.num_frames < 2:
            raise InvalidInput(f"num_frames must be at least 2, got {self.num_frames}.")


class _Shape(NamedTuple):
    """What the model trains on: frames per window, their size and frame rate."""

    num_frames: int
    width: int
    height: int
    fps: int


def _log_default(msg: str) -> None:
    print(msg, flush=True)


def train(cfg: TrainConfig, dataset=None, *, log: Callable[[str], None] = _log_default, progress: bool = True,
          encode: Optional[Callable] = None) -> dict:
    """Run (or resume) a training run; returns a summary dict. See the module doc.

    `dataset`: anything with len() and [i] -> {"frames", "fps", "motion_bucket"} (default: a
    ClipFolder of cfg.clips). `encode`: a faster stand-in for the frozen VAE's encoder.
    """
    import torch

    cfg.check()
    out = Path(cfg.output).expanduser()
    torch.manual_seed(cfg.seed)

    # 1. Base model and data
    local, pipe, shape = _load_base(cfg)
    if dataset is None:
        dataset = _clip_folder(cfg, shape)
    describe = getattr(dataset, "describe", None)
    log(f"data: {describe() if describe else f'{len(dataset)} samples'}")

    # 2. What trains
    params = _trainable(pipe, cfg, shape, log)

    # 3. Optimizer (the schedule sets its learning rate every step)
    opt = _optimizer(params, cfg, log)

    # 4. accelerate
    acc, unet, opt = _accelerate(pipe, opt, cfg)
    ema = [p.detach().clone().float() for p in params] if cfg.ema_decay else None

    # 5. Resume
    state = {"step": 0, "losses": [], "validations": []}
    if cfg.resume:
        state = resume(out, params, opt, ema, log) or state
    out.mkdir(parents=True, exist_ok=True)
    (out / "train_config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2))

    # 6. The loop
    obj = ObjectiveConfig(p_mean=cfg.p_mean, p_std=cfg.p_std, cond_dropout=cfg.cond_dropout)
    bar = _progress_bar(cfg.steps, state["step"], progress)
    t0, step0 = time.perf_counter(), state["step"]
    seconds_before = float(state.get("seconds", 0.0))
    step = state["step"]
    while step < cfg.steps:
        loss = _step(cfg, step, pipe, unet, opt, acc, params, dataset, obj, encode)
        step += 1
        _update_ema(ema, params, cfg.ema_decay, step)
        state["step"] = step
        state["losses"].append(round(loss, 6))
        bar.update(1)
        bar.set_postfix(loss=f"{_smooth(state['losses']):.4f}")
        if step % cfg.validate_every == 0 or step == cfg.steps:
            with _swapped(params, ema):
                v = validate(pipe, acc.unwrap_model(unet), dataset, out, step, *shape, cfg.validation_steps, cfg.seed)
            state["validations"].append(v)
            bar.write(f"step {step}: loss {_smooth(state['losses']):.4f}; validation {v['video']} {v['metrics']}")
        state["seconds"] = round(seconds_before + time.perf_counter() - t0, 1)
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            save_checkpoint(out, state, params, opt, ema, cfg.keep_checkpoints)
            plot_losses(state["losses"], out / "loss.png")
    bar.close()
    seconds = time.perf_counter() - t0
    steps_done = step - step0

    # 7. Save the result
    with _swapped(params, ema):
        saved = save_result(pipe, acc.unwrap_model(unet), cfg, local, out, *shape)
    plot_losses(state["losses"], out / "loss.png")
    summary = {
        "output": str(out),
        "saved": saved,
        "steps": step,
        "steps_this_run": steps_done,
        "seconds": round(seconds, 2),
        "steps_per_second": round(steps_done / seconds, 4) if seconds > 0 and steps_done else None,
        "train_seconds_total": state.get("seconds", round(seconds, 1)),
        "final_loss": _smooth(state["losses"]) if state["losses"] else None,
        "validations": state["validations"],
    }
    (out / "train_summary.json").write_text(json.dumps(summary, indent=2))
    log(f"saved {saved} to {out}")
    return summary


# --------------------------------------------------------------------------- the steps
def _load_base(cfg: TrainConfig):
    """(the resolved model, its pipeline in float32, the training _Shape: cfg's or the model's defaults)."""
    import torch
    from diffusers import StableVideoDiffusionPipeline
    from diffusers.utils import logging as dlogging

    from ..models.resolve import resolve

    dlogging.disable_progress_bar()
    local = resolve(cfg.base)
    defaults = local.entry.defaults
    num_frames = cfg.num_frames or defaults.num_frames
    if cfg.width is None and cfg.height is None:
        width, height = defaults.square
    else:  # one side given: square
        width, height = cfg.width or cfg.height, cfg.height or cfg.width
    fps = cfg.fps or defaults.fps
    try:
        pipe = StableVideoDiffusionPipeline.from_pretrained(local.path, variant=local.variant, torch_dtype=torch.float32,
                                                            use_safetensors=True)
    except (OSError, ValueError) as e:
        raise ModelUnavailable(f"Could not load base model {cfg.base!r} from {local.path}: {first_line(e)}") from None
    pipe.set_progress_bar_config(disable=True)
    return local, pipe, _Shape(num_frames, width, height, fps)


def _clip_folder(cfg: TrainConfig, shape: _Shape):
    if not cfg.clips:
        raise InvalidInput("No training clips: pass a folder of clips (stillmotion train CLIPS ...).")
    from .data import ClipFolder

    return ClipFolder(cfg.clips, num_frames=shape.num_frames, width=shape.width, height=shape.height, fps=shape.fps,
                      resize=cfg.resize, motion_bucket=cfg.motion_bucket)


def _trainable(pipe, cfg: TrainConfig, shape: _Shape, log) -> list:
    """Freeze the VAE and CLIP; make the UNet (or LoRA adapters added to it) trainable; its parameters."""
    unet, vae, clip = pipe.unet, pipe.vae, pipe.image_encoder
    vae.requires_grad_(False).eval()
    clip.requires_grad_(False).eval()
    if cfg.lora_rank:
        from ..models.lora import add_lora

        add_lora(unet, cfg.lora_rank, cfg.lora_alpha)
    else:
        unet.requires_grad_(True)
    unet.train()
    if cfg.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    params = [p for p in unet.parameters() if p.requires_grad]
    n_train = sum(p.numel() for p in params)
    log(f"training {'LoRA rank %d' % cfg.lora_rank if cfg.lora_rank else 'the full UNet'}: "
        f"{n_train / 1e6:.2f}M parameters; {shape.num_frames} frames at {shape.width}x{shape.height}, {shape.fps} fps")
    return params


def _optimizer(params, cfg: TrainConfig, log):
    import torch

    if cfg.use_8bit_adam:
        try:
            import bitsandbytes as bnb  # noqa: F401

            return bnb.optim.AdamW8bit(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        except ImportError:
            log("--adam8bit: bitsandbytes is not installed (pip install bitsandbytes); using AdamW")
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def _lr_factor(cfg: TrainConfig, step: int) -> float:
    warm = min(1.0, (step + 1) / cfg.lr_warmup) if cfg.lr_warmup else 1.0
    if cfg.lr_schedule == "cosine":
        return warm * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, step / cfg.steps))))
    return warm


def _accelerate(pipe, opt, cfg: TrainConfig):
    """(the Accelerator, the UNet and optimizer it prepared); the frozen VAE and CLIP moved to its device."""
    from accelerate import Accelerator

    acc = Accelerator(mixed_precision=cfg.mixed_precision, gradient_accumulation_steps=cfg.grad_accum,
                      cpu=(cfg.device == "cpu"))
    unet, opt = acc.prepare(pipe.unet, opt)
    pipe.vae.to(acc.device)
    pipe.image_encoder.to(acc.device)
    return acc, unet, opt


def _step(cfg: TrainConfig, step: int, pipe, unet, opt, acc, params, dataset, obj, encode) -> float:
    """One optimizer step over cfg.grad_accum micro-batches (drawn by (seed, step, micro)); their mean loss."""
    import torch

    for g in opt.param_groups:
        g["lr"] = cfg.lr * _lr_factor(cfg, step)
    loss_sum = 0.0
    for micro in range(cfg.grad_accum):
        gen = torch.Generator().manual_seed(hash((cfg.seed, step, micro)) & 0x7FFFFFFF)
        rng = np.random.default_rng([cfg.seed, step, micro])
        batch = _batch(dataset, rng, cfg.batch_size, acc.device)
        with acc.accumulate(unet):
            enc = encode_conditioning(pipe.vae, pipe.image_encoder, pipe.feature_extractor, batch["frames"],
                                      batch["fps"], batch["buckets"], obj, gen, encode)
            with acc.autocast():
                loss = svd_loss(unet, enc, obj, gen)
            if not torch.isfinite(loss):
                raise StillmotionError(
                    f"The loss became {loss.item()} at step {step}: lower --lr or use --mixed-precision no.")
            acc.backward(loss)
            if acc.sync_gradients and cfg.max_grad_norm:
                acc.clip_grad_norm_(params, cfg.max_grad_norm)
            opt.step()
            opt.zero_grad(set_to_none=True)
        loss_sum += loss.item()
    return loss_sum / cfg.grad_accum


def _update_ema(ema, params, decay: Optional[float], step: int) -> None:
    if ema is None:
        return
    import torch

    d = min(decay, (1 + step) / (10 + step))
    with torch.no_grad():
        for e, p in zip(ema, params):
            e.mul_(d).add_(p.detach().float(), alpha=1 - d)


def _batch(dataset, rng: np.random.Generator, batch_size: int, device) -> dict:
    import torch

    items = [dataset[int(i)] for i in rng.integers(0, len(dataset), batch_size)]
    frames = np.stack([it["frames"] for it in items])
    x = torch.from_numpy(frames).permute(0, 1, 4, 2, 3).float().div(127.5).sub(1.0).to(device)
    return {"frames": x, "fps": [it["fps"] for it in items], "buckets": [it["motion_bucket"] for it in items]}


def _smooth(losses: list[float], n: int = 50) -> float:
    tail = losses[-n:]
    return float(sum(tail) / len(tail))


def _progress_bar(total: int, initial: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc="train", unit="step", disable=not enabled, dynamic_ncols=True)


class _swapped:
    """Temporarily load the EMA weights into the model (no-op without EMA)."""

    def __init__(self, params, ema):
        self.params, self.ema, self.saved = params, ema, None

    def __enter__(self):
        if self.ema is not None:
            self.saved = [p.detach().clone() for p in self.params]
            for p, e in zip(self.params, self.ema):
                p.data.copy_(e.to(p.dtype))

    def __exit__(self, *exc):
        if self.saved is not None:
            for p, s in zip(self.params, self.saved):
                p.data.copy_(s)


# --------------------------------------------------------------------------- the result
def save_result(pipe, unet, cfg: TrainConfig, local, out: Path, num_frames: int, width: int, height: int, fps: int) -> str:
    """Full: the whole pipeline as a diffusers folder. LoRA: lora.safetensors only. Both with stillmotion.json."""
    from ..models.folder_info import write_folder_info

    aspect = width / height
    size_key = "square" if 1 / 1.1 <= aspect <= 1.1 else ("landscape" if aspect > 1 else "portrait")
    defaults = dataclasses.replace(local.entry.defaults, num_frames=num_frames, fps=fps, **{size_key: (width, height)})
    trained = {"base": cfg.base, "steps": cfg.steps, "config": dataclasses.asdict(cfg)}
    if cfg.lora_rank:
        from .lora import save_lora

        save_lora(unet, out / LORA_FILE)
        base = cfg.base if local.source != "local" else str(Path(local.path).resolve())
        write_folder_info(out, defaults, trained=trained, base=base, lora=LORA_FILE)
        return LORA_FILE
    unet.eval()
    type(pipe)(vae=pipe.vae, image_encoder=pipe.image_encoder, unet=unet, scheduler=pipe.scheduler,
               feature_extractor=pipe.feature_extractor).save_pretrained(out, safe_serialization=True)
    write_folder_info(out, defaults, trained=trained)
    return "diffusers folder"
