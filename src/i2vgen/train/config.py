"""Typed training configuration: `TrainConfig` with nested sections, named presets, YAML load and save.

Defaults live in the dataclasses only. A YAML file is a serialised `TrainConfig` (`cfg.save_yaml(path)` writes every
field; `TrainConfig.load_yaml(path)` reads it back, and a partial file takes the remaining fields from the dataclass
defaults), never a second source of defaults. Unknown keys are refused with their dotted name.

Presets (`PRESETS`, `preset(name)`) are the two phases of the recipe (spec §4, issue 5 item 5) and tiny CPU settings
(the quick start and tests):

- `i2vgen-xl-base`: phase 1, the base stage from Stable Diffusion 2.1 at low resolution (448x256, 16 frames) for
  semantics and motion;
- `i2vgen-xl-finetune`: the base stage fine-tuned from the released I2VGen-XL weights (the reference's own training
  config: lr 3e-5, 10 warm-up steps, EMA 0.9999, offset noise 0.1);
- `i2vgen-xl-refine`: phase 2, the refiner (MS-Vid2Vid-XL architecture) on high-quality 1280x720 clips, t <= 599;
- `tiny`, `tiny-refine`: CPU-sized runs (seconds) on the shipped `tiny-shapes` / `tiny-shapes-refiner` encoders
  and VAE, with a new UNet of the matching width; they need only data (`i2vgen train config tiny --data LIST`).
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from i2vgen.errors import InputError
from i2vgen.train.data import DataConfig, DataSource

Stage = Literal["base", "refine"]
MixedPrecision = Literal["no", "bf16", "fp16"]
Parallel = Literal["ddp", "fsdp"]


@dataclass
class ModelConfig:
    """Which networks to train and how they start."""

    # Diffusers-layout folder (or Hub id) with the frozen components: vae/, text_encoder/, tokenizer/ and, for the
    # base stage, image_encoder/.
    components: str = "ali-vilab/i2vgen-xl"
    # Start from these UNet weights (a folder or file `load_unet` reads: i2vgen, diffusers, VGen/ModelScope .pth);
    # None builds a new UNet of `unet_preset` whose temporal and conditioning layers start as identities.
    unet: str | None = None
    unet_preset: str = "i2vgen-xl"
    # A new UNet's spatial layers from a Stable Diffusion 2.1 UNet: a diffusers `UNet2DConditionModel` folder (or a
    # model folder holding unet/), or the original LDM `.ckpt` / `.safetensors`.
    sd_init: str | None = None
    concat_scale: float | None = None  # override the UNet's image-concat factor (base stage; None: as loaded)
    gradient_checkpointing: bool = True
    # Latents are a VAE posterior sample drawn every step (the reference); False uses the posterior mean.
    sample_posterior: bool = True
    # Text standing for "no text" in condition dropout (the unconditional branch of guidance at inference).
    # None: the stage's inference negative prompt (base: VGen's, refiner: ModelScope's), as VGen trains with its
    # negative-prompt embedding as `zero_y`.
    null_prompt: str | None = None
    # Appended to every caption. None: "" for the base stage, the refine pipeline's positive suffix for the refiner,
    # which the reference appends to every prompt at inference.
    caption_suffix: str | None = None


@dataclass
class OptimConfig:
    """AdamW with linear warm-up then cosine decay (VGen `AnnealingLR`)."""

    lr: float = 3e-5
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    warmup_steps: int = 10
    decay_steps: int | None = None  # cosine horizon in optimizer steps; None: max_steps
    min_lr_ratio: float = 0.0  # the cosine ends at lr * min_lr_ratio
    # gamma: learning-rate multiplier of the spatial (Stable Diffusion initialised) parameters (spec §4.1).
    # 1.0 is what the reference's gradient hook amounts to under AdamW; 0.5 is the scale it asks for.
    spatial_lr_scale: float = 0.5
    max_grad_norm: float | None = None  # gradient clipping; None: off (the reference clips only under FSDP)

    def __post_init__(self) -> None:
        self.betas = tuple(self.betas)
        if self.lr <= 0:
            raise InputError(f"optim.lr must be > 0, got {self.lr}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise InputError(f"optim.betas must be two numbers in [0, 1), got {self.betas}")
        if self.warmup_steps < 0:
            raise InputError(f"optim.warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.decay_steps is not None and self.decay_steps < 1:
            raise InputError(f"optim.decay_steps must be >= 1 (or None), got {self.decay_steps}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise InputError(f"optim.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if self.spatial_lr_scale < 0:
            raise InputError(f"optim.spatial_lr_scale must be >= 0, got {self.spatial_lr_scale}")
        if self.max_grad_norm is not None and self.max_grad_norm <= 0:
            raise InputError(f"optim.max_grad_norm must be > 0 (or None), got {self.max_grad_norm}")


@dataclass
class EMAConfig:
    enabled: bool = True
    decay: float = 0.9999
    # decay_k = min(decay, (1 + k) / (10 + k)) at optimizer step k, so short fine-tunes are not dominated by the
    # initial weights. Off in the reference.
    warmup: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.decay < 1:
            raise InputError(f"ema.decay must be in [0, 1), got {self.decay}")


T_DISTRIBUTIONS = ("uniform", "power", "logit-normal")


@dataclass
class LossConfig:
    """v-prediction MSE (spec §3), timesteps, offset noise, condition dropout and the refiner's degraded inputs."""

    offset_noise: float = 0.1
    t_max: int = 1000  # t in {0, ..., t_max - 1}; 600 for the refiner (SDEdit from t = 599 at inference)
    # Timestep distribution (docs/training.md, "Timesteps"): "uniform" (the reference), "power" (t = floor(t_max
    # (1 - u^t_skew)), u ~ U(0, 1): more samples at high noise for t_skew > 1) or "logit-normal" (t = t_max
    # sigmoid(n), n ~ N(t_logit_mean, t_logit_std^2)). A t_skew other than 1 with "uniform" means "power".
    t_dist: str = "uniform"
    t_skew: float = 1.0
    t_logit_mean: float = 0.0
    t_logit_std: float = 1.0
    # Mixture: this share of the samples is drawn uniformly from {t_top_min, ..., t_max - 1} instead, where only
    # the conditions (the text) can tell what the clip does; 0 turns it off.
    t_top_share: float = 0.0
    t_top_min: int = 950
    # Condition dropout for classifier-free guidance, three mutually exclusive events per sample (docs/training.md):
    # both text and CLIP image dropped (the unconditional branch used at inference), text only, image only. The
    # refiner has no image: it drops its text with probability drop_all + drop_text. The first-frame latent and fps
    # are always kept, as in both branches at inference.
    drop_all: float = 0.1
    drop_text: float = 0.05
    drop_image: float = 0.05
    # Independently of those: zero every image condition of a sample (first-frame latent and CLIP image embedding)
    # with this probability, so that the text alone must carry the content. 1.0 trains a text-to-image model on
    # one-frame clips (the tiny recipe's text-reading spatial initialisation, docs/tiny-shapes.md); 0 in the reference.
    drop_first_frame: float = 0.0
    # Refiner: for t >= degraded_min_t, x_t is made from the degraded clip's latent with this probability, and the
    # target is the v that leads to the clean latent (docs/training.md, "Refinement stage").
    degraded_prob: float = 0.5
    degraded_min_t: int = 300

    def __post_init__(self) -> None:
        for name in ("drop_all", "drop_text", "drop_image", "drop_first_frame", "degraded_prob"):
            v = getattr(self, name)
            if not 0 <= v <= 1:
                raise InputError(f"loss.{name} must be in [0, 1], got {v}")
        total = self.drop_all + self.drop_text + self.drop_image
        if total > 1 + 1e-9:
            raise InputError(f"loss.drop_all + drop_text + drop_image must be <= 1, got {total:g}")
        if not 1 <= self.t_max <= 1000:
            raise InputError(f"loss.t_max must be in [1, 1000], got {self.t_max}")
        if not self.t_skew > 0:
            raise InputError(f"loss.t_skew must be > 0, got {self.t_skew}")
        if self.t_dist == "uniform" and self.t_skew != 1:
            self.t_dist = "power"  # configs written before t_dist existed
        if self.t_dist not in T_DISTRIBUTIONS:
            raise InputError(f"loss.t_dist must be one of {', '.join(T_DISTRIBUTIONS)}, got {self.t_dist!r}")
        if not self.t_logit_std > 0:
            raise InputError(f"loss.t_logit_std must be > 0, got {self.t_logit_std}")
        if not 0 <= self.t_top_share <= 1:
            raise InputError(f"loss.t_top_share must be in [0, 1], got {self.t_top_share}")
        if self.t_top_share > 0 and not 0 <= self.t_top_min < self.t_max:
            raise InputError(f"loss.t_top_min must be in [0, t_max), got {self.t_top_min}")
        if self.offset_noise < 0:
            raise InputError(f"loss.offset_noise must be >= 0, got {self.offset_noise}")
        if self.degraded_min_t < 0:
            raise InputError(f"loss.degraded_min_t must be >= 0, got {self.degraded_min_t}")


@dataclass
class DegradeConfig:
    """Refiner inputs: the clip blurred, down-scaled, (optionally) round-tripped through the base stage's VAE, noised
    and up-scaled back (bilinear), one setting per clip."""

    scale_min: float = 2.0  # down-scaling factor, uniform in [scale_min, scale_max]
    scale_max: float = 4.0
    blur_max: float = 1.5  # Gaussian blur sigma (pixels of the full-size clip), uniform in [0, blur_max]
    noise_max: float = 0.05  # Gaussian pixel noise std (frames in [-1, 1]), uniform in [0, noise_max]
    # A model folder with vae/ (or a vae/ folder): the down-scaled frames go through this VAE (posterior mean, encode
    # then decode), as the base stage's output went through its decoder. Use the base model's folder when the
    # refiner's inputs come from it (docs/training.md, "Phase 2", Pairs). None: no VAE.
    vae: str | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.scale_min <= self.scale_max:
            raise InputError(f"degrade needs 1 <= scale_min <= scale_max, got {self.scale_min}, {self.scale_max}")
        if self.blur_max < 0 or self.noise_max < 0:
            raise InputError(f"degrade.blur_max and noise_max must be >= 0, got {self.blur_max}, {self.noise_max}")
        if self.vae is not None and (not isinstance(self.vae, str) or not self.vae):
            raise InputError(f"degrade.vae must name a model folder (or None), got {self.vae!r}")


@dataclass
class LoRAConfig:
    """peft LoRA on the attention projections; the UNet itself stays frozen and only the adapters are saved."""

    enabled: bool = False
    rank: int = 16
    alpha: float = 16.0
    dropout: float = 0.0
    # Linear layers to adapt, by the end of their name, inside spatial (`attentions`), temporal (`temp_attentions`)
    # and the input temporal transformer. `ff.net.0.proj` is not allowed (the GEGLU reads its weight directly).
    targets: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0")

    def __post_init__(self) -> None:
        self.targets = tuple(self.targets)
        if self.rank < 1:
            raise InputError(f"lora.rank must be >= 1, got {self.rank}")
        if not self.targets:
            raise InputError("lora.targets must name at least one layer")
        if any(t.endswith("ff.net.0.proj") or t == "proj" for t in self.targets):
            raise InputError("lora.targets cannot include the GEGLU projection ff.net.0.proj")


@dataclass
class LogConfig:
    every: int = 10  # optimizer steps between metrics rows (CSV, TensorBoard, console)
    tensorboard: bool = True  # also write TensorBoard scalars when `tensorboard` is installed
    sample_every: int = 0  # optimizer steps between sample videos from the EMA weights; 0: none
    sample_steps: int = 25  # sampler steps of a sample video
    sample_guidance: float | None = None  # None: 9.0 for the base stage, 7.5 for the refiner (inference defaults)
    sample_prompt: str | None = None  # None: the caption of the first training entry
    sample_image: str | None = None  # base stage; None: the first frame of the first training entry
    # Per-rank record of the data each rank consumed and the final parameter checksum (ranks/rank<r>.jsonl), to
    # check sharding and replica agreement.
    rank_files: bool = False
    # Text-use probe (i2vgen.train.text_probe): every `text_probe_every` steps (0: off), the v-loss of the dataset's
    # last `text_probe_samples` entries with distinct captions, with their own and with another entry's caption, at
    # `text_probe_t` (capped at loss.t_max - 1), same noise; text_probe.csv, TensorBoard text/*, and a warning
    # while the gap stays below `text_probe_warn` of the loss at every probed t.
    text_probe_every: int = 250
    text_probe_samples: int = 4
    text_probe_t: tuple[int, ...] = (999, 900)
    text_probe_warn: float = 0.01

    def __post_init__(self) -> None:
        if self.every < 1 or self.sample_every < 0 or self.sample_steps < 1:
            raise InputError(f"log.every and log.sample_steps must be >= 1 and log.sample_every >= 0, got "
                             f"{self.every}, {self.sample_steps}, {self.sample_every}")
        self.text_probe_t = tuple(int(t) for t in self.text_probe_t)
        if self.text_probe_every < 0 or self.text_probe_samples < 2 or not self.text_probe_t or \
                any(not 0 <= t <= 999 for t in self.text_probe_t):
            raise InputError(f"log.text_probe_every must be >= 0, text_probe_samples >= 2 and text_probe_t timesteps "
                             f"in [0, 999], got {self.text_probe_every}, {self.text_probe_samples}, "
                             f"{list(self.text_probe_t)}")


@dataclass
class CheckpointConfig:
    every: int = 1000  # optimizer steps between checkpoints; 0: only the final one
    keep_last: int = 3  # older step-* checkpoints are deleted; 0 keeps all
    save_final: bool = True

    def __post_init__(self) -> None:
        if self.every < 0 or self.keep_last < 0:
            raise InputError(f"checkpoint.every and keep_last must be >= 0, got {self.every}, {self.keep_last}")


@dataclass
class TrainConfig:
    """One training run of the base or the refinement stage."""

    stage: Stage = "base"
    output_dir: str = "runs/i2vgen-base"
    max_steps: int = 100_000  # optimizer steps
    batch_size: int = 2  # clips per process and micro-step
    grad_accum: int = 1  # micro-steps per optimizer step
    num_workers: int = 4  # decoding processes per training process
    seed: int = 0  # training noise, timesteps, dropout (each rank adds its rank); the data order is data.seed's
    mixed_precision: MixedPrecision = "bf16"  # autocast dtype of the UNet (weights and optimizer stay float32)
    device: str = "auto"  # "auto": cuda:<LOCAL_RANK> when CUDA is available, else cpu
    parallel: Parallel = "ddp"  # with several processes (torchrun / accelerate launch): DDP, or FSDP2 sharding
    # Latents and text embeddings cached on disk (docs/training.md says when this is valid); None: no cache.
    cache_dir: str | None = None
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    ema: EMAConfig = field(default_factory=EMAConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    degrade: DegradeConfig = field(default_factory=DegradeConfig)
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    log: LogConfig = field(default_factory=LogConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)

    def __post_init__(self) -> None:
        if self.stage not in ("base", "refine"):
            raise InputError(f"stage must be 'base' or 'refine', got {self.stage!r}")
        if self.mixed_precision not in ("no", "bf16", "fp16"):
            raise InputError(f"mixed_precision must be no, bf16 or fp16, got {self.mixed_precision!r}")
        if self.parallel not in ("ddp", "fsdp"):
            raise InputError(f"parallel must be ddp or fsdp, got {self.parallel!r}")
        for name in ("max_steps", "batch_size", "grad_accum"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.num_workers < 0:
            raise InputError(f"num_workers must be >= 0, got {self.num_workers}")
        if self.lora.enabled and self.parallel == "fsdp":
            raise InputError("LoRA training runs with parallel: ddp (the adapters are small); FSDP is for full models")

    # ---- YAML ----------------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return _to_plain(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        return _build(cls, d, "")

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True, width=120)

    def save_yaml(self, path: str | os.PathLike) -> Path:
        """Write the whole configuration atomically."""
        from i2vgen.io.atomic import atomic_write_text

        atomic_write_text(path, self.to_yaml())
        return Path(path)

    @classmethod
    def load_yaml(cls, path: str | os.PathLike) -> TrainConfig:
        import yaml

        path = Path(path)
        try:
            d = yaml.safe_load(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InputError(f"config file not found: {path}") from None
        except (OSError, yaml.YAMLError) as e:
            raise InputError(f"cannot read config {path}: {' '.join(str(e).split())}") from None
        if d is None:
            d = {}
        if not isinstance(d, dict):
            raise InputError(f"config {path} must hold a mapping of sections, got {type(d).__name__}")
        return cls.from_dict(d)

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with dotted keys changed: `cfg.replace(**{"optim.lr": 1e-4, "max_steps": 10})`."""
        d = self.to_dict()
        for key, value in changes.items():
            set_dotted(d, key, value)
        return TrainConfig.from_dict(d)


def set_dotted(d: dict[str, Any], key: str, value: Any) -> None:
    """d["a"]["b"] = value for key "a.b" (sections must exist)."""
    *path, last = key.split(".")
    node = d
    for part in path:
        if not isinstance(node.get(part), dict):
            raise InputError(f"unknown config section {key.rsplit('.', 1)[0]!r} in {key!r}")
        node = node[part]
    if last not in node:
        raise InputError(f"unknown config key {key!r}")
    node[last] = value


# ---- (de)serialisation of dataclasses ------------------------------------------------------------------------------
def _to_plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [_to_plain(v) for v in obj]
    if isinstance(obj, dict):
        return {k: _to_plain(v) for k, v in obj.items()}
    return obj


def _build(tp: Any, value: Any, where: str) -> Any:
    """`value` (from YAML) as type `tp`, recursing into dataclasses, lists, tuples and optionals."""
    name = where or "config"
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        first = dataclasses.fields(tp)[0].name
        if isinstance(value, (str, os.PathLike)) and first == "path":  # a data source given as its path
            value = {"path": os.fspath(value)}
        if not isinstance(value, dict):
            raise InputError(f"{name} must be a mapping, got {value!r}")
        hints = typing.get_type_hints(tp)
        fields = {f.name for f in dataclasses.fields(tp) if f.init}
        unknown = sorted(set(value) - fields)
        if unknown:
            dotted = ", ".join(f"{where + '.' if where else ''}{k}" for k in unknown)
            raise InputError(f"unknown config key(s): {dotted}")
        kw = {k: _build(hints[k], v, f"{where + '.' if where else ''}{k}") for k, v in value.items()}
        try:
            return tp(**kw)
        except TypeError as e:
            raise InputError(f"{name}: {e}") from None
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        errors = []
        for a in inner:
            try:
                return _build(a, value, where)
            except InputError as e:
                errors.append(str(e))
        raise InputError(errors[0] if errors else f"{name}: bad value {value!r}")
    if origin is Literal:
        if value not in args:
            raise InputError(f"{name} must be one of {', '.join(map(repr, args))}, got {value!r}")
        return value
    if origin in (list, tuple):
        if origin is list and isinstance(value, (str, dict)):  # one item for a list of them
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise InputError(f"{name} must be a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise InputError(f"{name} must have {len(args)} entries, got {len(value)}")
            return tuple(_build(a, v, f"{name}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
        item = args[0] if args else Any
        built = [_build(item, v, f"{name}[{i}]") for i, v in enumerate(value)]
        return tuple(built) if origin is tuple else built
    if origin is dict:
        if not isinstance(value, dict):
            raise InputError(f"{name} must be a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise InputError(f"{name} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InputError(f"{name} must be an integer, got {value!r}")
        return value
    if tp is float:
        # YAML 1.1 reads "3e-5" (no dot) as a string: accept numeric strings for float fields.
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InputError(f"{name} must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, (str, os.PathLike)):
            raise InputError(f"{name} must be a string, got {value!r}")
        return os.fspath(value)
    return value


# ---- presets --------------------------------------------------------------------------------------------------------
def _phase1_base() -> TrainConfig:
    return TrainConfig(
        stage="base",
        output_dir="runs/i2vgen-xl-base",
        max_steps=200_000,
        batch_size=2,
        model=ModelConfig(components="ali-vilab/i2vgen-xl", unet=None, unet_preset="i2vgen-xl",
                          sd_init="models/stable-diffusion-2-1"),
        data=DataConfig(sources=[DataSource("data/videos.txt")], num_frames=16, target_fps=8, width=448,
                        height=256),
        log=LogConfig(every=10, sample_every=2000),
        checkpoint=CheckpointConfig(every=2000),
    )


def _finetune_base() -> TrainConfig:
    return TrainConfig(
        stage="base",
        output_dir="runs/i2vgen-xl-finetune",
        max_steps=20_000,
        batch_size=1,
        model=ModelConfig(components="ali-vilab/i2vgen-xl", unet="ali-vilab/i2vgen-xl"),
        data=DataConfig(sources=[DataSource("data/videos.txt")], num_frames=16, target_fps=16, width=1280,
                        height=704),
        log=LogConfig(every=10, sample_every=1000),
        checkpoint=CheckpointConfig(every=1000),
    )


def _phase2_refine() -> TrainConfig:
    return TrainConfig(
        stage="refine",
        output_dir="runs/i2vgen-xl-refine",
        max_steps=50_000,
        batch_size=1,
        model=ModelConfig(components="models/ms-vid2vid-xl", unet="models/ms-vid2vid-xl/unet",
                          unet_preset="ms-vid2vid-xl"),
        data=DataConfig(sources=[DataSource("data/hq_videos.txt")], num_frames=16, target_fps=8, width=1280,
                        height=720),
        loss=LossConfig(t_max=600),
        log=LogConfig(every=10, sample_every=1000),
        checkpoint=CheckpointConfig(every=1000),
    )


def _tiny() -> TrainConfig:
    # The UNet preset's context width (32) is the shipped components' text width and image projection.
    return TrainConfig(
        stage="base",
        output_dir="runs/tiny",
        max_steps=2,
        batch_size=1,
        num_workers=0,
        mixed_precision="no",
        device="cpu",
        model=ModelConfig(components="tiny-shapes", unet_preset="tiny-shapes", gradient_checkpointing=False),
        data=DataConfig(num_frames=4, target_fps=8, width=32, height=32),
        optim=OptimConfig(lr=1e-3, warmup_steps=1),
        ema=EMAConfig(decay=0.9),
        log=LogConfig(every=1, tensorboard=False, sample_steps=2),
        checkpoint=CheckpointConfig(every=0, keep_last=2),
    )


def _tiny_refine() -> TrainConfig:
    cfg = _tiny()
    cfg.stage, cfg.output_dir = "refine", "runs/tiny-refine"
    cfg.model.components, cfg.model.unet_preset = "tiny-shapes-refiner", "tiny-shapes-refiner"
    cfg.data.width = cfg.data.height = 64  # the refiner model's size (a VAE that downsamples 4x: 16x16 latents)
    cfg.loss = LossConfig(t_max=600)
    return cfg


PRESETS: dict[str, typing.Callable[[], TrainConfig]] = {
    "i2vgen-xl-base": _phase1_base,
    "i2vgen-xl-finetune": _finetune_base,
    "i2vgen-xl-refine": _phase2_refine,
    "tiny": _tiny,
    "tiny-refine": _tiny_refine,
}


def preset(name: str) -> TrainConfig:
    """A fresh copy of a named preset."""
    try:
        return PRESETS[name]()
    except KeyError:
        raise InputError(f"unknown training preset {name!r}; choose from {', '.join(PRESETS)}") from None
