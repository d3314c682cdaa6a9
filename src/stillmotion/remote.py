"""Remote inputs (s3://, gs://, hdfs://, abfs:// ...) through pyarrow's filesystems.

pyarrow.fs is what Ray Data reads with, so `stillmotion batch s3://bucket/images`
reaches whatever Ray Data can read, with the same credentials: arrow takes them
from the standard places itself (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
AWS_REGION, AWS_ENDPOINT_URL for MinIO and other S3 APIs; ~/.aws; instance
roles; GOOGLE_APPLICATION_CREDENTIALS ...). Only inputs are remote: outputs stay
on a local disk or a shared volume.

    is_remote(source)          a URI with one of those schemes? (no pyarrow needed)
    list_files(uri, recursive) every file under a prefix as (relative key, URI)
    read_bytes(uri, max_bytes) the bytes of one object, at most max_bytes + 1

pyarrow is imported on first use only: it comes with the `ray` extra.
Library errors become one-line StillmotionErrors here, at the boundary.
"""

from __future__ import annotations

import re
from urllib.parse import quote, urlsplit, urlunsplit

from .errors import ImageFetchError, InvalidInput, NotFound
from .util import one_line, redact, show

# Schemes pyarrow.fs.FileSystem.from_uri opens (http(s) is sources.py's own reader;
# file:// is a local path).
REMOTE_SCHEMES = frozenset({"s3", "gs", "gcs", "hdfs", "viewfs", "abfs", "abfss"})
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+)://")


def is_remote(source) -> bool:
    """True for "s3://bucket/key" and the other schemes above; cheap, so every image source can ask."""
    if not isinstance(source, str):
        return False
    match = _SCHEME.match(source.strip())
    return bool(match) and match.group(1).lower() in REMOTE_SCHEMES


def list_files(uri: str, recursive: bool = False) -> list[tuple[str, str]]:
    """Every file under the folder (prefix) `uri` as (key relative to it, the file's own URI).

    Keys are posix paths, exactly what a local folder holding the same tree
    gives, so names, seeds and resume match. They come in os.walk's order
    (a folder's files, then its sub-folders), the order a local scan sees.
    Which files count as images is the caller's rule, the same for both.
    """
    pafs = _pyarrow_fs()
    fs, base = _open(uri)
    selector = pafs.FileSelector(base, recursive=recursive, allow_not_found=False)
    try:
        infos = fs.get_file_info(selector)
    except FileNotFoundError:
        raise _missing(fs, base, uri) from None
    except OSError as exc:
        raise _failed("list", uri, exc) from None
    prefix = base.rstrip("/") + "/"
    keys = [info.path[len(prefix):] for info in infos
            if info.type == pafs.FileType.File and info.path.startswith(prefix)]
    return [(key, child_uri(uri, key)) for key in sorted(keys, key=_walk_order)]


def read_bytes(uri: str, max_bytes: int) -> bytes:
    """The object's bytes, reading at most max_bytes + 1 so the caller's byte limit sees an oversized file
    without downloading all of it."""
    fs, path = _open(uri)
    try:
        with fs.open_input_stream(path) as stream:
            return stream.read(max_bytes + 1)
    except FileNotFoundError:
        raise NotFound(f"Image not found: {_shown(uri)}; check the URI.") from None
    except OSError as exc:
        raise _failed("read", uri, exc) from None


def child_uri(root: str, key: str) -> str:
    """root + "/" + key, percent-encoded: arrow decodes URI paths, so "my cat#1.png" must travel as
    "my%20cat%231.png". The root keeps its query (?region=...) and is used as the user typed it."""
    parts = urlsplit(root.strip())
    return urlunsplit(parts._replace(path=parts.path.rstrip("/") + "/" + quote(key)))


# --------------------------------------------------------------------------- helpers


def _pyarrow_fs():
    try:
        import pyarrow.fs as pafs
    except ImportError:  # pyarrow comes with the ray extra
        raise InvalidInput("Reading s3://, gs:// and other remote inputs needs pyarrow; "
                           "run: pip install 'stillmotion[ray]'") from None
    return pafs


def _open(uri: str):
    """(filesystem, path inside it) for a URI; a URI arrow cannot open is the user's to fix."""
    pafs = _pyarrow_fs()
    try:
        return pafs.FileSystem.from_uri(uri.strip())
    except OSError as exc:  # e.g. hdfs:// without a JVM, a GCS/Azure credential problem
        raise _failed("open", uri, exc) from None
    except Exception as exc:  # noqa: BLE001 - ArrowInvalid / ArrowNotImplementedError: a bad URI
        raise InvalidInput(f"Cannot open {_shown(uri)} ({one_line(exc)}); check the URI "
                           "(spaces and '#', '?' in a path must be percent-encoded: %20, %23, %3F).") from None


def _missing(fs, base: str, uri: str) -> Exception:
    """The listing found nothing: say whether that is a single file or nothing at all."""
    pafs = _pyarrow_fs()
    try:
        is_file = fs.get_file_info(base).type == pafs.FileType.File
    except OSError:
        is_file = False
    if is_file:
        return InvalidInput(f"{_shown(uri)} is a file, not a folder; pass the prefix that holds the images.")
    return NotFound(f"{_shown(uri)} does not exist or holds no files; check the bucket and prefix.")


def _failed(what: str, uri: str, exc: OSError) -> Exception:
    """Arrow's OSError (AWS error code, request id, curl detail) as our one line: a missing bucket is
    NotFound, anything else (network, permissions) a fetch error that names what to check."""
    message = one_line(exc)
    if "NO_SUCH_BUCKET" in message:
        return NotFound(f"Could not {what} {_shown(uri)}: the bucket does not exist; {_check(uri)}.")
    message = re.sub(r"\s*\(Request ID: [^)]*\)", "", message)
    return ImageFetchError(f"Could not {what} {_shown(uri)} ({message[:300]}); {_check(uri)}.")


def _check(uri: str) -> str:
    """What to look at next: for S3, the variables arrow reads."""
    if uri.strip().lower().startswith("s3://"):
        return "check the URI, the credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) and AWS_ENDPOINT_URL"
    return "check the URI and the credentials"


def _walk_order(key: str) -> tuple:
    """Sort key giving os.walk's order: in each folder its files first, then its sub-folders."""
    *folders, name = key.split("/")
    return tuple((1, f) for f in folders) + ((0, name),)


def _shown(uri: str) -> str:
    """The URI for a message: one line, no user:password@, not too long."""
    return show(redact(uri.strip()))
