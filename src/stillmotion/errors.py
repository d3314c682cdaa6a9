"""Errors a user can cause, each with a message, an exit code and an HTTP status.

    StillmotionError                 exit 1, HTTP 500   (base: something went wrong)
    ├── InvalidInput                 exit 2, HTTP 422   bad spec field, bad flag value
    │   ├── InvalidImage             exit 2, HTTP 422   not an image, truncated, too large, too small
    │   │   └── ImageTooLarge        exit 2, HTTP 413   pixel or byte limit exceeded
    │   ├── InvalidVideo             exit 2, HTTP 422   not a video, zero frames
    │   └── ImageFetchError          exit 2, HTTP 422   URL unreachable, bad scheme, timeout
    ├── BadRequest                   exit 2, HTTP 400   a request the server cannot parse (body, headers)
    ├── Unauthorized                 exit 2, HTTP 401   missing or wrong API key
    ├── NotFound                     exit 2, HTTP 404   a job, a file, a manifest row
    ├── Conflict                     exit 2, HTTP 409   state does not allow this (e.g. content of a queued job)
    ├── ModelUnavailable             exit 3, HTTP 503   unknown name, not cached while offline, download failed
    │   └── ModelCorrupted           exit 3, HTTP 503   a weight file fails its sha256 check
    ├── OutOfMemory                  exit 4, HTTP 507   out of memory after every fallback
    ├── ServiceUnavailable           exit 1, HTTP 503   the server is draining: try again after `retry_after` s
    │   └── QueueFull                exit 1, HTTP 503   the job queue is at --max-queue
    ├── Cancelled                    exit 130, HTTP 409 the run was cancelled between steps
    └── RayMissing                   exit 2, HTTP 500   --ray without Ray installed (the `ray` extra)

Every message is one sentence (or two) that says what was wrong and what to do.
Library errors (torch OOM, PyAV, PIL, sqlite) are converted to these at the
boundary where they happen; callers never see raw library errors. The server
answers each with its http_status and {"error": {"code", "message"}}; a
ServiceUnavailable also with a Retry-After header. Cancelled's code is
"canceled", the job status the API reports for a cancelled job.
"""

from __future__ import annotations

from typing import Optional


class StillmotionError(Exception):
    exit_code: int = 1
    http_status: int = 500
    code: str = "error"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def to_dict(self) -> dict:
        return {"code": self.code, "message": self.message}


class InvalidInput(StillmotionError):
    exit_code = 2
    http_status = 422
    code = "invalid_input"


class InvalidImage(InvalidInput):
    code = "invalid_image"


class ImageTooLarge(InvalidImage):
    http_status = 413
    code = "image_too_large"


class InvalidVideo(InvalidInput):
    code = "invalid_video"


class ImageFetchError(InvalidInput):
    code = "image_fetch_failed"


class BadRequest(StillmotionError):
    exit_code = 2
    http_status = 400
    code = "bad_request"


class Unauthorized(StillmotionError):
    exit_code = 2
    http_status = 401
    code = "unauthorized"


class NotFound(StillmotionError):
    exit_code = 2
    http_status = 404
    code = "not_found"


class Conflict(StillmotionError):
    exit_code = 2
    http_status = 409
    code = "conflict"


class ModelUnavailable(StillmotionError):
    exit_code = 3
    http_status = 503
    code = "model_unavailable"


class ModelCorrupted(ModelUnavailable):
    code = "model_corrupted"


class OutOfMemory(StillmotionError):
    exit_code = 4
    http_status = 507
    code = "out_of_memory"


class ServiceUnavailable(StillmotionError):
    """Try again later: the server is draining, or (QueueFull) its queue is full."""

    exit_code = 1
    http_status = 503
    code = "unavailable"

    def __init__(self, message: str, retry_after: Optional[int] = None):
        super().__init__(message)
        self.retry_after = retry_after  # seconds, for the Retry-After header (None: the server's default)


class QueueFull(ServiceUnavailable):
    code = "queue_full"


class Cancelled(StillmotionError):
    exit_code = 130
    http_status = 409
    code = "canceled"

    def __init__(self, message: str = "Cancelled; no output was written."):
        super().__init__(message)


class RayMissing(StillmotionError):
    exit_code = 2  # a usage problem: the flag needs an extra
    code = "ray_missing"


def is_out_of_memory(exc: BaseException) -> bool:
    """True for torch's CUDA/MPS OOM and a CPU allocation failure."""
    name = type(exc).__name__
    if name in ("OutOfMemoryError",):
        return True
    text = str(exc).lower()
    return isinstance(exc, (RuntimeError, MemoryError)) and (
        "out of memory" in text or "can't allocate memory" in text or isinstance(exc, MemoryError)
    )
