"""Stability's single-file SVD checkpoints (the SGM layout ComfyUI loads) to a diffusers pipeline folder.

A file such as `svd_xt.safetensors` holds the whole model under the module
names of Stability's original code:

- `model.diffusion_model.*`: the video UNet (openaimodel's UNetModel with temporal blocks);
- `first_stage_model.decoder.*`: the temporal VAE decoder, or a plain per-frame
  decoder in the `*_image_decoder` variants (loaded as diffusers' AutoencoderKL);
- `conditioner.embedders.3.encoder.{encoder,quant_conv}.*` (or `first_stage_model.encoder.*`): the VAE encoder;
- `conditioner.embedders.0.open_clip.model.visual.*`: the OpenCLIP ViT-H/14 image tower.

`inspect_file()` reads only the header (names, shapes, metadata) and says what
the file is (configs from shapes: sgm_configs.py); `convert()` maps every key
(sgm_keys.py: mapped, ignored by name as a known leftover, or an error; every
diffusers parameter filled with the shape its config expects) and streams one
tensor at a time (safetensors_stream.py: lazy reads by the header's offsets in,
a writer that knows every shape up front out), so peak memory stays near the
largest tensor. Pickles are never opened.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ModelUnavailable
from ..util import torch_dtype
from .folder_info import write_folder_info
from .registry import ModelDefaults
from .safetensors_stream import TensorReader, stream_save
from .sgm_configs import CLIP, DECODER, ENCODER_COND, ENCODER_FIRST, EXPECTED, UNET, clip_config_from, unet_config_from, vae_config_from
from .sgm_keys import Component, check_plan, plan_conversion, vae_class

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl")


# --------------------------------------------------------------------------- header
def read_header(path: str | Path) -> tuple[dict[str, tuple[str, tuple[int, ...]]], dict[str, str]]:
    """{key: (dtype, shape)} and the metadata of a .safetensors file, from its JSON header only."""
    path = Path(path)
    refuse_pickle(path)
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise ValueError("shorter than a safetensors header")
            (n,) = struct.unpack("<Q", head)
            if n > 100_000_000:
                raise ValueError("header length is not plausible")
            raw = json.loads(f.read(n))
    except (OSError, ValueError) as e:
        raise ModelUnavailable(f"{path} is not a readable .safetensors file ({e}): expected {EXPECTED}.") from e
    meta = raw.pop("__metadata__", None) or {}
    return {k: (v["dtype"], tuple(v["shape"])) for k, v in raw.items()}, meta


def refuse_pickle(path: Path) -> None:
    if path.suffix.lower() in PICKLE_SUFFIXES:
        out = path.with_suffix(".safetensors")
        raise ModelUnavailable(
            f"{path} is a pickle checkpoint, which stillmotion never opens (it can run code); convert it once, if you "
            f"trust it: python -c \"import torch, safetensors.torch as st; sd = torch.load('{path}', map_location='cpu', "
            f"weights_only=True); st.save_file({{k: v.contiguous() for k, v in sd.get('state_dict', sd).items()}}, "
            f"'{out}')\" and pass {out}."
        )


def looks_like_single_file(value: str) -> bool:
    """Whether a --model value names a single checkpoint file (not a folder, name or hub id)."""
    p = Path(value).expanduser()
    return p.suffix.lower() in (".safetensors", ".gguf", *PICKLE_SUFFIXES) and not p.is_dir()


# --------------------------------------------------------------------------- what the file is
@dataclass
class FileInfo:
    path: Path
    model: str  # "svd" | "svd-xt"
    num_frames: int
    frames_from: str  # "metadata" | "file name" | "default"
    vae: str  # "temporal" | "image"
    unet_config: dict
    vae_config: dict
    clip_config: dict
    digests: dict = field(default_factory=dict)  # after convert(): relative path -> sha256 of each weight file

    @property
    def label(self) -> str:
        name = "SVD-XT" if self.model == "svd-xt" else "SVD"
        text = f"{name} {self.num_frames}f"
        return text + (", image decoder" if self.vae == "image" else "")


def inspect_file(path: str | Path) -> FileInfo:
    """What a single-file checkpoint is, from its header; ModelUnavailable when it is not SVD."""
    path = Path(path).expanduser()
    shapes, meta = read_header(path)
    return inspect_shapes(path, shapes, meta)


def inspect_shapes(path: Path, shapes: dict, meta: dict) -> FileInfo:
    """inspect_file() on a header already read: {key: (dtype, shape)} and the metadata."""
    keys = set(shapes)
    missing_parts = [
        name
        for name, prefix in (("video UNet", UNET), ("VAE decoder", DECODER), ("image encoder", CLIP))
        if not any(k.startswith(prefix) for k in keys)
    ]
    if not any(k.startswith((ENCODER_COND + "encoder.", ENCODER_FIRST + "encoder.")) for k in keys):
        missing_parts.append("VAE encoder")
    if missing_parts:
        raise ModelUnavailable(
            f"{path} is not {EXPECTED}: no {', '.join(missing_parts)} keys "
            f"(first keys: {', '.join(sorted(keys)[:3]) or 'none'})."
        )
    unet_config = unet_config_from(path, shapes)
    vae_kind = "temporal" if any(".time_stack." in k or k.endswith("mix_factor") for k in keys if k.startswith(DECODER)) else "image"
    vae_config = vae_config_from(path, shapes, vae_kind)
    clip_config = clip_config_from(path, shapes)
    num_frames, frames_from = _frames(path, meta)
    unet_config["num_frames"] = num_frames
    return FileInfo(
        path=path,
        model="svd-xt" if num_frames == 25 else "svd",
        num_frames=num_frames,
        frames_from=frames_from,
        vae=vae_kind,
        unet_config=unet_config,
        vae_config=vae_config,
        clip_config=clip_config,
    )


def _frames(path: Path, meta: dict) -> tuple[int, str]:
    """14 (SVD) or 25 (SVD-XT): the two share every shape, so the metadata or the file name decides.

    ComfyUI writes modelspec.architecture "stable-video-diffusion-img2vid-v1" for SVD and XT alike,
    so that string alone does not outrank a file name that says xt.
    """
    text = " ".join(str(v) for k, v in meta.items() if k.startswith("modelspec") or "title" in k or "arch" in k).lower()
    stem = path.stem.lower()
    if re.search(r"\bxt\b|img2vid-xt|_xt|-xt|25 ?frames", text):
        return 25, "metadata"
    if re.search(r"(^|[_\-. ])xt([_\-. ]|$)", stem):
        return 25, "file name"
    if re.search(r"14 ?frames", text):
        return 14, "metadata"
    if "svd" in stem:
        return 14, "file name"
    if re.search(r"img2vid|stable.video", text):
        return 14, "metadata"
    return 25, "default"


# --------------------------------------------------------------------------- convert
def convert(src: str | Path, out: str | Path, *, sha256: str | None = None, dtype: str = "fp16",
            info: FileInfo | None = None) -> FileInfo:
    """Write a diffusers StableVideoDiffusionPipeline folder at `out` (which must not exist yet or is replaced).

    `info` is the file's inspect_file() when the caller has it already (the header is read once either way).
    """
    from .hashes import cached_sha256, write_folder_manifest

    src = Path(src).expanduser()
    shapes, meta = read_header(src)
    info = info or inspect_shapes(src, shapes, meta)
    comps = plan_conversion(info, shapes)
    expected = check_plan(info, comps, shapes)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    weights_dtype = torch_dtype(dtype)
    digests = {}
    with TensorReader(src) as f:
        for comp in comps:
            folder = out / comp.name
            folder.mkdir(exist_ok=True)
            _write_config(comp, folder)
            fname = "model.safetensors" if comp.library == "transformers" else "diffusion_pytorch_model.safetensors"
            items = []
            for k, shape in expected[comp.name].items():
                source, fn = comp.plan[k]
                items.append((k, shape, _loader(f, source, fn, shape, weights_dtype)))
            digests[f"{comp.name}/{fname}"] = stream_save(folder / fname, items, weights_dtype, metadata={"format": "pt"})
    _write_pipeline_files(out, info)
    # stillmotion.json: the frame count as the model's default (the others are SVD's), and where the folder came from
    write_folder_info(out, ModelDefaults(num_frames=info.num_frames), single_file={
        "file": str(src.resolve()),
        "name": src.name,
        "sha256": sha256 or cached_sha256(src),
        "model": info.model,
        "label": info.label,
        "num_frames": info.num_frames,
        "frames_from": info.frames_from,
        "vae": info.vae,
    })
    # the manifest `models verify` checks, from the digests taken while writing (no 4 GB read back)
    write_folder_manifest(out, src.name, digests=digests)
    info.digests = digests
    return info


def _loader(f, source, fn, shape, dtype):
    import torch

    def load():
        if source is None:
            if fn == "eye":
                return torch.eye(shape[0], dtype=dtype).reshape(shape)
            return torch.zeros(shape, dtype=dtype)
        return fn(f.get_tensor(source)).to(dtype).contiguous()

    return load


def _write_config(comp: Component, folder: Path) -> None:
    if comp.library == "transformers":
        from transformers import CLIPVisionConfig

        cfg = CLIPVisionConfig(**comp.config)
        cfg.architectures = [comp.cls]
        cfg.save_pretrained(folder)
        return
    import diffusers

    cls = getattr(diffusers, comp.cls)
    config = dict(cls.extract_init_dict(comp.config)[0]) if hasattr(cls, "extract_init_dict") else dict(comp.config)
    config = {"_class_name": comp.cls, "_diffusers_version": diffusers.__version__, **config}
    (folder / "config.json").write_text(json.dumps(config, indent=2, default=list))


def _write_pipeline_files(out: Path, info: FileInfo) -> None:
    import diffusers

    from .small_svd import clip_feature_extractor, svd_scheduler

    svd_scheduler().save_pretrained(out / "scheduler")
    clip_feature_extractor().save_pretrained(out / "feature_extractor")
    index = {
        "_class_name": "StableVideoDiffusionPipeline",
        "_diffusers_version": diffusers.__version__,
        "feature_extractor": ["transformers", "CLIPImageProcessor"],
        "image_encoder": ["transformers", "CLIPVisionModelWithProjection"],
        "scheduler": ["diffusers", "EulerDiscreteScheduler"],
        "unet": ["diffusers", "UNetSpatioTemporalConditionModel"],
        "vae": ["diffusers", vae_class(info.vae)],
    }
    (out / "model_index.json").write_text(json.dumps(index, indent=2))
