"""The committed segments of a cache directory, and which one holds the latest commit of each clip.

Segment names sort in commit order, so when a clip name is committed more than once, the segment that sorts
last wins (a retried failure replaces the failure).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from msclr.pipeline.cache.manifest import SEGMENTS
from msclr.pipeline.cache.segments import Segment, read_segment
from msclr.skeletons import Skeleton


def segment_paths(root: Path) -> list[Path]:
    """The committed segment files of the cache ``root``, in commit order."""
    seg_dir = root / SEGMENTS
    if not seg_dir.is_dir():
        return []
    return sorted(p for p in seg_dir.iterdir() if p.suffix == ".h5" and not p.name.startswith("."))


class SegmentIndex:
    """Every committed segment of a cache, and clip name -> (segment, row); the latest segment wins."""

    def __init__(self, root: Path, conventions: Mapping[str, Skeleton], max_persons: int,
                 progress: Callable[[int, int], None] | None = None) -> None:
        paths = segment_paths(root)
        self.segments: list[Segment] = []
        self.where: dict[str, tuple[int, int]] = {}
        for i, path in enumerate(paths):
            seg = read_segment(path, conventions, max_persons)
            self.segments.append(seg)
            for row, name in enumerate(seg.names):
                self.where[name] = (i, row)
            if progress is not None:
                progress(i + 1, len(paths))


__all__ = ["SegmentIndex", "segment_paths"]
