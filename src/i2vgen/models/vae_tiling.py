"""Spatial tiling of diffusers' `AutoencoderKL` that gives the untiled result: the network runs layer by layer over
the whole frame, each 3x3 convolution on horizontal tiles (strips of rows, full width) together with the row above
and below that it reads, each group norm with its statistics taken over the whole frame.

The untiled pass holds several full-frame temporaries inside every block (the norm's output, the activation, the
convolution's output, the shortcut); here a block holds its input and one layer output, and the rest exists for one
tile at a time. The latent-resolution middle block (with its attention over the whole frame) runs as it is: it is
small. The output equals the untiled pass up to float rounding (closer to a float64 pass than the untiled float32
one, whose group norm kernel accumulates less carefully), where overlapping tiles decoded separately and blended
(diffusers' `enable_tiling`) do not: each tile's group norms then see only that tile, which shifts the tile's tone
wherever the picture is not uniform (docs/benchmarks.md, "Memory", measures both).

Supports the blocks of the SD VAE (`DownEncoderBlock2D` / `UpDecoderBlock2D` of `ResnetBlock2D`, `Downsample2D` /
`Upsample2D` with convolutions); `check_tileable` refuses anything else.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL
from diffusers.models.downsampling import Downsample2D
from diffusers.models.resnet import ResnetBlock2D
from diffusers.models.upsampling import Upsample2D
from torch import Tensor, nn

from i2vgen.errors import InputError

Pre = Callable[[Tensor], Tensor]


def encode(vae: AutoencoderKL, x: Tensor, rows: int) -> Tensor:
    """(n, 3, H, W) -> the posterior's moments (n, 2 * latent channels, H/f, W/f), as `vae.encode` computes them,
    in horizontal tiles of `rows` latent rows (`rows * f` at full resolution)."""
    enc = vae.encoder
    scale = 2 ** (len(enc.down_blocks) - 1)  # full resolution over latent resolution
    h = _conv(enc.conv_in, x, rows * scale)  # (n, C0, H, W)
    for block in enc.down_blocks:
        for resnet in block.resnets:
            h = _resnet(resnet, h, rows * scale)
        if block.downsamplers is not None:
            scale //= 2
            h = _downsample(block.downsamplers[0], h, rows * scale)
    h = enc.conv_out(enc.conv_act(enc.conv_norm_out(enc.mid_block(h))))  # latent resolution: whole frames
    return vae.quant_conv(h) if vae.quant_conv is not None else h


def decode(vae: AutoencoderKL, z: Tensor, rows: int) -> Tensor:
    """(n, latent channels, h, w) unscaled latents -> (n, 3, f*h, f*w), as `vae.decode(z).sample` computes them,
    in horizontal tiles of `rows` latent rows (`rows * 2**k` after the k-th up-sampling)."""
    dec = vae.decoder
    if vae.post_quant_conv is not None:
        z = vae.post_quant_conv(z)
    x = dec.mid_block(dec.conv_in(z))  # latent resolution: whole frames
    scale = 1
    for block in dec.up_blocks:
        for resnet in block.resnets:
            x = _resnet(resnet, x, rows * scale)
        if block.upsamplers is not None:
            x = _upsample(block.upsamplers[0], x, rows * scale)
            scale *= 2
    return _conv(dec.conv_out, x, rows * scale, pre=_norm_act(dec.conv_norm_out, dec.conv_act, x))


def check_tileable(vae: AutoencoderKL) -> None:
    """Raise `InputError` unless every block of `vae` is one this module computes in tiles."""
    for block in [*vae.encoder.down_blocks, *vae.decoder.up_blocks]:
        for r in block.resnets:
            if not isinstance(r, ResnetBlock2D) or r.time_emb_proj is not None or r.upsample is not None \
                    or r.downsample is not None or (r.conv_shortcut is not None and r.conv_shortcut.kernel_size != (1, 1)):
                raise InputError(f"VAE tiling does not support the block {type(r).__name__} of this VAE")
        for s in [*(getattr(block, "upsamplers", None) or []), *(getattr(block, "downsamplers", None) or [])]:
            ok = isinstance(s, Upsample2D) and s.use_conv and s.interpolate and not s.use_conv_transpose \
                or isinstance(s, Downsample2D) and s.use_conv and s.padding == 0
            if not ok or s.norm is not None or s.conv.kernel_size != (3, 3):
                raise InputError(f"VAE tiling does not support the resampler {type(s).__name__} of this VAE")
    for conv in (vae.encoder.conv_in, vae.decoder.conv_out):
        if conv.kernel_size != (3, 3) or conv.padding != (1, 1) or conv.stride != (1, 1):
            raise InputError("VAE tiling needs 3x3 input and output convolutions")


# ---- layers -------------------------------------------------------------------------------------------------------
def _norm_act(norm: nn.GroupNorm, act: nn.Module, x: Tensor) -> Pre:
    """act(norm(.)) with the group statistics of the whole of `x` (n, C, H, W), to apply to any rows of it."""
    n, c = x.shape[:2]
    g = norm.num_groups
    if x.dtype in (torch.float32, torch.float64):
        var, mean = torch.var_mean(x.reshape(n, g, -1), dim=-1, unbiased=False)  # (n, G) each
    else:  # float32 statistics, as the native kernel keeps them, one group at a time
        stats = [torch.var_mean(part.float().reshape(n, -1), dim=-1, unbiased=False) for part in x.chunk(g, dim=1)]
        var, mean = torch.stack([v for v, _ in stats], dim=1), torch.stack([m for _, m in stats], dim=1)
    rstd = torch.rsqrt(var + norm.eps)

    def apply(t: Tensor) -> Tensor:
        y = (t.reshape(n, g, c // g, *t.shape[2:]) - mean[:, :, None, None, None]) * rstd[:, :, None, None, None]
        y = y.reshape(t.shape) * norm.weight[:, None, None] + norm.bias[:, None, None]
        return act(y).to(t.dtype)

    return apply


def _conv(conv: nn.Conv2d, x: Tensor, rows: int, *, pre: Pre | None = None,
          post: Callable[[Tensor, int, int], Tensor] | None = None, into_input: bool = False) -> Tensor:
    """conv(pre(x)) for a 3x3, stride 1, padding 1 convolution, `rows` output rows at a time; each tile reads one
    row above and below it. `post(y, a, b)` finishes rows [a, b) (a shortcut). With `into_input` the output
    overwrites `x` (same shape), keeping a copy of the one row the next tile still needs."""
    n, _, height, width = x.shape
    out = x if into_input else x.new_empty((n, conv.out_channels, height, width))
    above = None  # the input row just above the current tile, when `out` has overwritten it
    for a in range(0, height, rows):
        b = min(a + rows, height)
        lo, hi = max(a - 1, 0), min(b + 1, height)
        slab = x[:, :, lo:hi] if above is None else torch.cat([above, x[:, :, a:hi]], dim=2)
        if into_input and b < height:
            above = x[:, :, b - 1:b].clone()
        slab = pre(slab) if pre is not None else slab
        slab = F.pad(slab, (0, 0, int(a == 0), int(b == height)))  # the frame's own zero padding, top and bottom
        y = F.conv2d(slab, conv.weight, conv.bias, padding=(0, 1))  # (n, C_out, b - a, W)
        out[:, :, a:b] = post(y, a, b) if post is not None else y
    return out


def _resnet(r: ResnetBlock2D, x: Tensor, rows: int) -> Tensor:
    """`ResnetBlock2D.forward(x, None)` (no time embedding, no resampling, inference) holding x and one output."""
    h = _conv(r.conv1, x, rows, pre=_norm_act(r.norm1, r.nonlinearity, x))

    def shortcut(y: Tensor, a: int, b: int) -> Tensor:
        skip = x[:, :, a:b] if r.conv_shortcut is None else r.conv_shortcut(x[:, :, a:b])
        return (skip + y) / r.output_scale_factor

    return _conv(r.conv2, h, rows, pre=_norm_act(r.norm2, r.nonlinearity, h), post=shortcut, into_input=True)


def _upsample(u: Upsample2D, x: Tensor, rows: int) -> Tensor:
    """`Upsample2D`: nearest 2x, then a 3x3 convolution, for `rows` input rows (2 * rows output rows) at a time."""
    n, _, height, width = x.shape
    out = x.new_empty((n, u.conv.out_channels, 2 * height, 2 * width))
    for a in range(0, height, rows):
        b = min(a + rows, height)
        lo, hi = max(a - 1, 0), min(b + 1, height)
        up = F.interpolate(x[:, :, lo:hi], scale_factor=2.0, mode="nearest")  # rows [2 lo, 2 hi)
        up = up[:, :, int(a > 0):up.shape[2] - int(b < height)]  # rows [2a - 1, 2b + 1) within the frame
        up = F.pad(up, (0, 0, int(a == 0), int(b == height)))
        out[:, :, 2 * a:2 * b] = F.conv2d(up, u.conv.weight, u.conv.bias, padding=(0, 1))
    return out


def _downsample(d: Downsample2D, x: Tensor, rows: int) -> Tensor:
    """`Downsample2D` of the VAE: zero-pad one row and column at the bottom and right, then a 3x3 convolution of
    stride 2, `rows` output rows at a time (output row o reads padded input rows 2o, 2o + 1, 2o + 2)."""
    n, _, height, width = x.shape
    out_h, out_w = (height - 2) // 2 + 1, (width - 2) // 2 + 1
    out = x.new_empty((n, d.conv.out_channels, out_h, out_w))
    for a in range(0, out_h, rows):
        b = min(a + rows, out_h)
        slab = x[:, :, 2 * a:min(2 * b + 1, height)]
        slab = F.pad(slab, (0, 1, 0, 2 * b + 1 - 2 * a - slab.shape[2]))
        out[:, :, a:b] = F.conv2d(slab, d.conv.weight, d.conv.bias, stride=2)
    return out
