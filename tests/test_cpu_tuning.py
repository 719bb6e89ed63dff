"""msclr.pipeline.training.cpu_tuning: glibc malloc settings for CPU training (in a child process: they are global)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from msclr.pipeline.training import cpu_tuning

CHILD = r"""
import ctypes, re
from msclr.pipeline.training.cpu_tuning import tune_malloc

libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.open_memstream.restype = ctypes.c_void_p


def mmapped_bytes():
    buf, size = ctypes.c_char_p(), ctypes.c_size_t()
    stream = libc.open_memstream(ctypes.byref(buf), ctypes.byref(size))
    libc.malloc_info(0, ctypes.c_void_p(stream))
    libc.fclose(ctypes.c_void_p(stream))
    info = ctypes.string_at(buf, size.value).decode()
    return int(re.search(r'<total type="mmap" count="\d+" size="(\d+)"/>', info).group(1))


print(tune_malloc())
before = mmapped_bytes()
block = libc.malloc(64 * 2**20)  # above glibc's largest dynamic mmap threshold (32 MiB)
print(mmapped_bytes() - before)
libc.free(block)
"""


def _child(env_extra: dict[str, str]) -> tuple[str, int]:
    env = {k: v for k, v in os.environ.items() if k != cpu_tuning.DISABLE_ENV} | env_extra
    lines = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, check=True,
                           env=env).stdout.split("\n")
    return lines[0], int(lines[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt is Linux-only")
def test_tune_malloc_serves_large_blocks_from_the_heap():
    status, grew = _child({})
    assert status == "mmap_max=0, trim_threshold=2 GiB"
    assert grew == 0  # the 64 MiB block came from the heap
    status, grew = _child({cpu_tuning.DISABLE_ENV: "1"})  # control: glibc's defaults mmap it
    assert status.startswith("unchanged")
    assert grew >= 64 * 2**20


def test_tune_malloc_can_be_disabled(monkeypatch):
    monkeypatch.setenv(cpu_tuning.DISABLE_ENV, "1")
    assert cpu_tuning.tune_malloc() == f"unchanged ({cpu_tuning.DISABLE_ENV} is set)"
