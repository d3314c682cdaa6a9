"""The LTX-2 files ComfyUI users have, against diffusers' stock LTX2ImageToVideoPipeline.

A tiny LTX-2 (tests/ltx_comfy_layout.py) is written as Lightricks publish the real one: one checkpoint in the original
key layout in models/checkpoints (the bf16 layout, and an fp8 one with per-tensor scales named as the distilled file
is), ComfyUI's Gemma-3 file in models/text_encoders (its fp8_scaled one: ComfyUI's `scale_weight` spelling), and a
Hugging Face cache holding only what the files lack from Lightricks/LTX-2 (the tokenizer, the scheduler, the text
encoder's config; no weights). `stillmotion generate --model FILE` (and by name with --comfyui-dir) must give the
stock pipeline's frames within 2 levels and its soundtrack sample for sample, offline (HF_HUB_OFFLINE=1).
"""

from __future__ import annotations

import json

import ltx_comfy_layout as L
import numpy as np
import pytest
from conftest import offline_hub, run_cli
from PIL import Image

REPO = "Lightricks/LTX-2"
DEV, FP8 = "ltx-2-19b-dev.safetensors", "ltx-2-19b-distilled-fp8.safetensors"
GEMMA = "gemma_3_12B_it_fp8_scaled.safetensors"
ARGS = ["--device", "cpu", "--frames", "9", "--steps", "2", "--seed", "3", "--format", "png", "--width", "64",
        "--height", "64", "--prompt", "waves", "--negative-prompt", "blurry", "--guidance", "4.0", "--stg-scale",
        "0.5", "--modality-scale", "2.0", "--guidance-rescale", "0.5", "--audio-guidance-scale", "5.0",
        "--schedule", "default"]
STOCK = dict(prompt="waves", negative_prompt="blurry", guidance_scale=4.0, stg_scale=0.5, audio_stg_scale=0.5,
             modality_scale=2.0, audio_modality_scale=2.0, guidance_rescale=0.5, audio_guidance_rescale=0.5,
             audio_guidance_scale=5.0, height=64, width=64, num_frames=9, num_inference_steps=2, frame_rate=24)


def _hub(hub, comps) -> None:
    """The cache entry `hf download Lightricks/LTX-2 'tokenizer/*' 'text_encoder/config.json' model_index.json
    'scheduler/*'` leaves (here the tiny model's)."""
    snap = hub / ("models--" + REPO.replace("/", "--")) / "snapshots" / ("c" * 40)
    comps["tokenizer"].save_pretrained(snap / "tokenizer")
    comps["scheduler"].save_pretrained(snap / "scheduler")
    comps["text_encoder"].config.save_pretrained(snap / "text_encoder")
    (snap / "model_index.json").write_text(json.dumps({"_class_name": "LTX2ImageToVideoPipeline"}))
    (snap.parent.parent / "refs").mkdir()
    (snap.parent.parent / "refs" / "main").write_text("c" * 40)


@pytest.fixture(scope="module")
def comfy(tmp_path_factory):
    base = tmp_path_factory.mktemp("ltxcomfy")
    root, hub = base / "ComfyUI", base / "hub"
    ckpts = root / "models" / "checkpoints"
    dev = L.comfy_ltx2_components()
    original = L.to_original(dev)
    L.check_inverse(original, dev)
    L.save(original, ckpts / DEV)
    fp8 = L.to_fp8(original)
    L.save(fp8, ckpts / FP8)
    quantised = L.load_original(L.comfy_ltx2_components(), L.dequantized(fp8))  # what the fp8 file is worth
    gemma = L.to_comfy_fp8(L.gemma_file(dev["text_encoder"]))  # ComfyUI's fp8_scaled Gemma (its scale spelling)
    L.save(gemma, root / "models" / "text_encoders" / GEMMA)
    for comps in (dev, quantised):  # both run with what the Gemma file is worth
        L.load_comfy_gemma(comps["text_encoder"], gemma)
    no_vocoder = {k: v for k, v in original.items() if not k.startswith("vocoder.")}
    L.save(no_vocoder, base / "elsewhere" / "no_vocoder.safetensors")
    _hub(hub, dev)
    return {"root": root, "hub": hub, "ckpts": ckpts, "base": base, "refs": {DEV: dev, FP8: quantised}}


@pytest.fixture
def offline(comfy, monkeypatch):
    offline_hub(monkeypatch, comfy["hub"])
    return comfy


def _square(tmp_path) -> Image.Image:
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    img.save(tmp_path / "in.png")
    return img


def _frames(folder) -> np.ndarray:
    return np.stack([np.asarray(Image.open(f).convert("RGB")) for f in sorted(folder.glob("*.png"))])


def _stock(comps, image, **kw):
    import torch
    from diffusers import LTX2ImageToVideoPipeline

    pipe = LTX2ImageToVideoPipeline(**comps)
    pipe.set_progress_bar_config(disable=True)
    out = pipe(image=image, generator=torch.Generator("cpu").manual_seed(3), output_type="np", **{**STOCK, **kw})
    return np.clip(np.round(out.frames[0] * 255.0), 0, 255).astype(np.uint8), out.audio[0].float().numpy()


@pytest.mark.parametrize("name", [DEV, FP8])
def test_a_checkpoint_gives_the_stock_pipelines_frames_and_sound(offline, tmp_path, name):
    """By name with --comfyui-dir (the fp8 file: upcast with its scales, equal to the stock pipeline on the values the
    file holds); the Gemma file's weights, the repo's tokenizer; the sidecar records where each part came from."""
    from stillmotion.video.audio import read_audio

    img = _square(tmp_path)
    code, _, err = run_cli("generate", str(tmp_path / "in.png"), "--comfyui-dir", str(offline["root"]), "--model",
                           name, *ARGS, "-o", str(tmp_path / "out"))
    assert code == 0, err
    frames, audio = _stock(offline["refs"][name], img)
    ours = _frames(tmp_path / "out")
    assert ours.shape == frames.shape == (9, 64, 64, 3)
    assert np.abs(ours.astype(int) - frames.astype(int)).max() <= 2
    (wav,) = tmp_path.glob("*.wav")
    np.testing.assert_allclose(read_audio(wav).samples, audio, atol=1e-4)
    record = json.loads((tmp_path / "out.json").read_text())["model"]["single_file"]
    parts = record["components"]
    assert record["path"].endswith(name) and record["fp8"] == (name == FP8)
    assert parts["text_encoder"]["file"].endswith(GEMMA) and parts["tokenizer"]["repo_id"] == REPO
    assert {parts[c]["file"] for c in ("transformer", "vae", "audio_vae", "connectors", "vocoder")} == {record["path"]}
    assert any("connectors, vocoder" in n for n in record["notes"])


def test_the_files_entry_has_its_registry_models_defaults(offline):
    from stillmotion.models.registry import REGISTRY
    from stillmotion.models.resolve import entry_for

    dev, distilled = (entry_for(str(offline["ckpts"] / n)) for n in (DEV, FP8))
    assert dev.family == distilled.family == "ltx2"
    assert dev.defaults == REGISTRY["ltx-2"].defaults and distilled.defaults == REGISTRY["ltx-2-distilled"].defaults


def test_models_list_labels_the_ltx_files(offline):
    code, out, err = run_cli("models", "list", "--comfyui-dir", str(offline["root"]), "--json")
    assert code == 0, err
    rows = {r["name"]: r for r in json.loads(out)}
    assert rows[DEV]["description"].startswith("LTX-2 dev checkpoint (transformer 128-wide, 2 blocks")
    assert rows[FP8]["description"].startswith("LTX-2 distilled checkpoint") and "fp8, scaled" in rows[FP8]["description"]
    assert rows[DEV]["kind"] == "video"
    gemma = rows["text_encoders/" + GEMMA]
    assert gemma["kind"] == "part" and gemma["description"].startswith("Gemma-3 text encoder for LTX-2")
    assert "with its vision tower, fp8, scaled" in gemma["description"]


@pytest.mark.parametrize(("what", "words"), [
    ("gemma", "is a Gemma-3 text encoder for LTX-2, not a model"),
    ("no_vocoder", "holds the LTX-2 transformer but no vocoder (vocoder.*)"),
    ("no_cache", f"hf download {REPO} 'tokenizer/*' 'text_encoder/config.json'"),
])
def test_a_part_a_missing_piece_or_no_cache_refuses_in_one_line(offline, tmp_path, monkeypatch, what, words):
    _square(tmp_path)
    model = {"gemma": str(offline["root"] / "models" / "text_encoders" / GEMMA), "no_cache": DEV,
             "no_vocoder": str(offline["base"] / "elsewhere" / "no_vocoder.safetensors")}[what]
    if what == "no_cache":
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    code, _, err = run_cli("generate", str(tmp_path / "in.png"), "--comfyui-dir", str(offline["root"]), "--model",
                           model, *ARGS, "-o", str(tmp_path / "out"))
    assert code == 3, err
    assert words in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.json").exists()


def test_fp8_weights_load_times_their_scales(offline):
    """The fp8 file's weights load as stored x weight_scale (what the stock reference holds), not as the raw fp8
    values, which are hundreds of times larger here."""
    import torch

    from stillmotion.models.ltx_files import load_components, resolve_ltx_file

    folder, record = resolve_ltx_file(offline["ckpts"] / FP8)
    assert record["fp8"] and any("per-tensor scales" in n for n in record["notes"])
    ours = load_components(folder, torch.float32)["transformer"].transformer_blocks[0].attn1.to_q.weight
    ref = offline["refs"][FP8]["transformer"].transformer_blocks[0].attn1.to_q.weight
    dev = offline["refs"][DEV]["transformer"].transformer_blocks[0].attn1.to_q.weight
    assert torch.equal(ours, ref) and not torch.equal(ref, dev)
    assert (ref - dev).abs().max() < 0.1 * dev.abs().max()  # the fp8 rounding, not another model


def test_the_real_19b_layout_gives_ltx2s_published_configs(tmp_path):
    """Lightricks' 19B checkpoint, as a header alone (every key and shape of diffusers' LTX-2 19B written back in the
    original layout, fp8 transformer weights): its configs from shapes are diffusers' LTX-2 19B configs (the class
    defaults, with the video VAE's published compression and non-causal decoder)."""
    import struct

    from accelerate import init_empty_weights

    from stillmotion.models.ltx_inspect import VAE_DEFAULTS, classes, inspect_ltx_file

    with init_empty_weights():
        mods = {name: cls(**(VAE_DEFAULTS if name == "vae" else {})) for name, cls in classes().items()}
    header = {}
    for name, inverse in L.INVERSE.items():
        for key, value in mods[name].state_dict().items():
            dtype = "F8_E4M3" if name == "transformer" and value.ndim == 2 else "BF16"
            header[inverse(key)] = {"dtype": dtype, "shape": list(value.shape), "data_offsets": [0, 0]}
    raw = json.dumps(header).encode()
    path = tmp_path / "ltx-2-19b-dev-fp8.safetensors"
    path.write_bytes(struct.pack("<Q", len(raw)) + raw)  # the header is all that is read
    info = inspect_ltx_file(path)
    assert info.fp8 and not info.scaled and info.model == "ltx-2"
    assert info.label.startswith("LTX-2 dev checkpoint (transformer 4096-wide, 48 blocks")
    for name, module in mods.items():
        published = {k: list(v) if isinstance(v, tuple) else v for k, v in module.config.items()}
        assert {k: published[k] for k in info.configs[name]} == info.configs[name], name


def test_without_a_gemma_file_the_repos_text_encoder_is_used(offline, tmp_path, monkeypatch):
    """A checkpoint outside a ComfyUI folder (no models/text_encoders beside it): the text encoder comes from the
    repo in the cache, and the record says so."""
    import shutil

    from stillmotion.models.ltx_files import resolve_ltx_file

    lone = tmp_path / "lone" / DEV
    lone.parent.mkdir()
    shutil.copy(offline["ckpts"] / DEV, lone)
    code, _, err = run_cli("generate", str(_square(tmp_path) and tmp_path / "in.png"), "--model", str(lone), *ARGS,
                           "-o", str(tmp_path / "out"))
    assert code == 3 and f"hf download {REPO} 'text_encoder/*' 'tokenizer/*'" in err, err
    hub = tmp_path / "hub"
    shutil.copytree(offline["hub"], hub)
    snap = next((hub / ("models--" + REPO.replace("/", "--")) / "snapshots").iterdir())
    offline["refs"][DEV]["text_encoder"].save_pretrained(snap / "text_encoder")
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    _folder, record = resolve_ltx_file(lone)
    assert record["components"]["text_encoder"]["repo_id"] == REPO
    assert any(n.startswith("text_encoder, tokenizer: no Gemma-3 file") for n in record["notes"])
    code, _, err = run_cli("generate", str(tmp_path / "in.png"), "--model", str(lone), *ARGS, "-o", str(tmp_path / "out"))
    assert code == 0, err
    frames, _ = _stock(offline["refs"][DEV], Image.open(tmp_path / "in.png"))
    assert np.abs(_frames(tmp_path / "out").astype(int) - frames.astype(int)).max() <= 2
    # a Gemma file that does not fit the repo's Gemma-3 (here one key more): the repo's text encoder, said why
    from safetensors.torch import load_file

    other = tmp_path / "Other" / "models"
    (other / "checkpoints").mkdir(parents=True)
    shutil.copy(offline["ckpts"] / DEV, other / "checkpoints" / DEV)
    gemma = load_file(str(offline["root"] / "models" / "text_encoders" / GEMMA))
    L.save({**gemma, "model.extra.weight": gemma["model.norm.weight"].clone()}, other / "text_encoders" / GEMMA)
    _folder, record = resolve_ltx_file(other / "checkpoints" / DEV)
    assert record["components"]["text_encoder"]["repo_id"] == REPO
    assert any(f"{GEMMA} does not fit {REPO}'s Gemma-3 (unexpected model.language_model.extra.weight)" in n
               for n in record["notes"]), record["notes"]


def test_the_sidecar_of_a_checkpoint_run_reproduces_it(offline, tmp_path):
    """--from the sidecar runs the same file (its path is the recorded model) to the same frames and sound."""
    from stillmotion.video.audio import read_audio

    _square(tmp_path)
    code, _, err = run_cli("generate", str(tmp_path / "in.png"), "--model", str(offline["ckpts"] / FP8), *ARGS,
                           "-o", str(tmp_path / "a"))
    assert code == 0, err
    code, _, err = run_cli("generate", "--from", str(tmp_path / "a.json"), "--device", "cpu", "-o", str(tmp_path / "b"))
    assert code == 0, err
    assert json.loads((tmp_path / "b.json").read_text())["model"]["single_file"]["path"].endswith(FP8)
    assert np.array_equal(_frames(tmp_path / "a"), _frames(tmp_path / "b"))
    assert np.array_equal(read_audio(tmp_path / "a.wav").samples, read_audio(tmp_path / "b.wav").samples)


def test_fast_on_the_dev_checkpoint_takes_the_distilled_lora_from_comfyuis_loras(offline, tmp_path):
    """A dev checkpoint runs ltx-2's fast preset: the distilled LoRA where ComfyUI users keep it (models/loras/, the
    repo's file name), the distilled schedule at CFG 1, and the First Block Cache: equal to the stock pipeline with
    that LoRA and cache. Without the file (and offline) the run stops with the command that fetches it."""
    import torch
    from diffusers.hooks import FirstBlockCacheConfig

    from stillmotion.families.caching import register_block
    from stillmotion.families.ltx import FAST_THRESHOLD, distilled_sigmas
    from stillmotion.models.registry import REGISTRY
    from stillmotion.models.tiny_ltx import write_distilled_lora

    img = _square(tmp_path)
    args = ["generate", str(tmp_path / "in.png"), "--comfyui-dir", str(offline["root"]), "--model", DEV, "--device",
            "cpu", "--frames", "9", "--seed", "3", "--format", "png", "--width", "64", "--height", "64", "--prompt",
            "waves", "--speed", "fast"]
    code, _, err = run_cli(*args, "-o", str(tmp_path / "none"))
    assert code == 3 and f"hf download {REPO} {REGISTRY['ltx-2'].fast.lora}" in err, err
    assert not list(tmp_path.glob("none*"))

    lora = write_distilled_lora(offline["root"] / "models" / "loras", REGISTRY["ltx-2"].fast.lora,
                                transformer=offline["refs"][DEV]["transformer"])
    code, _, err = run_cli(*args, "-o", str(tmp_path / "out"))
    assert code == 0, err
    side = json.loads((tmp_path / "out.json").read_text())
    assert side["speed"]["preset"] == "distilled" and side["spec"]["num_inference_steps"] == 8

    from diffusers import LTX2ImageToVideoPipeline

    pipe = LTX2ImageToVideoPipeline(**offline["refs"][DEV])
    pipe.set_progress_bar_config(disable=True)
    pipe.load_lora_weights(str(lora), adapter_name="d")
    register_block(pipe.transformer)
    pipe.transformer.enable_cache(FirstBlockCacheConfig(threshold=FAST_THRESHOLD))
    try:
        out = pipe(image=img, prompt="waves", negative_prompt=side["spec"]["negative_prompt"], height=64, width=64,
                   num_frames=9, num_inference_steps=8, frame_rate=24, sigmas=list(distilled_sigmas()),
                   guidance_scale=1.0, stg_scale=0.0, audio_stg_scale=0.0, modality_scale=1.0,
                   audio_modality_scale=1.0, guidance_rescale=0.0, audio_guidance_rescale=0.0,
                   audio_guidance_scale=1.0, generator=torch.Generator("cpu").manual_seed(3), output_type="np")
    finally:
        pipe.transformer.disable_cache()
        pipe.unload_lora_weights()  # the module fixture's components stay the dev weights
    stock = np.clip(np.round(out.frames[0] * 255.0), 0, 255).astype(np.uint8)
    assert np.abs(_frames(tmp_path / "out").astype(int) - stock.astype(int)).max() <= 2
