"""The tiny-shapes recipe (issue 6): word tokenizer, exact latent re-scaling, the smoke recipe end to end through the
command line, exported folders loading through the pipelines, model defaults, and `i2vgen eval-shapes`."""

import json

import numpy as np
import pytest
import torch
import transformers
import yaml
from diffusers import AutoencoderKL
from PIL import Image, ImageDraw

from i2vgen.cli import main
from i2vgen.errors import InputError
from i2vgen.models.encoders import learn_word_merges, write_word_clip_tokenizer
from i2vgen.models.vae import REFERENCE_SCALING_FACTOR, tiny_vae_config
from i2vgen.train.recipe import (
    TINY_GUIDANCE,
    TINY_REFINE_GUIDANCE,
    TINY_REFINE_SAMPLER,
    TINY_REFINE_STRENGTH,
    normalise_latent_scale,
    shapes_vocabulary,
)


def test_word_tokenizer_keeps_every_vocabulary_word_whole(tmp_path):
    words = shapes_vocabulary()
    assert {"red", "circle", "moves", "left", "grows", "leftwards", "magenta", ","} <= set(words)
    tok = transformers.CLIPTokenizer.from_pretrained(write_word_clip_tokenizer(tmp_path / "tok", words))
    for w in words:
        if any(c.isdigit() for c in w):  # "32k", "4k" (refiner suffix): CLIP's pre-tokenizer splits digits off
            continue
        ids = tok(w, add_special_tokens=False).input_ids
        assert len(ids) == 1 and ids[0] != tok.unk_token_id, w
    # a caption is one token per word; unknown words fall back to byte tokens, not <unk>
    assert len(tok("an orange square moves up and shrinks", add_special_tokens=False).input_ids) == 7
    ids = tok("zebra", add_special_tokens=False).input_ids
    assert len(ids) > 1 and tok.unk_token_id not in ids
    assert tok.bos_token_id == len(tok) - 2 and tok.eos_token_id == len(tok) - 1
    assert learn_word_merges(words) == learn_word_merges(list(reversed(words)))  # deterministic


def test_cli_recipe_and_preset_names_match_the_code():
    from i2vgen.cli.train import PRESET_NAMES, RECIPE_NAMES
    from i2vgen.train.config import PRESETS
    from i2vgen.train.recipe import RECIPES

    assert sorted(RECIPE_NAMES) == sorted(RECIPES) and sorted(PRESET_NAMES) == sorted(PRESETS)


def test_word_tokenizer_rejects_words_with_spaces_or_capitals(tmp_path):
    with pytest.raises(InputError):
        write_word_clip_tokenizer(tmp_path / "t", ["red", "Blue"])
    with pytest.raises(InputError):
        write_word_clip_tokenizer(tmp_path / "t", ["two words"])


def test_normalise_latent_scale_is_an_exact_reparametrisation():
    torch.manual_seed(0)
    vae = AutoencoderKL(**tiny_vae_config()).eval()
    for p in vae.parameters():  # randomise: default-initialised layers would hide errors
        p.data.normal_(0, 0.2)
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        post = vae.encode(x).latent_dist
        before_rec = vae.decode(post.mean).sample
        std = post.mean.std().item()
        normalise_latent_scale(vae, std)
        post2 = vae.encode(x).latent_dist
        after_rec = vae.decode(post2.mean).sample
    k = 1 / (REFERENCE_SCALING_FACTOR * std)
    torch.testing.assert_close(post2.mean, post.mean * k, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(post2.std, post.std * k, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(after_rec, before_rec, rtol=1e-4, atol=1e-5)
    assert (post2.mean * REFERENCE_SCALING_FACTOR).std().item() == pytest.approx(1.0, rel=1e-4)


@pytest.fixture(scope="module")
def smoke_models(tmp_path_factory):
    """The smoke recipe (a few steps of every stage) run through `i2vgen train-recipe`."""
    run = tmp_path_factory.mktemp("recipe") / "run"
    assert main(["train-recipe", "smoke", "--output-dir", str(run), "--threads", "1"]) == 0
    return run


def test_smoke_recipe_writes_loadable_model_folders(smoke_models):
    from i2vgen.pipelines.base import I2VGenPipeline
    from i2vgen.pipelines.refine import I2VGenRefinePipeline

    base_dir, refiner_dir = smoke_models / "tiny-shapes", smoke_models / "tiny-shapes-refiner"
    index = json.loads((base_dir / "model_index.json").read_text())
    assert index["_i2vgen_defaults"]["width"] == 32 and index["_i2vgen_defaults"]["refine_width"] == 64
    assert index["_i2vgen_recipe"]["recipe"]["base"]["steps"] == 3
    refiner_index = json.loads((refiner_dir / "model_index.json").read_text())
    assert refiner_index["_i2vgen_defaults"]["modelscope_start"] is False  # trained with textbook SDEdit
    assert refiner_index["_i2vgen_defaults"]["sampler"] == index["_i2vgen_defaults"]["refine_sampler"]
    # the refiner's inputs were degraded through the base stage's VAE (`refine_base_vae`)
    refine_cfg = yaml.safe_load((smoke_models / "refine" / "config.yaml").read_text())
    assert refine_cfg["degrade"]["vae"] == str(smoke_models / "components-base")
    timings = json.loads((smoke_models / "timings.json").read_text())
    assert set(timings) == {"components", "base_components", "t2i", "curriculum-0", "curriculum-1", "base", "refine",
                            "refine-2", "export"}
    # refine-2 continues all of the refiner UNet from the refine stage's EMA weights, in another data order, and its
    # EMA weights are what the refiner folder holds
    more_cfg = yaml.safe_load((smoke_models / "refine-2" / "config.yaml").read_text())
    assert more_cfg["model"]["unet"] == str(smoke_models / "refine" / "checkpoints" / "step-00000002" / "unet_ema")
    assert more_cfg["data"]["seed"] == 1 and more_cfg["degrade"]["vae"] == str(smoke_models / "components-base")
    from i2vgen.models.loading import load_unet

    exported = load_unet(refiner_dir / "unet").state_dict()
    trained = load_unet(smoke_models / "refine-2" / "checkpoints" / "step-00000002" / "unet_ema").state_dict()
    before = load_unet(smoke_models / "refine" / "checkpoints" / "step-00000002" / "unet_ema").state_dict()
    assert exported.keys() == trained.keys() and all(torch.equal(exported[k], trained[k]) for k in trained)
    assert not all(torch.equal(before[k], trained[k]) for k in trained)  # it trained
    base = I2VGenPipeline.from_pretrained(base_dir)
    video = base(np.zeros((32, 32, 3), np.uint8), "a red circle moves left", num_frames=4, height=32, width=32,
                 num_inference_steps=2, target_fps=8, generator=torch.Generator().manual_seed(0), output_type="pt")
    assert video.shape == (1, 3, 4, 32, 32) and torch.isfinite(video).all()
    refiner = I2VGenRefinePipeline.from_pretrained(refiner_dir)
    assert refiner.vae.downscale == 4
    refined = refiner(video, "a red circle moves left", width=64, height=64, num_inference_steps=2,
                      generator=torch.Generator().manual_seed(0))
    assert refined.shape == (1, 4, 64, 64, 3)
    # each stage has its own VAE: downscale 2 for the base (32 px -> 16x16), 4 for the refiner (64 px -> 16x16)
    assert base.vae.downscale == 2
    # `text_bind`: the base folder's text encoder was fine-tuned, the refiner's is the components' one
    from safetensors.torch import load_file

    def text_weights(folder):
        return load_file(str(folder / "text_encoder" / "model.safetensors"))

    shared, bound = text_weights(smoke_models / "components"), text_weights(base_dir)
    assert bound.keys() == shared.keys() and not all(torch.equal(bound[k], shared[k]) for k in shared)
    assert all(torch.equal(text_weights(refiner_dir)[k], shared[k]) for k in shared)


def test_stage_fields_added_later_at_their_defaults_change_no_saved_recipe():
    """A recipe saved before a `StageRecipe` field existed still matches when today's value is the default, and
    differs when it is not; a base stage refuses the refiner-only source pairing."""
    import dataclasses

    from i2vgen.train.recipe import recipe, recipe_differences, stage_dataset

    cfg = recipe("tiny-shapes")
    saved = json.loads(json.dumps(cfg.to_dict()))
    for stage in (saved["base"], saved["refine"], *saved["curriculum"]):
        del stage["travel_error"], stage["colour_drift"], stage["source_prob"]
    assert recipe_differences(saved, cfg) == []
    changed = dataclasses.replace(cfg, refine=dataclasses.replace(cfg.refine, travel_error=1.0))
    assert recipe_differences(saved, changed) == ["refine"]
    bad = dataclasses.replace(cfg, base=dataclasses.replace(cfg.base, travel_error=1.0))
    with pytest.raises(InputError, match="not a refiner stage"):
        stage_dataset(bad, "base")


def test_recipe_rerun_skips_finished_stages_and_refuses_other_settings(smoke_models, capsys):
    before = json.loads((smoke_models / "timings.json").read_text())
    assert main(["train-recipe", "smoke", "--output-dir", str(smoke_models), "--threads", "1"]) == 0
    err = capsys.readouterr().err
    assert "base: already trained" in err and "refine: already trained" in err and "refine-2: already trained" in err
    after = json.loads((smoke_models / "timings.json").read_text())
    assert after["components"] == before["components"]  # not rebuilt
    assert main(["train-recipe", "smoke", "--output-dir", str(smoke_models), "--seed", "5"]) == 1
    assert "another recipe (differs in seed)" in capsys.readouterr().err


def test_base_only_exports_the_base_folder_alone(smoke_models, tmp_path, capsys):
    """`--base-only` stops after the base stage (finished here, so skipped) and writes tiny-shapes/ only: the same
    base UNet as the full run's, no refiner folder."""
    from i2vgen.models.loading import load_unet

    out = tmp_path / "out"
    assert main(["train-recipe", "smoke", "--output-dir", str(smoke_models), "--threads", "1", "--base-only",
                 "--export", str(out)]) == 0
    err = capsys.readouterr().err
    assert "base: already trained" in err and "refine:" not in err
    assert sorted(p.name for p in out.iterdir()) == ["tiny-shapes"]
    ours, full = (load_unet(d / "tiny-shapes" / "unet").state_dict() for d in (out, smoke_models))
    assert ours.keys() == full.keys() and all(torch.equal(ours[k], full[k]) for k in ours)


def test_generate_uses_the_model_folder_defaults_on_a_users_drawing(smoke_models, tmp_path):
    drawing = Image.new("RGB", (90, 70), "white")
    ImageDraw.Draw(drawing).rectangle((30, 20, 55, 45), fill=(40, 80, 220))
    drawing.save(tmp_path / "my_shapes.png")
    out = tmp_path / "out.gif"
    assert main(["generate", "--model", str(smoke_models / "tiny-shapes"), "--image", str(tmp_path / "my_shapes.png"),
                 "--prompt", "a blue square moves up", "--output", str(out), "--steps", "2", "--seed", "1",
                 "--quiet", "--refine", "--refiner-model", str(smoke_models / "tiny-shapes-refiner"),
                 "--refine-steps", "2"]) == 0
    meta = json.loads((tmp_path / "out.gif.json").read_text())
    assert (meta["base_width"], meta["base_height"], meta["width"], meta["height"]) == (32, 32, 64, 64)
    assert meta["fps_condition"] == 8 and meta["frames"] == 4  # the smoke recipe's 4-frame clips
    # guidance and the refiner's strength, guidance and sampler: the folder's suggestions (chosen on held-out clips)
    # unless a flag says otherwise
    assert (meta["guidance"], meta["refine"]["strength"]) == (TINY_GUIDANCE, TINY_REFINE_STRENGTH)
    assert (meta["refine"]["guidance"], meta["refine"]["sampler"]) == (TINY_REFINE_GUIDANCE, TINY_REFINE_SAMPLER)
    with Image.open(out) as im:
        assert im.size == (64, 64) and im.n_frames == 4
    assert main(["generate", "--model", str(smoke_models / "tiny-shapes"), "--image", str(tmp_path / "my_shapes.png"),
                 "--prompt", "a blue square moves up", "--output", str(tmp_path / "g9.gif"), "--steps", "1",
                 "--seed", "1", "--quiet", "--guidance", "9"]) == 0
    assert json.loads((tmp_path / "g9.gif.json").read_text())["guidance"] == 9.0
    # `i2vgen refine` on the refiner folder alone takes its suggested strength, guidance and sampler too
    assert main(["refine", "--model", str(smoke_models / "tiny-shapes-refiner"), "--video", str(tmp_path / "g9.gif"),
                 "--prompt", "a blue square moves up", "--output", str(tmp_path / "r.gif"), "--steps", "2",
                 "--seed", "0", "--quiet"]) == 0
    meta = json.loads((tmp_path / "r.gif.json").read_text())
    assert meta["strength"] == TINY_REFINE_STRENGTH and (meta["width"], meta["height"]) == (64, 64)
    assert (meta["guidance"], meta["sampler"]) == (TINY_REFINE_GUIDANCE, TINY_REFINE_SAMPLER)


def test_eval_shapes_table_and_bad_variant(smoke_models, tmp_path, capsys):
    out = tmp_path / "results.json"
    assert main(["eval-shapes", "--model", str(smoke_models / "tiny-shapes"), "--refiner-model",
                 str(smoke_models / "tiny-shapes-refiner"), "-n", "2", "--variants", "ground-truth,no-clip,refine-gt,text-use",
                 "--refine-steps", "2", "--output", str(out)]) == 0
    table = capsys.readouterr().out
    assert "| ground-truth | 100 % (100% / " in table  # the tracker reads the true clips' directions
    assert "| text-use |" not in table and "text-use (1 one-shape clips" in table  # its own small table
    result = json.loads(out.read_text())
    assert result["settings"]["n"] == 2 and len(result["variants"]["no-clip"]["rows"]) == 2
    gt = result["variants"]["refine-gt"]["summary"]
    assert gt["psnr_gain_db"] == pytest.approx(gt["psnr_refined"] - gt["psnr_bicubic"])
    # ground-truth's refined column is the refiner VAE's round trip of the true 64x64 clip, its bicubic column the
    # up-scaled true 32x32 clip; refine-gt's input is that clip degraded by the base VAE, so its bicubic is lower
    truth = result["variants"]["ground-truth"]["summary"]
    assert truth["psnr_bicubic"] > gt["psnr_bicubic"] and truth["psnr_refined"] > 5
    assert main(["eval-shapes", "--model", str(smoke_models / "tiny-shapes"), "--variants", "full,bogus"]) == 1
    assert "unknown variant(s) bogus" in capsys.readouterr().err
    # a run split by clips combines into the run of all clips (same per-clip seeds)
    halves = [tmp_path / "a.json", tmp_path / "b.json"]
    for start, path in zip((0, 1), halves):
        assert main(["eval-shapes", "--model", str(smoke_models / "tiny-shapes"), "-n", "1", "--start", str(start),
                     "--variants", "no-clip", "--output", str(path)]) == 0
    combined = tmp_path / "combined.json"
    assert main(["eval-shapes", "--combine", *map(str, halves), "--output", str(combined)]) == 0
    both = json.loads(combined.read_text())
    assert both["variants"]["no-clip"]["rows"] == result["variants"]["no-clip"]["rows"]
    assert both["settings"]["heldout_seeds"] == result["settings"]["heldout_seeds"]  # all clips, not the first file's
    assert main(["eval-shapes", "--combine", str(halves[0]), str(halves[0])]) == 1  # the same clips twice


def test_pipeline_ablate_rejects_unknown_conditions(smoke_models):
    from i2vgen.pipelines.base import I2VGenPipeline

    pipe = I2VGenPipeline.from_pretrained(smoke_models / "tiny-shapes")
    for bad in (("text",), "image"):
        with pytest.raises(InputError, match="ablate"):
            pipe(np.zeros((32, 32, 3), np.uint8), "x", num_frames=2, height=32, width=32, num_inference_steps=1,
                 ablate=bad)
