"""A video's soundtrack: the one type every layer passes audio in (a family's decode makes it, the engine
carries it in GenerationResult.audio, the writers mux it or write it beside the file)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Audio:
    """float32 samples in [-1, 1], shape (channels, n), played at `rate` Hz from the video's first frame."""

    samples: np.ndarray
    rate: int

    def __post_init__(self):
        s = np.asarray(self.samples, dtype=np.float32)
        if s.ndim == 1:
            s = s[None, :]
        if s.ndim != 2 or s.shape[0] not in (1, 2):
            raise ValueError(f"audio samples must be (channels, n) with 1 or 2 channels, got shape {s.shape}")
        object.__setattr__(self, "samples", s)
        object.__setattr__(self, "rate", int(self.rate))

    @property
    def channels(self) -> int:
        return self.samples.shape[0]

    @property
    def seconds(self) -> float:
        return self.samples.shape[1] / self.rate
