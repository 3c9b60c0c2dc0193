"""Output paths that never destroy data: checked before any work, written atomically, replaced only when asked.

`check_output` runs before a model is loaded: the kind (from the extension), nothing existing replaced unless
`overwrite`, never an input (or a folder holding one), a writable location, and room on the disk for the estimated
size. `write_output` writes the video and its JSON sidecar atomically and turns disk-full or read-only failures into
one-line errors. Stale temporaries of our own naming (`.NAME.tmp-*`, `.NAME.old-*`, left by a killed process) are
removed before the next write of NAME.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from i2vgen.errors import I2VGenError, InputError

STALE_AFTER_S = 60.0  # a temporary untouched this long belongs to a process that is gone
_MARGIN = 1 << 20


class OutputError(I2VGenError):
    """The output cannot be written (exists, not writable, no room)."""


def sidecar_path(out: str | os.PathLike[str]) -> Path:
    """The JSON sidecar of an output: `video.mp4` -> `video.mp4.json`, `frames/` -> `frames.json`."""
    out = Path(out)
    return out.with_name(out.name.rstrip("/") + ".json")


def output_kind(path: str | os.PathLike[str]) -> str:
    from i2vgen.io.video import output_kind as kind  # the writer's own rule: .mp4/.gif/.webp or a folder

    return kind(path)


def estimate_output_bytes(kind: str, frames: int, width: int, height: int) -> int:
    """An upper estimate of the written size: raw RGB for PNG folders and GIF/WebP, a tenth of it for H.264."""
    raw = frames * width * height * 3
    return raw // 10 + _MARGIN if kind == "mp4" else raw + _MARGIN


def check_output(path: str | os.PathLike[str], *, overwrite: bool = False, inputs: Iterable[str | os.PathLike] = (),
                 size_bytes: int = 0) -> str:
    """Everything about the output path that can be known before sampling; -> its kind ("mp4", "gif", "webp",
    "png"). Raises a one-line `OutputError` / `InputError`."""
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path).strip():
        raise InputError("an output path is required")
    kind = output_kind(path)
    out = Path(path).expanduser()
    target = out.resolve()
    if target == Path(target.anchor) or target in (Path.cwd().resolve(), Path.home().resolve()) \
            or Path.cwd().resolve().is_relative_to(target):
        raise OutputError(f"refusing to write the output to {str(path)!r}: it is the current, home or root folder "
                          f"(or holds the current folder); name a new file or folder")
    for src in inputs:
        if src is None:
            continue
        s = Path(src).expanduser().resolve()
        if s == target or s.is_relative_to(target):
            raise OutputError(f"the output {str(path)!r} would replace the input {str(src)!r}; choose another output")
    for p in (out, sidecar_path(out)):
        if p.is_symlink() or p.exists():
            if not overwrite and not (p.is_dir() and not p.is_symlink() and not any(p.iterdir())):
                what = "a non-empty folder" if p.is_dir() else "a file"
                raise OutputError(f"{str(p)!r} exists ({what}); choose a new name or pass --overwrite to replace it")
            if kind != "png" and p == out and p.is_dir():
                raise OutputError(f"{str(p)!r} is a folder; a .{kind} output must be a file name")
            if kind == "png" and p == out and not p.is_dir():
                raise OutputError(f"{str(p)!r} is a file; a PNG-frame output (no extension) must be a folder")
    check_writable(out.parent, size_bytes)
    return kind


def check_writable(folder: Path, size_bytes: int = 0) -> None:
    """The folder (or its nearest existing ancestor, which it will be created in) accepts a new file and has room."""
    existing = folder
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"cannot create the output folder {str(folder)!r}: {str(existing)!r} is a file")
    try:
        fd, probe = tempfile.mkstemp(prefix=".i2vgen-write-check-", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise OutputError(f"cannot write to {str(existing)!r}: {e.strerror or e}") from None
    free = shutil.disk_usage(existing).free
    if size_bytes > free:
        raise OutputError(f"not enough disk space in {str(existing)!r}: the output needs about "
                          f"{_human(size_bytes)}, {_human(free)} free")


def clean_stale_temporaries(out: Path, *, now: float | None = None) -> list[Path]:
    """Remove `.NAME.tmp-*` / `.NAME.old-*` siblings of `out` (ours: `i2vgen.io.atomic`) untouched for a minute;
    -> what was removed."""
    now = time.time() if now is None else now
    removed = []
    parent = out.parent
    if not parent.is_dir():
        return removed
    name = out.name.rstrip("/")
    for pattern in (f".{name}.tmp-*", f".{name}.old-*"):
        for p in parent.glob(pattern):
            with contextlib.suppress(OSError):
                if now - p.lstat().st_mtime < STALE_AFTER_S:
                    continue
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p)
                else:
                    p.unlink()
                removed.append(p)
    return removed


def write_output(frames: Any, out: str | os.PathLike[str], *, fps: float, metadata: dict[str, Any],
                 overwrite: bool = False) -> Path:
    """Write frames (F, H, W, 3) and the sidecar JSON atomically -> the output path. An existing output is replaced
    only with `overwrite` (checked again here: it may have appeared while sampling)."""
    from i2vgen.io import write_sidecar_json, write_video

    out = Path(out).expanduser()
    if not overwrite:
        for p in (out, sidecar_path(out)):
            if p.exists() and not (p.is_dir() and not any(p.iterdir())):
                raise OutputError(f"{str(p)!r} appeared while sampling; nothing was replaced (pass --overwrite)")
    clean_stale_temporaries(out)
    clean_stale_temporaries(sidecar_path(out))
    try:
        write_video(frames, out, fps=fps, metadata=metadata)
        write_sidecar_json(sidecar_path(out), metadata)
    except OSError as e:
        raise OutputError(_os_error_line(e, out)) from None
    return out


def _os_error_line(e: OSError, out: Path) -> str:
    if e.errno == errno.ENOSPC:
        return f"the disk is full: {str(out)!r} was not written (no partial file was kept)"
    if e.errno == errno.EROFS:
        return f"{str(out.parent)!r} is on a read-only file system; {str(out)!r} was not written"
    if e.errno in (errno.EACCES, errno.EPERM):
        return f"permission denied writing {str(out)!r}"
    return f"cannot write {str(out)!r}: {e.strerror or e}"


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    return f"{n:.1f} TB"
