"""Timestep distributions of the trainer and the text-use probe (does a model read its captions?)."""

from __future__ import annotations

import csv

import pytest
import torch

from i2vgen.diffusion import base_alphas_cumprod
from i2vgen.errors import InputError
from i2vgen.train.config import LossConfig
from i2vgen.train.text_probe import caption_gap, shuffled_order
from i2vgen.train.trainer import sample_timesteps, train
from test_train import tiny_config


def _draw(n: int = 20000, **kw) -> torch.Tensor:  # noqa: ANN003
    return sample_timesteps(n, LossConfig(**kw), torch.Generator().manual_seed(0))


def test_top_share_mixture_sends_that_share_to_the_top_of_the_schedule():
    t = _draw(t_top_share=0.4, t_top_min=950)
    top = (t >= 950).float().mean().item()
    assert abs(top - (0.4 + 0.6 * 0.05)) < 0.015  # the mixture's share plus the uniform part's own 5 %
    assert t.min() >= 0 and t.max() <= 999
    refiner = _draw(t_max=600, t_top_share=0.5, t_top_min=500)
    assert refiner.max() <= 599 and abs((refiner >= 500).float().mean().item() - (0.5 + 0.5 / 6)) < 0.015


def test_logit_normal_and_power_distributions():
    t = _draw(t_dist="logit-normal", t_logit_mean=1.0, t_logit_std=1.0)
    assert abs(t.float().median().item() - 1000 * torch.sigmoid(torch.tensor(1.0)).item()) < 10
    assert LossConfig(t_skew=2.0).t_dist == "power"  # configs written before t_dist existed
    assert abs(_draw(t_dist="power", t_skew=2.0).float().mean().item() - 666.7) < 10
    with pytest.raises(InputError, match="t_dist"):
        LossConfig(t_dist="cosine")
    with pytest.raises(InputError, match="t_top_share"):
        LossConfig(t_top_share=1.5)
    with pytest.raises(InputError, match="t_top_min"):
        LossConfig(t_max=600, t_top_share=0.2, t_top_min=700)
    assert LossConfig(t_max=600).t_top_min == 950  # unused while t_top_share is 0


def test_shuffled_order_picks_another_caption():
    assert shuffled_order(["a", "b", "c"]) == [1, 2, 0]
    assert shuffled_order(["a", "a", "b"]) == [2, 2, 0]
    assert shuffled_order(["a", "a"]) is None


def test_caption_gap_separates_a_text_reader_from_a_text_blind_net():
    g = torch.Generator().manual_seed(0)
    z0 = torch.randn(3, 4, 2, 4, 4, generator=g)
    text = torch.randn(3, 5, 8, generator=g)
    schedule = base_alphas_cumprod()
    order = [1, 2, 0]

    def oracle(x_t, t, ctx):  # noqa: ANN001, ANN202 - reads x0 off the caption, eps off x_t: the exact v
        a = schedule[t.long()].float()[:, None, None, None, None]
        which = torch.stack([(ctx[i:i + 1] - text).abs().sum((1, 2)).argmin() for i in range(ctx.shape[0])])
        x0 = z0[which]
        eps = (x_t - a.sqrt() * x0) / (1 - a).sqrt()
        return a.sqrt() * eps - (1 - a).sqrt() * x0

    def blind(x_t, t, ctx):  # noqa: ANN001, ANN202
        return -x_t

    reader = caption_gap(oracle, z0, text, text[order], schedule, (999, 900))
    assert reader["loss_999"] < 1e-6 and reader["gap_999"] > 0.5 and reader["rel_gap_900"] > 100
    ignorer = caption_gap(blind, z0, text, text[order], schedule, (999, 900))
    assert ignorer["gap_999"] == 0 and ignorer["gap_900"] == 0


def test_trainer_logs_the_probe_warns_when_text_is_ignored_and_trains_identically(tmp_path_factory, tmp_path, capsys):
    changes = {"max_steps": 4, "log.every": 2, "checkpoint.save_final": False, "ema.enabled": False}
    with_probe = train(tiny_config(tmp_path_factory, tmp_path / "a", **changes, **{
        "log.text_probe_every": 2, "log.text_probe_samples": 3}))
    printed = capsys.readouterr().out
    without = train(tiny_config(tmp_path_factory, tmp_path / "b", **changes, **{"log.text_probe_every": 0}))
    assert with_probe.losses == without.losses  # the probe leaves the training random state alone
    with open(tmp_path / "a" / "text_probe.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["step"], r["t"]) for r in rows] == [("2", "999"), ("2", "900"), ("4", "999"), ("4", "900")]
    assert all(float(r["gap"]) == pytest.approx(float(r["loss_other_caption"]) - float(r["loss"])) for r in rows)
    assert "text-use probe at step 2 (3 samples)" in printed
    # a new tiny UNet starts with its text branch at zero: the caption cannot matter yet, and the trainer says so
    assert "warning: the loss hardly depends on the caption" in printed
    assert not (tmp_path / "b" / "text_probe.csv").exists()


def test_two_clip_check_the_text_pathway_learns_the_word_at_the_top_of_the_schedule(tmp_path):
    """The fast two-clip check (docs/tiny-shapes.md): a new tiny-shapes base UNet, two clips that differ only in the
    direction word, t at the top of the schedule. Within 160 steps the swapped caption costs > 0.1 of v-loss at
    t = 999, where x_t is pure noise: the caption reaches the output through the trainer's text pathway."""
    from i2vgen.model_paths import local_model_path
    from i2vgen.train.config import preset
    from i2vgen.train.text_probe import two_clip_check

    cfg = preset("tiny").replace(**{
        "output_dir": str(tmp_path / "run"), "max_steps": 160, "model.components": str(local_model_path("tiny-shapes")),
        "model.unet_preset": "tiny-shapes", "optim.lr": 1e-3, "optim.warmup_steps": 10, "optim.min_lr_ratio": 1.0,
        "ema.enabled": False, "checkpoint.save_final": False, "log.every": 40, "log.tensorboard": False,
        "log.text_probe_every": 80, "log.text_probe_t": (999, 500), "loss.t_top_share": 1.0, "loss.t_top_min": 990})
    rows = two_clip_check(cfg, size=16, num_frames=8)
    last = {int(r["t"]): r for r in rows if r["step"] == 160}
    print({t: (round(r["loss"], 4), round(r["gap"], 4)) for t, r in last.items()})
    assert last[999]["gap"] > 0.1 and last[999]["loss"] < 0.2
