"""Does the model read its text? A caption-shuffle probe, for any dataset (docs/training.md, "Text-use probe").

For a few fixed samples the denoiser's v-loss is computed twice at the same high noise levels and with the same
noise: with each sample's own caption and with another sample's. A model that reads the text does better with its own
caption (gap = loss with another caption - loss with its own > 0); a model that ignores the text has a gap of 0. At
high t the noisy input tells little of what the clip does, so there the text is the only source of it: a gap that
stays near 0 at the top of the schedule means the model has learned to ignore the prompt (docs/tiny-shapes.md shows
how uniform timestep sampling leads there).

The trainer runs it every `log.text_probe_every` steps (`trainer.TextProbeRunner`); the shapes benchmarks and the
tests use `caption_gap` directly.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from i2vgen.diffusion import alpha_bar_at, q_sample, v_target

if TYPE_CHECKING:
    from i2vgen.train.config import TrainConfig

# net(x_t (K, 4, F, h, w), t (K,), text (K, L, D)) -> v (K, 4, F, h, w); the other conditions are bound by the caller
TextNet = Callable[[Tensor, Tensor, Tensor], Tensor]


def shuffled_order(captions: list[str]) -> list[int] | None:
    """For each sample the index of another sample with a different caption (the next one that differs, cyclically);
    None when all captions are the same (nothing to swap)."""
    k = len(captions)
    order = []
    for i in range(k):
        j = next((j % k for j in range(i + 1, i + k) if captions[j % k] != captions[i]), None)
        if j is None:
            return None
        order.append(j)
    return order


@torch.no_grad()
def caption_gap(net: TextNet, z0: Tensor, text: Tensor, other_text: Tensor, schedule: Tensor,
                timesteps: tuple[int, ...], *, seed: int = 0) -> dict[str, float]:
    """-> {"loss_<t>": mean v-loss with the own captions, "gap_<t>": mean(loss with `other_text`) - loss_<t>,
    "rel_gap_<t>": gap / loss} for each t in `timesteps`.

    z0: (K, 4, F, h, w) clean latents; text, other_text: (K, L, D) contexts (own captions, swapped captions). The
    noise comes from its own generator (`seed`), so the probe leaves the caller's random state alone.
    """
    gen = torch.Generator().manual_seed(seed)
    k = z0.shape[0]
    out: dict[str, float] = {}
    for t in timesteps:
        eps = torch.randn(z0.shape, generator=gen, dtype=torch.float32).to(z0)  # (K, 4, F, h, w)
        ts = torch.full((k,), t)
        x_t, v = q_sample(z0, ts, schedule, eps), v_target(z0, eps, alpha_bar_at(schedule, ts).to(z0))
        tt = torch.full((2 * k,), float(t), device=z0.device)
        pred = net(torch.cat([x_t, x_t]), tt, torch.cat([text, other_text]))  # (2K, 4, F, h, w)
        losses = (pred.float() - torch.cat([v, v]).float()).pow(2).flatten(1).mean(1)  # (2K,)
        own, other = losses[:k].mean().item(), losses[k:].mean().item()
        out[f"loss_{t}"], out[f"gap_{t}"] = own, other - own
        out[f"rel_gap_{t}"] = (other - own) / max(own, 1e-12)
    return out


def two_clip_check(cfg: TrainConfig, *, size: int = 32, num_frames: int = 16) -> list[dict[str, float]]:
    """The two-clip check of the text pathway: train `cfg` (a base-stage config; its data settings are replaced) on
    the two clips of `shapes.direction_pair` (one first frame, "a red circle moves left" / "... right"), batch 2,
    no condition dropout, with the trainer's own text-use probe every `cfg.log.text_probe_every` steps; -> the
    probe's rows (text_probe.csv: step, t, loss, loss_other_caption, gap, rel_gap).

    Memorising two clips is easy; whether the caption decides which one comes out depends on the timesteps the
    trainer samples (docs/tiny-shapes.md): with uniform t the gap stays near 0, with t at the top of the schedule it
    opens within a few hundred steps."""
    import csv

    from i2vgen.shapes import direction_pair, to_sample
    from i2vgen.train.data import SampleDataset
    from i2vgen.train.trainer import train

    dataset = SampleDataset([to_sample(c) for c in direction_pair(size=size, num_frames=num_frames)])
    cfg = cfg.replace(**{"batch_size": 2, "data.width": size, "data.height": size, "data.num_frames": num_frames,
                         "data.target_fps": 8, "loss.drop_all": 0.0, "loss.drop_text": 0.0, "loss.drop_image": 0.0,
                         "log.text_probe_samples": 2})
    train(cfg, dataset=dataset)
    with open(Path(cfg.output_dir) / "text_probe.csv", newline="", encoding="utf-8") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]
