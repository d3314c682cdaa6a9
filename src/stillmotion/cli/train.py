"""`stillmotion train CLIPS`: fine-tune SVD (full or LoRA) on a folder of clips."""

from __future__ import annotations

import json

import click

from ..models.registry import DEFAULT_MODEL


def _size(value):
    if value is None:
        return None, None
    try:
        w, h = (int(v) for v in str(value).lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"use WIDTHxHEIGHT such as 1024x576, got {value!r}") from None
    return w, h


@click.command()
@click.argument("clips", type=click.Path(file_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False), help="where the trained model goes (and its checkpoints)")
@click.option("--base", default=DEFAULT_MODEL, show_default=True, help="model to start from: a registry name, a diffusers folder or a hub id")
@click.option("--lora", "lora_rank", type=int, default=None, help="train LoRA adapters of this rank (default: full fine-tuning)")
@click.option("--lora-alpha", type=float, default=None, help="LoRA alpha (default: the rank)")
@click.option("--steps", type=int, default=1000, show_default=True)
@click.option("--batch-size", type=int, default=1, show_default=True)
@click.option("--grad-accum", type=int, default=1, show_default=True, help="gradient accumulation steps")
@click.option("--lr", type=float, default=None, help="learning rate (default: 1e-5 full, 1e-4 LoRA)")
@click.option("--lr-warmup", type=int, default=0, show_default=True)
@click.option("--lr-schedule", type=click.Choice(["constant", "cosine"]), default="constant", show_default=True)
@click.option("--frames", "num_frames", type=int, default=None, help="frames per training window (default: the base model's)")
@click.option("--size", default=None, help="WIDTHxHEIGHT of training frames (default: the base model's square size)")
@click.option("--fps", type=int, default=None, help="sample clips at this frame rate (default: the base model's)")
@click.option("--resize", type=click.Choice(["crop", "pad", "stretch"]), default="crop", show_default=True)
@click.option("--motion-bucket", type=int, default=None, help="one motion bucket for every clip (default: measured per clip)")
@click.option("--cond-dropout", type=float, default=0.1, show_default=True, help="probability of dropping the image conditioning (for guidance)")
@click.option("--mixed-precision", type=click.Choice(["no", "fp16", "bf16"]), default="no", show_default=True)
@click.option("--gradient-checkpointing", is_flag=True, help="trade compute for memory")
@click.option("--adam8bit", is_flag=True, help="8-bit AdamW (needs bitsandbytes)")
@click.option("--ema", "ema_decay", type=float, default=None, help="keep an EMA of the weights with this decay and save it")
@click.option("--checkpoint-every", type=int, default=500, show_default=True)
@click.option("--validate-every", type=int, default=500, show_default=True, help="write a validation video every N steps")
@click.option("--no-resume", is_flag=True, help="start over even if OUTPUT holds checkpoints")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default=None, help="cpu, cuda, cuda:N or mps (default: the best available)")
@click.option("--json", "as_json", is_flag=True, help="print the summary as one JSON line")
@click.option("-q", "--quiet", is_flag=True, help="no progress bar")
def train(clips, output, base, lora_rank, lora_alpha, steps, batch_size, grad_accum, lr, lr_warmup, lr_schedule,
          num_frames, size, fps, resize, motion_bucket, cond_dropout, mixed_precision, gradient_checkpointing,
          adam8bit, ema_decay, checkpoint_every, validate_every, no_resume, seed, device, as_json, quiet):
    """Fine-tune SVD on the clips in CLIPS (mp4/webm/gif files or folders of frames).

    \b
    stillmotion train ./clips --base svd-xt --lora 64 --steps 2000 -o ./my-svd
    stillmotion generate photo.jpg --model ./my-svd -o out.mp4

    Re-running the same command resumes from the newest checkpoint in OUTPUT.
    """
    from ..train.trainer import TrainConfig, train as run

    width, height = _size(size)
    cfg = TrainConfig(
        base=base, output=output, clips=clips, steps=steps, batch_size=batch_size, grad_accum=grad_accum,
        lr=lr if lr is not None else (1e-4 if lora_rank else 1e-5), lr_warmup=lr_warmup, lr_schedule=lr_schedule,
        lora_rank=lora_rank, lora_alpha=lora_alpha, num_frames=num_frames, width=width, height=height, fps=fps,
        resize=resize, motion_bucket=motion_bucket, cond_dropout=cond_dropout, mixed_precision=mixed_precision,
        gradient_checkpointing=gradient_checkpointing, use_8bit_adam=adam8bit, ema_decay=ema_decay,
        checkpoint_every=checkpoint_every, validate_every=validate_every, resume=not no_resume, seed=seed, device=device,
    )
    log = (lambda m: None) if as_json else (lambda m: click.echo(m, err=True))
    summary = run(cfg, log=log, progress=not quiet and not as_json)
    if as_json:
        click.echo(json.dumps({k: v for k, v in summary.items() if k != "validations"}))
    else:
        click.echo(f"{summary['output']}: {summary['saved']} after {summary['steps']} steps (loss {summary['final_loss']:.4f})")
    return 0
