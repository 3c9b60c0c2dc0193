"""Does the frozen text encoder tell the UNet which direction word belongs to which shape? A linear probe.

Run: `.venv/bin/python benchmarks/shapes_text_encoder_binding.py [--model tiny-shapes] [--n 1200] [-o FILE]`

The tiny-shapes UNet reads the text only through the text encoder's token states (`TextEncoder.encode`: the
penultimate layer, causal attention). For two-shape train captions ('a red circle moves left and a blue square
moves up') it takes the states at the two direction words and the two colour words and fits linear classifiers
(multinomial logistic regression on standardised features, 75 % of the captions; accuracy on the other 25 %):
from the second direction word's state, can one read the second shape's colour (what binding needs), the first
shape's colour, its own direction and the first direction? The first direction word, seeing only the first clause,
is the control. docs/tiny-shapes.md, section 7.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from i2vgen.model_paths import local_model_path
from i2vgen.models.encoders import TextEncoder
from i2vgen.shapes import COLOURS, DIRECTIONS, make_clip, split_seeds
from i2vgen.train.text_bind import clause_sites


def linear_probe(x: np.ndarray, y: np.ndarray, steps: int = 300) -> float:
    """Held-out accuracy of a multinomial logistic regression (Adam, small L2) trained on the first 75 %."""
    cut = int(0.75 * len(y))
    xt, yt = torch.tensor(x[:cut]), torch.tensor(y[:cut])
    mu, sd = xt.mean(0), xt.std(0) + 1e-6
    w = torch.zeros(x.shape[1], int(y.max()) + 1, requires_grad=True)
    b = torch.zeros(int(y.max()) + 1, requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=0.05)
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy((xt - mu) / sd @ w + b, yt) + 1e-3 * w.pow(2).sum()
        loss.backward()
        opt.step()
    with torch.no_grad():
        pred = ((torch.tensor(x[cut:]) - mu) / sd @ w + b).argmax(1).numpy()
    return float((pred == y[cut:]).mean())


def binding_accuracies(encoder: TextEncoder, clips: list) -> dict[str, float]:
    """The linear probes of the module's docstring on these two-shape captions (those whose direction words are
    single tokens)."""
    colours, directions = sorted(COLOURS), sorted(DIRECTIONS)
    ids, sites = clause_sites(encoder, clips)
    keep = [i for i, s in enumerate(sites) if len(s) == 2]
    with torch.no_grad():
        states = encoder.encode_ids(ids[keep]).numpy()  # (N, L, D)
    dir1 = np.stack([h[sites[i][0][0]] for i, h in zip(keep, states)])
    dir2 = np.stack([h[sites[i][1][0]] for i, h in zip(keep, states)])
    colour = [np.array([colours.index(clips[i].shapes[k].colour) for i in keep]) for k in range(2)]
    direction = [np.array([directions.index(clips[i].shapes[k].direction) for i in keep]) for k in range(2)]
    return {"second direction word -> second colour": linear_probe(dir2, colour[1]),
            "second direction word -> first colour": linear_probe(dir2, colour[0]),
            "second direction word -> second direction": linear_probe(dir2, direction[1]),
            "second direction word -> first direction": linear_probe(dir2, direction[0]),
            "first direction word -> first colour (control)": linear_probe(dir1, colour[0])}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="tiny-shapes")
    p.add_argument("--n", type=int, default=1200, help="two-shape train captions")
    p.add_argument("-o", "--output", default=None)
    args = p.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    encoder = TextEncoder.from_model_folder(local_model_path(args.model))
    clips = [c for c in (make_clip(s, size=8, num_frames=2) for s in split_seeds("train", 4 * args.n))
             if len(c.shapes) == 2][:args.n]
    accuracy = binding_accuracies(encoder, clips)
    result = {"model": args.model, "captions": sum(1 for s in clause_sites(encoder, clips)[1] if len(s) == 2),
              "chance_colour": 1 / len(COLOURS), "chance_direction": 1 / len(DIRECTIONS), "accuracy": accuracy}
    print(json.dumps(result, indent=1))
    if args.output:
        Path(args.output).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
