"""The training quick start of README.md and docs/training.md, run as written.

Every fenced block that follows a `<!-- quickstart-train` comment is run command by command through the installed
`i2vgen` script in a fresh folder, with two changes only: the `--data` list becomes three tiny clips made here, and
every `i2vgen train` command gets `--set max_steps=2`. Also: a UNet whose context width differs from the
components' is refused with one error line before the run folder is made.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from i2vgen.io import write_video

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"<!-- quickstart-train[^>]*-->\s*```\w*\n(.*?)```", re.DOTALL)
MAX_STEPS = 2


def i2vgen_script() -> str:
    """The `i2vgen` console script of the Python running the tests (its venv), else the one on PATH."""
    found = shutil.which("i2vgen", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]))
    if found is None:
        pytest.fail("no `i2vgen` command installed: pip install -e .")
    return found


def quickstart_commands(doc: Path) -> list[list[str]]:
    """The commands (argv lists) of `doc`'s quick-start blocks; `pip install` lines are left out (the package under
    test is installed already), `a && b` gives two commands."""
    commands = []
    for block in BLOCK.findall(doc.read_text(encoding="utf-8")):
        for line in block.splitlines():
            words = shlex.split(line, comments=True)
            if not words or words[:2] == ["pip", "install"]:
                continue
            while "&&" in words:
                cut = words.index("&&")
                commands.append(words[:cut])
                words = words[cut + 1:]
            commands.append(words)
    return commands


def write_clips(folder: Path) -> Path:
    """Three 8-frame 32x32 mp4 clips of a square moving right and their `video_path|||caption` list."""
    folder.mkdir(parents=True)
    lines = []
    for i, colour in enumerate([(230, 40, 40), (40, 200, 60), (50, 80, 240)]):
        frames = np.full((8, 32, 32, 3), 20, np.uint8)
        for k in range(8):
            frames[k, 10:20, 2 + 3 * k:12 + 3 * k] = colour
        write_video(frames, folder / f"clip{i}.mp4", fps=8)
        lines.append(f"clip{i}.mp4|||a {['red', 'green', 'blue'][i]} square moves right")
    (folder / "clips.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder / "clips.txt"


def run_i2vgen(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return subprocess.run([i2vgen_script(), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
                          check=False)


@pytest.mark.parametrize("doc", ["README.md", "docs/training.md"])
def test_the_training_quick_start_runs_as_written(tmp_path, doc):
    commands = quickstart_commands(ROOT / doc)
    assert [c[:3] for c in commands] == [["i2vgen", "train", "config"], ["i2vgen", "train", "base"]], commands
    clips = write_clips(tmp_path / "data")
    work = tmp_path / "work"
    work.mkdir()
    for command in commands:
        args = command[1:]
        if "--data" in args:
            args[args.index("--data") + 1] = str(clips)
        result = run_i2vgen([*args, "--set", f"max_steps={MAX_STEPS}"], work)
        assert result.returncode == 0, f"{shlex.join(command)} failed:\n{result.stderr[-3000:]}"
    checkpoints = sorted(work.glob("runs/*/checkpoints/step-*"))
    assert [c.name for c in checkpoints] == [f"step-{MAX_STEPS:08d}"], checkpoints
    assert (checkpoints[0] / "unet" / "config.json").is_file()
    metrics = (checkpoints[0].parents[1] / "metrics.csv").read_text().splitlines()
    assert len(metrics) == 1 + MAX_STEPS  # header and one row per step


def test_a_unet_of_another_context_width_is_refused_in_one_line_before_training(tmp_path):
    clips = write_clips(tmp_path / "data")
    # The 16-wide test UNet against the 32-wide tiny-shapes encoders that the `tiny` preset names.
    assert run_i2vgen(["train", "config", "tiny", "-o", "cfg.yaml", "--set", "model.unet_preset=tiny"],
                      tmp_path).returncode == 0
    result = run_i2vgen(["train", "base", "--config", "cfg.yaml", "--data", str(clips)], tmp_path)
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0 and len(lines) == 1, result.stderr
    assert lines[0].startswith("i2vgen: error: model.unet_preset 'tiny' has context width 16, but the text "
                               "encoder of model.components 'tiny-shapes' has width 32"), lines[0]
    assert not (tmp_path / "runs").exists()  # refused before the run folder was made


def test_the_context_width_of_a_unet_folder_is_checked_from_its_config(tmp_path):
    from i2vgen.errors import InputError
    from i2vgen.models.configs import unet_preset
    from i2vgen.models.tiny import random_components, write_model_folder
    from i2vgen.train.config import preset
    from i2vgen.train.trainer import check_context_width

    narrow = write_model_folder(random_components(0, unet_preset("tiny")), tmp_path / "narrow")  # 16 wide
    cfg = preset("tiny").replace(**{"model.components": str(narrow), "model.unet": "tiny-shapes"})
    with pytest.raises(InputError, match="model.unet 'tiny-shapes' has context width 32, but the text encoder"):
        check_context_width(cfg, None)
    check_context_width(cfg.replace(**{"model.unet": None, "model.unet_preset": "tiny"}), None)  # these agree
