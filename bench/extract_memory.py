"""Peak memory of extraction does not grow with video length.

Generates two 1080p videos (mp4v in .mp4, a moving box on a textured background) of 300 and 3000 frames, then
extracts each in a fresh subprocess through msclr's real path (background decoding, RGB batches,
extractor, tracking, cache commit) and reads the child's peak resident set size
(``ru_maxrss``).  The extractor is :class:`msclr.extractors.base.ConstantExtractor` (no model, so
the figure is the pipeline's own memory; pass ``--standin`` to use the MeTRAbs stand-in SavedModel
from ``tests/metrabs_standin.py`` instead, which adds TensorFlow's ~0.5 GB baseline).

Prints both peaks and the ratio (target <= 1.2): decoded frames are never accumulated, only the
per-frame detections (a few kB per frame) and the final ``(T, M, V, 3)`` arrays.

Usage::

    python bench/extract_memory.py                   # 300 vs 3000 frames, 1920x1080, batch 16
    python bench/extract_memory.py --short 100 --long 1000 --width 1280 --height 720
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]


def make_video(path: Path, frames: int, width: int, height: int) -> None:
    """A textured static background with a moving white box, MPEG-4 part 2 (mp4v): mostly static
    content keeps encoding fast (about 15 ms per 1080p frame on a busy 2-core machine)."""
    rng = np.random.default_rng(0)
    tile = rng.integers(0, 255, (height // 32, width // 32, 3), dtype=np.uint8)
    base = cv2.resize(tile, (width, height), interpolation=cv2.INTER_LINEAR)
    box = max(8, height // 5)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (width, height))
    try:
        for t in range(frames):
            frame = base.copy()
            x = (20 * t) % (width - box)
            frame[height // 3: height // 3 + box, x: x + box] = 255
            writer.write(frame)
    finally:
        writer.release()


def child(video: Path, out: Path, batch_size: int, standin: str | None) -> None:
    """Run one extraction and print JSON with the peak RSS in MiB."""
    from msclr.pipeline.extract import ExtractOptions, extract_videos

    if standin:
        from msclr.extractors.metrabs import MetrabsExtractor

        conventions = ["smpl_24", "smplx_42", "berkeley_mhad_43", "kinectv2_25"]

        def factory():  # noqa: ANN202
            return MetrabsExtractor(standin, conventions)
    else:
        from msclr.extractors.base import ConstantExtractor

        conventions = ["smpl_24", "smplx_42"]

        def factory():  # noqa: ANN202
            return ConstantExtractor(conventions=tuple(conventions))
    t0 = time.perf_counter()
    summary = extract_videos([video], out, factory, conventions, ExtractOptions(batch_size=batch_size))
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"peak_mib": peak_kib / 1024, "frames": summary.frames,
                      "status": summary.rows[0].status, "seconds": time.perf_counter() - t0}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--short", type=int, default=300)
    parser.add_argument("--long", type=int, default=3000)
    parser.add_argument("--width", type=int, default=1920)
    parser.add_argument("--height", type=int, default=1080)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--standin", action="store_true", help="use the MeTRAbs stand-in SavedModel")
    parser.add_argument("--child", nargs=2, metavar=("VIDEO", "OUT"), help=argparse.SUPPRESS)
    parser.add_argument("--model", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(Path(args.child[0]), Path(args.child[1]), args.batch_size, args.model)
        return

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        model = None
        if args.standin:
            sys.path.insert(0, str(REPO / "tests"))
            from metrabs_standin import build_standin

            model = str(build_standin(tmp_path / "standin").path)
        peaks = {}
        for frames in (args.short, args.long):
            video = tmp_path / f"v{frames}.mp4"
            t0 = time.perf_counter()
            make_video(video, frames, args.width, args.height)
            print(f"generated {frames} frames {args.width}x{args.height}: {video.stat().st_size / 1e6:.0f} MB "
                  f"in {time.perf_counter() - t0:.1f} s")
            cmd = [sys.executable, __file__, "--child", str(video), str(tmp_path / f"cache{frames}"),
                   "--batch-size", str(args.batch_size)]
            if model:
                cmd += ["--model", model]
            res = subprocess.run(cmd, capture_output=True, text=True, check=True)
            report = json.loads(res.stdout.strip().splitlines()[-1])
            peaks[frames] = report["peak_mib"]
            print(f"{frames:6d} frames: peak RSS {report['peak_mib']:.0f} MiB, {report['frames']} frames "
                  f"extracted ({report['status']}) in {report['seconds']:.1f} s")
        ratio = peaks[args.long] / peaks[args.short]
        print(f"ratio peak RSS {args.long} / {args.short} frames = {ratio:.3f}")


if __name__ == "__main__":
    main()
