"""The record that goes into every sidecar: spec, input, model, device, run, versions."""

from __future__ import annotations

import platform
from datetime import datetime, timezone

from ..spec import GenerationSpec
from ..version import __version__
from .types import RunRecord


def package_versions() -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for name in ("stillmotion", "torch", "diffusers", "transformers", "av"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out


def run_metadata(spec: GenerationSpec, input_info: dict, engine: dict, run: RunRecord) -> dict:
    """The sidecar's content. `engine` is Engine.describe(); `run` what the run did."""
    return {
        "stillmotion": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "spec": spec.model_dump(mode="json"),
        "seed": spec.seed,
        "input": input_info,
        **engine,
        **run.to_metadata(),
        "versions": package_versions(),
        "timings": run.timings,
    }
