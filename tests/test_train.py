"""Training: configs, the gamma parameter group, Stable Diffusion initialisation, both trainers, overfitting,
corrupt-file skipping, the latent cache and the `train` commands. Tiny models on the CPU.

Helpers here (`tiny_model`, `tiny_videos`, `tiny_config`) are shared with the other training test files.
"""

from __future__ import annotations

import csv
import importlib.util
import statistics
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from i2vgen.errors import InputError
from i2vgen.io import write_video
from i2vgen.models.configs import unet_preset
from i2vgen.models.loading import build_unet, load_unet
from i2vgen.models.vae import VideoVAE
from i2vgen.models.tiny import random_components, write_model_folder
from i2vgen.train import checkpoint as ckpt_io
from i2vgen.cli import build_parser
from i2vgen.cli import main
from i2vgen.train.config import PRESETS, TrainConfig, preset
from i2vgen.train.trainer import (
    degrade,
    drop_conditions,
    lr_factor,
    paired_v_target,
    param_groups,
    train,
)

_CACHE: dict[str, Path] = {}


def tiny_model(tmp_path_factory) -> Path:  # noqa: ANN001
    """A tiny base model folder (its text encoder also serves the tiny refiner: both have 16-wide contexts)."""
    if "model" not in _CACHE:
        _CACHE["model"] = write_model_folder(random_components(0, unet_preset("tiny")),
                                             tmp_path_factory.mktemp("model") / "tiny")
    return _CACHE["model"]


def tiny_videos(tmp_path_factory) -> Path:
    """Six 12-frame 32x32 mp4 clips of a bar moving right, and list.txt (`path|||caption`)."""
    if "videos" not in _CACHE:
        root = tmp_path_factory.mktemp("videos")
        lines = []
        for i in range(6):
            f = np.full((12, 32, 32, 3), 40 * (i % 3), np.uint8)
            for k in range(12):
                x = (2 * k + 3 * i) % 26
                f[k, 8:24, x:x + 6] = (250, 200 - 30 * i, 60)
            write_video(f, root / f"clip{i}.mp4", fps=8)
            lines.append(f"clip{i}.mp4|||a bar moves right, clip {i}")
        (root / "list.txt").write_text("\n".join(lines) + "\n")
        _CACHE["videos"] = root
    return _CACHE["videos"]


def tiny_config(tmp_path_factory, out: Path, stage: str = "base", **changes) -> TrainConfig:  # noqa: ANN001
    """The `tiny` preset on the tiny model and clips, 16x16 pixels (8x8 latents), 2 frames, with the 16-wide UNet
    presets of that model (the training presets' own are 32 wide, as the shipped tiny-shapes encoders)."""
    cfg = preset("tiny" if stage == "base" else "tiny-refine")
    base = {"model.components": str(tiny_model(tmp_path_factory)),
            "model.unet_preset": "tiny" if stage == "base" else "tiny-refiner",
            "data.sources": str(tiny_videos(tmp_path_factory) / "list.txt"),
            "output_dir": str(out), "data.width": 16, "data.height": 16, "data.num_frames": 2}
    return cfg.replace(**{**base, **changes})


def read_metrics(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


# ---- config ---------------------------------------------------------------------------------------------------------
def test_presets_round_trip_through_yaml_and_bad_keys_are_named(tmp_path):
    for name in PRESETS:
        cfg = preset(name)
        path = cfg.save_yaml(tmp_path / f"{name}.yaml")
        assert TrainConfig.load_yaml(path) == cfg, name
    # A partial file takes the other fields from the dataclasses; YAML's "3e-5" (a string in YAML 1.1) is a float.
    (tmp_path / "partial.yaml").write_text("stage: refine\noptim:\n  lr: 3e-5\ndata:\n  sources: clips.txt\n")
    cfg = TrainConfig.load_yaml(tmp_path / "partial.yaml")
    assert cfg.optim.lr == 3e-5 and cfg.stage == "refine" and cfg.data.sources[0].path == "clips.txt"
    assert cfg.ema.decay == 0.9999 and cfg.loss.offset_noise == 0.1 and cfg.optim.warmup_steps == 10
    for bad, msg in (({"optim": {"lrr": 1}}, "optim.lrr"), ({"loss": {"drop_all": 0.9, "drop_text": 0.2}}, "<= 1"),
                     ({"stage": "middle"}, "stage"), ({"max_steps": "many"}, "max_steps"),
                     ({"degrade": {"vae": ""}}, "degrade.vae"), ({"degrade": {"vae": 3}}, "degrade.vae")):
        with pytest.raises(InputError, match=msg):
            TrainConfig.from_dict(bad)


def test_lr_schedule_warms_up_then_follows_a_cosine():
    cfg = preset("tiny").replace(**{"max_steps": 110, "optim.warmup_steps": 10, "optim.min_lr_ratio": 0.1})
    assert [lr_factor(s, cfg) for s in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])
    assert lr_factor(10, cfg) == pytest.approx(1.0)
    assert lr_factor(60, cfg) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_factor(110, cfg) == pytest.approx(0.1) and lr_factor(500, cfg) == pytest.approx(0.1)


# ---- gamma: the spatial parameter group ----------------------------------------------------------------------------
def test_spatial_group_is_the_reference_sd_key_list_on_the_real_config():
    unet = build_unet(unet_preset("i2vgen-xl"), device="meta")
    named = list(unet.named_parameters())
    spatial = sum(p.numel() for n, p in named if ckpt_io.is_spatial_parameter(n))
    temporal = sum(p.numel() for n, p in named
                   if n.startswith("transformer_in.") or ".temp_convs." in n or ".temp_attentions." in n)
    total = sum(p.numel() for _, p in named)
    # spec §2.4: the 682 keys of VGen's stable_diffusion_image_key_temporal_attention_x1.json (8-channel conv_in,
    # no time_embed) hold 863,871,684 parameters; temporal layers 545,323,136; the rest is the timestep embedding
    # (2,050,560) and the image/fps conditioning (9,223,844).
    assert spatial == 863_871_684
    assert temporal == 545_323_136
    assert total - spatial - temporal == 2_050_560 + 9_223_844
    # The refiner's 4-channel conv_in has 320 * 4 * 9 fewer spatial parameters.
    ref = build_unet(unet_preset("ms-vid2vid-xl"), device="meta")
    assert sum(p.numel() for n, p in ref.named_parameters() if ckpt_io.is_spatial_parameter(n)) \
        == 863_871_684 - 11_520
    # The optimizer groups: spatial at lr * gamma.
    cfg = preset("tiny").replace(**{"optim.lr": 1e-4, "optim.spatial_lr_scale": 0.5})
    groups = {g["name"]: g for g in param_groups(named, cfg)}
    assert groups["spatial"]["lr"] == pytest.approx(5e-5) and groups["temporal_and_conditioning"]["lr"] == 1e-4
    assert sum(p.numel() for p in groups["spatial"]["params"]) == 863_871_684


# ---- initialisation from Stable Diffusion ---------------------------------------------------------------------------
def _tiny_sd_unet(cfg):  # noqa: ANN001, ANN202
    """A diffusers UNet2DConditionModel with the 2D part of `cfg` (SD 2.x style: linear projections), randomised."""
    from diffusers import UNet2DConditionModel
    from helpers import randomize_

    torch.manual_seed(0)
    down = tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in cfg.attention_levels)
    up = tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(cfg.attention_levels))
    heads = tuple(c // cfg.attention_head_dim for c in cfg.block_out_channels)  # diffusers' 2D "head dim" = heads
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=cfg.block_out_channels,
        down_block_types=down, up_block_types=up, layers_per_block=cfg.layers_per_block,
        norm_num_groups=cfg.norm_num_groups, cross_attention_dim=cfg.cross_attention_dim,
        attention_head_dim=heads, use_linear_projection=True, flip_sin_to_cos=True, freq_shift=0)
    return randomize_(unet, 1).eval()


@pytest.mark.parametrize("fmt", ["diffusers", "ldm"])
def test_new_unet_from_sd_starts_as_the_image_model(tmp_path, fmt):
    """With its temporal layers zero-initialised, the 3D UNet on F identical frames computes the SD UNet per frame
    (given the same cross-attention context), for both the diffusers folder and the original LDM key layout."""
    from helpers import randomize_
    from safetensors.torch import save_file

    from i2vgen.models.unet import I2VGenUNet

    cfg = unet_preset("tiny")
    sd_unet = _tiny_sd_unet(cfg)
    if fmt == "diffusers":
        sd_unet.save_pretrained(tmp_path / "sd")
        src = tmp_path / "sd"
    else:  # the same weights under the original CompVis names, as in v2-1_512-ema-pruned.ckpt
        inverse = {v: k for k, v in ckpt_io.ldm_unet_key_map(cfg).items()}
        resnet_inv = {v: k for k, v in ckpt_io._LDM_RESNET.items()}
        ldm = {}
        for key, value in sd_unet.state_dict().items():
            prefix = max((p for p in inverse if key.startswith(p + ".")), key=len)
            rest = key[len(prefix) + 1:]
            if ".resnets." in prefix:
                head, _, tail = rest.partition(".")
                rest = f"{resnet_inv[head]}.{tail}"
            ldm[f"model.diffusion_model.{inverse[prefix]}.{rest}"] = value.contiguous()
        ldm["first_stage_model.decoder.conv_in.weight"] = torch.zeros(1)  # other parts of a full checkpoint
        save_file(ldm, str(tmp_path / "sd.safetensors"))
        src = tmp_path / "sd.safetensors"
    unet = randomize_(I2VGenUNet(cfg), 2).eval()  # every layer non-zero before the initialisation
    report = ckpt_io.init_from_stable_diffusion(unet, src)
    assert report["copied"] == len(sd_unet.state_dict())

    b, f, h, w = 2, 3, 8, 8
    x2d = torch.randn(b, 4, h, w)
    x = x2d[:, :, None].expand(b, 4, f, h, w).contiguous()  # (B, 4, F, h, w): F identical frames
    t = torch.tensor([10.0, 700.0])
    text, image, latent = torch.randn(b, 77, 16), torch.randn(b, 16), torch.randn(b, 4, h, w)
    with torch.no_grad():
        out = unet(x, t, encoder_hidden_states=text, image_embeds=image, first_frame_latent=latent, fps=8)
        context = unet.prepare_condition(text, image, latent, f).context  # (B, 77 + 64 + 4, D)
        ref = sd_unet(x2d, t, encoder_hidden_states=context).sample  # (B, 4, h, w)
    torch.testing.assert_close(out, ref[:, :, None].expand_as(out), atol=2e-5, rtol=1e-4)
    # The image tokens start at zero (their encoders' last layers are zero): only the text tokens carry content.
    assert context[:, 77:].abs().max() == 0


# ---- pieces of the losses --------------------------------------------------------------------------------------------
def test_condition_dropout_frequencies_and_values():
    cfg = preset("tiny").loss  # drop_all 0.1, drop_text 0.05, drop_image 0.05
    n = 20_000
    text, image, null = torch.ones(n, 77, 2), torch.ones(n, 2), torch.full((1, 77, 2), -1.0)
    t, i = drop_conditions(text, image, null, cfg, torch.Generator().manual_seed(0))
    t_dropped, i_dropped = t[:, 0, 0] == -1, i[:, 0] == 0
    assert ((t == -1).all(dim=(1, 2)) == t_dropped).all() and ((i == 0).all(dim=1) == i_dropped).all()
    both = (t_dropped & i_dropped).float().mean().item()
    assert abs(both - 0.10) < 0.01
    assert abs((t_dropped & ~i_dropped).float().mean().item() - 0.05) < 0.01
    assert abs((i_dropped & ~t_dropped).float().mean().item() - 0.05) < 0.01
    # Refiner: text only, with probability drop_all + drop_text.
    t, none = drop_conditions(text, None, null, cfg, torch.Generator().manual_seed(1))
    assert none is None and abs((t[:, 0, 0] == -1).float().mean().item() - 0.15) < 0.01


def test_degrade_and_the_paired_target():
    frames = torch.rand(2, 3, 4, 32, 32) * 2 - 1
    cfg = preset("tiny-refine").degrade
    a, b = degrade(frames, cfg, torch.Generator().manual_seed(3)), degrade(frames, cfg, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.shape == frames.shape and a.abs().max() <= 1
    assert (a - frames).abs().mean() > 0.05  # it does degrade
    # With a VAE (`degrade.vae`): the down-scaled frames, at a size it maps to itself, go through its round trip.
    vae = VideoVAE(random_components(0).vae)
    seen = []
    hook = vae.vae.encoder.register_forward_pre_hook(lambda m, args: seen.append(tuple(args[0].shape[-2:])))
    c = degrade(frames, cfg, torch.Generator().manual_seed(3), vae)
    hook.remove()
    assert c.shape == frames.shape and c.abs().max() <= 1 and not torch.equal(c, a)
    assert seen and all(hw[0] % vae.downscale == 0 and 32 / 4 <= hw[0] <= 32 / 2 for hw in seen), seen
    torch.testing.assert_close(degrade(frames, cfg, torch.Generator().manual_seed(3), vae), c)
    # The paired target's x0 prediction is the clean latent, whatever the source of x_t.
    from i2vgen.diffusion import alpha_bar_at, refiner_alphas_cumprod

    z0, z_low, eps = torch.randn(3, 2, 4, 2, 8, 8).unbind(0)
    t = torch.tensor([300, 599])
    alpha = alpha_bar_at(refiner_alphas_cumprod(), t)
    sa, s = alpha.sqrt().float()[:, None, None, None, None], (1 - alpha).sqrt().float()[:, None, None, None, None]
    x_t = sa * z_low + s * eps
    v = paired_v_target(z0, z_low, eps, alpha)
    torch.testing.assert_close(sa * x_t - s * v, z0, atol=1e-5, rtol=1e-5)
    from i2vgen.diffusion import v_target

    torch.testing.assert_close(paired_v_target(z0, z0, eps, alpha), v_target(z0, eps, alpha))


# ---- the trainers ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("stage", ["base", "refine"])
def test_a_few_steps_on_the_shared_real_clips(tmp_path_factory, tmp_path, real_data_dir, stage):
    """Two steps with EMA, a checkpoint and a sample video through the stage's inference pipeline."""
    # the refiner's inputs degraded through a VAE too (`degrade.vae`: here the components' own)
    extra = {"degrade.vae": str(tiny_model(tmp_path_factory))} if stage == "refine" else {}
    cfg = tiny_config(tmp_path_factory, tmp_path / "run", stage, **{
        "data.sources": f"{real_data_dir}/videos/captions.txt", "data.width": 32, "data.height": 32,
        "data.num_frames": 4, "max_steps": 2, "log.sample_every": 2, "log.tensorboard": True, **extra})
    result = train(cfg)
    assert result.step == 2 and all(np.isfinite(result.losses))
    rows = read_metrics(tmp_path / "run")
    assert [r["step"] for r in rows] == ["1", "2"] and float(rows[0]["lr_spatial"]) == pytest.approx(
        0.5 * float(rows[0]["lr"]))
    ckpt = tmp_path / "run" / "checkpoints" / "step-00000002"
    trained, ema = load_unet(ckpt / "unet"), load_unet(ckpt / "unet_ema")
    assert type(trained).__name__ == ("I2VGenUNet" if stage == "base" else "I2VGenRefinerUNet")
    w, w_ema = trained.state_dict(), ema.state_dict()
    assert any(not torch.equal(w[k], w_ema[k]) for k in w)  # EMA lags behind
    assert TrainConfig.load_yaml(ckpt / "config.yaml") == cfg
    assert (tmp_path / "run" / "samples" / "step-00000002.mp4").stat().st_size > 0
    if importlib.util.find_spec("tensorboard") is not None:
        assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))


def test_tiny_overfit_on_one_clip(tmp_path_factory, tmp_path):
    """100 steps on one clip: the loss at fixed (t, noise) falls clearly. Also reports the training losses."""
    from i2vgen.train import trainer as tr

    one = tmp_path / "one.txt"
    one.write_text(f"{tiny_videos(tmp_path_factory) / 'clip0.mp4'}|||a bar moves right\n")
    cfg = tiny_config(tmp_path_factory, tmp_path / "run", **{
        "data.sources": str(one), "max_steps": 100, "optim.lr": 5e-3, "optim.warmup_steps": 5, "log.every": 25,
        "loss.drop_all": 0.0, "loss.drop_text": 0.0, "loss.drop_image": 0.0, "checkpoint.save_final": False,
        "ema.enabled": False, "model.sample_posterior": False})  # the tiny random VAE's posterior is mostly noise

    frozen = tr.load_frozen(cfg, torch.device("cpu"))
    from i2vgen.train.data import VideoTextDataset, collate

    batch = collate([VideoTextDataset(cfg.data)[(0, 0)]])

    def fixed_loss(unet) -> float:  # noqa: ANN001 - the same timesteps, noise and posterior sample every time
        g = torch.Generator().manual_seed(123)
        unet.eval()
        with torch.no_grad():
            z0, image = tr.encode_clips(frozen, batch, None, torch.device("cpu"), None)
            z0, image = z0.expand(8, -1, -1, -1, -1), image.expand(8, -1)
            text = tr.encode_captions(frozen.text, batch["captions"] * 8, cfg, torch.device("cpu"), None)
            from i2vgen.diffusion import base_alphas_cumprod, v_loss

            t = torch.tensor([50, 150, 300, 450, 600, 750, 900, 990])

            def net(x, tt):  # noqa: ANN001, ANN202
                return unet(x, tt, encoder_hidden_states=text, image_embeds=image,
                            first_frame_latent=z0[:, :, 0], fps=8)

            return v_loss(net, z0, base_alphas_cumprod(), generator=g, offset_noise=0.1, t=t)[0].item()

    torch.manual_seed(cfg.seed)  # the trainer builds its initial UNet after seeding with cfg.seed
    before = fixed_loss(tr.build_training_unet(cfg, frozen, None))
    result = train(cfg)
    after = fixed_loss(result.unet)
    losses = result.losses
    first, last = statistics.mean(losses[:10]), statistics.mean(losses[-10:])
    print(f"overfit: fixed-(t, noise) loss {before:.4f} -> {after:.4f}; training loss step 1 {losses[0]:.4f}, mean "
          f"of the first 10 steps "
          f"{first:.4f}, last 10 {last:.4f}")
    assert after < 0.5 * before
    assert last < 0.75 * first


def test_corrupt_and_missing_files_are_skipped_and_counted(tmp_path_factory, tmp_path):
    videos = tiny_videos(tmp_path_factory)
    (tmp_path / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(300))
    (tmp_path / "empty.mp4").write_bytes(b"")
    lines = [f"{videos / 'clip0.mp4'}|||ok", f"{tmp_path / 'broken.mp4'}|||broken",
             f"{tmp_path / 'empty.mp4'}|||empty", f"{tmp_path / 'missing.mp4'}|||missing",
             f"{videos / 'clip1.mp4'}|||ok"]
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    cfg = tiny_config(tmp_path_factory, tmp_path / "run", **{"data.sources": str(tmp_path / "list.txt"),
                                                             "max_steps": 5, "checkpoint.save_final": False})
    train(cfg)
    rows = read_metrics(tmp_path / "run")
    skipped_lines = (tmp_path / "run" / "skipped.txt").read_text().splitlines()
    assert int(rows[-1]["skipped"]) == len(skipped_lines) >= 3  # 5 steps cover the 5 entries at least once
    assert {line.split("\t")[1] for line in skipped_lines} == {
        str(tmp_path / n) for n in ("broken.mp4", "empty.mp4", "missing.mp4")}


def test_latent_cache_gives_the_same_losses(tmp_path_factory, tmp_path):
    """Cached VAE posteriors (mean and std; each step still draws its own sample) and embeddings change nothing."""
    plain = train(tiny_config(tmp_path_factory, tmp_path / "a", max_steps=3))
    cached_cfg = tiny_config(tmp_path_factory, tmp_path / "b", max_steps=3, cache_dir=str(tmp_path / "cache"))
    first = train(cached_cfg)
    entries = list((tmp_path / "cache").rglob("*.safetensors"))
    second = train(cached_cfg.replace(output_dir=str(tmp_path / "c")))  # now read from the cache
    assert len(entries) >= 4 and len(list((tmp_path / "cache").rglob("*.safetensors"))) == len(entries)
    assert plain.losses == first.losses == second.losses
    with pytest.raises(InputError, match="other settings"):
        train(cached_cfg.replace(**{"data.width": 32, "output_dir": str(tmp_path / "d")}))


# ---- the commands ----------------------------------------------------------------------------------------------------
def test_train_commands(tmp_path_factory, tmp_path, capsys):
    parser = build_parser()
    args = parser.parse_args(["train", "base", "--config", "c.yaml", "--resume", "run", "--set", "optim.lr=1e-4"])
    assert (args.stage, args.config, args.resume, args.set) == ("base", "c.yaml", "run", ["optim.lr=1e-4"])
    assert main(["train", "config", "tiny", "-o", str(tmp_path / "tiny.yaml"), "--set", "max_steps=7"]) == 0
    assert TrainConfig.load_yaml(tmp_path / "tiny.yaml").max_steps == 7
    cfg = tiny_config(tmp_path_factory, tmp_path / "run", max_steps=1)
    cfg.save_yaml(tmp_path / "cfg.yaml")
    assert main(["train", "refine", "--config", str(tmp_path / "cfg.yaml")]) == 1
    assert "configures the base stage" in capsys.readouterr().err
    assert main(["train", "base", "--config", str(tmp_path / "cfg.yaml"), "--set", "optim.lr=2e-3"]) == 0
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["optim"]["lr"] == 2e-3 and (tmp_path / "run" / "checkpoints" / "step-00000001").is_dir()
    assert main(["train", "base"]) == 1 and "pass --config" in capsys.readouterr().err
    # A fresh run never writes over another run's checkpoints.
    assert main(["train", "base", "--config", str(tmp_path / "cfg.yaml")]) == 1
    assert "already holds checkpoints" in capsys.readouterr().err


def test_training_on_a_ready_made_sample_dataset_the_shapes_task(tmp_path_factory, tmp_path):
    """`SampleDataset` lets `train(dataset=...)` take any dataset of finished samples: here the synthetic shapes task
    (issue 6's training data), two base-stage steps with a checkpoint."""
    from i2vgen.shapes import ShapesDataset
    from i2vgen.train.data import SampleDataset

    shapes = ShapesDataset("train", length=8, size=16, num_frames=2)
    cfg = tiny_config(tmp_path_factory, tmp_path / "run", **{"data.sources": [], "max_steps": 2})
    result = train(cfg, dataset=SampleDataset(shapes, cfg.data))
    assert result.step == 2 and all(np.isfinite(result.losses))
    assert (tmp_path / "run" / "checkpoints" / "step-00000002" / "unet").is_dir()
    rows = read_metrics(tmp_path / "run")
    assert [r["step"] for r in rows] == ["1", "2"] and all(r["skipped"] == "0" for r in rows)


def test_the_refiner_degrades_a_paired_source_when_the_dataset_gives_one(tmp_path_factory, tmp_path, monkeypatch):
    """A dataset's "source_frames" (the shapes clips with misplaced shapes here) are what the refiner's objective
    degrades; the clean target stays the clip's own frames."""
    import i2vgen.train.trainer as trainer_mod
    from i2vgen.shapes import ShapesDataset
    from i2vgen.train.data import SampleDataset

    shapes = ShapesDataset("train", length=4, size=16, num_frames=2, travel_error=0.3)
    seen = []
    real_degrade = trainer_mod.degrade
    monkeypatch.setattr(trainer_mod, "degrade", lambda frames, *a, **k: seen.append(frames.clone())
                        or real_degrade(frames, *a, **k))
    cfg = tiny_config(tmp_path_factory, tmp_path / "run", "refine", **{
        "data.sources": [], "max_steps": 1, "batch_size": 4, "log.text_probe_every": 0})
    result = train(cfg, dataset=SampleDataset(shapes, cfg.data))
    assert result.step == 1 and np.isfinite(result.losses[0])
    sources = torch.stack([shapes[i]["source_frames"] for i in range(4)])  # (4, 3, 2, 16, 16)
    frames = torch.stack([shapes[i]["frames"] for i in range(4)])
    assert not torch.equal(sources, frames)
    assert len(seen) == 1 and seen[0].shape == sources.shape
    assert all(any(torch.equal(row, src) for src in sources) for row in seen[0])  # in the loader's order


def test_timestep_skew_keeps_uniform_draws_and_moves_mass_to_high_noise():
    from i2vgen.train.config import LossConfig
    from i2vgen.train.trainer import sample_timesteps

    uniform = sample_timesteps(4000, LossConfig(), torch.Generator().manual_seed(0))
    assert torch.equal(uniform, torch.randint(0, 1000, (4000,), generator=torch.Generator().manual_seed(0)))
    skewed = sample_timesteps(4000, LossConfig(t_skew=2.0, t_max=600), torch.Generator().manual_seed(0))
    assert 0 <= skewed.min() and skewed.max() <= 599
    assert abs(skewed.float().mean().item() - 400) < 15  # E[600 (1 - u^2)] = 400, against 299.5 uniform
    with pytest.raises(InputError, match="t_skew"):
        LossConfig(t_skew=0)
