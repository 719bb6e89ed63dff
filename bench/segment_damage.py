"""Damaged cache segments, with and without seals: how often does reading one hang libhdf5?

Writes a one-clip cache (``ntu_kinect_25`` + ``smplx_42``, M = 2) with :class:`CacheWriter`, and an unsealed
twin: the same segment with its user block (the seal) cut off, which is a valid HDF5 file with identical
contents, read by msclr like a segment written before seals existed (no checksum).  Then, for each trial, the
same 1 to 4 random bit flips are made in the HDF5 part of both files (identical relative positions) and the
damaged cache is read the way ``msclr train`` does (``Cache(root)``, every convention's poses, ``clip()``).

Each reader runs in a child process with a watchdog: a trial that makes no progress for ``--watchdog`` seconds
counts as a hang; the child is killed and restarted at the next trial.  Outcomes per mode: hang, CacheError
(the documented error), read (the flips only touched pose coordinates, or cancelled out), other exception
(a bug).

Usage::

    python bench/segment_damage.py                   # 20,000 trials per mode (~2-4 min on 2 cores)
    python bench/segment_damage.py --trials 2000 --watchdog 3
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from msclr.errors import CacheError  # noqa: E402
from msclr.pipeline.cache import Cache, CacheWriter, Clip  # noqa: E402
from msclr.pipeline.cache import seal as segment_seal  # noqa: E402

CONVENTIONS = {"ntu_kinect_25": 25, "smplx_42": 42}
USERBLOCK = segment_seal.userblock_size(len(CONVENTIONS))
"""Bytes of seal in front of the HDF5 part of each segment the writer makes for these conventions."""
OUTCOMES = ("hang", "CacheError", "read", "other exception")


def make_caches(base: Path) -> dict[str, Path]:
    """A sealed one-clip cache and its unsealed twin (same HDF5 bytes, user block cut off)."""
    rng = np.random.default_rng(0)
    sealed = base / "sealed"
    clip = Clip(name="S001C001P001R001A001", label=0, fps=30.0, persons=1,
                poses={c: rng.uniform(-1, 1, (5, 2, v, 3)).astype(np.float32) for c, v in CONVENTIONS.items()},
                scores=rng.uniform(0, 1, (5, 2)).astype(np.float32), frame_indices=np.arange(5))
    with CacheWriter(sealed, list(CONVENTIONS), max_persons=2, classes=["a"]) as writer:
        writer.add(clip)
    unsealed = base / "unsealed"
    shutil.copytree(sealed, unsealed)
    (segment,) = (unsealed / "segments").glob("*.h5")
    data = segment.read_bytes()
    assert data[:8] == segment_seal.MAGIC and data[USERBLOCK:USERBLOCK + 8] == segment_seal.HDF5_SIGNATURE
    segment.write_bytes(data[USERBLOCK:])
    return {"unsealed": unsealed, "sealed": sealed}


def draw_flips(rng: np.random.Generator, size: int) -> list[tuple[int, int]]:
    """1 to 4 (byte, bit) flips at positions in [0, size) of the HDF5 part."""
    return [(int(rng.integers(size)), int(rng.integers(8))) for _ in range(int(rng.integers(1, 5)))]


def reader(root: str, original: bytes, skip: int, start: int, trials: int, seed: int, progress, counts) -> None:
    """Child process: damage, read, count; ``progress`` holds the trial in hand.

    ``original`` is the undamaged segment, taken by the parent: a killed child leaves the file damaged.
    """
    (segment,) = (Path(root) / "segments").glob("*.h5")
    rng = np.random.default_rng(seed)
    for trial in range(trials):
        flips = draw_flips(rng, len(original) - skip)
        if trial < start:
            continue
        progress.value = trial
        data = bytearray(original)
        for pos, bit in flips:
            data[skip + pos] ^= 1 << bit
        segment.write_bytes(data)
        try:
            cache = Cache(root)
            for conv in cache.skeletons:
                cache.poses(conv)
            for name in cache.names:
                cache.clip(name)
            counts[2] += 1
        except CacheError:
            counts[1] += 1
        except Exception:  # noqa: BLE001 - counted: any of these is a bug
            counts[3] += 1
    progress.value = trials


def run_mode(root: Path, skip: int, trials: int, seed: int, watchdog: float) -> tuple[list[int], list[int], float]:
    counts = mp.Array("q", 4)
    (segment,) = (root / "segments").glob("*.h5")
    original = segment.read_bytes()
    hangs: list[int] = []
    start, began = 0, time.perf_counter()
    while start < trials:
        progress = mp.Value("q", start)
        child = mp.Process(target=reader, args=(str(root), original, skip, start, trials, seed, progress,
                                                      counts))
        child.start()
        last, since = -1, time.monotonic()
        while child.is_alive():
            child.join(0.2)
            if progress.value != last:
                last, since = progress.value, time.monotonic()
            elif time.monotonic() - since > watchdog:
                child.kill()
                child.join()
                break
        if progress.value >= trials:
            break
        hangs.append(int(progress.value))
        start = int(progress.value) + 1
    segment.write_bytes(original)
    result = list(counts)
    result[0] = len(hangs)
    return result, hangs, time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20000, help="damaged files per mode (default 20000)")
    parser.add_argument("--seed", type=int, default=12345)
    parser.add_argument("--watchdog", type=float, default=5.0, help="seconds without progress = a hang")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="msclr-damage-") as tmp:
        roots = make_caches(Path(tmp))
        size = next((roots["unsealed"] / "segments").glob("*.h5")).stat().st_size
        print(f"one-clip segment: {size} bytes of HDF5 (+{USERBLOCK} bytes of seal when sealed); {args.trials} "
              f"trials per mode of 1-4 random bit flips at the same HDF5 positions in both; watchdog "
              f"{args.watchdog:g} s")
        rows = {}
        for mode, root in roots.items():
            counts, hangs, seconds = run_mode(root, USERBLOCK if mode == "sealed" else 0, args.trials, args.seed,
                                              args.watchdog)
            rows[mode] = counts
            shown = ", ".join(map(str, hangs[:8])) + (" ..." if len(hangs) > 8 else "")
            print(f"{mode}: {seconds:.0f} s" + (f"; hanging trials: {shown}" if hangs else ""))
        print(f"\n{'outcome':<16}" + "".join(f"{m:>12}" for m in rows))
        for i, outcome in enumerate(OUTCOMES):
            print(f"{outcome:<16}" + "".join(f"{rows[m][i]:>12}" for m in rows))
        rate = rows["unsealed"][0] / args.trials
        print(f"\nhangs per damaged file: unsealed {rate:.4%}, sealed {rows['sealed'][0] / args.trials:.4%}")


if __name__ == "__main__":
    main()
