"""Flags shared by generate, batch and serve: every GenerationSpec field, and the engine's options."""

from __future__ import annotations

import functools
import signal
import threading

import click

# flag -> (spec field, click type, help). Defaults are None: the model's registry entry decides.
SPEC_FLAGS = [
    ("--frames", "num_frames", int, "frames to generate (model default: SVD 14, XT 25)"),
    ("--steps", "num_inference_steps", int, "denoising steps (default 25)"),
    ("--fps", "fps", int, "playback fps, also the model's fps conditioning (default 7)"),
    ("--motion", "motion_bucket_id", int, "motion bucket 1-1023: higher moves more (default 127)"),
    ("--noise-aug", "noise_aug_strength", float, "noise added to the conditioning image (default 0.02)"),
    ("--min-cfg", "min_guidance_scale", float, "guidance at the first frame (default 1.0)"),
    ("--max-cfg", "max_guidance_scale", float, "guidance at the last frame (default 3.0)"),
    ("--decode-chunk", "decode_chunk_size", int, "frames the VAE decodes at once (default: as many as fit)"),
    ("--seed", "seed", int, "0..2^32-1; -1 or absent picks one (it is recorded)"),
    ("--width", "width", int, "output width, multiple of 64 (default: from the image's aspect)"),
    ("--height", "height", int, "output height, multiple of 64 (default: from the image's aspect)"),
    ("--resize", "resize", click.Choice(["crop", "pad", "stretch"]), "how the image meets the size (default crop)"),
    ("--format", "format", click.Choice(["mp4", "webm", "gif", "webp", "png"]), "output format (default mp4 or from -o)"),
    ("--interpolate", "interpolate", int, "frame interpolation factor 2, 3, 4 or 8 (multiplies fps)"),
    ("--interpolate-fps", "interpolate_fps", float, "interpolate to this playback fps (instead of a factor)"),
    ("--interpolate-backend", "interpolate_backend", click.Choice(["flow", "rife"]), "flow (default, no weights) or rife (`stillmotion models download rife` first)"),
    ("--loop", "loop", click.Choice(["none", "pingpong", "blend"]), "make a seamless loop: blend (--loop alone) or pingpong"),
    ("--duration", "duration", float, "seconds of video: chains segments from each last frame"),
    ("--segments", "segments", int, "number of chained segments (instead of --duration)"),
    ("--speed", "speed", click.Choice(["exact", "fast"]), "exact (default, same frames as diffusers) or fast"),
    ("--cache-interval", "cache_interval", int, "fast mode: a full UNet pass every N steps (default 3)"),
]


def spec_options(f):
    """Add every spec flag to a click command; they arrive in kwargs under their spec names."""
    for flag, name, typ, help_ in reversed(SPEC_FLAGS):
        extra = {"is_flag": False, "flag_value": "blend"} if name == "loop" else {}  # `--loop` alone: blend
        f = click.option(flag, name, type=typ, default=None, help=help_, **extra)(f)
    return f


def pop_spec_fields(kwargs: dict) -> dict:
    """Remove the spec flags from kwargs; return those the user actually gave."""
    out = {}
    for _, name, _, _ in SPEC_FLAGS:
        v = kwargs.pop(name, None)
        if v is not None:
            out[name] = v
    return out


def engine_options(f):
    opts = [
        click.option("--model", "-m", default=None, help="svd, svd-xt (default), svd-xt-1-1, tiny, a local folder or a hub id"),
        click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N or mps"),
        click.option("--dtype", type=click.Choice(["fp16", "bf16", "fp32"]), default=None, help="default: fp16 on GPU, fp32 on CPU"),
        click.option("--offload", type=click.Choice(["none", "model", "sequential"]), default="none", show_default=True,
                     help="move idle parts of the model to the CPU to save GPU memory"),
        click.option("--forward-chunking", is_flag=True, help="chunk the UNet's feed-forward layers (less memory, a little slower)"),
        click.option("--memory", "memory", type=click.Choice(["auto", "none"]), default="auto", show_default=True,
                     help="auto: pick the fastest plan that fits free memory and step down on out-of-memory; none: as given"),
        click.option("--max-memory", "max_memory", default=None, metavar="SIZE",
                     help="plan for at most this much device memory, e.g. 8GB (default: the device's free memory)"),
        click.option("--compile", "compile_", is_flag=True,
                     help="torch.compile the UNet and VAE decoder (slow first run, cached; same output)"),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def pop_engine_kwargs(kwargs: dict) -> dict:
    return {
        "device": kwargs.pop("device", "auto"),
        "dtype": kwargs.pop("dtype", None),
        "offload": kwargs.pop("offload", "none"),
        "forward_chunking": kwargs.pop("forward_chunking", False),
        "memory": kwargs.pop("memory", "auto"),
        "max_memory": kwargs.pop("max_memory", None),
        "compile": kwargs.pop("compile_", False),
    }


class CancelOnSigint:
    """First Ctrl-C asks the engine to stop between steps; a second one interrupts at once."""

    def __init__(self):
        self.event = threading.Event()
        self._old = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._old = signal.getsignal(signal.SIGINT)
            signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.event.is_set():
            raise KeyboardInterrupt
        self.event.set()

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
        return False

    def __call__(self) -> bool:
        return self.event.is_set()


def rich_progress(enabled: bool = True):
    """A rich progress bar for one generation; returns (context manager, on_progress callback)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    progress = Progress(
        TextColumn("[bold]{task.fields[stage]:<11}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        disable=not enabled,
        transient=False,
    )
    task = progress.add_task("generate", total=1.0, stage="loading", detail="")

    def on_progress(p):
        progress.update(task, completed=p.fraction, stage=p.stage, detail=p.message)

    return progress, on_progress, functools.partial(progress.update, task)
