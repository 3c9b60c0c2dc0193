"""The base-stage pipeline on a tiny random model: options, outputs, offload and errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from i2vgen.errors import CheckpointError, InputError
from i2vgen.models.tiny import random_components, write_model_folder
from i2vgen.pipelines.base import SAMPLERS, I2VGenPipeline, load_pipeline

KW = dict(num_frames=3, height=32, width=32, num_inference_steps=2, negative_prompt="blurry")


def _random_folder(dst):
    comps = random_components(0)
    for p in comps.unet.parameters():  # default init leaves the UNet near zero: randomise so outputs depend on it
        torch.nn.init.normal_(p, std=0.05)
    return write_model_folder(comps, dst)


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    return load_pipeline(_random_folder(tmp_path_factory.mktemp("p") / "tiny"))


@pytest.fixture
def image(real_data_dir):
    return f"{real_data_dir}/images/img_0007.jpg"


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_output_types_agree(pipe, image):
    np_out = pipe(image, "a dog", generator=_gen(), output_type="np", **KW)
    pt_out = pipe(image, "a dog", generator=_gen(), output_type="pt", **KW)
    pil_out = pipe(image, "a dog", generator=_gen(), output_type="pil", **KW)
    lat = pipe(image, "a dog", generator=_gen(), output_type="latent", **KW)
    assert np_out.shape == (1, 3, 32, 32, 3) and 0 <= np_out.min() and np_out.max() <= 1
    assert pt_out.shape == (1, 3, 3, 32, 32)
    np.testing.assert_allclose(pt_out.permute(0, 2, 3, 4, 1).numpy(), np_out, atol=0)
    assert len(pil_out) == 1 and len(pil_out[0]) == 3 and pil_out[0][0].size == (32, 32)
    assert lat.shape == (1, 4, 3, 16, 16)


def test_image_input_types(pipe, image):
    img = Image.open(image).convert("RGB")
    a = pipe(img, "x", generator=_gen(), **KW)
    b = pipe(np.asarray(img), "x", generator=_gen(), **KW)
    c = pipe(torch.from_numpy(np.asarray(img)).permute(2, 0, 1), "x", generator=_gen(), **KW)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)


def test_seeded_and_prompt_dependent(pipe, image):
    a = pipe(image, "a dog", generator=_gen(1), **KW)
    b = pipe(image, "a dog", generator=_gen(1), **KW)
    c = pipe(image, "a cat runs", generator=_gen(1), **KW)
    d = pipe(image, "a dog", generator=_gen(2), **KW)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 1e-4 and np.abs(a - d).max() > 1e-4


def test_sequential_guidance_equals_batched(pipe, image):
    a = pipe(image, "a dog", generator=_gen(), output_type="latent", **KW)
    b = pipe(image, "a dog", generator=_gen(), output_type="latent", sequential_cfg=True, **KW)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_every_sampler_runs_and_calls_back(pipe, image, sampler):
    seen = []
    out = pipe(image, "a dog", generator=_gen(), sampler=sampler, output_type="latent",
               callback=lambda i, t, x0: seen.append((i, float(t), tuple(x0.shape))), **KW)
    assert torch.isfinite(out).all()
    assert [s[0] for s in seen] == [0, 1]
    assert seen[0][1] > seen[1][1] and seen[0][2] == (1, 4, 3, 16, 16)


def test_reference_ddim_grid(pipe, image):
    ts = []
    pipe(image, "x", generator=_gen(), output_type="latent", callback=lambda i, t, x0: ts.append(round(float(t))),
         **{**KW, "num_inference_steps": 50})
    assert ts[:3] == [981, 961, 941] and ts[-1] == 1 and len(ts) == 50


def test_decode_chunk_size_bounds_memory_not_result(pipe, image):
    a = pipe(image, "x", generator=_gen(), decode_chunk_size=1, **KW)
    b = pipe(image, "x", generator=_gen(), decode_chunk_size=3, **KW)
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_model_cpu_offload_moves_one_component_at_a_time(pipe, image, monkeypatch):
    """With offload, each component goes to the device just before it runs and back to the CPU right after, so at
    most one component is on the device at any time."""
    names = {id(m): n for n, m in [("text", pipe.text_encoder), ("image", pipe.image_encoder), ("vae", pipe.vae),
                                     ("unet", pipe.unet)]}
    events: list[tuple[str, str]] = []
    for m in (pipe.text_encoder, pipe.image_encoder, pipe.vae, pipe.unet):
        orig = m.to

        def to(*args, _orig=orig, _name=names[id(m)], **kwargs):
            events.append((_name, str(args[0] if args else kwargs["device"])))
            return _orig(*args, **kwargs)

        monkeypatch.setattr(m, "to", to)
    pipe.enable_model_cpu_offload("cpu")  # the CPU stands in for the accelerator here
    events.clear()
    try:
        out = pipe(image, "x", generator=_gen(), **KW)
    finally:
        pipe.to("cpu")
    assert out.shape == (1, 3, 32, 32, 3)
    # pairs: to(device) then to("cpu") of the same component before the next one moves
    assert [n for n, _ in events[:10]] == ["text", "text", "image", "image", "vae", "vae", "unet", "unet", "vae", "vae"]


def test_bad_arguments(pipe, image):
    cases = [
        (dict(num_frames=0), "num_frames"),
        (dict(num_inference_steps=0), "num_inference_steps"),
        (dict(guidance_scale=-1.0), "guidance_scale"),
        (dict(sampler="euler"), "unknown sampler"),
        (dict(height=31), "multiples"),
        (dict(output_type="gif"), "output_type"),
        (dict(latents=torch.zeros(1, 4, 2, 16, 16)), "latents"),
        (dict(decode_chunk_size=0), "decode_chunk_size"),
    ]
    for change, match in cases:
        with pytest.raises(InputError, match=match):
            pipe(image, "x", **{**KW, **change})


def test_long_prompt_is_truncated_with_a_warning(pipe, image):
    with pytest.warns(UserWarning, match="tokens were cut"):
        pipe(image, "word " * 100, output_type="latent", **KW)


def test_missing_or_mismatched_model_folders(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        I2VGenPipeline.from_pretrained(tmp_path / "nothing")
    with pytest.raises(CheckpointError, match="model folder"):
        (tmp_path / "empty").mkdir()
        I2VGenPipeline.from_pretrained(tmp_path / "empty")
    comps = random_components(0)
    small = random_components(0, unet_config=comps.unet.config.replace(cross_attention_dim=16))
    comps.unet = small.unet
    with pytest.raises(CheckpointError, match="do not match"):
        I2VGenPipeline.from_pretrained(write_model_folder(comps, tmp_path / "mismatch"))


def test_hub_id_goes_through_snapshot_download(tmp_path, monkeypatch):
    """A Hub id is downloaded with huggingface_hub (only the pipeline's components, the chosen weight variant and no
    original .pth files), then loaded from the returned folder. No network: snapshot_download is replaced."""
    import huggingface_hub

    folder = write_model_folder(random_components(0), tmp_path / "snapshot")
    calls = []

    def fake_snapshot_download(repo_id, allow_patterns=None, ignore_patterns=None, **kw):
        calls.append((repo_id, allow_patterns, ignore_patterns))
        return str(folder)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    pipe = I2VGenPipeline.from_pretrained("ali-vilab/i2vgen-xl")
    assert isinstance(pipe, I2VGenPipeline)
    (repo, allow, ignore), = calls
    assert repo == "ali-vilab/i2vgen-xl"
    assert "model_index.json" in allow and "unet/*" in allow and "image_encoder/*" in allow
    assert "*.pth" in ignore and "*.fp16.safetensors" in ignore
    calls.clear()
    with pytest.raises(CheckpointError):  # the fake folder holds no fp16 files
        I2VGenPipeline.from_pretrained("ali-vilab/i2vgen-xl", variant="fp16")
    (_, _, ignore), = calls
    assert "*.fp16.safetensors" not in ignore and "*/diffusion_pytorch_model.safetensors" in ignore

    def offline(*a, **k):
        raise OSError("connection refused")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(CheckpointError, match="cannot download owner/model"):
        I2VGenPipeline.from_pretrained("owner/model")


def test_the_folder_says_whether_the_first_frame_is_a_posterior_sample(pipe, image, tmp_path):
    """`_i2vgen_defaults.sample_posterior` false (a model trained on posterior means, as the tiny-shapes recipe's
    is) makes the posterior mean the default; a folder without it keeps the reference's sample."""
    from i2vgen.pipelines.common import ModelConventions

    folder = _random_folder(tmp_path / "tiny")
    index = json.loads((folder / "model_index.json").read_text())
    index["_i2vgen_defaults"] = {"sample_posterior": False}
    (folder / "model_index.json").write_text(json.dumps(index))
    mine = load_pipeline(folder)
    assert pipe.conventions.sample_posterior and not mine.conventions.sample_posterior
    run = lambda p, **k: p(image, "a dog", generator=_gen(), output_type="latent", **KW, **k)
    assert torch.equal(run(mine), run(mine, sample_posterior=False))
    assert not torch.equal(run(mine), run(mine, sample_posterior=True))
    assert ModelConventions.from_folder(tmp_path / "missing") == ModelConventions()
    index["_i2vgen_defaults"] = {"sample_posterior": "false"}  # a string: refused, not read as true
    (folder / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match="sample_posterior must be true or false, got 'false'"):
        load_pipeline(folder)
