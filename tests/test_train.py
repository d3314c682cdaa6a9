"""`stillmotion train`: the SVD objective, the loop (checkpoints, resume, LoRA), clip folders, metrics.

Everything runs on the tiny model over a handful of procedural clips, on the CPU, in seconds.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import run_cli
from stillmotion.errors import InvalidInput


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    from stillmotion.train.synthetic import write_clips

    folder = tmp_path_factory.mktemp("clips")
    write_clips(folder, 3, seed=1, num_frames=8, fps=8, format="mp4")
    write_clips(folder / "more", 1, seed=2, num_frames=8, fps=8, format="gif")
    (folder / "more" / "clip000.gif").rename(folder / "anim.gif")
    write_clips(folder / "framesets", 1, seed=3, num_frames=8, format="frames")
    (folder / "framesets" / "clip000").rename(folder / "frames-clip")
    return folder


def _cfg(tmp_path, clips, **kw):
    from stillmotion.train.trainer import TrainConfig

    base = dict(base="tiny", clips=str(clips), output=str(tmp_path / "out"), steps=2, batch_size=1, lr=1e-3,
                num_frames=8, width=64, height=64, fps=8, checkpoint_every=1, validate_every=2,
                validation_steps=1, device="cpu")
    base.update(kw)
    return TrainConfig(**base)


def _quiet(_msg):
    pass


# --------------------------------------------------------------------------- the objective
def test_preconditioning_is_the_samplers():
    """c_in / c_noise / c_skip / c_out are what EulerDiscreteScheduler (v-prediction) does when SVD samples."""
    from diffusers import EulerDiscreteScheduler

    from stillmotion.models.resolve import resolve
    from stillmotion.train.objective import precondition

    sched = EulerDiscreteScheduler.from_pretrained(resolve("tiny").path, subfolder="scheduler")
    sched.set_timesteps(6)
    x = torch.randn(1, 2, 4, 8, 8)
    f = torch.randn_like(x)
    for i, t in enumerate(sched.timesteps[:-1]):
        sigma = sched.sigmas[i]
        c_skip, c_out, c_in, c_noise = precondition(sigma)
        assert torch.allclose(sched.scale_model_input(x, t), c_in * x, atol=1e-6)
        assert torch.isclose(torch.as_tensor(t, dtype=torch.float32), c_noise.float(), atol=1e-4)
        out = sched.step(f, t, x)
        assert torch.allclose(out.pred_original_sample, c_skip * x + c_out * f, atol=1e-4)


def test_conditioning_and_loss_shapes():
    from stillmotion.models.tiny import tiny_components
    from stillmotion.train.objective import ObjectiveConfig, encode_conditioning, svd_loss

    c = tiny_components()
    frames = torch.rand(2, 8, 3, 64, 64) * 2 - 1
    obj = ObjectiveConfig(cond_dropout=0.5)
    g = torch.Generator().manual_seed(0)
    enc = encode_conditioning(c["vae"], c["image_encoder"], c["feature_extractor"], frames, [8, 8], [127, 30], obj, g)
    assert enc["x0"].shape == (2, 8, 4, 8, 8) and enc["cond"].shape == (2, 4, 8, 8)
    assert enc["emb"].shape == (2, 1, 32)
    ids = enc["added_time_ids"]
    assert ids[:, 0].tolist() == [7, 7] and ids[:, 1].tolist() == [127, 30]  # fps - 1, as SVD was trained
    assert (ids[:, 2] > 0).all() and (ids[:, 2] < 0.5).all()  # noise augmentation strength
    loss = svd_loss(c["unet"], enc, obj, g)
    assert torch.isfinite(loss)


# --------------------------------------------------------------------------- data
def test_clip_folder_reads_videos_gifs_and_frame_folders(clips):
    from stillmotion.train.data import ClipFolder

    data = ClipFolder(clips, num_frames=8, width=64, height=64, fps=8)
    assert len(data.clips) == 5 and not data.skipped
    s = data[0]
    assert s["frames"].shape == (8, 64, 64, 3) and s["frames"].dtype == np.uint8
    assert 1 <= s["motion_bucket"] <= 255


def test_bad_clip_folders_say_why(tmp_path, clips):
    from stillmotion.errors import InvalidInput
    from stillmotion.train.data import ClipFolder

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InvalidInput, match="holds no clips"):
        ClipFolder(empty, num_frames=8, width=64, height=64, fps=8)
    with pytest.raises(InvalidInput, match="No clips folder"):
        ClipFolder(tmp_path / "missing", num_frames=8, width=64, height=64, fps=8)
    with pytest.raises(InvalidInput, match="too short: 8 frames at 8 fps, needs 14"):
        ClipFolder(clips, num_frames=14, width=64, height=64, fps=8)

    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "broken.mp4").write_bytes(b"not a video at all")
    (mixed / "good.mp4").write_bytes((clips / "clip000.mp4").read_bytes())
    data = ClipFolder(mixed, num_frames=8, width=64, height=64, fps=8)
    assert len(data.clips) == 1
    assert [s.name for s in data.skipped] == ["broken.mp4"] and "unreadable" in data.skipped[0].reason
    assert "skipped 1: broken.mp4" in data.describe()


def test_cli_empty_folder_exits_2(tmp_path):
    (tmp_path / "none").mkdir()
    code, _, err = run_cli("train", str(tmp_path / "none"), "--base", "tiny", "-o", str(tmp_path / "o"), "-q")
    assert code == 2 and "holds no clips" in err and "Traceback" not in err


# --------------------------------------------------------------------------- the loop
def tiny_engine_image():
    from PIL import Image

    yy, xx = np.mgrid[0:64, 0:64]
    return Image.fromarray(np.stack([xx * 4, yy * 4, 255 - xx * 2], -1).astype(np.uint8))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, clips):
    """Two steps of full fine-tuning of tiny, a checkpoint each step, a validation video at the end."""
    from stillmotion.train.trainer import train

    tmp = tmp_path_factory.mktemp("full")
    cfg = _cfg(tmp, clips, steps=2)
    return cfg, train(cfg, log=_quiet, progress=False)


def test_train_writes_checkpoints_plot_and_validation(trained):
    from stillmotion.train.checkpoints import latest_checkpoint

    cfg, summary = trained
    out = Path(cfg.output)
    assert summary["steps"] == 2 and np.isfinite(summary["final_loss"])
    ck = latest_checkpoint(out)
    assert ck is not None and ck.name == "step-0000002"
    assert sorted(p.name for p in ck.iterdir()) == ["optimizer.safetensors", "state.json", "trainable.safetensors"]
    assert (out / "loss.png").stat().st_size > 1000
    assert (out / "validation" / "step-0000002.mp4").is_file()
    assert set(summary["validations"][0]["metrics"]) == {"frame0_psnr", "motion", "coherence_psnr"}


def test_saved_model_loads_in_generate(trained):
    from stillmotion import Engine, GenerationSpec

    cfg, _ = trained
    engine = Engine(cfg.output, device="cpu")
    res = engine.generate(tiny_engine_image(), GenerationSpec(seed=1, num_inference_steps=1))
    assert res.frames.shape == (8, 64, 64, 3)
    assert json.loads((Path(cfg.output) / "stillmotion.json").read_text())["defaults"]["num_frames"] == 8


def test_training_resumes_from_its_checkpoint(trained):
    from stillmotion.train.checkpoints import latest_checkpoint
    from stillmotion.train.trainer import train

    cfg, _ = trained
    out = Path(cfg.output)
    first = json.loads((latest_checkpoint(out) / "state.json").read_text())["losses"]
    more = dataclasses.replace(cfg, steps=3, validate_every=100)
    s2 = train(more, log=_quiet, progress=False)
    assert s2["steps"] == 3 and s2["steps_this_run"] == 1
    state = json.loads((latest_checkpoint(out) / "state.json").read_text())
    assert len(state["losses"]) == 3 and state["losses"][:2] == first
    # other settings on the same output are refused, not silently mixed
    with pytest.raises(InvalidInput, match="other settings"):
        train(dataclasses.replace(cfg, steps=4, lora_rank=2), log=_quiet, progress=False)


def test_lora_saves_only_adapters_and_generate_applies_them(tmp_path, clips):
    from safetensors import safe_open

    from stillmotion import Engine, GenerationSpec
    from stillmotion.models.lora import apply_lora, lora_record
    from stillmotion.train.trainer import train

    train(_cfg(tmp_path, clips, steps=1, lora_rank=4, lr=5e-2, validate_every=100, validation_steps=1),
          log=_quiet, progress=False)
    out = tmp_path / "out"
    weights = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.safetensors") if "checkpoints" not in p.parts)
    assert weights == ["lora.safetensors"]  # no UNet, no VAE: adapters only
    with safe_open(str(out / "lora.safetensors"), framework="pt") as f:
        keys = list(f.keys())
        assert keys and all(".lora_A." in k or ".lora_B." in k for k in keys)
        assert f.metadata()["rank"] == "4"
    record = lora_record(out)
    assert record["base"] == "tiny" and record["lora"] == "lora.safetensors"

    image = tiny_engine_image()
    spec = GenerationSpec(seed=3, num_inference_steps=2, fps=7)  # fps given: the LoRA folder's default is its training fps
    engine = Engine(record["base"], device="cpu")
    before = engine.generate(image, spec).frames
    apply_lora(engine.pipe, out)
    after = engine.generate(image, spec).frames
    assert np.abs(before.astype(int) - after.astype(int)).mean() > 0.5

    # what `stillmotion generate --model OUT` does: the folder resolves to its base plus the adapters
    by_folder = Engine(str(out), device="cpu").generate(image, spec)
    assert np.array_equal(by_folder.frames, after)
    assert by_folder.metadata["model"]["lora"]["weights"]["lora.safetensors"]


def test_apply_lora_refuses_a_plain_folder(tmp_path):
    from stillmotion.errors import ModelUnavailable
    from stillmotion.models.lora import apply_lora

    with pytest.raises(ModelUnavailable, match="not a LoRA folder"):
        apply_lora(object(), tmp_path)


# --------------------------------------------------------------------------- metrics and the demo's VAE
def test_metrics_see_motion_and_coherence():
    from stillmotion.metrics import motion_bucket, motion_metrics
    from stillmotion.train.synthetic import Camera, make_clip

    rng = np.random.default_rng(0)
    pan = make_clip(rng, 64, 64, 8, camera=Camera(pan=(1.5, 0.0)))
    m = motion_metrics(pan, pan[0])
    assert m["frame0_psnr"] == float("inf") and 1.2 < m["motion"] < 1.8 and m["coherence_psnr"] > 30
    still = np.repeat(pan[:1], 8, axis=0)
    assert motion_metrics(still)["motion"] < 0.05
    noise = rng.integers(0, 256, (8, 64, 64, 3), dtype=np.uint8)
    assert motion_metrics(noise)["coherence_psnr"] < 15
    assert motion_bucket(still) < motion_bucket(pan)


def test_linear_vae_is_exactly_its_proxy():
    from stillmotion.train.linear_vae import Proxy, build_linear_vae

    torch.manual_seed(0)
    proxy = Proxy()
    vae = build_linear_vae(proxy)
    x = torch.rand(4, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        z = proxy.encode(x)
        assert torch.allclose(vae.encode(x).latent_dist.mode(), z, atol=1e-3)
        assert torch.allclose(vae.decode(z, num_frames=4).sample, proxy.decode(z), atol=1e-3)


def test_saved_folder_info_is_one_schema(trained):
    from stillmotion.models.folder_info import FOLDER_INFO_FILE, folder_defaults, read_folder_info

    cfg, _ = trained
    out = Path(cfg.output)
    info = read_folder_info(out)
    assert {"defaults", "trained"} <= set(info) and info["trained"]["base"] == "tiny"
    d = folder_defaults(out)
    assert (d.num_frames, d.fps, d.square) == (8, 8, (64, 64))
    assert not [p for p in out.iterdir() if p.name.startswith(f".{FOLDER_INFO_FILE}")]  # no temp file left


def test_a_base_that_does_not_load_is_model_unavailable(tmp_path, clips):
    from stillmotion.errors import ModelUnavailable
    from stillmotion.train.trainer import train

    base = tmp_path / "broken"
    base.mkdir()
    (base / "model_index.json").write_text(json.dumps({"_class_name": "StableVideoDiffusionPipeline",
                                                       "unet": ["diffusers", "UNetSpatioTemporalConditionModel"]}))
    with pytest.raises(ModelUnavailable, match="Could not load base model"):
        train(_cfg(tmp_path, clips, base=str(base)), log=_quiet, progress=False)
