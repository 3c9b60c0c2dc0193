"""Exact resume: a training process killed with SIGKILL after a checkpoint, then resumed with `--resume`, logs the
same per-step losses and ends with the same weights as an uninterrupted run, bit for bit."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time

from safetensors.torch import load_file
from test_train import read_metrics, tiny_config

from i2vgen.train.checkpoint import list_checkpoints
from i2vgen.cli import main
from i2vgen.train.trainer import train


def _run_cli(argv: list[str]) -> None:  # in a forked child process
    os._exit(main(argv))


def test_sigkill_then_resume_gives_the_same_losses_and_weights(tmp_path_factory, tmp_path):
    # 12 optimizer steps of 2 micro-batches over 6 clips: 4 epochs, so resuming also crosses epoch boundaries.
    cfg = tiny_config(tmp_path_factory, tmp_path / "a", max_steps=12, grad_accum=2,
                      **{"checkpoint.every": 3, "checkpoint.keep_last": 0})
    train(cfg)  # A: uninterrupted, in this process

    # B: the same run in a child process, killed two steps after its first checkpoint (step 3), so it has logged
    # steps the resumed run must redo.
    cfg.replace(output_dir=str(tmp_path / "b")).save_yaml(tmp_path / "b.yaml")
    child = multiprocessing.get_context("fork").Process(
        target=_run_cli, args=(["train", "base", "--config", str(tmp_path / "b.yaml")],))
    child.start()
    metrics = tmp_path / "b" / "metrics.csv"
    deadline = time.monotonic() + 120
    while child.is_alive() and time.monotonic() < deadline:
        if metrics.is_file() and len(metrics.read_text().splitlines()) >= 1 + 5:  # header + 5 steps
            break
        time.sleep(0.002)
    os.kill(child.pid, signal.SIGKILL)
    child.join()
    assert child.exitcode == -signal.SIGKILL
    logged_before_kill = len(read_metrics(tmp_path / "b"))
    killed_at = [p.name for p in list_checkpoints(tmp_path / "b")]
    assert killed_at and killed_at[-1] != "step-00000012"  # it really stopped part way

    # Resume B from its run folder: latest complete checkpoint, the configuration saved with it.
    assert main(["train", "base", "--resume", str(tmp_path / "b")]) == 0

    a, b = read_metrics(tmp_path / "a"), read_metrics(tmp_path / "b")
    assert [r["step"] for r in b] == [str(s) for s in range(1, 13)]
    assert [r["loss"] for r in a] == [r["loss"] for r in b]  # repr of the float: bit-exact
    assert [r["lr"] for r in a] == [r["lr"] for r in b] and [r["epoch"] for r in a] == [r["epoch"] for r in b]
    for part in ("unet", "unet_ema"):
        wa = load_file(str(tmp_path / "a" / "checkpoints" / "step-00000012" / part / "model.safetensors"))
        wb = load_file(str(tmp_path / "b" / "checkpoints" / "step-00000012" / part / "model.safetensors"))
        assert wa.keys() == wb.keys() and all(wa[k].equal(wb[k]) for k in wa), part
    print(f"killed after {killed_at[-1]} with {logged_before_kill} steps logged; resumed; 12 losses equal bit for "
          f"bit, e.g. step 12: {b[-1]['loss']}")
