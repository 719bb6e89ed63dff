"""Benchmark msclr's video decoder against a bare OpenCV read loop.

Generates a 1080p video (MJPG in .avi, a moving pattern; or pass your own file), then measures
decoded frames per second of

- ``bare``: ``while cap.read(): pass`` (BGR frames, no colour conversion);
- ``bare+rgb``: the same plus ``cv2.cvtColor(BGR2RGB)`` per frame (what any model needs);
- ``msclr``: iterating :class:`msclr.extractors.video.FrameReader` batches (background thread,
  BGR -> RGB into the batch buffer, bounded queue), with the consumer doing nothing.

Prints the three rates and the ratios msclr / bare and msclr / bare+rgb (target >= 0.9), plus the
process CPU time per frame (all threads), which is less sensitive to other load on the machine.
The variants run interleaved ``--repeat`` times; the best rate and the least CPU time are kept.

Usage::

    python bench/decode.py                    # 300 generated 1920x1080 frames
    python bench/decode.py --frames 600 --batch-size 32
    python bench/decode.py --video some.mp4
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from msclr.extractors.video import FrameReader, write_video


def pattern_frames(n: int, width: int, height: int):  # noqa: ANN201 - generator
    """A textured frame shifted a little every frame (cheap to make, realistic to compress)."""
    rng = np.random.default_rng(0)
    tile = rng.integers(0, 255, (height // 8, width // 8, 3), dtype=np.uint8)
    base = cv2.resize(tile, (width, height), interpolation=cv2.INTER_LINEAR)
    for t in range(n):
        yield np.roll(base, 4 * t, axis=1)


def bare(path: Path, rgb: bool) -> tuple[int, float, float]:
    cap = cv2.VideoCapture(str(path))
    n = 0
    c0 = time.process_time()
    t0 = time.perf_counter()
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        if rgb:
            cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        n += 1
    dt = time.perf_counter() - t0
    cap.release()
    return n, dt, time.process_time() - c0


def ours(path: Path, batch_size: int) -> tuple[int, float, float]:
    n = 0
    c0 = time.process_time()
    t0 = time.perf_counter()
    with FrameReader(path, batch_size=batch_size) as reader:
        for batch in reader:
            n += len(batch)
            del batch
    return n, time.perf_counter() - t0, time.process_time() - c0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", type=Path, default=None, help="decode this file instead of a generated one")
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--width", type=int, default=1920)
    parser.add_argument("--height", type=int, default=1080)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        path = args.video
        if path is None:
            path = Path(tmp) / "bench.avi"
            t0 = time.perf_counter()
            write_video(path, pattern_frames(args.frames, args.width, args.height), codec="MJPG")
            print(f"generated {path.name}: {args.frames} frames {args.width}x{args.height} MJPG, "
                  f"{path.stat().st_size / 1e6:.1f} MB in {time.perf_counter() - t0:.1f} s")
        results: dict[str, float] = {}
        cpu: dict[str, float] = {}
        runs = {"bare": lambda: bare(path, False), "bare+rgb": lambda: bare(path, True),
                "msclr": lambda: ours(path, args.batch_size)}
        best = {name: 0.0 for name in runs}
        least_cpu = {name: float("inf") for name in runs}
        for _ in range(args.repeat):  # interleaved, so load changes hit every variant alike
            for name, fn in runs.items():
                n, dt, cpu_s = fn()
                best[name] = max(best[name], n / dt)
                least_cpu[name] = min(least_cpu[name], 1000 * cpu_s / n)
        for name in runs:
            results[name], cpu[name] = best[name], least_cpu[name]
            print(f"{name:9s} {results[name]:8.1f} frames/s (best of {args.repeat})   "
                  f"{cpu[name]:6.2f} ms CPU per frame (all threads)")
        print(f"ratio msclr / bare     = {results['msclr'] / results['bare']:.3f}   "
              f"(CPU per frame {cpu['msclr'] / cpu['bare']:.3f}x)")
        print(f"ratio msclr / bare+rgb = {results['msclr'] / results['bare+rgb']:.3f}   "
              f"(CPU per frame {cpu['msclr'] / cpu['bare+rgb']:.3f}x)")


if __name__ == "__main__":
    main()
