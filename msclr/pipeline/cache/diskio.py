"""File operations of the cache: host-tagged temporary names, exclusive creation, fsync, out-of-space errors.

Temporary files carry this host's name and the writing process's id, so that a later writer on the same host
can tell the leftovers of dead processes from the files of running ones and remove them.
"""

from __future__ import annotations

import errno
import os
import re
import socket
import time
from pathlib import Path

from msclr.files import atomic_write_text as _atomic_write_text
from msclr.files import fsync_dir


def host_tag() -> str:
    """This host's name, reduced to the characters allowed in writer ids and file names."""
    return re.sub(r"[^A-Za-z0-9_.+=]", "_", socket.gethostname() or "host")


def _tmp_name(final: Path) -> Path:
    """``.NAME.HOST.PID.TIME_NS.tmp`` beside ``final``."""
    return final.with_name(f".{final.name}.{host_tag()}.{os.getpid()}.{time.time_ns()}.tmp")


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` atomically; the temporary name carries host and pid so stale ones can be cleaned."""
    _atomic_write_text(path, text, tmp=_tmp_name(Path(path)))


def create_exclusive(path: Path, text: str) -> bool:
    """Create ``path`` with ``text`` atomically unless it exists; True if this call created it.

    The content is written and fsync'd under a temporary name and hard-linked into place, so no
    reader ever sees a partly written file and a concurrent creator never overwrites it.
    """
    tmp = _tmp_name(path)
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        except OSError:  # a file system without hard links: best effort
            if path.exists():
                return False
            os.replace(tmp, path)
        fsync_dir(path.parent)
        return True
    finally:
        tmp.unlink(missing_ok=True)


def fsync_file(path: Path) -> None:
    """fsync the file at ``path``."""
    fd = os.open(path, os.O_RDWR)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` runs on this host (True when that cannot be told)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


_DISK_ERRNOS = {
    errno.ENOSPC: "the disk is full (no space left on device)",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EFBIG: "a file-size limit was reached (ulimit -f) or the disk is full",
}


def disk_error_reason(err: BaseException) -> str | None:
    """What a failed write ran into when it is out of space (full disk, quota, file-size limit), else None.

    The exception chain is searched: h5py reports a failed write as ``OSError`` with ``errno`` set, but a
    failed close after it as a ``RuntimeError`` whose text carries ``errno = 27``, chained to the first.
    """
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        code = getattr(current, "errno", None)
        if code is None:
            match = re.search(r"errno = (\d+)", str(current))
            code = int(match.group(1)) if match else None
        if code in _DISK_ERRNOS:
            return _DISK_ERRNOS[code]
        current = current.__cause__ or current.__context__
    return None


__all__ = ["atomic_write_text", "create_exclusive", "disk_error_reason", "fsync_file", "host_tag",
           "pid_alive"]
