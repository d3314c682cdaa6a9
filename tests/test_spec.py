"""GenerationSpec: one clear message per bad field; defaults from the model; size from the aspect."""

from __future__ import annotations

import subprocess
import sys

import pytest

from stillmotion import GenerationSpec, InvalidInput
from stillmotion.models.registry import REGISTRY


@pytest.mark.parametrize(
    "fields, words",
    [
        ({"num_frames": 0}, "num_frames"),
        ({"num_frames": 258}, "num_frames"),  # SVD's 64 is its family's rule (tests/test_wan.py)
        ({"num_inference_steps": 500}, "num_inference_steps"),
        ({"width": 1000}, "width must be a multiple of 16"),  # each family narrows it (tests/test_wan.py)
        ({"height": 32}, "height must be a multiple of 16"),
        ({"motion_bucket_id": 5000}, "motion_bucket_id"),
        ({"fps": 0}, "fps"),
        ({"seed": 2**32}, "seed"),
        ({"seed": -2}, "seed"),
        ({"resize": "zoom"}, "resize"),
        ({"format": "avi"}, "format"),
        ({"interpolate": 5}, "interpolate must be 1, 2, 3, 4 or 8"),
        ({"min_guidance_scale": 4, "max_guidance_scale": 2}, "must not exceed"),
        ({"colour": "red"}, "colour: unknown field"),
    ],
)
def test_bad_fields_name_the_field(fields, words):
    with pytest.raises(InvalidInput) as e:
        GenerationSpec.build(**fields)
    assert words in str(e.value)
    assert "\n" not in str(e.value)


def test_two_bad_fields_are_both_reported():
    with pytest.raises(InvalidInput) as e:
        GenerationSpec.build(num_frames=0, fps=99)
    assert "num_frames" in str(e.value) and "fps" in str(e.value)


@pytest.mark.parametrize(
    "model, frames", [("svd", 14), ("svd-xt", 25), ("svd-xt-1-1", 25)]
)
def test_model_defaults(model, frames):
    s = GenerationSpec().resolve(REGISTRY[model], (1920, 1080))
    assert s.num_frames == frames and s.num_inference_steps == 25 and s.fps == 7
    assert s.motion_bucket_id == 127 and s.noise_aug_strength == 0.02
    assert (s.min_guidance_scale, s.max_guidance_scale) == (1.0, 3.0)
    assert 0 <= s.seed < 2**32


@pytest.mark.parametrize(
    "size, want", [((1920, 1080), (1024, 576)), ((1080, 1920), (576, 1024)), ((1000, 1000), (768, 768))]
)
def test_auto_size_by_aspect(size, want):
    s = GenerationSpec(seed=1).resolve(REGISTRY["svd-xt"], size)
    assert (s.width, s.height) == want


def test_explicit_values_win_and_seed_is_kept():
    s = GenerationSpec(num_frames=10, width=512, height=512, seed=5).resolve(REGISTRY["svd-xt"], (1920, 1080))
    assert (s.num_frames, s.width, s.height, s.seed) == (10, 512, 512, 5)


def test_importing_the_cli_does_not_import_torch():
    code = "import sys, stillmotion, stillmotion.cli; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_with_no_image_the_size_is_the_models_landscape_and_cfg_follows_the_max_guidance():
    s = GenerationSpec().resolve(REGISTRY["svd-xt"])
    assert (s.width, s.height) == (1024, 576) and s.uses_cfg
    demo = GenerationSpec().resolve(REGISTRY["demo"])  # max guidance 1.0: no classifier-free guidance
    assert (demo.width, demo.height) == (128, 64) and not demo.uses_cfg
    assert GenerationSpec(width=512).resolve(REGISTRY["svd-xt"]).height == 256  # the other side by the landscape aspect
    assert not GenerationSpec().uses_cfg  # unresolved: not known here


def test_one_formatter_for_spec_engine_and_request_errors():
    from types import SimpleNamespace

    from stillmotion.engine.config import EngineConfig
    from stillmotion.spec import format_validation_error

    with pytest.raises(InvalidInput) as e:
        EngineConfig.build(attention="flash", threads=0)
    assert str(e.value) == ("Invalid engine setting: --threads: Input should be greater than or equal to 1 (got 0); "
                            "--attention: Input should be 'sdpa' or 'math' (got 'flash')")

    request = SimpleNamespace(errors=lambda: [  # as FastAPI's RequestValidationError gives them: with where they were
        {"type": "greater_than_equal", "loc": ("query", "limit"), "msg": "Input should be greater than or equal to 1",
         "input": "0"},
        {"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}])
    assert format_validation_error(request, "request") == (
        "Invalid request: limit: Input should be greater than or equal to 1 (got '0'); Field required")
    with pytest.raises(InvalidInput) as e:
        GenerationSpec.build(resize="x" * 500)
    assert len(str(e.value)) < 200  # a long value is cut
