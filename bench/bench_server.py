"""Benchmark `stillmotion serve` (tiny model by default): report, do not assert.

    python bench/bench_server.py                       # tiny model on the CPU
    python bench/bench_server.py --model svd-xt --device cuda --jobs-per-level 4

Measures
  1. status-call latency (p50/p99) and throughput, idle and while a job generates;
  2. time from submit to the first denoising step (seen through the API);
  3. jobs per minute at 1, 4 and 16 concurrent clients (each client submits
     with `Prefer: wait` and submits again when its job is done).
Prints a table and writes the figures as JSON (--out).
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx


def start_server(args, data_dir: Path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-c", "from stillmotion.cli import main; main()", "serve", "--no-ui", "--model", args.model,
           "--device", args.device, "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(data_dir),
           "--max-queue", "1000", "--log-level", "warning"]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    log = open(data_dir / "server.log", "ab")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    t0 = time.monotonic()
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"server exited; see {data_dir / 'server.log'}")
        try:
            if httpx.get(url + "/readyz", timeout=5).status_code == 200:
                return proc, url, time.monotonic() - t0
        except httpx.HTTPError:
            pass
        time.sleep(0.2)


def test_image() -> bytes:
    import numpy as np
    from PIL import Image

    yy, xx = np.mgrid[0:96, 0:96]
    arr = np.stack([xx * 2.5, yy * 2.5, 128 + 60 * np.sin(xx / 6.0)], -1)
    buf = io.BytesIO()
    Image.fromarray(arr.clip(0, 255).astype("uint8")).save(buf, "PNG")
    return buf.getvalue()


def pct(values, q):
    v = sorted(values)
    return v[min(len(v) - 1, int(round(q / 100 * (len(v) - 1))))] if v else float("nan")


def status_latency(url, job_id, n=200, threads=8, seconds=3.0) -> dict:
    with httpx.Client(base_url=url, timeout=30) as c:
        lat = []
        for _ in range(n):
            t = time.perf_counter()
            c.get(f"/v1/videos/{job_id}")
            lat.append((time.perf_counter() - t) * 1000)
    count = [0]
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def hammer():
        with httpx.Client(base_url=url, timeout=30) as c:
            while time.monotonic() < stop:
                c.get(f"/v1/videos/{job_id}")
                with lock:
                    count[0] += 1

    ts = [threading.Thread(target=hammer) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return {"p50_ms": round(pct(lat, 50), 2), "p99_ms": round(pct(lat, 99), 2), "rps": round(count[0] / seconds, 1)}


def submit(c, image, fields, wait=None):
    headers = {"Prefer": f"wait={wait}"} if wait else {}
    r = c.post("/v1/videos", files={"image": image}, data={k: str(v) for k, v in fields.items()}, headers=headers)
    r.raise_for_status()
    return r.json()


def wait_done(c, job_id):
    while True:
        j = c.get(f"/v1/videos/{job_id}").json()
        if j["status"] in ("succeeded", "failed", "canceled"):
            return j
        time.sleep(0.05)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="tiny")
    p.add_argument("--device", default="cpu")
    p.add_argument("--size", type=int, default=64, help="width = height of the generated video")
    p.add_argument("--frames", type=int, default=4)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--jobs-per-level", type=int, default=16, help="jobs run at each concurrency level")
    p.add_argument("--threads", type=int, default=None, help="passed to serve --threads (torch CPU threads per worker)")
    p.add_argument("--out", default="bench/results/server.json")
    args = p.parse_args()
    small = {"width": args.size, "height": args.size, "num_frames": args.frames, "num_inference_steps": args.steps}
    image = test_image()
    data_dir = Path(tempfile.mkdtemp(prefix="stillmotion-bench-"))
    proc, url, startup = start_server(args, data_dir)
    results = {"machine": f"{platform.node()} {platform.machine()} cpus={__import__('os').cpu_count()}",
               "model": args.model, "device": args.device, "job": small, "startup_to_ready_s": round(startup, 2)}
    try:
        with httpx.Client(base_url=url, timeout=600) as c:
            # 1. status calls, idle and while generating
            done = submit(c, image, small, wait=600)
            results["status_idle"] = status_latency(url, done["id"])
            long = submit(c, image, {**small, "num_inference_steps": 200})
            while c.get(f"/v1/videos/{long['id']}").json()["status"] != "running":
                time.sleep(0.02)
            results["status_while_generating"] = status_latency(url, done["id"])
            c.post(f"/v1/videos/{long['id']}/cancel")
            wait_done(c, long["id"])

            # 2. submit -> first denoising step (empty queue)
            firsts = []
            for _ in range(5):
                t = time.perf_counter()
                job = submit(c, image, {**small, "num_inference_steps": max(args.steps, 4)})
                while True:
                    j = c.get(f"/v1/videos/{job['id']}").json()
                    if j["progress"]["stage"] in ("denoise", "decode", "done") or j["status"] in ("failed", "canceled"):
                        break
                    time.sleep(0.005)
                firsts.append(time.perf_counter() - t)
                wait_done(c, job["id"])
            results["submit_to_first_step_s"] = {"p50": round(statistics.median(firsts), 3), "max": round(max(firsts), 3)}

        # 3. jobs per minute at several client counts
        results["jobs_per_minute"] = {}
        for clients in (1, 4, 16):
            n = max(args.jobs_per_level, clients)
            left, lock, errors = [n], threading.Lock(), []

            def client_loop():
                with httpx.Client(base_url=url, timeout=600) as c:
                    while True:
                        with lock:
                            if left[0] == 0:
                                return
                            left[0] -= 1
                        j = submit(c, image, small, wait=60)
                        j = wait_done(c, j["id"]) if j["status"] not in ("succeeded", "failed") else j
                        if j["status"] != "succeeded":
                            errors.append(j["id"])

            t = time.perf_counter()
            ts = [threading.Thread(target=client_loop) for _ in range(clients)]
            for th in ts:
                th.start()
            for th in ts:
                th.join()
            elapsed = time.perf_counter() - t
            results["jobs_per_minute"][str(clients)] = {"jobs": n, "seconds": round(elapsed, 2),
                                                        "jobs_per_min": round(n / elapsed * 60, 1), "failed": len(errors)}
    finally:
        proc.terminate()
        proc.wait(120)

    print(f"stillmotion serve benchmark  model={args.model} device={args.device} job={small}")
    print(f"  machine: {results['machine']}   startup to ready: {results['startup_to_ready_s']} s")
    for key in ("status_idle", "status_while_generating"):
        r = results[key]
        print(f"  GET /v1/videos/ID {key[7:]:<16} p50 {r['p50_ms']:7.2f} ms  p99 {r['p99_ms']:7.2f} ms  {r['rps']:7.1f} req/s")
    s = results["submit_to_first_step_s"]
    print(f"  submit -> first denoising step   p50 {s['p50']:.3f} s  max {s['max']:.3f} s")
    for k, r in results["jobs_per_minute"].items():
        print(f"  {k:>2} clients: {r['jobs']} jobs in {r['seconds']} s = {r['jobs_per_min']} jobs/min ({r['failed']} failed)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"  saved {out}")


if __name__ == "__main__":
    main()
