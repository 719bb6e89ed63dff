"""Benchmark the HDF5 skeleton cache: write and bulk-read throughput at NTU60 size.

Generates a synthetic cache shaped like NTU RGB+D 60 extracted with two conventions
(56,880 clips x {ntu_kinect_25, smplx_42}, M = 2 person slots, T drawn log-normally around
NTU's ~75-frame average, 32..300 frames; ~18 % of clips use the second person slot, the rest
leave it zero as NTU's single-person actions do; poses are smooth random walks in metres).

Measured and printed:

- write: wall time of ``CacheWriter.add`` (validation included) + segment commits with fsync,
  as MB/s of pose payload (float32 bytes of all conventions) and of bytes on disk;
- the cache's file count and size;
- open: ``Cache(root)`` (checks every segment's seal, then scans its metadata), and the seal checks alone;
- read 1 "cold": ``Cache.poses`` for every clip and convention, in batches of 4096 clips taken in
  ``Cache.storage_order()`` (so each segment is read whole, once per convention), after
  asking the kernel to drop this cache's pages (``posix_fadvise(DONTNEED)`` on every segment;
  dropping the whole page cache needs root).  The virtual disk underneath may still cache on the
  host, so this is "cold-ish";
- read 2 "warm": the same again with the files in the page cache;
- read 3: warm again, but batches in sorted-name order (NTU names do not follow write order, so a
  batch touches many segments and reads single clips);
- a plain-numpy baseline (``tofile`` + fsync / ``fromfile`` of up to 1 GiB) for the ratios;
- random access: ``Cache.clip(name)`` on 500 random clips (every convention, one file open each).

Making the synthetic clips (on the fly, to keep memory flat) is excluded from the write time.

Usage::

    python bench/cache_io.py                       # full NTU60 size (~7 GB in a temp dir, deleted)
    python bench/cache_io.py --clips 2000 --compression lzf
    python bench/cache_io.py --out /big/disk/cache  # keep the cache there
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from msclr.pipeline.cache import Cache, CacheWriter, Clip
from msclr.pipeline.cache import seal as segment_seal
from msclr.skeletons import SKELETONS

CONVENTIONS = ("ntu_kinect_25", "smplx_42")
M = 2
NTU60_CLIPS = 56_880
POOL = 48  # distinct 300-frame motions; clips are slices of them
BATCH = 4096


def make_pool(rng: np.random.Generator) -> dict[str, list[np.ndarray]]:
    """POOL smooth (300, M, V, 3) float32 motions per convention, metres around 3 m in front."""
    pool: dict[str, list[np.ndarray]] = {}
    for conv in CONVENTIONS:
        v = SKELETONS[conv].num_joints
        motions = []
        for _ in range(POOL):
            rest = rng.normal(0.0, 0.3, (1, M, v, 3)) + np.array([0.0, 0.0, 3.0])
            walk = np.cumsum(rng.normal(0.0, 0.005, (300, M, v, 3)), axis=0)
            motions.append((rest + walk).astype(np.float32))
        pool[conv] = motions
    return pool


def clip_frames(n: int, rng: np.random.Generator) -> np.ndarray:
    """T per clip: log-normal around 70 frames (mean ~74), clipped to 32..300 like NTU."""
    return np.clip(np.round(rng.lognormal(np.log(70.0), 0.35, n)), 32, 300).astype(int)


def make_clip(i: int, t: int, rng: np.random.Generator, pool: dict[str, list[np.ndarray]]) -> Clip:
    k = int(rng.integers(POOL))
    two = rng.random() < 0.18
    poses = {}
    for conv in CONVENTIONS:
        arr = pool[conv][k][:t].copy()
        if not two:
            arr[:, 1] = 0.0
        poses[conv] = arr
    name = f"S{1 + i % 17:03d}C{1 + i % 3:03d}P{i % 40:03d}R{1 + i % 2:03d}A{1 + i % 60:03d}_{i:06d}"
    return Clip(name, poses, label=i % 60, subject=1 + i % 40, camera=1 + i % 3, setup=1 + i % 17,
                replication=1 + i % 2, fps=30.0, source=f"{name}.skeleton", extractor="synthetic",
                persons=2 if two else 1)


def drop_pages(root: Path) -> bool:
    """Ask the kernel to evict this cache's (clean, fsync'd) pages; False where unsupported."""
    if not hasattr(os, "posix_fadvise"):
        return False
    for path in (root / "segments").glob("*.h5"):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    return True


def raw_baseline(directory: Path, nbytes: int) -> tuple[float, float, float]:
    """MB/s of a plain numpy file of ``nbytes``: write + fsync, cold-ish read, warm read."""
    data = np.random.default_rng(1).random(nbytes // 4, dtype=np.float32)
    path = directory / "raw-baseline.bin"
    start = time.perf_counter()
    with open(path, "wb") as fh:
        data.tofile(fh)
        fh.flush()
        os.fsync(fh.fileno())
    write_s = time.perf_counter() - start
    fd = os.open(path, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)
    start = time.perf_counter()
    np.fromfile(path, dtype=np.float32)
    cold_s = time.perf_counter() - start
    start = time.perf_counter()
    np.fromfile(path, dtype=np.float32)
    warm_s = time.perf_counter() - start
    path.unlink()
    mb = data.nbytes / 1e6
    return mb / write_s, mb / cold_s, mb / warm_s


def read_all(root: Path, in_storage_order: bool = True) -> tuple[float, int]:
    start = time.perf_counter()
    cache = Cache(root)
    names = cache.storage_order() if in_storage_order else cache.names
    nbytes = 0
    for conv in CONVENTIONS:
        for b in range(0, len(names), BATCH):
            nbytes += sum(a.nbytes for a in cache.poses(conv, names[b:b + BATCH]))
    return time.perf_counter() - start, nbytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=NTU60_CLIPS, help="number of clips (default NTU60's 56,880)")
    parser.add_argument("--out", type=Path, default=None, help="cache directory to keep (default: temp, deleted)")
    parser.add_argument("--segment-size", type=int, default=64, help="clips per segment (CacheWriter default 64)")
    parser.add_argument("--compression", choices=("none", "lzf", "gzip"), default="none")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    pool = make_pool(rng)
    frames = clip_frames(args.clips, rng)
    row_bytes = sum(M * SKELETONS[c].num_joints * 3 * 4 for c in CONVENTIONS)
    payload = int(frames.sum()) * row_bytes
    print(f"{args.clips} clips x {len(CONVENTIONS)} conventions: frames mean {frames.mean():.1f}, "
          f"median {np.median(frames):.0f}, max {frames.max()}; pose payload {payload / 1e9:.2f} GB")

    tmp = None
    if args.out is None:
        tmp = tempfile.mkdtemp(prefix="msclr-cache-bench-")
        root = Path(tmp) / "cache"
    else:
        root = args.out
    compression = None if args.compression == "none" else args.compression
    try:
        gen_s = 0.0
        start = time.perf_counter()
        with CacheWriter(root, CONVENTIONS, max_persons=M, classes=[f"A{k + 1:03d}" for k in range(60)],
                         writer_id="bench", segment_size=args.segment_size, compression=compression) as w:
            for i, t in enumerate(frames):
                g = time.perf_counter()
                clip = make_clip(i, int(t), rng, pool)  # clips are made on the fly, not timed
                gen_s += time.perf_counter() - g
                w.add(clip)
        write_s = time.perf_counter() - start - gen_s
        files = [p for p in root.rglob("*") if p.is_file()]
        disk = sum(p.stat().st_size for p in files)
        print(f"write: {write_s:.1f} s, {payload / 1e6 / write_s:.0f} MB/s pose payload, "
              f"{disk / 1e6 / write_s:.0f} MB/s on disk (segment_size {args.segment_size}, "
              f"compression {args.compression}, fsync per segment)")
        print(f"cache: {len(files)} files, {disk / 1e9:.2f} GB on disk "
              f"({disk / payload:.3f} x payload)")

        start = time.perf_counter()
        cache = Cache(root)
        open_s = time.perf_counter() - start
        segments = sorted((root / "segments").glob("*.h5"))
        start = time.perf_counter()
        for path in segments:
            segment_seal.verify(path)
        seal_s = time.perf_counter() - start
        print(f"open:  Cache(root) {open_s:.2f} s for {len(cache)} clips in {len(segments)} segments; checking "
              f"every seal alone (warm) takes {seal_s:.3f} s = {seal_s / open_s:.1%} of the open "
              f"(writing computes the same hashes)")

        evicted = drop_pages(root)
        cold_s, nbytes = read_all(root)
        assert nbytes == payload
        label = "after posix_fadvise(DONTNEED)" if evicted else "page cache not dropped"
        print(f"read 1 (cold-ish, {label}): {cold_s:.1f} s, {nbytes / 1e6 / cold_s:.0f} MB/s "
              f"(open + Cache.poses, both conventions, batches of {BATCH})")
        warm_s, _ = read_all(root)
        print(f"read 2 (warm page cache): {warm_s:.1f} s, {nbytes / 1e6 / warm_s:.0f} MB/s; "
              f"ratio cold/warm {cold_s / warm_s:.2f}")
        scattered_s, _ = read_all(root, in_storage_order=False)
        print(f"read 3 (warm, batches in sorted-name order, scattered over segments): {scattered_s:.1f} s, "
              f"{nbytes / 1e6 / scattered_s:.0f} MB/s")

        raw_w, raw_c, raw_r = raw_baseline(root, min(payload, 1 << 30))
        print(f"raw numpy file baseline ({min(payload, 1 << 30) / 1e6:.0f} MB, tofile/fromfile): write+fsync "
              f"{raw_w:.0f} MB/s, cold-ish read {raw_c:.0f} MB/s, warm read {raw_r:.0f} MB/s; "
              f"cache/raw: write {payload / 1e6 / write_s / raw_w:.2f}, cold read "
              f"{nbytes / 1e6 / cold_s / raw_c:.2f}, warm read {nbytes / 1e6 / warm_s / raw_r:.2f}")

        picks = random.Random(args.seed).sample(cache.names, min(500, len(cache.names)))
        start = time.perf_counter()
        for name in picks:
            cache.clip(name)
        rand_s = time.perf_counter() - start
        print(f"random access: Cache.clip {len(picks) / rand_s:.0f} clips/s ({1e3 * rand_s / len(picks):.2f} ms each)")
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
            print(f"deleted {tmp}")


if __name__ == "__main__":
    main()
