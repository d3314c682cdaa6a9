"""The tiny offline Wan image-to-video models (stillmotion.models.tiny_wan).

Each variant is built into a temporary folder with save_pretrained, loaded back
with WanImageToVideoPipeline.from_pretrained (no hub), and run for 2 steps at the
smallest size it accepts.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from stillmotion.models.tiny_wan import SIZE_MULTIPLE, VARIANTS, build_tiny_wan, tiny_tokenizer

FRAMES = 9  # 4k + 1


def _images():
    from PIL import Image

    rng = np.random.default_rng(0)
    first = Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8))
    last = Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8))
    return first, last


def _load(folder):
    try:
        import ftfy  # noqa: F401
    except ImportError:  # pragma: no cover
        pytest.fail("WanImageToVideoPipeline cleans prompts with ftfy: `pip install ftfy`")
    from diffusers import WanImageToVideoPipeline

    pipe = WanImageToVideoPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _run(pipe, variant, **kw):
    import torch

    first, last = _images()
    size = SIZE_MULTIPLE[variant]
    args = dict(
        image=first,
        prompt="a boat",
        negative_prompt="blurry",
        height=size,
        width=size,
        num_frames=FRAMES,
        num_inference_steps=2,
        guidance_scale=5.0,
        generator=torch.Generator("cpu").manual_seed(0),
        output_type="np",
    )
    if variant == "wan2.2-a14b":
        args["guidance_scale_2"] = 3.0
    if variant == "wan2.1-flf2v":
        args["last_image"] = last  # first-last-frame model: needs both images
    args.update(kw)
    return pipe(**args).frames


@pytest.mark.parametrize("variant", VARIANTS)
def test_tiny_wan_builds_loads_offline_and_runs_deterministically(tmp_path, variant):
    folder = build_tiny_wan(tmp_path / variant, variant)
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "WanImageToVideoPipeline"
    assert index["expand_timesteps"] is (variant == "wan2.2-ti2v-5b")
    assert index["boundary_ratio"] == (0.9 if variant == "wan2.2-a14b" else None)
    assert (index["transformer_2"][0] is not None) is (variant == "wan2.2-a14b")
    assert (index["image_encoder"][0] is not None) is variant.startswith("wan2.1")
    assert list(folder.rglob("*.safetensors")) and not list(folder.rglob("*.bin"))

    pipe = _load(folder)
    assert all(p.dtype.is_floating_point and p.dtype.itemsize == 4 for p in pipe.transformer.parameters())
    a = _run(pipe, variant)
    b = _run(pipe, variant)
    size = SIZE_MULTIPLE[variant]
    assert a.shape == (1, FRAMES, size, size, 3)
    assert np.isfinite(a).all() and a.min() >= 0.0 and a.max() <= 1.0
    assert np.array_equal(a, b)


def test_a14b_switches_experts_and_takes_a_last_image(tmp_path):
    pipe = _load(build_tiny_wan(tmp_path / "a14b", "wan2.2-a14b"))
    used = []
    for name in ("transformer", "transformer_2"):
        getattr(pipe, name).register_forward_hook(lambda *_, name=name: used.append(name))
    plain = _run(pipe, "wan2.2-a14b")
    # step 1 (t ~ 999) is above the 0.9 boundary, step 2 below; 2 calls per step (CFG)
    assert used == ["transformer", "transformer", "transformer_2", "transformer_2"]
    _, last = _images()
    with_last = _run(pipe, "wan2.2-a14b", last_image=last)
    assert with_last.shape == plain.shape and not np.allclose(with_last, plain)


def test_tokenizer_round_trips_without_sentencepiece(tmp_path):
    from transformers import AutoTokenizer

    tok = tiny_tokenizer()
    tok.save_pretrained(tmp_path)
    assert not list(tmp_path.glob("*.model"))  # tokenizer.json only
    back = AutoTokenizer.from_pretrained(tmp_path)
    text = ["a boat on the sea, blurry", ""]
    kw = dict(padding="max_length", max_length=16, truncation=True, return_attention_mask=True)
    assert back(text, **kw).input_ids == tok(text, **kw).input_ids
    ids = tok("a boat").input_ids
    assert ids[-1] == tok.eos_token_id == 1 and tok.pad_token_id == 0 and tok.unk_token_id == 2
