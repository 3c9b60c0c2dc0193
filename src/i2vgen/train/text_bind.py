"""A text encoder that binds each clause's words together: the direction word's state tells its own shape.

The tiny-shapes text encoder is a CLIP text tower at a fixed random initialisation, and the state the UNet reads is
the output of its first (causal) layer. In a two-shape caption ('a red circle moves left and a blue square moves
up') the second direction word's state then tells the *first* shape's colour better than its own (docs/tiny-shapes.md,
section 7), so no UNet can learn from it which shape the second word moves. `bind_text_encoder` fine-tunes the
encoder so that every clause's direction-word state tells that clause's colour and shape (linear heads, cross-entropy)
while all token states stay near where they were (mean squared error relative to their variance, weight `keep`).
docs/tiny-shapes.md, section 14.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from i2vgen.errors import InputError
from i2vgen.models.encoders import TextEncoder
from i2vgen.shapes import COLOURS, DIRECTIONS, KINDS, ShapesClip


def clause_sites(encoder: TextEncoder, clips: Sequence[ShapesClip]) -> tuple[Tensor, list[list[tuple[int, int, int]]]]:
    """-> the captions' token ids (N, L) and, per caption, one (direction word's position, colour index, shape index)
    per clause, in caption order (colours sorted by name, shapes as `KINDS`); empty for a caption whose direction words
    the tokenizer splits or cuts off."""
    colours = sorted(COLOURS)
    ids = encoder.tokenize([c.caption for c in clips])  # (N, L)
    sites = []
    for clip, row in zip(clips, ids):
        tokens = [t.replace("</w>", "") for t in encoder.tokenizer.convert_ids_to_tokens(row.tolist())]
        at = [k for k, t in enumerate(tokens) if t in DIRECTIONS]
        sites.append([(k, colours.index(s.colour), KINDS.index(s.kind)) for k, s in zip(at, clip.shapes)]
                     if len(at) == len(clip.shapes) else [])
    return ids, sites


def bind_text_encoder(encoder: TextEncoder, clips: Sequence[ShapesClip], *, steps: int, batch: int, lr: float,
                      keep: float, seed: int, log: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Fine-tune `encoder` in place on the captions of `clips` (see the module's docstring); it is left frozen in
    eval mode. -> a row every 200 steps and at the end: the binding loss (colour + shape cross-entropy) and the keep
    loss (relative squared distance of all token states from the encoder's states before the fine-tune)."""
    ids, sites = clause_sites(encoder, clips)
    usable = [i for i, s in enumerate(sites) if s]
    if not usable:
        raise InputError("no caption has its direction words as single tokens of this tokenizer")
    with torch.no_grad():
        target = encoder.encode_ids(ids)  # (N, L, D)
        scale = target.var()
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        heads = torch.nn.ModuleDict({"colour": torch.nn.Linear(target.shape[-1], len(COLOURS)),
                                     "kind": torch.nn.Linear(target.shape[-1], len(KINDS))})
    encoder.model.train().requires_grad_(True)
    opt = torch.optim.AdamW([*encoder.model.parameters(), *heads.parameters()], lr=lr, weight_decay=0.0)
    rows, t0 = [], time.perf_counter()
    for step in range(1, steps + 1):
        pick = torch.tensor(usable)[torch.randint(0, len(usable), (batch,), generator=gen)]  # (B,)
        h = encoder.encode_ids(ids[pick])  # (B, L, D)
        b, k, colour, kind = (torch.tensor(v) for v in zip(*[(j, *site) for j, n in enumerate(pick.tolist())
                                                              for site in sites[n]]))
        at = h[b, k]  # (S, D): every clause's direction-word state
        bind_loss = F.cross_entropy(heads["colour"](at), colour) + F.cross_entropy(heads["kind"](at), kind)
        keep_loss = (h - target[pick]).pow(2).mean() / scale
        (bind_loss + keep * keep_loss).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step % 200 == 0 or step == steps:
            rows.append({"step": step, "bind_loss": round(bind_loss.item(), 4), "keep_loss": round(keep_loss.item(), 4),
                         "seconds": round(time.perf_counter() - t0, 1)})
            if log is not None:
                log(f"text bind step {step}/{steps}: bind loss {rows[-1]['bind_loss']}, keep loss "
                    f"{rows[-1]['keep_loss']}")
    encoder.model.eval().requires_grad_(False)
    return rows
