"""The encoders behind writers.write(): frames (uint8 T,H,W,3 RGB) into one file (or folder) at a path.

They write where they are told; writers.py makes that a temp name and handles
atomic replacement, sidecars and errors. See writers.py for the format notes.
"""

from __future__ import annotations

from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

FRAME_NAME = "frame_{:05d}.png"


def _padded_frames(frames, even: bool) -> Iterator:
    """Frame by frame, C-contiguous, padded to even sizes if asked (edge-replicate)."""
    import numpy as np

    _, h, w, _ = frames.shape
    pad = ((0, h % 2), (0, w % 2), (0, 0)) if even else None
    for i in range(len(frames)):
        frame = np.ascontiguousarray(frames[i])
        if pad is not None and (h % 2 or w % 2):
            frame = np.pad(frame, pad, mode="edge")
        yield frame


def write_av(path: Path, frames, fmt: str, rate: Fraction, crf: int, comment: str, audio=None) -> None:
    """H.264 mp4 or VP9 webm; with `audio` (video.audio.Audio) an AAC or Opus track muxed beside the picture."""
    import av

    from .audio import add_track

    if fmt == "mp4":
        codec = "libx264"
        container_options = {"movflags": "+faststart"}
        # A seed must give the same video, byte for byte (--from, batch resume), so x264 runs
        # deterministically: one thread (frame threads gave a different frame now and then
        # under load). And for tiny clips no macroblock-tree rate control: on 4 frames at 64x64,
        # encoded in a process that had run the model, mbtree gave a different first frame in
        # most trial processes (none with mbtree=0; none at 6, 8 or 14 frames or at 128x128 and up).
        # Off everywhere it would cost ~50% more bytes at the same CRF on a real clip.
        codec_options = {"crf": str(crf), "preset": "medium", "threads": "1"}
        if len(frames) < 8 or frames.shape[1] * frames.shape[2] < 128 * 128:
            codec_options["x264-params"] = "mbtree=0"
    else:
        codec = "libvpx-vp9"
        # bitexact: no random Matroska SegmentUID or write date, so the same frames give the same file
        # (the VP9 stream itself is already deterministic with row-mt)
        container_options = {"fflags": "+bitexact"}
        # b:v 0 makes crf a constant-quality target; row-mt uses the cores.
        codec_options = {"crf": str(crf), "b:v": "0", "deadline": "good", "cpu-used": "4", "row-mt": "1"}

    _, h, w, _ = frames.shape
    container = av.open(str(path), mode="w", format=fmt, options=container_options)
    finished = False
    try:
        container.metadata["comment"] = comment
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height = w + w % 2, h + h % 2
        stream.pix_fmt = "yuv420p"
        ctx = stream.codec_context
        ctx.time_base = 1 / rate  # one tick per frame: 7 fps plays at exactly 7 fps
        ctx.colorspace = ctx.color_primaries = ctx.color_trc = 1  # BT.709
        ctx.color_range = 1  # limited ("tv") range, what players expect
        ctx.options = codec_options
        if audio is not None:
            add_track(container, audio, fmt)()  # the sound first: the muxer interleaves by timestamp
        for i, array in enumerate(_padded_frames(frames, even=True)):
            frame = av.VideoFrame.from_ndarray(array, format="rgb24")
            frame = frame.reformat(format="yuv420p", dst_colorspace="ITU709", dst_color_range="MPEG")
            frame.pts = i
            frame.time_base = ctx.time_base
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
        finished = True
    finally:
        try:
            container.close()  # writes the trailer (and moves moov first for mp4)
        except Exception:
            if finished:
                raise


def _pil_frames(frames) -> list:
    from PIL import Image

    return [Image.fromarray(a, "RGB") for a in _padded_frames(frames, even=False)]


def write_gif(path: Path, frames, rate: Fraction) -> None:
    from PIL import Image

    # A 256-colour palette per frame. Fast octree, dithered: Pillow's default
    # median cut is ~25x slower (12 s for 25 frames at 1024x576) for no visible gain.
    images = [
        im.quantize(256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.FLOYDSTEINBERG)
        for im in _pil_frames(frames)
    ]
    # GIF delays are whole 1/100 s: round the frame *times* so the total stays exact.
    step = Fraction(100) / rate
    ticks = [round(step * (i + 1)) - round(step * i) for i in range(len(images))]
    durations = [10 * max(t, 2) for t in ticks]
    images[0].save(
        path,
        format="GIF",
        save_all=True,
        append_images=images[1:],
        duration=durations,
        loop=0,
        disposal=1,
    )


def write_webp(path: Path, frames, rate: Fraction, quality: int) -> None:
    images = _pil_frames(frames)
    images[0].save(
        path,
        format="WEBP",
        save_all=True,
        append_images=images[1:],
        duration=1000 / float(rate),  # Pillow rounds the running timestamp, so the total stays exact
        loop=0,
        quality=quality,
        method=4,
    )


def write_png_folder(path: Path, frames) -> None:
    from PIL import Image

    path.mkdir()
    for i, array in enumerate(_padded_frames(frames, even=False)):
        Image.fromarray(array, "RGB").save(path / FRAME_NAME.format(i), format="PNG", compress_level=4)
