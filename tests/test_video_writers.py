"""stillmotion.video: every format decodes to what was asked, writes are atomic,
sidecars round-trip, and read_video decodes ours and refuses what is not a video."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from stillmotion.errors import InvalidInput, InvalidVideo, NotFound
from stillmotion.video import (
    CONTENT_TYPES,
    FORMATS,
    SIDECAR_SCHEMA,
    Artifact,
    format_from_path,
    read_sidecar,
    read_video,
    sidecar_path,
    write,
)

META = {"spec": {"fps": 7, "seed": 1234, "model": "tiny"}, "seed": 1234, "device": "cpu", "timings": {"total_s": 0.5}}


def make_frames(t=8, h=48, w=64, seed=0) -> np.ndarray:
    """Smooth moving gradients plus a little noise: codecs keep them recognisable."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    frames = np.empty((t, h, w, 3), np.uint8)
    for i in range(t):
        frames[i, ..., 0] = (x * 4 + i * 10) % 256
        frames[i, ..., 1] = (y * 4 + i * 5) % 256
        frames[i, ..., 2] = 128
    return np.clip(frames.astype(np.int16) + rng.integers(-8, 9, frames.shape), 0, 255).astype(np.uint8)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp-" in p.name or ".old-" in p.name)


def top_level_boxes(path: Path) -> list[tuple[str, int]]:
    """(type, offset) of the MP4's top-level boxes, in file order."""
    data = path.read_bytes()
    boxes, offset = [], 0
    while offset + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[offset : offset + 8])
        if size == 1:
            size = struct.unpack(">Q", data[offset + 8 : offset + 16])[0]
        elif size == 0:
            size = len(data) - offset
        boxes.append((kind.decode("latin-1"), offset))
        offset += size
    return boxes


class FailingFrames(np.ndarray):
    """A frames array whose 3rd frame raises, as if the producer died mid-write."""

    error: type[BaseException] = RuntimeError

    def __getitem__(self, index):
        if isinstance(index, (int, np.integer)) and index >= 2:
            raise self.error("frame 2 failed")
        return super().__getitem__(index)


# --- each format decodes to exactly what was asked --------------------------------------


@pytest.mark.parametrize("h,w", [(48, 64), (47, 63)])
def test_mp4_is_browser_h264_with_exact_fps_and_our_json(tmp_path, h, w):
    frames = make_frames(8, h, w)
    art = write(frames, tmp_path / "photo.mp4", fps=7, metadata=META)

    assert isinstance(art, Artifact)
    assert (art.path, art.format, art.frames, art.fps) == (tmp_path / "photo.mp4", "mp4", 8, 7.0)
    assert (art.width, art.height) == (64, 48)  # odd sizes padded by one pixel
    assert art.bytes == art.path.stat().st_size > 0
    with av.open(str(art.path)) as c:
        stream = c.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert stream.codec_context.pix_fmt == "yuv420p"
        assert stream.average_rate == 7
        decoded = [f.to_ndarray(format="rgb24") for f in c.decode(stream)]
        comment = json.loads(c.metadata["comment"])
    assert len(decoded) == 8 and decoded[0].shape == (48, 64, 3)
    assert comment["schema"] == SIDECAR_SCHEMA
    assert comment["spec"] == META["spec"] and comment["seed"] == 1234
    assert comment["output"]["frames"] == 8 and comment["output"]["fps"] == 7.0
    # the picture survives encoding (and the padding repeats the edge)
    assert np.abs(decoded[3][:h, :w].astype(int) - frames[3]).mean() < 6
    if w % 2:
        assert np.abs(decoded[3][:h, w].astype(int) - decoded[3][:h, w - 1]).mean() < 6

    kinds = [k for k, _ in top_level_boxes(art.path)]
    assert kinds.index("moov") < kinds.index("mdat")  # +faststart


@pytest.mark.parametrize("fps", [Fraction(30000, 1001), 29.97, 7.5, 24])
def test_mp4_fractional_and_integer_fps_are_the_stream_rate(tmp_path, fps):
    art = write(make_frames(4), tmp_path / "clip.mp4", fps=fps, sidecar=False)
    with av.open(str(art.path)) as c:
        rate = c.streams.video[0].average_rate
    assert float(rate) == pytest.approx(float(fps), rel=1e-6)
    assert art.sidecar is None and not sidecar_path(art.path).exists()


def test_webm_is_vp9_yuv420p(tmp_path):
    art = write(make_frames(8, 47, 63), tmp_path / "photo.webm", fps=7, metadata=META)
    with av.open(str(art.path)) as c:
        stream = c.streams.video[0]
        assert stream.codec_context.name == "vp9"
        assert stream.codec_context.pix_fmt == "yuv420p"
        assert float(stream.average_rate) == 7
        decoded = [f.to_ndarray(format="rgb24") for f in c.decode(stream)]
    assert len(decoded) == 8 and decoded[0].shape == (48, 64, 3)
    assert (art.width, art.height, art.fps) == (64, 48, 7.0)


@pytest.mark.parametrize("fmt", ["gif", "webp"])
@pytest.mark.parametrize("h,w", [(48, 64), (47, 63)])
def test_gif_and_webp_loop_forever_at_the_asked_rate(tmp_path, fmt, h, w):
    art = write(make_frames(8, h, w), tmp_path / f"photo.{fmt}", fps=7, metadata=META)
    assert (art.frames, art.width, art.height, art.fps) == (8, w, h, 7.0)
    with Image.open(art.path) as im:
        assert im.format == fmt.upper() and im.size == (w, h) and im.n_frames == 8
        assert im.info.get("loop") == 0
        durations = []
        for i in range(im.n_frames):
            im.seek(i)
            im.load()
            durations.append(im.info["duration"])
    # the whole animation lasts 8/7 s (GIF counts in 1/100 s)
    assert sum(durations) == pytest.approx(8000 / 7, abs=10 if fmt == "gif" else 1)
    frames, fps = read_video(art.path)
    assert frames.shape == (8, h, w, 3) and fps == 7.0


def test_png_folder_holds_the_exact_frames(tmp_path):
    frames = make_frames(8, 47, 63)
    art = write(frames, tmp_path / "frames", fps=7, format="png", metadata=META)
    assert art.path == tmp_path / "frames" and art.path.is_dir()
    assert art.sidecar == tmp_path / "frames.json"
    names = sorted(p.name for p in art.path.iterdir())
    assert names == [f"frame_{i:05d}.png" for i in range(8)]
    for i, name in enumerate(names):
        assert np.array_equal(np.asarray(Image.open(art.path / name).convert("RGB")), frames[i])
    assert art.bytes == sum(p.stat().st_size for p in art.path.iterdir())
    assert read_sidecar(art.sidecar)["output"]["fps"] == 7.0
    # "photo.png" names the folder "photo"
    assert write(frames[:2], tmp_path / "photo.png", fps=7).path == tmp_path / "photo"


# --- the sidecar ------------------------------------------------------------------------


def test_sidecar_has_the_metadata_and_the_output(tmp_path):
    art = write(make_frames(), tmp_path / "out" / "photo.mp4", fps=7, metadata=META)  # parent created
    assert art.sidecar == tmp_path / "out" / "photo.json"
    text = art.sidecar.read_text()
    assert "\n  " in text  # pretty
    data = read_sidecar(art.sidecar)
    assert data == json.loads(text)
    assert data["schema"] == SIDECAR_SCHEMA
    for key, value in META.items():
        assert data[key] == value
    assert data["output"] == {
        "file": "photo.mp4", "format": "mp4", "frames": 8, "width": 64, "height": 48, "fps": 7.0, "bytes": art.bytes,
    }
    assert read_sidecar(art.path) == data  # the video's path finds its sidecar
    assert art.to_dict()["content_type"] == "video/mp4"
    assert json.loads(json.dumps(art.to_dict()))["bytes"] == art.bytes


def test_read_sidecar_explains_what_is_wrong(tmp_path):
    with pytest.raises(InvalidInput, match="No sidecar"):
        read_sidecar(tmp_path / "missing.json")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(InvalidInput, match="not valid JSON"):
        read_sidecar(tmp_path / "broken.json")
    (tmp_path / "other.json").write_text('{"name": "some other tool"}')
    with pytest.raises(InvalidInput, match="not a stillmotion sidecar"):
        read_sidecar(tmp_path / "other.json")


def test_metadata_that_is_not_json_fails_before_any_file(tmp_path):
    meta = {"path": Path("/x"), "n": np.int64(3), "bad": object()}
    with pytest.raises(InvalidInput, match="JSON"):
        write(make_frames(2), tmp_path / "photo.mp4", fps=7, metadata=meta)
    assert list(tmp_path.iterdir()) == []
    del meta["bad"]
    art = write(make_frames(2), tmp_path / "photo.mp4", fps=7, metadata=meta)
    assert read_sidecar(art.sidecar)["n"] == 3


# --- names and formats ------------------------------------------------------------------


def test_format_and_names():
    assert format_from_path(".mp4") == "mp4"
    assert format_from_path("a/b/Photo.WEBM") == "webm"
    assert format_from_path("photo") is None
    assert format_from_path("photo.mov") is None
    assert sidecar_path("a/photo.mp4") == Path("a/photo.json")
    assert sidecar_path("out") == Path("out.json")
    assert set(CONTENT_TYPES) == set(FORMATS)


def test_no_suffix_means_mp4_and_contradictions_are_refused(tmp_path):
    art = write(make_frames(2), tmp_path / "photo", fps=7)
    assert art.path == tmp_path / "photo.mp4" and art.format == "mp4"
    assert write(make_frames(2), tmp_path / "clip", fps=7, format="gif").path == tmp_path / "clip.gif"
    with pytest.raises(InvalidInput, match="format is 'webm'"):
        write(make_frames(2), tmp_path / "photo.mp4", fps=7, format="webm")
    with pytest.raises(InvalidInput, match="Cannot tell the video format"):
        write(make_frames(2), tmp_path / "photo.mov", fps=7)
    with pytest.raises(InvalidInput, match="Unknown format"):
        write(make_frames(2), tmp_path / "photo", fps=7, format="avi")


@pytest.mark.parametrize(
    "frames,kwargs,match",
    [
        (np.zeros((2, 8, 8, 3), np.float32), {}, "uint8"),
        (np.zeros((8, 8, 3), np.uint8), {}, "shape"),
        (np.zeros((0, 8, 8, 3), np.uint8), {}, "empty"),
        (np.zeros((2, 8, 8, 3), np.uint8), {"fps": 0}, "fps"),
        (np.zeros((2, 8, 8, 3), np.uint8), {"fps": "fast"}, "fps"),
        (np.zeros((2, 8, 8, 3), np.uint8), {"quality": 99}, "0..51"),
    ],
)
def test_bad_arguments_are_invalid_input(tmp_path, frames, kwargs, match):
    with pytest.raises(InvalidInput, match=match):
        write(frames, tmp_path / "x.mp4", **{"fps": 7, **kwargs})
    assert list(tmp_path.iterdir()) == []


def test_unwritable_place_is_invalid_input_naming_the_path(tmp_path):
    (tmp_path / "afile").write_text("not a folder")
    with pytest.raises(InvalidInput, match="afile"):
        write(make_frames(2), tmp_path / "afile" / "photo.mp4", fps=7)
    (tmp_path / "adir.mp4").mkdir()
    with pytest.raises(InvalidInput, match="is a folder"):
        write(make_frames(2), tmp_path / "adir.mp4", fps=7)


# --- atomic writes ------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_failure_mid_write_leaves_nothing_and_keeps_the_old_output(tmp_path, fmt):
    old = write(make_frames(3, seed=1), tmp_path / f"photo.{fmt}", fps=5, metadata={"run": "old"})
    before = sorted(p.name for p in tmp_path.iterdir())
    old_bytes = old.bytes

    bad = make_frames(8).view(FailingFrames)
    with pytest.raises(RuntimeError, match="frame 2 failed"):
        write(bad, tmp_path / f"photo.{fmt}", fps=7, metadata={"run": "new"})

    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert leftovers(tmp_path) == []
    assert read_sidecar(old.sidecar)["run"] == "old"
    if fmt == "png":
        assert len(list(old.path.iterdir())) == 3
    else:
        assert old.path.stat().st_size == old_bytes
        assert len(read_video(old.path)[0]) == 3


def test_ctrl_c_mid_write_leaves_nothing(tmp_path):
    class Interrupted(FailingFrames):
        error = KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write(make_frames(8).view(Interrupted), tmp_path / "new" / "photo.mp4", fps=7)
    assert list((tmp_path / "new").iterdir()) == []


def test_png_folder_replaces_only_our_frames(tmp_path):
    write(make_frames(5), tmp_path / "frames", fps=7, format="png")
    art = write(make_frames(3), tmp_path / "frames", fps=7, format="png")
    assert len(list(art.path.iterdir())) == 3 and leftovers(tmp_path) == []

    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(InvalidInput, match="other than frames"):
        write(make_frames(3), tmp_path / "mine", fps=7, format="png")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


# --- reading ------------------------------------------------------------------------------


def test_read_video_decodes_our_mp4(tmp_path):
    frames = make_frames(8)
    art = write(frames, tmp_path / "photo.mp4", fps=7)
    decoded, fps = read_video(art.path)
    assert decoded.dtype == np.uint8 and decoded.shape == (8, 48, 64, 3) and fps == 7.0
    assert np.abs(decoded.astype(int) - frames).mean() < 6
    first, _ = read_video(art.path, max_frames=3)
    assert first.shape == (3, 48, 64, 3)


def test_read_video_refuses_what_is_not_a_video(tmp_path):
    (tmp_path / "notes.mp4").write_text("hello, not a video")
    with pytest.raises(InvalidVideo):
        read_video(tmp_path / "notes.mp4")
    Image.new("RGB", (16, 16)).save(tmp_path / "still.png")
    with pytest.raises(InvalidVideo, match="still image"):
        read_video(tmp_path / "still.png")
    (tmp_path / "empty.webm").write_bytes(b"")
    with pytest.raises(InvalidVideo):
        read_video(tmp_path / "empty.webm")
    with pytest.raises(NotFound):
        read_video(tmp_path / "missing.mp4")


def test_importing_stillmotion_video_does_not_load_pyav():
    code = "import sys, stillmotion.video; print('av' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


@pytest.mark.parametrize("fmt", ["mp4", "webm"])
def test_same_frames_give_byte_identical_video_whatever_the_run_time(tmp_path, fmt):
    """created/timings differ between runs: they go to NAME.json, not into the video's bytes
    (and WebM's container carries no random segment id or date)."""
    frames = np.random.default_rng(3).integers(0, 255, (4, 32, 32, 3), dtype=np.uint8)
    a = write(frames, tmp_path / "a" / f"v.{fmt}", fps=7, metadata={"seed": 1, "created": "x", "timings": {"total": 1.0}})
    b = write(frames, tmp_path / "b" / f"v.{fmt}", fps=7, metadata={"seed": 1, "created": "y", "timings": {"total": 2.0}})
    assert a.path.read_bytes() == b.path.read_bytes()
    assert json.loads(b.sidecar.read_text())["timings"] == {"total": 2.0}
