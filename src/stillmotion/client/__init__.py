"""A client for a stillmotion server (`stillmotion serve`), on httpx: the API as a laptop drives a GPU box.

    from stillmotion import Client
    with Client("http://gpu-box:7860", api_key="...") as c:      # or STILLMOTION_SERVER / STILLMOTION_API_KEY
        job = c.submit("photo.jpg", {"seed": 42, "num_frames": 14})
        job = c.wait(job["id"], on_event=lambda name, job: print(name, job["progress"]["fraction"]))
        c.download(job["id"], "photo.mp4")                    # and "photo.json" with variant="sidecar"
        # a gif/webp job of a model with sound (LTX-2): its "photo.wav" with variant="audio" (job output.audio_url)

`AsyncClient` has the same methods as coroutines. Both:
- retry 503 and 429 answers after the server's Retry-After (a full queue: for up to `busy_for` s, 15 min by
  default) and dropped connections (`retries` times);
- send every submit with an Idempotency-Key (a fresh one unless you give yours), so a retried submit
  never makes two videos: the server answers a repeated key with the job it already made;
- follow a job's event stream and reconnect with Last-Event-ID when it drops, so no event is missed;
- resume an interrupted download with a Range request, and write the file whole or not at all;
- raise the errors of stillmotion.errors from the server's error codes (InvalidInput for 422, ...).

The request building, answer reading and retry state (when to retry, resume or give up) are shared
(common.py); the two classes (sync.py, aio.py) only do the I/O.
"""

from .aio import AsyncClient
from .common import job_error, server_from_env
from .sync import Client

__all__ = ["AsyncClient", "Client", "job_error", "server_from_env"]
