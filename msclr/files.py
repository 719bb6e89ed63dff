"""Atomic file writes: write under a temporary name in the same folder, fsync, ``os.replace``, fsync the folder.

A reader never sees a partly written file, and a crash leaves either the old file or the new one (plus, at
worst, a temporary file that the next writer may remove).  The one implementation used by the cache's
manifests, checkpoints, run files, reports and pyskl exports.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


def fsync_dir(path: str | Path) -> None:
    """fsync a directory so a rename inside it is durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def default_tmp_name(final: Path) -> Path:
    """``.NAME.PID.partial`` beside ``final``."""
    return final.with_name(f".{final.name}.{os.getpid()}.partial")


@contextmanager
def atomic_open(path: str | Path, mode: str = "wb", *, tmp: Path | None = None,
                encoding: str | None = None) -> Iterator[IO[Any]]:
    """Open ``tmp`` (default :func:`default_tmp_name`) for writing; on a clean exit flush, fsync and rename it
    onto ``path``; on any exception remove it and re-raise.  Creates ``path``'s folder if needed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp or default_tmp_name(path)
    try:
        with open(tmp, mode, encoding=encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_bytes(path: str | Path, data: bytes, *, tmp: Path | None = None) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_open(path, "wb", tmp=tmp) as handle:
        handle.write(data)


def atomic_write_text(path: str | Path, text: str, *, tmp: Path | None = None) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    with atomic_open(path, "w", tmp=tmp, encoding="utf-8") as handle:
        handle.write(text)
