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

from i2vgen.app.memory import (
    DECODE_CHUNK,
    VAE_TILE,
    MemoryEstimate,
    Plan,
    available_memory,
    estimate,
    gb,
    model_geometry,
    plan,
)
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


AUTO_BF16_MIN_C0 = 64  # bf16 on the CPU pays from UNets this wide (docs/benchmarks.md: c0 64 1.74x, c0 32 0.80x)


def auto_dtype(device: str, unet_c0: int) -> str:
    """`--dtype auto`: bf16 on a CPU with native bf16 (AVX512-BF16 or AMX) for a UNet whose base width is at least
    `AUTO_BF16_MIN_C0` channels, where it is faster; fp32 otherwise (the tiny models, GPUs: fp32 unless asked)."""
    import torch

    if device.split(":")[0] != "cpu" or unet_c0 < AUTO_BF16_MIN_C0:
        return "fp32"
    try:
        native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        native = False
    return "bf16" if native else "fp32"


def _resolve_runtime(r: DeviceSettings, model: str) -> DeviceSettings:
    """`r` with `dtype="auto"` made concrete for this model (read from its config, no weights)."""
    if r.dtype != "auto":
        return r
    return dataclasses.replace(r, dtype=auto_dtype(r.device, model_geometry(model, ()).unet_c0))


def apply_threads(r: DeviceSettings) -> None:
    """Set torch's CPU threads when the settings name a count."""
    if r.threads is not None:
        import torch

        torch.set_num_threads(r.threads)


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
    picture is given) and whether the run fits in memory, all before a model loads. The memory planner's choice
    (`plan_generate`) is in `runtime.plan` (and `runtime.sequential_cfg` / `runtime.offload`), which `generate`
    and `load_generation_pipeline` apply."""
    s = settings.resolved()
    s.validate()
    _check_device(s.runtime)
    s.runtime = _resolve_runtime(s.runtime, s.model)
    _check_loras(s.runtime.loras)
    geo = model_geometry(s.model, ())
    check_size(s.width, s.height, "", geo.downscale)
    if s.cache_interval > 1 and s.cache_depth > geo.unet_levels:
        raise InputError(f"cache depth {s.cache_depth} is more than the UNet's {geo.unet_levels} levels")
    if image is not None:
        from i2vgen.io import load_image

        load_image(image)
    if s.refine:
        from i2vgen.pipelines.refine import check_target_size, folder_geometry

        geometry = folder_geometry(s.refiner_model, s.refiner_unet)
        if geometry is not None:
            check_target_size(s.refine_width, s.refine_height, *geometry)
    p = plan_generate(s)
    s.runtime = dataclasses.replace(s.runtime, sequential_cfg=p.sequential_cfg, offload=p.offload, plan=p)
    return s


def plan_generate(s: GenerationSettings) -> Plan:
    """The memory planner's settings for resolved settings `s` (`app.memory.plan`), or `MemoryError_` when nothing
    fits the budget (--max-memory, else the device's free memory)."""
    r = s.runtime
    budget, where, strict = _budget(r)
    on_cpu = r.device.split(":")[0] == "cpu"
    geo = model_geometry(s.model, BASE_COMPONENTS)
    rgeo = model_geometry(s.refiner_model, REFINE_COMPONENTS) if s.refine else None

    def need(frames: int = s.num_frames, w: int = s.width, h: int = s.height, *, dtype: str = r.dtype,
             sequential_cfg: bool = True, offload: bool = True, decode_frames: int = 1,
             tile: int | None = VAE_TILE) -> MemoryEstimate:
        kw = {"dtype": dtype, "offload": offload and not on_cpu, "sequential_cfg": sequential_cfg,
              "decode_frames": decode_frames, "tile": tile}
        base = estimate(geo, frames=frames, width=w, height=h, cfg=s.guidance != 1, **kw)
        if rgeo is None:
            return base
        ref = estimate(rgeo, frames=min(frames, 32), width=s.refine_width, height=s.refine_height,
                       cfg=s.refine_guidance != 1, **kw)
        if on_cpu:  # both stages' weights stay in host memory
            both = base.weights + ref.weights
            base, ref = dataclasses.replace(base, weights=both), dataclasses.replace(ref, weights=both)
        return max(base, ref, key=lambda e: e.total)

    return plan(need, budget, where=where, strict=strict, sequential_cfg=r.sequential_cfg, offload=r.offload,
                can_offload=not on_cpu, hints=lambda: _hints(need, budget, s.num_frames, s.width, s.height))


def _hints(need: Callable[..., MemoryEstimate], budget: int, frames: int, w: int, h: int) -> list[str]:
    """What would fit with every memory saving on: fewer frames, a smaller size, bf16."""
    hints = []
    fitting = [f for f in (frames // 2, frames // 4, 16, 8, 4) if 1 <= f < frames and need(f, w, h).total <= budget]
    if fitting:
        hints.append(f"--frames {max(fitting)} fits")
    for scale in (2, 4, 8):
        sw, sh = max(8, w // scale // 8 * 8), max(8, h // scale // 8 * 8)
        if (sw, sh) != (w, h) and need(frames, sw, sh).total <= budget:
            hints.append(f"--width {sw} --height {sh} fits")
            break
    if need(frames, w, h, dtype="bf16").total <= budget:
        hints.append("--dtype bf16 fits")
    return hints or [f"nothing at this size fits {gb(budget)}; use a smaller size and fewer frames"]


# ---- loading ------------------------------------------------------------------------------------------------------
def load_generation_pipeline(s: GenerationSettings):
    """The base pipeline on `s.runtime.device`, or with `s.refine` the cascade (one stage on the device at a time,
    or one component with `offload`); LoRA adapters applied."""
    from i2vgen.models.lora import apply_lora
    from i2vgen.pipelines.base import I2VGenPipeline

    r = _resolve_runtime(s.runtime, s.model)  # settings that skipped `prepare`
    apply_threads(r)
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
               "timestep_spacing": s.timestep_spacing, "cfg_until": s.cfg_until, "cache_interval": s.cache_interval,
               "cache_depth": s.cache_depth, "callback": _callback("base", s.steps, on_step, cancel)}
    vae_kw = _vae_kwargs(s.runtime)
    base_kw.update(decode_chunk_size=vae_kw["decode_chunk_size"], vae_tile=vae_kw["vae_tile"])
    if s.refine:
        refine_kw = {"num_inference_steps": s.refine_steps, "sampler": s.refine_sampler,
                     "guidance_scale": s.refine_guidance, "sequential_cfg": s.runtime.sequential_cfg,
                     "callback": _callback("refine", s.refine_steps, on_step, cancel), **vae_kw}
        frames = pipe(image, s.prompt, num_frames=s.num_frames, width=s.width, height=s.height,
                      refine_width=s.refine_width, refine_height=s.refine_height, strength=s.strength,
                      generator=generator, base_kwargs=base_kw, refine_kwargs=refine_kw, output_type="np")[0]
    else:
        frames = pipe(image, s.prompt, num_frames=s.num_frames, height=s.height, width=s.width,
                      generator=generator, output_type="np", **base_kw)[0]
    meta = s.metadata()
    meta.update(image=_describe(image), seconds=round(time.time() - t0, 2), generator="i2vgen")
    if s.runtime.plan is not None:
        meta["memory_plan"] = s.runtime.plan.as_dict()
    return Result(frames, s.save_fps, meta)


def _vae_kwargs(r: DeviceSettings) -> dict[str, Any]:
    """The VAE's frames per call and strips from the memory plan (the pipelines' defaults without one)."""
    chunk, tile = (r.plan.decode_chunk, r.plan.vae_tile) if r.plan is not None else (DECODE_CHUNK, None)
    return {"encode_chunk_size": chunk, "decode_chunk_size": chunk, "vae_tile": tile}


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
    probed first, and refused when frames x pixels exceed `MAX_VIDEO_PIXELS` or the run would not fit (the memory
    planner's choice is in `runtime.plan`, as `prepare` does)."""
    from i2vgen.io.video import probe_video
    from i2vgen.pipelines.refine import check_target_size, folder_geometry, load_video, sampling_timesteps

    s = settings.resolved()
    s.validate()
    _check_device(s.runtime)
    s.runtime = _resolve_runtime(s.runtime, s.model)
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
    p = plan_refine(s, frames or 1, info.width * info.height)
    s.runtime = dataclasses.replace(s.runtime, sequential_cfg=p.sequential_cfg, offload=p.offload, plan=p)
    arr, fps, notes = load_video(video, max_frames=s.max_frames)
    return s, RefineInput(arr, fps, notes, video)


def plan_refine(s: RefineSettings, frames: int, input_pixels: int) -> Plan:
    """The memory planner's settings for refining `frames` frames of `input_pixels` pixels each with resolved
    settings `s`, or `MemoryError_` (see `plan_generate`)."""
    r = s.runtime
    budget, where, strict = _budget(r)
    on_cpu = r.device.split(":")[0] == "cpu"
    geo = model_geometry(s.model, REFINE_COMPONENTS)
    # the decoded input (uint8), its resized float copy and the refined output, all frames
    held = frames * (input_pixels * 3 + 2 * s.width * s.height * 3 * 4)

    def need(window: int = min(frames, s.window or frames), *, dtype: str = r.dtype, sequential_cfg: bool = True,
             offload: bool = True, decode_frames: int = 1, tile: int | None = VAE_TILE) -> MemoryEstimate:
        e = estimate(geo, frames=window, width=s.width, height=s.height, dtype=dtype, offload=offload and not on_cpu,
                     cfg=s.guidance != 1, sequential_cfg=sequential_cfg, decode_frames=decode_frames, tile=tile)
        return dataclasses.replace(e, video=e.video + held)

    def hints() -> list[str]:
        out = []
        window = min(frames, s.window or frames)
        if window > 8 and need(8).total <= budget:
            out.append("--window 8 fits")
        if need(dtype="bf16").total <= budget:
            out.append("--dtype bf16 fits")
        return out + ["--max-frames N refines fewer frames"]

    return plan(need, budget, where=where, strict=strict, sequential_cfg=r.sequential_cfg, offload=r.offload,
                can_offload=not on_cpu, hints=hints)


def load_refine_pipeline(s: RefineSettings):
    from i2vgen.models.lora import apply_lora
    from i2vgen.pipelines.refine import I2VGenRefinePipeline

    r = _resolve_runtime(s.runtime, s.model)  # settings that skipped `prepare`
    apply_threads(r)
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
               callback=_callback("refine", s.steps, on_step, cancel), output_type="np", **_vae_kwargs(s.runtime))[0]
    fps = s.save_fps or video.fps
    meta = s.metadata()
    meta.update(input=str(Path(video.path).resolve()), input_fps=video.fps, fps=fps, frames=len(out),
                seconds=round(time.time() - t0, 2), generator="i2vgen")
    if s.runtime.plan is not None:
        meta["memory_plan"] = s.runtime.plan.as_dict()
    return Result(out, fps, meta)
