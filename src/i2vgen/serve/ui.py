"""The web page at `/` (Gradio): a client of the same `JobService` as the REST API.

A picture, a prompt and the settings go through `JobService.submit` (so the page refuses what the API refuses, with
the same line); the page then follows the job in the store: a progress bar with stage and step, the latest preview,
and at the end the video (playing inline, with a download button) and the seed it used. The gallery lists finished
jobs from the store, so it survives a restart. The handlers are plain functions of `UiHandlers`, testable without a
browser.
"""

import html
import os
import time
from collections.abc import Iterator
from typing import Any

from i2vgen.serve.service import JobService
from i2vgen.serve.store import POSTER, PREVIEW, TERMINAL, Job, ServeError

POLL_S = 0.2  # how often the page's generator looks at its job
GALLERY_SIZE = 24
CSS = """
#job-progress-box progress { width: 100%; height: 1.2em; }
#job-progress-box .stage { font-family: monospace; }
"""


class UiHandlers:
    """What the page's events do, as plain functions over the service."""

    def __init__(self, service: JobService) -> None:
        self.service = service

    def defaults(self, model: str) -> dict[str, Any]:
        """The values a model's folder suggests (frames, size, guidance, strength) for the page's fields."""
        from dataclasses import replace

        s = replace(self.service.settings_from_json({"prompt": "-", "model": model}), refine=True).resolved()
        return {"frames": s.num_frames, "width": s.width, "height": s.height, "guidance": s.guidance,
                "strength": s.strength}

    def submit(self, image: str | None, prompt: str, negative: str, model: str, sampler: str, steps: Any,
               guidance: Any, seed: Any, frames: Any, width: Any, height: Any, refine: bool,
               strength: Any) -> Job:
        """Queue a job from the page's fields (blank fields: the defaults, a blank seed: a random one)."""
        values = {"prompt": prompt or "", "negative_prompt": negative or None, "model": model, "sampler": sampler,
                  "steps": _int(steps), "guidance": _num(guidance), "seed": _int(seed), "frames": _int(frames),
                  "width": _int(width), "height": _int(height), "refine": bool(refine),
                  "strength": _num(strength) if refine else None}
        data = None
        if image:
            with open(image, "rb") as f:
                data = f.read(self.service.config.max_upload_bytes + 1)
        return self.service.submit(data, values)

    def progress_html(self, job: Job) -> str:
        if job.state == "queued":
            pos = self.service.store.queue_position(job)
            text, value, total = f"queued (position {pos})", 0, 1
        elif job.state == "running":
            text = f"{job.stage or 'loading'}: step {job.step} of {job.total or '?'}"
            value, total = job.step, max(job.total, 1)
        else:
            text = job.state + (f": {job.error}" if job.error else f" ({job.stage}: {job.step} of {job.total} steps)")
            value, total = (1, 1) if job.state == "done" else (job.step, max(job.total, 1))
        return (f'<div id="job-progress-box"><progress id="job-progress" value="{value}" max="{total}" '
                f'data-state="{job.state}" data-stage="{job.stage or ""}"></progress>'
                f'<div class="stage" id="job-stage">{html.escape(text)}</div></div>')

    def info(self, job: Job) -> str:
        parts = [f"job `{job.id}`", f"seed **{job.settings.get('seed')}**"]
        if job.state == "done":
            parts.insert(0, f"done in {job.finished - job.started:.1f} s")
        elif job.state in TERMINAL:
            parts.insert(0, f"{job.state}: {job.error}")
        return " · ".join(parts)

    def files(self, job: Job) -> tuple[str | None, str | None]:
        """(preview PNG, video MP4) paths that exist for the job."""
        folder = self.service.store.job_dir(job.id)
        preview = folder / PREVIEW
        video = self.service.video(job.id) if job.state == "done" else None
        return (str(preview) if job.preview_step is not None and preview.is_file() else None,
                str(video) if video is not None else None)

    def watch(self, job_id: str, *, poll_s: float = POLL_S) -> Iterator[Job]:
        """The job each time it changes, until it ends."""
        seen = None
        while True:
            job = self.service.get(job_id)
            key = (job.state, job.stage, job.step, job.preview_step)
            if key != seen:
                seen = key
                yield job
            if job.state in TERMINAL:
                return
            time.sleep(poll_s)

    def gallery(self) -> tuple[list[tuple[str, str]], list[str]]:
        """The newest finished jobs -> ((poster, caption) items, their job ids)."""
        jobs, _ = self.service.list(limit=GALLERY_SIZE, state="done")
        items, ids = [], []
        for job in jobs:
            poster = self.service.store.job_dir(job.id) / POSTER
            if poster.is_file():
                items.append((str(poster), f"{job.settings.get('prompt', '')[:40]} · seed {job.settings.get('seed')}"))
                ids.append(job.id)
        return items, ids


def build_ui(service: JobService) -> Any:
    import gradio as gr

    from i2vgen.diffusion.sampler_table import DEFAULT_SAMPLERS, default_steps, sampler_names

    h = UiHandlers(service)
    d = h.defaults(service.models[0])
    sampler0 = DEFAULT_SAMPLERS["base"]
    with gr.Blocks(title="i2vgen") as ui:
        gr.Markdown("## i2vgen: picture + prompt → video\nThe jobs run one after another on this server and are kept "
                    "in its data folder; this page and the REST API (`/docs`) see the same jobs.")
        job_id = gr.State(None)
        gallery_ids = gr.State([])
        with gr.Row():
            with gr.Column(scale=1):
                image = gr.Image(label="Picture", type="filepath", sources=["upload"], elem_id="image", height=256)
                prompt = gr.Textbox(label="Prompt", elem_id="prompt", placeholder="a red circle moves right")
                negative = gr.Textbox(label="Negative prompt (blank: the reference's)", elem_id="negative")
                with gr.Row():
                    model = gr.Dropdown(list(service.models), value=service.models[0], label="Model", elem_id="model")
                    sampler = gr.Dropdown(list(sampler_names("base")), value=sampler0, label="Sampler",
                                          elem_id="sampler")
                with gr.Row():
                    steps = gr.Number(default_steps(sampler0, "base"), precision=0, label="Steps", elem_id="steps")
                    guidance = gr.Number(d["guidance"], label="Guidance", elem_id="guidance")
                    seed = gr.Textbox("", label="Seed (blank: random)", elem_id="seed")
                with gr.Row():
                    frames = gr.Number(d["frames"], precision=0, label="Frames", elem_id="frames")
                    width = gr.Number(d["width"], precision=0, label="Width", elem_id="width")
                    height = gr.Number(d["height"], precision=0, label="Height", elem_id="height")
                with gr.Row():
                    refine = gr.Checkbox(False, label="Refine (second stage)", elem_id="refine",
                                         interactive=service.refiner_model is not None)
                    strength = gr.Slider(0.01, 1.0, value=d["strength"], step=0.01, label="Refine strength",
                                         elem_id="strength")
                with gr.Row():
                    generate = gr.Button("Generate", variant="primary", elem_id="generate")
                    cancel = gr.Button("Cancel", elem_id="cancel")
            with gr.Column(scale=1):
                progress = gr.HTML('<div id="job-progress-box"></div>', elem_id="progress")
                preview = gr.Image(label="Preview (current x0, middle frame)", interactive=False, elem_id="preview",
                                   height=256)
                video = gr.Video(label="Video", interactive=False, autoplay=True, loop=True, elem_id="video",
                                 buttons=["download"], height=256)
                download = gr.DownloadButton("Download MP4", elem_id="download", visible=False)
                info = gr.Markdown("", elem_id="info")
        gallery = gr.Gallery(label="Earlier jobs (click one to play it)", columns=8, height=200,
                             object_fit="contain", fit_columns=False, elem_id="gallery", allow_preview=False)

        def run(img, pr, neg, mdl, smp, st, gd, sd, fr, w, ht, rf, sg):
            try:
                submitted = h.submit(img, pr, neg, mdl, smp, st, gd, sd, fr, w, ht, rf, sg)
            except ServeError as e:
                raise gr.Error(e.message) from None
            for job in h.watch(submitted.id):
                pv, vd = h.files(job)
                done = job.state in TERMINAL
                items, ids = h.gallery() if done else (gr.skip(), gr.skip())
                yield (job.id, h.progress_html(job), pv if pv else gr.skip(), vd if vd else gr.skip(),
                       gr.DownloadButton(value=vd, visible=vd is not None), h.info(job), items, ids)

        inputs = [image, prompt, negative, model, sampler, steps, guidance, seed, frames, width, height, refine,
                  strength]
        outputs = [job_id, progress, preview, video, download, info, gallery, gallery_ids]
        generate.click(lambda: (None, None, gr.DownloadButton(visible=False), ""), None,
                       [preview, video, download, info], queue=False).then(
            run, inputs, outputs, concurrency_limit=None)

        def cancel_job(jid):
            if jid is None:
                return "nothing to cancel"
            try:
                return f"cancelling job `{service.cancel(jid).id}` …"
            except ServeError as e:
                return e.message

        cancel.click(cancel_job, [job_id], [info], queue=False)

        def on_model(mdl):
            v = h.defaults(mdl)
            return v["frames"], v["width"], v["height"], v["guidance"], v["strength"]

        model.change(on_model, [model], [frames, width, height, guidance, strength], queue=False)
        sampler.change(lambda smp: default_steps(smp, "base"), [sampler], [steps], queue=False)

        def show(ids, evt: gr.SelectData):
            job = service.get(ids[evt.index])
            _, vd = h.files(job)
            return vd, gr.DownloadButton(value=vd, visible=True), h.info(job), h.progress_html(job)

        gallery.select(show, [gallery_ids], [video, download, info, progress], queue=False)
        ui.load(h.gallery, None, [gallery, gallery_ids], queue=False)
    return ui


def mount_ui(app: Any, service: JobService) -> None:
    """Mount the page at `/` of `app` (after the API routes, which take precedence)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home: the server works offline
    try:
        import gradio as gr
    except ImportError:
        from i2vgen.errors import I2VGenError

        raise I2VGenError("the web UI needs gradio: pip install -e '.[ui]' (or serve the API alone with "
                          "--no-ui)") from None
    theme = gr.themes.Default(font=["system-ui", "sans-serif"], font_mono=["monospace"])  # no web fonts
    gr.mount_gradio_app(app, build_ui(service), path="/", allowed_paths=[str(service.store.root)],
                        max_file_size=service.config.max_upload_bytes, ssr_mode=False, theme=theme, css=CSS,
                        footer_links=["api"])


def _int(v: Any) -> Any:
    """A page field -> int (Gradio's numbers are floats, the seed is text), None when blank; anything else as it
    is, for the settings' checks to refuse with their own message."""
    if isinstance(v, str):
        v = v.strip()
        if v.lstrip("-").isdigit():
            return int(v)
    if v is None or v == "":
        return None
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v


def _num(v: Any) -> Any:
    return None if v is None or v == "" else v
