"""The I2VGen-XL base-stage 3D UNet with its hierarchical image encoders (spec sections 2.1-2.3).

`UNet3D` is the trunk shared with the refinement stage: conv_in, the temporal transformer after it, the encoder levels,
the middle block, the decoder levels and the output head. `I2VGenUNet` adds the conditions of the base stage:

- global semantics: the CLIP image embedding -> MLP -> `num_image_tokens` context tokens;
- low-level details: the first-frame latent plus k/(F-1) position frames -> per-frame convs -> a per-pixel temporal
  encoder -> concatenated with the noisy latent (8-channel conv_in), times `concat_scale`;
- the first-frame latent -> convs and adaptive pooling -> 64 context tokens;
- 77 text tokens. Context order: text | latent | image.
- fps: its sinusoidal embedding through an MLP, added to the timestep embedding.

The conditions do not change across denoising steps: `prepare_condition` computes them once per video and
`forward(..., condition=...)` reuses them at every step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from i2vgen.errors import InputError
from i2vgen.models.blocks import (
    Attention,
    FeedForward,
    GroupNorm,
    Level,
    MidBlock,
    TemporalTransformer,
    TimestepEmbedding,
    timestep_embedding,
)
from i2vgen.models.configs import UNetConfig


class UNet3D(nn.Module):
    """The 3D UNet trunk: `(B, C_in, F, H, W)` input features, embedding and context -> `(B, C_out, F, H, W)`."""

    def __init__(self, config: UNetConfig, conv_in_channels: int) -> None:
        super().__init__()
        self.config = cfg = config
        chs, groups, hd = cfg.block_out_channels, cfg.norm_num_groups, cfg.attention_head_dim
        emb_dim, ctx = cfg.time_embed_dim, cfg.cross_attention_dim
        refiner = cfg.refiner_resampling
        self.gradient_checkpointing = False

        self.conv_in = nn.Conv2d(conv_in_channels, chs[0], 3, padding=1)
        self.transformer_in = TemporalTransformer(chs[0], cfg.transformer_in_heads, hd, groups)
        self.time_embedding = TimestepEmbedding(chs[0], emb_dim)

        n = len(chs)
        self.down_blocks = nn.ModuleList()
        for i in range(n):
            in_chs = [chs[max(i - 1, 0)]] + [chs[i]] * (cfg.layers_per_block - 1)
            self.down_blocks.append(Level(in_chs, chs[i], emb_dim, groups, hd, ctx, cfg.attention_levels[i],
                                          cfg.dropout, "down" if i < n - 1 else None, refiner))
        self.mid_block = MidBlock(chs[-1], emb_dim, groups, hd, ctx, cfg.dropout)
        rev, rev_attn = chs[::-1], cfg.attention_levels[::-1]
        self.up_blocks = nn.ModuleList()
        for i in range(n):
            prev_out, out, skip_in = rev[max(i - 1, 0)], rev[i], rev[min(i + 1, n - 1)]
            L = cfg.layers_per_block + 1
            in_chs = [(prev_out if j == 0 else out) + (skip_in if j == L - 1 else out) for j in range(L)]
            self.up_blocks.append(Level(in_chs, out, emb_dim, groups, hd, ctx, rev_attn[i], cfg.dropout,
                                        "up" if i < n - 1 else None, refiner))
        self.conv_norm_out = GroupNorm(groups, chs[0])
        self.conv_out = nn.Conv2d(chs[0], cfg.out_channels, 3, padding=1)

    @property
    def dtype(self) -> torch.dtype:
        return self.conv_in.weight.dtype

    def embed_time(self, t: Tensor) -> Tensor:
        """Timestep (B,) -> embedding (B, E)."""
        return self.time_embedding(timestep_embedding(t, self.config.block_out_channels[0]).to(self.dtype))

    def _run(self, fn, *args):  # noqa: ANN001, ANN202 - gradient checkpointing dispatch
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(fn, *args, use_reentrant=False)
        return fn(*args)

    def trunk(self, x: Tensor, emb: Tensor, context: Tensor, cache: StepCache | None = None) -> Tensor:
        # x: (B, C_in, F, H, W); emb: (B, E); context: (B, S, D)
        b, _, f, hgt, wid = x.shape
        h = x.transpose(1, 2).reshape(b * f, -1, hgt, wid)  # (B*F, C_in, H, W)
        h = h.contiguous(memory_format=torch.channels_last)  # see i2vgen.models.blocks: one layout throughout
        emb = F.silu(emb)  # every ResBlock applies SiLU to the embedding first: do it once
        n, per_level = len(self.down_blocks), self.config.layers_per_block + 1  # skips each up level takes
        if cache is not None and cache.depth > n:
            raise InputError(f"cache depth {cache.depth} is more than the UNet's {n} levels")
        slot = cache.slot(context, x.shape) if cache is not None else None
        fresh = slot is None or slot.refresh_now()
        # the last `depth` up levels take the first depth * per_level skips: a cached step computes only those
        keep = n * per_level if fresh else cache.depth * per_level
        h = self.conv_in(h)
        h = self._run(self.transformer_in, h, f)
        skips = [h]
        for level in self.down_blocks:
            for i in range(len(level.resnets)):
                if len(skips) < keep:
                    h = self._run(level.layer, i, h, emb, context, f)
                    skips.append(h)
            if hasattr(level, "downsamplers") and len(skips) < keep:
                h = level.downsamplers[0](h)
                skips.append(h)
        if fresh:
            h = self._run(self.mid_block, h, emb, context, f)
        split = n - cache.depth if cache is not None else -1  # the up level whose input the cache keeps
        for j, level in enumerate(self.up_blocks):
            if j < split and not fresh:
                continue
            if j == split:
                h = slot.store(h) if fresh else slot.feature  # the deep features: computed, or the last ones
            for i in range(len(level.resnets)):
                h = torch.cat([h, skips.pop()], dim=1)
                h = self._run(level.layer, i, h, emb, context, f)
            if hasattr(level, "upsamplers"):
                h = level.upsamplers[0](h, skips[-1].shape[-2:])
                if h.shape[-2:] != skips[-1].shape[-2:]:
                    raise InputError(f"latent size {hgt}x{wid} (HxW) cannot pass the refiner's resampling: "
                                     f"got {tuple(h.shape[-2:])} where the skip is {tuple(skips[-1].shape[-2:])}")
        h = self.conv_out(F.silu(self.conv_norm_out(h)))  # (B*F, C_out, H, W)
        return h.reshape(b, f, -1, hgt, wid).transpose(1, 2).contiguous()  # (B, C_out, F, H, W)


class _CacheSlot:
    """The deep features of one guidance branch (one context tensor, one input shape) and its call count."""

    def __init__(self, interval: int) -> None:
        self.interval, self.calls, self.feature = interval, 0, None

    def refresh_now(self) -> bool:
        fresh = self.feature is None or self.calls % self.interval == 0
        self.calls += 1
        return fresh

    def store(self, h: Tensor) -> Tensor:
        self.feature = h
        return h


class StepCache:
    """DeepCache-style step caching (Ma et al. 2024, "DeepCache"): adjacent denoising steps change the UNet's deep
    features little, so every `interval`-th call per branch runs the whole trunk and keeps the input of the last
    `depth` up levels; the calls between run only the first `depth` encoder levels (for their skips), reuse those
    features and run the last `depth` up levels. `interval` 1 is the plain UNet.

    One object per video: pass it to every UNet call of the video (`forward(..., cache=...)`). Branches are told
    apart by their context tensor and input shape, so batched and sequential guidance, and a switch from guided to
    conditional-only steps (`cfg_until`), each keep their own features. Not for training (no gradient bookkeeping).
    """

    def __init__(self, interval: int = 1, depth: int = 1) -> None:
        if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
            raise InputError(f"cache interval must be an integer >= 1, got {interval!r}")
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
            raise InputError(f"cache depth must be an integer >= 1, got {depth!r}")
        self.interval, self.depth = interval, depth
        self._slots: dict[tuple, _CacheSlot] = {}

    def slot(self, context: Tensor, shape: torch.Size) -> _CacheSlot:
        key = (context.data_ptr(), tuple(context.shape), tuple(shape))
        return self._slots.setdefault(key, _CacheSlot(self.interval))


class ImageLatentTemporalEncoder(nn.Module):
    """Per-pixel self-attention over frames of the concat branch (VGen `TransformerV2`, depth 1, un-normalised FF)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = Attention(dim, heads=2, head_dim=dim)
        self.ff = FeedForward(dim, dim * 4, geglu=False)

    def forward(self, x: Tensor) -> Tensor:
        # x: (N, F, dim)
        x = x + self.attn1(self.norm1(x))
        return x + self.ff(x)


@dataclass
class UNetCondition:
    """Conditioning that is constant across denoising steps, computed once per video by `prepare_condition`."""

    context: Tensor  # (B, S, D): text | first-frame latent tokens | CLIP image tokens
    concat: Tensor  # (B, C, F, H, W): the image-latent concat branch, already times concat_scale


class I2VGenUNet(UNet3D):
    """The base-stage I2VGen-XL UNet. Predicts v for a noisy video latent given image, text and fps conditions."""

    def __init__(self, config: UNetConfig | None = None) -> None:
        config = config or UNetConfig()
        if not config.image_conditioning:
            raise ValueError("I2VGenUNet needs image_conditioning=True; use I2VGenRefinerUNet for the refiner")
        super().__init__(config, conv_in_channels=2 * config.in_channels)
        c, d, e = config.in_channels, config.cross_attention_dim, config.time_embed_dim
        t_in = config.block_out_channels[0]
        self.image_latents_proj_in = nn.Sequential(
            nn.Conv2d(4, c * 4, 3, padding=1), nn.SiLU(),
            nn.Conv2d(c * 4, c * 4, 3, padding=1), nn.SiLU(),
            nn.Conv2d(c * 4, c, 3, padding=1),
        )
        self.image_latents_temporal_encoder = ImageLatentTemporalEncoder(c)
        self.image_latents_context_embedding = nn.Sequential(
            nn.Conv2d(4, c * 8, 3, padding=1), nn.SiLU(),
            nn.AdaptiveAvgPool2d((32, 32)),
            nn.Conv2d(c * 8, c * 16, 3, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(c * 16, d, 3, stride=2, padding=1),
        )
        self.context_embedding = nn.Sequential(nn.Linear(d, e), nn.SiLU(), nn.Linear(e, d * config.num_image_tokens))
        self.fps_embedding = nn.Sequential(nn.Linear(t_in, e), nn.SiLU(), nn.Linear(e, e))

    # ---- conditions -------------------------------------------------------------------------------------------
    def prepare_condition(self, encoder_hidden_states: Tensor, image_embeds: Tensor, first_frame_latent: Tensor,
                          num_frames: int) -> UNetCondition:
        """Context tokens and concat branch for `num_frames` frames; reuse the result at every denoising step."""
        cfg = self.config
        if num_frames < 1:
            raise InputError(f"num_frames must be >= 1, got {num_frames}")
        _check(first_frame_latent, 4, "first_frame_latent", (None, 4, None, None))
        b, _, hgt, wid = first_frame_latent.shape
        _check(encoder_hidden_states, 3, "encoder_hidden_states", (b, None, cfg.cross_attention_dim))
        _check(image_embeds, 2, "image_embeds", (b, cfg.cross_attention_dim))
        latent = first_frame_latent.to(self.dtype)

        # (c) first-frame latent -> 64 context tokens, resolution-independent through the adaptive pool
        lat_tokens = self.image_latents_context_embedding(latent)  # (B, D, 8, 8)
        lat_tokens = lat_tokens.flatten(2).transpose(1, 2)  # (B, 64, D)
        # (a) CLIP image embedding -> num_image_tokens tokens
        img_tokens = self.context_embedding(image_embeds.to(self.dtype)).view(b, cfg.num_image_tokens, -1)
        # (d) text first: context = text | latent | image
        context = torch.cat([encoder_hidden_states.to(self.dtype), lat_tokens, img_tokens], dim=1)  # (B, S, D)

        # (b) frame 0 = the latent, frame k = constant k/(F-1): per-frame convs, then attention over frames per pixel
        pos = torch.arange(1, num_frames, device=latent.device, dtype=latent.dtype) / max(num_frames - 1, 1)
        pos_frames = pos[None, :, None, None, None].expand(b, num_frames - 1, 4, hgt, wid)
        frames = torch.cat([latent[:, None], pos_frames], dim=1)  # (B, F, 4, H, W)
        h = self.image_latents_proj_in(frames.reshape(b * num_frames, 4, hgt, wid))  # (B*F, C, H, W)
        c = h.shape[1]
        h = h.reshape(b, num_frames, c, hgt, wid).permute(0, 3, 4, 1, 2).reshape(b * hgt * wid, num_frames, c)
        h = self.image_latents_temporal_encoder(h)  # (B*H*W, F, C)
        concat = h.reshape(b, hgt, wid, num_frames, c).permute(0, 4, 3, 1, 2)  # (B, C, F, H, W)
        return UNetCondition(context=context, concat=concat * cfg.concat_scale)

    # ---- forward ----------------------------------------------------------------------------------------------
    def forward(
        self,
        sample: Tensor,
        timestep: Tensor | float | int,
        *,
        encoder_hidden_states: Tensor | None = None,
        image_embeds: Tensor | None = None,
        first_frame_latent: Tensor | None = None,
        fps: Tensor | int | float = 16,
        condition: UNetCondition | None = None,
        cache: StepCache | None = None,
    ) -> Tensor:
        """v-prediction for `sample` (B, 4, F, H, W) at `timestep` (scalar or (B,)).

        Pass either the raw conditions (`encoder_hidden_states` (B, 77, D), `image_embeds` (B, D),
        `first_frame_latent` (B, 4, H, W)) or a `condition` from `prepare_condition`. `fps`: int or (B,). `cache`: a
        `StepCache` shared by the calls of one video (step caching).
        """
        cfg = self.config
        _check(sample, 5, "sample", (None, cfg.in_channels, None, None, None))
        b, _, f, hgt, wid = sample.shape
        if condition is None:
            if encoder_hidden_states is None or image_embeds is None or first_frame_latent is None:
                raise InputError("pass encoder_hidden_states, image_embeds and first_frame_latent, or a condition")
            condition = self.prepare_condition(encoder_hidden_states, image_embeds, first_frame_latent, f)
        if condition.concat.shape[0] != b or condition.concat.shape[2:] != sample.shape[2:]:
            raise InputError(f"condition prepared for shape {tuple(condition.concat.shape)} does not fit "
                             f"sample {tuple(sample.shape)}")
        t = _per_sample(timestep, b, sample.device)
        emb = self.embed_time(t) + self.fps_embedding(
            timestep_embedding(_per_sample(fps, b, sample.device), cfg.block_out_channels[0]).to(self.dtype))
        x = torch.cat([sample.to(self.dtype), condition.concat], dim=1)  # (B, 2C, F, H, W)
        return self.trunk(x, emb, condition.context, cache)


def _per_sample(value: Tensor | float | int, batch: int, device: torch.device) -> Tensor:
    t = torch.as_tensor(value, device=device)
    if t.ndim == 0:
        t = t[None]
    if t.ndim != 1 or t.shape[0] not in (1, batch):
        raise InputError(f"expected a scalar or a ({batch},) tensor, got shape {tuple(t.shape)}")
    return t.expand(batch)


def _check(x: Tensor, ndim: int, name: str, shape: tuple[int | None, ...]) -> None:
    if not isinstance(x, Tensor):
        raise InputError(f"{name} must be a tensor, got {type(x).__name__}")
    if x.ndim != ndim or any(s is not None and s != d for s, d in zip(shape, x.shape)):
        want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
        raise InputError(f"{name} has shape {tuple(x.shape)}, expected {want}")
