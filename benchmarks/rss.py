"""Peak host memory of a piece of work, for the benchmark scripts (Linux): the growth of the process's peak resident
set size (VmHWM) over its RSS when the peak was reset through /proc/self/clear_refs."""

from __future__ import annotations

from pathlib import Path


def rss_kb(field: str = "VmRSS") -> int:
    """A /proc/self/status field in kB (VmRSS: now; VmHWM: the peak since the last reset)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1])
    return 0


def reset_peak() -> int | None:
    """Reset VmHWM to the current RSS; -> that RSS in kB, or None where the kernel does not allow it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return None
    return rss_kb("VmRSS")


def peak_growth_mb(since_kb: int | None) -> float:
    """Growth of the peak RSS over `since_kb` (from `reset_peak`) in MB; nan when unknown."""
    return float("nan") if since_kb is None else (rss_kb("VmHWM") - since_kb) / 1024
