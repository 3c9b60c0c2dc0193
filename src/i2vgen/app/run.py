"""Generation and refinement as the command line, the demo, the shapes eval and the web service run them.

    s = prepare(GenerationSettings(prompt=..., model=...), image="in.png")   # resolve, validate, fit: no weights
    pipe = load_generation_pipeline(s)
    result = generate(pipe, s, "in.png", on_step=..., cancel=event)          # frames + metadata
    write_output(result.frames, "out.mp4", fps=result.fps, metadata=result.metadata)

Everything a user can get wrong is refused in `prepare` / `prepare_refine`, before a model loads. `generate` and
`refine` own the seeding (one `torch.Generator` from the settings' seed), the metadata and the per-step callback
`on_step(stage, step, total, x0)` (stage "base" or "refine", step counted from 1, x0 the current clean-latent
prediction); `cancel` is any object with `is_set()` (a `threading.Event`), checked after every step.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from i2vgen.app.memory import available_memory, check_fits, estimate, gb, model_geometry
from i2vgen.app.settings import DeviceSettings, GenerationSettings, RefineSettings, check_size
from i2vgen.errors import I2VGenError, InputError

StepFn = Callable[[str, int, int, Any], None]
BASE_COMPONENTS = ("unet", "vae", "text_encoder", "image_encoder")
REFINE_COMPONENTS = ("unet", "vae", "text_encoder")
MAX_VIDEO_PIXELS = 2_000_000_000  # frames x width x height a refine input may decode to (~6 GB of uint8 RGB)


class Cancelled(I2VGenError):
    """The run was cancelled (its `cancel` event was set); nothing was written."""


@dataclass
class Result:
    frames: Any  # (F, H, W, 3) float32 numpy in [0, 1]
    fps: float  # the frame rate to write the file with
    metadata: dict[str, Any]


def torch_dtype(name: str):
    import torch

    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[name]


# ---- checks before any weights load -------------------------------------------------------------------------------
def _check_device(r: DeviceSettings) -> None:
    from i2vgen.pipelines.common import check_device

    d = check_device(r.device)
    if r.dtype == "fp16" and d.type == "cpu":
        raise InputError("fp16 is not supported on the CPU (slow or missing kernels); use --dtype bf16 or fp32")


def _check_loras(specs: tuple[str, ...]) -> list[tuple[str, float]]:
    from i2vgen.models.lora import parse_lora_spec

    out = [parse_lora_spec(s) for s in specs]
    for path, _ in out:
        if not Path(path).exists():
            raise InputError(f"LoRA adapter not found: {path}")
    return out


def _budget(r: DeviceSettings) -> tuple[int | None, str, bool]:
    """(bytes the run may use, how to name them, whether to refuse beyond them): a --max-memory is always enforced;
    the device's free memory strictly only on the CPU, where the estimate is calibrated."""
    if r.max_memory is not None:
        return r.max_memory, "allowed (--max-memory)", True
    free = available_memory(r.device)
    return free, f"free on {r.device}", r.device.split(":")[0] == "cpu"


def prepare(settings: GenerationSettings, image: Any = None) -> GenerationSettings:
    """Resolved and validated settings, or a one-line error: device, sizes, steps, seed, the image (when a path or
    picture is given) and whether the run fits in memory, all before a model loads."""
    s = settings.resolved()
    s.validate()
    _check_device(s.runtime)
    _check_loras(s.runtime.loras)
    check_size(s.width, s.height, "", model_geometry(s.model, ()).downscale)
    if image is not None:
        from i2vgen.io import load_image

        load_image(image)
    if s.refine:
        from i2vgen.pipelines.refine import check_target_size, folder_geometry

        geometry = folder_geometry(s.refiner_model, s.refiner_unet)
        if geometry is not None:
            check_target_size(s.refine_width, s.refine_height, *geometry)
    _check_memory_generate(s)
    return s


def _check_memory_generate(s: GenerationSettings) -> None:
    r = s.runtime
    budget, where, strict = _budget(r)
    geo = model_geometry(s.model, BASE_COMPONENTS)

    def need(frames: int, w: int, h: int, dtype: str = r.dtype, offload: bool = r.offload,
             seq: bool = r.sequential_cfg) -> Any:
        base = estimate(geo, frames=frames, width=w, height=h, dtype=dtype, offload=offload, sequential_cfg=seq,
                        cfg=s.guidance != 1)
        if not s.refine:
            return base
        rgeo = model_geometry(s.refiner_model, REFINE_COMPONENTS)
        ref = estimate(rgeo, frames=min(frames, 32), width=s.refine_width, height=s.refine_height, dtype=dtype,
                       offload=offload, sequential_cfg=seq)
        return max(base, ref, key=lambda e: e.total)

    current = need(s.num_frames, s.width, s.height)
    if budget is None or current.total <= budget:
        return
    hints = _hints(need, budget, s.num_frames, s.width, s.height, r)
    check_fits(current, budget, where=where, hints=hints, strict=strict)


def _hints(need: Callable[..., Any], budget: int, frames: int, w: int, h: int, r: DeviceSettings) -> list[str]:
    hints = []
    fitting = [f for f in (frames // 2, frames // 4, 16, 8, 4) if 1 <= f < frames and need(f, w, h).total <= budget]
    if fitting:
        hints.append(f"--frames {max(fitting)} fits")
    for scale in (2, 4, 8):
        sw, sh = max(8, w // scale // 8 * 8), max(8, h // scale // 8 * 8)
        if (sw, sh) != (w, h) and need(frames, sw, sh).total <= budget:
            hints.append(f"--width {sw} --height {sh} fits")
            break
    for flag, kw in (("--sequential-cfg", {"seq": True}), ("--offload", {"offload": True}),
                     ("--dtype bf16", {"dtype": "bf16"})):
        if need(frames, w, h, **kw).total <= budget:
            hints.append(f"{flag} fits")
    return hints or [f"nothing at this size fits {gb(budget)}; use a smaller size and fewer frames"]


# ---- loading ------------------------------------------------------------------------------------------------------
def load_generation_pipeline(s: GenerationSettings):
    """The base pipeline on `s.runtime.device`, or with `s.refine` the cascade (one stage on the device at a time,
    or one component with `offload`); LoRA adapters applied."""
    from i2vgen.models.lora import apply_lora
    from i2vgen.pipelines.base import I2VGenPipeline

    r = s.runtime
    pipe = I2VGenPipeline.from_pretrained(s.model, dtype=torch_dtype(r.dtype), variant=r.variant)
    for path, scale in _check_loras(r.loras):
        apply_lora(pipe.unet, path, scale)
    if s.refine:
        from i2vgen.pipelines.cascade import I2VGenCascadePipeline
        from i2vgen.pipelines.refine import I2VGenRefinePipeline

        refiner = I2VGenRefinePipeline.from_pretrained(s.refiner_model, unet=s.refiner_unet,
                                                       dtype=torch_dtype(r.dtype), variant=r.variant)
        return I2VGenCascadePipeline(pipe, refiner, device=r.device, offload="model" if r.offload else "stage")
    return pipe.enable_model_cpu_offload(r.device) if r.offload else pipe.to(r.device)


def _callback(stage: str, total: int, on_step: StepFn | None, cancel: Any) -> Callable[[int, float, Any], None]:
    def step(i: int, t: float, x0: Any) -> None:
        if on_step is not None:
            on_step(stage, i + 1, total, x0)
        if cancel is not None and cancel.is_set():
            raise Cancelled(f"cancelled during the {stage} stage at step {i + 1} of {total}")

    return step


def generate(pipe: Any, s: GenerationSettings, image: Any, *, on_step: StepFn | None = None,
             cancel: Any = None) -> Result:
    """Animate `image` with prepared settings `s` -> frames and metadata (nothing is written)."""
    import torch

    if cancel is not None and cancel.is_set():
        raise Cancelled("cancelled before it started")
    t0 = time.time()
    generator = torch.Generator().manual_seed(s.seed)
    base_kw = {"negative_prompt": s.negative_prompt, "target_fps": s.fps, "num_inference_steps": s.steps,
               "guidance_scale": s.guidance, "sampler": s.sampler, "sequential_cfg": s.runtime.sequential_cfg,
               "timestep_spacing": s.timestep_spacing, "callback": _callback("base", s.steps, on_step, cancel)}
    if s.refine:
        refine_kw = {"num_inference_steps": s.refine_steps, "sampler": s.refine_sampler,
                     "sequential_cfg": s.runtime.sequential_cfg,
                     "callback": _callback("refine", s.refine_steps, on_step, cancel)}
        frames = pipe(image, s.prompt, num_frames=s.num_frames, width=s.width, height=s.height,
                      refine_width=s.refine_width, refine_height=s.refine_height, strength=s.strength,
                      generator=generator, base_kwargs=base_kw, refine_kwargs=refine_kw, output_type="np")[0]
    else:
        frames = pipe(image, s.prompt, num_frames=s.num_frames, height=s.height, width=s.width,
                      generator=generator, output_type="np", **base_kw)[0]
    meta = s.metadata()
    meta.update(image=_describe(image), seconds=round(time.time() - t0, 2), generator="i2vgen")
    return Result(frames, s.save_fps, meta)


def _describe(source: Any) -> str:
    return str(Path(source).resolve()) if isinstance(source, (str, Path)) else type(source).__name__


# ---- refinement ---------------------------------------------------------------------------------------------------
@dataclass
class RefineInput:
    frames: Any  # (F, H, W, 3) uint8, or float in [0, 1]
    fps: float
    notes: list[str]
    path: str


def prepare_refine(settings: RefineSettings, video: str) -> tuple[RefineSettings, RefineInput]:
    """Resolved, validated settings and the decoded input, or a one-line error before a model loads: the video is
    probed first, and refused when frames x pixels exceed `MAX_VIDEO_PIXELS` or the run would not fit."""
    from i2vgen.io.video import probe_video
    from i2vgen.pipelines.refine import check_target_size, folder_geometry, load_video, sampling_timesteps

    s = settings.resolved()
    s.validate()
    _check_device(s.runtime)
    _check_loras(s.runtime.loras)
    sampling_timesteps(s.strength, s.sampler, s.steps)
    geometry = folder_geometry(s.model, s.unet)
    if geometry is not None:
        check_target_size(s.width, s.height, *geometry)
    info = probe_video(video)
    frames = info.num_frames if s.max_frames is None else min(s.max_frames, info.num_frames or s.max_frames)
    if frames and frames * info.width * info.height > MAX_VIDEO_PIXELS:
        raise InputError(f"{video}: {frames} frames of {info.width}x{info.height} would decode to "
                         f"{gb(frames * info.width * info.height * 3)}; refine fewer frames (--max-frames "
                         f"{max(1, MAX_VIDEO_PIXELS // (info.width * info.height))}) or a smaller video")
    _check_memory_refine(s, frames or 1, info.width * info.height)
    arr, fps, notes = load_video(video, max_frames=s.max_frames)
    return s, RefineInput(arr, fps, notes, video)


def _check_memory_refine(s: RefineSettings, frames: int, input_pixels: int) -> None:
    r = s.runtime
    budget, where, strict = _budget(r)
    geo = model_geometry(s.model, REFINE_COMPONENTS)
    window = min(frames, s.window or frames)
    need = estimate(geo, frames=window, width=s.width, height=s.height, dtype=r.dtype, offload=r.offload,
                    sequential_cfg=r.sequential_cfg)
    # the decoded input (uint8), its resized float copy and the refined output, all frames
    held = frames * (input_pixels * 3 + 2 * s.width * s.height * 3 * 4)
    need = dataclasses.replace(need, video=need.video + held)
    hints = []
    if budget is not None and need.total > budget:
        if s.window == 0 or s.window > 8:
            hints.append("a smaller --window")
        hints += [f for f in ("--max-frames N", "--sequential-cfg", "--offload", "--dtype bf16")]
    check_fits(need, budget, where=where, hints=hints, strict=strict)


def load_refine_pipeline(s: RefineSettings):
    from i2vgen.models.lora import apply_lora
    from i2vgen.pipelines.refine import I2VGenRefinePipeline

    r = s.runtime
    pipe = I2VGenRefinePipeline.from_pretrained(s.model, unet=s.unet, dtype=torch_dtype(r.dtype), variant=r.variant)
    for path, scale in _check_loras(r.loras):
        apply_lora(pipe.unet, path, scale)
    return pipe.enable_model_cpu_offload(r.device) if r.offload else pipe.to(r.device)


def refine(pipe: Any, s: RefineSettings, video: RefineInput, *, on_step: StepFn | None = None,
           cancel: Any = None) -> Result:
    """Refine decoded frames with prepared settings -> frames and metadata (nothing is written)."""
    import torch

    from i2vgen import reference

    if cancel is not None and cancel.is_set():
        raise Cancelled("cancelled before it started")
    t0 = time.time()
    suffix = reference.POSITIVE_SUFFIX if s.positive_suffix else ""
    out = pipe(video.frames, s.prompt, negative_prompt=s.negative_prompt, positive_suffix=suffix, width=s.width,
               height=s.height, strength=s.strength, num_inference_steps=s.steps, sampler=s.sampler,
               guidance_scale=s.guidance, guidance_rescale=s.guidance_rescale, window_size=s.window or None,
               window_overlap=s.overlap if s.window else 0, resize_mode=s.resize,
               generator=torch.Generator().manual_seed(s.seed), sequential_cfg=s.runtime.sequential_cfg,
               callback=_callback("refine", s.steps, on_step, cancel), output_type="np")[0]
    fps = s.save_fps or video.fps
    meta = s.metadata()
    meta.update(input=str(Path(video.path).resolve()), input_fps=video.fps, fps=fps, frames=len(out),
                seconds=round(time.time() - t0, 2), generator="i2vgen")
    return Result(out, fps, meta)
