"""The web UI: Gradio Blocks on the same job queue as the API.

Generate submits a job through server/submit.py (exactly what POST /v1/videos
does, with source "ui") and then follows it in the store, feeding gr.Progress
(denoising steps, then decoding). Cancel flags the session's running job in
the store. The gallery lists recent jobs from the queue, API jobs included.
The function behind Generate is also the UI's API endpoint `/generate`
(gradio_client: `client.predict(..., api_name="/generate")`). A server with a
choice (several models, or LoRAs) shows a model and LoRA picker; its three
inputs (model, lora, lora_scale) come after end_image and the prompt fields
(prompt, negative_prompt, guidance_scale), then LTX's other guidance terms
(guidance_rescale, stg_scale, modality_scale, audio_guidance_scale) and
FramePack's (true_cfg_scale, latent_window_size), then the soundtrack to
follow (audio, where the family takes one), so calls made without them
still work. Every numeric control takes the range its request field takes
(CONTROLS: read from GenerationSpec's schema and submit.INPUTS).

Which controls show follows the schema too, never a family's name: each
control sets one spec field (FIELD_CONTROLS), and it shows only when the
selected model's family takes that field (families.Family.takes: the field's
`x-families`), so SVD's motion knobs show for SVD models and the prompt boxes
for Wan models; switching the model picker shows the new model's controls and
its defaults. The end image shows where the model can end on an image, the
soundtrack where it can follow one (Family.audio_input), the LoRA picker where
its family takes LoRAs. What a hidden control holds is not sent.
"""

from __future__ import annotations

import functools
import threading
import time
from pathlib import Path
from typing import Optional

import gradio as gr

from ..errors import Conflict, NotFound, StillmotionError
from ..families import family_for
from ..jobs.store import TERMINAL
from ..jobs.types import Job
from ..jobs.layout import job_dir
from ..spec import DEFAULTED, SPEC_FIELDS
from .submit import INPUTS, Submission, submit
from .views import iso

PLAYABLE = ("mp4", "webm")
PREVIEW_SIDE = 384
NO_LORA = "none"

# Every numeric control (by elem_id) and the request field it sets. Its range is that field's, read from
# GenerationSpec's JSON schema (or server/submit.INPUTS), so the UI offers exactly what the API takes.
CONTROLS = {
    "sm-seed": "seed", "sm-fps": "fps", "sm-frames": "num_frames", "sm-steps": "num_inference_steps",
    "sm-motion": "motion_bucket_id", "sm-noise": "noise_aug_strength", "sm-width": "width", "sm-height": "height",
    "sm-min-cfg": "min_guidance_scale", "sm-max-cfg": "max_guidance_scale", "sm-decode-chunk": "decode_chunk_size",
    "sm-guidance": "guidance_scale", "sm-lora-scale": "lora_scale", "sm-guidance-rescale": "guidance_rescale",
    "sm-stg": "stg_scale", "sm-modality": "modality_scale", "sm-audio-guidance": "audio_guidance_scale",
    "sm-true-cfg": "true_cfg_scale", "sm-latent-window": "latent_window_size",
}
# The text controls and the spec field each sets (its length limit is the field's).
TEXT_CONTROLS = {"sm-prompt": "prompt", "sm-negative-prompt": "negative_prompt"}
# Every control that sets a spec field: it shows only for models whose family takes the field.
FIELD_CONTROLS = {e: f for e, f in {**CONTROLS, **TEXT_CONTROLS}.items() if f in SPEC_FIELDS}
UNSET = 0  # width, height and decode chunk at 0: the field left out (from the image; all frames at once)


class UI:
    def __init__(self, svc):
        self.svc = svc
        self.active: dict[str, str] = {}  # Gradio session -> its running job id
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ generate / cancel
    def generate(self, image, seed, random_seed, fps, frames, steps, motion, noise, width, height, resize,
                 min_cfg, max_cfg, decode_chunk, fmt, end_image=None, prompt=None, negative_prompt=None,
                 guidance=None, model=None, lora=None, lora_scale=None, guidance_rescale=None, stg=None,
                 modality=None, audio_guidance=None, true_cfg=None, latent_window=None, audio=None,
                 request: gr.Request = None, progress=gr.Progress()):
        if not image:
            raise gr.Error("Upload an image first.")
        fields = {
            "seed": -1 if random_seed or seed is None else int(seed),
            "fps": _int(fps), "num_frames": _int(frames), "num_inference_steps": _int(steps),
            "motion_bucket_id": _int(motion), "noise_aug_strength": noise, "resize": resize or "crop",
            "min_guidance_scale": min_cfg, "max_guidance_scale": max_cfg, "format": fmt or "mp4",
            "width": _int(width) or None, "height": _int(height) or None, "decode_chunk_size": _int(decode_chunk) or None,
            "prompt": _text(prompt), "negative_prompt": _text(negative_prompt), "guidance_scale": guidance,
            "guidance_rescale": guidance_rescale, "stg_scale": stg, "modality_scale": modality,
            "audio_guidance_scale": audio_guidance,
            "true_cfg_scale": true_cfg, "latent_window_size": _int(latent_window),
        }
        try:
            entry, family = self.model_of(model)
        except StillmotionError as e:
            raise gr.Error(e.message) from None
        # a control the model's family does not take is hidden: what it holds is not part of the request
        fields = {k: v for k, v in fields.items() if v is not None and family.takes(k)}
        if not family.supports_end_image(entry):
            end_image = None
        if not family.lora:
            lora = None
        if not family.audio_input:
            audio = None
        try:
            data = Path(image).read_bytes()
            end = dict(end_image=Path(end_image).read_bytes(), end_filename=Path(end_image).name) if end_image else {}
            end |= dict(audio=Path(audio).read_bytes(), audio_filename=Path(audio).name) if audio else {}
            picks = dict(model=model or None, lora=None if lora in (None, "", NO_LORA) else lora)
            if picks["lora"] is not None and lora_scale is not None:
                picks["lora_scale"] = float(lora_scale)
            job, _ = submit(self.svc, Submission(image=data, filename=Path(image).name, fields=fields, **end,
                                                 **picks), source="ui")
        except StillmotionError as e:
            raise gr.Error(e.message) from None
        session = getattr(request, "session_hash", None) or job.id
        with self._lock:
            self.active[session] = job.id
        try:
            job = self._follow(job.id, progress)
        finally:
            with self._lock:
                self.active.pop(session, None)
        return self._result(job)

    def model_of(self, name: Optional[str] = None):
        """(entry, family) of a served model (None: the default)."""
        entry = self.svc.entry(name or self.svc.settings.engine.model)
        return entry, family_for(entry)

    def _follow(self, job_id: str, progress) -> Job:
        store = self.svc.store
        progress(0.0, desc="queued")
        last = None
        while True:
            try:
                job = store.get(job_id)
            except NotFound:
                raise gr.Error("The job was deleted while it ran.") from None
            if job.status in TERMINAL:
                return job
            if job.status == "queued":
                now = ("queued", store.queue_position(job))
                if now != last:
                    ahead = now[1] or 0
                    progress(0.0, desc=f"queued ({ahead} job{'s' if ahead != 1 else ''} ahead)" if ahead else "queued")
            else:
                now = (job.progress, job.stage, job.step)
                if now != last:  # the run's own line (Progress.message: FramePack "section 2/4, step 7/25")
                    stage, step, total = job.stage or "starting", job.step, job.total
                    desc = job.message or (f"{stage} {step}/{total}" if step is not None and total else stage)
                    progress(float(job.progress or 0.0), desc=desc)
            last = now
            time.sleep(0.1)

    def _result(self, job: Job):
        if job.status == "failed":
            raise gr.Error(job.error_message or "The job failed; see the server log.")
        spec = job.spec or {}
        if job.status == "canceled":
            return None, None, f"Canceled (job `{job.id}`); no video was written."
        out = job.output or {}
        folder = job_dir(self.svc.settings.data_dir, job.id)
        video = folder / out["file"]
        files = [str(video)] + ([str(folder / out["sidecar"])] if out.get("sidecar") else [])
        t = (job.timings or {}).get("run")
        info = (f"**Seed used: {spec.get('seed')}** · {out.get('frames')} frames, {out.get('width')}x{out.get('height')}, "
                f"{out.get('fps'):g} fps · job `{job.id}`" + (f" · {t:.1f} s" if t else ""))
        return (str(video) if out.get("format") in PLAYABLE else None), files, info

    def cancel(self, request: gr.Request):
        session = getattr(request, "session_hash", None)
        with self._lock:
            job_id = self.active.get(session)
        if not job_id:
            return "Nothing to cancel."
        try:
            self.svc.store.request_cancel(job_id)
        except (Conflict, NotFound):
            pass  # it ended meanwhile
        # the running generate writes how the job ended ("Canceled ..."): text written here could land after it
        return gr.update()

    # ------------------------------------------------------------------ preview and gallery
    def preview(self, image, width, height, resize, model=None):
        """The source with the part the model will see outlined (crop), or the padded/stretched frame."""
        if not image:
            return None, ""
        from PIL import Image, ImageDraw

        from .. import images
        from ..spec import auto_size

        try:
            pil = images.load_image(image)
        except StillmotionError as e:
            return None, e.message
        d = self.model_of(model)[0].defaults
        w, h = auto_size(d, pil.size, _int(width) or None, _int(height) or None, d.size_multiple or 64)
        resize = resize or "crop"
        if resize != "crop":
            shown = images.prepare(pil, w, h, resize)
            shown.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE))
            return shown, f"{resize} to {w}x{h}"
        box = images.crop_box(pil.size, w, h, "crop")["box"]
        scale = min(1.0, PREVIEW_SIDE / max(pil.size))
        small = pil.resize((max(1, round(pil.width * scale)), max(1, round(pil.height * scale))))
        dim = Image.eval(small, lambda v: v // 3)
        b = tuple(round(v * scale) for v in box)
        dim.paste(small.crop(b), b[:2])
        ImageDraw.Draw(dim).rectangle(b, outline=(255, 210, 0), width=2)
        return dim, f"crop {box[2] - box[0]}x{box[3] - box[1]} of {pil.width}x{pil.height}, resized to {w}x{h}"

    def recent(self, limit: int = 12):
        jobs = self.svc.store.list(limit=50)
        items, rows = [], []
        for j in jobs:
            out = j.output or {}
            seed = (j.spec or {}).get("seed")
            rows.append([j.id, j.status, j.source, seed, iso(j.created_at)])
            if j.status == "succeeded" and out.get("format") in PLAYABLE + ("gif", "webp") and len(items) < limit:
                path = job_dir(self.svc.settings.data_dir, j.id) / out["file"]
                if path.is_file():
                    items.append((str(path), f"{j.id[-6:]} · seed {seed} · {j.source}"))
        return items, rows[:20]


@functools.cache
def _spec_schema() -> dict:
    from ..spec import GenerationSpec

    return GenerationSpec.model_json_schema()["properties"]


def field_bounds(name: str) -> dict:
    """A request field's JSON-schema bounds (minimum, maximum, multipleOf): GenerationSpec's, else INPUTS'."""
    schema = _spec_schema().get(name) or INPUTS[name].schema
    return {**schema, **next((s for s in schema.get("anyOf", ()) if s.get("type") != "null"), {})}


def _slider(elem_id: str, value, label: str, step: float, **kw) -> gr.Slider:
    b = field_bounds(CONTROLS[elem_id])
    return gr.Slider(b["minimum"], b["maximum"], value=value, step=step, label=label, elem_id=elem_id, **kw)


def _number(elem_id: str, value, label: str, unset: bool = False, **kw) -> gr.Number:
    """A whole-number box with its field's range; `unset`: UNSET (below the range) also goes, meaning "left out"."""
    b = field_bounds(CONTROLS[elem_id])
    return gr.Number(label=label, value=value, precision=0, minimum=UNSET if unset else b["minimum"],
                     maximum=b["maximum"], step=b.get("multipleOf", 1), elem_id=elem_id, **kw)


def _int(v) -> Optional[int]:
    if v is None or v == "":
        return None
    return int(round(float(v)))


def _text(v) -> Optional[str]:
    """A text box's value: empty means the field left out (the model's default)."""
    v = (v or "").strip()
    return v or None


def _textbox(elem_id: str, label: str, shown: bool, lines: int, placeholder: str) -> gr.Textbox:
    """A text box with its field's length limit."""
    return gr.Textbox(label=label, lines=lines, placeholder=placeholder, visible=shown, elem_id=elem_id,
                      max_length=field_bounds(TEXT_CONTROLS[elem_id]).get("maxLength"))


def _lora_family(folder, default: str) -> str:
    """The family of a served LoRA's base model (its folder's entry: models/resolve.entry_for); `default` when the
    folder cannot be read now (serve checks every --lora folder at start; the page is built without reading it)."""
    from ..errors import StillmotionError
    from ..models.resolve import entry_for

    try:
        return entry_for(str(folder)).family
    except StillmotionError:
        return default


def _picker(svc, lora_shown: bool) -> list:
    """The model and LoRA picker, only when the server has a choice: [model, lora, lora_scale], else []."""
    models, loras = svc.settings.served_models, sorted(svc.settings.loras)
    if len(models) == 1 and not loras:
        return []
    with gr.Row():
        model = gr.Dropdown(models, value=models[0], label="Model", visible=len(models) > 1, elem_id="sm-model")
        lora = gr.Dropdown([NO_LORA, *loras], value=NO_LORA, label="LoRA", visible=bool(loras) and lora_shown,
                           elem_id="sm-lora")
        scale = _slider("sm-lora-scale", field_bounds("lora_scale")["default"], "LoRA strength", 0.05,
                        visible=bool(loras) and lora_shown)
    return [model, lora, scale]


def _about(name: str, entry, family, labels: dict) -> str:
    """The line over the form: the model, its family and the defaults of the controls it shows."""
    d = entry.defaults
    shown = [f"{labels[f].split(' (')[0].lower()} {getattr(d, f):g}" for f in DEFAULTED
             if f in labels and family.takes(f) and isinstance(getattr(d, f), (int, float))]
    return (f"# stillmotion\nA still image becomes a short video with **{name}** ({family.label} family). "
            f"Model defaults: {', '.join(shown)}. Jobs here share one queue with the HTTP API (`/v1`).")


def build_ui(svc) -> gr.Blocks:
    ui = UI(svc)
    model = svc.settings.engine.model
    entry, family = ui.model_of(model)
    served = [svc.entry(m) for m in svc.settings.served_models]

    def initial(field: str):
        """A control's first value: the default model's default, else the first served model's that has one."""
        return next((getattr(e.defaults, field) for e in served if getattr(e.defaults, field) is not None), None)

    def shown(field: str) -> bool:
        return family.takes(field)

    d = entry.defaults
    with gr.Blocks(title="stillmotion") as demo:
        about = gr.Markdown(elem_id="sm-about")
        with gr.Row():
            with gr.Column():
                image = gr.Image(label="Image", type="filepath", sources=["upload", "clipboard"], elem_id="sm-image")
                end_image = gr.Image(label="End image (optional: the video ends on it)", type="filepath",
                                     sources=["upload", "clipboard"], height=160, elem_id="sm-end-image",
                                     visible=family.supports_end_image(entry))
                sound = gr.Audio(label="Soundtrack (optional: the video follows it and carries it)", type="filepath",
                                 sources=["upload"], elem_id="sm-audio", visible=family.audio_input)
                crop = gr.Image(label="What the model will see", interactive=False, height=240, elem_id="sm-crop")
                crop_note = gr.Markdown(elem_id="sm-crop-note")
                prompt = _textbox("sm-prompt", "Prompt (what should happen in the video)", shown("prompt"), 2,
                                  "e.g. waves roll onto the beach, the camera pans right")
                negative = _textbox("sm-negative-prompt", "Negative prompt (empty: the model's own)",
                                    shown("negative_prompt"), 1, "what should not happen")
                with gr.Row():
                    seed = _number("sm-seed", 0, "Seed (-1: random)")
                    random_seed = gr.Checkbox(label="Random seed (the one used is shown)", value=True)
                fps = _slider("sm-fps", d.fps, "FPS", 1)
                frames = _slider("sm-frames", d.num_frames, "Frames", 1)
                steps = _slider("sm-steps", d.num_inference_steps, "Denoising steps", 1)
                motion = _slider("sm-motion", initial("motion_bucket_id"), "Motion strength (motion_bucket_id)", 1,
                                 visible=shown("motion_bucket_id"))
                noise = _slider("sm-noise", initial("noise_aug_strength"), "Noise augmentation", 0.01,
                                visible=shown("noise_aug_strength"))
                guidance = _slider("sm-guidance", initial("guidance_scale"), "Guidance (prompt strength)", 0.1,
                                   visible=shown("guidance_scale"))
                true_cfg = _slider("sm-true-cfg", initial("true_cfg_scale"),
                                   "Real guidance with the negative prompt (1: off)", 0.1, visible=shown("true_cfg_scale"))
                window = _slider("sm-latent-window", initial("latent_window_size"),
                                 "Latent window (a section is 4x this many frames)", 1,
                                 visible=shown("latent_window_size"))
                picker = _picker(svc, family.lora and any(_lora_family(f, family.name) == family.name
                                                          for f in svc.settings.loras.values()))
                with gr.Accordion("Advanced settings", open=False):
                    with gr.Row():
                        width = _number("sm-width", UNSET, "Width (0: from the image)", unset=True)
                        height = _number("sm-height", UNSET, "Height (0: from the image)", unset=True)
                    resize = gr.Radio(["crop", "pad", "stretch"], value="crop", label="Fit")
                    with gr.Row():
                        min_cfg = _slider("sm-min-cfg", initial("min_guidance_scale"), "Min guidance", 0.1,
                                          visible=shown("min_guidance_scale"))
                        max_cfg = _slider("sm-max-cfg", initial("max_guidance_scale"), "Max guidance", 0.1,
                                          visible=shown("max_guidance_scale"))
                    decode_chunk = _number("sm-decode-chunk", UNSET, "Decode chunk (0: all frames at once)", unset=True,
                                           visible=shown("decode_chunk_size"))
                    with gr.Row():  # LTX's other guidance terms
                        rescale = _slider("sm-guidance-rescale", initial("guidance_rescale"), "Guidance rescale", 0.05,
                                          visible=shown("guidance_rescale"))
                        stg = _slider("sm-stg", initial("stg_scale"), "Spatio-temporal guidance (STG)", 0.1,
                                      visible=shown("stg_scale"))
                        modality = _slider("sm-modality", initial("modality_scale"), "Modality guidance", 0.1,
                                           visible=shown("modality_scale"))
                        audio_guidance = _slider("sm-audio-guidance", initial("audio_guidance_scale"),
                                                 "Sound guidance", 0.1, visible=shown("audio_guidance_scale"))
                    fmt = gr.Radio(list(PLAYABLE), value="mp4", label="Format")
                with gr.Row():
                    go = gr.Button("Generate", variant="primary", elem_id="sm-generate")
                    stop = gr.Button("Cancel", variant="stop", elem_id="sm-cancel")
            with gr.Column():
                # include_audio: a model's soundtrack (LTX-2) stays in the file and the player is not muted
                video = gr.Video(label="Video", autoplay=True, loop=True, interactive=False, include_audio=True,
                                 elem_id="sm-video")
                files = gr.File(label="Download (video and its JSON)", file_count="multiple", elem_id="sm-files")
                info = gr.Markdown(elem_id="sm-info")
        with gr.Accordion("Recent jobs (web and API)", open=True):
            gallery = gr.Gallery(label="Recent videos", columns=6, height=260, elem_id="sm-gallery")
            table = gr.Dataframe(headers=["id", "status", "source", "seed", "created"], interactive=False,
                                 elem_id="sm-jobs")
            refresh = gr.Button("Refresh", size="sm")

        # the picker's three inputs keep their places (hidden states when there is no choice); LTX's and FramePack's come after them
        inputs = [image, seed, random_seed, fps, frames, steps, motion, noise, width, height, resize,
                  min_cfg, max_cfg, decode_chunk, fmt, end_image, prompt, negative, guidance,
                  *(picker or [gr.State(None) for _ in range(3)]), rescale, stg, modality, audio_guidance,
                  true_cfg, window, sound]
        # every control that sets a spec field, by field: what a model switch shows, hides and resets
        by_field = {FIELD_CONTROLS[c.elem_id]: c for c in inputs if c.elem_id in FIELD_CONTROLS}
        labels = {f: c.label for f, c in by_field.items()}
        about.value = _about(model, entry, family, labels)
        chosen = picker[:1]  # the model picker, when there is one
        for comp in (image, width, height, resize, *chosen):
            comp.change(ui.preview, [image, width, height, resize, *chosen], [crop, crop_note],
                        show_progress="hidden", api_name=False, concurrency_limit=None)
        if chosen:
            switched = [about, end_image, sound, *by_field.values(), *picker[1:]]

            def switch(name):
                """The chosen model's controls shown (its family's fields), the others hidden; its defaults set."""
                e, fam = ui.model_of(name)
                updates = [_about(name, e, fam, labels), gr.update(visible=fam.supports_end_image(e)),
                           gr.update(visible=fam.audio_input)]
                for field, comp in by_field.items():
                    value = getattr(e.defaults, field) if field in DEFAULTED else None
                    kw = {"value": value} if value is not None and not isinstance(comp, gr.Textbox) else {}
                    updates.append(gr.update(visible=fam.takes(field), **kw))
                has_loras = fam.lora and any(_lora_family(f, fam.name) == fam.name for f in svc.settings.loras.values())
                return updates + [gr.update(visible=has_loras), gr.update(visible=has_loras)]

            chosen[0].change(switch, chosen, switched, show_progress="hidden", api_name=False, queue=False)
        go.click(ui.generate, inputs, [video, files, info], api_name="generate", concurrency_limit=None
                 ).then(ui.recent, None, [gallery, table], show_progress="hidden", api_name=False)
        stop.click(ui.cancel, None, [info], api_name="cancel", concurrency_limit=None, queue=False)
        refresh.click(ui.recent, None, [gallery, table], api_name=False, show_progress="hidden")
        demo.load(ui.recent, None, [gallery, table], api_name=False, show_progress="hidden")
        gr.Timer(10).tick(ui.recent, None, [gallery, table], api_name=False, show_progress="hidden")
    return demo
