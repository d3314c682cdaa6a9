"""`stillmotion generate` end to end: output files, --json, --from, and the bad-input table."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import av
import numpy as np
import pytest
from conftest import run_cli

FAST = ["--model", "tiny", "--frames", "4", "--steps", "2", "--width", "64", "--height", "64"]


def _decode(path: Path):
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(s)]
        return s, frames


def test_generate_writes_h264_mp4_and_sidecar(tmp_path, image_file):
    out = tmp_path / "clip.mp4"
    code, stdout, err = run_cli("generate", str(image_file), "-o", str(out), "--seed", "11", "--fps", "8", "--json", *FAST)
    assert code == 0, err
    line = json.loads(stdout.strip().splitlines()[-1])
    assert line["output"] == str(out) and line["seed"] == 11 and line["frames"] == 4
    stream, frames = _decode(out)
    assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"
    assert len(frames) == 4 and frames[0].shape == (64, 64, 3)
    assert float(stream.average_rate) == 8
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["seed"] == 11 and side["spec"]["num_frames"] == 4 and side["model"]["name"] == "tiny"


def test_from_sidecar_reproduces_the_video(tmp_path, image_file):
    first = tmp_path / "a.mp4"
    assert run_cli("generate", str(image_file), "-o", str(first), *FAST)[0] == 0
    again = tmp_path / "b.mp4"
    code, _, err = run_cli("generate", "--from", str(first.with_suffix(".json")), "-o", str(again))
    assert code == 0, err
    assert np.array_equal(np.stack(_decode(first)[1]), np.stack(_decode(again)[1]))
    assert json.loads(again.with_suffix(".json").read_text())["seed"] == json.loads(first.with_suffix(".json").read_text())["seed"]


def test_output_format_follows_the_suffix(tmp_path, image_file):
    out = tmp_path / "clip.gif"
    code, _, err = run_cli("generate", str(image_file), "-o", str(out), *FAST)
    assert code == 0, err
    from PIL import Image

    with Image.open(out) as im:
        assert im.format == "GIF" and im.n_frames == 4


def _png_header_only(w: int, h: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    iend = struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND"))
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk)) + iend


def _bad_inputs(tmp_path: Path, image_file: Path):
    """(name, argv, exit code, words the message must contain)."""
    text = tmp_path / "notes.png"
    text.write_text("this is not an image\n")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    truncated = tmp_path / "trunc.jpg"
    from PIL import Image

    Image.fromarray(np.random.default_rng(0).integers(0, 255, (128, 128, 3), dtype=np.uint8)).save(truncated, quality=95)
    truncated.write_bytes(truncated.read_bytes()[:1500])
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_header_only(100000, 100000))
    tiny = tmp_path / "one.png"
    Image.new("RGB", (1, 1)).save(tiny)
    img = str(image_file)
    return [
        ("missing file", [str(tmp_path / "nope.jpg")], 2, "nope.jpg"),
        ("directory", [str(tmp_path)], 2, "folder"),
        ("empty file", [str(empty)], 2, "empty"),
        ("text renamed .png", [str(text)], 2, "not an image"),
        ("truncated jpeg", [str(truncated)], 2, "truncated"),
        ("100000x100000 png", [str(bomb)], 2, "too large"),
        ("1x1 image", [str(tiny)], 2, "1x1"),
        ("unreachable url", ["http://127.0.0.1:9/x.jpg"], 2, "127.0.0.1"),
        ("file url", ["file:///etc/passwd"], 2, "http"),
        ("frames 0", [img, "--frames", "0"], 2, "num_frames"),
        ("steps 500", [img, "--steps", "500"], 2, "num_inference_steps"),
        ("width 1000", [img, "--width", "1000"], 2, "multiple of 16"),
        ("width 1008 on SVD", [img, "--width", "1008"], 2, "SVD sizes are multiples of 64"),
        ("motion 5000", [img, "--motion", "5000"], 2, "motion_bucket_id"),
        ("unknown model", [img, "--model", "svd-mega"], 3, "svd-mega"),
    ]


def test_bad_inputs_give_one_line_errors_and_no_output(tmp_path, image_file):
    cases = _bad_inputs(tmp_path, image_file)
    for name, argv, want_code, words in cases:
        out = tmp_path / "out" / f"{name.replace(' ', '_')}.mp4"
        args = ["generate", *argv, "-o", str(out)]
        if "--model" not in argv:
            args += ["--model", "tiny"]
        code, stdout, err = run_cli(*args)
        lines = [ln for ln in err.strip().splitlines() if ln.strip()]
        assert code == want_code, f"{name}: exit {code}, stderr {err!r}"
        assert len(lines) == 1 and lines[0].startswith("error: "), f"{name}: {err!r}"
        assert words.lower() in lines[0].lower(), f"{name}: {lines[0]!r}"
        assert "Traceback" not in err
        assert not out.exists() and not out.with_suffix(".json").exists(), name
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_truncated_weight_file_is_model_unavailable(tmp_path, image_file):
    from stillmotion.models.tiny import save_tiny

    folder = save_tiny(tmp_path / "broken")
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    code, _, err = run_cli("generate", str(image_file), "--model", str(folder), "-o", str(tmp_path / "x.mp4"))
    assert code == 3, err
    assert "models verify" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("help_args", [["--help"], ["generate", "--help"]])
def test_help_is_instant_and_lists_flags(help_args):
    code, out, _ = run_cli(*help_args)
    assert code == 0
    if help_args == ["--help"]:
        assert "generate" in out
    else:
        for flag in ("--frames", "--steps", "--fps", "--motion", "--noise-aug", "--min-cfg", "--max-cfg",
                     "--decode-chunk", "--seed", "--width", "--height", "--resize", "--format", "--json", "--from"):
            assert flag in out
