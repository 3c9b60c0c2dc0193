"""Where does the tiny base UNet look in the caption from each shape's place? A probe of its cross-attention.

Run: `.venv/bin/python benchmarks/shapes_cross_attention.py [--model tiny-shapes] [--text DIR] [--n 48] [-o FILE]`

docs/tiny-shapes.md, section 14. For held-out two-shape clips ('a red circle moves left and a blue square moves up'),
one forward pass of the base UNet at t = 999 (pure noise, the step where the words decide the motion; the true
caption, the first frame as its conditions, as `shapes_eval.text_use` does), and in every cross-attention layer the
attention weights (softmax of q k^T / sqrt(d), per head) from the latent positions of frame 0 nearest each shape's
centre (the shape's place at the layer's resolution) to the two direction words. Binding needs routing: the second
shape's place should give the second direction word more weight than the first shape's place does. Per layer and
head, mean over clips: w(shape i's place -> direction word j) for i, j in {1, 2}, and the routing index
(w(2 -> 2) - w(1 -> 2)) - (w(2 -> 1) - w(1 -> 1)), 0 when the places do not tell the words apart. `--text` reads
another text encoder (a folder with text_encoder/ and tokenizer/), `--unet` another UNet folder.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from i2vgen import shapes
from i2vgen.model_paths import local_model_path
from i2vgen.models.blocks import SpatialTransformer
from i2vgen.models.encoders import TextEncoder
from i2vgen.models.loading import load_unet
from i2vgen.pipelines.base import I2VGenPipeline
from i2vgen.train.text_bind import clause_sites


def cross_attention_weights(attn: torch.nn.Module, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    """The attention weights of a cross-attention module (`blocks.Attention`) for queries from `x` (B, L, C) (one frame
    per video) over `context` (B, S, D): softmax(q k^T / sqrt(d)) -> (B, heads, L, S), with gradients."""
    q = attn.to_q(x).unflatten(-1, (attn.heads, -1)).transpose(1, 2)  # (B, h, L, d)
    k = attn.to_k(context).unflatten(-1, (attn.heads, -1)).transpose(1, 2)  # (B, h, S, d)
    return torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, dim=-1)


def place(centroid: list[float], side: int, size: int) -> int:
    """A shape's centre (x, y) in pixels of a size x size frame (pixel centres at integers) -> the index of the
    latent position that holds it in a side x side layer (row-major)."""
    x, y = (c + 0.5 for c in centroid)
    return min(int(y * side / size), side - 1) * side + min(int(x * side / size), side - 1)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="tiny-shapes")
    p.add_argument("--text", default=None)
    p.add_argument("--unet", default=None)
    p.add_argument("--n", type=int, default=48)
    p.add_argument("-o", "--output", default=None)
    args = p.parse_args()
    torch.set_num_threads(1)
    base = I2VGenPipeline.from_pretrained(local_model_path(args.model))
    if args.text:
        base.text_encoder = TextEncoder.from_model_folder(args.text)
    if args.unet:
        base.unet = load_unet(args.unet).float()
    unet = base.unet.eval()
    frames_n = 8
    held = [shapes.make_clip(s, num_frames=frames_n) for s in shapes.split_seeds("heldout", 4 * args.n)]
    two = [c for c in held if len(c.shapes) == 2][:args.n]

    layers = [(name, m.transformer_blocks[0].attn2) for name, m in unet.named_modules()
              if isinstance(m, SpatialTransformer)]
    captured: dict[str, tuple[torch.Tensor, int]] = {}

    def hook(name: str) -> object:
        def fn(attn: torch.nn.Module, inputs: tuple, _output: torch.Tensor) -> None:
            x, context = inputs[:2]  # x: (B*F, H*W, C), the normed queries' input; context: (B, S, D)
            side = round(x.shape[1] ** 0.5)
            captured[name] = (cross_attention_weights(attn, x[:1], context[:1])[0], side)  # frame 0: (h, L, S)
        return fn

    handles = [m.register_forward_hook(hook(name)) for name, m in layers]
    sums: dict[str, np.ndarray] = {}
    counted = 0
    a = float(base.alphas_cumprod[999])
    for k, clip in enumerate(two):
        _, sites = clause_sites(base.text_encoder, [clip])
        if len(sites[0]) != 2:
            continue
        words = [s[0] for s in sites[0]]  # the two direction words' positions
        video = torch.from_numpy(clip.frames).permute(3, 0, 1, 2)[None].float().div(127.5).sub(1)
        with torch.no_grad():
            text = base.text_encoder.encode([clip.caption])
            image, _ = base.encode_image(clip.first_frame, clip.frames.shape[2], clip.frames.shape[1],
                                         generator=None, sample_posterior=False)
            z0 = base.vae.encode(video, sample=False)  # (1, 4, F, h, w)
            eps = torch.randn(z0.shape, generator=torch.Generator().manual_seed(k))
            x_t = a ** 0.5 * z0 + (1 - a) ** 0.5 * eps
            unet(x_t, torch.full((1,), 999.0), encoder_hidden_states=text, image_embeds=image,
                 first_frame_latent=z0[:, :, 0], fps=torch.full((1,), 8))
        size = clip.frames.shape[1]
        for name, (w, side) in captured.items():
            m = np.zeros((w.shape[0], 2, 2))  # (heads, shape i, word j)
            for i in range(2):
                pos = place(clip.centroids[i, 0].tolist(), side, size)
                for j in range(2):
                    m[:, i, j] = w[:, pos, words[j]].numpy()
            sums[name] = sums.get(name, 0) + m
        counted += 1
    for h in handles:
        h.remove()
    rows = []
    for name, total in sums.items():
        m = total / counted  # (heads, 2, 2)
        for head in range(m.shape[0]):
            routing = (m[head, 1, 1] - m[head, 0, 1]) - (m[head, 1, 0] - m[head, 0, 0])
            rows.append({"layer": name, "head": head, "routing": float(routing),
                         **{f"w_shape{i + 1}_word{j + 1}": float(m[head, i, j]) for i in range(2) for j in range(2)}})
            print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in rows[-1].items()}))
    result = {"args": vars(args), "clips": counted, "rows": rows}
    if args.output:
        Path(args.output).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
