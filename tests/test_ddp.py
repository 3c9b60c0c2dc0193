"""Data-parallel training: two processes on the CPU (gloo), as torchrun would start them. The ranks see disjoint
data and their parameters stay identical (DDP); FSDP2 sharding gives the same weights as DDP."""

from __future__ import annotations

import json
import multiprocessing
import os
import socket

import pytest
import torch
from safetensors.torch import load_file
from test_train import read_metrics, tiny_config

from i2vgen.cli import main


def _rank(rank: int, port: int, argv: list[str]) -> None:  # in a child process: what torchrun sets, then the CLI
    os.environ.update({"WORLD_SIZE": "2", "RANK": str(rank), "LOCAL_RANK": str(rank), "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": str(port)})
    os._exit(main(argv))


def _launch(config: str, timeout: float = 180) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # spawn, not fork: a child forked from a parent whose earlier tests ran torch thread pools can hang (seen once in
    # the full suite: a rank still alive after 180 s)
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_rank, args=(r, port, ["train", "base", "--config", config])) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout)
    for p in procs:
        if p.is_alive():
            p.kill()
    assert [p.exitcode for p in procs] == [0, 0]


def _ranks(run) -> list[list[dict]]:  # noqa: ANN001
    return [[json.loads(line) for line in (run / "ranks" / f"rank{r}.jsonl").read_text().splitlines()]
            for r in range(2)]


def test_two_processes_see_disjoint_data_and_stay_identical(tmp_path_factory, tmp_path):
    # 3 steps of 1 clip per rank over 6 clips: one epoch, every clip exactly once.
    cfg = tiny_config(tmp_path_factory, tmp_path / "run", max_steps=3, **{"log.rank_files": True})
    cfg.save_yaml(tmp_path / "cfg.yaml")
    _launch(str(tmp_path / "cfg.yaml"))
    records = _ranks(tmp_path / "run")
    seen = [[p for rec in recs if "paths" in rec for p in rec["paths"]] for recs in records]
    assert len(seen[0]) == len(seen[1]) == 3 and not set(seen[0]) & set(seen[1])
    assert len(set(seen[0]) | set(seen[1])) == 6
    checksums = [recs[-1]["final_checksum"] for recs in records]
    assert checksums[0] == checksums[1]  # every parameter equal on both ranks, bit for bit
    rows = read_metrics(tmp_path / "run")
    assert [r["samples"] for r in rows] == ["2", "4", "6"]  # global batch 2
    print(f"DDP: rank 0 saw {[p.rsplit('/', 1)[1] for p in seen[0]]}, rank 1 {[p.rsplit('/', 1)[1] for p in seen[1]]};"
          f" parameter checksums equal ({checksums[0][:12]}); mean losses {[r['loss'][:8] for r in rows]}")


def _has_fsdp2() -> bool:
    try:
        from torch.distributed.fsdp import fully_shard  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.skipif(not _has_fsdp2(), reason="FSDP2 (torch.distributed.fsdp.fully_shard) needs a newer torch")
def test_fsdp_gives_the_weights_of_ddp(tmp_path_factory, tmp_path):
    runs = {}
    for parallel in ("ddp", "fsdp"):
        cfg = tiny_config(tmp_path_factory, tmp_path / parallel, max_steps=3, parallel=parallel)
        cfg.save_yaml(tmp_path / f"{parallel}.yaml")
        _launch(str(tmp_path / f"{parallel}.yaml"))
        runs[parallel] = load_file(str(tmp_path / parallel / "checkpoints" / "step-00000003" / "unet" /
                                       "model.safetensors"))
    a, b = runs["ddp"], runs["fsdp"]
    # fused AdamW (DDP) and foreach AdamW on sharded DTensors (FSDP) round differently.
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5
    assert [r["loss"][:6] for r in read_metrics(tmp_path / "ddp")] == \
        [r["loss"][:6] for r in read_metrics(tmp_path / "fsdp")]
    assert torch.isfinite(torch.cat([v.flatten() for v in b.values()])).all()
