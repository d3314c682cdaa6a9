"""Speed modes.

exact (the default): the same computation as diffusers, with the gains that do
not change it: PyTorch SDPA attention (diffusers' AttnProcessor2_0, checked and
reported), and on CUDA channels-last weights, cuDNN autotuning for the fixed
shapes, and TF32 for the float32 matmuls and convolutions that remain in an
fp16/bf16 run on Ampere or newer (TF32 is left off for fp32 runs, where it
would change results). `--compile` adds torch.compile of the UNet's blocks and
the VAE decoder with static shapes, cached on disk between runs.

On the CPU, exact mode changes nothing, and its frames equal stock diffusers'
bit for bit (tests/test_engine.py). On a GPU the kernels cuDNN picks may differ
from a stock run's in the last fp16 bit; the benchmarks report the difference.

fast (SVD; Wan's is in families/wan.py): DeepCache (Ma et al., 2023) on top of exact. The UNet's deep features
change slowly between neighbouring denoising steps, so every `interval` steps
the whole UNet runs and the input to its last (highest-resolution) up block is
kept; on the steps in between only the shallow path runs (conv_in, the first
down block without its downsampler, the last up block, conv_out) and the deep
part is taken from the cache. Implemented by wrapping the UNet's up, down and
mid blocks' `forward`, so the UNet's own glue code (skip connections, time
embedding, CFG batch) is untouched.
"""

from __future__ import annotations

import logging
import os
from typing import Optional

from ..errors import InvalidInput

log = logging.getLogger("stillmotion.engine")


def apply_exact(pipe, device: str, dtype, attention: str = "sdpa") -> dict:
    """Lossless settings for an SVD `pipe` on `device`; returns what was applied (for the sidecar)."""
    import torch

    applied: dict = {"attention": set_attention(pipe.unet, attention)}
    if str(device).startswith("cuda"):
        pipe.unet.to(memory_format=torch.channels_last)
        pipe.vae.to(memory_format=torch.channels_last)
        applied["channels_last"] = True
    return applied | cuda_settings(device, dtype)


def cuda_settings(device: str, dtype) -> dict:
    """The lossless CUDA backend settings every family gets (cuDNN autotuning; TF32 matmuls under half precision
    on Ampere and newer); {} elsewhere."""
    import torch

    if not str(device).startswith("cuda"):
        return {}
    torch.backends.cudnn.benchmark = True
    major, _ = torch.cuda.get_device_capability(torch.device(device))
    tf32 = major >= 8 and dtype != torch.float32
    if tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return {"cudnn_benchmark": True, "tf32": tf32}


def set_attention(unet, kind: str = "sdpa") -> str:
    """Set the UNet's attention kernel; returns what runs, for the sidecar.

    sdpa: PyTorch's scaled_dot_product_attention (diffusers' AttnProcessor2_0) wherever the plain
    processor is set; other processors (e.g. from an adapter) are kept and named. math: diffusers'
    AttnProcessor everywhere, which builds the full score matrix (more memory; the planner counts it).
    """
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    if kind == "math":
        unet.set_attn_processor(AttnProcessor())
        return "math"
    names = {type(p).__name__ for p in unet.attn_processors.values()}
    if all(isinstance(p, AttnProcessor2_0) for p in unet.attn_processors.values()):
        return "sdpa"
    if names <= {"AttnProcessor"}:
        unet.set_attn_processor(AttnProcessor2_0())
        return "sdpa"
    return ",".join(sorted(names))


# ----------------------------------------------------------------------------
def compile_cache_dir() -> str:
    from ..models.paths import cache_root

    d = cache_root() / "inductor"
    d.mkdir(parents=True, exist_ok=True)
    return str(d)


def compile_pipe(pipe) -> dict:
    """torch.compile the UNet's blocks and the VAE decoder (static shapes); cached under the stillmotion cache.

    The blocks are compiled one by one (not the whole UNet) so that fast mode can still
    choose, per step, which blocks run. Compilation happens at the first call; the engine
    reports that first step's extra time as `compile` in the timings (first_compile_seconds).
    """
    import torch

    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", compile_cache_dir())
    try:
        import torch._inductor.config as inductor_config

        inductor_config.fx_graph_cache = True
    except (ImportError, AttributeError):  # pragma: no cover
        pass
    unet = pipe.unet
    blocks = list(unet.down_blocks) + [unet.mid_block] + list(unet.up_blocks)
    for block in blocks:
        block.compile(dynamic=False)
    pipe.vae.decoder.compile(dynamic=False)
    return {"compiled": ["unet blocks", "vae decoder"], "cache_dir": os.environ["TORCHINDUCTOR_CACHE_DIR"],
            "torch": torch.__version__}


def first_compile_seconds(spec, step_times: list[float], compiled: set) -> Optional[float]:
    """--compile: the first run of a new shape compiles; its first step's extra time over a typical
    step, once per shape (`compiled` holds the shapes seen) -> seconds, or None."""
    key = (spec.num_frames, spec.height, spec.width, spec.speed)
    if key in compiled or len(step_times) < 2:
        return None
    compiled.add(key)
    rest = sorted(step_times[1:])
    return round(max(0.0, step_times[0] - rest[len(rest) // 2]), 4)


# ----------------------------------------------------------------------------
class DeepCache:
    """Reuse the UNet's deep features for `interval - 1` steps out of every `interval`.

    Use: `with DeepCache(unet, interval): pipe(...)`. Step i (0-based UNet call) is a full pass when
    i % interval == 0. With interval 1 every step is full and the output is exactly the UNet's.
    """

    def __init__(self, unet, interval: int):
        if interval < 1:
            raise InvalidInput(f"--cache-interval must be 1 or more, got {interval}; use e.g. --cache-interval 3.")
        self.unet = unet
        self.interval = interval
        self.step = 0
        self.full = True
        self.cached = None
        self.full_steps = 0
        self.cached_steps = 0
        self._saved: list = []
        self._hook = None

    # -- attach / detach ------------------------------------------------------
    def __enter__(self):
        self.attach()
        return self

    def __exit__(self, *exc):
        self.detach()
        return False

    def attach(self) -> None:
        unet = self.unet
        downs, ups = list(unet.down_blocks), list(unet.up_blocks)
        if len(downs) < 2 or len(ups) < 2:
            raise InvalidInput(f"--speed fast needs a UNet with at least two levels, this model's has "
                               f"{min(len(downs), len(ups))}; use --speed exact.")
        self.reset()
        self._hook = unet.register_forward_pre_hook(self._before_unet)
        self._wrap(downs[0], self._shallow_down(downs[0]))
        for block in downs[1:]:
            n_out = len(block.resnets) + (len(block.downsamplers) if block.downsamplers is not None else 0)
            self._wrap(block, self._skipped(block, lambda n=n_out: (None, (None,) * n)))
        self._wrap(unet.mid_block, self._skipped(unet.mid_block, lambda: None))
        for block in ups[:-2]:
            self._wrap(block, self._skipped(block, lambda: None))
        self._wrap(ups[-2], self._caching_up(ups[-2]))

    def detach(self) -> None:
        for module, had, old in reversed(self._saved):
            if had:
                module.forward = old
            else:
                del module.forward
        self._saved.clear()
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        self.cached = None

    def reset(self) -> None:
        self.step = 0
        self.cached = None
        self.full_steps = 0
        self.cached_steps = 0

    def stats(self) -> dict:
        return {"interval": self.interval, "full_steps": self.full_steps, "cached_steps": self.cached_steps}

    # -- the wrappers -----------------------------------------------------------
    def _wrap(self, module, fn) -> None:
        had = "forward" in vars(module)
        self._saved.append((module, had, vars(module).get("forward")))
        module.forward = fn

    def _before_unet(self, _module, _args):
        self.full = self.cached is None or self.step % self.interval == 0
        self.step += 1
        if self.full:
            self.full_steps += 1
        else:
            self.cached_steps += 1

    def _skipped(self, block, placeholder):
        original = block.forward

        def forward(*args, **kwargs):
            if self.full:
                return original(*args, **kwargs)
            return placeholder()

        return forward

    def _caching_up(self, block):
        original = block.forward

        def forward(*args, **kwargs):
            if self.full:
                out = original(*args, **kwargs)
                self.cached = out.clone()  # a compiled (CUDA-graph) block may reuse its output buffer
                return out
            return self.cached

        return forward

    def _shallow_down(self, block):
        """The first down block: whole on full steps; without its downsampler (whose output only
        the skipped deep part reads) on cached steps. Same loop as diffusers' block.forward."""
        original = block.forward
        n_down = len(block.downsamplers) if block.downsamplers is not None else 0
        attentions = getattr(block, "attentions", None)

        def forward(hidden_states, temb=None, encoder_hidden_states=None, image_only_indicator=None):
            if self.full:
                if attentions is None:
                    return original(hidden_states, temb=temb, image_only_indicator=image_only_indicator)
                return original(hidden_states, temb=temb, encoder_hidden_states=encoder_hidden_states,
                                image_only_indicator=image_only_indicator)
            output_states = ()
            for i, resnet in enumerate(block.resnets):
                hidden_states = resnet(hidden_states, temb, image_only_indicator=image_only_indicator)
                if attentions is not None:
                    hidden_states = attentions[i](
                        hidden_states,
                        encoder_hidden_states=encoder_hidden_states,
                        image_only_indicator=image_only_indicator,
                        return_dict=False,
                    )[0]
                output_states = output_states + (hidden_states,)
            return None, output_states + (None,) * n_down

        return forward


def deepcache_for(spec, unet) -> Optional[DeepCache]:
    """The DeepCache a spec asks for (fast mode), or None (exact)."""
    if getattr(spec, "speed", "exact") != "fast":
        return None
    return DeepCache(unet, spec.cache_interval)
