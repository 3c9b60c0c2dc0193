"""benchmarks/bench_gpu.py (issue 13 item 3) at tiny size on the CPU: the rows it writes, its configuration names,
and its FLOP count of the real UNet."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
ROW_FIELDS = {"stage", "config", "size", "width", "height", "frames", "steps", "dtype", "sdpa", "compile",
              "channels_last", "offload", "tiled", "window", "device", "device_name", "torch", "status",
              "unet_params", "tflop_per_step", "flops_counted_on", "windows", "warmup_s", "peak_gib", "peak_kind",
              "steps_run", "sec_per_step", "total_s", "total_s_at_steps", "extrapolated", "encode_s", "decode_s",
              "tflops_per_s", "finite"}


@pytest.fixture
def bench(monkeypatch):  # noqa: ANN001, ANN201
    monkeypatch.syspath_prepend(str(BENCH))
    return importlib.import_module("bench_gpu")


def test_tiny_cpu_run_writes_a_row_per_configuration(tmp_path, bench, capsys):
    out = tmp_path / "rows.jsonl"
    cmd = [sys.executable, str(BENCH / "bench_gpu.py"), "--size", "tiny", "--device", "cpu", "--stage", "base",
           "refine", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    expected = [("base", c) for c in bench.DEFAULT_CONFIGS["base", "cpu"]]
    expected += [("refine", c) for c in bench.DEFAULT_CONFIGS["refine", "cpu"]]
    assert [(r["stage"], r["config"]) for r in rows] == [(s, bench.Config.parse(c).name) for s, c in expected]
    tiling = bench.vae_tiling_available()
    for r in rows:
        if r["tiled"] and not tiling:
            assert r["status"].startswith("skipped"), r
            continue
        assert r["status"] == "ok", r
        assert ROW_FIELDS <= set(r), ROW_FIELDS - set(r)
        assert r["flops_counted_on"] == "meta" and r["tflop_per_step"] > 0 and r["finite"]
        assert r["sec_per_step"] > 0 and r["total_s"] > 0 and r["peak_kind"] == "peak RSS growth"
        assert r["tflops_per_s"] == pytest.approx(r["tflop_per_step"] / r["sec_per_step"], rel=0.01, abs=1e-3)
        extra = (r["steps"] - r["steps_run"]) * r["sec_per_step"]
        assert r["extrapolated"] == (r["steps_run"] < r["steps"])
        assert r["total_s_at_steps"] == pytest.approx(r["total_s"] + extra, abs=1e-3)
    ran = [r for r in rows if r["status"] == "ok"]
    assert any(r["extrapolated"] for r in ran) and any(r["offload"] for r in ran)
    assert [r["windows"] for r in ran if r["window"]] == [2]  # w2 over 4 frames
    table = [line for line in proc.stdout.splitlines() if line.startswith("| ")]
    assert len(table) == 1 + len(rows)
    assert bench.main(["--table", str(out)]) == 0  # the table again, from the file
    assert capsys.readouterr().out.count("\n") == 2 + len(rows)


def test_configuration_names(bench):
    cfg = bench.Config.parse("bf16-flash-tiled-offload-w8@10")
    assert (cfg.dtype, cfg.sdpa, cfg.tiled, cfg.offload, cfg.window, cfg.steps) == ("bf16", "flash", True, True, 8, 10)
    assert cfg.name == "bf16-flash-offload-tiled-w8@10" and bench.Config.parse(cfg.name) == cfg
    for table in bench.DEFAULT_CONFIGS.values():
        for name in table:
            assert bench.Config.parse(name).name == name
    for bad in ("bf16", "int8-flash", "bf16-flash-fast", "bf16-flash@0"):
        with pytest.raises(ValueError):
            bench.Config.parse(bad)
    assert bench.skip_reason(bench.Config.parse("fp16-flash"), "base", torch.device("cpu")) == "fp16 on CPU"
    assert bench.skip_reason(bench.Config.parse("bf16-flash-w8"), "base", torch.device("cpu"))


def test_flop_count_of_the_real_base_unet_is_the_issues_176_tflop(bench):
    shape = bench.SHAPES["base", "real"]
    tflop, how = bench.count_step_flops("base", shape, [(0, 16)], 704 // 8, 1280 // 8, None)
    assert how == "meta" and tflop == pytest.approx(175.96, abs=0.01)


@pytest.mark.skipif(torch.cuda.is_available(), reason="would start the real benchmark")
def test_absent_gpu_is_refused_in_one_line(bench, capsys):
    assert bench.main(["--size", "tiny", "--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("bench_gpu: device 'cuda' is not available") and "\n" not in err
