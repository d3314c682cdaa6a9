"""EngineConfig: one typed object every front end builds and every process receives whole.

`--attention sdpa|math` is the setting added after the redesign to show the seam: declared once in
EngineConfig, it reaches generate, batch, serve and Ray with no other change."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import run_cli
from stillmotion import GenerationSpec, InvalidInput
from stillmotion.engine import EngineConfig


def test_config_round_trips_through_json_as_every_process_receives_it():
    from stillmotion.server.settings import Settings

    config = EngineConfig.build(model="tiny", device="cpu", attention="math", max_memory="2GB", threads=1)
    assert config.max_memory == 2 * 1024**3
    assert EngineConfig.from_json(json.loads(json.dumps(config.to_json()))) == config  # batch children, Ray actors
    worker = Settings(engine=config).worker_config(device="cpu")  # what serve hands its worker processes
    assert EngineConfig.from_json(json.loads(json.dumps(worker))["engine"]).attention == "math"


def test_bad_settings_name_the_flag():
    with pytest.raises(InvalidInput, match="--attention"):
        EngineConfig.build(attention="flash")
    with pytest.raises(InvalidInput, match="--max-memory"):
        EngineConfig.build(max_memory="lots")


@pytest.mark.parametrize("command", ["generate", "batch", "serve"])
def test_every_engine_setting_is_a_flag_of_every_front_end(command):
    code, out, err = run_cli(command, "--help")
    assert code == 0, err
    for flag in ("--attention", "--threads", "--max-memory", "--offload", "--model"):
        assert flag in out, (command, flag)


def test_math_attention_runs_records_and_matches_sdpa(tiny_engine, image_file):
    from stillmotion import Engine

    spec = GenerationSpec(seed=4, num_frames=4, width=64, height=64, num_inference_steps=2)
    math = Engine("tiny", device="cpu", attention="math")
    a = math.generate(str(image_file), spec)
    b = tiny_engine.generate(str(image_file), spec)
    assert a.metadata["speed_settings"]["attention"] == "math"
    assert b.metadata["speed_settings"]["attention"] == "sdpa"
    # the same attention computed two ways: equal up to float rounding
    assert np.abs(a.frames.astype(int) - b.frames.astype(int)).mean() < 0.5


def test_planner_counts_the_score_matrix_of_math_attention():
    from stillmotion.engine import profile
    from stillmotion.engine.shapes import model_shape
    from stillmotion.engine.speed import set_attention

    import copy
    import dataclasses

    fused = model_shape("tiny", "fp32")  # shared (cached): not to be changed
    plain = dataclasses.replace(fused, unet=copy.deepcopy(fused.unet), profiles=None)
    set_attention(plain.unet, "math")
    a = profile.profile_stages(fused, 8, 256, 256, decode_chunk=8, stages=("denoise",))
    b = profile.profile_stages(plain, 8, 256, 256, decode_chunk=8, stages=("denoise",))
    assert b.working["denoise"] > a.working["denoise"]
