"""The `stillmotion` command. Subcommands live in their own modules and load lazily,
so `stillmotion --help` never imports torch."""

from __future__ import annotations

import importlib
import sys

import click

from ..errors import StillmotionError

SUBCOMMANDS = {
    "generate": ("stillmotion.cli.generate", "generate", "Turn one image into a video."),
    "batch": ("stillmotion.cli.batch", "batch", "Turn a folder (or manifest) of images into videos; resumable."),
    "serve": ("stillmotion.cli.serve", "serve", "Run the web UI and HTTP API on one job queue."),
    "models": ("stillmotion.cli.models", "models", "List, download and verify models."),
    "interpolate": ("stillmotion.cli.interpolate", "interpolate", "Interpolate frames of any video."),
    "export-workflow": ("stillmotion.cli.export_workflow", "export_workflow", "Write the ComfyUI workflow of a video we made."),
    "estimate": ("stillmotion.cli.estimate", "estimate_command", "Plan memory, time and cost before running."),
    "train": ("stillmotion.cli.train", "train", "Fine-tune SVD (full or LoRA) on your own clips."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return [name for name, (mod, _, _) in SUBCOMMANDS.items() if importlib.util.find_spec(mod) is not None]

    def get_command(self, ctx, name):
        if name not in SUBCOMMANDS:
            return None
        mod, attr, _ = SUBCOMMANDS[name]
        try:
            return getattr(importlib.import_module(mod), attr)
        except ModuleNotFoundError as e:
            if e.name == mod:
                return None
            raise

    def format_commands(self, ctx, formatter):
        rows = [(name, SUBCOMMANDS[name][2]) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="stillmotion")
def cli():
    """stillmotion: turn a still image into a short video with Stable Video Diffusion.

    \b
    stillmotion generate photo.jpg -o photo.mp4              # SVD-XT on a GPU
    stillmotion generate photo.jpg --model tiny -o demo.mp4  # offline smoke test on a CPU
    """


def main(argv=None) -> None:
    """Entry point: StillmotionError -> one line on stderr and its exit code; Ctrl-C -> 130."""
    try:
        # standalone_mode=False: a command's int return value (or ctx.exit(n)) is the exit code
        rv = cli.main(args=argv, prog_name="stillmotion", standalone_mode=False)
    except StillmotionError as e:
        click.echo(f"error: {e.message}", err=True)
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        click.echo("error: cancelled; no output was written.", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        click.echo("error: cancelled; no output was written.", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(2 if isinstance(e, click.UsageError) else e.exit_code)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    sys.exit(rv if isinstance(rv, int) else 0)
