"""What a run reports and returns: Progress while it runs, a RunRecord of what it
did, and the GenerationResult a front end saves. No torch here."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np

from ..spec import GenerationSpec
from ..video.audio import Audio


@dataclass
class Progress:
    """One progress report. `fraction` is the whole run's progress, 0..1."""

    stage: str  # "encode" | "denoise" | "decode" | "postprocess" | "segment"
    step: int
    total: int
    fraction: float
    message: str = ""


ProgressFn = Callable[[Progress], None]
CancelFn = Callable[[], bool]


@dataclass
class RunRecord:
    """What one sampling run (or a chain of them) did, as the sidecar records it.

    `timings` are seconds per stage ("plan", "encode", "denoise", "decode", "step_seconds", ...);
    `memory` is the plan chosen and why; `fallbacks` every out-of-memory step-down (memory.retry_on_oom;
    batch adds its own retry, stage "batch"); `speed` the speed mode's settings and cache statistics;
    `segments`/`long` are set by long-video chaining.
    """

    timings: dict[str, Any] = field(default_factory=dict)
    memory: dict[str, Any] = field(default_factory=dict)
    fallbacks: list[dict] = field(default_factory=list)
    speed: dict[str, Any] = field(default_factory=dict)
    decode_chunk_size: Optional[int] = None
    segments: Optional[list[dict]] = None
    long: Optional[dict] = None
    postprocess: Optional[dict] = None
    keyframes: Optional[dict] = None  # set by keyframe sampling (an end image): method, loop, pairs
    length: Optional[dict] = None  # how a family made the frame count (FramePack: sections, frames trimmed)
    audio: Optional[Audio] = None  # the soundtrack a family made with the frames (LTX-2); not sidecar metadata
    soundtrack: Optional[dict] = None  # a soundtrack given to follow (--audio): the sidecar's audio.given

    def to_metadata(self) -> dict:
        """The sidecar's keys for this run (timings go in separately)."""
        out: dict[str, Any] = {"fallbacks": self.fallbacks, "memory": self.memory, "speed": self.speed,
                               "decode_chunk_size": self.decode_chunk_size}
        for name in ("segments", "long", "postprocess", "keyframes", "length"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.soundtrack is not None and self.audio is not None:  # the writer adds the written track's record
            out["audio"] = {"given": self.soundtrack}
        return out


@dataclass
class GenerationResult:
    frames: np.ndarray  # uint8 (T, H, W, 3) RGB
    fps: float  # playback rate of the file
    spec: GenerationSpec  # resolved: every field concrete, the seed drawn
    metadata: dict = field(default_factory=dict)
    audio: Optional[Audio] = None  # the soundtrack, for families that make one (LTX-2)

    @property
    def seed(self) -> int:
        return self.spec.seed

    @property
    def timings(self) -> dict:
        return self.metadata.get("timings", {})

    def save(self, out, format: Optional[str] = None, sidecar: bool = True):
        """Write the video (atomically) and its sidecar JSON; returns a video.Artifact."""
        from ..video import format_from_path, write

        t = time.perf_counter()
        fmt = format or format_from_path(out) or self.spec.format
        artifact = write(self.frames, out, fps=self.fps, format=fmt, metadata=self.metadata, sidecar=sidecar,
                         audio=self.audio)
        self.metadata.setdefault("timings", {})["write"] = round(time.perf_counter() - t, 4)
        return artifact
