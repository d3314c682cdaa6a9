"""The OpenAPI contract (/openapi.json), derived from the code that it describes:

- the request bodies of POST /v1/videos from GenerationSpec's own JSON schema and from
  submit.INPUTS (the one list of the other inputs: image, model, webhook, ...);
- the error responses from the error tree in errors.py (each status with the codes it can carry)
  and the codes the app's own handlers use (views.HANDLER_CODES);
- the job, list and health bodies from the models in views.py.

FastAPI builds the paths, parameters and operation ids from the routes; `install(app)` then sets each
operation's responses from ROUTES below and adds the bodies. A route missing from ROUTES keeps what
FastAPI says (test_api_contract checks every route is listed).
"""

from __future__ import annotations

import base64
import copy
import io
from typing import Any

from ..errors import StillmotionError

SCHEMAS = "#/components/schemas/"
IDEMPOTENCY_KEY_PATTERN = r"^[\x21-\x7e]{1,255}$"  # what api.create_video accepts
ERROR_REF = {"$ref": SCHEMAS + "Error"}
RETRY_AFTER = {"description": "seconds to wait before trying again", "schema": {"type": "integer", "minimum": 0}}
VIDEO_TYPES = ("video/mp4", "video/webm", "image/gif", "image/webp", "application/zip")


# --------------------------------------------------------------------------- errors
def error_codes() -> dict[int, list[str]]:
    """HTTP status -> the error codes the server answers it with: every StillmotionError subclass
    (errors.py) plus the app's own handlers (validation, unknown routes)."""
    from .views import HANDLER_CODES

    out: dict[int, set[str]] = {}
    todo = [StillmotionError]
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        out.setdefault(cls.http_status, set()).add(cls.code)
    for status, code in HANDLER_CODES.items():
        out.setdefault(status, set()).add(code)
    return {s: sorted(c) for s, c in sorted(out.items())}


def _error(status: int, what: str, **headers: dict) -> dict:
    codes = error_codes().get(status, [])
    resp = {"description": f"{what} (error codes: {', '.join(codes)})",
            "content": {"application/json": {"schema": ERROR_REF}}}
    if status == 503:
        headers.setdefault("Retry-After", RETRY_AFTER)
    if status == 401:
        headers.setdefault("WWW-Authenticate", {"description": "Bearer", "schema": {"type": "string"}})
    if headers:
        resp["headers"] = headers
    return resp


E400 = ("400", "the request could not be parsed (body, headers)")
E401 = ("401", "missing or wrong API key (`Authorization: Bearer KEY`; servers started with --api-key)")
E404 = ("404", "no such job")
E409 = ("409", "the job's state does not allow this")
E422 = ("422", "a field or parameter is invalid; the message names it")


def errors(*items: tuple[str, str]) -> dict:
    return {status: _error(int(status), what) for status, what in items}


def _json(ref: str, description: str, **extra) -> dict:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": SCHEMAS + ref}}}, **extra}


# --------------------------------------------------------------------------- the routes
JOB_LINKS = {
    "GetJob": {"operationId": "get_video", "parameters": {"job_id": "$response.body#/id"}},
    "CancelJob": {"operationId": "cancel_video", "parameters": {"job_id": "$response.body#/id"}},
    "DeleteJob": {"operationId": "delete_video", "parameters": {"job_id": "$response.body#/id"}},
}
SSE_EVENT = {  # one event of the stream
    "type": "object", "required": ["id", "event", "data"],
    "properties": {
        "id": {"type": "string", "pattern": "^[0-9]+$", "description": "send back as Last-Event-ID to resume"},
        "event": {"type": "string", "enum": ["queued", "running", "progress", "succeeded", "failed", "canceled",
                                             "deleted"]},
        "data": {"type": "string", "contentMediaType": "application/json",
                 "contentSchema": {"anyOf": [{"$ref": SCHEMAS + "JobView"}, {"$ref": SCHEMAS + "Deleted"}]}},
    },
}
_LOCATION = {"Location": {"description": "the job's URL", "schema": {"type": "string"}}}


def _routes() -> dict[tuple[str, str], dict]:
    """(method, path) -> its responses: every status the route can answer."""
    content = {t: {"schema": {"type": "string", "format": "binary"}} for t in VIDEO_TYPES}
    content["application/json"] = {"schema": {"type": "object", "description": "the sidecar (variant=sidecar)"}}
    content["audio/wav"] = {"schema": {"type": "string", "format": "binary",
                                       "description": "the soundtrack beside a gif/webp/png video (variant=audio)"}}
    range_error = {"application/json": {"schema": ERROR_REF}, "text/plain": {"schema": {"type": "string"}}}
    return {
        ("post", "/v1/videos"): {
            "200": _json("JobView", "the job, already finished (with `Prefer: wait=N`)", headers=_LOCATION, links=JOB_LINKS),
            "202": _json("JobView", "the job, queued (or the earlier job of the same Idempotency-Key: "
                         "`Idempotent-Replayed: true`)", headers=_LOCATION, links=JOB_LINKS),
            **errors(E400, E401, ("409", "this Idempotency-Key was used for a different request"),
                     ("413", "the request or the image is over --max-upload-mb"), E422,
                     ("503", "draining, queue full (--max-queue) or model unavailable: retry after Retry-After")),
        },
        ("get", "/v1/videos"): {"200": _json("JobList", "a page of jobs, newest first"), **errors(E401, E422)},
        ("get", "/v1/videos/{job_id}"): {"200": _json("JobView", "the job"), **errors(E401, E404)},
        ("get", "/v1/videos/{job_id}/content"): {
            "200": {"description": "the video: one file, with its soundtrack muxed in where the model makes sound "
                    "(mp4: AAC, webm: Opus); with variant=sidecar its JSON sidecar; with variant=audio the float32 "
                    "WAV beside a gif/webp/png video", "content": content},
            "206": {"description": "the requested byte range (Range: bytes=START-END)", "content": content,
                    "headers": {"Content-Range": {"schema": {"type": "string"}}}},
            "400": {"description": "a malformed Range header", "content": range_error},
            "416": {"description": "a Range past the end of the file", "content": range_error},
            **errors(E401, E404, ("409", "the job has not succeeded (yet)"), E422),
        },
        ("get", "/v1/videos/{job_id}/events"): {
            "200": {"description": "Server-Sent Events until the job ends: queued, running, progress, then "
                    "succeeded | failed | canceled (or deleted). Every event has an id; reconnect with "
                    "Last-Event-ID to get only what is newer (the final event always comes). `data:` is the job.",
                    "content": {"text/event-stream": {"schema": SSE_EVENT}}},
            **errors(E401, E404),
        },
        ("post", "/v1/videos/{job_id}/cancel"): {
            "200": _json("JobView", "the job: canceled (if it was queued) or with cancel_requested (if running)"),
            **errors(E401, E404, ("409", "the job has already ended")),
        },
        ("delete", "/v1/videos/{job_id}"): {"200": _json("Deleted", "the job and its files are gone"),
                                             **errors(E401, E404)},
        ("get", "/healthz"): {"200": _json("Health", "the process is alive")},
        ("get", "/readyz"): {
            "200": _json("Ready", "a worker has its model loaded"),
            "503": _json("Ready", "not ready yet, or draining", headers={"Retry-After": RETRY_AFTER}),
        },
        ("get", "/metrics"): {"200": {"description": "Prometheus text format",
                                      "content": {"text/plain": {"schema": {"type": "string"}}}}},
    }


# --------------------------------------------------------------------------- request bodies
def _spec_schema() -> tuple[dict, dict]:
    """GenerationSpec's properties and any definitions they refer to (as component schemas)."""
    from ..spec import GenerationSpec

    schema = GenerationSpec.model_json_schema(ref_template=SCHEMAS + "{model}")
    return schema.get("properties", {}), schema.get("$defs", {})


def _not_null(prop: dict) -> dict:
    """A form field left out means the default: the multipart schema has no null branch."""
    prop = copy.deepcopy(prop)
    options = prop.get("anyOf")
    if options:
        rest = [o for o in options if o.get("type") != "null"]
        if len(rest) == 1:
            prop.pop("anyOf")
            prop = {**rest[0], **prop}
        else:
            prop["anyOf"] = rest
        if prop.get("default") is None:
            prop.pop("default", None)
    return prop


def _example_image() -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.linear_gradient("L").resize((64, 64)).convert("RGB").save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


def request_bodies() -> tuple[dict, dict]:
    """(the requestBody of POST /v1/videos, component schemas it refers to)."""
    from .submit import INPUTS

    spec_props, defs = _spec_schema()
    json_props: dict[str, Any] = {}
    form_props: dict[str, Any] = {}
    for name, inp in INPUTS.items():
        if inp.kind == "image":
            json_props[name] = {"type": "string", "description": inp.description + "; base64 (or a data: URL) "
                                "or an http(s) URL"}
            form_props[name] = {"type": "string", "format": "binary", "description": inp.description}
        elif inp.kind == "audio":
            json_props[name] = {"type": "string", "description": inp.description + "; base64"}
            form_props[name] = {"type": "string", "format": "binary", "description": inp.description}
        else:
            schema = dict(inp.schema or {"type": "string"})
            json_props[name] = {**schema, "description": inp.description}
            form_props[name] = {"type": "string", "description": inp.description + " (JSON text)"} \
                if inp.kind == "object" else {**schema, "description": inp.description}
    json_props.update(spec_props)
    form_props.update({k: _not_null(v) for k, v in spec_props.items()})
    required = [name for name, inp in INPUTS.items() if inp.required]
    defs["VideoRequest"] = {"type": "object", "title": "VideoRequest", "properties": json_props,
                            "required": required, "additionalProperties": False,
                            "description": "GenerationSpec fields (a missing or null field: the model's default) "
                            "plus the inputs; the image as base64 or an http(s) URL."}
    defs["VideoForm"] = {"type": "object", "title": "VideoForm", "properties": form_props, "required": required,
                         "additionalProperties": False,
                         "description": "GenerationSpec fields as form fields (empty or missing: the default) "
                         "plus the inputs; the image as a file."}
    image_inputs = [n for n, i in INPUTS.items() if i.kind == "image"]
    body = {
        "required": True,
        "content": {
            "multipart/form-data": {"schema": {"$ref": SCHEMAS + "VideoForm"},
                                    "encoding": {**{n: {"contentType": "image/*"} for n in image_inputs},
                                                 **{n: {"contentType": "audio/*"} for n, i in INPUTS.items()
                                                    if i.kind == "audio"}}},
            "application/json": {"schema": {"$ref": SCHEMAS + "VideoRequest"},
                                 "example": {"image": _example_image(), "width": 64, "height": 64, "num_frames": 4,
                                             "num_inference_steps": 2, "seed": 1}},
        },
    }
    return body, defs


def _component_schemas() -> dict:
    from pydantic.json_schema import models_json_schema

    from . import views

    models = [views.JobView, views.JobList, views.Deleted, views.Health, views.Ready]
    _, top = models_json_schema([(m, "validation") for m in models], ref_template=SCHEMAS + "{model}")
    out = dict(top.get("$defs", {}))
    from ..spec import GenerationSpec

    out["GenerationSpec"] = GenerationSpec.model_json_schema(ref_template=SCHEMAS + "{model}")
    out["GenerationSpec"].pop("$defs", None)
    from .views import OTHER_HTTP_CODE

    all_codes = sorted({c for codes in error_codes().values() for c in codes} | {OTHER_HTTP_CODE})
    out["Error"] = {
        "type": "object", "title": "Error", "required": ["error"], "additionalProperties": False,
        "properties": {"error": {"type": "object", "required": ["code", "message"], "additionalProperties": False,
                                 "properties": {"code": {"type": "string", "enum": all_codes},
                                                "message": {"type": "string"}}}},
        "description": "Every error answer: one code (see each response for the codes it can carry) and one "
                       "sentence that says what was wrong and what to do.",
    }
    return out


# --------------------------------------------------------------------------- the document
def build(app) -> dict:
    from fastapi.openapi.utils import get_openapi

    doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    schemas.update(_component_schemas())
    body, defs = request_bodies()
    schemas.update(defs)
    for (method, path), responses in _routes().items():
        op = doc.get("paths", {}).get(path, {}).get(method)
        if op is None:
            continue
        op["responses"] = responses
        if (method, path) == ("post", "/v1/videos"):
            op["requestBody"] = body
            for param in op.get("parameters", []):
                if param["name"].lower() == "idempotency-key":  # checked in api.create_video (400 otherwise)
                    param["schema"] = {"type": "string", "pattern": IDEMPOTENCY_KEY_PATTERN, "minLength": 1,
                                       "maxLength": 255}
                    param["description"] = ("any 1-255 visible ASCII characters: the same key again returns the "
                                            "same job (409 if the request differs)")
    # FastAPI's own validation error schemas are never answered (our handler answers 422 with Error)
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    return doc


def install(app) -> None:
    """Serve the contract at /openapi.json (built once, on first request)."""

    def openapi() -> dict:
        if app.openapi_schema is None:
            app.openapi_schema = build(app)
        return app.openapi_schema

    app.openapi = openapi


def declared_routes() -> set[tuple[str, str]]:
    return set(_routes())
