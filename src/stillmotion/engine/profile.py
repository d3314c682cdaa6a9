"""What a run costs, counted and measured: the planner's inputs.

Counted (no data, no compute): the model's components are built from their
configs on PyTorch's `meta` device and the same calls the engine makes (image
encoder, VAE encoder, one UNet step with classifier-free guidance, the VAE
decoder chunk by chunk) run under a dispatch mode that counts the bytes of
every tensor created and watches when each storage is freed. Frames, size,
dtype, decode chunk and forward chunking therefore act on the estimate exactly
as they act on the real run. Attention is counted as a fused kernel (PyTorch
SDPA: output only, no N x N score matrix), which is what SDPA runs on CUDA and
on the CPU for these shapes. The same pass counts FLOPs, for `stillmotion
estimate`.

Measured: `measure_cpu_peak` runs a real call under the torch profiler and
reports the CPU allocator's peak live bytes, overall and per stage; the tests
hold the counted estimate against it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
from dataclasses import dataclass, field

# ----------------------------------------------------------------------------
# live-bytes tracker for the dry run
class _LiveBytes:
    """A TorchDispatchMode that follows every storage created under it and records the peak of live bytes
    (and counts matmul/convolution FLOPs with torch's own formulas)."""

    def __new__(cls):
        from torch.multiprocessing.reductions import StorageWeakRef
        from torch.utils._python_dispatch import TorchDispatchMode

        from torch.utils.flop_counter import flop_registry

        class Mode(TorchDispatchMode):
            def __init__(self):
                super().__init__()
                self.live: dict[int, tuple] = {}
                self.now = 0
                self.peak = 0
                self.flops = 0

            def _sweep(self):
                dead = [k for k, (ref, _) in self.live.items() if ref.expired()]
                for k in dead:
                    self.now -= self.live.pop(k)[1]

            def add(self, t):
                import torch

                if not isinstance(t, torch.Tensor):
                    return
                st = t.untyped_storage()
                ref = StorageWeakRef(st)
                key = ref.cdata
                if key in self.live and not self.live[key][0].expired():
                    return
                n = st.nbytes()
                self.live[key] = (ref, n)
                self.now += n
                self.peak = max(self.peak, self.now)

            def reset_peak(self):
                self._sweep()
                self.peak = self.now

            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                import torch.utils._pytree as pytree

                kwargs = kwargs or {}
                out = func(*args, **kwargs)
                self.flops += _op_flops(func, args, kwargs, out, flop_registry)
                self._sweep()
                for t in pytree.tree_leaves(out):
                    self.add(t)
                return out

        return Mode()


def _op_flops(func, args, kwargs, out, registry) -> int:
    """FLOPs of one op: linear and convolutions here (on meta they arrive undecomposed), the rest from torch's registry."""
    name = func._overloadpacket.__name__
    if name == "linear":
        return 2 * out.numel() * args[1].shape[1]
    if name in ("conv1d", "conv2d", "conv3d", "convolution", "_convolution"):
        w = args[1]
        return 2 * out.numel() * math.prod(w.shape[1:])
    if name == "matmul":
        return 2 * out.numel() * args[0].shape[-1]
    count = registry.get(func._overloadpacket)
    return int(count(*args, **kwargs, out_val=out)) if count is not None else 0


def _fused_sdpa(counter: list):
    """A stand-in for F.scaled_dot_product_attention on meta tensors: a fused kernel's memory (output only) and FLOPs."""
    import torch

    def sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
        nq, d = query.shape[-2], query.shape[-1]
        nk = key.shape[-2]
        lead = math.prod(query.shape[:-2])
        counter[0] += 4 * lead * nq * nk * d
        return torch.empty(*query.shape[:-1], value.shape[-1], dtype=query.dtype, device=query.device)

    return sdpa


class DryRun:
    """Context: meta dry run with the fused-attention stand-in; `.mode` tracks live bytes and FLOPs."""

    def __enter__(self):
        import torch
        import torch.nn.functional as F

        self._sdpa_flops = [0]
        self._orig = F.scaled_dot_product_attention
        F.scaled_dot_product_attention = _fused_sdpa(self._sdpa_flops)
        self._inf = torch.inference_mode()
        self._inf.__enter__()
        self.mode = _LiveBytes()
        self.mode.__enter__()
        return self

    def stage_flops(self) -> int:
        return int(self.mode.flops + self._sdpa_flops[0])

    def __exit__(self, *exc):
        import torch.nn.functional as F

        self.mode.__exit__(*exc)
        self._inf.__exit__(*exc)
        F.scaled_dot_product_attention = self._orig
        return False


# ----------------------------------------------------------------------------
@dataclass
class ModelShape:
    """A model's components as shapes only (meta device), and the bytes of their weights at a dtype."""

    unet: object
    vae: object
    image_encoder: object
    weights: dict = field(default_factory=dict)  # component -> bytes at `dtype`
    largest_layer: int = 0  # bytes of the biggest leaf module (sequential offload)
    dtype_bytes: int = 4
    name: str = ""
    profiles: object = field(default=None, repr=False, compare=False)  # its ProfileCache, once used

    @property
    def weights_total(self) -> int:
        return sum(self.weights.values())


def _meta_build(cls, config):
    import torch

    with torch.device("meta"):
        if hasattr(cls, "from_config"):
            return cls.from_config(config).eval()
        return cls(config).eval()


def model_shape_from_modules(unet, vae, image_encoder, dtype, name: str = "") -> ModelShape:
    """ModelShape for loaded components (their configs; their weights counted at `dtype`)."""
    return _shape(
        _meta_build(type(unet), unet.config),
        _meta_build(type(vae), vae.config),
        _meta_build(type(image_encoder), image_encoder.config),
        dtype,
        name,
    )


def _shape(unet, vae, enc, dtype, name) -> ModelShape:
    import torch

    with _quiet_diffusers():  # buffers made with torch.Tensor([..]) start on the CPU: move everything
        unet, vae, enc = (m.to("meta", dtype) for m in (unet, vae, enc))

    size = torch.empty((), dtype=dtype).element_size()
    weights = {}
    largest = 0
    for comp, m in (("unet", unet), ("vae", vae), ("image_encoder", enc)):
        weights[comp] = sum(t.numel() for t in list(m.parameters()) + list(m.buffers())) * size
        for leaf in m.modules():
            if next(iter(leaf.children()), None) is None:
                largest = max(largest, sum(p.numel() for p in leaf.parameters(recurse=False)) * size)
    return ModelShape(unet, vae, enc, weights, largest, size, name)


@functools.lru_cache(maxsize=8)
def model_shape(name_or_path: str, dtype_name: str = "fp16") -> ModelShape:
    """ModelShape for a registry name or a local diffusers folder, without loading any weights."""
    import torch
    from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[dtype_name]
    if name_or_path == "tiny":
        from ..models.tiny import tiny_components

        c = tiny_components()  # small enough to build for real; _shape moves it to meta
        return _shape(c["unet"], c["vae"], c["image_encoder"], dtype, "tiny")
    if name_or_path in ("svd", "svd-xt", "svd-xt-1-1"):
        unet_cfg, vae_cfg, clip_cfg = svd_configs(25 if name_or_path != "svd" else 14)
        return _shape(
            _meta_build(UNetSpatioTemporalConditionModel, unet_cfg),
            _meta_build(AutoencoderKLTemporalDecoder, vae_cfg),
            _meta_build(CLIPVisionModelWithProjection, CLIPVisionConfig(**clip_cfg)),
            dtype,
            name_or_path,
        )
    from pathlib import Path

    p = Path(name_or_path).expanduser()
    if not (p / "model_index.json").is_file():
        from ..errors import ModelUnavailable

        raise ModelUnavailable(
            f"Cannot plan for {name_or_path!r}: use svd, svd-xt, svd-xt-1-1, tiny or a local diffusers folder."
        )
    unet_cfg = UNetSpatioTemporalConditionModel.load_config(p / "unet")
    vae_cfg = AutoencoderKLTemporalDecoder.load_config(p / "vae")
    clip_cfg = CLIPVisionConfig.from_pretrained(p / "image_encoder")
    return _shape(
        _meta_build(UNetSpatioTemporalConditionModel, unet_cfg),
        _meta_build(AutoencoderKLTemporalDecoder, vae_cfg),
        _meta_build(CLIPVisionModelWithProjection, clip_cfg),
        dtype,
        str(p),
    )


def svd_configs(num_frames: int = 25) -> tuple[dict, dict, dict]:
    """The published SVD / SVD-XT component configs (UNet = diffusers' defaults; VAE; CLIP ViT-H/14 vision)."""
    unet = {"num_frames": num_frames}  # everything else is UNetSpatioTemporalConditionModel's default = SVD
    vae = {
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ["DownEncoderBlock2D"] * 4,
        "block_out_channels": [128, 256, 512, 512],
        "layers_per_block": 2,
        "latent_channels": 4,
        "sample_size": 768,
        "scaling_factor": 0.18215,
        "force_upcast": True,
    }
    clip = {
        "hidden_size": 1280,
        "intermediate_size": 5120,
        "num_hidden_layers": 32,
        "num_attention_heads": 16,
        "projection_dim": 1024,
        "image_size": 224,
        "patch_size": 14,
        "hidden_act": "gelu",
    }
    return unet, vae, clip


# ----------------------------------------------------------------------------
@dataclass
class StageProfile:
    """Working memory (peak live bytes beyond weights) and FLOPs of each stage of one run."""

    working: dict
    flops: dict


def vae_upcast(shape: ModelShape) -> bool:
    return shape.dtype_bytes == 2 and bool(getattr(shape.vae.config, "force_upcast", False))


def profile_stages(shape: ModelShape, frames: int, height: int, width: int, *, decode_chunk: int,
                   forward_chunking: bool = False, cfg: bool = True, stages=("encode", "denoise", "decode")) -> StageProfile:
    """Dry-run the engine's calls on `shape` and return per-stage working memory and FLOPs.

    Each stage is cached on what it depends on, so trying many plans costs a few dry runs; the results
    are also kept on disk (see ProfileCache), so a new process planning the same model and size (every
    `stillmotion generate` on an 8 GB card tries ~28 plans: ~16 s of dry runs for SVD-XT) pays nothing.
    """
    cache = ProfileCache.of(shape)
    working, flops = {}, {}
    for stage in stages:
        param = {"encode": None, "denoise": forward_chunking, "decode": decode_chunk}[stage]
        key = f"{stage}|{frames}|{height}|{width}|{int(cfg)}|{param}"
        if key not in cache.entries:
            with _quiet_diffusers():
                cache.put(key, _STAGES[stage](shape, frames, height, width, cfg, param))
        working[stage], flops[stage] = cache.entries[key]
    return StageProfile(working, flops)


class ProfileCache:
    """Stage profiles of one model shape: in memory, and in `<cache>/profiles/<key>.json` across processes.

    The key hashes the three components' configs, the dtype, and the versions of torch, diffusers,
    transformers and of this counting code (FORMAT), so a change to any of them counts afresh. A file
    that cannot be read is ignored (and rewritten); writes are atomic.
    """

    FORMAT = 1

    def __init__(self, path):
        self.path = path
        self.entries: dict = {}
        try:
            data = json.loads(path.read_text())
            if data.get("format") == self.FORMAT:
                self.entries = {k: (int(v[0]), int(v[1])) for k, v in data["entries"].items()}
        except (OSError, ValueError, KeyError, TypeError, IndexError):
            pass

    @classmethod
    def of(cls, shape: ModelShape) -> "ProfileCache":
        """The shape's cache, opened on first use and kept on the shape itself."""
        if shape.profiles is None:
            from ..models.tiny import cache_root

            shape.profiles = cls(cache_root() / "profiles" / f"{shape_key(shape)}.json")
        return shape.profiles

    def put(self, key: str, value) -> None:
        self.entries[key] = value
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"format": self.FORMAT, "entries": self.entries}, sort_keys=True))
            os.replace(tmp, self.path)
        except OSError:  # a read-only cache only costs the next process its dry runs
            pass


def shape_key(shape: ModelShape) -> str:
    """A stable name for what a dry run of `shape` depends on."""
    import diffusers
    import torch
    import transformers

    def config(module) -> dict:  # without private keys ("_use_default_values" comes in set order)
        c = module.config
        return {k: v for k, v in (c.items() if hasattr(c, "items") else c.to_dict().items()) if not k.startswith("_")}

    blob = json.dumps({"unet": config(shape.unet), "vae": config(shape.vae), "clip": config(shape.image_encoder),
                       "dtype_bytes": shape.dtype_bytes, "format": ProfileCache.FORMAT, "torch": torch.__version__,
                       "diffusers": diffusers.__version__, "transformers": transformers.__version__},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def _dtype(shape: ModelShape):
    import torch

    return next(shape.unet.parameters()).dtype if shape.dtype_bytes == 2 else torch.float32


def _persistent(shape: ModelShape, frames, height, width, cfg):
    """What lives through denoising and decoding: embeddings, image latents (x2 with CFG), latents."""
    import torch

    dt, b = _dtype(shape), 2 if cfg else 1
    lat = (frames, shape.vae.config.latent_channels, height // 8, width // 8)
    return (torch.empty(b, 1, shape.image_encoder.config.projection_dim, dtype=dt, device="meta"),
            torch.empty(b, *lat, dtype=dt, device="meta"),
            torch.empty(1, *lat, dtype=dt, device="meta"))


def _encode_stage(shape: ModelShape, frames, height, width, cfg, _):
    import torch

    dt, vae = _dtype(shape), shape.vae
    vdt = torch.float32 if vae_upcast(shape) else dt
    vae.to(vdt)  # outside the dry run: the weights are not working memory (estimate() adds the upcast copy)
    try:
        with DryRun() as run:
            emb = shape.image_encoder(torch.empty(1, 3, 224, 224, dtype=dt, device="meta")).image_embeds
            emb = torch.cat([torch.zeros_like(emb), emb]) if cfg else emb
            img = torch.empty(1, 3, height, width, dtype=torch.float32, device="meta").to(vdt)
            lat = vae.encode(img).latent_dist.mode()
            lat = torch.cat([torch.zeros_like(lat), lat]) if cfg else lat
            lat = lat.to(dt).unsqueeze(1).repeat(1, frames, 1, 1, 1)
            return run.mode.peak, run.stage_flops()
    finally:
        vae.to(dt)


def _denoise_stage(shape: ModelShape, frames, height, width, cfg, forward_chunking):
    import torch

    dt, unet = _dtype(shape), shape.unet
    set_forward_chunking(unet, forward_chunking)
    try:
        with DryRun() as run:
            emb, image_latents, latents = _persistent(shape, frames, height, width, cfg)
            inp = torch.cat([latents] * 2) if cfg else latents
            inp = torch.cat([inp * 1.0, image_latents], dim=2)
            t = torch.empty((), dtype=torch.float32, device="meta")
            ids = torch.empty(inp.shape[0], 3, dtype=dt, device="meta")
            noise_pred = unet(inp, t, encoder_hidden_states=emb, added_time_ids=ids, return_dict=False)[0]
            if cfg:
                u, c = noise_pred.chunk(2)
                noise_pred = u + (c - u) * 1.0
            latents = latents + noise_pred * 1.0  # the scheduler step's temporaries
            return run.mode.peak, run.stage_flops()  # FLOPs of one step
    finally:
        set_forward_chunking(unet, False)


def _decode_stage(shape: ModelShape, frames, height, width, cfg, chunk):
    import torch

    vae = shape.vae
    with DryRun() as run:
        latents = _persistent(shape, frames, height, width, cfg)[2]
        lat = latents.to(vae.dtype).flatten(0, 1) * (1 / vae.config.scaling_factor)
        out = []
        for i in range(0, frames, chunk):
            part = lat[i : i + chunk]
            out.append(vae.decode(part, num_frames=part.shape[0]).sample)
        video = torch.cat(out, dim=0)
        del out
        video = video.reshape(-1, frames, *video.shape[1:]).permute(0, 2, 1, 3, 4).float()
        video = (video / 2 + 0.5).clamp(0, 1)  # video_processor.postprocess_video, on the device
        return run.mode.peak, run.stage_flops()


_STAGES = {"encode": _encode_stage, "denoise": _denoise_stage, "decode": _decode_stage}


class _quiet_diffusers:
    """Silence diffusers' 'modules that should be kept in float32' notice while casting meta modules."""

    def __enter__(self):
        from diffusers.utils import logging as dlog

        self._level = dlog.get_verbosity()
        dlog.set_verbosity_error()

    def __exit__(self, *exc):
        from diffusers.utils import logging as dlog

        dlog.set_verbosity(self._level)
        return False


def set_forward_chunking(unet, on: bool) -> None:
    """Feed-forward chunking on or off (diffusers has enable_forward_chunking but no way back)."""
    for m in unet.modules():
        if hasattr(m, "set_chunk_feed_forward"):
            m.set_chunk_feed_forward(chunk_size=1 if on else None, dim=0)


def measure_cpu_peak(fn, *stage_hooks) -> tuple[object, dict]:
    """Run fn() under the torch profiler and return (result, {"peak": bytes, stage: bytes, ...}).

    The quantity is the CPU allocator's live bytes, peak minus the level at the start: the working
    memory of the run (weights allocated before are not counted). `stage_hooks` are (name, obj,
    attr) triples: calls to obj.attr are marked as that stage and get their own peak.
    """
    import json
    import os
    import tempfile

    from torch.autograd.profiler import record_function
    from torch.profiler import ProfilerActivity, profile

    saved = []
    for name, obj, attr in stage_hooks:
        orig = getattr(obj, attr)

        def wrapped(*a, __orig=orig, __name=name, **k):
            with record_function(f"stillmotion.stage.{__name}"):
                return __orig(*a, **k)

        saved.append((obj, attr, orig, attr in vars(obj)))
        setattr(obj, attr, wrapped)
    try:
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            result = fn()
    finally:
        for obj, attr, orig, had in reversed(saved):
            if had:
                setattr(obj, attr, orig)
            else:
                delattr(obj, attr)
    fd, path = tempfile.mkstemp(suffix=".json")
    os.close(fd)
    try:
        prof.export_chrome_trace(path)
        with open(path) as f:
            events = json.load(f)["traceEvents"]
    finally:
        os.unlink(path)
    mem = sorted((e["ts"], e["args"]["Total Allocated"]) for e in events
                 if e.get("name") == "[memory]" and e.get("args", {}).get("Device Type", 0) == 0)
    out = {"peak": max((v for _, v in mem), default=0)}
    for name, _, _ in stage_hooks:
        spans = [(e["ts"], e["ts"] + e.get("dur", 0)) for e in events
                 if e.get("name") == f"stillmotion.stage.{name}" and e.get("ph") == "X"]
        vals = [v for ts, v in mem if any(a <= ts <= b for a, b in spans)]
        out[name] = max(vals, default=0)
    return result, out
