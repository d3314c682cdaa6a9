"""The OpenAPI contract (/openapi.json) says what the server does: both request bodies with every
GenerationSpec field, every status each route answers with the one error shape and its codes, the media
types; schemathesis, run over a real server in all its phases, finds nothing; SSE resumes from Last-Event-ID."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from conftest import ServeProcess

SMALL = {"width": 64, "height": 64, "num_frames": 4, "num_inference_steps": 2}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    # a short queue: the fuzzer's accepted submits cannot pile up work, and a full queue (503) is part of the run
    srv = ServeProcess(tmp_path_factory.mktemp("contract"), "--no-ui", "--max-queue", "3")
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def doc(server) -> dict:
    return httpx.get(server.url + "/openapi.json", timeout=30).json()


def _resolve(doc: dict, schema: dict) -> dict:
    ref = schema.get("$ref")
    return doc["components"]["schemas"][ref.rsplit("/", 1)[1]] if ref else schema


# --------------------------------------------------------------------------- the document
def test_submit_declares_both_bodies_with_every_spec_field(doc):
    from stillmotion.server.submit import INPUTS
    from stillmotion.spec import GenerationSpec

    spec = GenerationSpec.model_json_schema()["properties"]
    body = doc["paths"]["/v1/videos"]["post"]["requestBody"]["content"]
    form = _resolve(doc, body["multipart/form-data"]["schema"])
    js = _resolve(doc, body["application/json"]["schema"])
    assert set(spec) | set(INPUTS) == set(form["properties"]) == set(js["properties"])
    assert form["required"] == js["required"] == ["image"]
    assert form["properties"]["image"]["format"] == "binary" and js["properties"]["image"]["type"] == "string"
    for name, prop in spec.items():
        assert js["properties"][name] == prop, name  # type, bounds, default and description, as GenerationSpec says
    # a form field has no null: left out (or empty) means the default
    frames = form["properties"]["num_frames"]
    # the schema holds what every family takes; each family narrows it (SVD: at most 64 frames, sizes of 64)
    assert "anyOf" not in frames and (frames["type"], frames["minimum"], frames["maximum"]) == ("integer", 1, 257)
    assert form["properties"]["width"]["multipleOf"] == 16 and form["properties"]["interpolate"]["enum"] == [1, 2, 3, 4, 8]
    assert js["properties"]["seed"]["default"] == -1 and js["properties"]["format"]["enum"][0] == "mp4"
    # the model families that take a field (x-families): a request that gives another family's field is refused
    for body_props in (form["properties"], js["properties"]):
        for name in ("prompt", "negative_prompt", "guidance_scale"):
            assert body_props[name]["x-families"] == ["wan", "ltx2", "ltx", "framepack"], name
        for name in ("stg_scale", "modality_scale", "audio_guidance_scale"):
            assert body_props[name]["x-families"] == ["ltx2"], name
        assert body_props["guidance_rescale"]["x-families"] == ["ltx2", "ltx"]
        for name in ("true_cfg_scale", "latent_window_size"):
            assert body_props[name]["x-families"] == ["framepack"], name
        for name in ("motion_bucket_id", "noise_aug_strength", "min_guidance_scale", "max_guidance_scale",
                     "conditioning_fps", "decode_chunk_size"):
            assert body_props[name]["x-families"] == ["svd"], name
        assert "x-families" not in body_props["num_frames"] and "x-families" not in body_props["seed"]
    prompt = form["properties"]["prompt"]
    assert (prompt["type"], prompt["maxLength"]) == ("string", 4000) and "anyOf" not in prompt
    assert js["properties"]["guidance_scale"]["anyOf"][0] == {"type": "number", "minimum": 0.0, "maximum": 30.0}


def test_every_route_declares_its_statuses_with_the_error_schema_and_codes(doc, server):
    from stillmotion.errors import StillmotionError
    from stillmotion.server.contract import declared_routes, error_codes

    ops = {(m, p): op for p, item in doc["paths"].items() for m, op in item.items()}
    assert set(ops) == declared_routes()
    error = doc["components"]["schemas"]["Error"]
    codes = set(error["properties"]["error"]["properties"]["code"]["enum"])
    todo = [StillmotionError]
    while todo:  # every error of errors.py is a listed code
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        assert cls.code in codes
    for (method, path), op in ops.items():
        statuses = set(op["responses"])
        if path.startswith("/v1/"):
            assert "401" in statuses, (method, path)
        if "{job_id}" in path:
            assert "404" in statuses, (method, path)
        for status, resp in op["responses"].items():
            if int(status) >= 400 and list(resp.get("content", {})) == ["application/json"] and path.startswith("/v1/"):
                assert resp["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
                assert all(c in resp["description"] for c in error_codes()[int(status)]), (path, status)
    post = ops[("post", "/v1/videos")]["responses"]
    assert {"200", "202", "400", "401", "409", "413", "422", "503"} <= set(post)
    assert "Retry-After" in post["503"]["headers"] and "queue_full" in post["503"]["description"]
    assert "Retry-After" in ops[("get", "/readyz")]["responses"]["503"]["headers"]
    assert list(ops[("get", "/metrics")]["responses"]["200"]["content"]) == ["text/plain"]
    assert list(ops[("get", "/v1/videos/{job_id}/events")]["responses"]["200"]["content"]) == ["text/event-stream"]
    content = ops[("get", "/v1/videos/{job_id}/content")]["responses"]
    assert "video/mp4" in content["200"]["content"] and "video/mp4" in content["206"]["content"]
    assert {"Range"} <= {p["name"] for p in ops[("get", "/v1/videos/{job_id}/content")]["parameters"]}
    assert {"last-event-id"} <= {p["name"].lower() for p in ops[("get", "/v1/videos/{job_id}/events")]["parameters"]}
    # the answers carry what the document says
    with httpx.Client(base_url=server.url, timeout=60) as c:
        for method, url, status in [("GET", "/v1/videos/vid_00000000000000000000", 404),
                                    ("GET", "/v1/videos/vid_00000000000000000000/content", 404),
                                    ("GET", "/v1/videos/vid_00000000000000000000/events", 404),
                                    ("POST", "/v1/videos/vid_00000000000000000000/cancel", 404),
                                    ("DELETE", "/v1/videos/vid_00000000000000000000", 404),
                                    ("GET", "/v1/videos?limit=0", 422)]:
            r = c.request(method, url)
            assert r.status_code == status and r.json()["error"]["code"] in error_codes()[status], (url, r.text)
        r = c.post("/v1/videos", json={"image": "not an image"}, headers={"Idempotency-Key": "bad key"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "bad_request"
        r = c.post("/v1/videos", json={"image": "aGVsbG8="})
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_image"
        assert c.get("/metrics").headers["content-type"].startswith("text/plain")


# Random bytes are almost never an image: in about half the submits this hook puts a real small PNG in
# `image` and caps the sizes, so the fuzzer's specs also run as jobs (formats, loops, interpolation, ...).
HOOKS = """
import base64, io
import schemathesis
from PIL import Image

buf = io.BytesIO()
Image.linear_gradient("L").resize((64, 64)).convert("RGB").save(buf, "PNG")
PNG = buf.getvalue()
CAPS = {"num_frames": 4, "num_inference_steps": 2, "segments": 2, "duration": 1.0}


@schemathesis.hook
def map_body(context, body):
    op = context.operation
    if op is None or op.method.lower() != "post" or op.path != "/v1/videos" or not isinstance(body, dict):
        return body
    if len(repr(sorted(body))) % 2:
        return body
    body = dict(body, width=64, height=64)
    body["image"] = base64.b64encode(PNG).decode() if isinstance(body.get("image"), str) else PNG
    for k, cap in CAPS.items():
        if isinstance(body.get(k), (int, float)) and not isinstance(body[k], bool) and body[k] > cap:
            body[k] = cap
    return body
"""


def test_schemathesis_finds_nothing_in_any_phase(server, tmp_path):
    """Examples, coverage, fuzzing and stateful (the job links) against the live server; a small
    max-examples keeps it within CI's time."""
    (tmp_path / "st_hooks.py").write_text(HOOKS)
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "st_hooks", "PYTHONPATH": str(tmp_path)}
    st = Path(sys.executable).with_name("schemathesis")
    cmd = [str(st), "run", server.url + "/openapi.json", "--phases", "examples,coverage,fuzzing,stateful",
           "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,"
           "response_schema_conformance", "--max-examples", "5", "--workers", "1", "--seed", "7",
           "--request-timeout", "60", "--max-failures", "20"]
    r = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=500)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-8000:]
    assert "✅ Stateful" in out and "✅ Fuzzing" in out and "✅ Coverage" in out and "✅ Examples" in out, out[-3000:]


# --------------------------------------------------------------------------- SSE resumes
def _events(c: httpx.Client, job_id: str, last_id: str | None = None) -> list[tuple[str, str, dict]]:
    out, eid, name = [], None, None
    headers = {"Last-Event-ID": last_id} if last_id is not None else {}
    with c.stream("GET", f"/v1/videos/{job_id}/events", headers=headers) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("id: "):
                eid = line[4:]
            elif line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                out.append((eid, name, json.loads(line[6:])))
    return out


def test_sse_every_event_has_an_id_and_resumes_from_last_event_id(server, image_file):
    with httpx.Client(base_url=server.url, timeout=120) as c:
        with open(image_file, "rb") as f:
            job = c.post("/v1/videos", files={"image": f}, data={k: str(v) for k, v in SMALL.items()}).json()
        first = _events(c, job["id"])
        ids = [int(e[0]) for e in first]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)  # every event an id, growing
        assert first[-1][1] == "succeeded"
        # the job is over: the stream replays nothing the client saw, only the final event
        again = _events(c, job["id"], last_id=first[0][0])
        assert [e[1] for e in again] == ["succeeded"] and again[0][0] == first[-1][0]
        assert [e[1] for e in _events(c, job["id"], last_id=first[-1][0])] == ["succeeded"]
        # an id that is not ours means "from the start"
        assert _events(c, job["id"], last_id="garbage")[-1][1] == "succeeded"

        # while it runs: reconnecting after an event gets only newer ones, ending with the last
        with open(image_file, "rb") as f:
            job = c.post("/v1/videos", files={"image": f},
                         data={**{k: str(v) for k, v in SMALL.items()}, "num_inference_steps": "8"}).json()
        seen: list = []
        with c.stream("GET", f"/v1/videos/{job['id']}/events") as r:
            lines = r.iter_lines()
            for line in lines:  # read up to the first progress event, then drop the connection
                if line.startswith("id: "):
                    seen.append(line[4:])
                if line.startswith("event: progress"):
                    break
        rest = _events(c, job["id"], last_id=seen[-1])
        assert rest[-1][1] == "succeeded"
        assert all(int(eid) > int(seen[-1]) for eid, _, _ in rest)
