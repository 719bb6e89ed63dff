"""Process-level CPU settings for training: the allocator (Linux/glibc only; a no-op elsewhere) and the thread count.

PyTorch's CPU allocator takes every tensor from glibc ``malloc``.  By default glibc serves blocks above
its mmap threshold (dynamic, up to 32 MiB) with a fresh ``mmap`` and returns them with ``munmap`` when
freed, so each large activation of a training step is faulted in page by page again at the next step,
and the heap top is trimmed back to the kernel.  An ST-GCN step at batch 128 allocates hundreds of such
activations.  :func:`tune_malloc` turns both off (``M_MMAP_MAX = 0``: large blocks come from the heap;
``M_TRIM_THRESHOLD`` = 2 GiB: the heap is never trimmed), so freed activations are reused.

Measured with ``bench/train_step.py`` (batch 64, one thread): 3.65 -> 4.52 samples per CPU-second, system
time 10.2 -> 3.9 s, page faults 4.0 M -> 1.4 M.  The price is that the process keeps its peak heap
until it exits, which is what a training process does anyway.  ``msclr train`` and ``msclr demo`` call
it for CPU runs; set ``MSCLR_NO_MALLOC_TUNING=1`` to keep glibc's defaults.

Threads (:func:`pick_threads`, used by ``msclr train`` and ``msclr demo``): torch's intra-op threads default
to every core, and oversubscribed OpenMP threads spin-wait.  On the busy 2-core development machine
``msclr train`` ran a pretraining epoch in 75-136 s with the default threads and in 12-14 s with one thread;
a demo step with 2 threads under a load of ~5 took 5-20 s against 0.5-0.7 s with 1 thread (measured).  So the
count is the idle cores: CPU count minus the 1-minute load average, at least 1.
"""

from __future__ import annotations

import os
import sys

M_TRIM_THRESHOLD = -1
"""glibc ``mallopt`` parameter: bytes at the heap top before it is returned to the kernel."""
M_MMAP_MAX = -4
"""glibc ``mallopt`` parameter: maximum number of blocks served by ``mmap``."""
DISABLE_ENV = "MSCLR_NO_MALLOC_TUNING"


def tune_malloc() -> str:
    """Serve large blocks from the heap and never trim it (glibc only).

    Returns:
        A short description of what was done, for logs: the settings, or why nothing changed.
    """
    if os.environ.get(DISABLE_ENV, "") not in ("", "0"):
        return f"unchanged ({DISABLE_ENV} is set)"
    if not sys.platform.startswith("linux"):
        return "unchanged (not Linux)"
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = libc.mallopt(M_MMAP_MAX, 0) == 1 and libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1) == 1
    except (OSError, AttributeError):
        ok = False
    return "mmap_max=0, trim_threshold=2 GiB" if ok else "unchanged (mallopt unavailable: not glibc)"


def pick_threads(requested: int | None = None) -> tuple[int, str]:
    """Torch intra-op threads: ``requested``, else the idle cores; and a short reason for logs.

    Idle cores = CPU count minus the 1-minute load average (rounded), between 1 and torch's default.

    Returns:
        ``(threads, reason)``, e.g. ``(1, "2 cores, load average 3.2")``.
    """
    import torch

    if requested is not None:
        return max(1, int(requested)), "--threads"
    default = torch.get_num_threads()
    try:
        load = os.getloadavg()[0]
    except (OSError, AttributeError):  # pragma: no cover - platforms without getloadavg
        return default, "torch's default (no load average on this platform)"
    cores = os.cpu_count() or 1
    idle = int(cores - load + 0.5)
    return max(1, min(default, idle)), f"{cores} cores, load average {load:.1f}"


__all__ = ["tune_malloc", "pick_threads", "DISABLE_ENV"]
