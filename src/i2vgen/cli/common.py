"""What the commands share: the device flags, the progress bars, turning the flags into `DeviceSettings`, and the
memory plan's line."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from i2vgen.app.settings import DTYPES, DeviceSettings, parse_memory


def add_device_args(p: argparse.ArgumentParser, offload_help: str) -> None:
    p.add_argument("--dtype", default="auto", choices=DTYPES,
                   help="auto (default): bf16 on a CPU with native bf16 for UNets where it is faster (64 channels "
                        "wide or more, e.g. the real model), else fp32")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: the physical cores); when other programs keep the cores busy, "
                        "fewer threads or OMP_WAIT_POLICY=PASSIVE avoid spinning threads (docs/benchmarks.md)")
    p.add_argument("--variant", default=None, help="weight variant of the model folder, e.g. fp16")
    p.add_argument("--offload", action="store_true", help=f"model CPU offload: {offload_help}")
    p.add_argument("--sequential-cfg", action="store_true", help="guidance as two forwards (less memory)")
    p.add_argument("--max-memory", default=None, metavar="AMOUNT",
                   help="memory the run may use, e.g. 20GB (default: what the device has free). The run's memory "
                        "plan (batched or sequential CFG, the VAE's frames per call and strips, offload) is the "
                        "cheapest that fits, printed before the models load; a run that cannot fit is refused "
                        "before any work, with the settings that would")
    p.add_argument("--lora", action="append", default=[], metavar="PATH[:SCALE]",
                   help="apply a LoRA adapter saved by `i2vgen train` to the UNet (repeatable; scale default 1)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing output (atomically); without it an existing output is never touched")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")


def device_settings(args: argparse.Namespace) -> DeviceSettings:
    return DeviceSettings(device=args.device, dtype=args.dtype, variant=args.variant, offload=args.offload,
                          sequential_cfg=args.sequential_cfg, loras=tuple(args.lora), threads=args.threads,
                          max_memory=None if args.max_memory is None else parse_memory(args.max_memory))


def show_plan(settings: Any, shown: str | None = None) -> str | None:
    """Print `i2vgen: memory plan: ...` for prepared settings unless the plan's settings are those `shown` last;
    -> the settings shown."""
    plan = settings.runtime.plan
    if plan is None or plan.settings() == shown:
        return shown
    print(f"i2vgen: {plan.describe()}", file=sys.stderr)
    return plan.settings()


class Bars:
    """One progress bar per stage, opened at its stage's first step (the previous one is closed then); an
    `on_step` for `i2vgen.app.run`."""

    def __init__(self, quiet: bool, desc: str = "") -> None:
        self.quiet, self.desc, self.bar = quiet, desc, None

    def __call__(self, stage: str, step: int, total: int, x0: Any) -> None:
        if step == 1:
            from tqdm.auto import tqdm

            self.close()
            self.bar = tqdm(total=total, desc=f"{self.desc} {stage}".strip(), unit="step", disable=self.quiet,
                            leave=False)
        self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
