"""Classifier-free guidance (Ho & Salimans 2022) as a wrapper over the network, applied to its v output."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

__all__ = ["classifier_free_guidance", "guidance_min_t", "rescale_guidance"]


def rescale_guidance(out: Tensor, cond_out: Tensor, rescale: float) -> Tensor:
    """Guidance rescale as in ModelScope's refiner (`GaussianDiffusion_SDEdit.denoise`, spec §1.4 item 7).

    out * (r * std(cond_out) / std(out) + (1 - r)), std per sample over all non-batch dims (unbiased, as
    `torch.std`), applied to the guided network output (v); cf. Lin et al. (2024) §3.4, who apply it to the prediction.
    """
    if not 0.0 <= rescale <= 1.0:
        raise ValueError(f"guidance rescale must be in [0, 1], got {rescale}")
    ratio = cond_out.flatten(1).std(dim=1) / (out.flatten(1).std(dim=1) + 1e-12)  # (B,)
    ratio = ratio.reshape((-1,) + (1,) * (out.ndim - 1))
    return out * (rescale * ratio + (1 - rescale))


def _concat_kwargs(uncond: dict[str, Any], cond: dict[str, Any]) -> dict[str, Any]:
    """[uncond, cond] along the batch dim for tensors with a batch dim; other values must be equal and pass as is."""
    if uncond.keys() != cond.keys():
        raise ValueError(f"cond and uncond must have the same keys, got {sorted(cond)} and {sorted(uncond)}")
    out = {}
    for k, c in cond.items():
        u = uncond[k]
        if isinstance(c, Tensor) and c.ndim > 0:
            if not isinstance(u, Tensor) or u.shape != c.shape:
                raise ValueError(f"cond[{k!r}] and uncond[{k!r}] must be tensors of the same shape")
            out[k] = torch.cat([u, c])
        elif isinstance(c, Tensor) or isinstance(u, Tensor):  # 0-dim tensors
            if not (isinstance(c, Tensor) and isinstance(u, Tensor) and torch.equal(c, u)):
                raise ValueError(f"cond[{k!r}] and uncond[{k!r}] have no batch dim and must be equal")
            out[k] = c
        else:
            if c != u:
                raise ValueError(f"non-tensor cond[{k!r}]={c!r} and uncond[{k!r}]={u!r} must be equal")
            out[k] = c
    return out


def classifier_free_guidance(
    net: Callable[..., Tensor],
    cond: dict[str, Any],
    uncond: dict[str, Any],
    scale: float,
    *,
    rescale: float = 0.0,
    batched: bool = True,
    min_t: float | None = None,
) -> Callable[[Tensor, Tensor], Tensor]:
    """Wrap `net(x, t, **kwargs) -> v` into `guided(x, t) -> u + scale * (c - u)` (VGen / ModelScope: on v).

    `cond` / `uncond`: keyword arguments of the network, tensors batch first with x's batch size; non-tensor values
    (ints, None) and 0-dim tensors are passed as they are and must agree. `batched=True` runs one forward on
    [uncond, cond] (the kwargs are concatenated once, here); `batched=False` runs two forwards, cond then uncond (VGen's
    order), with half the activation memory. `rescale` > 0 applies `rescale_guidance`. `scale == 1` runs only the
    conditional pass (no rescale, as ModelScope). `min_t`: guide only at timesteps t >= min_t and run only the
    conditional pass below (guidance where it pays: the late, low-noise steps refine details the guided early steps
    have decided; see `guidance_min_t`).
    """
    if rescale and not 0.0 <= rescale <= 1.0:
        raise ValueError(f"guidance rescale must be in [0, 1], got {rescale}")
    if scale == 1.0:
        cond = dict(cond)
        return lambda x, t: net(x, t, **cond)
    both = _concat_kwargs(uncond, cond) if batched else None
    cond, uncond = dict(cond), dict(uncond)

    def guided(x: Tensor, t: Tensor) -> Tensor:
        if min_t is not None and float(t.flatten()[0]) < min_t:
            return net(x, t, **cond)
        if batched:
            u_out, c_out = net(torch.cat([x, x]), torch.cat([t, t]), **both).chunk(2)  # (B, ...) each
        else:
            c_out = net(x, t, **cond)
            u_out = net(x, t, **uncond)
        out = u_out + scale * (c_out - u_out)
        return rescale_guidance(out, c_out, rescale) if rescale > 0 else out

    return guided


def guidance_min_t(timesteps: Tensor, cfg_until: float) -> float | None:
    """The `min_t` that guides the first `cfg_until` share of the steps of the grid `timesteps` (descending) and not
    the rest: ceil(cfg_until * steps) guided steps, at least one. None when every step is guided (cfg_until >= 1)."""
    if not 0.0 < cfg_until <= 1.0:
        raise ValueError(f"cfg_until must be in (0, 1], got {cfg_until}")
    ts = torch.as_tensor(timesteps).flatten().tolist()
    guided = max(1, math.ceil(cfg_until * len(ts) - 1e-9))
    return None if guided >= len(ts) else float(ts[guided - 1])
