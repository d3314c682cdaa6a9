"""What a training run shows along the way: validation videos with their motion metrics, and the loss plot.

    validate()      sample from a fixed clip's first frame -> OUTPUT/validation/step-N.mp4, its metrics
    plot_losses()   loss per step and its running mean -> OUTPUT/loss.png
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from ..families.base import to_uint8
from ..util import atomic_path


def validate(pipe, unet, dataset, out: Path, step: int, num_frames: int, width: int, height: int, fps: int,
             steps: Optional[int], seed: int) -> dict:
    """Sample from the first frame of a fixed clip; write validation/step-N.mp4; return its motion metrics."""
    import torch
    from PIL import Image

    from ..metrics import motion_metrics

    sample = dataset[0]
    image = Image.fromarray(sample["frames"][0])
    was_training = unet.training
    unet.eval()
    vpipe = type(pipe)(vae=pipe.vae, image_encoder=pipe.image_encoder, unet=unet, scheduler=pipe.scheduler,
                       feature_extractor=pipe.feature_extractor)
    vpipe.set_progress_bar_config(disable=True)
    try:
        with torch.no_grad():
            frames = vpipe(image, height=height, width=width, num_frames=num_frames, num_inference_steps=steps or 8,
                           fps=fps, motion_bucket_id=int(sample["motion_bucket"]), noise_aug_strength=0.02,
                           min_guidance_scale=1.0, max_guidance_scale=1.0, output_type="np",
                           generator=torch.Generator("cpu").manual_seed(seed)).frames[0]
    finally:
        if was_training:
            unet.train()
    frames = to_uint8(frames)
    folder = out / "validation"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"step-{step:07d}.mp4"
    try:
        from ..video import write

        write(frames, path, fps=fps, sidecar=False)
    except Exception:  # noqa: BLE001 - a validation video must never stop training
        path = path.with_suffix(".gif")
        ims = [Image.fromarray(f) for f in frames]
        ims[0].save(path, save_all=True, append_images=ims[1:], duration=int(1000 / fps), loop=0)
    return {"step": step, "video": str(path.relative_to(out)), "metrics": motion_metrics(frames, image)}


def plot_losses(losses: list[float], path: Path) -> Optional[Path]:
    """Loss per step and its running mean, as a PNG (needs matplotlib: pip install 'stillmotion[train]')."""
    if not losses:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    x = np.arange(1, len(losses) + 1)
    ax.plot(x, losses, lw=0.6, alpha=0.4, label="loss")
    k = max(1, min(50, len(losses) // 10))
    if len(losses) >= k:
        ax.plot(x[k - 1:], np.convolve(losses, np.ones(k) / k, mode="valid"), lw=1.5, label=f"mean of {k}")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (EDM, v-prediction)")
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")  # the temp name's suffix is not .png
    plt.close(fig)
    return path
