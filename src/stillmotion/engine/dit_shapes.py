"""Transformer families' shapes: their components on the meta device, their bytes, and the stages they run.

A family that plans with the transformer planner (engine/dit_plan.py) describes itself once as a `Layout`
(engine/wan_shape.py, ltx2_shape.py, framepack_shape.py): which components it has and which of them are
denoisers and text encoders, which load in fp32, how diffusers' group offload streams its denoisers (block
by block or layer by layer), and its stages: a dry run (dryrun.py) of each call the pipeline makes at the
run's full size, and how many times a video makes each call. `DiTShape` is a model's components built on
meta from published configs, a folder's or a loaded pipeline's, counted per component at the run's dtype.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Callable, Optional

from ..util import quiet_diffusers
from .shapes import _meta_build

# a stage's dry run: (shape, frames, height, width, tiling, cfg, **knobs) -> (working bytes, FLOPs of one call)
StageFn = Callable[..., tuple]


@dataclass(frozen=True)
class Layout:
    """What a transformer family's pipeline holds and runs, for the planner (one per family)."""

    components: tuple  # every weighted component (None in a model that has not got it)
    denoisers: tuple  # the transformer(s) the steps run: fp8 storage and group offload act on these
    text_encoders: tuple  # the prompt encoders: on the CPU, encoded first and freed, or streamed
    stages: dict  # stage -> (its components, StageFn)
    calls: Callable  # (shape, frames, steps, cfg, **knobs) -> {stage: calls per video}
    fp32: tuple = ()  # components the family keeps in fp32 under a bf16 run
    text_off: str = "cpu"  # how the second plan frees the text encoder: "cpu" (runs there) or "first" (encoded, freed)
    group_level: str = "block"  # diffusers group offload of the denoisers: "block" (one block a group) or "leaf"
    reference: str = "wan_reference"  # the gpus.json entry its seconds are calibrated on
    text_stages: tuple = ("text",)  # stages that run the text encoders
    batched_cfg: bool = False  # guidance runs the denoiser on a batch of two (its working memory doubles)
    denoise_stage: str = "denoise"
    knobs: Callable = lambda spec: {}  # a resolved spec -> the family's own settings its calls take
    profile_knobs: tuple = ()  # those of them the stages' dry runs take too (the rest change only the calls)


@dataclass
class DiTShape:
    """A transformer family's components on the meta device, and their bytes."""

    modules: dict  # component -> meta module (None where the model has none)
    weights: dict  # component -> bytes as loaded
    fp8_weights: dict  # denoiser -> bytes under fp8 layerwise casting
    block_bytes: dict  # denoiser -> bytes of the largest block (block-level group offload onloads two at a time)
    rest_bytes: dict  # denoiser -> bytes outside the blocks (onloaded for the whole pass)
    leaf_bytes: dict  # component -> bytes of its largest leaf module (leaf-level group offload)
    loose_bytes: dict  # component -> bytes of parameters no leaf module holds (onloaded with the first group)
    dtype_bytes: int = 2
    name: str = ""
    layout: Optional[Layout] = field(default=None, repr=False, compare=False)
    profiles: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def weights_total(self) -> int:
        return sum(self.weights.values())

    @property
    def experts(self) -> tuple:
        return tuple(c for c in self.layout.denoisers if self.modules.get(c) is not None)

    @property
    def text_encoders(self) -> tuple:
        return tuple(c for c in self.layout.text_encoders if self.modules.get(c) is not None)


# ----------------------------------------------------------------------------
def configs_shape(layout: Layout, classes: dict, configs: dict, dtype_name: str, name: str) -> DiTShape:
    """DiTShape from published configs: {component: class} and {component: config dict (None: absent)}; a
    transformers class is given its config class's instance, a diffusers class the dict."""
    from ..util import torch_dtype

    modules = {}
    for c in layout.components:
        cfg = configs.get(c)
        if cfg is None:
            modules[c] = None
            continue
        cls = classes[c]
        conf = cls.config_class(**cfg) if cls.__module__.startswith("transformers") else cfg
        modules[c] = _meta_build(cls, conf)
    return build_shape(layout, modules, torch_dtype(dtype_name), name)


def entry_shapes(layout: Layout, classes: Callable[[], dict], configs: Callable[[str], dict], family: str,
                 maxsize: int = 4) -> Callable[..., DiTShape]:
    """A family's `shape(entry, dtype_name="bf16")`: its entry_shape, cached per entry and dtype (a Layout is not
    hashable, so each family's function holds its own cache)."""

    @functools.lru_cache(maxsize=maxsize)
    def cached(entry, dtype_name: str) -> DiTShape:
        return entry_shape(layout, classes, configs, entry, dtype_name)

    def shape(entry, dtype_name: str = "bf16") -> DiTShape:
        return cached(entry, dtype_name)  # one cache key whether the dtype is given or defaulted

    shape.__doc__ = (f"{family}'s shape of a model entry: a registry model's published configs, else its folder's "
                     "(no download).")
    return shape


def entry_shape(layout: Layout, classes: Callable[[], dict], configs: Callable[[str], dict], entry,
                dtype_name: str) -> DiTShape:
    """A family's shape of a model entry: a registry model's published configs (`configs(name)`, built as
    `classes()`), else its folder's (no download)."""
    if entry.source == "registry":
        return configs_shape(layout, classes(), configs(entry.name), dtype_name, entry.name)
    from ..models.resolve import resolve

    return folder_shape(layout, resolve(entry.name, download=False, progress=False).path, dtype_name, entry.name)


def folder_shape(layout: Layout, folder, dtype_name: str, name: str) -> DiTShape:
    """DiTShape from a diffusers folder's model_index.json and component configs (no weights read)."""
    import json

    import diffusers
    import transformers

    from ..util import torch_dtype

    index = json.loads((folder / "model_index.json").read_text())
    modules = {}
    for c in layout.components:
        lib, cls = (index.get(c) or [None, None])[:2]
        if cls is None:
            modules[c] = None
            continue
        cls = getattr(diffusers if lib == "diffusers" else transformers, cls, None) or _pipeline_class(lib, cls)
        config = cls.load_config(folder / c) if hasattr(cls, "load_config") else \
            cls.config_class.from_pretrained(folder / c)
        modules[c] = _meta_build(cls, config)
    return build_shape(layout, modules, torch_dtype(dtype_name), name)


def _pipeline_class(lib: str, cls: str):
    """A class a model_index.json names by its module path (e.g. LTX-2's connectors and vocoder, which live
    in diffusers.pipelines.ltx2)."""
    import importlib

    module = importlib.import_module(lib if lib.startswith("diffusers") else f"diffusers.pipelines.{lib}")
    return getattr(module, cls)


def pipe_shape(layout: Layout, pipe, dtype, name: str = "") -> DiTShape:
    """DiTShape of a loaded pipeline (its components' configs, built again on meta)."""
    modules = {c: None if getattr(pipe, c, None) is None else _meta_build(type(getattr(pipe, c)), getattr(pipe, c).config)
               for c in layout.components}
    return build_shape(layout, modules, dtype, name)


def build_shape(layout: Layout, modules: dict, dtype, name: str) -> DiTShape:
    """Count the meta modules: each component's bytes at its dtype (fp32 for layout.fp32), the denoisers' bytes
    under fp8 storage, their largest block and what lies outside the blocks, every component's largest leaf."""
    import torch

    size = torch.empty((), dtype=dtype).element_size()
    weights, fp8, block, rest, leaf, loose = {}, {}, {}, {}, {}, {}
    with quiet_diffusers():
        for c, m in modules.items():
            if m is None:
                continue
            at = torch.float32 if c in layout.fp32 else dtype
            m.to("meta", at)
            b = torch.empty((), dtype=at).element_size()
            weights[c] = sum(t.numel() for t in [*m.parameters(), *m.buffers()]) * b
            seen: set = set()  # a tied weight (Gemma's embedding and LM head) counts once
            leaves = []
            for x in m.modules():
                if next(iter(x.children()), None) is None:
                    own = [p for p in x.parameters(recurse=False) if id(p) not in seen]
                    seen.update(id(p) for p in own)
                    leaves.append(sum(p.numel() for p in own) * b)
            leaf[c] = max(leaves, default=0)
            loose[c] = sum(p.numel() for p in m.parameters()) * b - sum(leaves)
            if c in layout.denoisers:
                fp8[c] = fp8_bytes(m, b)
                blocks = [sum(p.numel() for p in blk.parameters()) * b for blk in _blocks(m)]
                block[c], rest[c] = max(blocks), weights[c] - sum(blocks)
    return DiTShape(modules, weights, fp8, block, rest, leaf, loose, size, name, layout)


def _blocks(module) -> list:
    """The blocks diffusers' block-level group offload makes groups of: every ModuleList child's items."""
    import torch

    return [blk for child in module.children() if isinstance(child, torch.nn.ModuleList) for blk in child]


def fp8_bytes(module, dtype_bytes: int) -> int:
    """Bytes of a transformer under enable_layerwise_casting(float8): its linear and conv layers at 1 byte,
    except those diffusers skips (its default patterns and the model's own), the rest at the dtype."""
    import torch
    from diffusers.hooks.layerwise_casting import DEFAULT_SKIP_MODULES_PATTERN

    skip = tuple(DEFAULT_SKIP_MODULES_PATTERN) + tuple(getattr(module, "_skip_layerwise_casting_patterns", None) or ())
    cast = (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)
    total = sum(t.numel() for t in [*module.parameters(), *module.buffers()]) * dtype_bytes
    for name, m in module.named_modules():
        if isinstance(m, cast) and not any(re.search(p, name) for p in skip):
            total -= sum(p.numel() for p in m.parameters(recurse=False)) * (dtype_bytes - 1)
    return total


# ----------------------------------------------------------------------------
def stage_profile(shape: DiTShape, frames: int, height: int, width: int, tiling: bool, cfg: bool = False,
                  knobs: Optional[dict] = None) -> dict:
    """{stage: (working bytes, FLOPs of one call)} from dry runs at this size (cached on the shape)."""
    cfg = cfg and shape.layout.batched_cfg  # else guidance runs the passes one after the other: the same profile
    knobs = {k: v for k, v in (knobs or {}).items() if k in shape.layout.profile_knobs}
    key = (frames, height, width, tiling, cfg, tuple(sorted(knobs.items())))
    if key not in shape.profiles:
        with quiet_diffusers():
            shape.profiles[key] = {st: fn(shape, frames, height, width, tiling, cfg, **knobs)
                                   for st, (_, fn) in shape.layout.stages.items()}
    return shape.profiles[key]


def encoder_stage(tokens: int) -> Callable:
    """The text stage of a T5-style encoder (Wan's UMT5, LTX-Video's T5) on a prompt padded to `tokens`."""

    def text(shape, frames, height, width, tiling, cfg, **knobs):
        import torch

        from .dryrun import DryRun

        with DryRun() as run:
            ids = torch.zeros(1, tokens, dtype=torch.long, device="meta")
            shape.modules["text_encoder"](ids).last_hidden_state  # no mask: the same work, none built
            return run.mode.peak, run.stage_flops()

    return text


def run_dtype(shape: DiTShape):
    import torch

    return {2: torch.bfloat16, 4: torch.float32}.get(shape.dtype_bytes, torch.bfloat16)


def component_dtype(shape: DiTShape, component: str):
    import torch

    return torch.float32 if component in shape.layout.fp32 else run_dtype(shape)


def spatial_tiles(vae, height: int, width: int, factor: int) -> Optional[dict]:
    """diffusers' spatial tiling of a VAE at this size (its enable_tiling() defaults): the tile in pixels, how many,
    the spatial factor; None where the image is no larger than a tile (diffusers does not tile)."""
    th, tw = vae.tile_sample_min_height, vae.tile_sample_min_width
    sh, sw = vae.tile_sample_stride_height, vae.tile_sample_stride_width
    if height <= th and width <= tw:
        return None
    return {"h": min(th, height), "w": min(tw, width), "s": factor,
            "count": len(range(0, height, sh)) * len(range(0, width, sw))}


def tiled_decode(tile_peak: int, tile_flops: int, tile: dict, frames: int, height: int, width: int,
                 element: int) -> tuple[int, int]:
    """A tiled decode from one tile's dry run: tiled_decode keeps every decoded tile, then blends them into the
    video: the larger of (one tile's working memory + the tiles before it) and (every tile + the blended video),
    with every tile's FLOPs. A dry run of every tile costs tens of seconds; this bound takes one tile's."""
    out = 3 * frames * tile["h"] * tile["w"] * element
    video = 3 * frames * height * width * element
    return max(tile_peak + (tile["count"] - 1) * out, tile["count"] * out + 2 * video), tile_flops * tile["count"]
