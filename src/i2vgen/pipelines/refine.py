"""`I2VGenRefinePipeline`: text-guided video-to-video refinement, the second stage of I2VGen-XL.

The public weights of this stage are ModelScope's MS-Vid2Vid-XL, and the defaults are its recipe (spec 1.4): frames
resized bilinearly in pixel space to 1280x720, VAE-encoded (a posterior sample), noised forward to t = 599 (SDEdit,
Meng et al. 2022), then DPM-Solver++(2M) SDE with 30 trailing steps over the refiner's own schedule
(logSNR-cosine-interp 2 -> 4, zero terminal SNR, v-prediction), classifier-free guidance 7.5 with guidance rescale
0.2, the reference's positive suffix appended to the prompt and its negative prompt. Heun with 50 steps is the
reference's slower option.

Beyond the reference:
- `strength` moves the SDEdit start: t_start = round(strength * 1000) - 1, so 0.6 -> 599 (the reference), 0.3 -> 299
  (keeps more of the input), 1.0 -> 999 (pure noise: the input is ignored).
- Videos of any length: the denoiser runs on overlapping temporal windows (default 32 frames, the reference's
  maximum, overlapping by 8) and their x0 predictions are blended linearly in latent space at every step
  (MultiDiffusion, Bar-Tal et al. 2023), so the UNet never sees more than one window and its memory is bounded by the window, not by
  the video. VAE encoding and decoding run a few frames at a time. The host holds the input frames (uint8), the
  latents and the decoded output.
- Any input: a video file (anything PyAV reads, audio ignored; a variable-frame-rate file is resampled to its average
  rate with `read_video_cfr`, with a warning), uint8 or float frames, or the base stage's tensor output.
- `resize_mode="crop"` cover-resizes and centre-crops instead of stretching the input to the target aspect.

Two ModelScope details are kept by default so the checkpoint runs as it was used: `modelscope_start` (its solvers are
handed the already-noised latent and scale it once more, so the network first sees sqrt(1 - a_t0) * x_t, spec 1.4
item 9; a 2.8 % down-scale at t = 599) and `round_timesteps` (the network sees fractional grid timesteps rounded).
Set both to False for textbook SDEdit.

Assembling the real model folder (no diffusers-format release of MS-Vid2Vid-XL exists):

    refiner/unet/          i2vgen convert non_ema_0035000.pth refiner/unet --to i2vgen   (ali-vilab/MS-Vid2Vid-XL)
    refiner/vae/           the SD-2.1 VAE: vae/ of ali-vilab/i2vgen-xl
    refiner/text_encoder/  OpenCLIP ViT-H/14 text tower (its penultimate layer): text_encoder/ of ali-vilab/i2vgen-xl
    refiner/tokenizer/     tokenizer/ of ali-vilab/i2vgen-xl

then `I2VGenRefinePipeline.from_pretrained("refiner")`. Or keep the checkpoint as it is and take the other components
from a base model folder: `from_pretrained("i2vgen-xl", unet="non_ema_0035000.pth")`.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from i2vgen import reference
from i2vgen.diffusion import (
    Denoiser,
    alpha_bar_at,
    classifier_free_guidance,
    q_sample,
    refiner_alphas_cumprod,
    refiner_timesteps,
    vpred_denoiser,
)
from i2vgen.diffusion.registry import get_sampler
from i2vgen.diffusion.sampler_table import DEFAULT_SAMPLERS
from i2vgen.errors import CheckpointError, InputError
from i2vgen.io.video import probe_video, read_video, read_video_cfr
from i2vgen.model_paths import check_model_folder, local_model_path, resolve_model_path
from i2vgen.models.configs import UNetConfig
from i2vgen.models.encoders import TextEncoder
from i2vgen.models.loading import load_unet
from i2vgen.models.refiner import I2VGenRefinerUNet, check_refiner_size
from i2vgen.models.vae import VideoVAE
from i2vgen.pipelines.common import (
    OUTPUT_TYPES,
    ModelConventions,
    OutputType,
    StagePipeline,
    check_generator,
    frames_to_output,
)

# ModelScope modelscope/models/multi_modal/video_to_video/utils/config.py:162-169 (spec 1.4 item 3).
POSITIVE_SUFFIX = reference.POSITIVE_SUFFIX
DEFAULT_NEGATIVE_PROMPT = reference.REFINE_NEGATIVE_PROMPT
COMPONENTS = ["unet", "vae", "text_encoder", "tokenizer"]
ENCODE_SEGMENT = 8  # frames resized to the target size at once before VAE encoding (bounds host memory)
ResizeMode = Literal["stretch", "crop"]
StepCallback = Callable[[int, float, Tensor], None]
VideoSource = str | os.PathLike | np.ndarray | Tensor


def strength_to_t_start(strength: float, num_train_timesteps: int = 1000) -> int:
    """SDEdit start timestep: round(strength * 1000) - 1. 0.6 -> 599 (ModelScope's `total_noise_levels = 600`)."""
    if not isinstance(strength, (int, float)) or not 0 < strength <= 1:
        raise InputError(f"strength must be in (0, 1], got {strength!r}")
    t = round(strength * num_train_timesteps) - 1
    if t < 1:
        raise InputError(f"strength {strength} is too low: it starts at t = {t}; use at least "
                         f"{2 / num_train_timesteps}")
    return t


def sampling_timesteps(strength: float, sampler: str, steps: int | None = None,
                       num_train_timesteps: int = 1000) -> Tensor:
    """The refiner's trailing grid (ModelScope) from t_start = round(strength * 1000) - 1: `steps` timesteps
    (default: the sampler's in `diffusion.sampler_table`, whose `discard_penultimate` drops the grid's penultimate
    point for DPM-Solver++ as ModelScope does)."""
    spec = get_sampler(sampler, "refine")
    steps = spec.default_steps["refine"] if steps is None else steps
    if not isinstance(steps, int) or steps < 1:
        raise InputError(f"num_inference_steps must be an integer >= 1, got {steps!r}")
    t_start = strength_to_t_start(strength, num_train_timesteps)
    ts = refiner_timesteps(steps, t_max=t_start, discard_penultimate=spec.discard_penultimate)
    if len(ts) > 1 and (ts[1:] >= ts[:-1]).any():
        raise InputError(f"{steps} steps do not fit below t_start = {t_start} (strength {strength}); "
                         f"use fewer steps or a higher strength")
    return ts


def check_target_size(width: int, height: int, downscale: int, unet_config: UNetConfig) -> None:
    """Refuse a target size the VAE or the refiner UNet cannot take, with a one-line `InputError`."""
    f = downscale
    if not (isinstance(width, int) and isinstance(height, int)) or width < f or height < f or width % f \
            or height % f:
        raise InputError(f"refine width and height must be positive multiples of {f}, got {width}x{height}")
    if unet_config.refiner_resampling:
        try:
            check_refiner_size(height // f, width // f, len(unet_config.block_out_channels) - 1)
        except InputError as e:
            raise InputError(f"refine size {width}x{height} does not fit the refiner UNet: {e}") from None


def folder_geometry(path: str | os.PathLike, unet: str | os.PathLike | None = None) -> tuple[int, UNetConfig] | None:
    """(VAE downscale, UNet config) of a local refiner folder, read from its config.json files without loading any
    weights, so a command line can refuse a bad size first; None when they cannot be read this way (a Hub id not yet
    downloaded, a bare `.pth` UNet), in which case the pipeline checks after loading."""
    root = local_model_path(path)
    unet_dir = root / "unet" if unet is None else Path(unet)
    try:
        vae = json.loads((root / "vae" / "config.json").read_text())
        meta = json.loads((unet_dir / "config.json").read_text())
        downscale = 2 ** (len(vae["block_out_channels"]) - 1)
        cfg = UNetConfig.from_dict(meta) if meta.get("_class_name") == "I2VGenRefinerUNet" \
            else UNetConfig.from_diffusers_config(meta)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, CheckpointError):
        return None
    return downscale, cfg


# ---- temporal windows ---------------------------------------------------------------------------------------------
def temporal_windows(num_frames: int, window_size: int | None, overlap: int) -> list[tuple[int, int]]:
    """[start, end) frame spans of length `window_size` covering `num_frames`, spread evenly so that neighbours
    overlap by at least `overlap` frames; one span when the video fits in a window (or `window_size` is None)."""
    if window_size is None or num_frames <= window_size:
        return [(0, num_frames)]
    stride = window_size - overlap
    n = math.ceil((num_frames - overlap) / stride)
    starts = [round(k * (num_frames - window_size) / (n - 1)) for k in range(n)]
    return [(s, s + window_size) for s in starts]


def blend_weights(spans: list[tuple[int, int]], num_frames: int) -> list[Tensor]:
    """Per-window frame weights (float64, one (n,) tensor per span) that sum to 1 at every frame: 1 inside a window,
    ramping linearly over the frames it shares with the previous and the next window."""
    raw = []
    for k, (s, e) in enumerate(spans):
        n = e - s
        ov_prev = spans[k - 1][1] - s if k > 0 else 0
        ov_next = e - spans[k + 1][0] if k + 1 < len(spans) else 0
        i = torch.arange(n, dtype=torch.float64)
        raw.append(torch.minimum((i + 1) / (ov_prev + 1), (n - i) / (ov_next + 1)).clamp(max=1.0))
    total = torch.zeros(num_frames, dtype=torch.float64)
    for (s, e), w in zip(spans, raw):
        total[s:e] += w
    return [w / total[s:e] for (s, e), w in zip(spans, raw)]


def windowed_denoiser(denoise: Denoiser, num_frames: int, window_size: int | None, overlap: int) -> Denoiser:
    """Run `denoise` on overlapping temporal windows of x (B, C, F, H, W) and blend the x0 predictions linearly."""
    spans = temporal_windows(num_frames, window_size, overlap)
    if len(spans) == 1:
        return denoise
    weights = blend_weights(spans, num_frames)

    def run(x: Tensor, t: Tensor) -> Tensor:
        out = torch.zeros_like(x)  # (B, C, F, H, W)
        for (s, e), w in zip(spans, weights):
            out[:, :, s:e] += denoise(x[:, :, s:e], t) * w.to(x).view(1, 1, -1, 1, 1)
        return out

    return run


# ---- video input --------------------------------------------------------------------------------------------------
def load_video(path: str | os.PathLike, *, max_frames: int | None = None) -> tuple[np.ndarray, float, list[str]]:
    """Read a video file for refinement -> (uint8 frames (F, H, W, 3), fps, notes for the user).

    Audio tracks are ignored; a variable-frame-rate file is resampled to its average rate (the nearest frame at each
    tick, `read_video_cfr`), which keeps its duration. Unreadable, empty and zero-frame files raise a one-line
    `InputError`.
    """
    info = probe_video(path)
    notes = []
    if info.variable_frame_rate:
        frames, fps = read_video_cfr(path, max_frames=max_frames)
        notes.append(f"variable frame rate: resampled to a constant {fps:g} fps")
    else:
        frames, fps = read_video(path, max_frames=max_frames)
    if info.has_audio:
        notes.append("the audio track is ignored (not copied to the output)")
    return frames, fps, notes


def video_to_frames(video: VideoSource, *, max_frames: int | None = None) -> Tensor:
    """Any video source -> frames (F, 3, H, W) on the CPU, uint8 or float32 in [0, 1].

    Accepts a file path; numpy (F, H, W, 3) or (1, F, H, W, 3) uint8 or float in [0, 1] (`read_video`, or the base
    stage's "np" output); a tensor (1, 3, F, H, W) or (F, 3, H, W), uint8 or float in [0, 1] (the base stage's "pt"
    output).
    """
    if max_frames is not None and (not isinstance(max_frames, int) or max_frames < 1):
        raise InputError(f"max_frames must be an integer >= 1, got {max_frames!r}")
    if isinstance(video, (str, os.PathLike)):
        frames, _, notes = load_video(video, max_frames=max_frames)
        for note in notes:
            warnings.warn(f"{os.fspath(video)}: {note}", stacklevel=4)
        video = frames
    if isinstance(video, np.ndarray):
        if video.ndim == 5 and video.shape[0] == 1:
            video = video[0]
        if video.ndim != 4 or video.shape[-1] != 3:
            raise InputError(f"numpy frames must be (F, H, W, 3), got shape {video.shape}")
        t = torch.from_numpy(np.ascontiguousarray(video)).permute(0, 3, 1, 2)  # (F, 3, H, W)
    elif isinstance(video, Tensor):
        t = video.detach().cpu()
        if t.ndim == 5 and t.shape[0] == 1 and t.shape[1] == 3:
            t = t[0].transpose(0, 1)  # (1, 3, F, H, W) -> (F, 3, H, W)
        if t.ndim != 4 or t.shape[1] != 3:
            raise InputError(f"a frame tensor must be (1, 3, F, H, W) or (F, 3, H, W), got {tuple(video.shape)}")
    else:
        raise InputError(f"cannot refine a video given as {type(video).__name__}; pass a path, frames or a tensor")
    if t.shape[0] == 0 or t.shape[2] == 0 or t.shape[3] == 0:
        raise InputError(f"the video has no frames or no pixels: shape {tuple(t.shape)}")
    if t.dtype != torch.uint8:
        if not t.is_floating_point():
            raise InputError(f"frames must be uint8 or float in [0, 1], got {t.dtype}")
        t = t.float()
        if not torch.isfinite(t).all() or t.min() < -0.01 or t.max() > 1.01:
            raise InputError(f"float frames must lie in [0, 1], got [{t.min().item():.3g}, {t.max().item():.3g}]")
    return t[:max_frames] if max_frames is not None else t


def resize_frames(frames: Tensor, width: int, height: int, mode: ResizeMode = "stretch") -> Tensor:
    """(N, 3, H, W) uint8 or [0, 1] frames -> (N, 3, height, width) float32 in [-1, 1], bilinear in pixel space.

    "stretch" is the reference (`F.interpolate(..., (720, 1280), mode="bilinear")`); "crop" scales to cover the target
    and crops the centre. Down-scaling is antialiased (up-scaling equals the reference to ~2e-5).
    """
    x = frames.float() / 255 if frames.dtype == torch.uint8 else frames.float()
    h, w = x.shape[-2:]
    if mode == "crop":
        s = max(width / w, height / h)
        size = (max(height, round(h * s)), max(width, round(w * s)))
    elif mode == "stretch":
        size = (height, width)
    else:
        raise InputError(f"resize_mode must be 'stretch' or 'crop', got {mode!r}")
    if size != (h, w):
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False,
                          antialias=size[0] < h or size[1] < w)
    top, left = (size[0] - height) // 2, (size[1] - width) // 2
    x = x[..., top:top + height, left:left + width]
    return x * 2 - 1


# ---- the pipeline -------------------------------------------------------------------------------------------------
class I2VGenRefinePipeline(StagePipeline):
    """Video + text -> a refined video at 1280x720 (MS-Vid2Vid-XL). Components are passed in; `from_pretrained`
    loads a folder."""

    def __init__(self, unet: I2VGenRefinerUNet, vae: VideoVAE, text_encoder: TextEncoder, *,
                 alphas_cumprod: Tensor | None = None, device: torch.device | str = "cpu",
                 conventions: ModelConventions | None = None) -> None:
        self.unet, self.vae, self.text_encoder = unet.eval(), vae.eval(), text_encoder.eval()
        self.alphas_cumprod = refiner_alphas_cumprod() if alphas_cumprod is None else alphas_cumprod
        self.conventions = conventions or ModelConventions()
        self.to(device)  # sets self.placement

    # ---- construction ------------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path_or_hub_id: str | os.PathLike, *, unet: str | os.PathLike | None = None,
                        unet_config: UNetConfig | None = None, dtype: torch.dtype = torch.float32,
                        variant: str | None = None, device: torch.device | str = "cpu",
                        refiner_resampling: bool | None = None,
                        vae_scaling_factor: float | None = None) -> I2VGenRefinePipeline:
        """Load a refiner folder (unet/, vae/, text_encoder/, tokenizer/; see the module docstring), or take the UNet
        from `unet` (a ModelScope `.pth`, a diffusers `UNet3DConditionModel` folder or an i2vgen folder) and the
        other components from the folder. `unet_config` gives the architecture of a bare checkpoint whose shapes do not
        tell it (norm groups other than 32).

        `refiner_resampling` overrides the (2,1)-pad / row-crop resampling (default: on for ModelScope checkpoints and
        i2vgen folders that say so, off for diffusers folders); `vae_scaling_factor` defaults to 0.18215.
        """
        needed = COMPONENTS if unet is None else [c for c in COMPONENTS if c != "unet"]
        root = resolve_model_path(path_or_hub_id, components=needed, variant=variant)
        check_model_folder(root, needed)
        net = load_unet(root / "unet" if unet is None else unet, dtype, config=unet_config, variant=variant,
                        refiner_resampling=refiner_resampling)
        if not isinstance(net, I2VGenRefinerUNet):
            raise CheckpointError(f"{unet or root / 'unet'} holds an image-conditioned base UNet, not a refiner")
        vae_kw = {} if vae_scaling_factor is None else {"scaling_factor": vae_scaling_factor}
        vae = VideoVAE.from_model_folder(root, dtype, variant, **vae_kw)
        text = TextEncoder.from_model_folder(root, dtype, variant)
        d, td = net.config.cross_attention_dim, text.model.config.hidden_size
        if td != d:
            raise CheckpointError(f"component sizes do not match: refiner UNet context {d}, text encoder {td}")
        if vae.latent_channels != net.config.in_channels:
            raise CheckpointError(f"VAE latent channels {vae.latent_channels} != UNet input channels "
                                  f"{net.config.in_channels}")
        return cls(net, vae, text, device=device, conventions=ModelConventions.from_folder(root))

    def _modules(self) -> list[torch.nn.Module]:
        return [self.text_encoder, self.vae, self.unet]

    # ---- steps -------------------------------------------------------------------------------------------------
    def check_size(self, width: int, height: int) -> None:
        check_target_size(width, height, self.vae.downscale, self.unet.config)

    @torch.no_grad()
    def encode_prompt(self, prompt: str, negative_prompt: str, positive_suffix: str = "") -> tuple[Tensor, Tensor]:
        """-> (cond, uncond) text contexts, each (1, 77, D), cond from `prompt + positive_suffix`.

        The reference's suffix alone is about 70 tokens, so with most prompts its tail is cut to fit the 77-token
        context, as in the reference; that is not warned about, only a prompt that does not fit by itself is.
        """
        te = self.text_encoder
        own_tokens = len(te.tokenizer(prompt, truncation=False, verbose=False).input_ids)
        with self.placement.use(te), warnings.catch_warnings():
            if own_tokens <= te.context_length:
                warnings.filterwarnings("ignore", message="prompt 0 is")
            if negative_prompt == DEFAULT_NEGATIVE_PROMPT:  # the reference's own text, cut as the reference does
                warnings.filterwarnings("ignore", message="prompt 1 is")
            both = te.encode([prompt + positive_suffix, negative_prompt])  # (2, 77, D)
        return both[:1], both[1:]

    @torch.no_grad()
    def encode_video(self, frames: Tensor, width: int, height: int, *, generator: torch.Generator | None,
                     resize_mode: ResizeMode = "stretch", sample_posterior: bool = True,
                     chunk_size: int = 2, vae_tile: int | None = None) -> Tensor:
        """(F, 3, H, W) frames -> (1, 4, F, height/8, width/8) latents on the device, `ENCODE_SEGMENT` frames at a
        time (the posterior noise is drawn per segment, in order)."""
        latents = []
        with self.placement.use(self.vae) as vae:
            for i in range(0, frames.shape[0], ENCODE_SEGMENT):
                seg = resize_frames(frames[i:i + ENCODE_SEGMENT], width, height, resize_mode)  # (n, 3, H, W)
                seg = seg.transpose(0, 1)[None]  # (1, 3, n, H, W)
                latents.append(vae.encode(seg, generator=generator, sample=sample_posterior, chunk_size=chunk_size,
                                          tile=vae_tile))
        return torch.cat(latents, dim=2).float()  # (1, 4, F, h, w)

    def timesteps(self, strength: float, sampler: str, steps: int | None = None) -> Tensor:
        """The sampling grid of `sampling_timesteps` for this pipeline's schedule."""
        return sampling_timesteps(strength, sampler, steps, len(self.alphas_cumprod))

    @torch.no_grad()
    def __call__(
        self,
        video: VideoSource,
        prompt: str = "",
        *,
        negative_prompt: str = DEFAULT_NEGATIVE_PROMPT,
        positive_suffix: str = POSITIVE_SUFFIX,
        width: int = 1280,
        height: int = 720,
        strength: float = reference.STRENGTH,
        num_inference_steps: int | None = None,
        sampler: str = DEFAULT_SAMPLERS["refine"],
        guidance_scale: float = 7.5,
        guidance_rescale: float = 0.2,
        window_size: int | None = 32,
        window_overlap: int | None = None,
        max_frames: int | None = None,
        resize_mode: ResizeMode = "stretch",
        generator: torch.Generator | None = None,
        noise: Tensor | None = None,
        modelscope_start: bool | None = None,
        round_timesteps: bool = True,
        sample_posterior: bool | None = None,
        sequential_cfg: bool = False,
        encode_chunk_size: int = 2,
        decode_chunk_size: int = 2,
        vae_tile: int | None = None,
        output_type: OutputType = "np",
        callback: StepCallback | None = None,
    ) -> Any:
        """Refine `video` guided by `prompt`; returns frames at `width` x `height`, as many as the input has.

        Args:
            video: a file path, numpy frames (F, H, W, 3) or a tensor (1, 3, F, H, W) / (F, 3, H, W); uint8 or float
                in [0, 1] (see `video_to_frames`).
            prompt / positive_suffix: the text is `prompt + positive_suffix` (the reference appends its suffix to
                every caption; pass "" to drop it). negative_prompt forms the unconditional branch of guidance.
            strength: how much is re-generated; the input is noised to t_start = round(strength * 1000) - 1.
            num_inference_steps: sampler steps from t_start (default: the sampler's, `diffusion.sampler_table`).
            window_size / window_overlap: temporal windows of the denoiser (None: all frames at once) and the frames
                neighbouring windows share, by default a quarter of the window (8 for 32).
            max_frames: use only the first frames of the input.
            resize_mode: "stretch" to the target size (reference) or "crop" (cover, centre crop).
            generator: draws the VAE posterior samples, then the SDEdit noise, then the SDE sampler's noise.
            noise: the SDEdit noise (1, 4, F, height/8, width/8) instead of drawing it.
            modelscope_start / round_timesteps: ModelScope's start scale and timestep rounding (module docstring).
            sample_posterior: sample the VAE posterior as the reference does (False: its mean).
                modelscope_start and sample_posterior None: as the model was trained (`self.conventions`).
            sequential_cfg: the conditional and unconditional branches as two forwards (less memory).
            encode_chunk_size / decode_chunk_size: frames the VAE encodes / decodes at once.
            vae_tile: run the VAE encode and decode in strips of this many latent rows, layer by layer
                (`VideoVAE.decode`): the same frames for about half the memory of a frame. None: whole frames.
            output_type: "np" (1, F, H, W, 3) float in [0, 1], "pt" (1, 3, F, H, W) in [0, 1], "pil" or "latent"
                (1, 4, F, h, w).
            callback: called after each step with (step index, timestep, x0 prediction of the whole video).
        """
        # 0. check everything before any work
        if window_overlap is None:
            window_overlap = (window_size or 0) // 4
        timesteps = self.timesteps(strength, sampler, num_inference_steps)
        self.check_size(width, height)
        check_refine_args(guidance_scale, guidance_rescale, window_size, window_overlap, output_type,
                          encode_chunk_size, decode_chunk_size)
        check_generator(generator)
        self.vae.check_tile(vae_tile)
        for name, text in (("prompt", prompt), ("negative_prompt", negative_prompt),
                           ("positive_suffix", positive_suffix)):
            if not isinstance(text, str):
                raise InputError(f"{name} must be a string, got {type(text).__name__}")
        frames = video_to_frames(video, max_frames=max_frames)  # (F, 3, H, W) on the CPU
        f = self.vae.downscale
        shape = (1, self.unet.config.in_channels, frames.shape[0], height // f, width // f)
        if noise is not None and tuple(noise.shape) != shape:
            raise InputError(f"noise has shape {tuple(noise.shape)}, expected {shape}")

        modelscope_start = self.conventions.modelscope_start if modelscope_start is None else modelscope_start
        sample_posterior = self.conventions.sample_posterior if sample_posterior is None else sample_posterior
        # 1. conditions
        text, neg_text = self.encode_prompt(prompt, negative_prompt, positive_suffix)
        # 2. SDEdit start: encode, then noise forward to t_start
        x0 = self.encode_video(frames, width, height, generator=generator, resize_mode=resize_mode,
                               sample_posterior=sample_posterior, chunk_size=encode_chunk_size,
                               vae_tile=vae_tile)  # (1, 4, F, h, w)
        if noise is None:
            gen_device = generator.device if generator is not None else torch.device("cpu")
            noise = torch.randn(shape, generator=generator, device=gen_device, dtype=torch.float32)
        t0 = timesteps[:1]
        x = q_sample(x0, t0, self.alphas_cumprod, noise.to(x0))
        if modelscope_start:
            x = x * math.sqrt(1 - alpha_bar_at(self.alphas_cumprod, t0).item())
        # 3. denoise
        with self.placement.use(self.unet) as unet:
            x = self._denoise(unet, x, text, neg_text, timesteps, sampler=sampler, guidance_scale=guidance_scale,
                              guidance_rescale=guidance_rescale, window_size=window_size,
                              window_overlap=window_overlap, round_timesteps=round_timesteps,
                              generator=generator, callback=callback, sequential_cfg=sequential_cfg)
        if output_type == "latent":
            return x
        # 4. decode, a chunk of frames at a time, each moved to the CPU
        with self.placement.use(self.vae) as vae:
            out = torch.cat([vae.decode(x[:, :, i:i + decode_chunk_size], chunk_size=decode_chunk_size,
                                        tile=vae_tile).cpu()
                             for i in range(0, x.shape[2], decode_chunk_size)], dim=2)  # (1, 3, F, H, W)
        return frames_to_output(out, output_type)

    def _denoise(self, unet: I2VGenRefinerUNet, x: Tensor, text: Tensor, neg_text: Tensor, timesteps: Tensor, *,
                 sampler: str, guidance_scale: float, guidance_rescale: float, window_size: int | None,
                 window_overlap: int, round_timesteps: bool, generator: torch.Generator | None,
                 callback: StepCallback | None, sequential_cfg: bool) -> Tensor:
        device, dtype = self.placement.device, unet.dtype

        def net(x: Tensor, t: Tensor, context: Tensor) -> Tensor:
            return unet(x.to(dtype), t, encoder_hidden_states=context).float()  # v (B, 4, f, h, w)

        cond, uncond = {"context": text.to(device, dtype)}, {"context": neg_text.to(device, dtype)}
        guided = classifier_free_guidance(net, cond, uncond, guidance_scale, rescale=guidance_rescale,
                                          batched=not sequential_cfg)
        denoise = vpred_denoiser(guided, self.alphas_cumprod, round_t=round_timesteps)
        denoise = windowed_denoiser(denoise, x.shape[2], window_size, window_overlap)
        sampler_fn = get_sampler(sampler, "refine").fn
        return sampler_fn(denoise, x.to(device), self.alphas_cumprod, timesteps, generator=generator,
                          callback=callback)


def check_refine_args(guidance_scale: float, guidance_rescale: float, window_size: int | None, overlap: int,
                      output_type: str = "np", encode_chunk_size: int = 2, decode_chunk_size: int = 2) -> None:
    """One-line `InputError`s for settings the pipeline cannot take (sizes, strength and steps: see above)."""
    if not np.isfinite(guidance_scale) or guidance_scale < 0:
        raise InputError(f"guidance_scale must be >= 0, got {guidance_scale!r}")
    if not 0 <= guidance_rescale <= 1:
        raise InputError(f"guidance_rescale must be in [0, 1], got {guidance_rescale!r}")
    if window_size is not None and (not isinstance(window_size, int) or window_size < 1):
        raise InputError(f"window_size must be an integer >= 1 or None, got {window_size!r}")
    if not isinstance(overlap, int) or overlap < 0 or (window_size is not None and overlap >= window_size):
        raise InputError(f"window_overlap must be an integer in [0, window_size), got {overlap!r}")
    if output_type not in OUTPUT_TYPES:
        raise InputError(f"unknown output_type {output_type!r}; choose from {', '.join(OUTPUT_TYPES)}")
    for name, v in (("encode_chunk_size", encode_chunk_size), ("decode_chunk_size", decode_chunk_size)):
        if not isinstance(v, int) or v < 1:
            raise InputError(f"{name} must be an integer >= 1, got {v!r}")
