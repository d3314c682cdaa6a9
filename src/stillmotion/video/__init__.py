"""Video output: write frames to mp4/webm/gif/webp/png atomically with a sidecar,
and read videos back. See writers.py for the per-format details."""

from stillmotion.video.audio import Audio, read_audio
from stillmotion.video.metadata import SIDECAR_SCHEMA, read_sidecar, sidecar_path
from stillmotion.video.reader import read_video
from stillmotion.video.writers import CONTENT_TYPES, FORMATS, QUALITY, Artifact, format_from_path, write

__all__ = [
    "Audio",
    "read_audio",
    "FORMATS",
    "CONTENT_TYPES",
    "QUALITY",
    "SIDECAR_SCHEMA",
    "Artifact",
    "write",
    "format_from_path",
    "sidecar_path",
    "read_sidecar",
    "read_video",
]
