"""The job service both front ends use: submission checks, the queue, cancellation, results.

A submission is refused before it is queued unless `i2vgen.app.run.prepare` accepts its settings, exactly as
`i2vgen generate` would (the same fields, defaults and one-line errors, with the field named), and its picture decodes
within the size and pixel limits. Accepted pictures are stored decoded and re-encoded as PNG. The worker thread(s)
(`i2vgen.serve.worker`) run the queued jobs through `i2vgen.app.run.generate`.
"""

from __future__ import annotations

import io
import json
import logging
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from i2vgen.app.settings import DeviceSettings, GenerationSettings
from i2vgen.errors import I2VGenError, InputError
from i2vgen.model_paths import suggested_settings
from i2vgen.serve.store import INPUT, VIDEO, Job, JobStore, ServeError

log = logging.getLogger("i2vgen")
DEFAULT_MODEL = "tiny-shapes"  # embedded, so a fresh machine serves without downloads
VIDEO_FORMATS = {"mp4": "video/mp4", "gif": "image/gif", "webp": "image/webp"}
MAX_PAGE = 100
# The JSON fields of a job: `i2vgen generate`'s flags with '_' for '-' -> GenerationSettings fields. The device flags
# are the server's; model paths are limited to what the server offers.
FIELDS = {"prompt": "prompt", "negative_prompt": "negative_prompt", "model": "model", "frames": "num_frames",
          "width": "width", "height": "height", "steps": "steps", "guidance": "guidance", "sampler": "sampler",
          "timestep_spacing": "timestep_spacing", "seed": "seed", "fps": "fps", "save_fps": "save_fps",
          "refine": "refine", "refiner_model": "refiner_model", "refine_width": "refine_width",
          "refine_height": "refine_height", "strength": "strength", "refine_guidance": "refine_guidance",
          "refine_sampler": "refine_sampler", "refine_steps": "refine_steps", "cfg_until": "cfg_until",
          "cache_interval": "cache_interval", "cache_depth": "cache_depth"}
_JOB_ID = re.compile(r"[0-9a-f]{32}")


@dataclass
class ServeConfig:
    data_dir: Path
    models: tuple[str, ...] = (DEFAULT_MODEL,)  # what jobs may ask for; the first is the default
    refiner_model: str | None = None  # None: the one the first model's folder names
    runtime: DeviceSettings = field(default_factory=DeviceSettings)
    workers: int = 1  # each holds its own models: more than one only with memory for all
    max_queue: int = 64  # jobs waiting (not running); more get 429
    max_upload_bytes: int = 20 * 2**20
    max_pixels: int = 16_000_000  # of an uploaded picture, read from its header before decoding
    keep_loaded: int = 2  # pipelines a worker keeps (the base and the cascade)
    preview_interval: float = 0.5  # seconds between preview decodes at least (and 4x the decode's own time)
    token: str | None = None  # bearer token of the API and the UI (the gate is in `api`)
    preload: bool = True  # load the default model when a worker starts, not at the first job


class JobService:
    """Jobs of one data folder: submit, inspect, cancel, fetch results; `start` runs the worker thread(s)."""

    def __init__(self, config: ServeConfig) -> None:
        if not config.models:
            raise InputError("serve needs at least one --model")
        self.config = config
        self.models = tuple(str(m) for m in config.models)
        self.refiner_model = config.refiner_model or suggested_settings(self.models[0]).get("refiner_model")
        self.store = JobStore(config.data_dir)
        self.recovered = self.store.recover()
        self.stopping = threading.Event()
        self.wakeup = threading.Condition()
        self.workers: list[Any] = []
        self.load_error: str | None = None
        self._convert_lock = threading.Lock()

    # ---- life ----------------------------------------------------------------------------------------------------
    def start(self) -> None:
        from i2vgen.serve.worker import Worker

        self.workers = [Worker(self, i) for i in range(self.config.workers)]
        for w in self.workers:
            w.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the workers after their current step; a job they were running goes back to the queue."""
        self.stopping.set()
        with self.wakeup:
            self.wakeup.notify_all()
        for w in self.workers:
            w.interrupt()
        for w in self.workers:
            w.join(timeout)
        self.store.close()

    def health(self) -> dict[str, Any]:
        alive = sum(w.is_alive() for w in self.workers)
        return {"ok": alive == len(self.workers) and not self.stopping.is_set(), "workers": len(self.workers),
                "workers_alive": alive, "ready": any(w.loaded for w in self.workers), "load_error": self.load_error,
                "jobs": self.store.counts(), "models": list(self.models), "refiner_model": self.refiner_model}

    # ---- submission ----------------------------------------------------------------------------------------------
    def submit(self, image: bytes | None, settings: str | bytes | dict[str, Any] | None) -> Job:
        """Check the settings and the picture as `i2vgen generate` would, then queue -> the job (seed drawn)."""
        if self.stopping.is_set():
            raise ServeError(503, "the server is shutting down")
        s = self.settings_from_json(settings)
        picture = read_picture(image, self.config.max_upload_bytes, self.config.max_pixels)
        from i2vgen.app.run import prepare

        try:
            s = prepare(s, image=picture)
        except InputError as e:
            raise ServeError(422, one_line(e), field_of(str(e))) from None
        except I2VGenError as e:  # e.g. the memory estimate refuses the size
            raise ServeError(422, one_line(e)) from None
        png = io.BytesIO()
        picture.save(png, format="PNG")
        job = self.store.add(stored_settings(s), png.getvalue(), max_queue=self.config.max_queue)
        with self.wakeup:
            self.wakeup.notify()
        return job

    def settings_from_json(self, raw: str | bytes | dict[str, Any] | None) -> GenerationSettings:
        """A job's JSON settings -> GenerationSettings (not yet resolved); unknown fields and models refused."""
        if raw is None or raw == "" or raw == b"":
            raise ServeError(422, "the settings are required: a JSON object with at least a prompt "
                                  "(multipart field 'settings')", "settings")
        if isinstance(raw, (str, bytes)):
            try:
                raw = json.loads(raw)
            except (ValueError, UnicodeDecodeError) as e:
                raise ServeError(400, f"the settings are not valid JSON: {e}", "settings") from None
        if not isinstance(raw, dict):
            raise ServeError(422, f"the settings must be a JSON object, got {type(raw).__name__}", "settings")
        unknown = sorted(set(raw) - set(FIELDS))
        if unknown:
            raise ServeError(422, f"unknown setting {unknown[0]!r}; known: {', '.join(FIELDS)}", unknown[0])
        values = {FIELDS[k]: v for k, v in raw.items() if v is not None}
        values.setdefault("model", self.models[0])
        if values["model"] not in self.models:
            raise ServeError(422, f"model {values['model']!r} is not served here; choose from "
                                  f"{', '.join(self.models)}", "model")
        if not isinstance(values.get("refine", False), bool):
            raise ServeError(422, f"refine must be true or false, got {values['refine']!r}", "refine")
        if values.get("refine"):
            if values.setdefault("refiner_model", self.refiner_model) != self.refiner_model:
                raise ServeError(422, f"refiner model {values['refiner_model']!r} is not served here; this server "
                                      f"refines with {self.refiner_model!r}", "refiner_model")
        elif "refiner_model" in values and values["refiner_model"] != self.refiner_model:
            raise ServeError(422, f"refiner model {values['refiner_model']!r} is not served here", "refiner_model")
        return GenerationSettings(**values, runtime=self.config.runtime)

    def job_settings(self, job: Job) -> GenerationSettings:
        """The stored settings of a job, with this server's device settings."""
        return GenerationSettings(**{FIELDS[k]: v for k, v in job.settings.items()}, runtime=self.config.runtime)

    # ---- reads and cancellation ----------------------------------------------------------------------------------
    def get(self, job_id: str) -> Job:
        return self.store.get(check_id(job_id))

    def list(self, *, limit: int = 20, offset: int = 0, state: str | None = None) -> tuple[list[Job], int]:
        from i2vgen.serve.store import STATES

        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
            raise ServeError(422, f"limit must be an integer in [1, {MAX_PAGE}], got {limit!r}", "limit")
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise ServeError(422, f"offset must be an integer >= 0, got {offset!r}", "offset")
        if state is not None and state not in STATES:
            raise ServeError(422, f"unknown state {state!r}; choose from {', '.join(STATES)}", "state")
        return self.store.list(limit=limit, offset=offset, state=state)

    def cancel(self, job_id: str) -> Job:
        """Cancel a queued job now, or a running one after its current step (409 when it has ended)."""
        job = self.store.request_cancel(check_id(job_id))
        if job.state == "running":
            for w in self.workers:
                w.cancel(job.id)
            job = self.store.get(job.id)  # its step now: the run ends after the step in progress, at most one more
        return job

    def input_path(self, job: Job) -> Path:
        return self.store.job_dir(job.id) / INPUT

    def video(self, job_id: str, fmt: str = "mp4") -> Path:
        """The finished video; GIF and WebP are made from the MP4 at the first request and kept."""
        if fmt not in VIDEO_FORMATS:
            raise ServeError(422, f"unknown format {fmt!r}; choose from {', '.join(VIDEO_FORMATS)}", "format")
        job = self.get(job_id)
        if job.state != "done":
            raise ServeError(409, f"job {job.id} is {job.state}; it has no video"
                                  + (f" ({job.error})" if job.error else ""))
        mp4 = self.store.job_dir(job.id) / (job.output or VIDEO)
        if fmt == "mp4":
            return mp4
        out = mp4.with_suffix(f".{fmt}")
        with self._convert_lock:
            if not out.is_file():
                from i2vgen.io import read_video, write_video

                frames, fps = read_video(mp4)
                write_video(frames, out, fps=fps, metadata={"job": job.id, **job.settings})
        return out

    def preview(self, job_id: str) -> Path:
        from i2vgen.serve.store import PREVIEW

        job = self.get(job_id)
        path = self.store.job_dir(job.id) / PREVIEW
        if job.preview_step is None or not path.is_file():
            raise ServeError(404, f"job {job.id} has no preview yet ({job.state})")
        return path


# ---- helpers (no service state) -----------------------------------------------------------------------------------
def check_id(job_id: str) -> str:
    if not isinstance(job_id, str) or not _JOB_ID.fullmatch(job_id):
        raise ServeError(404, f"no job {str(job_id)[:64]!r} (job ids are 32 hex digits)", "id")
    return job_id


def stored_settings(s: GenerationSettings) -> dict[str, Any]:
    """Resolved settings as the job row keeps (and the API shows) them: every JSON field, with its value."""
    return {name: getattr(s, attr) for name, attr in FIELDS.items()}


def read_picture(data: bytes | None, max_bytes: int, max_pixels: int) -> Any:
    """Uploaded bytes -> an RGB PIL image, refusing an empty, oversized (413) or undecodable (422) file. The pixel
    count is read from the header before decoding."""
    from PIL import Image, UnidentifiedImageError

    from i2vgen.io import load_image

    if data is None:
        raise ServeError(422, "an image file is required (multipart field 'image')", "image")
    if len(data) == 0:
        raise ServeError(422, "the image file is empty", "image")
    if len(data) > max_bytes:
        raise ServeError(413, f"the image file has {len(data)} bytes; the limit is {max_bytes}", "image")
    try:
        im = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:
        raise ServeError(413, f"the image has more pixels than the limit {max_pixels}", "image") from None
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise ServeError(422, f"the image cannot be read ({one_line(e)}); send a PNG, JPEG or WebP file",
                         "image") from None
    if im.width * im.height > max_pixels:
        raise ServeError(413, f"the image is {im.width}x{im.height} = {im.width * im.height} pixels; the limit is "
                              f"{max_pixels}", "image")
    try:
        picture = load_image(im, max_pixels=max_pixels)
        picture.load()
    except (InputError, OSError, ValueError, SyntaxError) as e:
        raise ServeError(422, f"the image cannot be decoded ({one_line(e)})", "image") from None
    return picture


# The words `GenerationSettings.validate` names settings with -> the JSON field (longest first when matching).
_NAMES = {"prompt": "prompt", "negative prompt": "negative_prompt", "model": "model", "frames": "frames",
          "width": "width", "height": "height", "sampler": "sampler", "steps": "steps", "guidance": "guidance",
          "timestep spacing": "timestep_spacing", "seed": "seed", "fps": "fps", "save fps": "save_fps",
          "refinement": "refiner_model", "refiner model": "refiner_model", "refine width": "refine_width",
          "refine height": "refine_height", "strength": "strength", "refine guidance": "refine_guidance",
          "refine steps": "refine_steps", "refine sampler": "refine_sampler", "image": "image",
          "cfg until": "cfg_until", "cache interval": "cache_interval", "cache depth": "cache_depth"}
_NAME_RE = re.compile(r"^(?:unknown |an? |the )?(" + "|".join(sorted(map(re.escape, _NAMES), key=len, reverse=True))
                      + r")\b")


def field_of(message: str) -> str | None:
    """The JSON field a one-line settings error is about (`GenerationSettings.validate` starts with its name)."""
    m = _NAME_RE.match(message.strip().lower())
    return _NAMES[m.group(1)] if m else None


def one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__
