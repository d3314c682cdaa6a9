"""The Wan weights ComfyUI users already have, against diffusers' stock WanImageToVideoPipeline.

Each layout is built from tiny Wan models (tests/wan_comfy_layout.py) and laid out as in a ComfyUI folder:
Comfy-Org's split files in the original Wan key layout (models/diffusion_models, models/vae), a GGUF transformer
(Q8_0, written with the gguf package), and the Wan diffusers repo in a Hugging Face cache holding only what
diffusers has no converter for (text encoder and tokenizer, CLIP vision, the 2.2 VAE). `stillmotion generate
--comfyui-dir DIR --model FILE` must give the frames the stock pipeline gives from the same weights saved as a
diffusers folder, within 2 levels; everything runs offline (HF_HUB_OFFLINE=1).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import wan_comfy_layout as L
from conftest import offline_hub, run_cli
from PIL import Image

ARGS = ["--device", "cpu", "--frames", "5", "--steps", "2", "--seed", "3", "--format", "png", "--width", "64",
        "--height", "64", "--prompt", "a boat at sea", "--negative-prompt", "blurry", "--guidance", "4.0"]
REPOS = {"wan2.1": "Wan-AI/Wan2.1-I2V-14B-480P-Diffusers", "wan2.2-a14b": "Wan-AI/Wan2.2-I2V-A14B-Diffusers",
         "wan2.2-ti2v-5b": "Wan-AI/Wan2.2-TI2V-5B-Diffusers"}
FILES = {"wan2.1": "wan2.1_i2v_480p_14B_fp16.safetensors", "wan2.2-a14b": "wan2.2_i2v_high_noise_14B_fp16.safetensors",
         "wan2.2-ti2v-5b": "wan2.2_ti2v_5B_fp16.safetensors", "gguf": "wan2.1_i2v_480p_14B_Q8_0.gguf"}


@pytest.fixture(scope="module")
def comfy(tmp_path_factory):
    """A ComfyUI folder with every layout, the reference diffusers folders, and a hub cache (env set per test)."""
    import torch

    base = tmp_path_factory.mktemp("wancomfy")
    root, hub = base / "ComfyUI", base / "hub"
    dm = root / "models" / "diffusion_models"
    refs = {}
    for variant in REPOS:
        comps = L.comfy_components(variant)
        refs[variant] = L.save_folder(comps, base / variant)
        names = {"wan2.2-a14b": ("transformer", "transformer_2")}.get(variant, ("transformer",))
        for name in names:
            file = FILES[variant].replace("high_noise", "low_noise") if name == "transformer_2" else FILES[variant]
            prefix = "model.diffusion_model." if variant == "wan2.2-ti2v-5b" else ""  # both ways files come
            L.write_safetensors(comps[name], dm / file, "transformer", prefix=prefix)
        parts = ("text_encoder", "tokenizer")
        if variant == "wan2.1":
            L.write_safetensors(comps["vae"], root / "models" / "vae" / "wan_2.1_vae.safetensors", "vae")
            parts += ("image_encoder", "image_processor")
            held = L.write_gguf(comps["transformer"], dm / FILES["gguf"])  # the Q8_0 values, dequantized
            comps["transformer"].load_state_dict({k: v.to(torch.float32) for k, v in held.items()})
            refs["gguf"] = L.save_folder(comps, base / "gguf")
        if variant == "wan2.2-ti2v-5b":
            parts += ("vae",)
            L.write_recognisable_vae22(comps["vae"], root / "models" / "vae" / "wan2.2_vae.safetensors")
        L.hub_snapshot(hub, REPOS[variant], refs[variant], parts)
    # ComfyUI's text encoder and CLIP vision files, which diffusers has no converter for (recognised, listed)
    L.write_named(root / "models" / "text_encoders" / "umt5_xxl_fp16.safetensors",
                  {"encoder.block.0.layer.0.SelfAttention.q.weight": (8, 8), "shared.weight": (16, 8)})
    L.write_named(root / "models" / "clip_vision" / "clip_vision_h.safetensors",
                  {"vision_model.embeddings.patch_embedding.weight": (8, 3, 4, 4)})
    return {"root": root, "hub": hub, "refs": refs, "dm": dm}


@pytest.fixture
def offline(comfy, monkeypatch):
    offline_hub(monkeypatch, comfy["hub"])
    return comfy


def _frames(folder) -> np.ndarray:
    return np.stack([np.asarray(Image.open(f).convert("RGB")) for f in sorted(folder.glob("*.png"))])


def _stock(folder, image: Image.Image) -> np.ndarray:
    import torch
    from diffusers import WanImageToVideoPipeline

    pipe = WanImageToVideoPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    video = pipe(image=image, prompt="a boat at sea", negative_prompt="blurry", height=64, width=64, num_frames=5,
                 num_inference_steps=2, guidance_scale=4.0, generator=torch.Generator("cpu").manual_seed(3),
                 output_type="np").frames[0]
    return np.clip(np.round(video * 255.0), 0, 255).astype(np.uint8)


def _square(tmp_path) -> Image.Image:
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    img.save(tmp_path / "in.png")
    return img


@pytest.mark.parametrize("layout", ["wan2.1", "wan2.2-a14b", "wan2.2-ti2v-5b", "gguf"])
def test_comfyui_files_give_the_stock_pipelines_frames(offline, tmp_path, layout):
    img = _square(tmp_path)
    out = tmp_path / "out"
    code, _, err = run_cli("generate", str(tmp_path / "in.png"), "--comfyui-dir", str(offline["root"]),
                           "--model", FILES[layout], *ARGS, "-o", str(out))
    assert code == 0, err
    ours = _frames(out)
    stock = _stock(offline["refs"][layout], img)
    assert ours.shape == stock.shape == (5, 64, 64, 3)
    assert np.abs(ours.astype(int) - stock.astype(int)).max() <= 2
    record = json.loads((tmp_path / "out.json").read_text())["model"]["single_file"]
    assert record["path"].endswith(FILES[layout]) and len(record["sha256"]) == 64
    hub_parts = {k for k, v in record["components"].items() if "repo_id" in v}
    assert "text_encoder" in hub_parts and ("vae" in hub_parts) == (layout == "wan2.2-ti2v-5b")
    assert ("transformer_2" in record["components"]) == (layout == "wan2.2-a14b")


def test_models_list_labels_every_wan_file(offline):
    code, out, err = run_cli("models", "list", "--comfyui-dir", str(offline["root"]), "--json")
    assert code == 0, err
    rows = {r["name"]: r for r in json.loads(out)}
    labels = {n: r["description"] for n, r in rows.items()}
    assert labels["diffusion_models/" + FILES["wan2.1"]].startswith("Wan 2.1 I2V transformer (480p")
    assert labels["diffusion_models/" + FILES["wan2.2-a14b"]].startswith("Wan 2.2 I2V A14B high-noise expert")
    assert labels["diffusion_models/wan2.2_i2v_low_noise_14B_fp16.safetensors"].startswith("Wan 2.2 I2V A14B low-noise")
    assert labels["diffusion_models/" + FILES["wan2.2-ti2v-5b"]].startswith("Wan 2.2 TI2V-5B transformer")
    assert labels["diffusion_models/" + FILES["gguf"]].endswith(", GGUF")
    assert labels["vae/wan_2.1_vae.safetensors"].startswith("Wan 2.1 VAE")
    assert "no converter" in labels["vae/wan2.2_vae.safetensors"]
    assert "no converter" in labels["text_encoders/umt5_xxl_fp16.safetensors"]
    assert "no converter" in labels["clip_vision/clip_vision_h.safetensors"]
    assert rows["diffusion_models/" + FILES["wan2.1"]]["kind"] == "video"
    assert rows["vae/wan_2.1_vae.safetensors"]["kind"] == "part"


def test_without_the_repos_components_cached_it_refuses_offline_with_the_command(offline, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    _square(tmp_path)
    code, _, err = run_cli("generate", str(tmp_path / "in.png"), "--comfyui-dir", str(offline["root"]),
                           "--model", FILES["wan2.2-ti2v-5b"], *ARGS, "-o", str(tmp_path / "out"))
    assert code == 3, err
    assert "hf download Wan-AI/Wan2.2-TI2V-5B-Diffusers" in err and "'vae/*'" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


def test_a_part_or_a_lone_expert_is_refused_saying_what_to_pass(offline, tmp_path):
    _square(tmp_path)
    code, _, err = run_cli("generate", str(tmp_path / "in.png"), "--model",
                           str(offline["root"] / "models" / "vae" / "wan_2.1_vae.safetensors"), *ARGS)
    assert code == 3 and "is a Wan 2.1 VAE, not a model" in err, err
    lone = tmp_path / "models" / "diffusion_models" / "wan2.2_i2v_high_noise_14B_fp8.safetensors"
    lone.parent.mkdir(parents=True)
    lone.write_bytes((offline["dm"] / FILES["wan2.2-a14b"]).read_bytes())
    code, _, err = run_cli("generate", str(tmp_path / "in.png"), "--model", str(lone), *ARGS)
    assert code == 3 and "needs both" in err and "wan2.2_i2v_low_noise_14B_fp8.safetensors" in err, err


def test_a_gguf_transformer_stays_quantised(offline):
    """The GGUF file loads through diffusers' GGUFQuantizationConfig: Q8_0 weights stay Q8_0 (dequantised per
    forward), the rest as stored."""
    import torch

    from stillmotion.models.wan_files import load_components, resolve_wan_file

    from gguf import GGUFReader

    stored = {t.name: len(t.shape) for t in GGUFReader(str(offline["dm"] / FILES["gguf"])).tensors}
    assert stored["patch_embedding.weight"] == 2  # stored flattened, its 5-D shape in comfy.gguf.orig_shape
    folder, record = resolve_wan_file(offline["dm"] / FILES["gguf"])
    assert record["format"] == "gguf"
    transformer = load_components(folder, torch.float32)["transformer"]
    q = transformer.blocks[0].attn1.to_q.weight
    assert type(q).__name__ == "GGUFParameter" and q.quant_type.name == "Q8_0"
    # a memory plan with fp8 storage leaves the quantised weights as they are (no layerwise casting over them)
    from diffusers import WanImageToVideoPipeline

    from stillmotion.engine.dit_plan import DiTPlan as WanPlan
    from stillmotion.families import get_family

    pipe = WanImageToVideoPipeline(**load_components(folder, torch.float32))
    in_force = get_family("wan").apply_plan(pipe, WanPlan(fp8=True), None, "cpu", torch.float32)
    assert not in_force.fp8 and type(pipe.transformer.blocks[0].attn1.to_q.weight).__name__ == "GGUFParameter"


# --- ComfyUI Wan workflows: export-workflow writes them, generate --from runs them ---

@pytest.mark.parametrize("layout", ["wan2.1", "wan2.2-a14b", "wan2.2-ti2v-5b"])
def test_a_wan_workflow_round_trips_to_the_same_spec_and_frames(offline, tmp_path, layout):
    """generate (ComfyUI files) -> export-workflow -> generate --from WORKFLOW.json: the same spec and frames; the
    workflow has ComfyUI's Wan nodes with the model's files and shift."""
    _square(tmp_path)
    code, _, err = run_cli("generate", str(tmp_path / "in.png"), "--comfyui-dir", str(offline["root"]),
                           "--model", FILES[layout], *ARGS, "-o", str(tmp_path / "a"))
    assert code == 0, err
    code, out, err = run_cli("export-workflow", str(tmp_path / "a.json"), "-o", str(tmp_path / "wf.json"))
    assert code == 0, err
    prompt = json.loads((tmp_path / "wf.json").read_text())
    by_class = {n["class_type"]: n["inputs"] for n in prompt.values()}
    unets = [n["inputs"]["unet_name"] for n in prompt.values() if n["class_type"] == "UNETLoader"]
    if layout == "wan2.2-a14b":  # one KSamplerAdvanced per expert, meeting where the boundary puts the switch
        assert unets == [FILES[layout], FILES[layout].replace("high", "low")]
        high, low = (n["inputs"] for n in prompt.values() if n["class_type"] == "KSamplerAdvanced")
        assert high["end_at_step"] == low["start_at_step"] == 1 and high["steps"] == 2
    else:
        assert unets == [FILES[layout]]
    assert by_class["ModelSamplingSD3"]["shift"] == (3.0 if layout == "wan2.1" else 5.0)
    latent = "Wan22ImageToVideoLatent" if layout == "wan2.2-ti2v-5b" else "WanImageToVideo"  # as ComfyUI's templates
    assert by_class["CLIPLoader"]["type"] == "wan" and by_class[latent]["length"] == 5
    assert ("CLIPVisionEncode" in by_class) == (layout == "wan2.1")
    vae = "wan2.2_vae.safetensors" if layout == "wan2.2-ti2v-5b" else "wan_2.1_vae.safetensors"  # A14B: 2.1's VAE
    assert by_class["VAELoader"]["vae_name"] == vae
    code, _, err = run_cli("generate", str(tmp_path / "in.png"), "--from", str(tmp_path / "wf.json"),
                           "--comfyui-dir", str(offline["root"]), "--device", "cpu", "-o", str(tmp_path / "b"))
    assert code == 0, err
    a, b = (json.loads((tmp_path / f"{n}.json").read_text()) for n in "ab")
    assert a["spec"] == b["spec"]
    assert np.array_equal(_frames(tmp_path / "a"), _frames(tmp_path / "b"))
    assert a["spec"]["flow_shift"] is None  # the model's own, which the workflow's shift names


@pytest.mark.parametrize(("edit", "words"), [
    (("VAELoader", "vae_name", "other_vae.safetensors"), "VAELoader.vae_name = 'other_vae.safetensors': this model is assembled with wan_2.1_vae.safetensors"),
    (("CLIPLoader", "type", "sd3"), "CLIPLoader.type = 'sd3': Wan's text encoder is UMT5 (type wan)"),
    (("KSampler", "sampler_name", "euler"), "KSampler.sampler_name = 'euler'"),
    (("KSampler", "denoise", 0.5), "KSampler.denoise = 0.5"),
    (("WanImageToVideo", "length", 10), "WanImageToVideo.length = 10: stillmotion cannot honour it (--frames 10: Wan makes 4k+1 frames: use 9 or 13"),
    (("WanImageToVideo", "end_image", ["5", 0]), "WanImageToVideo.end_image: stillmotion has no such setting"),
    (("WanImageToVideo", "class_type", "Wan22ImageToVideoLatent"), "Wan22ImageToVideoLatent: this model is an I2V "
     "model, which ComfyUI conditions with WanImageToVideo"),
])
def test_a_wan_setting_it_cannot_honour_is_refused_naming_its_node(offline, tmp_path, edit, words):
    _square(tmp_path)
    code, _, err = run_cli("generate", str(tmp_path / "in.png"), "--comfyui-dir", str(offline["root"]),
                           "--model", FILES["wan2.1"], *ARGS, "-o", str(tmp_path / "a"))
    assert code == 0, err
    code, _, err = run_cli("export-workflow", str(tmp_path / "a.json"), "-o", str(tmp_path / "wf.json"))
    prompt = json.loads((tmp_path / "wf.json").read_text())
    cls, name, value = edit
    node = next(n for n in prompt.values() if n["class_type"] == cls)
    if name == "class_type":  # another node in its place, keeping the inputs both take
        node.update(class_type=value, inputs={k: v for k, v in node["inputs"].items() if k not in (
            "positive", "negative", "clip_vision_output")})
        for other in prompt.values():
            if other["class_type"] == "KSampler":
                other["inputs"].update(positive=["6", 0], negative=["7", 0], latent_image=["8", 0])
    else:
        node["inputs"][name] = value
    (tmp_path / "wf.json").write_text(json.dumps(prompt))
    code, _, err = run_cli("generate", str(tmp_path / "in.png"), "--from", str(tmp_path / "wf.json"),
                           "--comfyui-dir", str(offline["root"]), "--device", "cpu", "-o", str(tmp_path / "b.mp4"))
    assert code == 2, err
    assert words in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "b.mp4").exists() and not (tmp_path / "b.json").exists()


def test_a_wan_workflow_in_an_api_request_or_manifest_gives_its_fields_checked_against_the_running_model(
        offline, tmp_path):
    """The API and batch take a Wan workflow's spec fields (apply_workflow: the request's own fields win), with its
    VAE checked against the model the server or batch runs, as generate checks it."""
    from stillmotion.comfy import apply_workflow
    from stillmotion.errors import InvalidInput

    _square(tmp_path)
    running = str(offline["dm"] / FILES["wan2.1"])
    code, _, err = run_cli("generate", str(tmp_path / "in.png"), "--model", running, *ARGS, "--shift", "6",
                           "-o", str(tmp_path / "a"))
    assert code == 0, err
    code, _, err = run_cli("export-workflow", str(tmp_path / "a.json"), "-o", str(tmp_path / "wf.json"))
    assert code == 0, err
    prompt = json.loads((tmp_path / "wf.json").read_text())
    fields = apply_workflow({"workflow": prompt, "seed": 9}, running)
    spec = json.loads((tmp_path / "a.json").read_text())["spec"]
    assert fields["seed"] == 9 and fields["flow_shift"] == 6.0
    assert {k: fields[k] for k in ("prompt", "negative_prompt", "guidance_scale", "num_frames", "width")} == \
        {k: spec[k] for k in ("prompt", "negative_prompt", "guidance_scale", "num_frames", "width")}
    next(n for n in prompt.values() if n["class_type"] == "VAELoader")["inputs"]["vae_name"] = "x.safetensors"
    with pytest.raises(InvalidInput, match="VAELoader.vae_name = 'x.safetensors'"):
        apply_workflow({"workflow": prompt}, running)


def test_an_a14b_split_off_the_models_boundary_is_refused_naming_the_node(offline, tmp_path):
    _square(tmp_path)
    code, _, err = run_cli("generate", str(tmp_path / "in.png"), "--comfyui-dir", str(offline["root"]),
                           "--model", FILES["wan2.2-a14b"], *ARGS, "--steps", "4", "-o", str(tmp_path / "a"))
    assert code == 0, err
    code, _, err = run_cli("export-workflow", str(tmp_path / "a.json"), "-o", str(tmp_path / "wf.json"))
    prompt = json.loads((tmp_path / "wf.json").read_text())
    high, low = (n["inputs"] for n in prompt.values() if n["class_type"] == "KSamplerAdvanced")
    switch = high["end_at_step"]
    high["end_at_step"] = low["start_at_step"] = switch + 1
    (tmp_path / "wf.json").write_text(json.dumps(prompt))
    code, _, err = run_cli("generate", str(tmp_path / "in.png"), "--from", str(tmp_path / "wf.json"),
                           "--comfyui-dir", str(offline["root"]), "--device", "cpu", "-o", str(tmp_path / "b.mp4"))
    assert code == 2, err
    assert f"KSamplerAdvanced.end_at_step: this model switches to its low-noise expert after step {switch} of 4" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "b.mp4").exists()


def test_a_workflows_shift_runs_as_the_schedulers_flow_shift(offline, tmp_path):
    """ModelSamplingSD3.shift 8 (ComfyUI's Wan templates) is --shift 8: the stock pipeline with its scheduler at
    flow_shift 8 gives the frames; the model's own shift is back for the next run."""
    import torch
    from diffusers import UniPCMultistepScheduler, WanImageToVideoPipeline

    img = _square(tmp_path)
    code, _, err = run_cli("generate", str(tmp_path / "in.png"), "--comfyui-dir", str(offline["root"]),
                           "--model", FILES["wan2.1"], *ARGS, "-o", str(tmp_path / "a"))
    assert code == 0, err
    run_cli("export-workflow", str(tmp_path / "a.json"), "-o", str(tmp_path / "wf.json"))
    prompt = json.loads((tmp_path / "wf.json").read_text())
    next(n for n in prompt.values() if n["class_type"] == "ModelSamplingSD3")["inputs"]["shift"] = 8.0
    (tmp_path / "wf.json").write_text(json.dumps(prompt))
    code, _, err = run_cli("generate", str(tmp_path / "in.png"), "--from", str(tmp_path / "wf.json"),
                           "--comfyui-dir", str(offline["root"]), "--device", "cpu", "-o", str(tmp_path / "b"))
    assert code == 0, err
    assert json.loads((tmp_path / "b.json").read_text())["spec"]["flow_shift"] == 8.0
    pipe = WanImageToVideoPipeline.from_pretrained(offline["refs"]["wan2.1"])
    pipe.scheduler = UniPCMultistepScheduler.from_config(pipe.scheduler.config, flow_shift=8.0)
    pipe.set_progress_bar_config(disable=True)
    video = pipe(image=img, prompt="a boat at sea", negative_prompt="blurry", height=64, width=64, num_frames=5,
                 num_inference_steps=2, guidance_scale=4.0, generator=torch.Generator("cpu").manual_seed(3),
                 output_type="np").frames[0]
    stock = np.clip(np.round(video * 255.0), 0, 255).astype(np.uint8)
    assert np.abs(_frames(tmp_path / "b").astype(int) - stock.astype(int)).max() <= 2
    assert not np.array_equal(_frames(tmp_path / "a"), _frames(tmp_path / "b"))  # the shift moved the frames
    code, _, err = run_cli("generate", str(tmp_path / "in.png"), "--comfyui-dir", str(offline["root"]),
                           "--model", FILES["wan2.1"], *ARGS, "-o", str(tmp_path / "c"))
    assert code == 0, err
    assert np.array_equal(_frames(tmp_path / "a"), _frames(tmp_path / "c"))  # the model's own shift again


def test_the_sidecar_of_a_comfyui_file_run_reproduces_it(offline, tmp_path):
    """--from the sidecar runs the same file (its path is the recorded model) to the same frames."""
    _square(tmp_path)
    code, _, err = run_cli("generate", str(tmp_path / "in.png"), "--comfyui-dir", str(offline["root"]),
                           "--model", FILES["gguf"], *ARGS, "-o", str(tmp_path / "a"))
    assert code == 0, err
    code, _, err = run_cli("generate", "--from", str(tmp_path / "a.json"), "--device", "cpu", "-o", str(tmp_path / "b"))
    assert code == 0, err
    assert json.loads((tmp_path / "b.json").read_text())["model"]["single_file"]["format"] == "gguf"
    assert np.array_equal(_frames(tmp_path / "a"), _frames(tmp_path / "b"))
