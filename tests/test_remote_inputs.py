"""`stillmotion batch s3://bucket/prefix OUT` (plain and --ray) against a real S3 API on 127.0.0.1 (moto's server).

The same tree is uploaded to the bucket and kept on local disk: the remote batch must pick the
same images, give them the same names and seeds, and make the same videos. Tiny model, 64x64,
2 frames, 2 steps.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli
from PIL import Image

from stillmotion.batch import plan_batch

pytest.importorskip("pyarrow.fs", reason="remote inputs need pyarrow: pip install 'stillmotion[ray]'")

FAST = ["--model", "tiny", "--device", "cpu", "--width", "64", "--height", "64", "--frames", "2", "--steps", "2", "-q"]
SPEC = {"width": 64, "height": 64, "num_frames": 2, "num_inference_steps": 2}
IMAGES = ["top.png", "a/dog.png", "a/b/cat.jpg", "a/my cat#1.png"]  # the last one needs percent-encoding
NOT_IMAGES = ["a/notes.txt"]
HIDDEN = [".dotfile.png", ".cache/h.png"]


def _image_bytes(seed: int, fmt: str) -> bytes:
    import io

    arr = np.random.default_rng(seed).integers(0, 255, (80, 96, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


def _tree() -> dict[str, bytes]:
    files = {key: _image_bytes(n, "JPEG" if key.endswith(".jpg") else "PNG") for n, key in enumerate(IMAGES + HIDDEN)}
    files.update({key: b"not an image" for key in NOT_IMAGES})
    return files


@pytest.fixture(scope="module")
def s3(s3_server, tmp_path_factory):
    """The tree under s3://bucket/images on the session's moto S3 server (conftest.s3_server, which also
    sets the AWS_* variables that arrow, boto3 and Ray's workers read), and the same tree on local disk."""
    import boto3

    local = tmp_path_factory.mktemp("local") / "images"
    client = boto3.client("s3")
    if "bucket" not in [b["Name"] for b in client.list_buckets().get("Buckets", [])]:  # test_ray.py uses it too
        client.create_bucket(Bucket="bucket")
    for key, data in _tree().items():
        client.put_object(Bucket="bucket", Key=f"images/{key}", Body=data)
        (local / key).parent.mkdir(parents=True, exist_ok=True)
        (local / key).write_bytes(data)
    client.put_object(Bucket="bucket", Key="texts/readme.txt", Body=b"no images here")
    client.put_object(Bucket="bucket", Key="empty/", Body=b"")  # a folder marker, as S3 consoles make
    return type("S3", (), {"local": local, "uri": "s3://bucket/images"})


def _videos(out: Path) -> dict[str, Path]:
    return {p.relative_to(out).as_posix(): p for p in sorted(out.rglob("*.mp4"))}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _stream(path: Path) -> tuple[str, dict]:
    """sha256 of the encoded H.264 packets, and the container's comment tag (our metadata)."""
    import av

    digest = hashlib.sha256()
    with av.open(str(path)) as container:
        comment = json.loads(container.metadata["comment"])
        for packet in container.demux(video=0):
            digest.update(bytes(packet))
    return digest.hexdigest(), comment


def _named(plan) -> list[tuple]:
    return [(i.key, i.seed, i.output) for i in plan.items]


def _report(out: Path) -> dict:
    return json.loads((out / "batch-report.json").read_text())


# --------------------------------------------------------------------------- planning


def test_s3_plan_matches_local_plan(s3, tmp_path):
    remote = plan_batch(s3.uri, tmp_path / "out", model="tiny", fields=SPEC, recursive=True, seed=5)
    local = plan_batch(s3.local, tmp_path / "out", model="tiny", fields=SPEC, recursive=True, seed=5)
    assert _named(remote) == _named(local) and sorted(i.key for i in remote.items) == sorted(IMAGES)
    assert remote.ignored == local.ignored == NOT_IMAGES
    assert {i.key: i.source for i in remote.items}["a/my cat#1.png"] == "s3://bucket/images/a/my%20cat%231.png"

    top = plan_batch(s3.uri + "/", tmp_path / "out", model="tiny", fields=SPEC)  # not recursive
    assert [i.key for i in top.items] == ["top.png"]


# --------------------------------------------------------------------------- runs


def test_s3_batch_makes_the_local_batch_videos_then_resumes(s3, tmp_path):
    code, _, err = run_cli("batch", str(s3.local), str(tmp_path / "local"), "--recursive", *FAST)
    assert code == 0, err
    code, _, err = run_cli("batch", s3.uri, str(tmp_path / "s3"), "--recursive", *FAST)
    assert code == 0, err

    local, remote = _videos(tmp_path / "local"), _videos(tmp_path / "s3")
    assert sorted(remote) == sorted(local) == sorted(k.rsplit(".", 1)[0] + ".mp4" for k in IMAGES)
    for name in local:
        # The frames and their encoding are the same bytes; the files differ only where the
        # metadata tag records where the image came from (a path here, the s3:// URI there).
        (want_stream, want_meta), (got_stream, got_meta) = _stream(local[name]), _stream(remote[name])
        assert got_stream == want_stream, name
        assert got_meta["input"].pop("source").startswith("s3://bucket/images/")
        want_meta["input"].pop("source")
        assert got_meta == want_meta, name

    report = _report(tmp_path / "s3")
    assert report["input"] == s3.uri and report["counts"]["done"] == len(IMAGES)
    assert report["ignored"] == NOT_IMAGES

    # resume: the same command again makes nothing and leaves the videos as they were
    before = {name: _sha(p) for name, p in remote.items()}
    code, _, err = run_cli("batch", s3.uri, str(tmp_path / "s3"), "--recursive", *FAST)
    assert code == 0, err
    assert _report(tmp_path / "s3")["counts"] == {"done": 0, "skipped": len(IMAGES), "failed": 0, "not_run": 0,
                                                  "total": len(IMAGES)}
    assert {name: _sha(p) for name, p in _videos(tmp_path / "s3").items()} == before


def test_manifest_rows_may_name_s3_objects(s3, tmp_path):
    manifest = tmp_path / "list.csv"
    manifest.write_text(f"image,fps\n{s3.uri}/a/dog.png,5\n{s3.local / 'top.png'},\n")
    plan = plan_batch(manifest, tmp_path / "out", model="tiny", fields=SPEC)
    assert [(i.source, i.output.name, i.requested.get("fps")) for i in plan.items] == [
        (f"{s3.uri}/a/dog.png", "dog.mp4", 5), (str(s3.local / "top.png"), "top.mp4", None)]
    code, _, err = run_cli("batch", str(manifest), str(tmp_path / "out"), *FAST)
    assert code == 0, err
    assert _stream(tmp_path / "out" / "dog.mp4")[1]["spec"]["fps"] == 5


def ray_batch_over_s3_is_byte_identical_to_plain(s3, tmp_path):
    """Run by tests/test_ray.py, on the file's worker that holds the session's Ray cluster."""
    code, _, err = run_cli("batch", s3.uri, str(tmp_path / "plain"), "--recursive", *FAST)
    assert code == 0, err
    code, _, err = run_cli("batch", s3.uri, str(tmp_path / "ray"), "--recursive", *FAST, "--ray", "--actors", "1")
    assert code == 0, err
    plain, viaray = _videos(tmp_path / "plain"), _videos(tmp_path / "ray")
    assert len(plain) == len(IMAGES)
    assert {n: _sha(p) for n, p in viaray.items()} == {n: _sha(p) for n, p in plain.items()}


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(("uri", "words"), [
    ("s3://no-such-bucket/images", "bucket does not exist"),
    ("s3://bucket/nothing-here", "does not exist or holds no files"),
    ("s3://bucket/texts", "No images found"),
    ("s3://bucket/empty", "No images found"),
    ("s3://bucket/images/top.png", "is a file, not a folder"),
])
def test_s3_input_errors_are_one_line(s3, tmp_path, uri, words):
    code, out, err = run_cli("batch", uri, str(tmp_path / "out"), *FAST)
    assert code == 2
    assert words in err and "Traceback" not in err + out
    assert len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists(), "nothing starts before the inputs are found"


def test_images_read_s3_objects_with_the_byte_limit(s3):
    from stillmotion import images
    from stillmotion.errors import ImageTooLarge, NotFound

    assert images.load_image(s3.uri + "/a/my%20cat%231.png").size == (96, 80)
    with pytest.raises(ImageTooLarge):
        images.load_image(s3.uri + "/top.png", max_bytes=1000)
    with pytest.raises(NotFound):
        images.load_image(s3.uri + "/missing.png")


def test_unreachable_endpoint_is_one_line(s3, tmp_path, monkeypatch):
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    code, out, err = run_cli("batch", s3.uri, str(tmp_path / "out"), *FAST)
    assert code == 2 and "Could not list s3://bucket/images" in err and "AWS_ENDPOINT_URL" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err + out, err


def test_missing_pyarrow_names_the_extra(monkeypatch):
    import sys

    from stillmotion import InvalidInput, remote

    monkeypatch.setitem(sys.modules, "pyarrow.fs", None)  # as if pyarrow were not installed
    with pytest.raises(InvalidInput, match=r"pip install 'stillmotion\[ray\]'"):
        remote.list_files("s3://bucket/images")
