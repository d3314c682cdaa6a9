"""An app with no worker processes, for tests of the API and the UI alone (their jobs stay queued): the
`pool` seam of create_app (a jobs.types.WorkerPool), the one `serve --ray` uses for its replicas."""

from __future__ import annotations


class NoWorkers:
    """A WorkerPool with nothing in it: never ready, runs nothing."""

    restarts = 0

    def start(self) -> None:
        pass

    def drain(self, timeout: float) -> bool:
        return True

    def ready(self) -> tuple[bool, str]:
        return False, "no workers (a test of the API alone)"

    def describe(self) -> list[dict]:
        return []

    def notify(self) -> None:
        pass


def app_without_workers(**settings):
    """create_app(Settings(**settings)) (model tiny unless given) with no worker processes."""
    from stillmotion.engine.config import EngineConfig
    from stillmotion.server import Settings, create_app

    settings.setdefault("engine", EngineConfig(model="tiny"))
    return create_app(Settings(**settings), pool=NoWorkers())
