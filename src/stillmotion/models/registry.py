"""Known models: names -> hub repo, pinned revision, variant and per-model defaults.

The defaults here are the only model-specific defaults in stillmotion: a
GenerationSpec leaves a field as None to mean "the model's default". The entry
of any other --model value (a folder, a single file, a hub id) is made by
resolve.entry_for().
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ..errors import ModelUnavailable

# Where a model comes from: how it resolves to a folder (resolve.py) and how its shapes are known without loading
# it (engine/shapes.py): "registry" a name below, fetched from the hub, with published component configs;
# "builtin" tiny (built from code into the cache) and demo (shipped in the package); "single-file" a .safetensors
# checkpoint (configs from its header); "local" a diffusers folder (or a LoRA folder over a base); "hub" any other
# hub id.
Source = Literal["registry", "builtin", "single-file", "local", "hub"]


@dataclass(frozen=True)
class ModelDefaults:
    """A model's defaults for the spec fields (spec.DEFAULTED). The field defaults are SVD-XT's; a field another
    family does not take is None in its entries (see WAN_DEFAULTS)."""

    num_frames: int = 25
    num_inference_steps: int = 25
    fps: int = 7
    motion_bucket_id: int | None = 127
    noise_aug_strength: float | None = 0.02
    min_guidance_scale: float | None = 1.0
    max_guidance_scale: float | None = 3.0
    negative_prompt: str | None = None
    guidance_scale: float | None = None
    # LTX's other guidance terms (None: the pipeline's own default, or a family that does not take them)
    guidance_rescale: float | None = None
    stg_scale: float | None = None
    modality_scale: float | None = None
    audio_guidance_scale: float | None = None
    sigma_schedule: str | None = None  # LTX-2: "distilled" for the distilled checkpoint's 8 trained sigmas
    decode_timestep: float | None = None  # LTX: a timestep-conditioned VAE's decode timestep and noise
    decode_noise_scale: float | None = None
    # (width, height) for auto sizing by aspect
    landscape: tuple[int, int] = (1024, 576)
    portrait: tuple[int, int] = (576, 1024)
    square: tuple[int, int] = (768, 768)
    true_cfg_scale: float | None = None  # FramePack: real classifier-free guidance (1: off)
    latent_window_size: int | None = None  # FramePack: latent frames per section
    size_multiple: int | None = None  # None: the family's (families/*.size_multiple)
    end_image: bool = True  # the model can end on an image (--end-image), where its family can
    # (width, height) sizes to pick from by the image's aspect instead of landscape/portrait/square (spec.auto_size;
    # FramePack's app picks from such a bucket list)
    buckets: tuple[tuple[int, int], ...] | None = None
    sampling_type: str | None = None  # FramePack: how the model was trained to sample (a model property, no knob)


# The negative prompt the Wan model cards and diffusers' Wan examples use (the Wan authors' own, in Chinese).
WAN_NEGATIVE_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，JPEG压缩残留，丑陋的，残缺的，"
    "多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，手指融合，静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走"
)


def wan_defaults(**values) -> ModelDefaults:
    """Defaults for a Wan entry: no SVD knobs, the model cards' negative prompt."""
    base = dict(motion_bucket_id=None, noise_aug_strength=None, min_guidance_scale=None, max_guidance_scale=None,
                negative_prompt=WAN_NEGATIVE_PROMPT, guidance_scale=5.0)
    return ModelDefaults(**{**base, **values})


# LTX2ImageToVideoPipeline.__call__'s own guidance defaults (diffusers 0.42; tests/test_ltx.py checks them against it),
# named in LTX-2 entries so that every front end shows what runs: CFG 3, STG 1, modality isolation 3, rescale 0.7 and
# the soundtrack's CFG 7.
LTX2_GUIDANCE = dict(guidance_scale=3.0, stg_scale=1.0, modality_scale=3.0, guidance_rescale=0.7,
                     audio_guidance_scale=7.0)
# LTX-2's distilled preset, as its model card runs the distilled checkpoint: its 8 trained sigmas (diffusers'
# DISTILLED_SIGMA_VALUES) at CFG 1 with no other guidance pass (STG 0, modality 1, no rescale, sound CFG 1).
TINY_LTX2_LORA = "distilled_lora.safetensors"  # tiny-ltx2's stand-in for LTX-2's distilled LoRA
LTX2_DISTILLED = dict(num_inference_steps=8, sigma_schedule="distilled", guidance_scale=1.0, stg_scale=0.0,
                      modality_scale=1.0, guidance_rescale=0.0, audio_guidance_scale=1.0)


# LTX-2's default negative prompt, Lightricks' own (ltx-pipelines' constants; diffusers' copy is
# ltx2.utils.DEFAULT_NEGATIVE_PROMPT, which tests/test_ltx.py checks this against)
LTX2_NEGATIVE_PROMPT = (
    "blurry, out of focus, overexposed, underexposed, low contrast, washed out colors, excessive noise, "
    "grainy texture, poor lighting, flickering, motion blur, distorted proportions, unnatural skin tones, "
    "deformed facial features, asymmetrical face, missing facial features, extra limbs, disfigured hands, "
    "wrong hand count, artifacts around text, inconsistent perspective, camera shake, incorrect depth of "
    "field, background too sharp, background clutter, distracting reflections, harsh shadows, inconsistent "
    "lighting direction, color banding, cartoonish rendering, 3D CGI look, unrealistic materials, uncanny "
    "valley effect, incorrect ethnicity, wrong gender, exaggerated expressions, wrong gaze direction, "
    "mismatched lip sync, silent or muted audio, distorted voice, robotic voice, echo, background noise, "
    "off-sync audio, incorrect dialogue, added dialogue, repetitive speech, jittery movement, awkward "
    "pauses, incorrect timing, unnatural transitions, inconsistent framing, tilted camera, flat lighting, "
    "inconsistent tone, cinematic oversaturation, stylized filters, or AI artifacts."
)


def ltx_defaults(**values) -> ModelDefaults:
    """Defaults for an LTX entry (LTX-2, LTX-Video 0.9.x): no SVD knobs; 8k+1 frames at sizes in multiples of 32."""
    base = dict(motion_bucket_id=None, noise_aug_strength=None, min_guidance_scale=None, max_guidance_scale=None,
                num_frames=121, fps=24, landscape=(768, 512), portrait=(512, 768), square=(640, 640), size_multiple=32)
    return ModelDefaults(**{**base, **values})


# FramePack's own app (lllyasviel/FramePack demo_gradio.py, diffusers_helper/bucket_tools.py): sizes near 640 px, as
# (width, height); the app picks the bucket nearest the image's aspect (find_nearest_bucket, ties to the later one).
FRAMEPACK_BUCKETS = ((960, 416), (864, 448), (832, 480), (768, 512), (704, 544), (672, 576), (640, 608), (608, 640),
                     (576, 672), (544, 704), (512, 768), (480, 832), (448, 864), (416, 960))


def framepack_defaults(**values) -> ModelDefaults:
    """Defaults for a FramePack entry, from its app: 30 fps, latent window 9, 25 steps, distilled guidance 10, real CFG
    off (1.0, so no negative prompt), its 640 bucket list; 145 frames = the app's default 5 s (round(5 * 30 / 36) = 4
    sections of 4 x 9 frames, plus the first)."""
    base = dict(num_frames=145, num_inference_steps=25, fps=30, motion_bucket_id=None, noise_aug_strength=None,
                min_guidance_scale=None, max_guidance_scale=None, negative_prompt=None, guidance_scale=10.0,
                true_cfg_scale=1.0, latent_window_size=9, landscape=(832, 480), portrait=(480, 832),
                square=(608, 640), buckets=FRAMEPACK_BUCKETS, sampling_type="inverted_anti_drifting")
    return ModelDefaults(**{**base, **values})


@dataclass(frozen=True)
class Part:
    """A pipeline component fetched from another repo than its entry's own: several repos assembled into one model
    (models/hub.py downloads each, builds the pipeline folder from them; verify checks every repo's files)."""

    component: str  # the pipeline's component name ("transformer", "image_encoder", ...)
    repo_id: str
    subfolder: str | None = None  # the component's folder in that repo (None: the repo's root)
    revision: str = "main"


@dataclass(frozen=True)
class Piece:
    """One repo of an assembled model as models/hub.py fetches it (hub.pieces makes these): the patterns fetched
    from it, and for a part its component and the folder it sits in (None for the base repo)."""

    allow: tuple[str, ...]
    ignore: tuple[str, ...]
    component: str | None = None
    subfolder: str | None = None


# FramePack's SigLIP image encoder and its feature extractor: both FramePack models take them from FLUX.1 Redux
FLUX_REDUX = (Part("image_encoder", "lllyasviel/flux_redux_bfl", "image_encoder"),
              Part("feature_extractor", "lllyasviel/flux_redux_bfl", "feature_extractor"))


@dataclass(frozen=True)
class FastPreset:
    """What `--speed fast` runs on a model beyond its family's cache: a step-distilling LoRA (in the model's own repo,
    or built-in folder; a ComfyUI checkpoint of the model takes the same preset), attached for the run, and the defaults it was distilled for (LTX-2: dev + its distilled LoRA,
    which Lightricks made as the difference between the dev and the distilled checkpoints)."""

    lora: str  # the LoRA file's path in its repo (or the built-in model's folder)
    defaults: ModelDefaults  # the entry's defaults under --speed fast
    repo_id: str | None = None  # the hub repo it is fetched from (None: in the built-in model's folder)
    revision: str = "main"


@dataclass(frozen=True)
class ModelEntry:
    name: str
    repo_id: str | None  # None for built-in models
    revision: str = "main"
    variant: str | None = "fp16"
    gated: bool = False
    source: Source = "registry"
    family: str = "svd"  # families/: which family runs it (a folder's model_index.json says it for itself)
    description: str = ""
    approx_size_gb: float = 0.0
    defaults: ModelDefaults = field(default_factory=ModelDefaults)
    # "video" (an SVD pipeline) or "interpolation" (single weight files, used by --interpolate-backend)
    kind: str = "video"
    # single-file models: exactly these repo files are fetched and verified (no pipeline layout)
    files: tuple[str, ...] = ()
    # components from other repos (Part); `repo_id` gives the rest (FramePack: HunyuanVideo's text encoders and VAE)
    parts: tuple[Part, ...] = ()
    pipeline_class: str | None = None  # the assembled folder's model_index.json `_class_name` (with `parts`)
    piece: Piece | None = None  # one repo of an assembled model (hub.pieces); None for every other entry
    fast: FastPreset | None = None  # --speed fast's LoRA and defaults (None: the family's cache alone)

    @property
    def builtin(self) -> bool:
        return self.source == "builtin"

    def defaults_for(self, speed: str | None) -> ModelDefaults:
        """The defaults a run at `speed` resolves with: the fast preset's under --speed fast, else the entry's."""
        return self.fast.defaults if speed == "fast" and self.fast is not None else self.defaults


# Hub revisions: pinned to the commit that the project was tested against is
# best; where the commit is not known offline we pin to "main" and record the
# commit actually resolved in every sidecar (see resolve.resolve()).
REGISTRY: dict[str, ModelEntry] = {
    "svd": ModelEntry(
        name="svd",
        repo_id="stabilityai/stable-video-diffusion-img2vid",
        description="Stable Video Diffusion, 14 frames at 576x1024",
        approx_size_gb=4.3,
        defaults=ModelDefaults(num_frames=14),
    ),
    "svd-xt": ModelEntry(
        name="svd-xt",
        repo_id="stabilityai/stable-video-diffusion-img2vid-xt",
        description="Stable Video Diffusion XT, 25 frames at 576x1024",
        approx_size_gb=4.3,
        defaults=ModelDefaults(num_frames=25),
    ),
    "svd-xt-1-1": ModelEntry(
        name="svd-xt-1-1",
        repo_id="stabilityai/stable-video-diffusion-img2vid-xt-1-1",
        gated=True,
        description="SVD-XT 1.1 (gated: accept the licence on the hub and set HF_TOKEN)",
        approx_size_gb=4.3,
        defaults=ModelDefaults(num_frames=25),
    ),
    "rife": ModelEntry(
        name="rife",
        kind="interpolation",
        repo_id="Comfy-Org/frame_interpolation",  # Practical-RIFE v4.26 (MIT) as safetensors, repacked by Comfy-Org
        variant=None,
        files=("frame_interpolation/rife_v4.26.safetensors",),
        description="RIFE v4.26 frame interpolation weights, for --interpolate-backend rife (not a video model)",
        approx_size_gb=0.023,
    ),
    "wan2.1-i2v-480p": ModelEntry(
        name="wan2.1-i2v-480p",
        repo_id="Wan-AI/Wan2.1-I2V-14B-480P-Diffusers",
        variant=None,
        family="wan",
        description="Wan 2.1 image-to-video 14B, 480p (CLIP image encoder; 81 frames at 16 fps)",
        approx_size_gb=82.0,
        defaults=wan_defaults(num_frames=81, num_inference_steps=40, fps=16, landscape=(832, 480),
                              portrait=(480, 832), square=(624, 624), end_image=False),
    ),
    "wan2.1-i2v-720p": ModelEntry(
        name="wan2.1-i2v-720p",
        repo_id="Wan-AI/Wan2.1-I2V-14B-720P-Diffusers",
        variant=None,
        family="wan",
        description="Wan 2.1 image-to-video 14B, 720p (CLIP image encoder; 81 frames at 16 fps)",
        approx_size_gb=82.0,
        defaults=wan_defaults(num_frames=81, num_inference_steps=40, fps=16, landscape=(1280, 720),
                              portrait=(720, 1280), square=(960, 960), end_image=False),
    ),
    "wan2.2-i2v-a14b": ModelEntry(
        name="wan2.2-i2v-a14b",
        repo_id="Wan-AI/Wan2.2-I2V-A14B-Diffusers",
        variant=None,
        family="wan",
        description="Wan 2.2 image-to-video A14B: two 14B experts (high and low noise, boundary 0.900), 81 frames at 16 fps",
        approx_size_gb=126.0,
        defaults=wan_defaults(num_frames=81, num_inference_steps=40, fps=16, guidance_scale=3.5,
                              landscape=(1280, 720), portrait=(720, 1280), square=(960, 960)),
    ),
    "wan2.2-ti2v-5b": ModelEntry(
        name="wan2.2-ti2v-5b",
        repo_id="Wan-AI/Wan2.2-TI2V-5B-Diffusers",
        variant=None,
        family="wan",
        description="Wan 2.2 text/image-to-video 5B (48-channel VAE), 121 frames at 24 fps, 1280x704",
        approx_size_gb=34.0,
        defaults=wan_defaults(num_frames=121, num_inference_steps=50, fps=24, landscape=(1280, 704),
                              portrait=(704, 1280), square=(960, 960), size_multiple=32, end_image=False),
    ),
    # LTX-2 (Lightricks, 19B audio-video DiT; Gemma-3 12B text encoder). The model card's diffusers recipe: 121 frames
    # at 24 fps, 768x512, sizes in multiples of 32 and 8k+1 frames, 40 steps at CFG 4, Lightricks' negative prompt;
    # the other guidance terms (STG, modality isolation, rescale, audio CFG) at the pipeline's own (LTX2_GUIDANCE).
    "ltx-2": ModelEntry(
        name="ltx-2",
        repo_id="Lightricks/LTX-2",
        variant=None,
        family="ltx2",
        description="LTX-2 19B dev: video with its own soundtrack, 121 frames at 24 fps, 768x512",
        approx_size_gb=70.0,
        defaults=ltx_defaults(**{**LTX2_GUIDANCE, "num_inference_steps": 40, "guidance_scale": 4.0,
                                 "negative_prompt": LTX2_NEGATIVE_PROMPT}),
        # --speed fast: the repo's distilled LoRA (rank 384, about 7.7 GB, fetched on first use) on the dev weights
        fast=FastPreset("ltx-2-19b-distilled-lora-384.safetensors", ltx_defaults(
            **{**LTX2_GUIDANCE, **LTX2_DISTILLED, "negative_prompt": LTX2_NEGATIVE_PROMPT}), "Lightricks/LTX-2"),
    ),
    # The distilled LTX-2: 8 steps at CFG 1 on the 8 sigmas it was trained on (diffusers' DISTILLED_SIGMA_VALUES) and
    # no other guidance pass (STG 0, modality 1, no rescale), as its model card recommends. Lightricks publish it as a single file (ltx-2-19b-distilled.safetensors); this is the
    # community diffusers-layout conversion of it (LTX2ImageToVideoPipeline).
    "ltx-2-distilled": ModelEntry(
        name="ltx-2-distilled",
        repo_id="blanchon/LTX-2-Distilled-diffusers",
        variant=None,
        family="ltx2",
        description="LTX-2 19B distilled: 8 steps at CFG 1, video with its own soundtrack, 121 frames at 24 fps",
        approx_size_gb=70.0,
        defaults=ltx_defaults(**LTX2_DISTILLED),
    ),
    # LTX-Video 0.9.7 distilled (13B, T5-XXL text encoder, no audio), diffusers layout (LTXConditionPipeline): 8 steps
    # at CFG 1 as its model card runs it, its VAE decoding at timestep 0.05 with noise 0.025, 121 frames at 24 fps,
    # 768x512.
    "ltx-video-0.9.7-distilled": ModelEntry(
        name="ltx-video-0.9.7-distilled",
        repo_id="Lightricks/LTX-Video-0.9.7-distilled",
        variant=None,
        family="ltx",
        description="LTX-Video 0.9.7 13B distilled (no audio): 8 steps at CFG 1, 121 frames at 24 fps, 768x512",
        approx_size_gb=36.0,
        defaults=ltx_defaults(num_inference_steps=8, guidance_scale=1.0, guidance_rescale=0.0, decode_timestep=0.05,
                              decode_noise_scale=0.025),
    ),
    "framepack": ModelEntry(
        name="framepack",
        repo_id="hunyuanvideo-community/HunyuanVideo",  # the Llama and CLIP text encoders, tokenizers, VAE, scheduler
        variant=None,
        family="framepack",
        parts=(Part("transformer", "lllyasviel/FramePackI2V_HY"), *FLUX_REDUX),
        pipeline_class="HunyuanVideoFramepackPipeline",
        description="FramePack (HunyuanVideo 13B, next-frame-section packing, inverted anti-drifting): long videos "
                    "section by section at 30 fps, sizes near 640 px; ends on an image",
        approx_size_gb=42.0,
        defaults=framepack_defaults(),
    ),
    "framepack-f1": ModelEntry(
        name="framepack-f1",
        repo_id="hunyuanvideo-community/HunyuanVideo",
        variant=None,
        family="framepack",
        parts=(Part("transformer", "lllyasviel/FramePack_F1_I2V_HY_20250503"), *FLUX_REDUX),
        pipeline_class="HunyuanVideoFramepackPipeline",
        description="FramePack F1 (forward-only 'vanilla' sampling of HunyuanVideo 13B): long videos section by "
                    "section at 30 fps, sizes near 640 px",
        approx_size_gb=42.0,
        defaults=framepack_defaults(sampling_type="vanilla", end_image=False),
    ),
    "tiny": ModelEntry(
        name="tiny",
        repo_id=None,
        variant=None,
        source="builtin",
        description="built-in smoke-test model: SVD architecture at toy width, random weights (output is noise)",
        approx_size_gb=0.01,
        defaults=ModelDefaults(
            num_frames=8,
            num_inference_steps=4,
            landscape=(128, 64),
            portrait=(64, 128),
            square=(64, 64),
        ),
    ),
    "tiny-wan": ModelEntry(
        name="tiny-wan",
        repo_id=None,
        variant=None,
        source="builtin",
        family="wan",
        description="built-in smoke-test model: Wan 2.2 I2V A14B's architecture (two experts) at toy width, random weights (output is noise)",
        approx_size_gb=0.001,
        defaults=wan_defaults(num_frames=9, num_inference_steps=4, fps=8, landscape=(96, 64), portrait=(64, 96),
                              square=(64, 64)),
    ),
    "tiny-ltx2": ModelEntry(
        name="tiny-ltx2",
        repo_id=None,
        variant=None,
        source="builtin",
        family="ltx2",
        description="built-in smoke-test model: LTX-2's architecture (video, audio VAE, vocoder) at toy width, random weights (output is noise, with noise for sound)",
        approx_size_gb=0.001,
        defaults=ltx_defaults(**LTX2_GUIDANCE, num_frames=9, num_inference_steps=4, landscape=(96, 64),
                              portrait=(64, 96), square=(64, 64)),
        # --speed fast as ltx-2's: a random LoRA in Lightricks' layout (models/tiny_ltx.py), built with the model
        fast=FastPreset(TINY_LTX2_LORA, ltx_defaults(**{**LTX2_GUIDANCE, **LTX2_DISTILLED}, num_frames=9,
                                                     landscape=(96, 64), portrait=(64, 96), square=(64, 64))),
    ),
    "tiny-framepack": ModelEntry(
        name="tiny-framepack",
        repo_id=None,
        variant=None,
        source="builtin",
        family="framepack",
        description="built-in smoke-test model: FramePack's architecture (HunyuanVideo transformer, Llama, CLIP, "
                    "SigLIP) at toy width, random weights (output is noise)",
        approx_size_gb=0.001,
        defaults=framepack_defaults(num_frames=9, num_inference_steps=2, fps=8, latent_window_size=2,
                                    landscape=(96, 64), portrait=(64, 96), square=(64, 64), buckets=None),
    ),
    "demo": ModelEntry(
        name="demo",
        repo_id=None,
        variant=None,
        source="builtin",
        description="built-in demo: SVD architecture trained here on procedural clips; pans right with a push-in (CPU, seconds)",
        approx_size_gb=0.02,
        defaults=ModelDefaults(  # train/demo.py and the shipped stillmotion.json use these (a test checks)
            num_frames=8,
            num_inference_steps=6,  # 6 Euler steps: the most coherent of 4..8 on held-out images
            fps=8,
            motion_bucket_id=127,
            noise_aug_strength=0.02,
            min_guidance_scale=1.0,
            max_guidance_scale=1.0,
            landscape=(128, 64),
            portrait=(64, 128),
            square=(64, 64),
        ),
    ),
}

DEFAULT_MODEL = "svd-xt"  # the one place the default model is named


def get_entry(name: str) -> ModelEntry:
    """The registry entry for a known name; raises ModelUnavailable otherwise."""
    try:
        return REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(REGISTRY))
        raise ModelUnavailable(
            f"Unknown model {name!r}: use one of {known}, a local diffusers folder, or a hub id like org/name."
        ) from None
