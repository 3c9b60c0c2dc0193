"""The application layer: settings resolved once and checked before any weights load, outputs that never destroy
data, memory refused up front, cancellation, and the Python API's one-line errors."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image

from i2vgen import reference
from i2vgen.app.memory import MemoryError_, MemoryEstimate, estimate, model_geometry, plan
from i2vgen.app.outputs import OutputError, check_output, clean_stale_temporaries, write_output
from i2vgen.app.run import Cancelled, generate, load_generation_pipeline, prepare
from i2vgen.app.settings import DeviceSettings, GenerationSettings, RefineSettings, parse_memory
from i2vgen.diffusion.sampler_table import DEFAULT_SAMPLERS, default_steps
from i2vgen.errors import CheckpointError, InputError
from i2vgen.models.tiny import random_components, write_model_folder


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return write_model_folder(random_components(0), tmp_path_factory.mktemp("m") / "tiny")


@pytest.fixture
def picture(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "in.png"
    Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(path)
    return path


def small(model_dir, **kw) -> GenerationSettings:
    base = {"prompt": "a cat", "model": str(model_dir), "num_frames": 2, "width": 32, "height": 32, "steps": 2,
            "seed": 1}
    return GenerationSettings(**{**base, **kw})


# ---- settings -----------------------------------------------------------------------------------------------------
def test_defaults_come_from_the_folder_then_the_reference():
    tiny = GenerationSettings.from_model_folder("tiny-shapes", prompt="a red circle moves left")
    assert (tiny.width, tiny.height, tiny.num_frames) == (32, 32, 8)
    assert tiny.timestep_spacing == "trailing" and tiny.refiner_model == "tiny-shapes-refiner"
    real = GenerationSettings.from_model_folder("owner/not-downloaded", prompt="p")
    assert (real.width, real.height, real.guidance, real.steps) == (reference.WIDTH, reference.HEIGHT,
                                                                    reference.GUIDANCE, reference.STEPS)
    assert real.negative_prompt == reference.NEGATIVE_PROMPT and isinstance(real.seed, int)
    cascade = GenerationSettings.from_model_folder("owner/not-downloaded", prompt="p", refine=True)
    assert (cascade.width, cascade.height) == (reference.CASCADE_WIDTH, reference.CASCADE_HEIGHT)
    assert GenerationSettings.from_model_folder("tiny-shapes", prompt="p", width=64).width == 64  # explicit wins
    refiner = RefineSettings(model="tiny-shapes-refiner").resolved()
    assert (refiner.width, refiner.height) == (64, 64) and refiner.strength != reference.STRENGTH


def test_refiner_guidance_and_sampler_come_from_the_folder_then_the_reference():
    """The refiner's guidance and sampler: explicit > the base folder's `refine_guidance_scale` / `refine_sampler`
    (cascade) or the refiner folder's `guidance_scale` / `sampler` (refine alone) > the reference's 7.5 and
    DPM-Solver++ 2M SDE; the guidance is recorded in the metadata when not the reference's."""
    tiny = GenerationSettings.from_model_folder("tiny-shapes", prompt="p", refine=True)
    assert tiny.refine_guidance == 1.0 and tiny.metadata()["refine"]["guidance"] == 1.0
    assert tiny.refine_sampler == "dpmpp-2m" and tiny.metadata()["refine"]["sampler"] == "dpmpp-2m"
    assert tiny.refine_steps == default_steps("dpmpp-2m", "refine")
    alone = RefineSettings(model="tiny-shapes-refiner").resolved()
    assert (alone.guidance, alone.sampler) == (1.0, "dpmpp-2m")
    alone = RefineSettings(model="tiny-shapes-refiner", guidance=3.0, sampler="heun").resolved()
    assert (alone.guidance, alone.sampler, alone.steps) == (3.0, "heun", default_steps("heun", "refine"))
    explicit = GenerationSettings.from_model_folder("tiny-shapes", prompt="p", refine=True, refine_guidance=4.0,
                                                    refine_sampler="dpmpp-2m-sde")
    assert (explicit.refine_guidance, explicit.refine_sampler) == (4.0, "dpmpp-2m-sde")
    real = GenerationSettings.from_model_folder("owner/not-downloaded", prompt="p", refine=True, refiner_model="r")
    assert real.refine_guidance == reference.REFINE_GUIDANCE and "guidance" not in real.metadata()["refine"]
    assert real.refine_sampler == DEFAULT_SAMPLERS["refine"]
    real_alone = RefineSettings(model="owner/not-downloaded").resolved()
    assert (real_alone.guidance, real_alone.sampler) == (reference.REFINE_GUIDANCE, DEFAULT_SAMPLERS["refine"])


@pytest.mark.parametrize("change, needle", [
    ({"seed": 2**64}, "seed"), ({"seed": -1}, "seed"), ({"steps": 2000}, "steps"), ({"num_frames": 0}, "frames"),
    ({"num_frames": 100_000}, "frames"), ({"width": 100_000}, "width"), ({"height": 33}, "multiples of"),
    ({"guidance": "9"}, "guidance"), ({"guidance": float("nan")}, "guidance"), ({"sampler": "euler"}, "sampler"),
    ({"prompt": "bad \udcff byte"}, "UTF-8"), ({"prompt": "  "}, "prompt"), ({"timestep_spacing": "x"}, "spacing"),
    ({"refine": True, "refiner_model": None}, "refiner"), ({"refine": True, "refiner_model": "r", "strength": 0.0},
                                                           "strength"),
    ({"refine": True, "refiner_model": "r", "refine_guidance": -1.0}, "refine guidance"),
    ({"refine": True, "refiner_model": "r", "refine_guidance": float("inf")}, "refine guidance"),
    ({"model": None}, "model"), ({"runtime": DeviceSettings(dtype="fp8")}, "dtype"),
])
def test_bad_settings_are_refused_before_loading(change, needle, model_dir):
    with pytest.raises(InputError, match=needle):
        prepare(small(model_dir, **change))


@pytest.mark.parametrize("device, needle", [("foo", "unknown device"), ("cuda", "not available"),
                                            ("cuda:7", "not available")])
def test_absent_devices_are_refused(device, needle, model_dir):
    if torch.cuda.is_available() and device.startswith("cuda") and torch.cuda.device_count() > 7:
        pytest.skip("this machine has the GPU")
    with pytest.raises(InputError, match=needle):
        prepare(small(model_dir, runtime=DeviceSettings(device=device)))


def test_fp16_on_cpu_is_refused(model_dir):
    with pytest.raises(InputError, match="bf16"):
        prepare(small(model_dir, runtime=DeviceSettings(dtype="fp16")))


def test_parse_memory():
    assert parse_memory("24GB") == 24 * 10**9 and parse_memory("512MiB") == 512 * 2**20 and parse_memory("8e9") == 8e9
    for bad in ("lots", "-1GB", "1XB", ""):
        with pytest.raises(InputError):
            parse_memory(bad)


# ---- memory -------------------------------------------------------------------------------------------------------
def test_huge_sizes_are_refused_with_what_would_fit(model_dir):
    s = small(model_dir, width=8192, height=8192, num_frames=512)
    with pytest.raises(MemoryError_) as e:
        prepare(s)
    msg = str(e.value)
    assert "needs about" in msg and "free on cpu" in msg and "fits" in msg
    with pytest.raises(MemoryError_, match="allowed"):  # an explicit budget
        prepare(small(model_dir, runtime=DeviceSettings(max_memory=10**6)))
    prepare(small(model_dir, runtime=DeviceSettings(max_memory=10**10)))


def test_geometry_reads_headers_not_weights(model_dir):
    geo = model_geometry(model_dir, ("unet", "vae", "text_encoder", "image_encoder"))
    from i2vgen.pipelines.base import I2VGenPipeline

    pipe = I2VGenPipeline.from_pretrained(model_dir)
    for name in geo.params:
        assert geo.params[name] == sum(p.numel() for p in getattr(pipe, name).parameters()), name
    assert geo.downscale == pipe.vae.downscale
    real = model_geometry("owner/not-downloaded", ("unet", "vae", "text_encoder", "image_encoder"))
    assert real.params["unet"] == 1_420_469_224 and real.unet_c0 == 320
    # the estimate grows with frames and size, and offload keeps only the largest component
    a = estimate(real, frames=16, width=1280, height=704, dtype="fp16", offload=False, sequential_cfg=False)
    b = estimate(real, frames=16, width=1280, height=704, dtype="fp16", offload=True, sequential_cfg=True)
    assert b.weights < a.weights and b.unet * 2 == a.unet


@pytest.fixture(scope="module")
def wide_vae_model(tmp_path_factory):
    """The tiny model with a 256-wide VAE, so that the decode, not the UNet, bounds a run without CFG batching."""
    from diffusers import AutoencoderKL

    from i2vgen.models.vae import tiny_vae_config

    c = random_components(0)
    torch.manual_seed(0)
    c.vae = AutoencoderKL(**tiny_vae_config(block_out_channels=(256, 256)))
    return write_model_folder(c, tmp_path_factory.mktemp("w") / "wide")


def test_a_tight_budget_gets_sequential_cfg_then_vae_strips(wide_vae_model, picture):
    geo = model_geometry(wide_vae_model, ("unet", "vae", "text_encoder", "image_encoder"))

    def need(seq, frames, tile):
        return estimate(geo, frames=2, width=64, height=64, dtype="fp32", offload=False, sequential_cfg=seq,
                        decode_frames=frames, tile=tile).total

    def settings(**kw):
        return small(wide_vae_model, width=64, height=64, **kw)

    def planned(budget):
        p = prepare(settings(runtime=DeviceSettings(max_memory=budget))).runtime.plan
        return p.sequential_cfg, p.offload, p.decode_chunk, p.vae_tile

    assert need(False, 2, None) > need(False, 1, None) > need(True, 1, None) > need(True, 1, 8)
    assert planned(need(False, 2, None)) == (False, False, 2, None)  # nothing to save
    assert planned(need(False, 1, None)) == (False, False, 1, None)  # one frame per VAE call
    assert planned(need(True, 1, None)) == (True, False, 1, None)  # then the UNet's two branches one by one
    assert planned(need(True, 1, 8)) == (True, False, 1, 8)  # then the VAE in strips; never offload on the CPU
    with pytest.raises(MemoryError_) as e:
        planned(need(True, 1, 8) - 1)
    assert "\n" not in str(e.value) and "even with sequential CFG" in str(e.value) and "allowed" in str(e.value)
    # the plan is applied: the tiled, sequential run gives the frames of the plain one (both exact)
    tight = prepare(settings(runtime=DeviceSettings(max_memory=need(True, 1, 8))), image=picture)
    plain = prepare(settings(), image=picture)
    pipe = load_generation_pipeline(plain)
    a, b = generate(pipe, plain, str(picture)), generate(pipe, tight, str(picture))
    assert b.metadata["memory_plan"]["vae_tile"] == 8 and a.metadata["memory_plan"]["vae_tile"] is None
    np.testing.assert_allclose(b.frames, a.frames, rtol=0, atol=1e-4)


def test_the_planner_order_keeps_the_users_choices_and_offloads_last():
    def need(*, sequential_cfg, offload, decode_frames, tile):  # the weights dominate: only offload helps much
        weights = 100 if offload else 1000
        return MemoryEstimate(weights, 50 if sequential_cfg else 100, 10 * decode_frames // (2 if tile else 1), 0)

    p = plan(need, 10**6, where="free", sequential_cfg=True)
    assert (p.sequential_cfg, p.offload, p.decode_chunk, p.vae_tile) == (True, False, 2, None)  # the user's flag
    p = plan(need, 1112, where="free")  # 1000 + 100 + 10
    assert (p.sequential_cfg, p.offload, p.decode_chunk, p.vae_tile) == (False, False, 1, None)
    p = plan(need, 1065, where="free")  # 1000 + 50 + 10: sequential CFG only after every VAE saving
    assert (p.sequential_cfg, p.offload, p.decode_chunk, p.vae_tile) == (True, False, 1, None)
    p = plan(need, 500, where="free")
    assert (p.sequential_cfg, p.offload, p.decode_chunk, p.vae_tile) == (False, True, 2, None)
    with pytest.raises(MemoryError_, match="needs about"):
        plan(need, 500, where="free", can_offload=False)  # the CPU: offload frees nothing
    assert "memory plan: batched CFG, VAE 2 frames at a time, model CPU offload" in p.describe()


def test_the_cli_prints_the_plan(wide_vae_model, picture, tmp_path, capsys):
    from i2vgen.cli import main

    argv = ["generate", "--image", str(picture), "--prompt", "a cat", "--model", str(wide_vae_model), "--frames", "2",
            "--width", "32", "--height", "32", "--steps", "1", "--seed", "1", "-q"]
    assert main([*argv, "-o", str(tmp_path / "a.gif"), "--max-memory", "10GB"]) == 0
    assert "i2vgen: memory plan: batched CFG, VAE 2 frames at a time, no offload: about" in capsys.readouterr().err
    assert main([*argv, "-o", str(tmp_path / "b.gif"), "--max-memory", "1MB"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("i2vgen: error: this run needs about") and "--max-memory" in err[0]


# ---- outputs ------------------------------------------------------------------------------------------------------
def test_existing_outputs_are_never_replaced_without_overwrite(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "keep").mkdir()
    (tmp_path / "keep" / "precious.txt").write_text("data")
    (tmp_path / "old.mp4").write_bytes(b"video")
    with pytest.raises(OutputError, match="non-empty folder"):
        check_output(tmp_path / "keep")
    with pytest.raises(OutputError, match="--overwrite"):
        check_output(tmp_path / "old.mp4")
    assert check_output(tmp_path / "old.mp4", overwrite=True) == "mp4"
    with pytest.raises(OutputError, match="current"):
        check_output(tmp_path, overwrite=True)
    with pytest.raises(OutputError, match="current"):
        check_output(".", overwrite=True)
    (tmp_path / "empty").mkdir()
    assert check_output(tmp_path / "empty") == "png"  # an empty folder may receive PNG frames
    assert (tmp_path / "keep" / "precious.txt").read_text() == "data" and (tmp_path / "old.mp4").exists()


def test_an_output_never_replaces_an_input(tmp_path):
    video = tmp_path / "in.mp4"
    video.write_bytes(b"x")
    with pytest.raises(OutputError, match="input"):
        check_output(video, overwrite=True, inputs=[video])
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "in.png").write_bytes(b"x")
    with pytest.raises(OutputError, match="input"):
        check_output(tmp_path / "d", overwrite=True, inputs=[tmp_path / "d" / "in.png"])


def test_unwritable_or_full_locations_fail_before_sampling(tmp_path):
    with pytest.raises(OutputError, match="cannot"):
        check_output("/proc/i2vgen-test/out.mp4")  # a read-only file system
    with pytest.raises(OutputError, match="disk space"):
        check_output(tmp_path / "o.mp4", size_bytes=10**18)
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="is a file"):
        check_output(tmp_path / "file" / "o.mp4")


def test_stale_temporaries_of_our_naming_are_cleaned(tmp_path):
    out = tmp_path / "v.mp4"
    stale, fresh = tmp_path / ".v.mp4.tmp-abc.mp4", tmp_path / ".v.mp4.tmp-def.mp4"
    old_dir, other = tmp_path / ".v.mp4.old-xyz", tmp_path / ".w.mp4.tmp-abc.mp4"
    for p in (stale, fresh, other):
        p.write_bytes(b"x")
    old_dir.mkdir()
    long_ago = time.time() - 3600
    for p in (stale, old_dir, other):
        os.utime(p, (long_ago, long_ago))
    removed = clean_stale_temporaries(out)
    assert sorted(removed) == sorted([stale, old_dir])
    assert fresh.exists() and other.exists()


def test_write_output_refuses_a_file_that_appeared(tmp_path):
    frames = np.zeros((2, 8, 8, 3), np.float32)
    out = write_output(frames, tmp_path / "a.gif", fps=4, metadata={"x": 1})
    assert out.exists() and (tmp_path / "a.gif.json").exists()
    with pytest.raises(OutputError, match="appeared"):
        write_output(frames, tmp_path / "a.gif", fps=4, metadata={"x": 2})
    write_output(frames, tmp_path / "a.gif", fps=4, metadata={"x": 3}, overwrite=True)


# ---- running ------------------------------------------------------------------------------------------------------
def test_generate_reports_steps_and_cancels_within_one_step(model_dir, picture):
    s = prepare(small(model_dir, steps=4), image=picture)
    pipe = load_generation_pipeline(s)
    seen = []
    result = generate(pipe, s, str(picture), on_step=lambda stage, i, n, x0: seen.append((stage, i, n)))
    assert seen == [("base", i, 4) for i in range(1, 5)]
    assert result.frames.shape == (2, 32, 32, 3) and result.metadata["seed"] == 1
    again = generate(pipe, s, str(picture))
    np.testing.assert_array_equal(result.frames, again.frames)  # the settings' seed decides the video
    cancel, steps = threading.Event(), []

    def on_step(stage, i, n, x0):
        steps.append(i)
        if i == 2:
            cancel.set()

    with pytest.raises(Cancelled, match="step 2 of 4"):
        generate(pipe, s, str(picture), on_step=on_step, cancel=cancel)
    assert steps == [1, 2]


def test_the_cascade_refines_with_the_settings_refiner_guidance(picture):
    """The refiner runs one conditional pass per step at the tiny folder's guidance 1.0 and a guided pair (one
    batched forward of two) at the reference's 7.5."""
    batches = {}
    for guidance in (None, reference.REFINE_GUIDANCE):
        s = prepare(GenerationSettings(prompt="a red circle moves left", model="tiny-shapes", refine=True, steps=2,
                                       refine_steps=2, refine_guidance=guidance, seed=0), image=picture)
        pipe = load_generation_pipeline(s)
        seen = batches[s.refine_guidance] = []
        hook = pipe.refiner.unet.register_forward_pre_hook(
            lambda m, args, kw, seen=seen: seen.append(args[0].shape[0]), with_kwargs=True)
        try:
            generate(pipe, s, str(picture))
        finally:
            hook.remove()
    assert batches == {1.0: [1, 1], reference.REFINE_GUIDANCE: [2, 2]}


# ---- the Python API's one-line errors -----------------------------------------------------------------------------
def test_python_api_bad_arguments(model_dir, picture):
    from i2vgen.pipelines.base import I2VGenPipeline, load_pipeline

    pipe = I2VGenPipeline.from_pretrained(model_dir)
    kw = {"num_frames": 2, "width": 32, "height": 32, "num_inference_steps": 1}
    with pytest.raises(InputError, match="torch.Generator"):
        pipe(str(picture), "p", generator=0, **kw)
    with pytest.raises(InputError, match="guidance_scale"):
        pipe(str(picture), "p", guidance_scale="9", **kw)
    with pytest.raises(CheckpointError, match="string"):
        load_pipeline(None)
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="not available"):
            pipe.to("cuda")


# ---- dtype "auto" and threads ---------------------------------------------------------------------------------------
def test_auto_dtype_is_bf16_only_for_wide_unets_on_cpus_with_native_bf16(model_dir, picture):
    from i2vgen.app.run import AUTO_BF16_MIN_C0, auto_dtype

    native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    assert auto_dtype("cpu", 320) == ("bf16" if native else "fp32")  # the real UNet's width
    assert auto_dtype("cpu", AUTO_BF16_MIN_C0 - 1) == "fp32"
    assert auto_dtype("cuda:0", 320) == "fp32"
    s = prepare(small(model_dir), image=picture)  # the default is auto; a tiny UNet gets fp32
    assert s.runtime.dtype == "fp32"
    assert s.output_key()["dtype"] == "fp32"  # the resume key records what ran


def test_threads_are_checked_and_applied(model_dir, picture):
    with pytest.raises(InputError, match="threads"):
        prepare(small(model_dir, runtime=DeviceSettings(threads=0)))
    before = torch.get_num_threads()
    try:
        s = prepare(small(model_dir, runtime=DeviceSettings(threads=1)), image=picture)
        load_generation_pipeline(s)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
