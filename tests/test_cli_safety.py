"""The command line never destroys data and never crashes on ordinary input: existing outputs and inputs are kept,
settings are refused in one line before any model loads, batch lists resume only with the settings they were made
with, and `i2vgen --help` imports no torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from i2vgen.cli import main
from i2vgen.io import write_video
from i2vgen.models.tiny import random_components, write_model_folder

FAST = ["--frames", "2", "--height", "32", "--width", "32", "--steps", "1", "--seed", "1", "-q"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return write_model_folder(random_components(0), tmp_path_factory.mktemp("m") / "tiny")


@pytest.fixture
def picture(tmp_path):
    path = tmp_path / "in.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(path)
    return path


def _gen(model_dir, picture, out, *extra) -> int:
    return main(["generate", "--image", str(picture), "--prompt", "a cat", "-o", str(out), "--model", str(model_dir),
                 *FAST, *extra])


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) >= 1 and err[-1].startswith("i2vgen: error:") and "Traceback" not in "\n".join(err)
    return err[-1]


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ---- outputs that would destroy data ------------------------------------------------------------------------------
def test_an_existing_folder_is_never_replaced(tmp_path, model_dir, picture, capsys):
    folder = tmp_path / "holiday"
    folder.mkdir()
    (folder / "photo.jpg").write_bytes(b"irreplaceable")
    before = _tree(tmp_path)
    assert _gen(model_dir, picture, folder) == 1
    assert "--overwrite" in _one_error_line(capsys)
    assert _tree(tmp_path) == before  # nothing deleted, nothing added


def test_the_working_folder_is_never_the_output(tmp_path, model_dir, picture, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("keep me")
    before = _tree(tmp_path)
    for out in (str(tmp_path), ".", str(tmp_path.parent)):
        assert _gen(model_dir, picture, out, "--overwrite") == 1
        assert "current" in _one_error_line(capsys)
    assert _tree(tmp_path) == before


def test_an_existing_file_needs_overwrite_and_is_then_replaced_whole(tmp_path, model_dir, picture, capsys):
    out = tmp_path / "v.mp4"
    assert _gen(model_dir, picture, out) == 0
    first = out.read_bytes()
    assert _gen(model_dir, picture, out, "--seed", "2") == 1
    assert "exists" in _one_error_line(capsys) and out.read_bytes() == first
    assert _gen(model_dir, picture, out, "--seed", "2", "--overwrite") == 0
    assert out.read_bytes() != first and json.loads((tmp_path / "v.mp4.json").read_text())["seed"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.png", "v.mp4", "v.mp4.json"]


def test_an_input_is_never_the_output(tmp_path, model_dir, picture, capsys):
    before = picture.read_bytes()
    assert _gen(model_dir, picture, picture.with_suffix(".gif")) == 0  # a different name is fine
    rc = main(["refine", "--video", str(picture.with_suffix(".gif")), "-o", str(picture.with_suffix(".gif")),
               "--model", "tiny-shapes-refiner", "--overwrite", "-q"])
    assert rc == 1 and "input" in _one_error_line(capsys)
    assert picture.read_bytes() == before


def test_stale_temporaries_of_a_killed_run_are_cleaned_on_the_next(tmp_path, model_dir, picture):
    stale = tmp_path / ".frames.tmp-abcd1234"
    stale.mkdir()
    (stale / "frame_00000.png").write_bytes(b"half")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    assert _gen(model_dir, picture, tmp_path / "frames") == 0
    assert not stale.exists() and (tmp_path / "frames").is_dir()


def test_an_unwritable_location_fails_before_sampling(tmp_path, model_dir, picture, capsys, monkeypatch):
    from i2vgen.app import run as app_run

    monkeypatch.setattr(app_run, "load_generation_pipeline", lambda s: pytest.fail("loaded a model"))
    assert _gen(model_dir, picture, "/proc/i2vgen/v.mp4") == 1
    assert "cannot" in _one_error_line(capsys)


# ---- ordinary input that used to end in a traceback ---------------------------------------------------------------
@pytest.mark.parametrize("extra, needle", [
    (["--seed", "18446744073709551616"], "seed"), (["--seed", "-5"], "seed"),
    (["--device", "cuda"], "not available"), (["--device", "foo"], "unknown device"),
    (["--steps", "2000"], "steps"), (["--frames", "100000"], "frames"),
    (["--width", "100000", "--height", "100000"], "width"),
    (["--width", "8192", "--height", "8192", "--frames", "1024"], "fits"),
    (["--max-memory", "1MB"], "--max-memory"), (["--max-memory", "plenty"], "memory amount"),
    (["--dtype", "fp16"], "bf16"), (["--sampler", "unipc", "--timestep-spacing", "leading", "--guidance", "nan"],
                                    "guidance"),
])
def test_bad_settings_fail_in_one_line_before_loading(extra, needle, tmp_path, model_dir, picture, capsys,
                                                      monkeypatch):
    if extra[:2] == ["--device", "cuda"]:
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has a GPU")
    from i2vgen.app import run as app_run

    monkeypatch.setattr(app_run, "load_generation_pipeline", lambda s: pytest.fail("loaded a model"))
    before = _tree(tmp_path)
    assert _gen(model_dir, picture, tmp_path / "o.mp4", *extra) == 1
    assert needle in _one_error_line(capsys)
    assert _tree(tmp_path) == before


def test_a_non_utf8_prompt_is_one_line(tmp_path, model_dir, picture):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LC_ALL": "C.UTF-8"}
    argv = [sys.executable.encode(), b"-m", b"i2vgen", b"generate", b"--image", bytes(picture), b"--prompt",
            b"caf\xe9 \xff", b"-o", bytes(tmp_path / "o.mp4"), b"--model", bytes(model_dir), *map(str.encode, FAST)]
    out = subprocess.run(argv, capture_output=True, env=env, timeout=300, check=False)
    err = out.stderr.decode("utf-8", "replace").strip().splitlines()
    assert out.returncode == 1 and err[-1].startswith("i2vgen: error:") and "UTF-8" in err[-1]
    assert not (tmp_path / "o.mp4").exists()


def test_a_huge_video_is_refused_from_its_header(tmp_path, capsys, monkeypatch):
    from i2vgen.app import run as app_run

    clip = tmp_path / "big.mp4"
    write_video(np.zeros((4, 64, 64, 3), np.uint8), clip, fps=4)
    monkeypatch.setattr(app_run, "MAX_VIDEO_PIXELS", 64 * 64 * 3)  # as a 4096x4096x200 file against the real limit
    monkeypatch.setattr("i2vgen.pipelines.refine.load_video", lambda *a, **k: pytest.fail("decoded the video"))
    rc = main(["refine", "--video", str(clip), "-o", str(tmp_path / "r.mp4"), "--model", "tiny-shapes-refiner",
               "-q"])
    assert rc == 1 and "--max-frames 3" in _one_error_line(capsys)
    assert not (tmp_path / "r.mp4").exists()


# ---- batch lists --------------------------------------------------------------------------------------------------
def test_batch_list_resume_key_seeds_bom_and_crlf(tmp_path, model_dir, picture, capsys):
    (tmp_path / "b.png").write_bytes(picture.read_bytes())
    listing = tmp_path / "list.txt"
    listing.write_bytes("\ufeffin.png|||a cat\r\nb.png|||a cat\r\nin.png|||a dog|||7\r\n".encode())
    out = tmp_path / "out"
    args = ["generate", "--list", str(listing), "-o", str(out), "--model", str(model_dir), *FAST]
    assert main(args) == 0
    names = sorted(p.name for p in out.glob("*.mp4"))
    assert names == ["00000_in.mp4", "00001_b.mp4", "00002_in.mp4"]
    seeds = [json.loads((out / f"{n}.json").read_text())["seed"] for n in names]
    assert seeds == [1, 2, 7]  # --seed 1 + index, or the list's own column
    frames = {n: (out / n).read_bytes() for n in names}
    assert frames["00000_in.mp4"] != frames["00001_b.mp4"]  # same picture content, other seed
    capsys.readouterr()
    assert main(args) == 0 and "skipping 3" in capsys.readouterr().err  # same settings: resumed
    assert main([*args, "--steps", "2"]) == 1  # other settings: refused, nothing touched
    assert "other settings" in _one_error_line(capsys)
    assert {n: (out / n).read_bytes() for n in names} == frames
    assert main([*args, "--steps", "2", "--force"]) == 0
    assert all(json.loads((out / f"{n}.json").read_text())["steps"] == 2 for n in names)


# ---- layering -----------------------------------------------------------------------------------------------------
def test_help_imports_no_torch():
    code = "import sys\nfrom i2vgen.cli import build_parser\nbuild_parser().format_help()\nprint('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert out.stdout.strip().splitlines()[-1] == "False", out.stderr
    ran = subprocess.run([sys.executable, "-m", "i2vgen", "--help"], capture_output=True, text=True, timeout=120,
                         check=False)
    assert ran.returncode == 0 and "generate" in ran.stdout
