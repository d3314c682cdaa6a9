"""Models: local folders, the hub cache offline, downloads from a hub on loopback, verify, `stillmotion models`.

No test touches the real hub: HF_ENDPOINT points at a closed port, or at a small
HTTP server on 127.0.0.1 that serves the tiny model the way huggingface.co
serves a repo (repo info with LFS hashes, tree listing, resolve URLs).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
from conftest import run_cli

from stillmotion.errors import ModelCorrupted, ModelUnavailable

COMMIT = "0123456789abcdef0123456789abcdef01234567"
XT = "stabilityai/stable-video-diffusion-img2vid-xt"
STILLMOTION_BIN = Path(sys.executable).with_name("stillmotion")


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def tiny_src() -> Path:
    """The tiny model saved with save_pretrained (fp32, no variant) in the session cache; never modified."""
    from stillmotion.models.resolve import resolve

    return resolve("tiny").path


@pytest.fixture(scope="session")
def tiny_fp16_src(tmp_path_factory) -> Path:
    """The tiny model in fp16, saved as a hub repo is: `*.fp16.safetensors` variant files."""
    import torch

    from stillmotion.models.tiny import build_tiny_pipeline

    folder = tmp_path_factory.mktemp("tiny-fp16")
    build_tiny_pipeline().to(torch.float16).save_pretrained(folder, safe_serialization=True, variant="fp16")
    return folder


@pytest.fixture()
def env(tmp_path, monkeypatch, tiny_src):
    """Fresh stillmotion and HF caches; the hub unreachable; tiny already built in the cache."""
    monkeypatch.setenv("STILLMOTION_CACHE", str(tmp_path / "sm"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: nothing listens
    for var in ("HF_HUB_CACHE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_TOKEN_PATH", str(tmp_path / "no-token"))
    shutil.copytree(tiny_src, tmp_path / "sm" / "tiny-v1")
    return tmp_path


def _git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def repo_files(src: Path) -> dict[str, bytes]:
    return {str(p.relative_to(src)): p.read_bytes() for p in sorted(src.rglob("*")) if p.is_file()}


def make_hub_cache(hub: Path, repo_id: str, src: Path, commit: str = COMMIT, ref: str = "main") -> Path:
    """Lay out `src` as huggingface_hub does: blobs/<hash>, snapshots/<commit>/... symlinks, refs/<ref>."""
    repo = hub / ("models--" + repo_id.replace("/", "--"))
    for rel, data in repo_files(src).items():
        is_lfs = rel.endswith(".safetensors")
        blob = repo / "blobs" / (hashlib.sha256(data).hexdigest() if is_lfs else _git_blob_id(data))
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = repo / "snapshots" / commit / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / ref).write_text(commit)
    return repo / "snapshots" / commit


def flip_byte(path: Path, offset: int = -100) -> None:
    with open(path.resolve(), "r+b") as f:
        f.seek(offset, os.SEEK_END if offset < 0 else os.SEEK_SET)
        b = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([b[0] ^ 0x01]))


def truncate(path: Path, by: int = 1000) -> None:
    real = path.resolve()
    os.truncate(real, real.stat().st_size - by)


# --------------------------------------------------------------------------- a hub on loopback
class FakeHub:
    """Serves repos the way huggingface.co does, for huggingface_hub: api/models info + tree, resolve URLs."""

    def __init__(self):
        self.repos: dict[str, dict[str, bytes]] = {}
        self.gated: set[str] = set()
        self.cut_once: set[str] = set()
        self.requests: list[str] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_HEAD(self):
                hub.handle(self, body=False)

            def do_GET(self):
                hub.handle(self, body=True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def _entry(self, rel: str, data: bytes) -> dict:
        sha = hashlib.sha256(data).hexdigest()
        lfs = {"sha256": sha, "oid": sha, "size": len(data), "pointerSize": 134} if rel.endswith(".safetensors") else None
        return {"path": rel, "rfilename": rel, "size": len(data), "oid": _git_blob_id(data), "blobId": _git_blob_id(data), "lfs": lfs}

    def handle(self, h: BaseHTTPRequestHandler, body: bool):
        path = unquote(urlparse(h.path).path)
        self.requests.append(f"{h.command} {path}" + (f" {h.headers['Range']}" if h.headers.get("Range") else ""))
        parts = path.strip("/").split("/")
        if parts[:2] == ["api", "models"]:
            repo_id = "/".join(parts[2:4])
            kind = parts[4] if len(parts) > 4 else "revision"
        else:
            repo_id, kind = "/".join(parts[:2]), parts[2] if len(parts) > 2 else ""
        if repo_id in self.gated:
            return self.reply(h, 401, {"error": "Access to this repo is restricted."}, body, {"X-Error-Code": "GatedRepo"})
        files = self.repos.get(repo_id)
        if files is None:
            return self.reply(h, 404, {"error": "Repository not found"}, body, {"X-Error-Code": "RepoNotFound"})
        if path.startswith("/api/models/") and kind == "revision":
            siblings = [self._entry(rel, data) for rel, data in files.items()]
            for s in siblings:
                s.pop("path")
            return self.reply(h, 200, {"id": repo_id, "sha": COMMIT, "siblings": siblings}, body)
        if path.startswith("/api/models/") and kind == "tree":
            tree = [{"type": "file", **self._entry(rel, data)} for rel, data in files.items()]
            for t in tree:
                t.pop("rfilename")
                t.pop("blobId")
                if t["lfs"]:
                    t["lfs"] = {"oid": t["lfs"]["sha256"], "size": t["lfs"]["size"], "pointerSize": 134}
            return self.reply(h, 200, tree, body)
        if kind == "resolve":
            rel = "/".join(parts[4:])
            if rel not in files:
                return self.reply(h, 404, {"error": "Entry not found"}, body, {"X-Error-Code": "EntryNotFound"})
            data = files[rel]
            etag = hashlib.sha256(data).hexdigest() if rel.endswith(".safetensors") else _git_blob_id(data)
            start = 0
            rng = h.headers.get("Range")
            if rng and rng.startswith("bytes="):
                start = int(rng[6:].split("-")[0] or 0)
            h.send_response(206 if start else 200)
            h.send_header("X-Repo-Commit", COMMIT)
            h.send_header("ETag", f'"{etag}"')
            h.send_header("Content-Length", str(len(data) - start))
            h.end_headers()
            if body and rel in self.cut_once:
                self.cut_once.discard(rel)
                h.wfile.write(data[start : start + (len(data) - start) // 2])
                h.wfile.flush()
                h.close_connection = True
                h.connection.shutdown(socket.SHUT_RDWR)
            elif body:
                h.wfile.write(data[start:])
            return None
        return self.reply(h, 404, {"error": "not found"}, body)

    @staticmethod
    def reply(h, status, obj, body, headers=None):
        raw = json.dumps(obj).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(raw)))
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        if body:
            h.wfile.write(raw)


@pytest.fixture()
def fake_hub(env, monkeypatch, tiny_fp16_src):
    hub = FakeHub()
    files = repo_files(tiny_fp16_src)
    # a real SVD repo also holds fp32 weights and the original checkpoint: they must not be downloaded
    files["unet/diffusion_pytorch_model.safetensors"] = b"fp32 weights we never fetch"
    files["svd_xt.safetensors"] = b"original checkpoint we never fetch"
    files["unet/diffusion_pytorch_model.fp16.bin"] = b"pickle we never fetch"
    hub.repos[XT] = files
    hub.gated.add("stabilityai/stable-video-diffusion-img2vid-xt-1-1")
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    yield hub
    hub.close()


# --------------------------------------------------------------------------- local folders
def test_tiny_saved_with_save_pretrained_loads_back_by_path(env):
    import torch
    from diffusers import StableVideoDiffusionPipeline

    from stillmotion.models.resolve import resolve
    from stillmotion.models.tiny import build_tiny_pipeline

    original = build_tiny_pipeline(seed=3)
    folder = env / "my-model"
    original.save_pretrained(folder, safe_serialization=True)

    local = resolve(str(folder))
    assert local.source == "local" and local.path == folder and local.variant is None
    pipe = StableVideoDiffusionPipeline.from_pretrained(local.path, variant=local.variant, use_safetensors=True)
    for name in ("unet", "vae", "image_encoder"):
        want, got = getattr(original, name).state_dict(), getattr(pipe, name).state_dict()
        assert want.keys() == got.keys()
        assert all(torch.equal(want[k], got[k]) for k in want), name
    assert set(local.weight_hashes()) == {
        "unet/diffusion_pytorch_model.safetensors",
        "vae/diffusion_pytorch_model.safetensors",
        "image_encoder/model.safetensors",
    }


def test_folder_that_is_not_a_diffusers_model_is_refused(env):
    from stillmotion.models.resolve import resolve

    (env / "empty").mkdir()
    with pytest.raises(ModelUnavailable, match="no model_index.json"):
        resolve(str(env / "empty"))


# --------------------------------------------------------------------------- hub cache, offline
def test_hub_cache_loads_offline_through_snapshot_download(env, monkeypatch, tiny_fp16_src):
    import torch
    from diffusers import StableVideoDiffusionPipeline

    from stillmotion.models.resolve import resolve

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    snapshot = make_hub_cache(env / "hf" / "hub", XT, tiny_fp16_src)

    local = resolve("svd-xt")
    assert local.source == "hub" and local.path == snapshot
    assert (local.repo_id, local.revision, local.commit, local.variant) == (XT, "main", COMMIT, "fp16")
    pipe = StableVideoDiffusionPipeline.from_pretrained(
        local.path, variant=local.variant, dtype=torch.float32, use_safetensors=True
    )
    assert pipe.unet.dtype == torch.float32
    fp16 = StableVideoDiffusionPipeline.from_pretrained(tiny_fp16_src, variant="fp16", dtype=torch.float16)
    w = next(iter(fp16.unet.state_dict()))
    assert torch.equal(pipe.unet.state_dict()[w], fp16.unet.state_dict()[w].float())

    code, out, err = run_cli("models", "list", "--json")
    assert code == 0, err
    row = next(r for r in json.loads(out) if r["name"] == "svd-xt")
    assert row["status"] == "cached" and row["commit"] == COMMIT and row["size_bytes"] > 1_000_000


def test_offline_with_nothing_cached_says_what_to_run(env, monkeypatch):
    from stillmotion.models.resolve import resolve

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelUnavailable) as e:
        resolve("svd-xt")
    assert "HF_HUB_OFFLINE" in e.value.message and "stillmotion models download svd-xt" in e.value.message
    assert "\n" not in e.value.message

    code, _, err = run_cli("models", "download", "svd")
    assert code == 3
    assert "stillmotion models download svd" in err and "copy" in err and "Traceback" not in err


def test_unreachable_hub_with_nothing_cached_says_what_to_run(env):
    from stillmotion.models.resolve import resolve

    with pytest.raises(ModelUnavailable, match="unreachable.*stillmotion models download svd-xt"):
        resolve("svd-xt")


def test_incomplete_cache_is_not_used(env, monkeypatch, tiny_fp16_src):
    from stillmotion.models.resolve import resolve

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    snapshot = make_hub_cache(env / "hf" / "hub", XT, tiny_fp16_src)
    (snapshot / "unet" / "diffusion_pytorch_model.fp16.safetensors").unlink()  # an interrupted download
    with pytest.raises(ModelUnavailable, match="not in the Hugging Face cache"):
        resolve("svd-xt")
    code, out, _ = run_cli("models", "list")
    assert code == 0 and "partial" in out


# --------------------------------------------------------------------------- downloads from a hub on loopback
def test_download_fetches_only_fp16_safetensors_and_configs_then_works_offline(fake_hub, env, monkeypatch):
    from stillmotion.models.resolve import resolve
    from stillmotion.models.hashes import hub_manifest_path

    code, out, err = run_cli("models", "download", "svd-xt", "--quiet")
    assert code == 0, err
    snapshot = env / "hf" / "hub" / ("models--" + XT.replace("/", "--")) / "snapshots" / COMMIT
    got = sorted(str(p.relative_to(snapshot)) for p in snapshot.rglob("*") if p.is_file())
    assert got == sorted(
        [
            "model_index.json",
            "feature_extractor/preprocessor_config.json",
            "scheduler/scheduler_config.json",
            "image_encoder/config.json",
            "image_encoder/model.fp16.safetensors",
            "unet/config.json",
            "unet/diffusion_pytorch_model.fp16.safetensors",
            "vae/config.json",
            "vae/diffusion_pytorch_model.fp16.safetensors",
        ]
    )
    assert COMMIT in out
    manifest = json.loads(hub_manifest_path(XT, COMMIT).read_text())
    assert manifest["repo_id"] == XT and manifest["commit"] == COMMIT and manifest["variant"] == "fp16"
    data = fake_hub.repos[XT]["unet/diffusion_pytorch_model.fp16.safetensors"]
    assert manifest["files"]["unet/diffusion_pytorch_model.fp16.safetensors"] == {
        "sha256": hashlib.sha256(data).hexdigest(),
        "size": len(data),
    }

    # from now on the cache is enough: no request reaches the hub
    fake_hub.requests.clear()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve("svd-xt").commit == COMMIT
    monkeypatch.delenv("HF_HUB_OFFLINE")
    assert resolve("svd-xt").commit == COMMIT
    assert fake_hub.requests == []


def test_gated_repo_without_token_says_accept_licence_and_set_hf_token(fake_hub, env):
    code, _, err = run_cli("models", "download", "svd-xt-1-1")
    assert code == 3
    assert "gated" in err and "licence" in err and "HF_TOKEN" in err and "Traceback" not in err


def test_verify_against_hub_and_manifest_then_force_download_repairs(fake_hub, env):
    code, _, err = run_cli("models", "download", "svd-xt", "--quiet")
    assert code == 0, err
    for flag in ("--online", "--offline"):
        code, out, err = run_cli("models", "verify", "svd-xt", flag)
        assert code == 0, err
        assert "all 3 weight files match" in out
    assert "hub's LFS sha256" in run_cli("models", "verify", "svd-xt", "--online")[1]

    snapshot = env / "hf" / "hub" / ("models--" + XT.replace("/", "--")) / "snapshots" / COMMIT
    flip_byte(snapshot / "vae" / "diffusion_pytorch_model.fp16.safetensors")
    for flag in ("--online", "--offline"):
        code, out, err = run_cli("models", "verify", "svd-xt", flag)
        assert code == 3
        assert "vae/diffusion_pytorch_model.fp16.safetensors" in err
        assert "stillmotion models download svd-xt --force" in err
        assert "ALTERED" in out

    code, _, err = run_cli("models", "download", "svd-xt", "--force", "--quiet")
    assert code == 0, err
    code, out, err = run_cli("models", "verify", "svd-xt", "--online")
    assert code == 0, err

    # a weight file deleted from the cache is named as missing, and a plain download puts it back
    (snapshot / "image_encoder" / "model.fp16.safetensors").unlink()
    code, out, err = run_cli("models", "verify", "svd-xt", "--offline")
    assert code == 3 and "image_encoder/model.fp16.safetensors (missing)" in err
    assert run_cli("models", "download", "svd-xt", "--quiet")[0] == 0
    assert run_cli("models", "verify", "svd-xt", "--offline")[0] == 0


def test_connection_dropped_mid_file_is_retried_and_the_result_verifies(fake_hub, env):
    rel = "unet/diffusion_pytorch_model.fp16.safetensors"
    fake_hub.cut_once.add(rel)  # the first GET sends half the bytes, then the connection drops
    code, _, err = run_cli("models", "download", "svd-xt", "--quiet")
    assert code == 0, err
    assert sum(r.startswith("GET ") and f"/{rel}" in r for r in fake_hub.requests) == 2
    assert run_cli("models", "verify", "svd-xt", "--online")[0] == 0


def test_verify_offline_without_manifest_uses_hub_cache_blob_names(env, monkeypatch, tiny_fp16_src):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    snapshot = make_hub_cache(env / "hf" / "hub", XT, tiny_fp16_src)  # a cache copied from elsewhere
    code, out, err = run_cli("models", "verify", "svd-xt")
    assert code == 0, err
    assert "blob names" in out
    flip_byte(snapshot / "unet" / "diffusion_pytorch_model.fp16.safetensors", offset=5000)
    code, _, err = run_cli("models", "verify", "svd-xt")
    assert code == 3 and "unet/diffusion_pytorch_model.fp16.safetensors" in err


# --------------------------------------------------------------------------- verify: tiny and local folders
def test_verify_tiny_catches_a_flipped_byte_via_the_real_command(env):
    code, out, err = run_cli("models", "verify", "tiny")
    assert code == 0, err
    assert "all 3 weight files match" in out

    flip_byte(env / "sm" / "tiny-v1" / "unet" / "diffusion_pytorch_model.safetensors")
    proc = subprocess.run(
        [str(STILLMOTION_BIN), "models", "verify", "tiny"], capture_output=True, text=True, env=os.environ.copy(), timeout=120
    )
    assert proc.returncode == 3, proc.stderr
    line = proc.stderr.strip()
    assert "\n" not in line and line.startswith("error: ")
    assert "unet/diffusion_pytorch_model.safetensors" in line and "sha256" in line
    assert "stillmotion models download tiny --force" in line
    assert "Traceback" not in proc.stderr

    # the repair command named in the message repairs it
    code, _, err = run_cli("models", "download", "tiny", "--force")
    assert code == 0, err
    assert run_cli("models", "verify", "tiny")[0] == 0


def test_verify_catches_a_truncated_file(env):
    truncate(env / "sm" / "tiny-v1" / "vae" / "diffusion_pytorch_model.safetensors")
    code, out, err = run_cli("models", "verify", "tiny")
    assert code == 3
    assert "vae/diffusion_pytorch_model.safetensors (truncated" in err
    assert "TRUNCATED" in out


def test_verify_local_folder_without_manifest_still_catches_truncation(env, tiny_src):
    folder = env / "copy"
    shutil.copytree(tiny_src, folder)
    (folder / "stillmotion-manifest.json").unlink()
    code, out, err = run_cli("models", "verify", str(folder))
    assert code == 0, err
    assert "no reference hashes" in out

    truncate(folder / "image_encoder" / "model.safetensors", by=10)
    code, _, err = run_cli("models", "verify", str(folder), "--json")
    assert code == 3
    assert "image_encoder/model.safetensors" in err and "re-save or re-copy" in err


def test_verify_write_manifest_records_a_local_folder(env, tiny_src):
    folder = env / "copy"
    shutil.copytree(tiny_src, folder)
    (folder / "stillmotion-manifest.json").unlink()
    code, out, err = run_cli("models", "verify", str(folder), "--write-manifest", "--json")
    assert code == 0, err
    report = json.loads(out[out.index("{"):])
    assert report["ok"] and report["reference"] == "manifest"
    flip_byte(folder / "unet" / "diffusion_pytorch_model.safetensors", offset=4000)
    code, _, err = run_cli("models", "verify", str(folder))
    assert code == 3 and "unet/diffusion_pytorch_model.safetensors" in err


# --------------------------------------------------------------------------- RIFE weights from the registry
RIFE_REPO, RIFE_FILE = "Comfy-Org/frame_interpolation", "frame_interpolation/rife_v4.26.safetensors"


@pytest.fixture()
def rife_hub(env, monkeypatch):
    """The Comfy-Org repack as the hub serves it: RIFE 4.25/4.26-shaped random weights with its `blocks.N.` keys,
    beside files a RIFE download must not fetch."""
    from safetensors.torch import save

    from stillmotion.video.rife import build_ifnet

    state = build_ifnet("4.25", seed=5).state_dict()
    repack = {(f"blocks.{k[5]}.{k[7:]}" if k.startswith("block") else k): v.contiguous() for k, v in state.items()}
    hub = FakeHub()
    hub.repos[RIFE_REPO] = {RIFE_FILE: save(repack), "frame_interpolation/film_net_fp16.safetensors": b"not fetched",
                            "README.md": b"# frame interpolation"}
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    yield hub
    hub.close()


def test_models_download_rife_verifies_and_interpolation_finds_it_offline(rife_hub, env, monkeypatch, tmp_path):
    import av
    import numpy as np

    from stillmotion.video.writers import write

    code, out, err = run_cli("models", "download", "rife", "--quiet")
    assert code == 0, err
    assert f"commit {COMMIT}" in out and "RIFE 4.25" in out  # 4.26 has 4.25's shape
    snapshot = env / "hf" / "hub" / ("models--" + RIFE_REPO.replace("/", "--")) / "snapshots" / COMMIT
    assert sorted(str(p.relative_to(snapshot)) for p in snapshot.rglob("*") if p.is_file()) == [RIFE_FILE]
    for flag in ("--online", "--offline"):
        code, out, err = run_cli("models", "verify", "rife", flag)
        assert code == 0 and "rife: its weight file matches." in out, err

    flip_byte(snapshot / RIFE_FILE)
    code, out, err = run_cli("models", "verify", "rife", "--offline")
    assert code == 3 and RIFE_FILE in err and "stillmotion models download rife --force" in err
    assert run_cli("models", "download", "rife", "--force", "--quiet")[0] == 0
    assert run_cli("models", "verify", "rife", "--online")[0] == 0

    # with no --rife-weights and no network, the interpolate command finds the downloaded file
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("STILLMOTION_RIFE_WEIGHTS", raising=False)
    rng = np.random.default_rng(0)
    clip = write(rng.integers(0, 255, (3, 48, 64, 3), dtype=np.uint8), tmp_path / "clip.mp4", fps=8).path
    code, out, err = run_cli("interpolate", str(clip), "--backend", "rife", "-o", str(tmp_path / "x2.mp4"), "--json")
    assert code == 0, err
    sidecar = json.loads(Path(json.loads(out)["sidecar"]).read_text())
    rife = sidecar["interpolate"]["rife"]
    assert rife["sha256"] == hashlib.sha256(rife_hub.repos[RIFE_REPO][RIFE_FILE]).hexdigest() and rife["variant"] == "4.25"
    with av.open(str(tmp_path / "x2.mp4")) as c:
        assert len(list(c.decode(video=0))) == 5

    # it is listed as an interpolation model, and refused as a video model
    assert {"name": "rife", "kind": "interpolation", "status": "cached"}.items() <= next(
        r for r in json.loads(run_cli("models", "list", "--json")[1]) if r["name"] == "rife").items()
    from PIL import Image

    Image.new("RGB", (64, 48), (90, 120, 150)).save(tmp_path / "still.png")
    code, _, err = run_cli("generate", str(tmp_path / "still.png"), "--model", "rife", "-o", str(tmp_path / "v.mp4"))
    assert code == 2 and "not a video model" in err and "Traceback" not in err


def test_rife_not_downloaded_says_how_to_get_it(env, monkeypatch):
    from stillmotion.video.rife import find_weights

    monkeypatch.delenv("STILLMOTION_RIFE_WEIGHTS", raising=False)
    with pytest.raises(ModelUnavailable, match="stillmotion models download rife"):
        find_weights()


# --------------------------------------------------------------------------- list and unknown names
def test_models_list_shows_registry_and_tiny(env):
    code, out, err = run_cli("models", "list")
    assert code == 0, err
    lines = {line.split()[0]: line for line in out.splitlines() if line and not line.startswith(" ")}
    assert {"svd", "svd-xt", "svd-xt-1-1", "tiny"} <= set(lines)
    assert "cached" in lines["tiny"] and "MB" in lines["tiny"]
    assert "not downloaded" in lines["svd-xt"]

    code, out, _ = run_cli("models", "list", "--json")
    rows = {r["name"]: r for r in json.loads(out)}
    assert rows["tiny"]["status"] == "cached" and rows["tiny"]["size_bytes"] > 1_000_000
    assert rows["svd-xt-1-1"]["gated"] is True


@pytest.mark.parametrize("command", ["verify", "download"])
def test_unknown_model_name_exits_3_with_a_clear_message(env, command):
    code, out, err = run_cli("models", command, "svd-xxl")
    assert code == 3
    from stillmotion.models.registry import REGISTRY

    assert err.strip() == (
        f"error: Unknown model 'svd-xxl': use one of {', '.join(sorted(REGISTRY))}, "
        "a local diffusers folder, or a hub id like org/name."
    )


def test_unknown_model_in_python_raises_model_unavailable(env):
    from stillmotion.models.verify import verify

    with pytest.raises(ModelUnavailable, match="Unknown model"):
        verify("nope")
    with pytest.raises(ModelCorrupted):
        flip_byte(env / "sm" / "tiny-v1" / "image_encoder" / "model.safetensors")
        verify("tiny")


# --------------------------------------------------------------------------- the entry of a --model value
def test_each_model_value_has_an_entry_that_says_what_it_is(env, tiny_src):
    from stillmotion.models.resolve import entry_for

    assert {n: entry_for(n).source for n in ("svd", "svd-xt", "rife", "tiny", "demo")} == {
        "svd": "registry", "svd-xt": "registry", "rife": "registry", "tiny": "builtin", "demo": "builtin"}
    assert entry_for("tiny").builtin and not entry_for("svd-xt").builtin
    local = entry_for(str(tiny_src))
    assert (local.source, local.repo_id, local.defaults.num_frames) == ("local", None, 8)  # from its stillmotion.json
    hub = entry_for("someone/their-svd")
    assert (hub.source, hub.repo_id, hub.defaults.num_frames) == ("hub", "someone/their-svd", 25)
    with pytest.raises(ModelUnavailable, match="Unknown model"):
        entry_for("svd-xxl")


def test_model_shape_dispatches_on_the_entry_and_says_what_to_run_for_a_hub_model(env, tiny_src):
    from stillmotion.engine.shapes import model_shape
    from stillmotion.models.resolve import entry_for

    assert model_shape(entry_for(str(tiny_src)), "fp32").weights_total == model_shape("tiny", "fp32").weights_total
    with pytest.raises(ModelUnavailable, match="models download someone/their-svd"):
        model_shape("someone/their-svd")
    from stillmotion.errors import InvalidInput

    with pytest.raises(InvalidInput, match="frame-interpolation model"):
        model_shape("rife")


def test_folder_info_has_one_schema_written_whole_and_reads_old_files(tmp_path):
    import dataclasses

    from stillmotion.models.folder_info import FOLDER_INFO_FILE, folder_defaults, read_folder_info, write_folder_info
    from stillmotion.models.lora import lora_record
    from stillmotion.models.registry import REGISTRY, ModelDefaults

    tiny = REGISTRY["tiny"].defaults
    write_folder_info(tmp_path, tiny, trained={"steps": 2}, base="tiny", lora="lora.safetensors")
    assert [p.name for p in tmp_path.iterdir()] == [FOLDER_INFO_FILE]  # no temp file left
    info = read_folder_info(tmp_path)
    assert info == {"defaults": json.loads(json.dumps(dataclasses.asdict(tiny))), "trained": {"steps": 2},
                    "base": "tiny", "lora": "lora.safetensors"}
    assert folder_defaults(tmp_path) == tiny and lora_record(tmp_path)["base"] == "tiny"
    (tmp_path / FOLDER_INFO_FILE).write_text('{"defaults": {"num_frames": 14}}')  # as single-file conversions wrote it
    assert folder_defaults(tmp_path) == ModelDefaults(num_frames=14) and lora_record(tmp_path) is None
    for bad in ("[1, 2]", "not json"):
        (tmp_path / FOLDER_INFO_FILE).write_text(bad)
        assert read_folder_info(tmp_path) == {} and folder_defaults(tmp_path) == ModelDefaults()


# --------------------------------------------------------------------------- several repos assembled into one model
FP_BASE, FP_TRANSFORMER, FP_SIGLIP = "hunyuanvideo-community/HunyuanVideo", "lllyasviel/FramePackI2V_HY", \
    "lllyasviel/flux_redux_bfl"


@pytest.fixture()
def framepack_hub(env, monkeypatch, tmp_path):
    """The three repos FramePack is assembled from, laid out as on the hub with the tiny FramePack's weights: the
    HunyuanVideo pipeline (its own text-to-video transformer, which must not be fetched), FramePack's transformer
    at a repo's root, SigLIP in subfolders beside Redux's image embedder (not fetched either)."""
    from stillmotion.models.tiny_framepack import build_tiny_framepack

    files = repo_files(build_tiny_framepack(tmp_path / "fp-src"))
    index = json.loads(files["model_index.json"])
    index |= {"_class_name": "HunyuanVideoPipeline", "transformer": ["diffusers", "HunyuanVideoTransformer3DModel"]}
    for name in ("image_encoder", "feature_extractor"):
        index.pop(name)
    base = {rel: data for rel, data in files.items() if rel.split("/")[0] not in (
        "transformer", "image_encoder", "feature_extractor")}
    base |= {"model_index.json": json.dumps(index).encode(), "transformer/config.json": b"{}",
             "transformer/diffusion_pytorch_model.safetensors": b"HunyuanVideo T2V weights we never fetch"}
    hub = FakeHub()
    hub.repos[FP_BASE] = base
    hub.repos[FP_TRANSFORMER] = {rel.removeprefix("transformer/"): data for rel, data in files.items()
                                 if rel.startswith("transformer/")}
    hub.repos[FP_SIGLIP] = {rel: data for rel, data in files.items()
                            if rel.split("/")[0] in ("image_encoder", "feature_extractor")}
    hub.repos[FP_SIGLIP]["image_embedder/diffusion_pytorch_model.safetensors"] = b"Redux weights we never fetch"
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    yield hub
    hub.close()


def test_framepack_downloads_from_three_repos_assembles_one_model_and_verifies_each(framepack_hub, env, monkeypatch,
                                                                                 image_file):
    from stillmotion.models.resolve import resolve

    code, out, err = run_cli("models", "download", "framepack", "--quiet")
    assert code == 0, err
    got = [r.split(" ", 1)[1] for r in framepack_hub.requests if r.startswith("GET ") and "/resolve/" in r]
    assert not [r for r in got if "never" in r or r.endswith(("transformer/diffusion_pytorch_model.safetensors",
                                                              "image_embedder/diffusion_pytorch_model.safetensors"))]
    assert any(r.startswith(f"/{FP_TRANSFORMER}/resolve/") for r in got)

    local = resolve("framepack")
    index = json.loads((local.path / "model_index.json").read_text())
    assert index["_class_name"] == "HunyuanVideoFramepackPipeline"
    assert index["transformer"] == ["diffusers", "HunyuanVideoFramepackTransformer3DModel"]
    assert index["image_encoder"] == ["transformers", "SiglipVisionModel"]
    assert [(p["component"], p["repo_id"]) for p in local.describe()["parts"]] == [
        ("base", FP_BASE), ("transformer", FP_TRANSFORMER), ("image_encoder", FP_SIGLIP),
        ("feature_extractor", FP_SIGLIP)]
    assert "transformer/diffusion_pytorch_model.safetensors" in local.weight_hashes()
    row = next(r for r in json.loads(run_cli("models", "list", "--json")[1]) if r["name"] == "framepack")
    assert row["status"] == "cached" and row["size_bytes"] > sum(map(len, framepack_hub.repos[FP_TRANSFORMER].values()))

    # every repo is checked against its own reference: the hub's LFS hashes, then the download manifests
    for flag in ("--online", "--offline"):
        code, out, err = run_cli("models", "verify", "framepack", flag)
        assert code == 0, err
    snapshot = env / "hf" / "hub" / ("models--" + FP_TRANSFORMER.replace("/", "--")) / "snapshots" / COMMIT
    flip_byte(snapshot / "diffusion_pytorch_model.safetensors")
    code, out, err = run_cli("models", "verify", "framepack", "--offline")
    assert code == 3 and f"{FP_TRANSFORMER}/diffusion_pytorch_model.safetensors" in err, err
    assert "stillmotion models download framepack --force" in err
    assert run_cli("models", "download", "framepack", "--force", "--quiet")[0] == 0
    assert run_cli("models", "verify", "framepack", "--online")[0] == 0

    # the cache is enough from now on, and the assembled model runs as FramePack
    framepack_hub.requests.clear()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, _, err = run_cli("generate", str(image_file), "--model", "framepack", "--device", "cpu", "--frames", "5",
                           "--steps", "1", "--latent-window", "2", "--width", "64", "--height", "64",
                           "--prompt", "a cat", "-o", str(env / "fp.mp4"))
    assert code == 0, err
    side = json.loads((env / "fp.json").read_text())
    assert side["model"]["parts"][1]["repo_id"] == FP_TRANSFORMER and side["length"]["frames"] == 5
    assert framepack_hub.requests == []
