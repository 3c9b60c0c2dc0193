"""Typed generation and refinement settings: every default once, a model folder's suggestions merged in, and every
check that needs no weights, run before anything is loaded.

Torch-free at import. A field left `None` means "the model folder's suggestion, else the reference's value"
(`i2vgen.reference`); `resolved()` fills them, draws a seed when none is given, and `validate()` refuses what the
pipelines could not take with a one-line `InputError`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from i2vgen import reference
from i2vgen.diffusion.sampler_table import DEFAULT_SAMPLERS, default_steps, sampler_names
from i2vgen.errors import InputError
from i2vgen.model_paths import local_model_path, suggested_settings

if TYPE_CHECKING:
    from i2vgen.app.memory import Plan

# The `--fast` preset (issue 13): the sampler, steps, guided share and step caching that reached DDIM-50's held-out
# quality soonest on the trained tiny-shapes model (benchmarks/fast_sampling.py, docs/benchmarks.md).
FAST: dict[str, Any] = {"sampler": "dpmpp-2m", "steps": 12, "cfg_until": 0.5, "cache_interval": 2, "cache_depth": 1}
DTYPES = ("auto", "fp32", "fp16", "bf16")  # auto: `app.run.auto_dtype`, resolved by `prepare`
SPACINGS = ("leading", "trailing", "linspace")
RESIZE_MODES = ("stretch", "crop")
MAX_SEED = 2**64  # torch.Generator.manual_seed takes [0, 2**64)
MAX_STEPS = 1000  # one step per training timestep at most
MAX_FRAMES = 1024
MAX_SIDE = 8192  # pixels; the real models are trained at 1280x720
NUM_TRAIN_TIMESTEPS = 1000


@dataclass
class DeviceSettings:
    """Where and how the models run."""

    device: str = "cpu"
    dtype: str = "auto"  # one of DTYPES
    variant: str | None = None  # weight variant of a diffusers folder, e.g. "fp16"
    offload: bool = False  # model CPU offload: one component on the device at a time
    sequential_cfg: bool = False  # guidance as two forwards (less memory)
    max_memory: int | None = None  # bytes the run may use; None: what the device has free
    loras: tuple[str, ...] = ()  # "PATH[:SCALE]" adapters saved by `i2vgen train`
    threads: int | None = None  # torch CPU threads; None: torch's default (the physical cores)
    plan: Plan | None = None  # the memory planner's choice, set by `app.run.prepare` / `prepare_refine`


@dataclass
class GenerationSettings:
    """One base-stage (or, with `refine`, two-stage) video. `None`: the model folder's suggestion, else the
    reference's value."""

    prompt: str = ""
    negative_prompt: str | None = None  # None: the reference's negative prompt
    model: str = reference.BASE_MODEL
    num_frames: int | None = None
    width: int | None = None  # the base stage's size (640x352 with `refine` unless the folder says otherwise)
    height: int | None = None
    steps: int | None = None  # None: the sampler's default
    guidance: float | None = None
    sampler: str = DEFAULT_SAMPLERS["base"]
    timestep_spacing: str | None = None  # None: the folder's suggestion, else the sampler's
    seed: int | None = None  # None: a random seed, recorded in the metadata
    fps: int | None = None  # the fps condition
    save_fps: float = reference.SAVE_FPS  # the written file's frame rate
    refine: bool = False
    refiner_model: str | None = None
    refiner_unet: str | None = None
    refine_width: int | None = None
    refine_height: int | None = None
    strength: float | None = None
    refine_guidance: float | None = None  # the refiner's guidance (the reference's 7.5 unless the folder suggests)
    refine_steps: int | None = None
    refine_sampler: str | None = None  # None: the folder's suggestion, else the reference's DPM-Solver++ 2M SDE
    # speed (issue 13; docs/benchmarks.md "Fewer UNet calls"): guide the first `cfg_until` share of the steps only;
    # step caching every `cache_interval` steps over the outer `cache_depth` levels (1: off). `FAST` sets them.
    cfg_until: float = 1.0
    cache_interval: int = 1
    cache_depth: int = 1
    runtime: DeviceSettings = field(default_factory=DeviceSettings)

    @classmethod
    def from_model_folder(cls, model: str = reference.BASE_MODEL, **fields: Any) -> GenerationSettings:
        """Settings for `model` with `fields` given and the rest from the folder's suggestions and the reference
        (`resolved()`)."""
        return cls(model=model, **fields).resolved()

    def resolved(self) -> GenerationSettings:
        """A copy with every `None` filled: explicit value > model folder's suggestion > reference value; a seed is
        drawn when none was given."""
        s = dataclasses.replace(self)
        sug = suggested_settings(s.model) if isinstance(s.model, (str, os.PathLike)) else {}
        sized = "width" in sug
        base_w, base_h = ((reference.CASCADE_WIDTH, reference.CASCADE_HEIGHT) if s.refine and not sized
                          else (reference.WIDTH, reference.HEIGHT))
        fallback = {"num_frames": reference.NUM_FRAMES, "width": base_w, "height": base_h,
                    "fps": reference.TARGET_FPS, "guidance": reference.GUIDANCE,
                    "refine_width": reference.REFINE_WIDTH, "refine_height": reference.REFINE_HEIGHT,
                    "strength": reference.STRENGTH, "refine_guidance": reference.REFINE_GUIDANCE,
                    "refine_sampler": DEFAULT_SAMPLERS["refine"], "refiner_model": None, "timestep_spacing": None}
        for name, value in fallback.items():
            if getattr(s, name) is None:
                setattr(s, name, sug.get(name, value))
        if s.negative_prompt is None:
            s.negative_prompt = reference.NEGATIVE_PROMPT
        if s.steps is None and s.sampler in sampler_names("base"):
            s.steps = default_steps(s.sampler, "base")
        if s.refine_steps is None and s.refine_sampler in sampler_names("refine"):
            s.refine_steps = default_steps(s.refine_sampler, "refine")
        if s.seed is None:
            s.seed = random.randrange(2**31)
        return s

    def validate(self) -> None:
        """Refuse, with one line, any setting the pipelines cannot take; needs no weights (resolved settings)."""
        check_text(self.prompt, "prompt", required=True)
        check_text(self.negative_prompt, "negative prompt")
        check_model_name(self.model, "model")
        check_int(self.num_frames, "frames", 1, MAX_FRAMES)
        check_size(self.width, self.height, "")
        check_choice(self.sampler, "sampler", sampler_names("base"))
        check_int(self.steps, "steps", 1, MAX_STEPS)
        check_number(self.guidance, "guidance", 0, 100)
        check_number(self.cfg_until, "cfg until", 0, 1, low_open=True)
        check_int(self.cache_interval, "cache interval", 1, MAX_STEPS)
        check_int(self.cache_depth, "cache depth", 1, 8)
        if self.timestep_spacing is not None:
            check_choice(self.timestep_spacing, "timestep spacing", SPACINGS)
        check_seed(self.seed)
        check_int(self.fps, "fps", 1, 240)
        check_number(self.save_fps, "save fps", 0, 1000, low_open=True)
        if self.refine:
            if not self.refiner_model:
                raise InputError("refinement needs a refiner model (a folder with unet/, vae/, text_encoder/, "
                                 "tokenizer/); the tiny-shapes model names its own")
            check_model_name(self.refiner_model, "refiner model")
            check_size(self.refine_width, self.refine_height, "refine ")
            check_strength(self.strength)
            check_number(self.refine_guidance, "refine guidance", 0, 100)
            check_choice(self.refine_sampler, "refine sampler", sampler_names("refine"))
            check_int(self.refine_steps, "refine steps", 1, MAX_STEPS)
        check_runtime(self.runtime)

    def metadata(self) -> dict[str, Any]:
        """What the output's metadata records of these settings."""
        meta = {"prompt": self.prompt, "negative_prompt": self.negative_prompt, "seed": self.seed,
                "sampler": self.sampler, "steps": self.steps, "timestep_spacing": self.timestep_spacing,
                "guidance": self.guidance, "fps_condition": self.fps, "model": str(self.model),
                "frames": self.num_frames, "width": self.width, "height": self.height}
        if (self.cfg_until, self.cache_interval) != (1.0, 1):  # recorded when used (resume keys stay as they were)
            meta.update(cfg_until=self.cfg_until, cache_interval=self.cache_interval, cache_depth=self.cache_depth)
        if self.refine:
            meta.update(width=self.refine_width, height=self.refine_height, base_width=self.width,
                        base_height=self.height,
                        refine={"model": str(self.refiner_model), "unet": self.refiner_unet,
                                "strength": self.strength, "t_start": strength_to_t_start(self.strength),
                                "steps": self.refine_steps, "sampler": self.refine_sampler})
            if self.refine_guidance != reference.REFINE_GUIDANCE:  # recorded when not the reference's (resume keys)
                meta["refine"]["guidance"] = self.refine_guidance
        return meta

    def output_key(self) -> dict[str, Any]:
        """Every setting that changes the output's pixels (a batch list's resume key)."""
        key = self.metadata()
        key.update(save_fps=self.save_fps, dtype=self.runtime.dtype, variant=self.runtime.variant,
                   loras=list(self.runtime.loras), device_type=self.runtime.device.split(":")[0])
        return key


@dataclass
class RefineSettings:
    """Refining one video (the refinement stage alone). `None`: the refiner folder's suggestion, else the
    reference's value."""

    model: str = ""  # the refiner folder (unet/, vae/, text_encoder/, tokenizer/)
    unet: str | None = None  # refiner UNet weights instead of MODEL/unet
    prompt: str = ""
    negative_prompt: str | None = None  # None: the reference's
    positive_suffix: bool = True  # append the reference's quality suffix to the prompt
    width: int | None = None
    height: int | None = None
    strength: float | None = None
    sampler: str | None = None  # None: the folder's suggestion, else the reference's DPM-Solver++ 2M SDE
    steps: int | None = None
    guidance: float | None = None
    guidance_rescale: float = reference.REFINE_GUIDANCE_RESCALE
    window: int = 32  # frames per temporal window; 0: all at once
    overlap: int | None = None  # None: window // 4
    max_frames: int | None = None
    resize: str = "stretch"
    save_fps: float | None = None  # None: the input's
    seed: int | None = None
    runtime: DeviceSettings = field(default_factory=DeviceSettings)

    def resolved(self) -> RefineSettings:
        s = dataclasses.replace(self)
        sug = suggested_settings(s.model) if isinstance(s.model, (str, os.PathLike)) and s.model else {}
        s.width = sug.get("width", reference.REFINE_WIDTH) if s.width is None else s.width
        s.height = sug.get("height", reference.REFINE_HEIGHT) if s.height is None else s.height
        s.strength = sug.get("strength", reference.STRENGTH) if s.strength is None else s.strength
        s.guidance = sug.get("guidance", reference.REFINE_GUIDANCE) if s.guidance is None else s.guidance
        s.sampler = sug.get("sampler", DEFAULT_SAMPLERS["refine"]) if s.sampler is None else s.sampler
        if s.negative_prompt is None:
            s.negative_prompt = reference.REFINE_NEGATIVE_PROMPT
        if s.steps is None and s.sampler in sampler_names("refine"):
            s.steps = default_steps(s.sampler, "refine")
        if s.overlap is None and isinstance(s.window, int):
            s.overlap = s.window // 4
        if s.seed is None:
            s.seed = random.randrange(2**31)
        return s

    def validate(self) -> None:
        if not self.model:
            raise InputError("refinement needs a refiner model folder (unet/, vae/, text_encoder/, tokenizer/)")
        check_model_name(self.model, "model")
        check_text(self.prompt, "prompt")
        check_text(self.negative_prompt, "negative prompt")
        check_size(self.width, self.height, "")
        check_strength(self.strength)
        check_choice(self.sampler, "sampler", sampler_names("refine"))
        check_int(self.steps, "steps", 1, MAX_STEPS)
        check_number(self.guidance, "guidance", 0, 100)
        check_number(self.guidance_rescale, "guidance rescale", 0, 1)
        check_int(self.window, "window", 0, MAX_FRAMES)
        check_int(self.overlap, "overlap", 0, MAX_FRAMES)
        if self.window and self.overlap >= self.window:
            raise InputError(f"overlap must be smaller than the window, got {self.overlap} >= {self.window}")
        if self.max_frames is not None:
            check_int(self.max_frames, "max frames", 1, 10**6)
        check_choice(self.resize, "resize", RESIZE_MODES)
        if self.save_fps is not None:
            check_number(self.save_fps, "save fps", 0, 1000, low_open=True)
        check_seed(self.seed)
        check_runtime(self.runtime)

    def metadata(self) -> dict[str, Any]:
        return {"prompt": self.prompt, "positive_suffix": reference.POSITIVE_SUFFIX if self.positive_suffix else "",
                "negative_prompt": self.negative_prompt, "seed": self.seed, "sampler": self.sampler,
                "steps": self.steps, "guidance": self.guidance, "guidance_rescale": self.guidance_rescale,
                "strength": self.strength, "t_start": strength_to_t_start(self.strength), "model": str(self.model),
                "unet": self.unet, "width": self.width, "height": self.height, "resize": self.resize,
                "window": self.window or None, "overlap": self.overlap, "stage": "refine"}


# ---- checks (one line each) ----------------------------------------------------------------------------------------
def strength_to_t_start(strength: float) -> int:
    """SDEdit start timestep: round(strength * 1000) - 1 (0.6 -> 599, ModelScope's `total_noise_levels = 600`)."""
    return round(strength * NUM_TRAIN_TIMESTEPS) - 1


def check_text(value: object, name: str, required: bool = False) -> None:
    if not isinstance(value, str):
        raise InputError(f"{name} must be text, got {type(value).__name__}")
    if required and not value.strip():
        raise InputError(f"a {name} is required")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InputError(f"the {name} is not valid UTF-8 text (check the terminal's encoding)") from None


def check_int(value: object, name: str, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"{name} must be an integer, got {value!r}")
    if not low <= value <= high:
        raise InputError(f"{name} must be in [{low}, {high}], got {value}")


def check_number(value: object, name: str, low: float, high: float, low_open: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(f"{name} must be a finite number, got {value!r}")
    if value > high or value < low or (low_open and value == low):
        bracket = "(" if low_open else "["
        raise InputError(f"{name} must be in {bracket}{low:g}, {high:g}], got {value:g}")


def check_choice(value: object, name: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise InputError(f"unknown {name} {value!r}; choose from {', '.join(choices)}")


def check_seed(seed: object) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < MAX_SEED:
        raise InputError(f"seed must be an integer in [0, 2**64), got {seed!r}")


def check_size(width: object, height: object, what: str, multiple: int = 1) -> None:
    """Both sides integers in [1, MAX_SIDE] and multiples of `multiple` (the VAE's downscale, read from the model
    folder by the caller)."""
    for name, v in (("width", width), ("height", height)):
        check_int(v, f"{what}{name}", 1, MAX_SIDE)
    if width % multiple or height % multiple:
        raise InputError(f"{what}width and height must be positive multiples of {multiple}, got {width}x{height}")


def check_strength(strength: object) -> None:
    check_number(strength, "strength", 0, 1, low_open=True)
    if strength_to_t_start(strength) < 1:
        raise InputError(f"strength {strength} is too low: it starts at t = {strength_to_t_start(strength)}; "
                         f"use at least 0.002")


def check_model_name(model: object, name: str) -> None:
    if not isinstance(model, (str, os.PathLike)) or not os.fspath(model):
        raise InputError(f"{name} must be a folder, a built-in name or a Hub id, got {model!r}")
    p = local_model_path(model)
    if p.exists() and not p.is_dir():
        raise InputError(f"{name} {os.fspath(model)} is a file; expected a model folder")


def check_runtime(r: DeviceSettings) -> None:
    check_choice(r.dtype, "dtype", DTYPES)
    if r.threads is not None:
        check_int(r.threads, "threads", 1, 1024)
    if r.max_memory is not None:
        check_int(r.max_memory, "max memory", 1, 2**60)
    if not isinstance(r.device, str) or not r.device:
        raise InputError(f"device must be a name such as cpu or cuda:0, got {r.device!r}")


def parse_memory(text: str) -> int:
    """'24GB', '24G', '512MiB', '1e9' -> bytes (decimal units for B/KB/MB/GB/TB, binary for KiB/MiB/GiB/TiB)."""
    units = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
             "t": 10**12, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
    s = text.strip().lower().replace(" ", "")
    num = s.rstrip("kmgtib")
    unit = s[len(num):]
    try:
        value = float(num)
    except ValueError:
        value = -1.0
    if unit not in units or not math.isfinite(value) or value <= 0:
        raise InputError(f"memory amount {text!r} not understood; write e.g. 24GB, 512MiB or 8e9")
    return int(value * units[unit])
