"""The worker thread: takes the oldest queued job, runs it through `i2vgen.app.run.generate`, writes the result.

A worker loads each pipeline once and keeps up to `keep_loaded` of them (the base pipeline and the cascade of the
default model, typically). Its per-step callback records the progress and, now and then, a preview: the middle frame
of the current clean-latent prediction x0, decoded by the stage's own VAE (exact colours for any model, one frame's
decode). Previews are taken at the first and last step of each stage and otherwise at most every
`preview_interval` seconds and never closer than four decode times apart, so they cost at most ~20 % of a step-bound
run on the CPU and nothing noticeable on a GPU. Cancellation sets the run's event; `generate` stops after the step
in progress.
"""

from __future__ import annotations

import gc
import io
import logging
import threading
import time
import traceback
from collections import OrderedDict
from typing import Any

from i2vgen.errors import I2VGenError
from i2vgen.io.atomic import atomic_write_bytes
from i2vgen.serve.store import POSTER, PREVIEW, VIDEO, Job

log = logging.getLogger("i2vgen")
PREVIEW_MIN_SIDE = 256  # small previews are scaled up (nearest) so a page shows them at a useful size


class Worker(threading.Thread):
    def __init__(self, service: Any, index: int) -> None:
        super().__init__(name=f"i2vgen-worker-{index}", daemon=True)
        self.service, self.store = service, service.store
        self.pipelines: OrderedDict[tuple, Any] = OrderedDict()
        self.loaded = False
        self._current: tuple[str, threading.Event] | None = None
        self._lock = threading.Lock()

    # ---- called from other threads -------------------------------------------------------------------------------
    def cancel(self, job_id: str) -> None:
        with self._lock:
            if self._current is not None and self._current[0] == job_id:
                self._current[1].set()

    def interrupt(self) -> None:
        """Stop the running job after its step (shutdown): it goes back to the queue."""
        with self._lock:
            if self._current is not None:
                self._current[1].set()

    # ---- the loop ------------------------------------------------------------------------------------------------
    def run(self) -> None:
        if self.service.config.preload:
            self._preload()
        while not self.service.stopping.is_set():
            try:
                job = self.store.claim()
                if job is None:
                    with self.service.wakeup:
                        self.service.wakeup.wait(0.5)
                    continue
                self.run_job(job)
            except Exception:  # noqa: BLE001 - the worker outlives any job (run_job records their failures)
                log.error("worker: unexpected error:\n%s", traceback.format_exc())
                time.sleep(1.0)  # e.g. a full disk: retry, without spinning

    def _preload(self) -> None:
        from i2vgen.app.run import prepare

        try:
            self.pipeline(prepare(self.service.settings_from_json({"prompt": "preload"})))
        except Exception as e:  # noqa: BLE001 - reported by /healthz; its jobs fail with the same line
            self.service.load_error = _one_line(e)
            log.warning("could not load %s: %s", self.service.models[0], self.service.load_error)

    def pipeline(self, s: Any) -> Any:
        from i2vgen.app.run import load_generation_pipeline

        key = (str(s.model), s.refine, str(s.refiner_model) if s.refine else None, s.refiner_unet)
        if key in self.pipelines:
            self.pipelines.move_to_end(key)
            return self.pipelines[key]
        while len(self.pipelines) >= max(1, self.service.config.keep_loaded):
            self.pipelines.popitem(last=False)
            _free_memory()
        self.pipelines[key] = load_generation_pipeline(s)
        self.loaded = True
        return self.pipelines[key]

    def run_job(self, job: Job) -> None:
        from i2vgen.app.outputs import write_output
        from i2vgen.app.run import Cancelled, generate, prepare

        event = threading.Event()
        with self._lock:
            self._current = (job.id, event)
        if self.store.get(job.id).cancel_requested or self.service.stopping.is_set():
            event.set()  # asked between the claim and now
        timings: dict[str, float] = {"queued_s": round((job.started or job.created) - job.created, 4)}
        folder = self.store.job_dir(job.id)
        ok = False
        try:
            s = prepare(self.service.job_settings(job))
            t = time.perf_counter()
            pipe = self.pipeline(s)
            timings["load_s"] = round(time.perf_counter() - t, 4)
            step = StepRecorder(self.store, job.id, pipe, folder / PREVIEW, self.service.config.preview_interval)
            t = time.perf_counter()
            result = generate(pipe, s, str(folder / "input.png"), on_step=step, cancel=event)
            timings["generate_s"] = round(time.perf_counter() - t, 4)
            timings.update(step.timings())
            t = time.perf_counter()
            result.metadata.update(job=job.id, image="input.png")
            write_output(result.frames, folder / VIDEO, fps=result.fps, metadata=result.metadata, overwrite=True)
            _write_poster(result.frames, folder / POSTER)
            timings["write_s"] = round(time.perf_counter() - t, 4)
            self.store.finish(job.id, VIDEO, timings)
            ok = True
        except Cancelled as e:
            if self.store.get(job.id).cancel_requested:
                self.store.mark_cancelled(job.id, _one_line(e))
            else:  # stopped by a shutdown: run it again at the next start
                self.store.requeue(job.id)
        except I2VGenError as e:
            self.store.fail(job.id, _one_line(e), timings)
        except MemoryError:
            self.store.fail(job.id, "out of memory; try fewer frames or a smaller size", timings)
        except Exception as e:  # noqa: BLE001 - a job's failure is recorded, the worker goes on
            if type(e).__name__ == "OutOfMemoryError":  # torch.cuda.OutOfMemoryError
                self.store.fail(job.id, f"out of memory on the device ({_one_line(e)[:200]}); try fewer frames or "
                                        f"a smaller size", timings)
            else:
                log.error("job %s failed:\n%s", job.id, traceback.format_exc())
                self.store.fail(job.id, f"internal error: {type(e).__name__}: {_one_line(e)}", timings)
        finally:
            with self._lock:
                self._current = None
            if not ok:  # the run's activations and any half-made frames go now, not at the next job
                _free_memory()


class StepRecorder:
    """The `on_step` of one job: progress in the store every step, a preview PNG now and then."""

    def __init__(self, store: Any, job_id: str, pipe: Any, path: Any, interval: float) -> None:
        self.store, self.job_id, self.pipe, self.path, self.interval = store, job_id, pipe, path, interval
        self.t0 = time.perf_counter()
        self.next_at = 0.0
        self.first_preview_s: float | None = None
        self.decode_s: list[float] = []
        self.callback_s = 0.0  # time spent here: progress rows and previews, inside generate()

    def __call__(self, stage: str, step: int, total: int, x0: Any) -> None:
        start = time.perf_counter()
        self.store.progress(self.job_id, stage, step, total)
        now = time.perf_counter()
        if step in (1, total) or now >= self.next_at:
            png = preview_png(stage_vae(self.pipe, stage), x0)
            atomic_write_bytes(self.path, png, fsync=False)
            self.store.set_preview(self.job_id, step)
            done = time.perf_counter()
            self.decode_s.append(done - now)
            if self.first_preview_s is None:
                self.first_preview_s = done - self.t0
            self.next_at = done + max(self.interval, 4 * (done - now))
        self.callback_s += time.perf_counter() - start

    def timings(self) -> dict[str, float]:
        out = {"previews": len(self.decode_s), "callback_s": round(self.callback_s, 4)}
        if self.decode_s:
            out["preview_decode_s"] = round(sorted(self.decode_s)[len(self.decode_s) // 2], 4)
            out["first_preview_s"] = round(self.first_preview_s, 4)
        return out


def stage_vae(pipe: Any, stage: str) -> Any:
    """The VAE that decodes `stage`'s latents: the pipeline's own, or in the cascade its base or refiner's."""
    if hasattr(pipe, "vae"):
        return pipe.vae
    return pipe.base.vae if stage == "base" else pipe.refiner.vae


def preview_png(vae: Any, x0: Any) -> bytes:
    """The middle frame of a clean-latent prediction (1, 4, F, h, w) -> PNG bytes, decoded wherever the VAE is."""
    import torch

    with torch.no_grad():
        z = x0[:, :, x0.shape[2] // 2:x0.shape[2] // 2 + 1].to(vae.device)  # (1, 4, 1, h, w)
        frame = vae.decode(z, chunk_size=1)[0, :, 0]  # (3, H, W) in [-1, 1]
        rgb = ((frame.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return _png(rgb)


def _write_poster(frames: Any, path: Any) -> None:
    """The middle frame of the result as the gallery's thumbnail."""
    from i2vgen.io import to_uint8_frames

    atomic_write_bytes(path, _png(to_uint8_frames(frames)[len(frames) // 2]), fsync=False)


def _png(rgb: Any) -> bytes:
    """(H, W, 3) uint8 -> PNG bytes, scaled up (nearest) to PREVIEW_MIN_SIDE when smaller."""
    from PIL import Image

    im = Image.fromarray(rgb)
    scale = -(-PREVIEW_MIN_SIDE // min(im.size))
    if scale > 1:
        im = im.resize((im.width * scale, im.height * scale), Image.NEAREST)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def _free_memory() -> None:
    gc.collect()
    try:
        import torch
    except ImportError:
        return
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__
