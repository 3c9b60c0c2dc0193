"""The `i2vgen` command: entry point, generate (single and batch), convert, and one-line errors on bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import torch

from i2vgen.cli import main
from i2vgen.io import probe_video, read_metadata
from i2vgen.models.tiny import random_components, write_model_folder

FAST = ["--frames", "3", "--height", "32", "--width", "32", "--steps", "2", "--seed", "1", "-q"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return write_model_folder(random_components(0), tmp_path_factory.mktemp("m") / "tiny")


@pytest.fixture
def image(real_data_dir):
    return f"{real_data_dir}/images/img_0001.jpg"


def _err(capsys) -> str:
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_console_script_is_installed_and_answers_help():
    (ep,) = [e for e in entry_points(group="console_scripts") if e.name == "i2vgen"]
    assert ep.load() is main
    out = subprocess.run([sys.executable, "-m", "i2vgen.cli", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "generate" in out.stdout and "convert" in out.stdout


def test_generate_writes_mp4_with_metadata_and_sidecar(tmp_path, model_dir, image, capsys):
    out = tmp_path / "clip.mp4"
    rc = main(["generate", "--image", image, "--prompt", "a cat", "--output", str(out), "--model", str(model_dir),
               *FAST])
    assert rc == 0
    info = probe_video(out)
    assert (info.num_frames, info.width, info.height) == (3, 32, 32)
    meta = json.loads((tmp_path / "clip.mp4.json").read_text())
    assert meta["prompt"] == "a cat" and meta["seed"] == 1 and meta["sampler"] == "ddim" and meta["steps"] == 2
    assert read_metadata(out)["prompt"] == "a cat"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4", "clip.mp4.json"]  # no temporary litter


def test_same_seed_same_video(tmp_path, model_dir, image):
    from i2vgen.io import read_video

    outs = []
    for name in ("a", "b"):
        assert main(["generate", "--image", image, "--prompt", "x", "-o", str(tmp_path / name), "--model",
                     str(model_dir), *FAST]) == 0
        outs.append(read_video(tmp_path / name)[0])
    assert (outs[0] == outs[1]).all()


def test_batch_list_is_resumable(tmp_path, model_dir, real_data_dir, capsys):
    shutil.copy(f"{real_data_dir}/images/img_0001.jpg", tmp_path / "a.jpg")
    shutil.copy(f"{real_data_dir}/images/img_0003.jpg", tmp_path / "b.jpg")
    (tmp_path / "list.txt").write_text("a.jpg|||a photo\nb.jpg|||another photo\n")
    out = tmp_path / "out"
    args = ["generate", "--list", str(tmp_path / "list.txt"), "-o", str(out), "--model", str(model_dir), *FAST]
    assert main(args) == 0
    videos = sorted(p.name for p in out.glob("*.mp4"))
    assert videos == ["00000_a.mp4", "00001_b.mp4"]
    stamp = (out / videos[0]).stat().st_mtime_ns
    capsys.readouterr()
    assert main(args) == 0
    assert "skipping 2 finished" in capsys.readouterr().err
    assert (out / videos[0]).stat().st_mtime_ns == stamp


def test_batch_continues_past_a_bad_item(tmp_path, model_dir, real_data_dir, capsys):
    shutil.copy(f"{real_data_dir}/images/img_0001.jpg", tmp_path / "a.jpg")
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    (tmp_path / "list.txt").write_text("bad.jpg|||x\na.jpg|||y\n")
    rc = main(["generate", "--list", str(tmp_path / "list.txt"), "-o", str(tmp_path / "o"), "--model",
               str(model_dir), *FAST])
    assert rc == 1
    assert [p.name for p in (tmp_path / "o").glob("*.mp4")] == ["00001_a.mp4"]
    assert "1 of 2 item(s) failed" in capsys.readouterr().err


def _bad_inputs(tmp_path: Path, image: str) -> dict[str, tuple[list[str], str]]:
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.png").write_text("hello, I am not a picture")
    (tmp_path / "trunc.jpg").write_bytes(Path(image).read_bytes()[:300])
    return {
        "missing": (["--image", str(tmp_path / "nope.png")], "nope.png"),
        "zero-byte": (["--image", str(tmp_path / "empty.png")], "empty"),
        "not-an-image": (["--image", str(tmp_path / "text.png")], "text.png"),
        "truncated": (["--image", str(tmp_path / "trunc.jpg")], "trunc.jpg"),
        "bad-extension": (["--image", image, "--output", str(tmp_path / "x.avi")], "avi"),
        "frames-0": (["--image", image, "--frames", "0"], "frames"),
        "steps-0": (["--image", image, "--steps", "0"], "steps"),
        "negative-guidance": (["--image", image, "--guidance", "-1"], "guidance"),
        "size-not-multiple": (["--image", image, "--height", "33"], "multiples"),
    }


@pytest.mark.parametrize("case", ["missing", "zero-byte", "not-an-image", "truncated", "bad-extension", "frames-0",
                                  "steps-0", "negative-guidance", "size-not-multiple"])
def test_bad_input_one_line_error_nothing_written(case, tmp_path, model_dir, image, capsys):
    args, needle = _bad_inputs(tmp_path, image)[case]
    out = tmp_path / "o.mp4"
    base = ["generate", "--prompt", "p", "--output", str(out), "--model", str(model_dir), "--seed", "0", "-q",
            "--frames", "2", "--height", "32", "--width", "32", "--steps", "1"]
    # later flags override the defaults above
    rc = main(base + args)
    err = _err(capsys)
    assert rc != 0
    assert err.startswith("i2vgen: error:") and needle in err
    assert "Traceback" not in err
    assert not out.exists() and not list(tmp_path.glob("*.tmp*")) and not list(tmp_path.glob(".*"))


def test_model_folder_with_missing_component(tmp_path, model_dir, image, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken)
    shutil.rmtree(broken / "image_encoder")
    rc = main(["generate", "--image", image, "--prompt", "p", "-o", str(tmp_path / "o.mp4"), "--model", str(broken),
               *FAST])
    assert rc == 1 and "image_encoder" in _err(capsys)
    assert not (tmp_path / "o.mp4").exists()


def test_unknown_sampler_is_refused(tmp_path, image, capsys):
    with pytest.raises(SystemExit) as e:
        main(["generate", "--image", image, "--prompt", "p", "-o", str(tmp_path / "o.mp4"), "--sampler", "euler"])
    assert e.value.code == 2 and "euler" in capsys.readouterr().err


def test_convert_between_all_three_formats(tmp_path, model_dir, capsys):
    from i2vgen.models.loading import load_unet

    ref = load_unet(model_dir / "unet")
    for p in ref.parameters():  # randomise: default-initialised layers would hide conversion bugs
        torch.nn.init.normal_(p, std=0.1)
    from i2vgen.models.loading import save_unet

    save_unet(ref, tmp_path / "src", format="diffusers")
    assert main(["convert", str(tmp_path / "src"), str(tmp_path / "v.pth"), "--to", "vgen"]) == 0
    assert main(["convert", str(tmp_path / "v.pth"), str(tmp_path / "ours"), "--to", "i2vgen"]) == 0
    assert main(["convert", str(tmp_path / "ours"), str(tmp_path / "diff"), "--to", "diffusers"]) == 0
    for p in ("v.pth", "ours", "diff"):
        m = load_unet(tmp_path / p, config=ref.config if p == "v.pth" else None)
        for (k, a), (_, b) in zip(ref.state_dict().items(), m.state_dict().items()):
            assert torch.equal(a, b), (p, k)
    assert main(["convert", str(tmp_path / "src"), str(tmp_path / "diff"), "--to", "diffusers"]) == 1
    assert "exists" in _err(capsys)


def test_generate_with_lora_adapter(tmp_path, model_dir, image, capsys):
    from i2vgen.io import read_video
    from i2vgen.models.loading import load_unet
    from i2vgen.train.config import LoRAConfig
    from i2vgen.models.lora import add_lora, save_lora

    unet = load_unet(model_dir / "unet")
    with torch.no_grad():
        for p in add_lora(unet, LoRAConfig(rank=2, alpha=2)):
            p.normal_(0, 0.5)  # stands in for training
    save_lora(unet, tmp_path / "adapter")
    runs = {}
    for name, extra in (("plain", []), ("lora", ["--lora", str(tmp_path / "adapter")]),
                        ("zero", ["--lora", f"{tmp_path / 'adapter'}:0"])):
        assert main(["generate", "--image", image, "--prompt", "x", "-o", str(tmp_path / name), "--model",
                     str(model_dir), *FAST, *extra]) == 0
        runs[name] = read_video(tmp_path / name)[0].astype(int)
    assert (runs["plain"] == runs["zero"]).all()
    assert abs(runs["plain"] - runs["lora"]).max() > 0
    assert main(["generate", "--image", image, "--prompt", "x", "-o", str(tmp_path / "o.mp4"), "--model",
                 str(model_dir), *FAST, "--lora", str(tmp_path / "missing")]) == 1
    assert "LoRA adapter not found" in _err(capsys)
