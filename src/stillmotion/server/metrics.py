"""/metrics: Prometheus text, computed from the job store at scrape time.

Everything is read from the SQLite file, so the figures survive restarts and
cover work the worker process did. No per-job labels.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from ..jobs.store import STATES

GENERATION_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200)
STEP_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10)


def _histogram(name: str, doc: str, values: list[float], buckets) -> HistogramMetricFamily:
    counts = [0] * len(buckets)
    for v in values:
        for i, b in enumerate(buckets):
            if v <= b:
                counts[i] += 1
    out = [(str(float(b)), c) for b, c in zip(buckets, counts)] + [("+Inf", len(values))]
    return HistogramMetricFamily(name, doc, buckets=out, sum_value=float(sum(values)))


class StoreCollector:
    def __init__(self, svc):
        self.svc = svc

    def collect(self):
        store, sup = self.svc.store, self.svc.pool
        counts = store.counts()
        jobs = GaugeMetricFamily("stillmotion_jobs", "Jobs in the store by state", labels=["state"])
        for s in STATES:
            jobs.add_metric([s], counts.get(s, 0))
        yield jobs
        yield GaugeMetricFamily("stillmotion_queue_depth", "Jobs waiting to run", value=counts.get("queued", 0))
        yield GaugeMetricFamily("stillmotion_jobs_running", "Jobs running now", value=counts.get("running", 0))

        runs, steps = [], []
        for seconds, timings in store.finished_timings():
            if seconds is not None:
                runs.append(max(0.0, seconds))
            steps.extend((timings or {}).get("step_seconds") or [])
        yield _histogram("stillmotion_generation_seconds", "Wall time of succeeded jobs, claim to finish",
                         runs, GENERATION_BUCKETS)
        yield _histogram("stillmotion_step_seconds", "Time of one denoising step", steps, STEP_BUCKETS)

        ready = sup.ready()[0] if sup is not None else False
        yield GaugeMetricFamily("stillmotion_ready", "1 when the model is loaded and the server takes jobs",
                                value=1 if ready and not self.svc.draining else 0)
        workers = sup.describe() if sup is not None else []
        yield GaugeMetricFamily("stillmotion_workers_up", "Workers alive (processes, or model replicas on Ray)",
                                value=sum(1 for w in workers if w["alive"]))
        yield CounterMetricFamily("stillmotion_worker_restarts", "Workers restarted or replaced after dying",
                                  value=sup.restarts if sup is not None else 0)
        gpu = GaugeMetricFamily("stillmotion_gpu_memory_bytes", "GPU memory allocated by each worker", labels=["device"])
        for w in workers:
            if w.get("gpu_memory_bytes") is not None:
                gpu.add_metric([str(w["device"])], w["gpu_memory_bytes"])
        if gpu.samples:
            yield gpu
        view = self.svc.models_view(workers)
        loaded = GaugeMetricFamily("stillmotion_model_loaded", "1 for each served model a worker holds in memory",
                                   labels=["model", "default"])
        for m in view["models"]:
            loaded.add_metric([m["name"], "true" if m["default"] else "false"], 1 if m["loaded"] else 0)
        yield loaded
        yield CounterMetricFamily("stillmotion_model_swaps", "Models loaded after a worker's first (LRU swaps)",
                                  value=view["swaps"])
        yield CounterMetricFamily("stillmotion_model_swap_seconds", "Seconds spent unloading and loading models",
                                  value=view["swap_seconds"])


def make_registry(svc) -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(StoreCollector(svc))
    return reg


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
