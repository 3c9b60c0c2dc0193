"""Building blocks of the I2VGen-XL 3D UNets (base stage and refiner).

Module and parameter names follow diffusers' 3D UNet blocks, so diffusers state dicts load as they are.
Inside the network, video features live as `(B*F, C, H, W)` (frames folded into the batch) in channels-last memory,
i.e. `(B, F, H, W, C)`: convolutions and norms run natively in that layout, the spatial transformer's token view is
free, and the `(B, C, F, H, W)` view the temporal convolution needs is channels-last-3d, also free. Only the
temporal transformer reorders (pixels outermost, frames innermost). `num_frames` is passed explicitly.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding `cat[cos, sin](t * max_period^(-i/half))` (VGen `sinusoidal_embedding`).

    t: (B,) -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None].float() * freqs[None]  # (B, half)
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class GroupNorm(nn.GroupNorm):
    """`nn.GroupNorm` that stays accurate on channels-last inputs.

    PyTorch's CPU kernel for channels-last memory loses precision to cancellation when activations have a large mean
    (measured on (2, 64, 16, 32, 32) inputs of mean 5: 2e-4 max error against float64, vs 2e-6 for contiguous
    inputs). A group norm is unchanged by subtracting a constant per (sample, group), so subtracting the group means
    first (one reduction and one elementwise pass, about doubling the norm's cost) brings the error back to ~1e-6
    and keeps the layout.
    """

    def forward(self, x: Tensor) -> Tensor:
        if x.is_contiguous():
            return super().forward(x)
        n, c = x.shape[:2]
        g = self.num_groups
        spatial = tuple(range(2, x.ndim))
        group_mean = x.mean(dim=spatial).view(n, g, c // g).mean(-1, keepdim=True)  # (N, G, 1)
        shift = group_mean.expand(n, g, c // g).reshape(n, c, *([1] * len(spatial)))
        return F.group_norm(x - shift, g, self.weight, self.bias, self.eps)


class TimestepEmbedding(nn.Module):
    """Linear -> SiLU -> Linear (diffusers `TimestepEmbedding` key names)."""

    def __init__(self, in_dim: int, dim: int) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear_2(F.silu(self.linear_1(x)))


class Attention(nn.Module):
    """Multi-head attention through `F.scaled_dot_product_attention`.

    Self-attention when `context_dim` is None. For cross-attention over a per-video context, `forward` takes the
    queries of all frames of a video as one sequence (`frames_per_context`), so the context never has to be repeated
    per frame: softmax is per query row, so this equals per-frame attention against the same keys.
    """

    def __init__(self, dim: int, heads: int, head_dim: int, context_dim: int | None = None,
                 out_bias: bool = True) -> None:
        super().__init__()
        inner = heads * head_dim
        self.heads = heads
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim or dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim or dim, inner, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(inner, dim, bias=out_bias), nn.Dropout(0.0)])

    def forward(self, x: Tensor, context: Tensor | None = None, frames_per_context: int = 1) -> Tensor:
        # x: (N, L, dim); context: (N // frames_per_context, S, context_dim) or None
        n, length, _ = x.shape
        h = self.heads
        q = self.to_q(x)  # (N, L, inner)
        src = x if context is None else context
        k, v = self.to_k(src), self.to_v(src)  # (N', S, inner)
        if context is not None and frames_per_context > 1:
            q = q.reshape(n // frames_per_context, frames_per_context * length, -1)  # (B, F*L, inner)
        q = q.unflatten(-1, (h, -1)).transpose(1, 2)  # (N', h, L', d)
        k = k.unflatten(-1, (h, -1)).transpose(1, 2)
        v = v.unflatten(-1, (h, -1)).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v)  # (N', h, L', d)
        out = out.transpose(1, 2).reshape(n, length, -1)  # (N, L, inner)
        return self.to_out[0](out)


class GEGLU(nn.Module):
    def __init__(self, dim: int, inner: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, inner * 2)

    def forward(self, x: Tensor) -> Tensor:
        # Two matmuls over the weight's halves give contiguous outputs: elementwise work on the (tokens, 4*dim)
        # activations, the largest tensors of the network, runs much faster than on the strided halves of one.
        inner = self.proj.out_features // 2
        w, b = self.proj.weight, self.proj.bias
        h = F.linear(x, w[:inner], b[:inner])
        gate = F.linear(x, w[inner:], b[inner:])
        if torch.is_grad_enabled():
            return h * F.gelu(gate)
        return h.mul_(torch.ops.aten.gelu_(gate))


class GELUProj(nn.Module):
    def __init__(self, dim: int, inner: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, inner)

    def forward(self, x: Tensor) -> Tensor:
        return F.gelu(self.proj(x))


class FeedForward(nn.Module):
    """`net = [GEGLU|GELU, Dropout, Linear]` (diffusers key names `ff.net.0.proj`, `ff.net.2`)."""

    def __init__(self, dim: int, inner: int, geglu: bool = True) -> None:
        super().__init__()
        act = GEGLU(dim, inner) if geglu else GELUProj(dim, inner)
        self.net = nn.ModuleList([act, nn.Dropout(0.0), nn.Linear(inner, dim)])

    def forward(self, x: Tensor) -> Tensor:
        return self.net[2](self.net[0](x))


class TransformerBlock(nn.Module):
    """Pre-LN self-attention, attention to the context (or a second self-attention), GEGLU feed-forward."""

    def __init__(self, dim: int, heads: int, head_dim: int, context_dim: int | None) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = Attention(dim, heads, head_dim)
        self.norm2 = nn.LayerNorm(dim)
        self.attn2 = Attention(dim, heads, head_dim, context_dim)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, 4 * dim)

    def forward(self, x: Tensor, context: Tensor | None = None, frames_per_context: int = 1) -> Tensor:
        x = x + self.attn1(self.norm1(x))
        x = x + self.attn2(self.norm2(x), context, frames_per_context)
        return x + self.ff(self.norm3(x))


class SpatialTransformer(nn.Module):
    """Per-frame attention over H*W tokens, cross-attending to the video's context (diffusers Transformer2DModel)."""

    def __init__(self, channels: int, head_dim: int, groups: int, context_dim: int) -> None:
        super().__init__()
        self.norm = GroupNorm(groups, channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, channels)
        self.transformer_blocks = nn.ModuleList(
            [TransformerBlock(channels, channels // head_dim, head_dim, context_dim)]
        )
        self.proj_out = nn.Linear(channels, channels)

    def forward(self, x: Tensor, context: Tensor, num_frames: int) -> Tensor:
        # x: (B*F, C, H, W); context: (B, S, D)
        bf, c, hgt, wid = x.shape
        h = self.norm(x).permute(0, 2, 3, 1).reshape(bf, hgt * wid, c)  # (B*F, H*W, C)
        h = self.proj_in(h)
        for block in self.transformer_blocks:
            h = block(h, context, num_frames)
        h = self.proj_out(h)
        return x + h.view(bf, hgt, wid, c).permute(0, 3, 1, 2)  # a channels-last view: no copy


class TemporalTransformer(nn.Module):
    """Self-attention over the frame axis at every pixel; both attentions are self-attention, no positional code."""

    def __init__(self, channels: int, heads: int, head_dim: int, groups: int) -> None:
        super().__init__()
        inner = heads * head_dim
        self.norm = GroupNorm(groups, channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, inner)
        self.transformer_blocks = nn.ModuleList([TransformerBlock(inner, heads, head_dim, None)])
        self.proj_out = nn.Linear(inner, channels)

    def forward(self, x: Tensor, num_frames: int) -> Tensor:
        # x: (B*F, C, H, W); statistics of the norm span all frames of a video
        bf, c, hgt, wid = x.shape
        b = bf // num_frames
        h = x.reshape(b, num_frames, c, hgt, wid).transpose(1, 2)  # (B, C, F, H, W) view
        h = self.norm(h)
        h = h.permute(0, 3, 4, 2, 1).reshape(b * hgt * wid, num_frames, c)  # (B*H*W, F, C)
        h = self.proj_in(h)
        for block in self.transformer_blocks:
            h = block(h)
        h = self.proj_out(h)  # (B*H*W, F, C)
        # Back to (B, F, C, H, W) as a strided view: the residual add writes the channels-last result in one pass.
        h = h.view(b, hgt, wid, num_frames, c).permute(0, 3, 4, 1, 2)
        return (x.view(b, num_frames, c, hgt, wid) + h).view(bf, c, hgt, wid)


class TemporalConv(nn.Module):
    """Four GN -> SiLU -> [Dropout] -> Conv3d(3,1,1) stages with an identity residual (VGen TemporalConvBlock_v2)."""

    def __init__(self, channels: int, groups: int, dropout: float) -> None:
        super().__init__()

        def conv() -> nn.Conv3d:
            return nn.Conv3d(channels, channels, (3, 1, 1), padding=(1, 0, 0))

        self.conv1 = nn.Sequential(GroupNorm(groups, channels), nn.SiLU(), conv())
        self.conv2 = nn.Sequential(GroupNorm(groups, channels), nn.SiLU(), nn.Dropout(dropout), conv())
        self.conv3 = nn.Sequential(GroupNorm(groups, channels), nn.SiLU(), nn.Dropout(dropout), conv())
        self.conv4 = nn.Sequential(GroupNorm(groups, channels), nn.SiLU(), nn.Dropout(dropout), conv())

    def forward(self, x: Tensor, num_frames: int) -> Tensor:
        # x: (B*F, C, H, W) channels-last; its (B, C, F, H, W) view is channels-last-3d, which Conv3d takes as is.
        bf, c, hgt, wid = x.shape
        v = x.view(bf // num_frames, num_frames, c, hgt, wid).transpose(1, 2)  # (B, C, F, H, W) view
        h = self.conv4(self.conv3(self.conv2(self.conv1(v))))
        return x + h.transpose(1, 2).reshape(bf, c, hgt, wid)


class ResBlock(nn.Module):
    """GN -> SiLU -> Conv, + Linear(SiLU(emb)), GN -> SiLU -> Dropout -> Conv, skip (diffusers ResnetBlock2D)."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, groups: int) -> None:
        super().__init__()
        self.norm1 = GroupNorm(groups, in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.time_emb_proj = nn.Linear(emb_dim, out_ch)
        self.norm2 = GroupNorm(groups, out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else None

    def forward(self, x: Tensor, emb: Tensor, num_frames: int) -> Tensor:
        # x: (B*F, C, H, W); emb: (B, E), already passed through SiLU, shared by the frames of a video
        h = self.conv1(F.silu(self.norm1(x)))  # (B*F, C', H, W)
        bf, c, hgt, wid = h.shape
        shift = self.time_emb_proj(emb)[:, None, :, None, None]  # (B, 1, C', 1, 1)
        h = (h.view(bf // num_frames, num_frames, c, hgt, wid) + shift).view(bf, c, hgt, wid)
        h = self.conv2(F.silu(self.norm2(h)))
        skip = x if self.conv_shortcut is None else self.conv_shortcut(x)
        return skip + h


class Downsample(nn.Module):
    def __init__(self, channels: int, refiner: bool = False) -> None:
        super().__init__()
        # MS-Vid2Vid-XL pads height by 2 so 90-row (720p) latents go 90 -> 46 -> 24 -> 13 (spec 2.6).
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=(2, 1) if refiner else 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, channels: int, refiner: bool = False) -> None:
        super().__init__()
        self.refiner = refiner
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor, size: tuple[int, int]) -> Tensor:
        if self.refiner:
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")[..., 1:-1, :]  # crop a row top and bottom
        else:
            # Nearest to the skip's size; equals x2 when the size halved exactly, and admits odd sizes.
            x = F.interpolate(x, size=size, mode="nearest")
        return self.conv(x)


class Level(nn.Module):
    """One resolution level of the encoder or decoder: per layer ResBlock, TemporalConv [, Spatial, Temporal attn]."""

    def __init__(self, in_chs: list[int], out_ch: int, emb_dim: int, cfg_groups: int, head_dim: int,
                 context_dim: int, attention: bool, dropout: float, resample: str | None, refiner: bool) -> None:
        super().__init__()
        heads = out_ch // head_dim
        self.resnets = nn.ModuleList([ResBlock(c, out_ch, emb_dim, cfg_groups) for c in in_chs])
        self.temp_convs = nn.ModuleList([TemporalConv(out_ch, cfg_groups, dropout) for _ in in_chs])
        if attention:
            self.attentions = nn.ModuleList(
                [SpatialTransformer(out_ch, head_dim, cfg_groups, context_dim) for _ in in_chs])
            self.temp_attentions = nn.ModuleList(
                [TemporalTransformer(out_ch, heads, head_dim, cfg_groups) for _ in in_chs])
        else:
            self.attentions = self.temp_attentions = None
        if resample == "down":
            self.downsamplers = nn.ModuleList([Downsample(out_ch, refiner)])
        elif resample == "up":
            self.upsamplers = nn.ModuleList([Upsample(out_ch, refiner)])

    def layer(self, i: int, x: Tensor, emb: Tensor, context: Tensor, num_frames: int) -> Tensor:
        x = self.resnets[i](x, emb, num_frames)
        x = self.temp_convs[i](x, num_frames)
        if self.attentions is not None:
            x = self.attentions[i](x, context, num_frames)
            x = self.temp_attentions[i](x, num_frames)
        return x


class MidBlock(nn.Module):
    """ResBlock, TemporalConv, Spatial attn, Temporal attn, ResBlock, TemporalConv."""

    def __init__(self, ch: int, emb_dim: int, groups: int, head_dim: int, context_dim: int, dropout: float) -> None:
        super().__init__()
        self.resnets = nn.ModuleList([ResBlock(ch, ch, emb_dim, groups) for _ in range(2)])
        self.temp_convs = nn.ModuleList([TemporalConv(ch, groups, dropout) for _ in range(2)])
        self.attentions = nn.ModuleList([SpatialTransformer(ch, head_dim, groups, context_dim)])
        self.temp_attentions = nn.ModuleList([TemporalTransformer(ch, ch // head_dim, head_dim, groups)])

    def forward(self, x: Tensor, emb: Tensor, context: Tensor, num_frames: int) -> Tensor:
        x = self.temp_convs[0](self.resnets[0](x, emb, num_frames), num_frames)
        x = self.attentions[0](x, context, num_frames)
        x = self.temp_attentions[0](x, num_frames)
        return self.temp_convs[1](self.resnets[1](x, emb, num_frames), num_frames)
