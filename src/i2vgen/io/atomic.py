"""Atomic file and folder output: write to a temporary sibling, then rename it into place.

A reader never sees a half-written file, and an exception (KeyboardInterrupt included) part way through leaves
neither a partial output nor a temporary file behind. The temporary sits in the destination's own directory,
so the final `os.replace` never crosses file systems.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from i2vgen.errors import InputError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _umask()  # read once: os.umask can only be read by setting it, which is not thread-safe


def _prepare_parent(path: Path) -> None:
    if path.name in ("", ".", ".."):
        raise InputError(f"output path {str(path)!r} has no file name")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create the output folder {str(path.parent)!r}: {e.strerror or e}") from None


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, fsync: bool = True) -> Iterator[Path]:
    """Yield a temporary file path next to `path`; on success move it onto `path`, on any error delete it.

    The temporary name keeps the destination's suffix (`.out.mp4.tmp-XXXX.mp4`), so libraries that choose a
    format from the extension still work. The caller may write the file however it likes (it exists, empty, on
    entry).
    """
    path = Path(path)
    _prepare_parent(path)
    if path.is_dir():
        raise InputError(f"cannot write file {str(path)!r}: a folder with that name exists")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.tmp-", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # mkstemp creates 0600 files; give the result the mode a plain open() would have (or the old file's).
        mode = path.stat().st_mode & 0o7777 if path.exists() else 0o666 & ~_UMASK
        os.chmod(tmp, mode)
        if fsync:
            _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *, fsync: bool = True) -> None:
    """Write `data` to `path` atomically."""
    with atomic_path(path, fsync=fsync) as tmp, open(tmp, "wb") as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str, *, fsync: bool = True) -> None:
    """Write `text` (UTF-8) to `path` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"), fsync=fsync)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary folder next to `path`; on success rename it to `path`, on any error delete it.

    An existing folder at `path` is replaced: it is first renamed aside, the new one renamed in, then the old
    one deleted, so `path` is missing only between two renames and never holds a mix of old and new files.
    """
    path = Path(path)
    _prepare_parent(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"cannot write folder {str(path)!r}: a file with that name exists")
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    old: Path | None = None
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_UMASK)
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
            os.replace(path, old)  # an empty folder may be replaced by a folder
        try:
            os.replace(tmp, path)
        except BaseException:
            if old is not None:
                os.replace(old, path)
                old = None
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
