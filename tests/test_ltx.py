"""LTX-2 and LTX-Video 0.9.x through stillmotion's one path, against diffusers' stock pipelines.

Tiny offline models (models/tiny_ltx.py: random weights, tokenizers made in memory, no download) are saved to
folders the way users keep real ones. `stillmotion generate --model FOLDER` must give the frames the stock
pipeline gives for the same image, prompt, size, frames, steps, fps and seed (within 2 levels; PNG frames are
compared), and LTX-2's soundtrack must be the stock pipeline's `audio`, sample for sample. An end image is LTX's own
keyframe conditioning (the condition pipelines). What LTX cannot honour is refused with exit 2 and nothing written.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import run_cli
from PIL import Image

ARGS = ["--device", "cpu", "--frames", "9", "--steps", "2", "--seed", "3", "--format", "png", "--width", "64",
        "--height", "64"]
STOCK = {"ltx2": "LTX2ImageToVideoPipeline", "ltx": "LTXImageToVideoPipeline"}
CONDITION = {"ltx2": "LTX2ConditionPipeline", "ltx": "LTXConditionPipeline"}


@pytest.fixture(scope="module")
def ltx_folders(tmp_path_factory):
    """One saved folder per layout: LTX-2 (video and audio) and LTX-Video 0.9.x."""
    from stillmotion.models.tiny_ltx import build_tiny_ltx

    root = tmp_path_factory.mktemp("ltx")
    return {v: build_tiny_ltx(root / v, v) for v in ("ltx2", "ltx")}


def _frames(folder) -> np.ndarray:
    return np.stack([np.asarray(Image.open(f).convert("RGB")) for f in sorted(folder.glob("*.png"))])


def _square(tmp_path, seed=0, name="in.png") -> Image.Image:
    """A square 64x64 input: fitting it to 64x64 changes nothing, so the stock pipeline gets the same pixels."""
    img = Image.fromarray(np.random.default_rng(seed).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    img.save(tmp_path / name)
    return img


def _stock(folder, variant, image, *, end_image=None, seed=3, frames=9, steps=2, fps=None, **kw):
    """The stock pipeline's (frames uint8, audio or None) for the same arguments; with an end image, the condition
    pipeline loaded from the same folder, the image at the first frame and the end image at the last. The fps
    defaults to the pipeline's own frame_rate (LTX-2 24, LTX-Video 25), as a folder's does."""
    import diffusers
    import torch

    fps = fps if fps is not None else {"ltx2": 24, "ltx": 25}[variant]

    if end_image is None:
        pipe = getattr(diffusers, STOCK[variant]).from_pretrained(folder)
        inputs = {"image": image}
    else:
        pipe = getattr(diffusers, CONDITION[variant]).from_pretrained(folder)
        if variant == "ltx2":
            from diffusers.pipelines.ltx2.pipeline_ltx2_condition import LTX2VideoCondition

            inputs = {"conditions": [LTX2VideoCondition(frames=image, index=0),
                                     LTX2VideoCondition(frames=end_image, index=-1)]}
        else:
            from diffusers.pipelines.ltx.pipeline_ltx_condition import LTXVideoCondition

            inputs = {"conditions": [LTXVideoCondition(image=image, frame_index=0),
                                     LTXVideoCondition(image=end_image, frame_index=frames - 1)]}
    pipe.set_progress_bar_config(disable=True)
    out = pipe(**inputs, height=64, width=64, num_frames=frames, num_inference_steps=steps, frame_rate=fps,
               generator=torch.Generator("cpu").manual_seed(seed), output_type="np", **kw)
    video = np.clip(np.round(out.frames[0] * 255.0), 0, 255).astype(np.uint8)
    audio = getattr(out, "audio", None)
    return video, (None if audio is None else audio[0].float().numpy())


GUIDED = {
    "ltx2": (["--prompt", "a boat at sea", "--negative-prompt", "blurry", "--guidance", "4.0", "--stg-scale", "0.5",
              "--modality-scale", "2.0", "--guidance-rescale", "0.5", "--audio-guidance-scale", "5.0"],
             dict(prompt="a boat at sea", negative_prompt="blurry", guidance_scale=4.0, stg_scale=0.5,
                  audio_stg_scale=0.5, modality_scale=2.0, audio_modality_scale=2.0, guidance_rescale=0.5,
                  audio_guidance_rescale=0.5, audio_guidance_scale=5.0)),
    "ltx": (["--prompt", "a boat at sea", "--negative-prompt", "blurry", "--guidance", "4.0", "--guidance-rescale",
             "0.5"],
            dict(prompt="a boat at sea", negative_prompt="blurry", guidance_scale=4.0, guidance_rescale=0.5)),
}


@pytest.mark.parametrize("variant", ["ltx2", "ltx"])
def test_generate_equals_the_stock_pipeline(ltx_folders, tmp_path, variant):
    """Every knob set from the command line, the fps passed as frame_rate (25 here, not the default 24). LTX-2's STG,
    modality and rescale act on picture and sound alike (the pipeline's audio_* twins get the same value)."""
    img = _square(tmp_path)
    flags, kw = GUIDED[variant]
    out = tmp_path / "out"
    code, _, err = run_cli("generate", str(tmp_path / "in.png"), "--model", str(ltx_folders[variant]), *ARGS,
                           "--fps", "25", *flags, "-o", str(out))
    assert code == 0, err
    ours = _frames(out)
    stock, _ = _stock(ltx_folders[variant], variant, img, fps=25, **kw)
    assert ours.shape == stock.shape == (9, 64, 64, 3)
    assert np.abs(ours.astype(int) - stock.astype(int)).max() <= 2


def test_ltx2_sound_is_the_stock_pipelines_audio_and_a_folder_runs_with_its_own_defaults(ltx_folders, tmp_path):
    """Through Engine, no guidance given: the stock pipeline's own defaults (CFG 3, STG 1, modality 3, rescale 0.7,
    audio CFG 7). The frames within 2 levels, the waveform equal to stock `audio`, at the vocoder's rate."""
    from stillmotion.engine.core import Engine
    from stillmotion.spec import GenerationSpec

    img = _square(tmp_path)
    engine = Engine(str(ltx_folders["ltx2"]), device="cpu")
    result = engine.generate(img, GenerationSpec(width=64, height=64, num_frames=9, num_inference_steps=2, seed=3,
                                                 prompt="waves"))
    stock, audio = _stock(ltx_folders["ltx2"], "ltx2", img, prompt="waves")
    assert np.abs(result.frames.astype(int) - stock.astype(int)).max() <= 2
    assert result.audio is not None and result.audio.rate == engine.pipe.vocoder.config.output_sampling_rate == 16000
    assert result.audio.samples.shape == audio.shape and audio.shape[0] == 2
    assert np.array_equal(result.audio.samples, audio)
    assert abs(result.audio.seconds - 9 / 24) < 0.1  # as long as the picture (tiny model: to a latent's rounding)
    spec = result.metadata["spec"]  # the pipeline's __call__ defaults, named
    assert (spec["guidance_scale"], spec["stg_scale"], spec["modality_scale"], spec["guidance_rescale"],
            spec["audio_guidance_scale"], spec["fps"]) == (3.0, 1.0, 3.0, 0.7, 7.0, 24)
    assert spec["motion_bucket_id"] is None


def test_registry_names_the_pipelines_own_guidance_defaults():
    """LTX2_GUIDANCE (what ltx-2 and tiny-ltx2 show and run) is LTX2ImageToVideoPipeline's own __call__ defaults;
    ltx-2's negative prompt is Lightricks' (diffusers' copy of it)."""
    import inspect

    from diffusers import LTX2ImageToVideoPipeline

    from diffusers.pipelines.ltx2.utils import DEFAULT_NEGATIVE_PROMPT

    from stillmotion.models.registry import LTX2_GUIDANCE, LTX2_NEGATIVE_PROMPT, REGISTRY

    params = inspect.signature(LTX2ImageToVideoPipeline.__call__).parameters
    assert LTX2_GUIDANCE == {k: params[k].default for k in LTX2_GUIDANCE}
    assert REGISTRY["ltx-2"].defaults.negative_prompt == LTX2_NEGATIVE_PROMPT == DEFAULT_NEGATIVE_PROMPT
    distilled = REGISTRY["ltx-2-distilled"].defaults  # 8 steps at CFG 1, no extra guidance pass
    assert (distilled.num_inference_steps, distilled.guidance_scale, distilled.stg_scale,
            distilled.modality_scale) == (8, 1.0, 0.0, 1.0)


@pytest.mark.parametrize("variant", ["ltx2", "ltx"])
def test_end_image_is_ltxs_own_keyframe_conditioning(ltx_folders, tmp_path, variant):
    img = _square(tmp_path)
    end = _square(tmp_path, seed=1, name="end.png")
    out = tmp_path / "out"
    code, _, err = run_cli("generate", str(tmp_path / "in.png"), "--end-image", str(tmp_path / "end.png"),
                           "--model", str(ltx_folders[variant]), *ARGS, "--prompt", "a boat", "-o", str(out))
    assert code == 0, err
    stock, _ = _stock(ltx_folders[variant], variant, img, end_image=end, prompt="a boat")
    plain, _ = _stock(ltx_folders[variant], variant, img, prompt="a boat")
    assert np.abs(_frames(out).astype(int) - stock.astype(int)).max() <= 2
    assert np.abs(stock.astype(int) - plain.astype(int)).max() > 2  # the end image changed the video


def test_ltx2_end_image_run_has_the_condition_pipelines_sound(ltx_folders, tmp_path):
    """Through Engine with an end image: the soundtrack is LTX2ConditionPipeline's `audio`, and the sidecar names
    the conditioning."""
    from stillmotion.engine.core import Engine
    from stillmotion.spec import GenerationSpec

    img, end = _square(tmp_path), _square(tmp_path, seed=1, name="end.png")
    engine = Engine(str(ltx_folders["ltx2"]), device="cpu")
    result = engine.generate(img, GenerationSpec(width=64, height=64, num_frames=9, num_inference_steps=2, seed=3,
                                                 prompt="a boat"), end_image=end)
    stock, audio = _stock(ltx_folders["ltx2"], "ltx2", img, end_image=end, prompt="a boat")
    assert np.abs(result.frames.astype(int) - stock.astype(int)).max() <= 2
    assert np.array_equal(result.audio.samples, audio)
    assert "LTX2ConditionPipeline" in result.metadata["keyframes"]["method"]


def test_the_distilled_schedule_is_the_stock_pipelines_distilled_sigmas(ltx_folders, tmp_path):
    """--schedule distilled (ltx-2-distilled's default) runs the 8 sigmas the distilled checkpoint was trained on,
    as its model card passes them: equal to the stock pipeline given diffusers' DISTILLED_SIGMA_VALUES."""
    from diffusers.pipelines.ltx2.utils import DISTILLED_SIGMA_VALUES

    from stillmotion.models.registry import REGISTRY

    img = _square(tmp_path)
    out = tmp_path / "out"
    flags = [f for f in ARGS if f not in ("--steps", "2")]
    code, _, err = run_cli("generate", str(tmp_path / "in.png"), "--model", str(ltx_folders["ltx2"]), *flags,
                           "--steps", "8", "--schedule", "distilled", "--guidance", "1", "--stg-scale", "0",
                           "--modality-scale", "1", "--audio-guidance-scale", "1", "-o", str(out))
    assert code == 0, err
    stock, _ = _stock(ltx_folders["ltx2"], "ltx2", img, steps=8, sigmas=DISTILLED_SIGMA_VALUES, guidance_scale=1.0,
                      stg_scale=0.0, audio_stg_scale=0.0, modality_scale=1.0, audio_modality_scale=1.0,
                      audio_guidance_scale=1.0, prompt="")
    assert np.abs(_frames(out).astype(int) - stock.astype(int)).max() <= 2
    plain, _ = _stock(ltx_folders["ltx2"], "ltx2", img, steps=8, guidance_scale=1.0, stg_scale=0.0, audio_stg_scale=0.0,
                      modality_scale=1.0, audio_modality_scale=1.0, audio_guidance_scale=1.0, prompt="")
    assert np.abs(stock.astype(int) - plain.astype(int)).max() > 2  # the schedule changed the video
    assert REGISTRY["ltx-2-distilled"].defaults.sigma_schedule == "distilled"


def test_decode_timestep_and_noise_equal_the_stock_decode(ltx_folders, tmp_path):
    """LTX-Video's VAE is timestep-conditioned (tiny too): --decode-timestep / --decode-noise-scale (the 0.9.7
    distilled card's 0.05 / 0.025) give the stock pipeline's frames, the noise drawn from the run's generator after
    the steps as the pipeline draws it; on LTX-2's VAE, which is not, they are refused."""
    img = _square(tmp_path)
    out = tmp_path / "out"
    code, _, err = run_cli("generate", str(tmp_path / "in.png"), "--model", str(ltx_folders["ltx"]), *ARGS,
                           "--prompt", "a boat", "--decode-timestep", "0.05", "--decode-noise-scale", "0.025",
                           "-o", str(out))
    assert code == 0, err
    stock, _ = _stock(ltx_folders["ltx"], "ltx", img, prompt="a boat", decode_timestep=0.05, decode_noise_scale=0.025)
    plain, _ = _stock(ltx_folders["ltx"], "ltx", img, prompt="a boat")
    assert np.abs(_frames(out).astype(int) - stock.astype(int)).max() <= 2
    assert np.abs(stock.astype(int) - plain.astype(int)).max() > 2  # the decode timestep and noise changed it

    code, _, err = run_cli("generate", str(tmp_path / "in.png"), "--model", str(ltx_folders["ltx2"]), *ARGS,
                           "--decode-timestep", "0.05", "-o", str(tmp_path / "x.mp4"))
    assert code == 2 and "not timestep-conditioned" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "x.mp4").exists() and not (tmp_path / "x.json").exists()


@pytest.mark.parametrize(("model", "flags", "words"), [
    ("ltx2", ["--frames", "10"], "LTX makes 8k+1 frames: use 9 or 17"),
    ("ltx2", ["--schedule", "distilled", "--steps", "4"], "the distilled schedule is 8 steps: use --steps 8"),
    ("ltx", ["--schedule", "distilled"], "--schedule (sigma_schedule) is a setting of ltx2 models"),
    ("ltx-2-distilled", ["--steps", "4"], "the distilled schedule is 8 steps"),  # refused before any download
    ("ltx", ["--frames", "120"], "LTX makes 8k+1 frames: use 113 or 121"),
    ("ltx2", ["--width", "80", "--height", "64"], "LTX-2 sizes are multiples of 32"),
    ("ltx", ["--height", "80", "--width", "64"], "LTX-Video sizes are multiples of 32"),
    ("ltx2", ["--motion", "100"], "--motion (motion_bucket_id) is a setting of svd models"),
    ("ltx", ["--stg-scale", "1.0"], "--stg-scale (stg_scale) is a setting of ltx2 models"),
    ("tiny", ["--stg-scale", "1.0"], "--stg-scale (stg_scale) is a setting of ltx2 models"),
    ("tiny-wan", ["--audio-guidance-scale", "3"], "is a setting of ltx2 models"),
])
def test_what_ltx_cannot_honour_is_refused_with_nothing_written(ltx_folders, tmp_path, model, flags, words):
    _square(tmp_path)
    code, out, err = run_cli("generate", str(tmp_path / "in.png"), "--model", str(ltx_folders.get(model, model)),
                             "--device", "cpu", *flags, "-o", str(tmp_path / "out.mp4"))
    assert code == 2, err
    assert words in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out.mp4").exists() and not (tmp_path / "out.json").exists()


def test_tiny_ltx2_is_built_in_and_the_sidecar_round_trips(tmp_path):
    """The built-in tiny-ltx2 (built on use), with a prompt; `--from` its sidecar makes the same frames."""
    import json

    _square(tmp_path)
    code, _, err = run_cli("generate", str(tmp_path / "in.png"), "--model", "tiny-ltx2", "--device", "cpu",
                           "--prompt", "waves roll in", "--seed", "5", "--format", "png", "-o", str(tmp_path / "a"))
    assert code == 0, err
    record = json.loads((tmp_path / "a.json").read_text())
    assert record["model"]["name"] == "tiny-ltx2" and record["spec"]["prompt"] == "waves roll in"
    assert record["spec"]["num_frames"] == 9 and record["spec"]["fps"] == 24  # the registry's defaults
    code, _, err = run_cli("generate", "--from", str(tmp_path / "a.json"), "--device", "cpu", "-o", str(tmp_path / "b"))
    assert code == 0, err
    assert np.array_equal(_frames(tmp_path / "a"), _frames(tmp_path / "b"))


# --- --speed fast: diffusers' First Block Cache on the transformer (LTX-2's audio-video block registered) ---

def test_fast_runs_records_its_cache_and_leaves_exact_exact(ltx_folders, tmp_path, monkeypatch):
    """exact, fast, exact on one Engine: fast records what ran; the exact run after it equals the one before, and
    the transformer keeps no cache hook. With the threshold raised every pass after the first of each guidance pass
    (CFG batch, STG, modality isolation: three caches) reuses the cached residuals of video and audio."""
    from stillmotion.engine.core import Engine
    from stillmotion.families import ltx
    from stillmotion.spec import GenerationSpec

    monkeypatch.setattr(ltx, "FAST_THRESHOLD", 10.0)
    engine = Engine(str(ltx_folders["ltx2"]), device="cpu")
    img = _square(tmp_path)
    spec = dict(width=64, height=64, num_frames=9, num_inference_steps=3, seed=3, prompt="a boat")
    runs = [engine.generate(img, GenerationSpec(**spec, speed=speed)) for speed in ("exact", "fast", "exact")]
    assert np.array_equal(runs[0].frames, runs[2].frames)
    assert np.array_equal(runs[0].audio.samples, runs[2].audio.samples)
    assert runs[0].metadata["speed"] == runs[2].metadata["speed"] == {"mode": "exact"}
    fast = runs[1].metadata["speed"]
    assert fast == {"mode": "fast", "cache": "first-block", "threshold": 10.0, "full_passes": 3,
                    "cached_passes": 6}, fast
    assert not np.array_equal(runs[1].frames, runs[0].frames)
    assert not np.array_equal(runs[1].audio.samples, runs[0].audio.samples)  # the audio stream was cached too
    assert not engine.pipe.transformer.is_cache_enabled


def test_fast_from_the_cli_at_the_default_threshold(ltx_folders, tmp_path):
    import json

    from stillmotion.families.ltx import FAST_THRESHOLD

    _square(tmp_path)
    code, _, err = run_cli("generate", str(tmp_path / "in.png"), "--model", str(ltx_folders["ltx"]), *ARGS,
                           "--prompt", "a boat", "--speed", "fast", "-o", str(tmp_path / "out"))
    assert code == 0, err
    speed = json.loads((tmp_path / "out.json").read_text())["speed"]
    assert speed["mode"] == "fast" and speed["cache"] == "first-block" and speed["threshold"] == FAST_THRESHOLD
    assert speed["full_passes"] + speed["cached_passes"] == 2  # 2 steps, CFG in one batch


def test_batch_rows_carry_ltx2_knobs_and_equal_the_stock_pipeline(ltx_folders, tmp_path):
    """A manifest with a prompt and an LTX-2 knob per row (the schema's columns): the video equals the stock
    pipeline's at the seed its sidecar records; a row with an LTX-2 knob on LTX-Video is refused, nothing run."""
    import json

    img = _square(tmp_path)
    manifest = tmp_path / "m.csv"
    manifest.write_text("image,prompt,stg_scale,modality_scale\nin.png,waves roll in,0.5,1.0\n")
    out = tmp_path / "out"
    code, _, err = run_cli("batch", str(manifest), str(out), "--model", str(ltx_folders["ltx2"]), *ARGS)
    assert code == 0, err
    record = json.loads((out / "in.json").read_text())
    assert (record["spec"]["stg_scale"], record["spec"]["modality_scale"]) == (0.5, 1.0)
    stock, _ = _stock(ltx_folders["ltx2"], "ltx2", img, seed=record["seed"], prompt="waves roll in", stg_scale=0.5,
                      audio_stg_scale=0.5, modality_scale=1.0, audio_modality_scale=1.0)
    assert np.abs(_frames(out / "in").astype(int) - stock.astype(int)).max() <= 2

    code, _, err = run_cli("batch", str(manifest), str(tmp_path / "out2"), "--model", str(ltx_folders["ltx"]), *ARGS)
    assert code == 2 and "--stg-scale (stg_scale) is a setting of ltx2 models" in err, err
    assert not (tmp_path / "out2").exists()


def test_a_hub_download_fetches_every_file_an_ltx2_folder_needs(ltx_folders):
    """The hub fetch patterns (models/hub.py) take every file of a saved LTX-2 folder but its weights' other
    variants: the Gemma tokenizer's own files included (tokenizer.json: without it the pipeline cannot load), and
    the folder counts as complete."""
    from fnmatch import fnmatch

    from stillmotion.models.hub import allow_patterns, ignore_patterns, missing_files

    folder = ltx_folders["ltx2"]
    files = [p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()]
    assert "tokenizer/tokenizer.json" in files
    allow, ignore = allow_patterns(None), ignore_patterns(None) or []
    fetched = [f for f in files if any(fnmatch(f, a) for a in allow) and not any(fnmatch(f, i) for i in ignore)]
    assert sorted(fetched) == sorted(files)
    assert missing_files(folder, None) == []



# --- --speed fast on a model with a fast preset (registry.FastPreset): LTX-2's distilled LoRA, its sigmas, the cache ---

def test_fast_on_a_preset_model_is_its_distilled_lora_and_schedule_with_the_cache(tmp_path):
    """tiny-ltx2 carries a fast preset as ltx-2 does (a LoRA in Lightricks' layout, the distilled defaults): exact,
    fast, exact on one Engine. The fast run resolves to the distilled preset (8 sigmas, CFG 1, no STG or modality
    pass) and equals the stock pipeline with that LoRA loaded by diffusers' load_lora_weights and diffusers' First
    Block Cache on, same arguments; the exact run after it equals the one before (the LoRA is off again)."""
    import torch
    from diffusers import LTX2ImageToVideoPipeline
    from diffusers.hooks import FirstBlockCacheConfig

    from stillmotion.engine.core import Engine
    from stillmotion.families.caching import register_block
    from stillmotion.families.ltx import FAST_THRESHOLD, distilled_sigmas
    from stillmotion.models.registry import REGISTRY
    from stillmotion.models.tiny import tiny_folder
    from stillmotion.spec import GenerationSpec

    img = _square(tmp_path)
    engine = Engine("tiny-ltx2", device="cpu")
    spec = dict(width=64, height=64, seed=3, prompt="a boat")
    runs = [engine.generate(img, GenerationSpec(**spec, speed=speed)) for speed in ("exact", "fast", "exact")]
    assert np.array_equal(runs[0].frames, runs[2].frames)
    assert np.array_equal(runs[0].audio.samples, runs[2].audio.samples)
    fast = runs[1].metadata
    assert fast["speed"]["preset"] == "distilled" and fast["speed"]["lora"] == REGISTRY["tiny-ltx2"].fast.lora
    s = fast["spec"]
    assert (s["num_inference_steps"], s["sigma_schedule"], s["guidance_scale"], s["stg_scale"], s["modality_scale"],
            s["guidance_rescale"], s["audio_guidance_scale"]) == (8, "distilled", 1.0, 0.0, 1.0, 0.0, 1.0)
    assert runs[0].metadata["spec"]["num_inference_steps"] == 4  # exact keeps the entry's own defaults

    folder = tiny_folder("tiny-ltx2")
    pipe = LTX2ImageToVideoPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    pipe.load_lora_weights(str(folder / REGISTRY["tiny-ltx2"].fast.lora), adapter_name="d")
    register_block(pipe.transformer)
    pipe.transformer.enable_cache(FirstBlockCacheConfig(threshold=FAST_THRESHOLD))
    out = pipe(image=img, prompt="a boat", height=64, width=64, num_frames=9, num_inference_steps=8, frame_rate=24,
               sigmas=list(distilled_sigmas()), guidance_scale=1.0, stg_scale=0.0, audio_stg_scale=0.0,
               modality_scale=1.0, audio_modality_scale=1.0, guidance_rescale=0.0, audio_guidance_rescale=0.0,
               audio_guidance_scale=1.0, negative_prompt=s["negative_prompt"],
               generator=torch.Generator("cpu").manual_seed(3), output_type="np")
    stock = np.clip(np.round(out.frames[0] * 255.0), 0, 255).astype(np.uint8)
    assert np.abs(runs[1].frames.astype(int) - stock.astype(int)).max() <= 2
    assert np.allclose(runs[1].audio.samples, out.audio[0].float().numpy(), atol=1e-5)
    assert not np.array_equal(runs[1].frames, runs[0].frames)


def test_the_fast_preset_resolves_refuses_and_names_its_download(tmp_path, monkeypatch):
    """`ltx-2 --speed fast` resolves to the distilled preset and refuses a step count the schedule cannot run;
    offline with the LoRA not cached, the run stops with the one command that fetches it."""
    from stillmotion.errors import InvalidInput, ModelUnavailable
    from stillmotion.families import get_family
    from stillmotion.models.registry import REGISTRY
    from stillmotion.models.resolve import fast_lora
    from stillmotion.spec import GenerationSpec

    entry = REGISTRY["ltx-2"]
    fast = GenerationSpec(seed=1, speed="fast").resolve(entry)
    assert (fast.num_inference_steps, fast.sigma_schedule, fast.guidance_scale) == (8, "distilled", 1.0)
    assert GenerationSpec(seed=1).resolve(entry).num_inference_steps == 40
    with pytest.raises(InvalidInput, match="--steps 40: the distilled schedule is 8 steps"):
        get_family("ltx2").check(GenerationSpec(speed="fast", num_inference_steps=40), entry)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(ModelUnavailable, match="hf download Lightricks/LTX-2 ltx-2-19b-distilled-lora-384.safetensors"):
        fast_lora(entry)
