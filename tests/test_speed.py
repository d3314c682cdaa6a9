"""Speed modes: exact is diffusers' computation; fast (DeepCache) runs and reports what it trades."""

from __future__ import annotations

import numpy as np
import torch

from stillmotion import GenerationSpec
from stillmotion.engine.speed import DeepCache
from stillmotion.metrics import psnr

SMALL = dict(width=64, height=64, num_frames=4, num_inference_steps=4, seed=11)


def _unet_inputs(unet, frames=4):
    g = torch.Generator().manual_seed(0)
    sample = torch.randn(2, frames, unet.config.in_channels, 8, 8, generator=g)
    emb = torch.randn(2, 1, unet.config.cross_attention_dim, generator=g)
    ids = torch.tensor([[6.0, 127.0, 0.02]] * 2)
    return sample, emb, ids


def test_deepcache_interval_1_is_exactly_the_unet(tiny_engine):
    unet = tiny_engine.pipe.unet
    sample, emb, ids = _unet_inputs(unet)
    with torch.inference_mode():
        ref = [unet(sample, t, emb, ids, return_dict=False)[0] for t in (900.0, 500.0, 100.0)]
        with DeepCache(unet, 1) as cache:
            got = [unet(sample, t, emb, ids, return_dict=False)[0] for t in (900.0, 500.0, 100.0)]
    assert cache.stats()["cached_steps"] == 0
    assert all(torch.equal(a, b) for a, b in zip(ref, got))
    assert "forward" not in vars(unet.down_blocks[0]) and "forward" not in vars(unet.up_blocks[-2])  # detached


def test_deepcache_cached_step_reuses_deep_features(tiny_engine):
    unet = tiny_engine.pipe.unet
    sample, emb, ids = _unet_inputs(unet)
    with torch.inference_mode():
        with DeepCache(unet, 2) as cache:
            full = unet(sample, 500.0, emb, ids, return_dict=False)[0]
            cached = unet(sample, 500.0, emb, ids, return_dict=False)[0]  # same input: same deep features
            moved = unet(sample * 0.5, 400.0, emb, ids, return_dict=False)[0]  # full again (step 2)
        assert cache.stats() == {"interval": 2, "full_steps": 2, "cached_steps": 1}
        plain = unet(sample * 0.5, 400.0, emb, ids, return_dict=False)[0]
    # with unchanged input a cached step recomputes only the shallow path: the same result
    torch.testing.assert_close(cached, full, rtol=1e-5, atol=1e-5)
    assert torch.equal(moved, plain)


def test_exact_mode_uses_sdpa_and_records_it(tiny_engine, image_file):
    r = tiny_engine.generate(str(image_file), GenerationSpec(**SMALL))
    assert r.metadata["speed"] == {"mode": "exact"}
    assert r.metadata["speed_settings"]["attention"] == "sdpa"


def test_fast_mode_runs_and_its_difference_is_measured(tiny_engine, image_file):
    exact = tiny_engine.generate(str(image_file), GenerationSpec(**SMALL))
    fast = tiny_engine.generate(str(image_file), GenerationSpec(speed="fast", cache_interval=2, **SMALL))
    assert fast.metadata["speed"] == {"mode": "fast", "interval": 2, "full_steps": 2, "cached_steps": 2}
    assert fast.frames.shape == exact.frames.shape and fast.frames.dtype == np.uint8
    assert not np.array_equal(fast.frames, exact.frames)
    assert np.isfinite(psnr(exact.frames, fast.frames)) and psnr(exact.frames, fast.frames) > 5
    assert psnr(exact.frames, exact.frames) == float("inf")
    # the UNet is left unwrapped after a fast run
    again = tiny_engine.generate(str(image_file), GenerationSpec(**SMALL))
    assert np.array_equal(again.frames, exact.frames)


def test_bad_cache_settings_are_refused_in_one_line(tiny_engine):
    from types import SimpleNamespace

    import pytest

    from stillmotion import InvalidInput

    with pytest.raises(InvalidInput, match="--cache-interval"):
        DeepCache(tiny_engine.pipe.unet, 0)
    one_level = SimpleNamespace(down_blocks=[object()], up_blocks=[object(), object()])
    with pytest.raises(InvalidInput, match="use --speed exact"):
        DeepCache(one_level, 2).attach()


def test_compile_time_is_counted_once_per_shape():
    from stillmotion.engine.speed import first_compile_seconds

    spec = GenerationSpec(**SMALL)
    seen: set = set()
    assert first_compile_seconds(spec, [5.0, 1.0, 1.2, 0.8], seen) == 4.0  # first step over the median
    assert first_compile_seconds(spec, [5.0, 1.0], seen) is None  # this shape compiled already
    assert first_compile_seconds(spec.update(num_frames=8), [5.0], set()) is None  # one step: nothing to compare
