"""stillmotion on Ray: Ray Serve for the API, Ray Data for batch.

Imported only by `stillmotion serve --ray` and `stillmotion batch --ray`;
nothing else in stillmotion imports Ray. Ray is an optional extra:

    pip install 'stillmotion[ray]'

    serve.py   the /v1 app as a Ray Serve application: ingress, dispatcher, model replicas
    store.py   the job store every node reaches: a named, detached actor owning the SQLite file
    data.py    `batch --ray`: the batch plan as a Ray dataset, an actor pool running the Engine
"""

from __future__ import annotations

from ..errors import RayMissing  # in errors.py, so every error code is known without importing this package

EXTRA_HINT = "pip install 'stillmotion[ray]'"


def require_ray():
    """Import ray, or raise one line that names the extra to install."""
    try:
        import ray
    except ImportError:
        raise RayMissing(f"--ray needs Ray, which is not installed; run: {EXTRA_HINT}") from None
    return ray


__all__ = ["EXTRA_HINT", "RayMissing", "require_ray"]
