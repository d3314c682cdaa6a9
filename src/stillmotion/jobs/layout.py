"""A job's folder under the data folder: the one place that knows its layout.

    DATA/jobs/ID/input.EXT          the image (Job.input_name)                      server/submit.py writes
    DATA/jobs/ID/end_image.EXT      keyframes: the image the video ends on           server/submit.py writes
    DATA/jobs/ID/record.json        what the request asks beyond the spec: batch,    server/submit.py writes
                                    output_name, lora, lora_scale
    DATA/jobs/ID/NAME.FORMAT        the video (NAME: output_name, else the job id)   jobs/worker.py writes
    DATA/jobs/ID/NAME.json          its sidecar; a png job's frames also as NAME.zip
    DATA/jobs/ID/NAME.wav           the soundtrack beside a gif/webp/png video (mp4 and webm carry it inside)
    DATA/jobs/ID/audio.EXT          a soundtrack for the model to follow (--audio)   server/submit.py writes

The worker reads the inputs back (read_record, find_end_image) and records the outputs (output_record);
the API and the UI serve them; deleting a job (a client, or retention) removes the folder.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Optional

from ..util import atomic_path

INPUT = "input"  # the image is kept as input.<ext>
END_IMAGE = "end_image"  # a job's end image (keyframes) is kept as end_image.<ext> beside its input
AUDIO = "audio"  # a job's soundtrack to follow (--audio) is kept as audio.<ext> beside its input
RECORD_FILE = "record.json"  # the request's keys beyond the spec (the `batch` of `stillmotion batch --server`, ...)


def job_dir(data_dir: Path, job_id: str) -> Path:
    return Path(data_dir) / "jobs" / job_id


def write_record(folder: Path, record: dict) -> None:
    (Path(folder) / RECORD_FILE).write_text(json.dumps(record))


def read_record(folder: Path) -> dict:
    """The job's record.json, or {} when the request had nothing beyond the spec."""
    path = Path(folder) / RECORD_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def find_end_image(folder: Path) -> Optional[Path]:
    """The job's end image (keyframes), or None."""
    return next(iter(sorted(Path(folder).glob(END_IMAGE + ".*"))), None)


def find_audio(folder: Path) -> Optional[Path]:
    """The job's soundtrack to follow (--audio), or None."""
    return next(iter(sorted(Path(folder).glob(AUDIO + ".*"))), None)


def output_record(artifact, folder: Path) -> dict:
    """The job's `output` (Job.output) for a video written in its folder: the file the API serves (a png job's
    frames zipped into NAME.zip beside their folder), its sidecar's name, its size and the artifact's fields."""
    path = Path(artifact.path)
    name = path.name
    if artifact.format == "png":  # a folder of frames is served as one zip
        zpath = Path(folder) / f"{path.name}.zip"
        with atomic_path(zpath) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as z:
            for f in sorted(path.iterdir()):
                z.write(f, f.name)
        name = zpath.name
    d = artifact.to_dict()
    d.pop("path", None)
    d["file"] = name
    d["sidecar"] = Path(artifact.sidecar).name if artifact.sidecar else None
    d["audio"] = Path(artifact.audio).name if artifact.audio else None  # NAME.wav beside a gif/webp/png video
    d["bytes"] = (Path(folder) / name).stat().st_size
    return d
