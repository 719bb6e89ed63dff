"""Compact a cache: rewrite its many small segments into a few large ones (``msclr compact``).

``msclr extract`` commits every clip as its own segment (so a crash loses at most the clip in hand), which
leaves one small HDF5 file per clip: about 57,000 for NTU-60.  Opening a cache reads every segment's
index, and a bulk read touches every file.  Compaction copies the latest committed version of every clip,
successful or failed, into segments of ``segment_size`` clips, then the poses of conventions added later
(addition records, each restricted to the conventions it still provides), then deletes the old segment files.
The content does not change: poses, scores, frame indices, metadata, statuses, splits and the manifest are
kept bit for bit.

Crash safety: the new segments are committed (atomically, like any writer's) before any old one is
deleted, and they are named so that they sort right after the newest old segment.  Killed at any point,
the cache stays readable with the same content (a clip may exist twice for a while, with identical data).
Rerunning ``msclr compact`` finishes the job.

Concurrency: do not run it while another process writes to or reads from the cache.  It refuses to start
when a writer's unfinished segment (``*.partial``) is present.  The new segments sort before any segment
that another writer commits later, so a clip re-extracted during compaction still wins over its compacted
copy (this relies on the machines' clocks agreeing, like the cache's own ordering).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from msclr.errors import CacheError
from msclr.files import fsync_dir
from msclr.pipeline.cache.index import segment_paths
from msclr.pipeline.cache.manifest import SEGMENTS
from msclr.pipeline.cache.reader import Cache
from msclr.pipeline.cache.writer import CacheWriter

COMPACT_WRITER_ID = "compact"
_NS_PREFIX = re.compile(r"(\d{20})-")


@dataclass(frozen=True)
class CompactReport:
    """What a compaction did.

    Attributes:
        clips: clip records copied (any status).
        segments_before, segments_after: segment files before and after.
        bytes_before, bytes_after: total size of the segment files, bytes.
        seconds: wall time.
    """

    clips: int
    segments_before: int
    segments_after: int
    bytes_before: int
    bytes_after: int
    seconds: float


def _commit_ns(paths: list[Path]) -> int:
    """One more than the newest old segment's timestamp (or now, for segments without one)."""
    stamps = [int(m.group(1)) for p in paths if (m := _NS_PREFIX.match(p.name))]
    return (max(stamps) + 1) if len(stamps) == len(paths) and stamps else time.time_ns()


def compact_cache(root: str | os.PathLike[str], *, segment_size: int = 1024, max_segment_bytes: int = 1 << 30,
                  progress: Callable[[int, int], None] | None = None) -> CompactReport:
    """Rewrite the cache at ``root`` into segments of up to ``segment_size`` clips, then delete the old ones.

    Args:
        root: cache directory.
        segment_size: clips per new segment (1024: about 125 MB for NTU-sized clips of ntu_kinect_25 +
            smplx_42, M = 2, ~75 frames; 3,000 such clips took 366 MB).
        max_segment_bytes: also start a new segment when the buffered pose data exceed this size.
        progress: optional ``(done, total)`` callback, once per clip copied.

    Returns:
        :class:`CompactReport`.

    Raises:
        CacheError: not a cache, a writer's unfinished segment is present, or a segment cannot be read or
            written (the message says which and what to do).
    """
    t0 = time.perf_counter()
    root = Path(root)
    if not isinstance(segment_size, int) or segment_size < 1:
        raise CacheError(f"segment_size must be a positive integer, got {segment_size!r}")
    cache = Cache(root)
    partials = sorted(p.name for p in (root / SEGMENTS).glob("*.partial"))
    if partials:
        raise CacheError(
            f"{root} has {len(partials)} unfinished segment(s) (e.g. {partials[0]}): another process is writing "
            "to this cache, or one was killed. Let running writers finish (a rerun of the killed extract or "
            "import removes its own leftovers), then compact again"
        )
    old = segment_paths(root)
    bytes_before = sum(p.stat().st_size for p in old)
    # every committed record (any status), latest version of each name, in storage order
    names = cache.storage_order(list(cache.statuses()))
    writer = CacheWriter(root, None, writer_id=COMPACT_WRITER_ID, segment_size=segment_size,
                         max_segment_bytes=max_segment_bytes, commit_ns=_commit_ns(old), partial=True)
    with writer:
        for i, name in enumerate(names):
            writer.add(cache.clip(name))
            if progress is not None:
                progress(i + 1, len(names))
        writer.flush()  # every clip record first: the addition records below must sort after them
        for name in names:
            for addition in cache.additions(name):
                writer.add_poses(addition)
    old_set = set(old)
    check = Cache(root)
    stale = [n for n in check.statuses() if check.segments_of(n) & old_set]
    if stale:  # cannot happen unless a segment was swapped in underneath us; never delete data then
        raise CacheError(
            f"after compaction {len(stale)} clip(s) (e.g. {stale[0]!r}) still resolve to an old segment; "
            "nothing was deleted. Make sure no other process writes to the cache, then compact again"
        )
    for path in old:
        path.unlink(missing_ok=True)
    fsync_dir(root / SEGMENTS)
    new = segment_paths(root)
    return CompactReport(clips=len(names), segments_before=len(old), segments_after=len(new),
                         bytes_before=bytes_before, bytes_after=sum(p.stat().st_size for p in new),
                         seconds=time.perf_counter() - t0)


__all__ = ["CompactReport", "compact_cache", "COMPACT_WRITER_ID"]
