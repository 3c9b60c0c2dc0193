"""`i2vgen.train.text_bind`: the tiny text encoder fine-tuned so that each clause's direction word tells its own
shape (docs/tiny-shapes.md, section 14)."""

import pytest
import torch

from i2vgen.errors import InputError
from i2vgen.model_paths import local_model_path
from i2vgen.models.encoders import TextEncoder
from i2vgen.shapes import make_clip, split_seeds
from i2vgen.train.text_bind import bind_text_encoder, clause_sites


def _two_shape(split, n):
    clips = (make_clip(s, size=8, num_frames=2) for s in split_seeds(split, 6 * n))
    return [c for c in clips if len(c.shapes) == 2][:n]


def _second_colour_accuracy(encoder, train, held):
    """Nearest class mean of the second direction word's state -> the second shape's colour, fitted on `train`,
    scored on `held`."""
    def features(clips):
        ids, sites = clause_sites(encoder, clips)
        with torch.no_grad():
            h = encoder.encode_ids(ids)  # (N, L, D)
        keep = [i for i, s in enumerate(sites) if len(s) == 2]
        return h[keep, [sites[i][1][0] for i in keep]], torch.tensor([sites[i][1][1] for i in keep])

    x, y = features(train)
    means = torch.stack([x[y == c].mean(0) for c in range(int(y.max()) + 1)])  # (colours, D)
    xh, yh = features(held)
    return (torch.cdist(xh, means).argmin(1) == yh).float().mean().item()


def test_bound_encoder_tells_the_second_shape_from_its_direction_word():
    torch.manual_seed(0)
    encoder = TextEncoder.from_model_folder(local_model_path("tiny-shapes"))
    train, held = _two_shape("train", 300), _two_shape("heldout", 100)
    ids, sites = clause_sites(encoder, train[:1])
    assert ids.shape == (1, encoder.context_length) and len(sites[0]) == 2
    assert sites[0][0][0] < sites[0][1][0]  # caption order
    before = _second_colour_accuracy(encoder, train, held)
    rows = bind_text_encoder(encoder, train, steps=200, batch=32, lr=3e-3, keep=1.0, seed=0)
    after = _second_colour_accuracy(encoder, train, held)
    assert before < 0.6 and after > 0.9, (before, after)
    assert rows[-1]["step"] == 200 and rows[-1]["keep_loss"] < 0.3
    assert not encoder.model.training and not any(p.requires_grad for p in encoder.model.parameters())


def test_bind_refuses_captions_without_single_token_direction_words():
    encoder = TextEncoder.from_model_folder(local_model_path("tiny-shapes"))
    clip = make_clip(0, size=8, num_frames=2)
    clip = type(clip)(**{**clip.__dict__, "caption": "a shape"})
    with pytest.raises(InputError, match="direction words"):
        bind_text_encoder(encoder, [clip], steps=1, batch=1, lr=1e-3, keep=1.0, seed=0)
