"""The job store (real SQLite file) and the worker's job loop (tiny model, in-process)."""

from __future__ import annotations

import asyncio
import json
import threading

import pytest

from stillmotion.errors import Conflict, NotFound, QueueFull
from stillmotion.jobs.store import MAX_ATTEMPTS, SQLiteJobStore

SPEC = {"width": 64, "height": 64, "num_frames": 4, "num_inference_steps": 2, "seed": 3}


@pytest.fixture()
def store(tmp_path):
    return SQLiteJobStore(tmp_path / "jobs.sqlite3")


def test_claims_are_atomic_and_in_order(store, tmp_path):
    ids = [store.create(SPEC)[0].id for _ in range(30)]
    claimed: dict[str, list[str]] = {}

    def drain(name):
        own = SQLiteJobStore(tmp_path / "jobs.sqlite3")  # its own connection, like another process
        got = claimed.setdefault(name, [])
        while (job := own.claim(name)) is not None:
            got.append(job.id)

    threads = [threading.Thread(target=drain, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    everything = [i for got in claimed.values() for i in got]
    assert sorted(everything) == sorted(ids) and len(everything) == len(set(everything))
    for got in claimed.values():  # each worker saw the queue in submission order
        assert got == sorted(got, key=ids.index)
    assert store.counts()["running"] == 30


def test_dead_worker_job_is_retried_once_then_failed(store):
    job, _ = store.create(SPEC)
    assert store.claim("w1").attempts == 1
    assert store.recover("w1", reason="exit code -9") == [job.id]
    assert store.get(job.id).status == "queued"
    assert store.claim("w2").attempts == 2
    assert not store.finish(job.id, "w1", "succeeded")  # a stale worker cannot finish it
    store.recover("w2", reason="exit code -11")
    failed = store.get(job.id)
    assert failed.status == "failed" and failed.error_code == "worker_died"
    assert f"{MAX_ATTEMPTS} times" in failed.error_message and "exit code -11" in failed.error_message


def test_finished_jobs_are_never_requeued(store):
    job, _ = store.create(SPEC)
    store.claim("w1")
    assert store.finish(job.id, "w1", "succeeded", output={"file": "video.mp4"})
    assert store.recover(reason="restart") == []
    assert store.claim("w2") is None
    assert store.get(job.id).status == "succeeded"


def test_drain_timeout_does_not_count_an_attempt(store):
    job, _ = store.create(SPEC)
    store.claim("w1")
    store.recover("w1", reason="drain timeout", count_attempt=False)
    assert store.get(job.id).attempts == 0


def test_idempotency_and_queue_limit(store):
    a, created = store.create(SPEC, idempotency_key="k", request_hash="h1")
    b, again = store.create(SPEC, idempotency_key="k", request_hash="h1")
    assert created and not again and a.id == b.id
    with pytest.raises(Conflict):
        store.create(SPEC, idempotency_key="k", request_hash="h2")
    store.create(SPEC)
    with pytest.raises(QueueFull):
        store.create(SPEC, max_queue=2)
    # a replay is answered even when the queue is full
    assert store.create(SPEC, idempotency_key="k", request_hash="h1", max_queue=2)[0].id == a.id


def test_cancel_and_delete(store):
    queued, _ = store.create(SPEC)
    running, _ = store.create(SPEC)
    store.claim("w")  # takes `queued` (oldest)
    assert store.request_cancel(running.id).status == "canceled"
    flagged = store.request_cancel(queued.id)
    assert flagged.status == "running" and flagged.cancel_requested == 1
    assert store.progress(queued.id, "w", fraction=0.5, stage="denoise", step=1, total=2) is True
    with pytest.raises(Conflict):
        store.request_cancel(running.id)
    store.delete(queued.id)
    assert store.cancel_requested(queued.id)  # the worker sees its job gone and stops
    with pytest.raises(NotFound):
        store.get(queued.id)


def test_pagination_newest_first(store):
    ids = [store.create(SPEC)[0].id for _ in range(5)]
    page1 = store.list(limit=2)
    page2 = store.list(limit=2, before_seq=page1[-1].seq)
    assert [j.id for j in page1 + page2] == ids[::-1][:4]


def test_both_stores_have_every_jobstore_method():
    import inspect

    from stillmotion.jobs.types import STORE_METHODS, JobStore
    from stillmotion.ray.store import RayJobStore

    assert {"claim", "claim_preferring", "finish", "close"} <= STORE_METHODS  # read off the Protocol
    for cls in (SQLiteJobStore, RayJobStore):
        for name in STORE_METHODS:
            want = [(p.name, p.kind, p.default) for p in inspect.signature(getattr(JobStore, name)).parameters.values()]
            got = [(p.name, p.kind, p.default) for p in inspect.signature(getattr(cls, name)).parameters.values()]
            assert got == want, (cls, name)  # names, keyword-only marks and defaults
    assert RayJobStore.claim_preferring.__doc__ == JobStore.claim_preferring.__doc__


def test_ray_store_runs_every_call_in_the_store_actor(tmp_path, monkeypatch):
    """RayJobStore's methods (made from the Protocol) send each call to the actor; its errors come back unchanged."""
    from types import SimpleNamespace

    ray = pytest.importorskip("ray")
    from stillmotion.ray.store import RayJobStore, StoreActor

    actor = StoreActor.__new__(StoreActor)  # the actor's class without Ray (and without its webhook thread)
    actor.store = SQLiteJobStore(tmp_path / "jobs.sqlite3")
    calls = []

    def remote(method, args, kwargs):
        calls.append(method)
        return actor.call(method, args, kwargs)

    monkeypatch.setattr(ray, "get", lambda ref: ref)
    store = RayJobStore(SimpleNamespace(call=SimpleNamespace(remote=remote)))
    older, _ = store.create(SPEC, model="b")
    newer, _ = store.create(SPEC, model="a")
    assert store.claim_preferring("w", "a", default_model="a").id == newer.id  # affinity, in the actor's store
    assert store.get(older.id).passed == 1 and store.counts()["running"] == 1
    assert calls == ["create", "create", "claim_preferring", "get", "counts"]
    with pytest.raises(NotFound):
        store.get("vid_missing")
    with pytest.raises(TypeError):  # keyword-only, as on SQLiteJobStore: refused before the actor is asked
        store.claim_preferring("w", "a", "a")
    assert len(calls) == 6
    assert actor.call("_conn")[0] == "err"  # the actor runs JobStore methods only


class OnlyTheProtocol:
    """A store that has the JobStore methods and nothing else."""

    def __init__(self, store):
        self._store = store

    def __getattr__(self, name):
        from stillmotion.jobs.types import STORE_METHODS

        if name not in STORE_METHODS:
            raise AttributeError(f"{name} is not a JobStore method")
        return getattr(self._store, name)


# --------------------------------------------------------------------------- the worker's job loop
@pytest.fixture()
def worker(tmp_path, tiny_engine):
    from stillmotion.engine.config import EngineConfig
    from stillmotion.jobs.worker import JobWorker

    w = JobWorker(tmp_path, "w-test", EngineConfig(model="tiny", device="cpu"))
    w.engine = tiny_engine
    return w


def _queue(worker, image_file, spec=SPEC):
    from stillmotion.jobs.layout import job_dir

    job, _ = worker.store.create(spec, input_name="input.png")
    folder = job_dir(worker.data_dir, job.id)
    folder.mkdir(parents=True)
    (folder / "input.png").write_bytes(image_file.read_bytes())
    return job, folder


def test_the_worker_uses_only_jobstore_methods(tmp_path, tiny_engine, image_file):
    """Several models (the claim with affinity) and a whole job, on a store that is just the Protocol."""
    from stillmotion.engine.config import EngineConfig
    from stillmotion.jobs.worker import JobWorker

    w = JobWorker(tmp_path, "w-test", EngineConfig(model="tiny", device="cpu"),
                  OnlyTheProtocol(SQLiteJobStore(tmp_path / "jobs.sqlite3")), models=["tiny", "demo"])
    w.engines["tiny"] = w.engine = tiny_engine  # resident already: nothing loads
    job, _ = _queue(w, image_file)
    w.run_job(w.claim_next())
    assert w.store.get(job.id).status == "succeeded"


def test_worker_runs_a_job_to_a_video(worker, image_file):
    from stillmotion.video import read_video

    job, folder = _queue(worker, image_file)
    worker.run_job(worker.store.claim(worker.worker_id))
    done = worker.store.get(job.id)
    assert done.status == "succeeded" and done.progress == 1
    assert done.output["file"] == f"{job.id}.mp4" and done.spec["seed"] == 3
    frames, fps = read_video(folder / f"{job.id}.mp4")
    assert frames.shape == (4, 64, 64, 3)
    assert json.loads((folder / f"{job.id}.json").read_text())["seed"] == 3
    assert len(done.timings["step_seconds"]) == 2


def test_worker_cancel_between_steps_leaves_no_file(worker, image_file):
    job, folder = _queue(worker, image_file, {**SPEC, "num_inference_steps": 50})
    claimed = worker.store.claim(worker.worker_id)
    worker.store.request_cancel(job.id)
    worker.run_job(claimed)
    done = worker.store.get(job.id)
    assert done.status == "canceled" and done.error_code == "canceled"
    assert [p.name for p in folder.iterdir()] == ["input.png"]


def test_worker_reports_bad_input_as_a_failed_job(worker, image_file):
    job, folder = _queue(worker, image_file)
    (folder / "input.png").write_bytes(b"not an image")
    worker.run_job(worker.store.claim(worker.worker_id))
    done = worker.store.get(job.id)
    assert done.status == "failed" and done.error_code == "invalid_image"


def test_events_stream_to_the_terminal_state(store):
    from stillmotion.jobs.events import job_events

    job, _ = store.create(SPEC)

    def run():
        other = SQLiteJobStore(store.path)
        other.claim("w")
        for i in range(1, 3):
            other.progress(job.id, "w", fraction=i / 2, stage="denoise", step=i, total=2)
            threading.Event().wait(0.1)
        other.finish(job.id, "w", "succeeded")

    async def collect():
        out = []
        async for chunk in job_events(store, job.id, lambda j: {"status": j.status}, poll=0.02):
            out.append(chunk.split("\n")[1].removeprefix("event: "))
        return out

    t = threading.Timer(0.2, run)
    t.start()
    names = asyncio.run(collect())
    t.join()
    assert names[0] == "queued" and names[-1] == "succeeded" and "running" in names


def test_png_frames_are_served_as_one_zip(worker, image_file):
    import zipfile

    job, folder = _queue(worker, image_file, {**SPEC, "format": "png"})
    worker.run_job(worker.store.claim(worker.worker_id))
    out = worker.store.get(job.id).output
    assert out["file"] == f"{job.id}.zip" and out["content_type"] == "application/zip"
    with zipfile.ZipFile(folder / out["file"]) as z:
        assert sorted(z.namelist()) == [f"frame_{i:05d}.png" for i in range(4)]
