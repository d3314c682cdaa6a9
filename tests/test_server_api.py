"""The HTTP API against a real `stillmotion serve --model tiny` on 127.0.0.1.

Jobs are tiny (64x64, a few frames and steps). Error cases that need no worker
run in-process over ASGI on an app built with create_app().
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import httpx
import pytest

from conftest import ServeProcess

SMALL = {"width": "64", "height": "64", "num_frames": "4", "num_inference_steps": "2"}
TERMINAL = ("succeeded", "failed", "canceled")


def client(srv, **kw) -> httpx.Client:
    return httpx.Client(base_url=srv.url, timeout=120, **kw)


def submit(c, image_file, **fields):
    data = {**SMALL, **{k: str(v) for k, v in fields.items()}}
    with open(image_file, "rb") as f:
        r = c.post("/v1/videos", files={"image": ("input.png", f, "image/png")}, data=data)
    assert r.status_code == 202, r.text
    return r.json()


def wait_done(c, job_id, timeout=240) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = c.get(f"/v1/videos/{job_id}").json()
        if job["status"] in TERMINAL:
            return job
        time.sleep(0.2)
    raise TimeoutError(job)


def wait_for(c, job_id, pred, timeout=240) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = c.get(f"/v1/videos/{job_id}").json()
        if pred(job):
            return job
        time.sleep(0.1)
    raise TimeoutError(job)


def sse_events(c, job_id) -> list[tuple[str, dict]]:
    events, name = [], None
    with c.stream("GET", f"/v1/videos/{job_id}/events") as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                events.append((name, json.loads(line[6:])))
    return events


def decode(data: bytes):
    import av

    with av.open(io.BytesIO(data)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    return frames


# --------------------------------------------------------------------------- happy paths
def test_multipart_submit_follow_sse_fetch_content(live_server, image_file):
    with client(live_server) as c:
        job = submit(c, image_file, seed=42)
        assert job["status"] in ("queued", "running") and job["seed"] == 42
        assert job["id"].startswith("vid_")
        events = sse_events(c, job["id"])
        names = [n for n, _ in events]
        assert names[-1] == "succeeded", names
        fractions = [d["progress"]["fraction"] for n, d in events if n == "progress"]
        assert fractions == sorted(fractions)

        r = c.get(f"/v1/videos/{job['id']}/content")
        assert r.status_code == 200 and r.headers["content-type"] == "video/mp4"
        frames = decode(r.content)
        assert len(frames) == 4 and frames[0].shape == (64, 64, 3)

        # Range requests, so a browser can seek
        r2 = c.get(f"/v1/videos/{job['id']}/content", headers={"Range": "bytes=10-109"})
        assert r2.status_code == 206 and r2.content == r.content[10:110]
        assert r2.headers["content-range"] == f"bytes 10-109/{len(r.content)}"

        side = c.get(f"/v1/videos/{job['id']}/content", params={"variant": "sidecar"}).json()
        assert side["seed"] == 42 and side["spec"]["num_frames"] == 4


def test_audio_input_is_refused_for_a_model_that_takes_none_and_a_silent_job_has_no_wav(live_server, image_file,
                                                                                        tmp_path):
    """The API's `audio` input (a soundtrack to follow) goes through the family's check: tiny (SVD) takes none, so
    422 before a job exists, as multipart file or base64; a job without sound has no variant=audio (404)."""
    import numpy as np

    from stillmotion.video.audio import Audio, write_wav

    write_wav(tmp_path / "tone.wav", Audio(np.sin(np.arange(8000) / 8).astype(np.float32), 16000))
    wav = (tmp_path / "tone.wav").read_bytes()
    with client(live_server) as c:
        before = [j["id"] for j in c.get("/v1/videos", params={"limit": 100}).json()["data"]]
        with open(image_file, "rb") as f:
            r = c.post("/v1/videos", files={"image": ("in.png", f, "image/png"), "audio": ("tone.wav", wav, "audio/wav")},
                       data=SMALL)
        assert r.status_code == 422 and "cannot follow a soundtrack" in r.json()["error"]["message"], r.text
        body = {"image": base64.b64encode(image_file.read_bytes()).decode(), "audio": "not base64!", **SMALL}
        r = c.post("/v1/videos", json=body)
        assert r.status_code == 422 and "audio: not valid base64" in r.json()["error"]["message"], r.text
        assert [j["id"] for j in c.get("/v1/videos", params={"limit": 100}).json()["data"]] == before  # no job made
        job = submit(c, image_file, seed=3)
        assert sse_events(c, job["id"])[-1][0] == "succeeded"
        done = c.get(f"/v1/videos/{job['id']}").json()
        assert done["output"]["audio_url"] is None
        r = c.get(f"/v1/videos/{job['id']}/content", params={"variant": "audio"})
        assert r.status_code == 404 and "no soundtrack" in r.json()["error"]["message"]


def test_json_base64_with_prefer_wait(live_server, image_file):
    body = {"image": base64.b64encode(image_file.read_bytes()).decode(), "num_frames": 4,
            "num_inference_steps": 2, "width": 64, "height": 64}
    with client(live_server) as c:
        r = c.post("/v1/videos", json=body, headers={"Prefer": "wait=120"})
        assert r.status_code == 200, r.text
        job = r.json()
        assert job["status"] == "succeeded" and isinstance(job["seed"], int) and job["seed"] >= 0
        assert r.headers["preference-applied"] == "wait=60"  # capped at the server's max_wait
        assert c.get(job["urls"]["content"]).status_code == 200


def test_idempotency_key_returns_the_same_job(live_server, image_file):
    with client(live_server) as c:
        key = {"Idempotency-Key": "test-idem-1"}
        data = {**SMALL, "seed": "7"}
        first = c.post("/v1/videos", files={"image": image_file.read_bytes()}, data=data, headers=key)
        again = c.post("/v1/videos", files={"image": image_file.read_bytes()}, data=data, headers=key)
        assert first.status_code == 202 and again.status_code == 202
        assert again.json()["id"] == first.json()["id"]
        assert again.headers.get("idempotent-replayed") == "true"
        other = c.post("/v1/videos", files={"image": image_file.read_bytes()}, data={**data, "seed": "8"}, headers=key)
        assert other.status_code == 409 and "Idempotency-Key" in other.json()["error"]["message"]
        assert wait_done(c, first.json()["id"])["status"] == "succeeded"


def test_cancel_running_and_queued(live_server, image_file):
    with client(live_server) as c:
        long = submit(c, image_file, num_inference_steps=100)
        queued = submit(c, image_file)
        wait_for(c, long["id"], lambda j: j["status"] == "running" and (j["progress"]["step"] or 0) >= 1)
        q = c.post(f"/v1/videos/{queued['id']}/cancel").json()
        assert q["status"] == "canceled"  # a queued job goes at once
        r = c.post(f"/v1/videos/{long['id']}/cancel")
        assert r.status_code == 200 and r.json()["cancel_requested"]
        done = wait_done(c, long["id"])
        assert done["status"] == "canceled" and done["progress"]["step"] < 100
        assert c.get(f"/v1/videos/{long['id']}/content").status_code == 409
        assert [p.name for p in (live_server.data_dir / "jobs" / long["id"]).iterdir()] == ["input.png"]
        again = c.post(f"/v1/videos/{long['id']}/cancel")
        assert again.status_code == 409


def test_delete_removes_job_and_files(live_server, image_file):
    with client(live_server) as c:
        job = submit(c, image_file)
        wait_done(c, job["id"])
        folder = live_server.data_dir / "jobs" / job["id"]
        assert (folder / f"{job['id']}.mp4").is_file()
        r = c.delete(f"/v1/videos/{job['id']}")
        assert r.status_code == 200 and r.json()["deleted"] is True
        assert c.get(f"/v1/videos/{job['id']}").status_code == 404
        assert not folder.exists()
        assert c.delete(f"/v1/videos/{job['id']}").status_code == 404


def test_pagination_with_cursor(live_server, image_file):
    with client(live_server) as c:
        for _ in range(3):
            submit(c, image_file, num_inference_steps=1)
        seen, cursor = [], None
        while True:
            page = c.get("/v1/videos", params={"limit": 2, **({"cursor": cursor} if cursor else {})}).json()
            assert len(page["data"]) <= 2
            seen += [j["id"] for j in page["data"]]
            cursor = page["next_cursor"]
            if not page["has_more"]:
                break
        everything = c.get("/v1/videos", params={"limit": 100}).json()["data"]
        assert seen == [j["id"] for j in everything] and len(set(seen)) == len(seen) >= 3
        assert all(j["status"] == "succeeded" for j in c.get("/v1/videos", params={"status": "succeeded"}).json()["data"])


def test_health_ready_metrics_openapi(live_server):
    with client(live_server) as c:
        assert c.get("/healthz").json() == {"status": "ok"}
        ready = c.get("/readyz").json()
        assert ready["status"] == "ready" and ready["worker"]["device"] == "cpu"
        text = c.get("/metrics").text
        for name in ("stillmotion_jobs{state=\"queued\"}", "stillmotion_queue_depth", "stillmotion_generation_seconds_bucket",
                     "stillmotion_step_seconds_count", "stillmotion_workers_up 1.0"):
            assert name in text
        assert "vid_" not in text  # no per-job labels
        paths = c.get("/openapi.json").json()["paths"]
        assert "/v1/videos" in paths and "/v1/videos/{job_id}/events" in paths


def test_webhook_is_signed_and_retried(live_server, image_file):
    from stillmotion.server.webhooks import verify

    got = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            got.append((dict(self.headers), body))
            self.send_response(500 if len(got) == 1 else 200)  # the first call fails: it must be retried
            self.end_headers()

        def log_message(self, *a):
            pass

    hook = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    try:
        with client(live_server) as c:
            job = submit(c, image_file, webhook=f"http://127.0.0.1:{hook.server_port}/done")
            wait_done(c, job["id"])
            deadline = time.monotonic() + 60
            while len(got) < 2 and time.monotonic() < deadline:
                time.sleep(0.2)
            assert len(got) == 2
            headers, body = got[1]
            assert headers["Stillmotion-Event"] == "video.succeeded"
            assert verify("test-secret", headers["Stillmotion-Signature"], body)
            assert not verify("wrong-secret", headers["Stillmotion-Signature"], body)
            assert json.loads(body)["id"] == job["id"]
            assert wait_for(c, job["id"], lambda j: j["webhook"]["state"] == "delivered")["webhook"]["attempts"] == 2
    finally:
        hook.shutdown()


# --------------------------------------------------------------------------- errors
def test_malformed_requests_get_4xx_and_server_keeps_serving(live_server, image_file):
    img64 = base64.b64encode(image_file.read_bytes()).decode()
    with client(live_server) as c:
        cases = [
            c.post("/v1/videos", json={"image": "not base64 at all!!"}),
            c.post("/v1/videos", files={"image": ("x.png", b"%PDF-1.4 definitely not an image", "image/png")}),
            c.post("/v1/videos", content=b'{"image": "' + b"A" * (3 * 1024 * 1024) + b'"}',
                   headers={"Content-Type": "application/json"}),
            c.post("/v1/videos", files={"image": ("big.png", b"\x89PNG" + b"0" * (2 * 1024 * 1024), "image/png")}),
            c.get("/v1/videos/../../etc/passwd"),
            c.get("/v1/videos/..%2F..%2Fetc%2Fpasswd/content"),
            c.get("/v1/videos/vid_0000000000000000000x"),
            c.post("/v1/videos", json={"image": img64, "num_franes": 4}),
            c.post("/v1/videos", json={"image": img64, "num_frames": -3, "width": 65}),
            c.get("/v1/videos", params={"limit": -1}),
            c.get("/v1/videos", params={"cursor": "../../x"}),
            c.get("/v1/videos", params={"status": "exploded"}),
            c.post("/v1/videos", content=b"{not json", headers={"Content-Type": "application/json"}),
            c.post("/v1/videos", json=[1, 2, 3]),
            c.post("/v1/videos", json={"image": 12}),
            c.post("/v1/videos", json={"num_frames": 4}),
            c.post("/v1/videos", json={"image": "ftp://example.com/a.png"}),
            c.post("/v1/videos", json={"image": img64, "model": "svd-xt"}),
            c.post("/v1/videos", json={"image": img64, "webhook": "file:///etc/passwd"}),
            c.post("/v1/videos", content=b"image=1", headers={"Content-Type": "text/plain"}),
        ]
        for r in cases:
            assert 400 <= r.status_code < 500, (r.request.url, r.status_code, r.text[:300])
            if r.request.url.path.startswith("/v1/"):
                assert r.json()["error"]["message"], r.text
        assert cases[2].status_code == 413 and cases[3].status_code == 413
        assert cases[7].status_code == 422 and "num_franes" in cases[7].json()["error"]["message"]
        assert "num_frames" in cases[8].json()["error"]["message"] and "width" in cases[8].json()["error"]["message"]
        assert c.get("/healthz").status_code == 200
        assert c.get("/v1/videos", params={"limit": 1}).status_code == 200


@pytest.fixture()
def asgi_app(tmp_path):
    """An app without a worker: for error paths that never reach generation."""
    from no_workers import app_without_workers

    def make(**kw):
        return app_without_workers(data_dir=tmp_path / "data", ui=False, **kw)

    return make


def test_api_key_401(asgi_app, image_file):
    from fastapi.testclient import TestClient

    with TestClient(asgi_app(api_key="s3cret")) as c:
        assert c.get("/v1/videos").status_code == 401
        r = c.get("/v1/videos", headers={"Authorization": "Bearer nope"})
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
        assert r.headers["www-authenticate"] == "Bearer"
        assert c.get("/v1/videos", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert c.get("/healthz").status_code == 200  # health stays open
        assert c.get("/metrics").status_code == 200


def test_full_queue_503_with_retry_after(asgi_app, image_file):
    from fastapi.testclient import TestClient

    with TestClient(asgi_app(max_queue=2)) as c:
        codes = [c.post("/v1/videos", files={"image": image_file.read_bytes()}, data=SMALL) for _ in range(3)]
        assert [r.status_code for r in codes] == [202, 202, 503]
        assert codes[2].json()["error"]["code"] == "queue_full"
        assert int(codes[2].headers["retry-after"]) >= 1
        assert len(c.get("/v1/videos").json()["data"]) == 2


def test_keep_days_deletes_old_finished_jobs_and_their_files(asgi_app, image_file, tmp_path):
    import time

    from fastapi.testclient import TestClient

    app = asgi_app(keep_days=1)
    svc = app.state.svc
    with TestClient(app) as c:
        done, waiting = (c.post("/v1/videos", files={"image": image_file.read_bytes()}, data=SMALL).json()["id"]
                         for _ in range(2))
        job = svc.store.claim("test-worker")
        assert job.id == done
        svc.store.finish(done, "test-worker", "succeeded", output={"file": "x.mp4"})
        folder = tmp_path / "data" / "jobs" / done
        assert folder.is_dir()

        assert svc.sweep() == []  # finished a moment ago: kept
        assert svc.sweep(now=time.time() + 2 * 86400) == [done]  # two days on: gone, with its files
        assert c.get(f"/v1/videos/{done}").status_code == 404 and not folder.exists()
        assert c.get(f"/v1/videos/{waiting}").json()["status"] == "queued"  # unfinished jobs are never swept


def test_private_urls_are_refused_unless_the_operator_allows_them(asgi_app, image_file):
    """A client's image or webhook URL may not reach the server's own network (cloud metadata, localhost)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from fastapi.testclient import TestClient

    png = image_file.read_bytes()

    class Image(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(png)))
            self.end_headers()
            self.wfile.write(png)

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Image)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{srv.server_port}/photo.png"
    img64 = base64.b64encode(png).decode()
    try:
        with TestClient(asgi_app()) as c:
            for body in ({"image": url}, {"image": "http://localhost:9/x.png"},
                         {"image": img64, "webhook": "http://169.254.169.254/latest/meta-data/"}):
                r = c.post("/v1/videos", json={**body, **SMALL})
                assert r.status_code == 422, r.text
                message = r.json()["error"]["message"]
                assert "private or local address" in message and "--allow-private-urls" in message
        with TestClient(asgi_app(allow_private_urls=True)) as c:
            r = c.post("/v1/videos", json={"image": url, **SMALL})
            assert r.status_code == 202, r.text
    finally:
        srv.shutdown()


def test_one_worker_per_visible_gpu(monkeypatch, tmp_path):
    from stillmotion.engine.config import EngineConfig
    from stillmotion.server.settings import Settings
    from stillmotion.server.supervisor import worker_devices

    cpu = EngineConfig(device="cpu")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2")
    assert worker_devices(Settings(data_dir=tmp_path)) == ["cuda:0", "cuda:1", "cuda:2"]
    assert worker_devices(Settings(data_dir=tmp_path, engine=cpu)) == ["cpu"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert worker_devices(Settings(data_dir=tmp_path)) == [None]
    assert worker_devices(Settings(data_dir=tmp_path, engine=cpu, workers=2)) == ["cpu", "cpu"]


def test_one_server_per_data_dir(tmp_path):
    from stillmotion.engine.config import EngineConfig
    from stillmotion.errors import Conflict
    from stillmotion.server.app import Services
    from stillmotion.server.settings import Settings

    tiny = EngineConfig(model="tiny")
    first = Services(Settings(engine=tiny, data_dir=tmp_path))
    first.lock_data_dir()
    with pytest.raises(Conflict, match="already using"):
        Services(Settings(engine=tiny, data_dir=tmp_path)).lock_data_dir()


# --------------------------------------------------------------------------- load and crashes
def test_concurrent_jobs_all_succeed_in_order(live_server, image_file):
    data = image_file.read_bytes()
    ids, lock = [], threading.Lock()

    def client_thread(n):
        with client(live_server) as c:
            for _ in range(n):
                r = c.post("/v1/videos", files={"image": data},
                           data={"width": "64", "height": "64", "num_frames": "2", "num_inference_steps": "1"})
                assert r.status_code == 202, r.text
                with lock:
                    ids.append(r.json()["id"])

    threads = [threading.Thread(target=client_thread, args=(4,)) for _ in range(4)]  # 16 jobs from 4 clients
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(ids) == 16 == len(set(ids))
    with client(live_server) as c:
        jobs = [wait_done(c, i, timeout=600) for i in ids]
    assert all(j["status"] == "succeeded" and j["attempts"] == 1 for j in jobs)
    by_started = sorted(jobs, key=lambda j: j["started_at"])
    from stillmotion.jobs.store import SQLiteJobStore

    seq = {j.id: j.seq for j in SQLiteJobStore(live_server.data_dir / "jobs.sqlite3").list(limit=1000)}
    assert [j["id"] for j in sorted(jobs, key=lambda j: seq[j["id"]])] == [j["id"] for j in by_started]


def test_sigkill_restart_worker_death_and_drain(tmp_path, image_file):
    """kill -9 mid-job: after a restart every job ends succeeded, none runs twice except the
    interrupted one; a killed worker's job is retried; SIGTERM drains the running job."""
    data_dir = tmp_path / "data"
    srv = ServeProcess(data_dir, "--no-ui", "--no-warmup")
    try:
        srv.wait_ready()
        with client(srv) as c:
            first = submit(c, image_file, num_inference_steps=30)
            rest = [submit(c, image_file) for _ in range(3)]
            wait_for(c, first["id"], lambda j: j["status"] == "running")
        srv.proc.kill()
        srv.proc.wait()
        srv.log.close()

        srv = ServeProcess(data_dir, "--no-ui", "--no-warmup", "--drain-timeout", "120")
        srv.wait_ready()
        with client(srv) as c:
            jobs = {j["id"]: wait_done(c, j["id"]) for j in [first, *rest]}
            assert all(j["status"] == "succeeded" for j in jobs.values()), jobs
            assert jobs[first["id"]]["attempts"] == 2
            assert all(jobs[j["id"]]["attempts"] == 1 for j in rest)

            # the worker dies mid-job: the API keeps answering, the job is retried once
            victim = submit(c, image_file, num_inference_steps=30)
            wait_for(c, victim["id"], lambda j: j["status"] == "running")
            import os
            import signal

            os.kill(c.get("/readyz").json()["worker"]["pid"], signal.SIGKILL)
            assert c.get("/healthz", timeout=5).status_code == 200
            done = wait_done(c, victim["id"])
            assert done["status"] == "succeeded" and done["attempts"] == 2
            assert c.get("/readyz").json()["worker"]["restarts"] == 1

            # SIGTERM drains: readyz 503 and new jobs refused, the running job finishes
            draining = submit(c, image_file, num_inference_steps=30)
            leftover = submit(c, image_file)
            wait_for(c, draining["id"], lambda j: j["status"] == "running")
            srv.proc.terminate()
            time.sleep(0.5)
            assert c.get("/readyz").status_code == 503
            refused = c.post("/v1/videos", files={"image": image_file.read_bytes()}, data=SMALL)
            assert refused.status_code == 503 and "retry-after" in refused.headers
        assert srv.proc.wait(180) == 0
        from stillmotion.jobs.store import SQLiteJobStore

        store = SQLiteJobStore(data_dir / "jobs.sqlite3")
        assert store.get(draining["id"]).status == "succeeded"
        assert store.get(leftover["id"]).status == "queued"  # left for the next start
    finally:
        srv.stop()
