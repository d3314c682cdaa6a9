"""The built-in `demo` model: SVD's architecture, small enough to ship, trained from scratch here.

Same classes as SVD (UNetSpatioTemporalConditionModel with four levels,
AutoencoderKLTemporalDecoder with its temporal decoder, a CLIP vision tower,
EulerDiscreteScheduler with SVD's v-prediction / Karras settings); only the
sizes differ: the VAE downsamples 4x into 4 latent channels (a 64x64 video is
a 16x16 latent), and the UNet's widths are 32 and 64.

Training (scripts/train_demo.py) runs in two stages on procedural clips
(train/synthetic.py) that it draws itself:
  1. the VAE: a linear autoencoder trained in a minute and written exactly
     into AutoencoderKLTemporalDecoder (train/linear_vae.py explains how);
  2. the UNet with the SVD objective (train/trainer.py), VAE and CLIP frozen.
The CLIP tower keeps its seeded random weights: frozen, as in SVD, and a
stable (if uninformed) embedding of the input.

What the demo learned: one camera move, a pan to the right with a gentle
push-in, whose speed follows the motion bucket (127: about 1.6 px/frame at
64 px wide). A single, deterministic move is what a model this small can
learn in half an hour on one CPU thread; a random direction would need the
noise to choose a mode, which a model this size blurs into an average.
"""

from __future__ import annotations

import numpy as np

from ..models.registry import REGISTRY

# One source for the demo's sampling defaults: its registry entry (also written to its stillmotion.json).
DEMO_DEFAULTS = REGISTRY["demo"].defaults

# The demo's camera: pan right (the scene slides left) plus a push-in, both scaled by speed.
DEMO_DIRECTION = (1.0, 0.0)
DEMO_ZOOM_PER_PX = 0.006  # relative zoom per frame, per px/frame of pan
DEMO_SPEED = (0.4, 2.6)  # px/frame at 64 px wide


def demo_camera(speed: float):
    from .synthetic import Camera

    return Camera(pan=(DEMO_DIRECTION[0] * speed, DEMO_DIRECTION[1] * speed), zoom=DEMO_ZOOM_PER_PX * speed)


def demo_clip(rng: np.random.Generator, size: int = 64, num_frames: int = 8) -> np.ndarray:
    from .synthetic import make_clip

    speed = float(rng.uniform(*DEMO_SPEED)) * size / 64
    return make_clip(rng, size, size, num_frames, camera=demo_camera(speed))


def demo_components(seed: int = 0, vae=None) -> dict:
    """The demo's pipeline components at initialisation (pass the built linear VAE as `vae`)."""
    import torch

    from ..models.small_svd import clip_feature_extractor, small_image_encoder, small_unet, svd_scheduler

    torch.manual_seed(seed)
    unet = small_unet(
        widths=(32, 64, 64, 64),
        heads=(2, 4, 4, 4),
        attention=(False, True, True, False),  # no attention at the full latent size: cheaper on a CPU
        cross_attention_dim=32,
        time_embed_dim=16,
        sample_size=16,
    )
    torch.manual_seed(seed + 2)
    image_encoder = small_image_encoder(32)
    return {
        "unet": unet,
        "vae": vae,
        "image_encoder": image_encoder,
        "scheduler": svd_scheduler(),
        "feature_extractor": clip_feature_extractor(),
    }


class DemoClips:
    """Endless procedural clips for the demo: item i is the same clip on every machine."""

    def __init__(self, seed: int = 0, size: int = 64, num_frames: int = 8, fps: int = 8, length: int = 10**7):
        self.seed, self.size, self.num_frames, self.fps, self.length = seed, size, num_frames, fps, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict:
        from ..metrics import motion_bucket

        rng = np.random.default_rng([self.seed, int(i)])
        frames = demo_clip(rng, self.size, self.num_frames)
        return {"frames": frames, "fps": self.fps, "motion_bucket": motion_bucket(frames), "name": f"demo-{i}"}

    def describe(self) -> str:
        return f"procedural demo clips ({self.num_frames} frames at {self.size}x{self.size}, {self.fps} fps)"
