"""`stillmotion serve`: FastAPI app (/v1 API, /healthz, /readyz, /metrics) with the
Gradio UI mounted at /, both on the job queue in stillmotion.jobs.

    from stillmotion.engine.config import EngineConfig
    from stillmotion.server import Settings, create_app
    app = create_app(Settings(engine=EngineConfig(model="tiny"), data_dir="data"))
"""

from .settings import Settings


def create_app(settings=None, **hosts):
    """server.app.create_app (imported when called: FastAPI and Gradio load only then); `hosts`: its store, pool
    and webhooks."""
    from .app import create_app as _create

    return _create(settings, **hosts)


__all__ = ["Settings", "create_app"]
