"""The committed segments of a cache, which one holds the latest record of each clip, and which record holds
each clip's poses of each convention.

Segment names sort in commit order.  Two kinds of records:

- a **clip record** (in an ordinary segment) says that the clip exists, with its metadata and status; when a
  clip name is committed more than once, the record that sorts last wins (a retried failure replaces the
  failure);
- an **addition record** (in an addition segment) gives a clip already in the cache the poses of more
  conventions; it never replaces the clip record.

For every convention, the poses of a clip come from the latest record (of either kind, status ok) that holds
that convention.  A clip *holds* a convention when its latest clip record is ok and such a record exists.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from msclr.pipeline.cache.clip import ClipStatus
from msclr.pipeline.cache.manifest import SEGMENTS
from msclr.pipeline.cache.segments import Segment, read_segment
from msclr.skeletons import Skeleton

Location = tuple[int, int]
"""(segment number in commit order, row in that segment)."""


def segment_paths(root: Path) -> list[Path]:
    """The committed segment files of the cache ``root``, in commit order."""
    seg_dir = root / SEGMENTS
    if not seg_dir.is_dir():
        return []
    return sorted(p for p in seg_dir.iterdir() if p.suffix == ".h5" and not p.name.startswith("."))


class SegmentIndex:
    """Every committed segment of a cache; clip name -> its latest clip record, and per convention clip name ->
    the latest ok record holding it.

    Attributes:
        segments: the segments in commit order.
        where: clip name -> location of its latest clip record (any status).
        holders: convention -> {clip name -> location of the latest ok record holding it}; may name clips
            whose latest clip record is a failure (see :meth:`holds`).
    """

    def __init__(self, root: Path, conventions: Mapping[str, Skeleton], max_persons: int,
                 progress: Callable[[int, int], None] | None = None) -> None:
        paths = segment_paths(root)
        self.segments: list[Segment] = []
        self.where: dict[str, Location] = {}
        self.holders: dict[str, dict[str, Location]] = {c: {} for c in conventions}
        for i, path in enumerate(paths):
            seg = read_segment(path, conventions, max_persons)
            self.segments.append(seg)
            status = seg.meta["status"]
            for row, name in enumerate(seg.names):
                if not seg.adds:
                    self.where[name] = (i, row)
                if status[row] == ClipStatus.OK:
                    for conv in seg.conventions:
                        self.holders[conv][name] = (i, row)
            if progress is not None:
                progress(i + 1, len(paths))

    def is_ok(self, name: str) -> bool:
        """Whether the latest clip record of ``name`` has status ok."""
        loc = self.where.get(name)
        return loc is not None and self.segments[loc[0]].meta["status"][loc[1]] == ClipStatus.OK

    def holds(self, name: str) -> list[str]:
        """The conventions clip ``name`` holds (none when it is missing or its latest clip record failed)."""
        if not self.is_ok(name):
            return []
        return [c for c, held in self.holders.items() if name in held]


__all__ = ["Location", "SegmentIndex", "segment_paths"]
