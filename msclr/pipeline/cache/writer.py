""":class:`CacheWriter`: append clips to a cache directory, crash-safely.

Crash safety and concurrency:

- A segment is built in memory, written under ``segments/<writer>@<host>.<pid>.<counter>.partial``, fsync'd,
  then ``os.replace``'d to ``segments/<time_ns>-<writer>-<pid>-<counter>.h5`` and the directory is
  fsync'd.  A killed writer leaves at most a ``*.partial`` file, which readers ignore; the next
  writer with the same writer id on the same host deletes partials of processes that no longer run.
  Out of space (full disk, quota, ``ulimit -f``) while writing: the partial is removed and a
  :class:`CacheError` says so (one line; committed segments untouched, a rerun resumes).
- Segment names sort in commit order (nanosecond wall clock at commit, made strictly increasing
  within a process): when a clip name is committed more than once, the segment that sorts last wins
  (a retried failure replaces the failure).  Across machines this relies on their clocks agreeing.
- Several processes or machines may fill one cache at once, each with its own ``writer_id``
  (distinct writer ids are required for writers that run at the same time).
- The manifest is created atomically (:mod:`.manifest`); a writer with other conventions than the cache's
  gets a :class:`CacheError` naming both sets, unless it was opened with ``extend=True``: then its new
  conventions are added to the manifest first, and :meth:`CacheWriter.add_poses` gives clips already in the
  cache the poses of those conventions, as *addition* segments (:mod:`.index`).  Killed at any point, the
  cache stays readable: a clip holds a convention once the addition segment that holds it is committed.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from msclr.errors import CacheError
from msclr.files import fsync_dir, pause_point
from msclr.pipeline.cache.clip import Clip, ClipStatus
from msclr.pipeline.cache.diskio import disk_error_reason, fsync_file, host_tag, pid_alive
from msclr.pipeline.cache.index import SegmentIndex
from msclr.pipeline.cache.manifest import (
    MANIFEST,
    SEGMENTS,
    SPLITS,
    check_conventions,
    create_manifest,
    manifest_skeletons,
    merge_conventions,
    normalise_skeletons,
    read_manifest,
    store_classes,
    update_splits,
)
from msclr.pipeline.cache.segments import encode_segment
from msclr.pipeline.cache.validate import validate_clip
from msclr.skeletons import Skeleton

_WRITER_RE = re.compile(r"[A-Za-z0-9_.+=]+")


def _checked_writer_id(writer_id: str | None, max_persons: int, segment_size: int,
                       compression: str | None) -> str:
    """Check the writer's options; its writer id (default: this host's name)."""
    if not isinstance(max_persons, int) or max_persons < 1:
        raise CacheError(f"max_persons must be a positive integer, got {max_persons!r}")
    if not isinstance(segment_size, int) or segment_size < 1:
        raise CacheError(f"segment_size must be a positive integer, got {segment_size!r}")
    if compression not in (None, "lzf", "gzip"):
        raise CacheError(f"compression must be None, 'lzf' or 'gzip', got {compression!r}")
    writer_id = writer_id or host_tag()
    if not _WRITER_RE.fullmatch(writer_id):
        raise CacheError(f"writer_id {writer_id!r} may only contain letters, digits and _ . + =")
    return writer_id


def _nbytes(clip: Clip) -> int:
    return sum(int(a.nbytes) for a in clip.poses.values())


_Group = tuple[bool, tuple[str, ...]]
"""A buffer of clips that go into one segment: (addition segment?, the conventions its clips hold)."""


class CacheWriter:
    """Append clips to a cache directory, crash-safely; one writer per process.

    Args:
        root: cache directory (created if missing).
        skeletons: the conventions this writer writes: a mapping name -> Skeleton, or an iterable of
            Skeletons / registry names / definition files; None to use an existing cache's.
            They must equal the conventions of an existing cache, unless ``extend``.
        max_persons: M, person slots per frame (fixed per cache; with ``skeletons=None`` and the
            default 2, an existing cache's M is used).
        classes: class names, or None; must agree with an existing cache's (an existing cache
            without class names gets them).
        writer_id: id unique among writers running at the same time (letters, digits, ``_.+=``);
            default: this host's name.
        segment_size: clips per committed segment (at most this many clips are lost on a crash).
        max_segment_bytes: also commit when the buffered pose data exceed this size.
        compression: None (default, fastest to read) or ``"lzf"`` / ``"gzip"`` for the pose datasets.
        commit_ns: nanosecond timestamp for every segment name this writer commits (default: the wall
            clock at each commit).  Compaction uses the newest replaced segment's + 1, so that its segments
            sort right after the ones they replace and before anything other writers commit later.
        extend: add the conventions of ``skeletons`` that an existing cache lacks to it (their definitions
            go into the manifest now); clips already in the cache get them through :meth:`add_poses`.
        partial: let :meth:`add` store ok clips that hold only some of the cache's conventions (compaction
            copies records as they are); by default a new clip must hold every convention of the cache.

    Attributes:
        done: names already committed (any status), including by this writer; resume skips them.
        skeletons: every convention of the cache (after ``extend``), name -> Skeleton.
        conventions: the names of the conventions this writer writes (``skeletons`` given, else all).

    Raises:
        CacheError: the directory is a file, a foreign directory, or a cache with other settings.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        skeletons: Mapping[str, Skeleton] | Iterable[Skeleton | str] | None,
        *,
        max_persons: int = 2,
        classes: Sequence[str] | None = None,
        writer_id: str | None = None,
        segment_size: int = 64,
        max_segment_bytes: int = 256 << 20,
        compression: str | None = None,
        commit_ns: int | None = None,
        extend: bool = False,
        partial: bool = False,
    ) -> None:
        self.root = Path(root)
        self.writer_id = _checked_writer_id(writer_id, max_persons, segment_size, compression)
        self.segment_size = segment_size
        self.max_segment_bytes = max_segment_bytes
        self.compression = compression
        self.partial = partial
        self._buffers: dict[_Group, dict[str, Clip]] = {}
        self._buffer_bytes = 0
        self._counter = 0
        self._last_ns = 0
        self._commit_ns = commit_ns
        self._closed = False
        self._partial_prefix = f"{self.writer_id}@{host_tag()}."
        self._open_cache(skeletons, max_persons, None if classes is None else [str(c) for c in classes], extend)
        (self.root / SEGMENTS).mkdir(exist_ok=True)
        self._remove_stale_partials()
        self._index = SegmentIndex(self.root, self.skeletons, self.max_persons)
        self.done: set[str] = set(self._index.where)
        self._ok_now: dict[str, bool] = {}  # clips this writer stored: status ok?

    def _open_cache(self, skeletons: Any, max_persons: int, classes: list[str] | None, extend: bool) -> None:
        """Create the cache or check this writer's settings against it; set the cache's settings."""
        wanted = normalise_skeletons(skeletons)
        if self.root.exists() and not self.root.is_dir():
            read_manifest(self.root)  # raises the "is a file" error
        if not (self.root / MANIFEST).exists():
            create_manifest(self.root, wanted, max_persons, classes)
        data = read_manifest(self.root)
        existing = manifest_skeletons(data, self.root / MANIFEST)
        if wanted and extend:
            existing = merge_conventions(self.root, data, existing, wanted)
        elif wanted:
            check_conventions(self.root, data, existing, wanted)
        self.conventions: list[str] = list(wanted or existing)
        if data["max_persons"] != max_persons and (skeletons is not None or max_persons != 2):
            raise CacheError(
                f"cache {self.root} stores {data['max_persons']} person slots per frame, this run "
                f"{max_persons}; use max_persons={data['max_persons']} or a new cache path"
            )
        self.max_persons: int = data["max_persons"]
        self.skeletons: dict[str, Skeleton] = existing
        self.classes: list[str] | None = store_classes(self.root, data, classes)

    # ---------------------------------------------------------------- public
    def __enter__(self) -> CacheWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
            return
        try:  # keep what was completed; never mask the original error
            self.close()
        except Exception:
            pass

    def add(self, clip: Clip) -> None:
        """Validate ``clip`` and buffer it as the clip's record; commits a segment every ``segment_size`` clips.

        An ok clip holds every convention of the cache (any non-empty subset with ``partial``).

        Raises:
            CacheError: the clip breaks the cache contract (the message says which field and how).
        """
        self._check_open()
        skeletons = self.skeletons
        if self.partial and clip.status == ClipStatus.OK and isinstance(clip.poses, Mapping):
            skeletons = self._subset(clip, "CacheWriter.add")
        clip = validate_clip(clip, skeletons, self.max_persons, self.classes)
        for group, buffered in self._buffers.items():  # a later add of the same name replaces it
            if not group[0] and clip.name in buffered:
                self._buffer_bytes -= _nbytes(buffered.pop(clip.name))
        if clip.status == ClipStatus.OK:
            held = tuple(sorted(clip.poses))
        else:  # a failure has no poses: it joins the clips buffered last, or a segment of every convention
            held = next((g[1] for g in reversed(self._buffers) if not g[0]), tuple(sorted(self.skeletons)))
        self._buffer((False, held), clip)
        self._ok_now[clip.name] = clip.status == ClipStatus.OK

    def add_poses(self, clip: Clip) -> None:
        """Give a clip already in the cache (status ok) the poses of more conventions (an addition record).

        ``clip.poses`` holds some of the cache's conventions, all with the same T (which may differ from the
        clip's other conventions); ``scores``, ``frame_indices``, ``fps``, ``source``, ``extractor`` and
        ``model_id`` describe these poses.  The clip's record (label, status, other conventions) is unchanged;
        for each convention given, these poses replace any the clip held before.

        Raises:
            CacheError: the clip is not in the cache with status ok, its status is not ok, or its poses break
                the cache contract.
        """
        self._check_open()
        if clip.status != ClipStatus.OK or not isinstance(clip.poses, Mapping) or not clip.poses:
            raise CacheError(f"clip {clip.name!r}: add_poses needs an ok clip with poses (status {clip.status!r})")
        if not self._ok_now.get(clip.name, self._index.is_ok(clip.name)):
            if clip.name in self.done:
                raise CacheError(f"clip {clip.name!r} has a failure status in cache {self.root}; only its ok "
                                 "clips get more conventions")
            raise CacheError(f"clip {clip.name!r} is not in cache {self.root}; add_poses only adds conventions "
                             "to clips the cache holds (CacheWriter.add stores new clips)")
        clip = validate_clip(clip, self._subset(clip, "CacheWriter.add_poses"), self.max_persons, self.classes)
        self._buffer((True, tuple(sorted(clip.poses))), clip)

    def flush(self) -> None:
        """Commit the buffered clips now, one segment per kind and convention set (atomic; no-op when empty)."""
        for group in list(self._buffers):
            self._flush_group(group)
        self._buffer_bytes = 0

    def _check_open(self) -> None:
        if self._closed:
            raise CacheError("this CacheWriter is closed; open a new one to add clips")

    def _subset(self, clip: Clip, what: str) -> dict[str, Skeleton]:
        """The cache's skeletons of the conventions ``clip.poses`` holds; :class:`CacheError` for others."""
        unknown = sorted(str(c) for c in clip.poses if c not in self.skeletons)
        if unknown or not clip.poses:
            raise CacheError(f"clip {clip.name!r}: {what} got poses of {unknown or 'no convention'}; the cache "
                             f"{self.root} holds {', '.join(self.skeletons)} (open the writer with extend=True "
                             "to add conventions)")
        return {c: self.skeletons[c] for c in clip.poses}

    def _buffer(self, group: _Group, clip: Clip) -> None:
        """Put a validated clip into its group's buffer; commit that group when it is full."""
        buffered = self._buffers.setdefault(group, {})
        old = buffered.pop(clip.name, None)
        if old is not None:
            self._buffer_bytes -= _nbytes(old)
        buffered[clip.name] = clip
        self._buffer_bytes += _nbytes(clip)
        if len(buffered) >= self.segment_size or self._buffer_bytes >= self.max_segment_bytes:
            self._flush_group(group)

    def _flush_group(self, group: _Group) -> None:
        clips = list(self._buffers.pop(group, {}).values())
        if not clips:
            return
        adds, conventions = group
        skeletons = {c: skel for c, skel in self.skeletons.items() if c in conventions}  # manifest order
        if adds:
            self._ensure_listed(skeletons)
        self._write_segment(clips, skeletons, adds)
        self._buffer_bytes = max(0, self._buffer_bytes - sum(_nbytes(c) for c in clips))
        if not adds:
            self.done.update(c.name for c in clips)

    def _ensure_listed(self, skeletons: Mapping[str, Skeleton]) -> None:
        """Re-add conventions to the manifest if a concurrent manifest update dropped them."""
        data = read_manifest(self.root)
        if any(name not in data["skeletons"] for name in skeletons):
            merge_conventions(self.root, data, manifest_skeletons(data, self.root / MANIFEST), skeletons)

    def set_splits(self, splits: Mapping[str, Sequence[str]]) -> None:
        """Store named splits (e.g. ``xsub_train``) in ``splits.json``, atomically.

        Splits given replace the stored splits of the same name; other stored splits are kept.
        (Concurrent ``set_splits`` from several writers are last-writer-wins per file.)
        """
        update_splits(self.root, splits)

    def close(self) -> None:
        """Commit buffered clips and close; idempotent."""
        if self._closed:
            return
        self.flush()
        self._closed = True

    # --------------------------------------------------------------- internals
    def _remove_stale_partials(self) -> None:
        """Delete ``*.partial`` segments of this writer id and temporary manifest / splits files
        left on this host by processes that no longer run."""
        seg_dir = self.root / SEGMENTS
        candidates = [(p, p.name[len(self._partial_prefix):], r"(\d+)\.\d+\.\d+\.partial")
                      for p in seg_dir.iterdir() if p.name.startswith(self._partial_prefix)]
        for base in (MANIFEST, SPLITS):
            prefix = f".{base}.{host_tag()}."
            candidates += [(p, p.name[len(prefix):], r"(\d+)\.\d+\.tmp")
                           for p in self.root.iterdir() if p.name.startswith(prefix)]
        for path, rest, pattern in candidates:
            match = re.fullmatch(pattern, rest)
            if match is None:
                continue
            pid = int(match.group(1))
            if pid != os.getpid() and not pid_alive(pid):
                path.unlink(missing_ok=True)

    def _next_ns(self) -> int:
        if self._commit_ns is not None:  # names stay unique through the per-writer counter
            return self._commit_ns
        self._last_ns = max(time.time_ns(), self._last_ns + 1)
        return self._last_ns

    def _write_segment(self, clips: list[Clip], skeletons: Mapping[str, Skeleton], adds: bool) -> None:
        """Commit ``clips`` as one segment of these conventions: write it as a partial file, fsync, rename, fsync
        the folder."""
        seg_dir = self.root / SEGMENTS
        self._counter += 1
        pid = os.getpid()
        partial = seg_dir / f"{self._partial_prefix}{pid}.{self._counter:06d}.{time.time_ns()}.partial"
        try:
            image = encode_segment(clips, skeletons, self.max_persons, self.writer_id, self.compression, adds)
            with open(partial, "wb") as fh:
                fh.write(image)
            image.release()  # frees the in-memory copy before the fsync
            fsync_file(partial)
            final = seg_dir / f"{self._next_ns():020d}-{self.writer_id}-{pid}-{self._counter:06d}.h5"
            pause_point("segment-written")  # test hook, inert unless $MSCLR_TEST_PAUSE is set
            os.replace(partial, final)
        except BaseException as err:
            partial.unlink(missing_ok=True)
            reason = disk_error_reason(err) if isinstance(err, Exception) else None
            if reason is not None:  # a user-fixable condition, not a bug: one clean line, no traceback
                raise CacheError(
                    f"cannot write a segment of {len(clips)} clip(s) to the cache {self.root}: {reason}. "
                    "Segments committed before are kept and the cache stays readable; free some space (or "
                    "move the cache to a bigger disk), then rerun the same command to resume"
                ) from err
            raise
        fsync_dir(seg_dir)
        pause_point("commit")  # test hook, inert unless $MSCLR_TEST_PAUSE is set


__all__ = ["CacheWriter"]
