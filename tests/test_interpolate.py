"""Interpolation (flow, rife, blend), loops, long videos and the `interpolate` command.

The clips are made here: a multi-scale noise texture moved by a known
translation and zoom, so every in-between frame has a true answer.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from stillmotion import GenerationSpec
from stillmotion.errors import InvalidInput, ModelCorrupted, ModelUnavailable
from stillmotion.video import quality
from stillmotion.video.interpolate import (
    BlendInterpolator,
    FlowInterpolator,
    interpolate,
    retime,
    times_for_fps,
)
from stillmotion.video.loop import blend, pingpong
from stillmotion.video.postprocess import apply as postprocess

from conftest import run_cli


def texture(h: int, w: int, seed: int = 0) -> np.ndarray:
    import cv2

    rng = np.random.default_rng(seed)
    img = np.zeros((h, w, 3), np.float32)
    for step, amp in ((2, 40), (6, 60), (20, 80)):
        noise = rng.normal(0, 1, (h // step + 2, w // step + 2, 3)).astype(np.float32)
        img += amp * cv2.resize(noise, (w, h), interpolation=cv2.INTER_CUBIC)
    return np.clip(img + 128, 0, 255).astype(np.uint8)


def moving_clip(n: int = 9, h: int = 72, w: int = 96, dx: float = 3.0, dy: float = 1.5, zoom: float = 1.02,
                seed: int = 0) -> np.ndarray:
    """n frames of a texture sliding (dx, dy) px per frame and zooming in by `zoom` per frame."""
    import cv2

    big = texture(2 * h, 2 * w, seed)
    frames = []
    for k in range(n):
        s = zoom**k
        m = np.array([[s, 0, w / 2 - s * w + dx * k], [0, s, h / 2 - s * h + dy * k]], np.float32)
        frames.append(cv2.warpAffine(big, m, (w, h), flags=cv2.INTER_LINEAR))
    return np.stack(frames)


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    return moving_clip()


# ---------------------------------------------------------------------------
# interpolation
def test_flow_rebuilds_held_out_frames_better_than_blending(clip):
    flow = quality.held_out(clip, lambda kept: interpolate(kept, 2, interp=FlowInterpolator()))
    plain = quality.held_out(clip, lambda kept: interpolate(kept, 2, interp=BlendInterpolator()))
    assert flow["frames"] == plain["frames"] == 4
    assert flow["psnr"] > plain["psnr"] + 8, (flow, plain)
    assert flow["psnr"] > 28
    assert flow["ssim"] > plain["ssim"] + 0.2 and flow["ssim"] > 0.9


@pytest.mark.parametrize("factor", [2, 3, 4, 8])
def test_factor_keeps_count_size_fps_and_originals(clip, factor):
    spec = GenerationSpec(interpolate=factor)
    out, fps, info = postprocess(clip[:4], 7.0, spec)
    assert out.shape == ((4 - 1) * factor + 1, 72, 96, 3) and out.dtype == np.uint8
    assert fps == 7.0 * factor
    assert np.array_equal(out[::factor], clip[:4])  # the model's frames pass through untouched
    assert info["frames_in"] == 4 and info["frames_out"] == len(out) and info["backend"] == "flow"


def test_target_fps_covers_the_same_time(clip):
    out, fps = retime(clip[:4], 7.0, 30.0)
    assert fps == 30.0
    assert len(out) == len(times_for_fps(4, 7.0, 30.0)) == 13  # 3/7 s at 30 fps -> frames 0..12
    assert np.array_equal(out[0], clip[0])
    out, fps, info = postprocess(clip[:4], 8.0, GenerationSpec(interpolate_fps=24))
    assert len(out) == 10 and fps == 24.0 and np.array_equal(out[-1], clip[3]) and info["target_fps"] == 24.0


def test_bad_factor_or_rate_is_a_clear_error(clip):
    for bad in (1, 5, 100):
        with pytest.raises(InvalidInput, match="factor must be 2, 3, 4 or 8"):
            interpolate(clip[:3], bad)
    with pytest.raises(InvalidInput, match="higher than"):
        retime(clip[:3], 7.0, 5.0)
    with pytest.raises(InvalidInput, match="not both"):
        GenerationSpec.build(interpolate=2, interpolate_fps=30)


# ---------------------------------------------------------------------------
# loops
def test_loop_blend_end_to_start_jump_is_a_normal_step(clip):
    assert quality.loop_jump(clip)["ratio"] > 2  # as generated, the cut back to the start is a jump
    looped = blend(clip)
    m = quality.loop_jump(looped)
    assert m["ratio"] <= 1.5, m
    assert len(looped) == len(clip) - 2  # 9 frames: a hand-over of 2

    out, fps, info = postprocess(clip, 7.0, GenerationSpec(loop="blend", interpolate=2))
    assert len(out) == 2 * len(looped) and fps == 14.0  # cyclic: the way back to the start is filled in too
    assert quality.loop_jump(out)["ratio"] <= 1.5
    assert info["loop"]["mode"] == "blend" and info["loop"]["ratio"] <= 1.5


def test_pingpong_has_no_repeated_end_frames(clip):
    p = pingpong(clip[:5])
    assert len(p) == 8
    assert np.array_equal(p[4], clip[4]) and np.array_equal(p[5], clip[3]) and np.array_equal(p[-1], clip[1])
    steps = quality.step_sizes(p, cyclic=True)
    assert steps.min() > 0  # no frame shown twice in a row, the wrap included
    with pytest.raises(InvalidInput, match="at least 5 frames"):
        blend(clip[:4])


# ---------------------------------------------------------------------------
# RIFE on random weights: shapes and loading
def test_rife_loads_safetensors_and_keeps_shapes(tmp_path):
    import torch
    from safetensors.torch import save_file

    from stillmotion.video.rife import RifeInterpolator, build_ifnet, load_ifnet

    frames = moving_clip(3, h=40, w=70)  # not multiples of 64: padded inside, cropped back
    paths = {}
    for variant in ("4.25", "4.22"):
        net = build_ifnet(variant, seed=3)
        paths[variant] = path = tmp_path / f"rife{variant}.safetensors"
        # Practical-RIFE's checkpoints carry DataParallel's "module." prefix
        save_file({f"module.{k}": v.contiguous() for k, v in net.state_dict().items()}, str(path))
        loaded, info = load_ifnet(path)
        assert info["variant"] == variant and len(info["sha256"]) == 64
        assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), loaded.state_dict().values()))

    # other v4 widths (lite, heavy releases) are read from the tensors
    from stillmotion.video.rife import _build

    odd = tmp_path / "heavy.safetensors"
    save_file({k: v.contiguous() for k, v in _build({"head": (16, 4), "blocks": (64, 48, 32, 24, 16)}).state_dict().items()},
              str(odd))
    assert load_ifnet(odd)[1]["variant"] == "v4 head 16/4, blocks 64/48/32/24/16"

    out = interpolate(frames, 2, backend="rife", rife_weights=paths["4.25"], device="cpu")
    assert out.shape == (5, 40, 70, 3) and out.dtype == np.uint8
    assert np.array_equal(out[2], frames[1])
    direct = RifeInterpolator(build_ifnet("4.25", seed=3), "cpu")
    assert np.array_equal(direct.at(direct.prepare(frames[0], frames[1]), 0.5), out[1])


def test_rife_refuses_pickle_missing_and_foreign_weights(tmp_path, monkeypatch):
    from safetensors.torch import save_file

    from stillmotion.video.rife import load_ifnet

    pkl = tmp_path / "flownet.pkl"
    pkl.write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(InvalidInput, match="never loaded"):
        load_ifnet(pkl)
    with pytest.raises(ModelUnavailable, match="not found"):
        load_ifnet(tmp_path / "nope.safetensors")
    monkeypatch.delenv("STILLMOTION_RIFE_WEIGHTS", raising=False)
    with pytest.raises(ModelUnavailable, match="RIFE needs weights"):
        postprocess(moving_clip(3, 32, 32), 7.0, GenerationSpec(interpolate=2, interpolate_backend="rife"))
    import torch

    other = tmp_path / "other.safetensors"
    save_file({"weight": torch.zeros(2, 2)}, str(other))
    with pytest.raises(ModelCorrupted, match="not RIFE v4"):
        load_ifnet(other)


# ---------------------------------------------------------------------------
# long videos on the tiny model
LONG = dict(width=64, height=64, num_frames=3, num_inference_steps=1, fps=4, seed=11)


def test_duration_chains_segments_deterministically(tiny_engine, image_file, tmp_path):
    from stillmotion.engine.long import segment_seed

    # 1.25 s at 4 fps = 5 frames: segments of 3 sharing 1 -> 2 segments; then 2x interpolation
    spec = GenerationSpec(duration=1.25, interpolate=2, **LONG)
    a = tiny_engine.generate(str(image_file), spec)
    assert a.frames.shape == ((5 - 1) * 2 + 1, 64, 64, 3) and a.fps == 8.0
    segs = a.metadata["segments"]
    assert [s["seam_at"] for s in segs] == [0, 2] and [s["frames"] for s in segs] == [3, 3]
    assert [s["seed"] for s in segs] == [11, segment_seed(11, 1)] and segment_seed(11, 1) != 11
    long = a.metadata["long"]
    assert long["segments"] == 2 and long["overlap"] == 1 and long["frames"] == 5
    assert long["colour_drift"] <= long["colour_drift_raw"] + 0.5
    assert a.metadata["postprocess"]["frames_in"] == 5

    b = tiny_engine.generate(str(image_file), spec)
    assert np.array_equal(a.frames, b.frames)
    art = a.save(tmp_path / "long.mp4")
    side = json.loads(art.sidecar.read_text())
    assert [s["index"] for s in side["segments"]] == [0, 1] and side["output"]["frames"] == 9


def test_segment_plan():
    from stillmotion.engine.long import plan

    p = plan(GenerationSpec(segments=3, num_frames=25, fps=7, seed=1))
    assert p == {"target_frames": 25 + 2 * 21, "frames_per_segment": 25, "overlap": 4, "segments": 3}
    p = plan(GenerationSpec(duration=10, num_frames=25, fps=7, seed=1))
    assert p["target_frames"] == 70 and p["segments"] == 4  # 25 + 21 + 21 + 21 >= 70
    assert plan(GenerationSpec(duration=1, num_frames=25, fps=7, seed=1))["segments"] == 1


class DriftingModel:
    """Stands in for SVD where drift is the point: each segment pans on from its conditioning
    frame and warms and brightens a little per frame, as chained SVD segments tend to."""

    def __init__(self, frames_per_segment=6):
        self.n = frames_per_segment

    def sample(self, image, spec, report, cancel, progress_span=(0.0, 1.0)):
        from stillmotion.engine import RunRecord

        start = np.asarray(image).astype(np.float32)
        out = []
        for i in range(self.n):
            f = np.roll(start, -2 * i, axis=1) + np.array([4.0, 2.0, -3.0]) * i
            out.append(np.clip(f, 0, 255).astype(np.uint8))
        return np.stack(out), RunRecord()


def test_long_holds_colour_to_the_first_segment_and_blends_seams():
    from PIL import Image

    from stillmotion.engine.long import generate_long

    model = DriftingModel()
    spec = GenerationSpec(width=64, height=64, num_frames=6, num_inference_steps=1, fps=6, seed=2, segments=5)
    image = Image.fromarray(texture(64, 64, seed=9))
    frames, fps, run = generate_long(model.sample, image, spec, lambda p: None, lambda: False)
    long = run.long
    assert len(frames) == long["target_frames"] == 6 + 4 * (6 - 1) and fps == 6.0
    assert long["colour_drift_raw"] > 3 * long["colour_drift"]
    first, last = frames[:6], frames[-6:]
    assert quality.colour_drift(first, last) < 0.5 * long["colour_drift_raw"]
    steps = quality.step_sizes(frames)
    assert steps.max() <= 2.0 * np.median(steps)  # no seam stands out
    assert len(run.timings["segments"]) == 5


def test_colour_matching_pulls_a_drifted_segment_back():
    from stillmotion.engine.long import lab_stats, match_colour

    first = moving_clip(4, 32, 32)
    drifted = np.clip(first.astype(np.int16) * 0.8 + np.array([30, 5, -20]), 0, 255).astype(np.uint8)
    assert quality.colour_drift(first, drifted) > 5
    assert quality.colour_drift(first, match_colour(drifted, lab_stats(first))) < 0.3 * quality.colour_drift(first, drifted)


# ---------------------------------------------------------------------------
# the command
def _write_other_tool_mp4(path, frames, fps=12):
    """An MPEG-4 Part 2 file in a MOV container via PyAV's own muxer: not our writer's settings."""
    import av

    with av.open(str(path), "w", format="mov") as out:
        s = out.add_stream("mpeg4", rate=fps)
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        s.bit_rate = 2_000_000
        for f in frames:
            for pkt in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                out.mux(pkt)
        for pkt in s.encode():
            out.mux(pkt)


def test_cli_interpolates_our_mp4_and_another_tools(tmp_path, clip):
    from stillmotion.video import read_video, write

    ours = write(clip[:5], tmp_path / "ours.mp4", fps=7).path
    code, out, err = run_cli("interpolate", str(ours), "--factor", "2", "-o", str(tmp_path / "ours2x.mp4"), "--json")
    assert code == 0, err
    res = json.loads(out)
    frames, fps = read_video(res["output"])
    assert frames.shape == (9, 72, 96, 3) and fps == 14.0
    side = json.loads((tmp_path / "ours2x.json").read_text())
    assert side["interpolate"]["backend"] == "flow" and side["interpolate"]["frames_in"] == 5

    other = tmp_path / "other.mov"
    _write_other_tool_mp4(other, clip[:6], fps=12)
    code, out, err = run_cli("interpolate", str(other), "--fps", "24", "-q")
    assert code == 0, err
    frames, fps = read_video(tmp_path / "other-24fps.mp4")
    assert frames.shape == (11, 72, 96, 3) and fps == 24.0


def test_cli_bad_inputs_are_one_line_errors(tmp_path, clip):
    import av

    from stillmotion.video import write

    text = tmp_path / "notes.mp4"
    text.write_text("not a video at all\n")
    empty = tmp_path / "empty.mp4"
    c = av.open(str(empty), "w")  # a header and no frames
    s = c.add_stream("mpeg4", rate=7)
    s.width, s.height, s.pix_fmt = 64, 64, "yuv420p"
    c.start_encoding()
    c.close()
    one = write(clip[:1], tmp_path / "one.mp4", fps=7).path
    good = write(clip[:3], tmp_path / "good.mp4", fps=7).path
    cases = [
        ((str(text),), "not a video"),
        ((str(empty),), "video"),
        ((str(one),), "at least 2"),
        ((str(good), "--factor", "1"), "factor must be 2, 3, 4 or 8"),
        ((str(good), "--factor", "100"), "factor must be 2, 3, 4 or 8"),
        ((str(good), "--fps", "5"), "higher than"),
        ((str(tmp_path / "missing.mp4"),), "No video"),
    ]
    for args, words in cases:
        code, out, err = run_cli("interpolate", *args, "-o", str(tmp_path / "x.mp4"))
        assert code == 2, (args, err)
        assert err.startswith("error: ") and err.count("\n") == 1 and words in err, (args, err)
    assert not (tmp_path / "x.mp4").exists()


def test_generate_flags_reach_the_spec():
    """`--loop` alone means blend; the interpolation flags land in GenerationSpec fields."""
    import click

    from stillmotion.cli.options import pop_spec_fields, spec_options

    seen = {}

    @click.command()
    @spec_options
    def cmd(**kw):
        seen.update(pop_spec_fields(kw))

    cmd.main(["--loop", "--interpolate-fps", "24", "--interpolate-backend", "rife"], standalone_mode=False)
    assert seen == {"loop": "blend", "interpolate_fps": 24.0, "interpolate_backend": "rife"}
    assert GenerationSpec.build(**seen).loop == "blend"
    cmd.main(["--loop", "pingpong", "--duration", "10"], standalone_mode=False)
    assert seen["loop"] == "pingpong" and seen["duration"] == 10.0
