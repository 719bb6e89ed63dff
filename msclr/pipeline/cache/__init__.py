"""The HDF5 skeleton cache: a crash-safe directory of immutable HDF5 segments.

Layout (see ``docs/CONTRACTS.md``)::

    CACHE/msclr-cache.json    {"format": "msclr-cache", "version": 1, "units": "m", "axes": AXES,
                               "max_persons": M, "skeletons": {name: Skeleton.to_dict()},
                               "classes": [...] | null}
    CACHE/splits.json         {split name: [clip names]}            (optional)
    CACHE/segments/*.h5       committed segments, immutable once written

Coordinates are metres in Kinect camera space: x towards the camera's left, y up, z forward
(away from the camera).  Every array stored for a convention is ``(T, M, V, 3)`` float32 at the
clip's raw length T (no resampling), M = the cache's ``max_persons`` person slots (an unused slot
is all zeros), V = the convention's joint count.

One segment file holds up to ``segment_size`` clips.  Ragged clips are concatenated along time, so
a bulk read is one dataset read per segment and convention::

    /meta                       scalar UTF-8 JSON: columns name, label, subject, camera, setup,
                                replication, frames, fps, persons, source, extractor, model_id,
                                status, message, has_scores, has_frame_indices, and "offsets"
                                (N + 1 row offsets into the time-concatenated datasets)
    /poses/<convention>         (sum T, M, V, 3) float32   (only status == "ok" clips have rows)
    /scores                     (sum T, M) float32, NaN where unknown
    /frame_indices              (sum T,) int64, -1 where unknown
    attrs                       format="msclr-cache-segment", version, units, axes, writer_id, clips
    HDF5 user block             the seal (first 512 bytes; :mod:`msclr.pipeline.cache.seal`): a checksum
                                of every byte but the raw pose arrays, checked before h5py opens the file
                                (damaged HDF5 metadata can hang libhdf5)

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
- ``msclr-cache.json`` is created with a hard link of a fully written temporary file (atomic and
  never overwritten), so writers that create the same cache concurrently with identical settings all
  succeed.  The skeleton set and ``max_persons`` of a cache are fixed when it is created: a writer
  with other conventions gets a :class:`CacheError` naming both sets and suggesting a new cache path.
- ``splits.json`` and updates of ``msclr-cache.json`` (classes added later) use temp file + fsync +
  ``os.replace``.

Reading: ``Cache(root)`` reads every segment's ``/meta`` (one small read per segment); ``poses``
reads uncompressed contiguous datasets straight from the file at the byte offset HDF5 reports
(no per-call h5py overhead; compressed datasets go through h5py).  Batches taken in
``Cache.storage_order()`` make every read a whole-segment read.  ``bench/cache_io.py`` measures it:
at NTU60 size (56,880 clips x ntu_kinect_25 + smplx_42, 6.8 GB) write and storage-order reads run at
the speed of a plain numpy file on the same disk (writes measured before segments were built in
memory first, which costs ~1.5x on writes, see ``CacheWriter._write_segment``); lzf saves ~37 % of the
size but writes ~3.5x and reads ~3-4x slower, so the default is no compression.

h5py is imported lazily (``msclr --help`` must stay fast).
"""

from __future__ import annotations

import errno
import io
import json
import math
import os
import re
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from msclr.errors import CacheError, MsclrError
from msclr.files import atomic_write_text as _atomic_write_text
from msclr.files import fsync_dir
from msclr.pipeline.cache import seal as segment_seal
from msclr.skeletons import Skeleton, get_skeleton

FORMAT = "msclr-cache"
SEGMENT_FORMAT = "msclr-cache-segment"
VERSION = 1
UNITS = "m"
AXES = "kinect-camera: x towards the camera's left, y up, z forward (away from the camera)"
MANIFEST = "msclr-cache.json"
SPLITS = "splits.json"
SEGMENTS = "segments"

MAX_ABS_METRES = 100.0
"""Coordinates beyond this (in metres) are rejected: almost surely millimetres not divided by 1000."""

_INT_FIELDS = ("label", "subject", "camera", "setup", "replication")
_STR_FIELDS = ("source", "extractor", "model_id", "status", "message")
_NAME_RE = re.compile(r"[^\x00-\x1f/\x7f]+")
_WRITER_RE = re.compile(r"[A-Za-z0-9_.+=]+")


# ----------------------------------------------------------------------------- clip
@dataclass(eq=False)
class Clip:
    """One clip: raw-length poses per convention plus metadata.

    Attributes:
        name: unique id (NTU sample name such as ``S001C001P001R001A001`` or a video stem);
            non-empty, no ``/``.
        poses: convention -> ``(T, M, V, 3)`` float32 metres, Kinect camera axes; every convention
            of the cache for an ``"ok"`` clip, none for a failed clip.  All conventions share T.
        label: 0-based class, -1 unknown.
        subject, camera, setup, replication: dataset fields, -1 unknown.
        fps: frames per second of the source, NaN unknown.
        source: source file.
        extractor: ``"metrabs"``, ``"mediapipe"``, ``"import-ntu"``, ``"import-pyskl"``, ``"synthetic"``.
        model_id: pose model URL / path / version.
        persons: person slots actually used (``0 <= persons <= M``); 0 on an ``"ok"`` clip means
            "not given" and is inferred on :meth:`CacheWriter.add` as the number of non-zero slots.
        scores: ``(T, M)`` float32 per-frame person score (NaN unknown), or None.
        frame_indices: ``(T,)`` int64 frame index of each row in the source video, or None.
        status: ``"ok"`` or a failure status (``"decode_error"``, ``"no_person"``, ...).
        message: human-readable detail for a failure.
    """

    name: str
    poses: dict[str, np.ndarray] = field(default_factory=dict)
    label: int = -1
    subject: int = -1
    camera: int = -1
    setup: int = -1
    replication: int = -1
    fps: float = math.nan
    source: str = ""
    extractor: str = ""
    model_id: str = ""
    persons: int = 0
    scores: np.ndarray | None = None
    frame_indices: np.ndarray | None = None
    status: str = "ok"
    message: str = ""

    @property
    def frames(self) -> int:
        """T, the number of stored frames (0 for a failed clip)."""
        for array in self.poses.values():
            return int(np.shape(array)[0])
        return 0


# --------------------------------------------------------------------- file helpers
def _h5py() -> Any:
    import h5py

    return h5py


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDWR)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_.+=]", "_", socket.gethostname() or "host")


def _tmp_name(final: Path) -> Path:
    return final.with_name(f".{final.name}.{_host()}.{os.getpid()}.{time.time_ns()}.tmp")


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` atomically; the temporary name carries host and pid so stale ones can be cleaned."""
    _atomic_write_text(path, text, tmp=_tmp_name(Path(path)))


def _create_exclusive(path: Path, text: str) -> bool:
    """Create ``path`` with ``text`` atomically unless it exists; True if this call created it.

    The content is written and fsync'd under a temporary name and hard-linked into place, so no
    reader ever sees a partly written file and a concurrent creator never overwrites it.
    """
    tmp = _tmp_name(path)
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        except OSError:  # a file system without hard links: best effort
            if path.exists():
                return False
            os.replace(tmp, path)
        fsync_dir(path.parent)
        return True
    finally:
        tmp.unlink(missing_ok=True)


_DISK_ERRNOS = {
    errno.ENOSPC: "the disk is full (no space left on device)",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EFBIG: "a file-size limit was reached (ulimit -f) or the disk is full",
}


def disk_error_reason(err: BaseException) -> str | None:
    """What a failed write ran into when it is out of space (full disk, quota, file-size limit), else None.

    The exception chain is searched: h5py reports a failed write as ``OSError`` with ``errno`` set, but a
    failed close after it as a ``RuntimeError`` whose text carries ``errno = 27``, chained to the first.
    """
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        code = getattr(current, "errno", None)
        if code is None:
            match = re.search(r"errno = (\d+)", str(current))
            code = int(match.group(1)) if match else None
        if code in _DISK_ERRNOS:
            return _DISK_ERRNOS[code]
        current = current.__cause__ or current.__context__
    return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _is_hdf5(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(8) in (segment_seal.HDF5_SIGNATURE, segment_seal.MAGIC)
    except OSError:
        return False


# ------------------------------------------------------------------------ manifest
def _normalise_skeletons(skeletons: Any) -> dict[str, Skeleton]:
    """Accept a mapping name -> Skeleton, or an iterable of Skeletons / registry names / files."""
    if skeletons is None:
        return {}
    if isinstance(skeletons, str | Skeleton):
        skeletons = [skeletons]
    items = list(skeletons.values()) if isinstance(skeletons, Mapping) else list(skeletons)
    out: dict[str, Skeleton] = {}
    for item in items:
        skel = get_skeleton(item)
        if skel.name in out and out[skel.name] != skel:
            raise CacheError(f"two different skeleton definitions are both named {skel.name!r}")
        out[skel.name] = skel
    return out


def _skeleton_dict(skel: Skeleton) -> dict[str, Any]:
    return skel.to_dict()


def _describe(skeletons: Mapping[str, Any]) -> str:
    return ", ".join(f"{n} ({len(d['joints'])} joints)" for n, d in skeletons.items()) or "none"


def read_manifest(root: Path) -> dict[str, Any]:
    """Read and check ``root/msclr-cache.json``; :class:`CacheError` naming the file and the fix."""
    root = Path(root)
    made_by = "a msclr cache is a directory made by `msclr extract` or `msclr import`"
    if not root.exists():
        raise CacheError(
            f"cache {root} does not exist; create it with `msclr extract VIDEOS --out {root}` or "
            f"`msclr import ntu|pyskl ... --out {root}`"
        )
    if not root.is_dir():
        kind = "an HDF5 file" if _is_hdf5(root) else "a file"
        raise CacheError(
            f"{root} is {kind}, not a cache directory; {made_by} (it contains {MANIFEST} and "
            f"{SEGMENTS}/); pass that directory instead"
        )
    manifest = root / MANIFEST
    if not manifest.is_file():
        raise CacheError(
            f"{root} is not a msclr cache: {manifest} is missing; {made_by}. If an extraction was "
            "killed before writing anything, rerun it"
        )
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CacheError(f"{manifest} cannot be read as JSON ({err}); {made_by}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CacheError(f"{manifest} is not a msclr cache manifest (no \"format\": \"{FORMAT}\"); {made_by}")
    version = data.get("version")
    if not isinstance(version, int) or version < 1:
        raise CacheError(f"{manifest} has an invalid version {version!r}; {made_by}")
    if version > VERSION:
        raise CacheError(
            f"{manifest} was written by a newer msclr (cache format version {version}; this msclr "
            f"reads version {VERSION}); upgrade msclr (pip install -U msclr)"
        )
    for key, kind in (("max_persons", int), ("skeletons", dict)):
        if not isinstance(data.get(key), kind):
            raise CacheError(f"{manifest}: missing or invalid {key!r}; {made_by}")
    # a cache has at least one convention and one person slot (an empty table made every clip
    # readable with no conventions at all; found by tests/test_fuzz_cache.py)
    if isinstance(data["max_persons"], bool) or data["max_persons"] < 1 or not data["skeletons"]:
        raise CacheError(f"{manifest}: 'max_persons' must be >= 1 and 'skeletons' non-empty; {made_by}")
    classes = data.get("classes")
    if classes is not None and not (isinstance(classes, list) and all(isinstance(c, str) for c in classes)):
        raise CacheError(f"{manifest}: 'classes' must be a list of names or null")
    return data


def _manifest_dict(skeletons: Mapping[str, Skeleton], max_persons: int, classes: list[str] | None) -> dict:
    return {
        "format": FORMAT,
        "version": VERSION,
        "units": UNITS,
        "axes": AXES,
        "max_persons": max_persons,
        "skeletons": {n: _skeleton_dict(s) for n, s in skeletons.items()},
        "classes": classes,
    }


def _rebuild_skeletons(data: Mapping[str, Any], manifest: Path) -> dict[str, Skeleton]:
    out = {}
    for name, d in data["skeletons"].items():
        try:
            out[name] = Skeleton.from_dict(d, origin=f"{manifest} skeleton {name!r}")
        except MsclrError as err:
            raise CacheError(f"{err}; the cache manifest is damaged, re-create the cache") from None
        if out[name].name != name:
            raise CacheError(f"{manifest}: skeleton stored under {name!r} is named {out[name].name!r}; "
                             "the cache manifest is damaged, re-create the cache")
    return out


# ------------------------------------------------------------------------ segments
@dataclass
class _Segment:
    path: Path
    meta: dict[str, list[Any]]
    offsets: np.ndarray  # (N + 1,) int64
    raw: dict[str, int | None] = field(default_factory=dict)
    """Byte offset in the file of each convention's contiguous, unfiltered little-endian float32
    pose data (None: read through h5py, e.g. compressed or empty)."""

    @property
    def names(self) -> list[str]:
        return self.meta["name"]


_META_COLUMNS = ("name", *_INT_FIELDS, "frames", "fps", "persons", *_STR_FIELDS, "has_scores",
                 "has_frame_indices")


_H5_ERRORS = (KeyError, ValueError, TypeError, OSError, AttributeError, OverflowError)
"""What h5py raises on a damaged file (e.g. TypeError "Unknown string encoding" for a flipped type message)."""


def _raw_range(ds: Any) -> tuple[int, int] | None:
    """(file offset, bytes) of a dataset stored contiguous, unfiltered, little-endian float32 and non-empty:
    the pose data that :meth:`Cache.poses` reads with plain reads and that a segment's seal leaves out.
    None otherwise (chunked / compressed, or nothing stored)."""
    if ds.chunks is not None or ds.compression is not None or ds.dtype != np.dtype("<f4"):
        return None
    offset, size = ds.id.get_offset(), ds.id.get_storage_size()
    return None if offset is None or size == 0 else (offset, size)


def _corrupt(path: Path, detail: str) -> CacheError:
    return CacheError(
        f"cache segment {path} is unreadable ({detail}); delete this file and rerun the same "
        "`msclr extract` / `msclr import` command to redo its clips"
    )


def _check_meta(path: Path, meta: dict[str, list[Any]], offsets: np.ndarray, max_persons: int) -> None:
    """Check the types and ranges of a segment's metadata columns (lengths already agree).

    A damaged segment must fail here with the file named, not later with a raw ValueError /
    TypeError deep inside :meth:`Cache.metadata` or a silently wrong slice of the pose data
    (found by ``tests/test_fuzz_cache.py``).
    """

    def bad(column: str, what: str) -> CacheError:
        return _corrupt(path, f"metadata column {column!r} {what}")

    if not all(isinstance(v, str) and _NAME_RE.fullmatch(v) for v in meta["name"]):
        raise bad("name", "holds something that is not a clip name")
    for col in (*_INT_FIELDS, "frames", "persons"):
        if not all(type(v) is int and -(2**63) <= v < 2**63 for v in meta[col]):
            raise bad(col, "holds something that is not a 64-bit integer")
    for col in _STR_FIELDS:
        if not all(isinstance(v, str) for v in meta[col]):
            raise bad(col, "holds something that is not a string")
    for col in ("has_scores", "has_frame_indices"):
        if not all(isinstance(v, bool) for v in meta[col]):
            raise bad(col, "holds something that is not true/false")
    if not all(v is None or (type(v) in (int, float) and math.isfinite(v)) for v in meta["fps"]):
        raise bad("fps", "holds something that is not a finite number or null")
    if not all(0 <= v <= max_persons for v in meta["persons"]):
        raise bad("persons", f"is outside 0..{max_persons}")
    for status, frames in zip(meta["status"], meta["frames"], strict=True):
        if (frames < 1) if status == "ok" else (frames != 0):
            raise bad("frames", f"gives {frames} frames to a clip with status {status!r}")
    if offsets[0] != 0 or not np.array_equal(np.diff(offsets), np.asarray(meta["frames"], dtype=np.int64)):
        raise bad("offsets", "does not match the clips' frame counts")


def _open_h5(path: Path) -> Any:
    h5py = _h5py()
    try:
        return h5py.File(path, "r", locking=False)
    except (OSError, ValueError) as err:
        raise _corrupt(path, str(err).splitlines()[0] if str(err) else type(err).__name__) from None


def _read_segment_index(path: Path, conventions: Mapping[str, Skeleton], max_persons: int) -> _Segment:
    """Check a segment's seal, read its metadata and check its structure (shapes only, no pose data)."""
    try:
        sealed = segment_seal.verify(path)
    except segment_seal.SealError as err:
        raise _corrupt(path, f"checksum failed: {err}") from None
    except OSError as err:
        raise _corrupt(path, str(err)) from None
    with _open_h5(path) as f:
        try:
            if f.attrs.get("format") != SEGMENT_FORMAT:
                raise CacheError(
                    f"cache segment {path} is unreadable: an HDF5 file but not a msclr cache segment (no "
                    f"format={SEGMENT_FORMAT!r} attribute); {path.parent} may hold only the segments msclr "
                    "writes: move this file out of it (if it was a segment that got damaged, delete it and "
                    "rerun the same `msclr extract` / `msclr import` command to redo its clips)"
                )
            version = int(f.attrs.get("version", 0))
            if version > VERSION:
                raise CacheError(
                    f"cache segment {path} was written by a newer msclr (segment version {version}); "
                    "upgrade msclr (pip install -U msclr)"
                )
            raw = f["meta"][()]
            meta = json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw)
            offsets = np.asarray(meta.pop("offsets"), dtype=np.int64)
            n = len(meta["name"])
            if any(len(meta[c]) != n for c in _META_COLUMNS) or offsets.shape != (n + 1,):
                raise _corrupt(path, "metadata columns disagree in length")
            _check_meta(path, meta, offsets, max_persons)
            total = int(offsets[-1])
            raw: dict[str, int | None] = {}
            pose_ranges: list[tuple[int, int]] = []
            for conv, skel in conventions.items():
                ds = f["poses"][conv]
                shape = ds.shape
                if shape != (total, max_persons, skel.num_joints, 3):
                    raise _corrupt(path, f"poses/{conv} has shape {shape}, expected "
                                         f"{(total, max_persons, skel.num_joints, 3)}")
                span = _raw_range(ds)
                raw[conv] = None if span is None else span[0]
                if span is not None:
                    pose_ranges.append(span)
            if sealed is not None and sorted(pose_ranges) != sealed:
                raise _corrupt(path, "the seal's unchecked byte ranges are not the pose data's")
            if f["scores"].shape != (total, max_persons) or f["frame_indices"].shape != (total,):
                raise _corrupt(path, "scores / frame_indices have the wrong shape")
        except CacheError:
            raise
        except _H5_ERRORS as err:
            raise _corrupt(path, f"{type(err).__name__}: {err}") from None
    return _Segment(path, meta, offsets, raw)


def _segment_paths(root: Path) -> list[Path]:
    seg_dir = root / SEGMENTS
    if not seg_dir.is_dir():
        return []
    return sorted(p for p in seg_dir.iterdir() if p.suffix == ".h5" and not p.name.startswith("."))


class _Index:
    """Name -> (segment, row), latest segment wins."""

    def __init__(self, root: Path, conventions: Mapping[str, Skeleton], max_persons: int,
                 progress: Callable[[int, int], None] | None = None) -> None:
        paths = _segment_paths(root)
        self.segments: list[_Segment] = []
        self.where: dict[str, tuple[int, int]] = {}
        for i, path in enumerate(paths):
            seg = _read_segment_index(path, conventions, max_persons)
            self.segments.append(seg)
            for row, name in enumerate(seg.names):
                self.where[name] = (i, row)
            if progress is not None:
                progress(i + 1, len(paths))


# -------------------------------------------------------------------------- writer
class CacheWriter:
    """Append clips to a cache directory, crash-safely; one writer per process.

    Args:
        root: cache directory (created if missing).
        skeletons: the cache's conventions: a mapping name -> Skeleton, or an iterable of
            Skeletons / registry names / definition files; None to use an existing cache's.
            They must equal the conventions of an existing cache.
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

    Attributes:
        done: names already committed (any status), including by this writer; resume skips them.

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
    ) -> None:
        self.root = Path(root)
        if not isinstance(max_persons, int) or max_persons < 1:
            raise CacheError(f"max_persons must be a positive integer, got {max_persons!r}")
        if not isinstance(segment_size, int) or segment_size < 1:
            raise CacheError(f"segment_size must be a positive integer, got {segment_size!r}")
        if compression not in (None, "lzf", "gzip"):
            raise CacheError(f"compression must be None, 'lzf' or 'gzip', got {compression!r}")
        writer_id = writer_id or _host()
        if not _WRITER_RE.fullmatch(writer_id):
            raise CacheError(f"writer_id {writer_id!r} may only contain letters, digits and _ . + =")
        self.writer_id = writer_id
        self.segment_size = segment_size
        self.max_segment_bytes = max_segment_bytes
        self.compression = compression
        self._buffer: dict[str, Clip] = {}
        self._buffer_bytes = 0
        self._counter = 0
        self._last_ns = 0
        self._commit_ns = commit_ns
        self._closed = False
        self._partial_prefix = f"{writer_id}@{_host()}."

        wanted = _normalise_skeletons(skeletons)
        class_list = None if classes is None else [str(c) for c in classes]
        if self.root.exists() and not self.root.is_dir():
            read_manifest(self.root)  # raises the "is a file" error
        manifest = self.root / MANIFEST
        if not manifest.exists():
            if not wanted:
                raise CacheError(f"{self.root} is not a cache yet: give the skeleton conventions to create it")
            ours = {SEGMENTS, MANIFEST, SPLITS}  # MANIFEST: a concurrent writer may just have made it
            if self.root.is_dir() and any(p.name not in ours and not p.name.startswith(".")
                                          for p in self.root.iterdir()):
                raise CacheError(
                    f"{self.root} already contains other files but no {MANIFEST}; choose an empty or "
                    "new directory for the cache"
                )
            self.root.mkdir(parents=True, exist_ok=True)
            text = json.dumps(_manifest_dict(wanted, max_persons, class_list), indent=1)
            _create_exclusive(manifest, text)  # False: a concurrent writer created it; checked below
        data = read_manifest(self.root)
        existing = _rebuild_skeletons(data, manifest)
        if wanted:
            same = set(wanted) == set(existing) and all(
                _skeleton_dict(wanted[n]) == _skeleton_dict(existing[n]) for n in wanted)
            if not same:
                raise CacheError(
                    f"cache {self.root} holds conventions {_describe(data['skeletons'])}, but this run "
                    f"writes {_describe({n: s.to_dict() for n, s in wanted.items()})}; the conventions "
                    "of a cache are fixed when it is created, so write to a new cache path (--out)"
                )
        if data["max_persons"] != max_persons and (skeletons is not None or max_persons != 2):
            raise CacheError(
                f"cache {self.root} stores {data['max_persons']} person slots per frame, this run "
                f"{max_persons}; use max_persons={data['max_persons']} or a new cache path"
            )
        self.max_persons: int = data["max_persons"]
        self.skeletons: dict[str, Skeleton] = existing
        stored_classes = data.get("classes")
        if class_list is not None and stored_classes != class_list:
            if stored_classes is None:
                data["classes"] = class_list
                atomic_write_text(manifest, json.dumps(data, indent=1))
            else:
                raise CacheError(
                    f"cache {self.root} has {len(stored_classes)} class names that differ from this "
                    f"run's {len(class_list)} (first stored: {stored_classes[:3]}); the class list is "
                    "fixed once set, so write to a new cache path"
                )
        self.classes: list[str] | None = data.get("classes")
        (self.root / SEGMENTS).mkdir(exist_ok=True)
        self._remove_stale_partials()
        index = _Index(self.root, self.skeletons, self.max_persons)
        self.done: set[str] = set(index.where)

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
        """Validate ``clip`` and buffer it; commits a segment every ``segment_size`` clips.

        Raises:
            CacheError: the clip breaks the cache contract (the message says which field and how).
        """
        if self._closed:
            raise CacheError("this CacheWriter is closed; open a new one to add clips")
        clip = self._validate(clip)
        old = self._buffer.pop(clip.name, None)
        if old is not None:
            self._buffer_bytes -= _nbytes(old)
        self._buffer[clip.name] = clip
        self._buffer_bytes += _nbytes(clip)
        if len(self._buffer) >= self.segment_size or self._buffer_bytes >= self.max_segment_bytes:
            self.flush()

    def flush(self) -> None:
        """Commit the buffered clips now as one segment (atomic; no-op when nothing is buffered)."""
        if not self._buffer:
            return
        clips = list(self._buffer.values())
        self._write_segment(clips)
        self.done.update(c.name for c in clips)
        self._buffer.clear()
        self._buffer_bytes = 0

    def set_splits(self, splits: Mapping[str, Sequence[str]]) -> None:
        """Store named splits (e.g. ``xsub_train``) in ``splits.json``, atomically.

        Splits given replace the stored splits of the same name; other stored splits are kept.
        (Concurrent ``set_splits`` from several writers are last-writer-wins per file.)
        """
        clean: dict[str, list[str]] = {}
        for key, names in splits.items():
            if not isinstance(key, str) or not key:
                raise CacheError(f"split names must be non-empty strings, got {key!r}")
            if isinstance(names, str):
                raise CacheError(f"split {key!r} must be a list of clip names, not a string")
            names = list(names)
            bad = [n for n in names if not isinstance(n, str) or not n]
            if bad:
                raise CacheError(f"split {key!r} contains invalid clip names, e.g. {bad[0]!r}")
            clean[key] = names
        path = self.root / SPLITS
        current = _read_splits(self.root)
        current.update(clean)
        atomic_write_text(path, json.dumps(current))

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
            prefix = f".{base}.{_host()}."
            candidates += [(p, p.name[len(prefix):], r"(\d+)\.\d+\.tmp")
                           for p in self.root.iterdir() if p.name.startswith(prefix)]
        for path, rest, pattern in candidates:
            match = re.fullmatch(pattern, rest)
            if match is None:
                continue
            pid = int(match.group(1))
            if pid != os.getpid() and not _pid_alive(pid):
                path.unlink(missing_ok=True)

    def _validate(self, clip: Clip) -> Clip:
        if not isinstance(clip, Clip):
            raise CacheError(f"CacheWriter.add expects a Clip, got {type(clip).__name__}")
        name = clip.name
        if not isinstance(name, str) or not name or not _NAME_RE.fullmatch(name) or name != name.strip():
            raise CacheError(
                f"clip name {name!r} is invalid: it must be a non-empty string without '/', control "
                "characters or surrounding spaces"
            )
        where = f"clip {name!r}"
        if not isinstance(clip.status, str) or not clip.status:
            raise CacheError(f"{where}: status must be 'ok' or a failure status such as 'decode_error'")
        for f in _INT_FIELDS + ("persons",):
            value = getattr(clip, f)
            if isinstance(value, bool) or not isinstance(value, int | np.integer):
                raise CacheError(f"{where}: {f} must be an integer, got {value!r}")
        for f in _STR_FIELDS:
            if not isinstance(getattr(clip, f), str):
                raise CacheError(f"{where}: {f} must be a string, got {getattr(clip, f)!r}")
        try:
            fps = float(clip.fps)
        except (TypeError, ValueError):
            raise CacheError(f"{where}: fps must be a number (NaN if unknown), got {clip.fps!r}") from None
        if not (math.isnan(fps) or (math.isfinite(fps) and fps > 0)):
            raise CacheError(f"{where}: fps must be positive or NaN (unknown), got {fps}")
        label = int(clip.label)
        if label < -1:
            raise CacheError(f"{where}: label must be a 0-based class or -1 (unknown), got {label}")
        if self.classes is not None and label >= len(self.classes):
            raise CacheError(f"{where}: label {label} is outside the cache's {len(self.classes)} classes")
        if not isinstance(clip.poses, Mapping):
            raise CacheError(f"{where}: poses must be a dict convention -> (T, M, V, 3) array")
        m = self.max_persons
        persons = int(clip.persons)
        if not 0 <= persons <= m:
            raise CacheError(f"{where}: persons={persons} must be between 0 and max_persons={m}")
        if clip.status != "ok":
            if clip.poses:
                raise CacheError(
                    f"{where}: a failed clip (status {clip.status!r}) must have no poses; "
                    "use status='ok' for a clip with skeletons"
                )
            for f in ("scores", "frame_indices"):
                value = getattr(clip, f)
                if value is not None and np.size(value) != 0:
                    raise CacheError(f"{where}: a failed clip (status {clip.status!r}) stores no {f}")
            return _copy_clip(clip, {}, None, None, fps, label, persons)
        missing = sorted(set(self.skeletons) - set(clip.poses))
        extra = sorted(set(clip.poses) - set(self.skeletons))
        if missing or extra:
            raise CacheError(
                f"{where}: an 'ok' clip needs poses for exactly the cache's conventions "
                f"{sorted(self.skeletons)}; missing {missing}, unexpected {extra}"
            )
        poses: dict[str, np.ndarray] = {}
        t_common: int | None = None
        for conv, skel in self.skeletons.items():
            arr = np.asarray(clip.poses[conv])
            what = f"{where} poses[{conv!r}]"
            if not np.issubdtype(arr.dtype, np.floating):
                raise CacheError(f"{what}: dtype {arr.dtype} is not floating point; give float32 metres")
            v = skel.num_joints
            if arr.ndim != 4 or arr.shape[1:] != (m, v, 3) or arr.shape[0] < 1:
                raise CacheError(
                    f"{what}: shape {arr.shape}, expected (T, M={m}, V={v}, 3) with T >= 1 "
                    "(pad unused person slots with zeros)"
                )
            if t_common is None:
                t_common = arr.shape[0]
            elif arr.shape[0] != t_common:
                raise CacheError(f"{what}: {arr.shape[0]} frames, other conventions have {t_common}; "
                                 "all conventions of a clip must cover the same frames")
            arr = np.ascontiguousarray(arr, dtype=np.float32)
            peak = float(np.abs(arr).max())  # one pass: NaN / inf propagate into the peak
            if not math.isfinite(peak):
                raise CacheError(f"{what}: contains NaN or infinite values; store empty slots as zeros")
            if peak > MAX_ABS_METRES:
                raise CacheError(
                    f"{what}: coordinates up to {peak:.0f}, but the cache stores metres; "
                    "convert millimetres with / 1000"
                )
            poses[conv] = arr
        assert t_common is not None
        scores = None
        if clip.scores is not None:
            scores = np.asarray(clip.scores)
            if scores.shape != (t_common, m) or not np.issubdtype(scores.dtype, np.floating):
                raise CacheError(f"{where}: scores must be a float (T={t_common}, M={m}) array, "
                                 f"got {scores.dtype} {scores.shape}")
            scores = np.ascontiguousarray(scores, dtype=np.float32)
        frame_indices = None
        if clip.frame_indices is not None:
            frame_indices = np.asarray(clip.frame_indices)
            if frame_indices.shape != (t_common,) or not np.issubdtype(frame_indices.dtype, np.integer):
                raise CacheError(f"{where}: frame_indices must be an integer (T={t_common},) array, "
                                 f"got {frame_indices.dtype} {frame_indices.shape}")
            frame_indices = np.ascontiguousarray(frame_indices, dtype=np.int64)
        if persons == 0:
            first = next(iter(poses.values()))
            persons = int(np.any(first != 0, axis=(0, 2, 3)).sum())
        return _copy_clip(clip, poses, scores, frame_indices, fps, label, persons)

    def _next_ns(self) -> int:
        if self._commit_ns is not None:  # names stay unique through the per-writer counter
            return self._commit_ns
        self._last_ns = max(time.time_ns(), self._last_ns + 1)
        return self._last_ns

    def _write_segment(self, clips: list[Clip]) -> None:
        h5py = _h5py()
        seg_dir = self.root / SEGMENTS
        self._counter += 1
        pid = os.getpid()
        partial = seg_dir / f"{self._partial_prefix}{pid}.{self._counter:06d}.{time.time_ns()}.partial"
        m = self.max_persons
        frames = [c.frames for c in clips]
        offsets = np.zeros(len(clips) + 1, dtype=np.int64)
        np.cumsum(frames, out=offsets[1:])
        total = int(offsets[-1])
        meta: dict[str, list[Any]] = {c: [] for c in _META_COLUMNS}
        for c in clips:
            meta["name"].append(c.name)
            for f in _INT_FIELDS:
                meta[f].append(int(getattr(c, f)))
            meta["frames"].append(c.frames)
            meta["fps"].append(None if math.isnan(c.fps) else float(c.fps))
            meta["persons"].append(int(c.persons))
            for f in _STR_FIELDS:
                meta[f].append(getattr(c, f))
            meta["has_scores"].append(c.scores is not None)
            meta["has_frame_indices"].append(c.frame_indices is not None)
        meta["offsets"] = offsets.tolist()  # type: ignore[assignment]
        ok = [c for c in clips if c.poses]
        scores = np.full((total, m), np.nan, dtype=np.float32)
        frame_indices = np.full((total,), -1, dtype=np.int64)
        for c, start in zip(clips, offsets[:-1], strict=True):
            if c.scores is not None:
                scores[start:start + c.frames] = c.scores
            if c.frame_indices is not None:
                frame_indices[start:start + c.frames] = c.frame_indices
        try:
            # Built in memory, then written with plain Python I/O: a full disk (ENOSPC, quota, ulimit -f)
            # is then a clean OSError from write().  Written by HDF5 itself, a failed write left the
            # library holding a file it could neither flush nor close, and the next HDF5 call of the
            # process crashed it (SIGSEGV; found by tests/test_disk_full.py).  Costs one copy of the
            # segment in memory and write speed: bench/cache_io.py --clips 5000 wrote 0.6 GB in 3.8-5.7 s
            # instead of 2.2-3.8 s on the development VM (extraction, one small segment per clip, does
            # not notice; a bulk import does).
            # The user block takes the seal (segment_seal): a checksum of everything but the raw pose data,
            # checked before HDF5 opens the file, because damaged HDF5 metadata can hang libhdf5.
            userblock = segment_seal.userblock_size(len(self.skeletons))
            pose_ranges: list[tuple[int, int]] = []
            image = io.BytesIO()
            with h5py.File(image, "w", userblock_size=userblock) as f:
                f.attrs["format"] = SEGMENT_FORMAT
                f.attrs["version"] = VERSION
                f.attrs["units"] = UNITS
                f.attrs["axes"] = AXES
                f.attrs["writer_id"] = self.writer_id
                f.attrs["clips"] = len(clips)
                f["meta"] = json.dumps(meta)
                group = f.create_group("poses")
                for conv, skel in self.skeletons.items():
                    shape = (total, m, skel.num_joints, 3)
                    data = (np.concatenate([c.poses[conv] for c in ok]) if ok
                            else np.zeros(shape, np.float32))
                    kwargs: dict[str, Any] = {}
                    if self.compression is not None and total > 0:
                        row_bytes = m * skel.num_joints * 3 * 4
                        kwargs = {"compression": self.compression,
                                  "chunks": (max(1, min(total, (1 << 20) // row_bytes)), m, skel.num_joints, 3)}
                    ds = group.create_dataset(conv, data=data, **kwargs)
                    if (span := _raw_range(ds)) is not None:
                        pose_ranges.append(span)
                    ds.attrs["skeleton"] = conv
                    ds.attrs["units"] = UNITS
                    ds.attrs["axes"] = AXES
                f.create_dataset("scores", data=scores)
                f.create_dataset("frame_indices", data=frame_indices)
            buffer = image.getbuffer()
            segment_seal.seal(buffer, userblock, pose_ranges)
            with open(partial, "wb") as fh:
                fh.write(buffer)
            del buffer
            del image
            _fsync_file(partial)
            final = seg_dir / f"{self._next_ns():020d}-{self.writer_id}-{pid}-{self._counter:06d}.h5"
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


def _nbytes(clip: Clip) -> int:
    return sum(int(a.nbytes) for a in clip.poses.values())


def _copy_clip(clip: Clip, poses: dict[str, np.ndarray], scores: np.ndarray | None,
               frame_indices: np.ndarray | None, fps: float, label: int, persons: int) -> Clip:
    return Clip(
        name=clip.name, poses=poses, label=label, subject=int(clip.subject), camera=int(clip.camera),
        setup=int(clip.setup), replication=int(clip.replication), fps=fps, source=clip.source,
        extractor=clip.extractor, model_id=clip.model_id, persons=persons, scores=scores,
        frame_indices=frame_indices, status=clip.status, message=clip.message,
    )


def _read_splits(root: Path) -> dict[str, list[str]]:
    path = Path(root) / SPLITS
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CacheError(f"{path} cannot be read ({err}); delete it and rerun the import to rewrite it") from None
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, list) and all(isinstance(n, str) for n in v) for k, v in data.items()
    ):
        raise CacheError(f"{path} must map split names to lists of clip names; delete it and rerun the import")
    return data


# -------------------------------------------------------------------------- reader
@dataclass
class VerifyReport:
    """What :meth:`Cache.verify` found: sealed segments that matched and their bytes, unsealed and damaged ones."""

    checked: int = 0
    bytes: int = 0
    unsealed: list[Path] = field(default_factory=list)
    damaged: list[tuple[Path, str]] = field(default_factory=list)


class Cache:
    """Read a cache directory.

    Attributes:
        root: the directory.
        skeletons: convention -> Skeleton (rebuilt from the stored definitions).
        max_persons: M.
        classes: class names or None.
        splits: split name -> clip names (as stored; may name clips that are not in the cache).
        names: sorted names of the clips with status ``"ok"``.
        units, axes: ``"m"`` and the Kinect camera-space description.

    Raises:
        CacheError: missing directory, a file instead of a directory, a missing / foreign / newer
            manifest, or an unreadable segment (named, with the fix).
    """

    def __init__(self, root: str | os.PathLike[str],
                 progress: Callable[[int, int], None] | None = None) -> None:
        self.root = Path(root)
        data = read_manifest(self.root)
        self.manifest = data
        self.units: str = data.get("units", UNITS)
        self.axes: str = data.get("axes", AXES)
        self.max_persons: int = data["max_persons"]
        self.classes: list[str] | None = data.get("classes")
        self.skeletons: dict[str, Skeleton] = _rebuild_skeletons(data, self.root / MANIFEST)
        self.splits: dict[str, list[str]] = _read_splits(self.root)
        self._index = _Index(self.root, self.skeletons, self.max_persons, progress)
        self.names: list[str] = sorted(
            n for n, (s, r) in self._index.where.items() if self._index.segments[s].meta["status"][r] == "ok"
        )

    def __len__(self) -> int:
        return len(self.names)

    def __contains__(self, name: object) -> bool:
        return name in self._index.where

    def __repr__(self) -> str:
        return f"Cache({str(self.root)!r}: {len(self)} clips, conventions {list(self.skeletons)})"

    # ---------------------------------------------------------------- lookups
    def _locate(self, name: str) -> tuple[_Segment, int]:
        try:
            s, r = self._index.where[name]
        except (KeyError, TypeError):
            raise CacheError(f"clip {name!r} is not in cache {self.root} ({len(self._index.where)} clips)") from None
        return self._index.segments[s], r

    def statuses(self) -> dict[str, tuple[str, str]]:
        """Every committed clip (latest commit): name -> (status, message)."""
        out = {}
        for name, (s, r) in sorted(self._index.where.items()):
            meta = self._index.segments[s].meta
            out[name] = (meta["status"][r], meta["message"][r])
        return out

    def metadata(self, names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Metadata columns for ``names`` (default: :attr:`names`), one entry per name in order.

        Columns: name, source, extractor, model_id, status, message (str arrays); label, subject,
        camera, setup, replication, frames, persons (int64); fps (float64, NaN unknown).
        """
        names = self.names if names is None else list(names)
        rows = [self._locate(n) for n in names]
        out: dict[str, np.ndarray] = {}
        out["name"] = np.array([seg.meta["name"][r] for seg, r in rows], dtype=str)
        for col in (*_INT_FIELDS, "frames", "persons"):
            out[col] = np.array([seg.meta[col][r] for seg, r in rows], dtype=np.int64)
        out["fps"] = np.array([math.nan if seg.meta["fps"][r] is None else seg.meta["fps"][r]
                               for seg, r in rows], dtype=np.float64)
        for col in _STR_FIELDS:
            out[col] = np.array([seg.meta[col][r] for seg, r in rows], dtype=str)
        return out

    def _check_convention(self, convention: str) -> None:
        if convention not in self.skeletons:
            raise CacheError(
                f"cache {self.root} has no convention {convention!r}; it has {', '.join(self.skeletons)}"
            )

    def poses(self, convention: str, names: Sequence[str] | None = None,
              progress: Callable[[int, int], None] | None = None) -> list[np.ndarray]:
        """Raw-length poses of ``names`` (default: :attr:`names`) for one convention.

        Returns:
            one ``(T, M, V, 3)`` float32 array (metres) per name, in the order given.  A segment
            of which at least half is requested is read in one go (the arrays are views into that
            read); otherwise each clip is one contiguous read.  See :meth:`storage_order`.
        """
        self._check_convention(convention)
        names = self.names if names is None else list(names)
        by_segment: dict[int, list[tuple[int, int]]] = {}
        for i, name in enumerate(names):
            seg, r = self._locate(name)
            if seg.meta["status"][r] != "ok":
                raise CacheError(
                    f"clip {name!r} has no poses: status {seg.meta['status'][r]!r} "
                    f"({seg.meta['message'][r]}); use Cache.names for the usable clips"
                )
            by_segment.setdefault(self._index.where[name][0], []).append((i, r))
        out: list[np.ndarray | None] = [None] * len(names)
        for done, (s, wanted) in enumerate(sorted(by_segment.items())):
            seg = self._index.segments[s]
            off = seg.offsets
            needed = sum(int(off[r + 1] - off[r]) for _, r in wanted)
            whole = needed * 2 >= int(off[-1])  # most of the segment: one read, views into it
            if seg.raw.get(convention) is not None:
                self._read_raw(seg, convention, wanted, whole, out)
                continue
            with _open_h5(seg.path) as f:
                try:
                    ds = f["poses"][convention]
                    if whole:
                        data = ds[()]
                        for i, r in wanted:
                            out[i] = data[off[r]:off[r + 1]]
                    else:  # a few clips: one contiguous read each, no read amplification
                        for i, r in wanted:
                            out[i] = ds[off[r]:off[r + 1]]
                except _H5_ERRORS as err:
                    raise _corrupt(seg.path, f"reading poses/{convention}: {err}") from None
            if progress is not None:
                progress(done + 1, len(by_segment))
        return out  # type: ignore[return-value]

    def _read_raw(self, seg: _Segment, convention: str, wanted: list[tuple[int, int]], whole: bool,
                  out: list[np.ndarray | None]) -> None:
        """Read contiguous uncompressed pose rows straight from the file (no per-call h5py cost)."""
        base = seg.raw[convention]
        assert base is not None
        off = seg.offsets
        row_shape = (self.max_persons, self.skeletons[convention].num_joints, 3)
        row_bytes = 4 * int(np.prod(row_shape))

        def read(fh: Any, start: int, stop: int) -> np.ndarray:
            buf = np.empty((stop - start, *row_shape), dtype="<f4")
            fh.seek(base + start * row_bytes)
            if fh.readinto(memoryview(buf).cast("B")) != buf.nbytes:
                raise _corrupt(seg.path, f"poses/{convention} ends early (truncated file)")
            return buf

        try:
            with open(seg.path, "rb", buffering=0) as fh:
                if whole:
                    data = read(fh, 0, int(off[-1]))
                    for i, r in wanted:
                        out[i] = data[off[r]:off[r + 1]]
                else:
                    for i, r in wanted:
                        out[i] = read(fh, int(off[r]), int(off[r + 1]))
        except OSError as err:
            raise _corrupt(seg.path, f"reading poses/{convention}: {err}") from None

    def storage_order(self, names: Sequence[str] | None = None) -> list[str]:
        """``names`` (default: :attr:`names`) sorted by where they are stored (segment, row).

        Reading in this order, in batches, makes every :meth:`poses` call a few whole-segment
        reads instead of scattered per-clip reads.
        """
        names = self.names if names is None else list(names)
        for n in names:
            if n not in self._index.where:
                self._locate(n)  # raises the "not in cache" error
        return sorted(names, key=self._index.where.__getitem__)

    def segment_of(self, name: str) -> Path:
        """The segment file that holds the latest commit of ``name``."""
        return self._locate(name)[0].path

    def clip(self, name: str) -> Clip:
        """One clip with every convention and its metadata (status != "ok": no poses)."""
        seg, r = self._locate(name)
        meta = seg.meta
        start, stop = int(seg.offsets[r]), int(seg.offsets[r + 1])
        poses: dict[str, np.ndarray] = {}
        scores = frame_indices = None
        with _open_h5(seg.path) as f:
            try:
                if meta["status"][r] == "ok":
                    for conv in self.skeletons:
                        poses[conv] = f["poses"][conv][start:stop]
                if meta["has_scores"][r]:
                    scores = f["scores"][start:stop]
                if meta["has_frame_indices"][r]:
                    frame_indices = f["frame_indices"][start:stop]
            except _H5_ERRORS as err:
                raise _corrupt(seg.path, f"reading clip {name!r}: {err}") from None
        fps = meta["fps"][r]
        return Clip(
            name=name, poses=poses, label=meta["label"][r], subject=meta["subject"][r],
            camera=meta["camera"][r], setup=meta["setup"][r], replication=meta["replication"][r],
            fps=math.nan if fps is None else float(fps), source=meta["source"][r],
            extractor=meta["extractor"][r], model_id=meta["model_id"][r], persons=meta["persons"][r],
            scores=scores, frame_indices=frame_indices, status=meta["status"][r], message=meta["message"][r],
        )

    # ------------------------------------------------------------------- info
    def verify(self, progress: Callable[[int, int], None] | None = None) -> VerifyReport:
        """Check every segment against its seal, pose data included: reads the whole cache.

        Opening a cache already checks everything but the raw pose arrays; this also catches a flipped bit
        in a coordinate.  Damage is collected, not raised, so one pass lists every damaged segment.

        Args:
            progress: called with (segments done, segments) after each segment.
        """
        report = VerifyReport()
        segments = self._index.segments
        for done, seg in enumerate(segments):
            try:
                if segment_seal.verify(seg.path, poses=True) is None:
                    report.unsealed.append(seg.path)
                else:
                    report.checked += 1
                    report.bytes += seg.path.stat().st_size
            except (segment_seal.SealError, OSError) as err:
                report.damaged.append((seg.path, str(err)))
            if progress is not None:
                progress(done + 1, len(segments))
        return report

    def size_on_disk(self) -> tuple[int, int]:
        """(bytes, files) of everything under the cache directory."""
        total = files = 0
        for dirpath, _dirs, filenames in os.walk(self.root):
            for fn in filenames:
                try:
                    total += os.stat(os.path.join(dirpath, fn)).st_size
                    files += 1
                except OSError:
                    pass
        return total, files

    def info(self) -> dict[str, Any]:
        """Summary of the cache as plain JSON-serialisable data (what ``msclr info --json`` prints).

        Keys: path, format_version, units, axes, clips (status "ok"), failed (status -> count),
        conventions (name -> V), max_persons, frames (total / min / median / max over ok clips),
        classes (count of distinct labels, names or None, unlabelled clips), splits (name -> ok
        clips present), splits_missing (name -> listed names not usable in the cache), persons
        (persons used -> clips), extractors and model_ids (value -> clips), fps (min / max or None),
        segments, files, size_bytes.
        """
        meta = self.metadata()
        statuses = Counter(s for s, _ in self.statuses().values())
        failed = {k: v for k, v in sorted(statuses.items()) if k != "ok"}
        frames = meta["frames"]
        labels = meta["label"]
        fps = meta["fps"][~np.isnan(meta["fps"])]
        ok = set(self.names)
        size, files = self.size_on_disk()
        return {
            "path": str(self.root),
            "format_version": int(self.manifest["version"]),
            "units": self.units,
            "axes": self.axes,
            "clips": len(self.names),
            "failed": failed,
            "conventions": {n: s.num_joints for n, s in self.skeletons.items()},
            "max_persons": self.max_persons,
            "frames": {
                "total": int(frames.sum()),
                "min": int(frames.min()) if len(frames) else None,
                "median": float(np.median(frames)) if len(frames) else None,
                "max": int(frames.max()) if len(frames) else None,
            },
            "classes": {
                "count": int(len(set(labels[labels >= 0].tolist()))),
                "names": self.classes,
                "unlabelled": int((labels < 0).sum()),
            },
            "splits": {k: sum(1 for n in v if n in ok) for k, v in self.splits.items()},
            "splits_missing": {k: sum(1 for n in v if n not in ok) for k, v in self.splits.items()},
            "persons": {str(k): v for k, v in sorted(Counter(meta["persons"].tolist()).items())},
            "extractors": dict(sorted(Counter(meta["extractor"].tolist()).items())),
            "model_ids": dict(sorted(Counter(meta["model_id"].tolist()).items())),
            "fps": {"min": float(fps.min()), "max": float(fps.max())} if len(fps) else None,
            "segments": len(self._index.segments),
            "files": files,
            "size_bytes": size,
        }


__all__ = ["AXES", "Cache", "CacheWriter", "Clip", "UNITS", "VerifyReport", "atomic_write_text", "read_manifest"]
