"""`stillmotion serve`: FastAPI app (/v1 API, /healthz, /readyz, /metrics) with the
Gradio UI mounted at /, both on the job queue in stillmotion.jobs.

    from stillmotion.engine.config import EngineConfig
    from stillmotion.server import Settings, create_app
    app = create_app(Settings(engine=EngineConfig(model="tiny"), data_dir="data"))
"""

from .settings import Settings


def create_app(settings=None):
    from .app import create_app as _create

    return _create(settings)


__all__ = ["Settings", "create_app"]
