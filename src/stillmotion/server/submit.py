"""From a request (multipart or JSON) or a UI form to a queued job: the one path
both front ends take. Everything is checked here, before a job exists: the
spec (GenerationSpec names), the image (decoded with images.load_image), the
model, the webhook URL. The input bytes are kept under the data folder by job id.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import shutil
from dataclasses import dataclass, field
from typing import Optional

from starlette.requests import Request

from .. import images, sources
from ..errors import BadRequest, ImageTooLarge, InvalidImage, InvalidInput, QueueFull, ServiceUnavailable
from ..families import family_for
from ..jobs.store import new_job_id
from ..jobs.types import Job
from ..jobs.layout import AUDIO, END_IMAGE, INPUT, job_dir, write_record
from ..netguard import check_public_url
from ..spec import GenerationSpec

_EXT = {"JPEG": "jpg", "MPO": "jpg", "PNG": "png", "WEBP": "webp", "BMP": "bmp", "TIFF": "tif", "GIF": "gif"}


@dataclass
class Submission:
    image: Optional[bytes] = None
    image_url: Optional[str] = None
    end_image: Optional[bytes] = None  # keyframes: the image the video ends on
    end_image_url: Optional[str] = None
    end_filename: Optional[str] = None
    audio: Optional[bytes] = None  # a soundtrack for the model to follow (wav, mp3, m4a)
    audio_filename: Optional[str] = None  # the uploaded file's name: the sidecar's audio source, as a local run's
    filename: Optional[str] = None
    fields: dict = field(default_factory=dict)
    model: Optional[str] = None
    webhook: Optional[str] = None
    output_name: Optional[str] = None
    lora: Optional[str] = None
    lora_scale: Optional[float] = None


@dataclass(frozen=True)
class Input:
    """One input of POST /v1/videos beside the GenerationSpec fields. kind "image": a file in multipart,
    base64 / a data: URL / an http(s) URL in JSON; "text": a string. `schema`: its JSON schema when it is
    not a plain string (e.g. an object; a multipart form carries it as JSON text)."""

    kind: str
    description: str
    required: bool = False
    schema: Optional[dict] = None


# The one list of the request's inputs that are not GenerationSpec fields: the parsers below and the
# OpenAPI contract (server/contract.py) read it. A new input is a line here plus its use in submit().
INPUTS: dict[str, Input] = {
    "image": Input("image", "the still image: a file (multipart), or base64, a data: URL or an http(s) URL (JSON)",
                   required=True),
    "end_image": Input("image", "optional: the image the video ends on (keyframes; the same forms as image)"),
    "audio": Input("audio", "optional: a soundtrack for the model to follow (wav, mp3 or m4a: a file in multipart, "
                   "base64 in JSON), where the model's family takes one (LTX-2; refused otherwise); the video "
                   "carries it, cut or padded to its length"),
    "model": Input("text", "the model to run: one the server serves (leave it out for its first, the default)"),
    "lora": Input("text", "a LoRA adapter the server serves (`serve --lora NAME=FOLDER`), applied to this job only"),
    "lora_scale": Input("number", "the LoRA's strength (with lora; default 1)",
                        schema={"type": "number", "minimum": 0, "maximum": 4, "default": 1}),
    "webhook": Input("text", "an http(s) URL that gets the job (signed) when it ends"),
    "workflow": Input("object", "a ComfyUI API workflow (Workflow > Export (API)); its settings fill the spec, "
                      "the fields given beside it win", schema={"type": "object"}),
    "output_name": Input("text", "the video's file name, as the sidecar and the video's metadata record it "
                         "(default: the job id); `--server` sends the local name so the bytes match a local run"),
    "batch": Input("object", "what `stillmotion batch --server` records in the sidecar's batch key (key, variant, "
                   "requested), so its resume works as a local batch's", schema={"type": "object"}),
}


_SPEC_FIELD = Input("spec", "")

# --------------------------------------------------------------------------- parsing
async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing more than `limit` bytes (413) before reading it all."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise BadRequest("Content-Length is not a number.")
        if int(declared) > limit:
            raise ImageTooLarge(f"The request is {_mb(int(declared))}, over the {_mb(limit)} upload limit (--max-upload-mb).")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ImageTooLarge(f"The request is over the {_mb(limit)} upload limit (--max-upload-mb).")
        chunks.append(chunk)
    return b"".join(chunks)


async def parse_request(request: Request, limit: int) -> Submission:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await read_body(request, limit)
    if ctype == "multipart/form-data":
        return await _parse_multipart(request, body)
    if ctype in ("application/json", ""):
        return _parse_json(body)
    raise InvalidInput(f"Unsupported Content-Type {ctype!r}: send multipart/form-data (image file + fields) "
                       "or application/json (image as base64 or an http(s) URL).")


async def _parse_multipart(request: Request, body: bytes) -> Submission:
    async def replay() -> dict:  # the body was read (and size-checked) already: parse those bytes
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=3, max_fields=64)
    except Exception as e:  # noqa: BLE001 - python-multipart's errors become ours
        raise BadRequest(f"Could not parse the multipart form ({str(e)[:200]}).") from None
    try:
        return await _form_submission(form)
    finally:
        await form.close()


async def _form_submission(form) -> Submission:
    sub = Submission()
    for key, value in form.multi_items():
        if INPUTS.get(key, _SPEC_FIELD).kind == "audio":
            sub.audio = await value.read() if hasattr(value, "read") else _base64(value, key)
            sub.audio_filename = getattr(value, "filename", None)
        elif INPUTS.get(key, _SPEC_FIELD).kind == "image":
            if hasattr(value, "read"):
                setattr(sub, key, await value.read())
                setattr(sub, "filename" if key == "image" else "end_filename", value.filename)
            else:
                _image_text(sub, value, key)
        elif hasattr(value, "read"):
            raise InvalidInput(f"{key}: only `image`, `end_image` and `audio` may be files.")
        elif value.strip() == "":
            continue  # an empty form field means "default"
        elif INPUTS.get(key, _SPEC_FIELD).kind == "text":
            setattr(sub, key, value.strip())
        elif INPUTS.get(key, _SPEC_FIELD).kind == "number":
            try:
                setattr(sub, key, float(value.strip()))
            except ValueError:
                raise InvalidInput(f"{key}: must be a number, got {value.strip()[:40]!r}.") from None
        else:
            sub.fields[key] = value.strip()
    return sub


def _parse_json(body: bytes) -> Submission:
    try:
        data = json.loads(body or b"null")
    except (ValueError, UnicodeDecodeError) as e:
        raise BadRequest(f"The body is not valid JSON ({str(e)[:120]}).") from None
    if not isinstance(data, dict):
        raise InvalidInput("The JSON body must be an object: {\"image\": \"<base64 or URL>\", \"seed\": 42, ...}.")
    sub = Submission()
    for key in (k for k, i in INPUTS.items() if i.kind == "image"):
        v = data.pop(key, None)
        if v is not None and not isinstance(v, str):
            raise InvalidInput(f"{key}: must be a base64 string, a data: URL or an http(s) URL.")
        if v is not None:
            _image_text(sub, v, key)
    for key in (k for k, i in INPUTS.items() if i.kind == "audio"):
        v = data.pop(key, None)
        if v is not None and not isinstance(v, str):
            raise InvalidInput(f"{key}: must be a base64 string (the file's bytes).")
        if v is not None:
            setattr(sub, key, _base64(v, key))
    for key in (k for k, i in INPUTS.items() if i.kind == "text"):
        v = data.pop(key, None)
        if v is not None and not isinstance(v, str):
            raise InvalidInput(f"{key}: must be a string.")
        setattr(sub, key, v)
    for key in (k for k, i in INPUTS.items() if i.kind == "number"):
        v = data.pop(key, None)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise InvalidInput(f"{key}: must be a number.")
        setattr(sub, key, None if v is None else float(v))
    sub.fields = data
    return sub


def _base64(text: str, key: str) -> bytes:
    """A file's bytes sent as base64 (or a base64 data: URL)."""
    text = text.strip()
    if text[:5].lower() == "data:":
        text = text.partition(",")[2]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(f"{key}: not valid base64; send the file's bytes base64-encoded.") from None


def _image_text(sub: Submission, text: str, key: str = "image") -> None:
    text = text.strip()
    low = text[:16].lower()
    if low.startswith(("http://", "https://")):
        setattr(sub, f"{key}_url", text)
        return
    if low.startswith("data:"):
        head, _, text = text.partition(",")
        if ";base64" not in head:
            raise InvalidImage(f"{key}: a data: URL must be base64-encoded (data:image/png;base64,...).")
    try:
        setattr(sub, key, base64.b64decode(text, validate=True))
    except (binascii.Error, ValueError):
        raise InvalidImage(f"{key}: not valid base64 and not an http(s) URL; send the file's bytes base64-encoded.") from None


# --------------------------------------------------------------------------- submitting
def submit(svc, sub: Submission, *, source: str = "api", idempotency_key: Optional[str] = None) -> tuple[Job, bool]:
    """Check everything, keep the input, queue the job. Returns (job, created)."""
    settings, store = svc.settings, svc.store
    model = settings.engine.model
    if svc.draining:
        raise ServiceUnavailable("The server is shutting down and takes no new jobs; try again in a moment.",
                                 retry_after=10)
    # 1. Model, LoRA and spec
    served = settings.served_models
    if sub.model and sub.model not in served:
        if len(served) == 1:
            raise InvalidInput(f"model: this server runs {model!r}, got {sub.model!r}; leave model out or use it.")
        raise InvalidInput(f"model: this server runs {', '.join(map(repr, served))}, got {sub.model!r}; "
                           f"leave model out for {model!r} or name one of them.")
    model = sub.model or model
    entry = svc.entry(model)
    family = family_for(entry)
    lora = _check_lora(settings, sub, model, family)
    fields = sub.fields
    if "workflow" in fields:  # a ComfyUI API workflow: its settings, with the explicit fields over them
        from ..comfy import apply_workflow

        fields = apply_workflow(fields, model)
    batch = _object_input(fields, "batch")
    spec = GenerationSpec.build(**fields)
    if lora:  # what the LoRA recommends (a distilled one: its steps, guidance 1) where the request sets nothing
        spec = _lora_recommends(spec, settings.loras[lora["lora"]], family)
    # what the model's family cannot honour (another family's fields, its frame and size rules), in one line
    family.check(spec, entry, end_image=sub.end_image is not None or sub.end_image_url is not None,
                 audio=sub.audio is not None)
    if sub.output_name is not None:
        _check_output_name(sub.output_name, spec.format)
    if sub.webhook and not sub.webhook.lower().startswith(("http://", "https://")):
        raise InvalidInput(f"webhook: must be an http(s) URL, got {sub.webhook[:100]!r}.")
    public_only = not settings.allow_private_urls
    if sub.webhook and public_only:
        check_public_url(sub.webhook, "webhook")
    # 2. The image: read (URL), decode (refuses non-images, bombs, truncation)
    if sub.image is None and sub.image_url is None:
        raise InvalidInput("image: missing; send an image file (multipart) or base64 / an http(s) URL (JSON).")
    limit = settings.max_upload_bytes
    data, where, pil = _read_image(sub.image, sub.image_url, sub.filename, limit, public_only)
    fmt = _sniff_format(data)
    end = None
    if sub.end_image is not None or sub.end_image_url is not None:
        end, _, _ = _read_image(sub.end_image, sub.end_image_url, None, limit, public_only, "end image")
    if sub.audio is not None:  # decoded now: a file that is not sound is refused before a job exists
        from ..video.audio import read_audio

        if len(sub.audio) > limit:
            raise ImageTooLarge(f"The audio is {_mb(len(sub.audio))}, over the {_mb(limit)} upload limit (--max-upload-mb).")
        read_audio(sub.audio, name="audio")
    # 3. Resolve the spec now, so the job shows its seed and sizes from the start
    resolved = spec.resolve(entry, pil.size)
    if end is not None:
        from ..engine.keyframes import check_spec

        check_spec(resolved)
    request_hash = hashlib.sha256(
        hashlib.sha256(data).digest() + (hashlib.sha256(end).digest() if end is not None else b"")
        + (hashlib.sha256(sub.audio).digest() if sub.audio is not None else b"")
        + json.dumps([spec.model_dump(mode="json"), sub.model, sub.webhook] + ([lora] if lora else []),
                     sort_keys=True).encode()
    ).hexdigest()
    # 4. Keep the input under the job's folder, then queue the job
    job_id = new_job_id()
    folder = job_dir(settings.data_dir, job_id)
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{INPUT}.{_EXT.get(fmt, 'img')}"
    (folder / name).write_bytes(data)
    if batch is not None or sub.output_name or lora or sub.audio_filename:
        write_record(folder, {"batch": batch, "output_name": sub.output_name, **(lora or {}),
                              **({"audio_source": sub.audio_filename} if sub.audio_filename else {})})
    if end is not None:  # the worker finds it by name (jobs/layout.py)
        (folder / f"{END_IMAGE}.{_EXT.get(_sniff_format(end), 'img')}").write_bytes(end)
    if sub.audio is not None:  # the worker finds it by name (jobs/layout.py); PyAV reads it by its bytes
        (folder / f"{AUDIO}.snd").write_bytes(sub.audio)
    try:
        job, created = store.create(
            resolved.model_dump(mode="json"), job_id=job_id, model=model, source=source,
            input_name=name, input_source=sub.image_url or (where if isinstance(where, str) else None),
            idempotency_key=idempotency_key, request_hash=request_hash, webhook=sub.webhook,
            max_queue=settings.max_queue,
        )
    except QueueFull as e:
        shutil.rmtree(folder, ignore_errors=True)
        raise QueueFull(e.message, retry_after=svc.retry_after()) from None
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    if not created:
        shutil.rmtree(folder, ignore_errors=True)
    elif svc.pool is not None:
        svc.pool.notify()
    return job, created


def _read_image(blob: Optional[bytes], url: Optional[str], filename: Optional[str], limit: int, public_only: bool,
                what: str = "image"):
    """(bytes, where they came from, decoded image): fetched from `url` or the upload `blob`, held to the upload
    limit and decoded (refuses non-images, bombs, truncation)."""
    if blob is None:
        data, where = sources.read_source_bytes(url, max_bytes=limit, public_only=public_only)
    else:
        data, where = blob, filename
        if len(data) > limit:
            raise ImageTooLarge(f"The {what} is {_mb(len(data))}, over the {_mb(limit)} upload limit (--max-upload-mb).")
    return data, where, images.load_image(data, max_bytes=limit)


def _lora_recommends(spec: GenerationSpec, folder, family) -> GenerationSpec:
    """The spec with the served LoRA's recommended steps and guidance (models/lora.lora_defaults) in the fields
    the request left unset and the family takes."""
    from ..models.lora import RECOMMENDED, lora_defaults

    recommended = lora_defaults(folder)
    changes = {k: recommended[k] for k in RECOMMENDED
               if recommended.get(k) is not None and getattr(spec, k) is None and family.takes(k)}
    return spec.update(**changes) if changes else spec


def _check_lora(settings, sub: Submission, model: str, family) -> Optional[dict]:
    """The job's LoRA and scale ({"lora", "lora_scale"}), or None; an unknown one is refused naming the served,
    and any one on a model whose family takes no LoRA."""
    if sub.lora is None:
        if sub.lora_scale is not None:
            raise InvalidInput("lora_scale: give it with lora (a served LoRA adapter).")
        return None
    if not family.lora:
        raise InvalidInput(f"lora: LoRAs are not built for {family.label} models ({model}) yet; leave lora out.")
    served = settings.loras
    if sub.lora not in served:
        have = ", ".join(map(repr, served)) if served else "none (start it with --lora NAME=FOLDER)"
        raise InvalidInput(f"lora: this server serves {have}; got {sub.lora!r}.")
    bounds = INPUTS["lora_scale"].schema
    scale = float(bounds["default"]) if sub.lora_scale is None else sub.lora_scale
    if not bounds["minimum"] <= scale <= bounds["maximum"]:
        raise InvalidInput(f"lora_scale: between {bounds['minimum']:g} and {bounds['maximum']:g}, got {scale:g}.")
    from ..models.lora import lora_record

    base = (lora_record(served[sub.lora]) or {}).get("base")
    if base in settings.served_models and base != model:
        raise InvalidInput(f"lora: {sub.lora!r} was trained on {base!r}; send model={base!r} with it.")
    return {"lora": sub.lora, "lora_scale": scale}


def _check_output_name(name: str, fmt: str) -> None:
    from pathlib import PurePosixPath, PureWindowsPath

    plain = PurePosixPath(name).name == name == PureWindowsPath(name).name and not name.startswith(".")
    if not plain or len(name) > 200 or not name.lower().endswith("." + fmt) or fmt == "png":
        raise InvalidInput(f"output_name: a plain file name ending in .{fmt} (not a path), got {name[:100]!r}.")


def _object_input(fields: dict, key: str) -> Optional[dict]:
    """Pop an object input (INPUTS kind "object") from the fields: a dict (JSON) or JSON text (a form field)."""
    if key not in fields:
        return None
    value = fields.pop(key)
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise InvalidInput(f"{key}: not valid JSON.") from None
    if not isinstance(value, dict):
        raise InvalidInput(f"{key}: must be a JSON object.")
    return value


def _sniff_format(data: bytes) -> Optional[str]:
    import io

    from PIL import Image

    try:
        with Image.open(io.BytesIO(data), formats=images.FORMATS) as im:
            return im.format
    except Exception:  # noqa: BLE001 - load_image already accepted it
        return None


def _mb(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MB"
