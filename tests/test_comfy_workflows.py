"""ComfyUI workflows in and out: API-format workflows written by hand exactly as ComfyUI's
"Export (API)" shapes them (ComfyUI's own SVD example: conditioning fps 6, playback 10),
ComfyUI outputs carrying the workflow in their metadata (written here the way ComfyUI's
SaveImage / SaveAnimatedPNG / SaveAnimatedWEBP and VideoHelperSuite's VHS_VideoCombine
write it), refusals that name the node and input, and the round trip
export-workflow -> generate --from."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from conftest import REPO, run_cli

EXAMPLE = REPO / "examples" / "svd_xt_workflow.json"


def svd_workflow(**changes) -> dict:
    """ComfyUI's SVD image-to-video example in API format; changes: {"NODE.input": value}."""
    wf = json.loads(EXAMPLE.read_text())
    for key, value in changes.items():
        nid, name = key.split(".")
        if value is None:
            wf[nid]["inputs"].pop(name)
        else:
            wf[nid]["inputs"][name] = value
    return wf


def tiny_workflow(save: dict | None = None) -> dict:
    """The same graph at the tiny model's size: 64x64, 3 frames, 2 steps, saved by VHS as H.264 MP4."""
    wf = svd_workflow(**{"1.ckpt_name": "tiny", "3.width": 64, "3.height": 64, "3.video_frames": 3, "5.steps": 2})
    wf["7"] = save or {
        "inputs": {"frame_rate": 10, "loop_count": 0, "filename_prefix": "AnimateDiff", "format": "video/h264-mp4",
                   "pix_fmt": "yuv420p", "crf": 19, "save_metadata": True, "pingpong": False, "save_output": True,
                   "images": ["6", 0]},
        "class_type": "VHS_VideoCombine",
        "_meta": {"title": "Video Combine 🎥🅥🅗🅢"},
    }
    return wf


def write_json(path, obj):
    path.write_text(json.dumps(obj))
    return path


# --------------------------------------------------------------------------- reading workflows
def test_comfyui_svd_example_maps_onto_the_spec():
    from stillmotion.comfy import parse_workflow, resolve_checkpoint

    wf = parse_workflow(json.loads(EXAMPLE.read_text()))
    assert wf.fields == {
        "width": 1024, "height": 576, "num_frames": 25, "motion_bucket_id": 127, "noise_aug_strength": 0.0,
        "conditioning_fps": 6, "fps": 10,  # the model is told 6 fps; the file plays at the save node's 10
        "min_guidance_scale": 1.0, "max_guidance_scale": 2.5, "num_inference_steps": 20, "seed": 42,
        "format": "webp",
    }
    assert wf.ckpt_name == "svd_xt.safetensors" and resolve_checkpoint(wf.ckpt_name) == "svd-xt"
    assert wf.origin["conditioning_fps"] == "node 3 SVD_img2vid_Conditioning.fps"
    assert wf.origin["fps"] == "node 7 SaveAnimatedWEBP.fps"
    # encoder-only settings are not silently dropped: they are listed
    assert any("quality" in n and "not applied" in n for n in wf.notes)


def test_post_prompt_body_advanced_sampler_vhs_and_constant_cfg():
    from stillmotion.comfy import parse_workflow

    wf = tiny_workflow()
    wf["7"]["inputs"]["pingpong"] = True
    wf["5"] = {"class_type": "KSamplerAdvanced", "inputs": {
        "add_noise": "enable", "noise_seed": 9, "steps": 2, "cfg": 3.0, "sampler_name": "euler", "scheduler": "karras",
        "start_at_step": 0, "end_at_step": 10000, "return_with_leftover_noise": "disable",
        "model": ["1", 0], "positive": ["3", 0], "negative": ["3", 1], "latent_image": ["3", 2]}}
    del wf["4"]  # no VideoLinearCFGGuidance: the same cfg on every frame
    fields = parse_workflow({"prompt": wf, "client_id": "abc"}).fields  # as POSTed to ComfyUI's /prompt
    assert fields["seed"] == 9 and fields["min_guidance_scale"] == fields["max_guidance_scale"] == 3.0
    assert (fields["format"], fields["loop"], fields["fps"], fields["conditioning_fps"]) == ("mp4", "pingpong", 10, 6)


def test_comfyui_core_video_savers():
    from stillmotion.comfy import parse_workflow

    webm = svd_workflow()
    webm["7"] = {"class_type": "SaveWEBM", "inputs": {"images": ["6", 0], "filename_prefix": "ComfyUI", "codec": "vp9",
                                                      "fps": 8.0, "crf": 32.0}}
    assert {k: parse_workflow(webm).fields[k] for k in ("format", "fps")} == {"format": "webm", "fps": 8}
    mp4 = svd_workflow()
    mp4["7"] = {"class_type": "CreateVideo", "inputs": {"images": ["6", 0], "fps": 12.0}}
    mp4["8"] = {"class_type": "SaveVideo", "inputs": {"video": ["7", 0], "filename_prefix": "video/ComfyUI",
                                                      "format": "auto", "codec": "auto"}}
    got = parse_workflow(mp4)
    assert (got.fields["format"], got.fields["fps"], got.origin["fps"]) == ("mp4", 12, "node 7 CreateVideo.fps")


def test_no_save_node_plays_at_the_conditioning_fps_and_normal_is_noted():
    from stillmotion.comfy import parse_workflow

    wf = svd_workflow(**{"5.scheduler": "normal"})
    del wf["7"]
    got = parse_workflow(wf)
    assert (got.fields["fps"], got.fields["conditioning_fps"]) == (6, None)  # one rate, as a plain spec says it
    assert any("'normal' ran as karras" in n for n in got.notes)


def test_the_example_workflow_runs_and_finds_its_image(tmp_path):
    from stillmotion.video import read_video

    out = tmp_path / "harbour.webp"
    code, _, err = run_cli("generate", "--from", str(EXAMPLE), "--model", "tiny", "--width", "64", "--height", "64",
                           "--frames", "2", "--steps", "1", "-o", str(out), "-q")
    assert code == 0, err
    frames, fps = read_video(out)  # LoadImage's harbour.jpg, found beside the workflow; the save node's 10 fps
    assert (frames.shape, fps) == ((2, 64, 64, 3), 10)


def test_known_checkpoints_and_comfyui_folder(tmp_path):
    from stillmotion.comfy import resolve_checkpoint
    from stillmotion.errors import ModelUnavailable

    assert resolve_checkpoint("svd.safetensors") == "svd"
    assert resolve_checkpoint("svd_xt_1_1.safetensors") == "svd-xt-1-1"
    ckpts = tmp_path / "ComfyUI" / "models" / "checkpoints" / "video"
    ckpts.mkdir(parents=True)
    (ckpts / "svd_xt.safetensors").write_bytes(b"x")
    # the file people already have wins over the hub name; subfolders as ComfyUI writes them (either slash)
    got = resolve_checkpoint("video\\svd_xt.safetensors", comfy_dir=tmp_path / "ComfyUI")
    assert got == str(ckpts / "svd_xt.safetensors")
    (tmp_path / "mine.safetensors").write_bytes(b"x")
    assert resolve_checkpoint("mine.safetensors", base_dir=tmp_path) == str(tmp_path / "mine.safetensors")
    with pytest.raises(ModelUnavailable, match="--comfyui-dir"):
        resolve_checkpoint("other.safetensors", base_dir=tmp_path)


REFUSALS = [
    ({"5.sampler_name": "dpmpp_2m"}, "node 5 KSampler.sampler_name"),
    ({"5.scheduler": "exponential"}, "node 5 KSampler.scheduler"),
    ({"5.denoise": 0.7}, "node 5 KSampler.denoise"),
    ({"5.seed": 2**40}, "node 5 KSampler.seed"),
    ({"5.cfg": 0.5}, "node 4 VideoLinearCFGGuidance.min_cfg"),  # min above max
    ({"3.width": 1000}, "node 3 SVD_img2vid_Conditioning.width"),
    ({"3.video_frames": 200}, "node 3 SVD_img2vid_Conditioning.video_frames"),
    ({"3.fps": ["9", 0]}, "node 3 SVD_img2vid_Conditioning.fps"),  # wired from another node
    ({"7.fps": 7.5}, "node 7 SaveAnimatedWEBP.fps"),
]


@pytest.mark.parametrize("changes,where", REFUSALS)
def test_settings_we_cannot_honour_exit_2_naming_node_and_input(tmp_path, image_file, changes, where):
    wf = write_json(tmp_path / "wf.json", svd_workflow(**changes))
    code, _, err = run_cli("generate", str(image_file), "--from", str(wf), "--model", "tiny", "-o", str(tmp_path / "o.mp4"))
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1 and where in err, err
    assert not (tmp_path / "o.mp4").exists()


def _with_node(wf, nid, node, rewire=None):
    wf = copy.deepcopy(wf)
    wf[nid] = node
    for target, value in (rewire or {}).items():
        t, name = target.split(".")
        wf[t]["inputs"][name] = value
    return wf


NODE_REFUSALS = [
    # an upscale between decode and save
    (lambda wf: _with_node(wf, "8", {"class_type": "ImageScale", "inputs": {
        "upscale_method": "lanczos", "width": 2048, "height": 1152, "crop": "disabled", "image": ["6", 0]}},
        {"7.images": ["8", 0]}), "node 8 ImageScale"),
    # a LoRA loader on the model
    (lambda wf: _with_node(wf, "8", {"class_type": "LoraLoaderModelOnly", "inputs": {
        "lora_name": "motion.safetensors", "strength_model": 1.0, "model": ["1", 0]}},
        {"4.model": ["8", 0]}), "node 8 LoraLoaderModelOnly"),
    (lambda wf: _with_node(wf, "7", {"class_type": "VHS_VideoCombine", "inputs": {
        "frame_rate": 8, "loop_count": 0, "filename_prefix": "x", "format": "video/h265-mp4", "pingpong": False,
        "save_output": True, "images": ["6", 0]}}), "node 7 VHS_VideoCombine.format"),
    (lambda wf: _with_node(wf, "7", {"class_type": "VHS_VideoCombine", "inputs": {
        "frame_rate": 8, "loop_count": 0, "filename_prefix": "x", "format": "video/h264-mp4", "pingpong": False,
        "save_output": True, "images": ["6", 0], "audio": ["9", 0]}}), "node 7 VHS_VideoCombine.audio"),
    (lambda wf: _with_node(wf, "7", {"class_type": "SaveWEBM", "inputs": {
        "images": ["6", 0], "filename_prefix": "x", "codec": "av1", "fps": 8.0, "crf": 32.0}}), "node 7 SaveWEBM.codec"),
    (lambda wf: _with_node(_with_node(wf, "7", {"class_type": "CreateVideo", "inputs": {
        "images": ["6", 0], "fps": 8.0, "audio": ["9", 0]}}), "8", {"class_type": "SaveVideo", "inputs": {
            "video": ["7", 0], "filename_prefix": "x", "format": "auto", "codec": "auto"}}), "node 7 CreateVideo.audio"),
    (lambda wf: _with_node(wf, "5", {"class_type": "KSamplerAdvanced", "inputs": {
        "add_noise": "enable", "noise_seed": 1, "steps": 20, "cfg": 2.5, "sampler_name": "euler", "scheduler": "karras",
        "start_at_step": 4, "end_at_step": 10000, "return_with_leftover_noise": "disable", "model": ["4", 0],
        "positive": ["3", 0], "negative": ["3", 1], "latent_image": ["3", 2]}}), "node 5 KSamplerAdvanced.start_at_step"),
]


@pytest.mark.parametrize("make,where", NODE_REFUSALS)
def test_nodes_we_cannot_run_exit_2_naming_the_node(tmp_path, image_file, make, where):
    wf = write_json(tmp_path / "wf.json", make(svd_workflow()))
    code, _, err = run_cli("generate", str(image_file), "--from", str(wf), "--model", "tiny")
    assert code == 2 and where in err, err


def test_ui_format_workflow_is_refused_with_the_way_to_export(tmp_path, image_file):
    ui = {"last_node_id": 7, "last_link_id": 9, "nodes": [{"id": 3, "type": "KSampler", "widgets_values": [42]}],
          "links": [[1, 1, 0, 3, 0, "MODEL"]], "version": 0.4}
    code, _, err = run_cli("generate", str(image_file), "--from", str(write_json(tmp_path / "ui.json", ui)))
    assert code == 2 and "Export (API)" in err, err


# --------------------------------------------------------------------------- workflows inside ComfyUI outputs
def _frames(n=3):
    from PIL import Image

    return [Image.fromarray(np.full((64, 64, 3), 40 * i, np.uint8)) for i in range(n)]


def test_png_text_chunk_as_comfyui_saveimage_writes_it(tmp_path):
    from PIL.PngImagePlugin import PngInfo

    from stillmotion.comfy import workflow_from_media

    wf = svd_workflow()
    info = PngInfo()
    info.add_text("prompt", json.dumps(wf))
    info.add_text("workflow", json.dumps({"nodes": [], "links": []}))
    _frames(1)[0].save(tmp_path / "ComfyUI_00001_.png", pnginfo=info)
    assert workflow_from_media(tmp_path / "ComfyUI_00001_.png") == wf


def test_animated_png_comf_chunk_as_saveanimatedpng_writes_it(tmp_path):
    from PIL.PngImagePlugin import PngInfo

    from stillmotion.comfy import workflow_from_media

    wf = svd_workflow()
    info = PngInfo()
    info.add(b"comf", b"prompt\0" + json.dumps(wf).encode("latin-1"), after_idat=True)
    info.add(b"comf", b"workflow\0" + b"{}", after_idat=True)
    frames = _frames()
    frames[0].save(tmp_path / "a.png", pnginfo=info, compress_level=4, save_all=True, duration=100,
                   append_images=frames[1:])
    assert workflow_from_media(tmp_path / "a.png") == wf


def test_webp_exif_as_saveanimatedwebp_writes_it(tmp_path, image_file):
    from stillmotion.comfy import workflow_from_media

    wf = svd_workflow(**{"5.sampler_name": "dpmpp_2m"})
    frames = _frames()
    exif = frames[0].getexif()
    exif[0x0110] = "prompt:{}".format(json.dumps(wf))
    exif[0x010F] = "workflow:{}".format(json.dumps({"nodes": []}))
    out = tmp_path / "ComfyUI_00001_.webp"
    frames[0].save(out, save_all=True, duration=int(1000.0 / 10), append_images=frames[1:], exif=exif,
                   lossless=False, quality=85, method=4)
    assert workflow_from_media(out) == wf
    # and --from reads it there: this one asks for a sampler we refuse, before any model loads
    code, _, err = run_cli("generate", str(image_file), "--from", str(out), "--model", "tiny")
    assert code == 2 and "node 5 KSampler.sampler_name" in err, err


def _mp4(path, tags: dict, options=None):
    import av

    with av.open(str(path), "w", options=options or {}) as c:
        for k, v in tags.items():
            c.metadata[k] = v
        s = c.add_stream("libx264", rate=8)
        s.width, s.height, s.pix_fmt = 64, 64, "yuv420p"
        for im in _frames():
            for packet in s.encode(av.VideoFrame.from_image(im)):
                c.mux(packet)
        for packet in s.encode():
            c.mux(packet)


def test_mp4_tags_as_videohelpersuite_writes_them(tmp_path):
    from stillmotion.comfy import workflow_from_media

    wf = tiny_workflow()
    # today's VHS: -metadata prompt=... with -movflags use_metadata_tags
    _mp4(tmp_path / "new.mp4", {"prompt": json.dumps(wf), "workflow": "{}"}, {"movflags": "use_metadata_tags"})
    # older VHS: one comment tag holding {"prompt": ..., "workflow": ...}
    _mp4(tmp_path / "old.mp4", {"comment": json.dumps({"prompt": wf, "workflow": {}})})
    assert workflow_from_media(tmp_path / "new.mp4") == wf
    assert workflow_from_media(tmp_path / "old.mp4") == wf
    _mp4(tmp_path / "none.mp4", {})
    assert workflow_from_media(tmp_path / "none.mp4") is None


# --------------------------------------------------------------------------- generating, and the way back
def test_generate_from_workflow_flags_win_then_export_round_trip(tmp_path, image_file):
    import av

    from stillmotion.comfy import parse_workflow
    from stillmotion.spec import GenerationSpec
    from stillmotion.video import read_sidecar

    wf = write_json(tmp_path / "wf.json", tiny_workflow())
    out = tmp_path / "clip.mp4"
    code, _, err = run_cli("generate", str(image_file), "--from", str(wf), "--seed", "7", "-o", str(out), "-q")
    assert code == 0, err
    with av.open(str(out)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
        rate = c.streams.video[0].average_rate
    assert len(frames) == 3 and frames[0].shape == (64, 64, 3) and rate == 10  # the save node's playback rate
    side = read_sidecar(out)
    spec = side["spec"]
    assert (spec["seed"], spec["fps"], spec["conditioning_fps"], spec["num_inference_steps"]) == (7, 10, 6, 2)
    assert side["model"]["name"] == "tiny"
    assert side["workflow"]["source"] == str(wf) and side["workflow"]["ckpt_name"] == "tiny"
    assert any("crf" in n for n in side["workflow"]["notes"])

    # export the sidecar as a ComfyUI workflow, then feed it back: the same spec
    exported = tmp_path / "clip.workflow.json"
    code, text, err = run_cli("export-workflow", str(tmp_path / "clip.json"), "-o", str(exported))
    assert code == 0 and exported.is_file(), err
    prompt = json.loads(exported.read_text())
    assert {n["class_type"] for n in prompt.values()} == {
        "ImageOnlyCheckpointLoader", "LoadImage", "SVD_img2vid_Conditioning", "VideoLinearCFGGuidance", "KSampler",
        "VAEDecode", "VHS_VideoCombine"}
    assert prompt["3"]["inputs"]["fps"] == 6 and prompt["7"]["inputs"]["frame_rate"] == 10
    again = GenerationSpec.build(**parse_workflow(prompt).fields)
    assert again == GenerationSpec.build(**spec)

    out2 = tmp_path / "again.mp4"
    code, _, err = run_cli("generate", str(image_file), "--from", str(exported), "-o", str(out2), "-q")
    assert code == 0, err
    assert read_sidecar(out2)["spec"] == spec
    with av.open(str(out2)) as c:
        frames2 = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert all(np.array_equal(a, b) for a, b in zip(frames, frames2))


@pytest.mark.parametrize("spec", [
    {"format": "webp", "fps": 10, "conditioning_fps": 6, "loop": "pingpong"},
    {"format": "png", "fps": 8, "interpolate": 2, "loop": "blend", "resize": "pad", "decode_chunk_size": 4},
    {"format": "gif", "fps": 7, "speed": "fast", "cache_interval": 4, "segments": 2},
    {"format": "webm", "fps": 6, "loop": "pingpong", "interpolate_fps": 24.0, "interpolate_backend": "flow"},
])
def test_export_then_parse_gives_the_same_spec(spec):
    from stillmotion.comfy import export_workflow, parse_workflow
    from stillmotion.spec import GenerationSpec

    full = GenerationSpec.build(width=128, height=64, num_frames=6, num_inference_steps=3, motion_bucket_id=90,
                                noise_aug_strength=0.05, min_guidance_scale=1.5, max_guidance_scale=3.0, seed=123,
                                **spec)
    record = {"spec": full.model_dump(mode="json"), "model": {"name": "svd-xt"}, "input": {"source": "/x/cat.jpg"}}
    prompt, notes = export_workflow(record)
    assert prompt["1"]["inputs"]["ckpt_name"] == "svd_xt.safetensors" and prompt["2"]["inputs"]["image"] == "cat.jpg"
    assert GenerationSpec.build(**parse_workflow(json.loads(json.dumps(prompt))).fields) == full
    if full.interpolate > 1 or full.speed == "fast":
        assert any("_meta.stillmotion" in n for n in notes)  # said out loud: ComfyUI will not do it


def test_export_names_a_single_file_checkpoint_by_its_file_name():
    from stillmotion.comfy import export_workflow
    from stillmotion.spec import GenerationSpec

    spec = GenerationSpec.build(width=64, height=64, num_frames=2, num_inference_steps=1, fps=7, motion_bucket_id=127,
                                noise_aug_strength=0.02, min_guidance_scale=1.0, max_guidance_scale=3.0, seed=1)
    path = "/home/me/ComfyUI/models/checkpoints/svd_xt_1_1.safetensors"
    record = {"spec": spec.model_dump(mode="json"), "input": {},
              "model": {"name": path, "source": "single-file", "single_file": {"path": path, "sha256": "ab"}}}
    prompt, _ = export_workflow(record)
    assert prompt["1"]["inputs"]["ckpt_name"] == "svd_xt_1_1.safetensors"
    assert prompt["3"]["inputs"]["fps"] == 7 and prompt["7"]["class_type"] == "VHS_VideoCombine"


def test_conditioning_fps_changes_only_the_conditioning(tiny_engine, image_file):
    from stillmotion.spec import GenerationSpec

    base = dict(width=64, height=64, num_frames=2, num_inference_steps=1, seed=3)
    plain = tiny_engine.generate(str(image_file), GenerationSpec(fps=6, **base))
    same = tiny_engine.generate(str(image_file), GenerationSpec(fps=6, conditioning_fps=6, **base))
    told12 = tiny_engine.generate(str(image_file), GenerationSpec(fps=6, conditioning_fps=12, **base))
    at12 = tiny_engine.generate(str(image_file), GenerationSpec(fps=12, **base))
    assert np.array_equal(plain.frames, same.frames)  # unset or equal: the frames of before
    assert not np.array_equal(plain.frames, told12.frames)  # the model hears 12 ...
    assert np.array_equal(told12.frames, at12.frames)  # ... exactly as if the clip played at 12
    assert told12.fps == 6 and told12.metadata["spec"]["conditioning_fps"] == 12


# --------------------------------------------------------------------------- API and batch
def test_api_accepts_a_workflow_object_explicit_fields_win(tmp_path, image_file):
    import base64

    from fastapi.testclient import TestClient

    from no_workers import app_without_workers

    app = app_without_workers(data_dir=tmp_path / "data", ui=False)
    img64 = base64.b64encode(image_file.read_bytes()).decode()
    with TestClient(app) as c:
        r = c.post("/v1/videos", json={"image": img64, "workflow": tiny_workflow(), "seed": 5})
        assert r.status_code == 202, r.text
        spec = c.get(f"/v1/videos/{r.json()['id']}").json()["spec"]
        assert (spec["seed"], spec["fps"], spec["conditioning_fps"], spec["num_frames"], spec["format"]) == (5, 10, 6, 3, "mp4")
        # multipart: the workflow as JSON text
        r = c.post("/v1/videos", files={"image": ("i.png", image_file.read_bytes(), "image/png")},
                   data={"workflow": json.dumps(tiny_workflow()), "num_frames": "2"})
        assert r.status_code == 202, r.text
        assert c.get(f"/v1/videos/{r.json()['id']}").json()["spec"]["num_frames"] == 2
        # refused with the node named; a workflow for another checkpoint than the server's is refused too
        bad = c.post("/v1/videos", json={"image": img64, "workflow": svd_workflow(**{"5.sampler_name": "ddim"})})
        assert bad.status_code == 422 and "node 5 KSampler.sampler_name" in bad.json()["error"]["message"]
        other = c.post("/v1/videos", json={"image": img64, "workflow": svd_workflow(**{"3.width": 64, "3.height": 64})})
        assert other.status_code == 422 and "svd-xt" in other.json()["error"]["message"], other.text


def test_batch_manifest_workflow_column_and_jsonl_object(tmp_path, image_file):
    from stillmotion.batch import plan_batch
    from stillmotion.errors import InvalidInput

    write_json(tmp_path / "wf.json", tiny_workflow())
    (tmp_path / "a.png").write_bytes(image_file.read_bytes())
    csv = tmp_path / "list.csv"
    csv.write_text("image,workflow,seed\na.png,wf.json,11\n")
    plan = plan_batch(csv, tmp_path / "out", model="tiny", fields={"num_inference_steps": 1})
    req = plan.items[0].requested
    assert (req["seed"], req["fps"], req["conditioning_fps"], req["format"]) == (11, 10, 6, "mp4")
    assert req["num_inference_steps"] == 1  # the command's flag wins over the workflow

    jsonl = tmp_path / "list.jsonl"
    jsonl.write_text(json.dumps({"image": "a.png", "workflow": tiny_workflow(), "frames": 2}) + "\n")
    req = plan_batch(jsonl, tmp_path / "out2", model="tiny").items[0].requested
    assert (req["num_frames"], req["seed"], req["conditioning_fps"]) == (2, 42, 6)

    jsonl.write_text(json.dumps({"image": "a.png", "workflow": svd_workflow(**{"5.denoise": 0.5})}) + "\n")
    with pytest.raises(InvalidInput, match=r"line 1: .*node 5 KSampler.denoise"):
        plan_batch(jsonl, tmp_path / "out3", model="tiny")


def test_export_loads_the_model_the_record_names_else_the_default_and_says_so():
    from stillmotion.comfy import export_workflow
    from stillmotion.comfy.checkpoints import CHECKPOINT_FOR_MODEL
    from stillmotion.models.registry import DEFAULT_MODEL
    from stillmotion.spec import GenerationSpec

    spec = GenerationSpec.build(width=64, height=64, num_frames=2, num_inference_steps=1, fps=7, motion_bucket_id=127,
                                noise_aug_strength=0.02, min_guidance_scale=1.0, max_guidance_scale=3.0, seed=1)
    record = {"spec": spec.model_dump(mode="json"), "model": {"name": "svd"}}
    prompt, notes = export_workflow(record)
    assert prompt["1"]["inputs"]["ckpt_name"] == "svd.safetensors" and not notes
    prompt, notes = export_workflow({"spec": record["spec"]})
    assert prompt["1"]["inputs"]["ckpt_name"] == CHECKPOINT_FOR_MODEL[DEFAULT_MODEL]
    assert any("names no model" in n for n in notes)
