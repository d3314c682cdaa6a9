"""Where model files live: stillmotion's own cache, the Hugging Face cache, the shipped demo.

Read from the environment on every call (STILLMOTION_CACHE, XDG_CACHE_HOME,
HF_HUB_CACHE, HF_HOME), so a long-lived server and the tests see changes.
"""

from __future__ import annotations

import os
from pathlib import Path

# the built-in demo model, shipped inside the package (trained by scripts/train_demo.py)
DEMO_FOLDER = Path(__file__).resolve().parent.parent / "data" / "demo"


def cache_root() -> Path:
    """stillmotion's own cache (tiny model, manifests, compile caches)."""
    base = os.environ.get("STILLMOTION_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "stillmotion"
    )
    return Path(base)


def hub_cache_dir() -> Path:
    """The standard Hugging Face cache: HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(xdg) / "huggingface" / "hub"


def repo_folder(repo_id: str) -> str:
    """The hub cache's folder name for a repo: models--org--name."""
    return "models--" + repo_id.replace("/", "--")
