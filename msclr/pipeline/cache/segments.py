"""One segment file: its HDF5 layout, and how one segment is encoded, checked and read.

One segment file holds up to ``segment_size`` clips.  Ragged clips are concatenated along time, so
a bulk read is one dataset read per segment and convention::

    /meta                       scalar UTF-8 JSON: columns name, label, subject, camera, setup,
                                replication, frames, fps, persons, source, extractor, model_id,
                                status, message, has_scores, has_frame_indices, and "offsets"
                                (N + 1 row offsets into the time-concatenated datasets)
    /poses/<convention>         (sum T, M, V, 3) float32 metres   (only status == "ok" clips have rows);
                                one dataset per convention the segment's clips hold: all of the cache's
                                conventions, or a subset (a cache that got conventions later)
    /scores                     (sum T, M) float32, NaN where unknown
    /frame_indices              (sum T,) int64, -1 where unknown
    attrs                       format="msclr-cache-segment", version, units, axes, writer_id, clips;
                                adds=True on an *addition* segment (below)
    HDF5 user block             the seal (first 512 bytes; :mod:`msclr.pipeline.cache.seal`): a checksum
                                of every byte but the raw pose arrays, checked before h5py opens the file
                                (damaged HDF5 metadata can hang libhdf5)

Every ok clip of a segment holds every convention the segment has.  An **addition** segment (attribute
``adds``) holds more conventions for clips already in the cache: its records (all status ok) never replace a
clip's record, they only give the clip the poses of the segment's conventions (with their own frame count,
scores and frame indices).  See :mod:`msclr.pipeline.cache.index` for which record wins.

Reading: uncompressed contiguous pose datasets are read straight from the file at the byte offset HDF5
reports (no per-call h5py overhead); compressed datasets go through h5py.

h5py is imported lazily (``msclr --help`` must stay fast).
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from msclr.errors import CacheError
from msclr.pipeline.cache import seal as segment_seal
from msclr.pipeline.cache.clip import CLIP_NAME_RE, INT_FIELDS, STR_FIELDS, Clip, ClipStatus
from msclr.pipeline.cache.manifest import AXES, UNITS, VERSION
from msclr.skeletons import Skeleton

SEGMENT_FORMAT = "msclr-cache-segment"
META_COLUMNS = ("name", *INT_FIELDS, "frames", "fps", "persons", *STR_FIELDS, "has_scores",
                "has_frame_indices")
"""The columns of a segment's ``/meta``, besides ``offsets``."""

_H5_ERRORS = (KeyError, ValueError, TypeError, OSError, AttributeError, OverflowError)
"""What h5py raises on a damaged file (e.g. TypeError "Unknown string encoding" for a flipped type message)."""

Rows = list[tuple[int, int]]
"""(position in the caller's output list, row of the clip in the segment) pairs."""


def _h5py() -> Any:
    import h5py

    return h5py


def _corrupt(path: Path, detail: str) -> CacheError:
    """The error for an unreadable segment ``path``: what is wrong and how to redo its clips."""
    return CacheError(
        f"cache segment {path} is unreadable ({detail}); delete this file and rerun the same "
        "`msclr extract` / `msclr import` command to redo its clips"
    )


def _open_h5(path: Path) -> Any:
    """``path`` opened read-only with h5py; :class:`CacheError` naming the file when HDF5 cannot open it."""
    h5py = _h5py()
    try:
        return h5py.File(path, "r", locking=False)
    except (OSError, ValueError) as err:
        raise _corrupt(path, str(err).splitlines()[0] if str(err) else type(err).__name__) from None


def _raw_range(ds: Any) -> tuple[int, int] | None:
    """(file offset, bytes) of a dataset stored contiguous, unfiltered, little-endian float32 and non-empty:
    the pose data that is read with plain reads and that a segment's seal leaves out.
    None otherwise (chunked / compressed, or nothing stored)."""
    if ds.chunks is not None or ds.compression is not None or ds.dtype != np.dtype("<f4"):
        return None
    offset, size = ds.id.get_offset(), ds.id.get_storage_size()
    return None if offset is None or size == 0 else (offset, size)


# ---------------------------------------------------------------------- reading
@dataclass
class Segment:
    """A committed segment file: its checked metadata columns and where its pose data lie."""

    path: Path
    meta: dict[str, list[Any]]
    offsets: np.ndarray  # (N + 1,) int64
    raw: dict[str, int | None] = field(default_factory=dict)
    """Byte offset in the file of each convention's contiguous, unfiltered little-endian float32
    pose data (None: read through h5py, e.g. compressed or empty)."""
    adds: bool = False
    """An addition segment: its records add conventions to clips, they do not replace clip records."""

    @property
    def conventions(self) -> tuple[str, ...]:
        """The conventions this segment stores (every ok clip in it holds all of them)."""
        return tuple(self.raw)

    @property
    def names(self) -> list[str]:
        return self.meta["name"]

    def read_poses(self, convention: str, row_shape: tuple[int, int, int], wanted: Rows, whole: bool,
                   out: list[np.ndarray | None]) -> None:
        """Put the ``(T, M, V, 3)`` poses of the ``wanted`` rows into ``out``.

        Args:
            row_shape: (M, V, 3) of one pose row.
            whole: read the whole dataset once (the arrays are views into it) instead of one read per clip.
        """
        if self.raw.get(convention) is not None:
            self._read_raw(convention, row_shape, wanted, whole, out)
            return
        off = self.offsets
        with _open_h5(self.path) as f:
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
                raise _corrupt(self.path, f"reading poses/{convention}: {err}") from None

    def _read_raw(self, convention: str, row_shape: tuple[int, int, int], wanted: Rows, whole: bool,
                  out: list[np.ndarray | None]) -> None:
        """Read contiguous uncompressed pose rows straight from the file (no per-call h5py cost)."""
        base = self.raw[convention]
        assert base is not None
        off = self.offsets
        row_bytes = 4 * int(np.prod(row_shape))

        def read(fh: Any, start: int, stop: int) -> np.ndarray:
            buf = np.empty((stop - start, *row_shape), dtype="<f4")
            fh.seek(base + start * row_bytes)
            if fh.readinto(memoryview(buf).cast("B")) != buf.nbytes:
                raise _corrupt(self.path, f"poses/{convention} ends early (truncated file)")
            return buf

        try:
            with open(self.path, "rb", buffering=0) as fh:
                if whole:
                    data = read(fh, 0, int(off[-1]))
                    for i, r in wanted:
                        out[i] = data[off[r]:off[r + 1]]
                else:
                    for i, r in wanted:
                        out[i] = read(fh, int(off[r]), int(off[r + 1]))
        except OSError as err:
            raise _corrupt(self.path, f"reading poses/{convention}: {err}") from None

    def read_clip(self, row: int, conventions: Iterable[str]) -> Clip:
        """The clip in ``row``, with the poses of those of ``conventions`` this segment holds (status ok)."""
        meta = self.meta
        start, stop = int(self.offsets[row]), int(self.offsets[row + 1])
        poses: dict[str, np.ndarray] = {}
        scores = frame_indices = None
        with _open_h5(self.path) as f:
            try:
                if meta["status"][row] == ClipStatus.OK:
                    for conv in conventions:
                        if conv in self.raw:
                            poses[conv] = f["poses"][conv][start:stop]
                if meta["has_scores"][row]:
                    scores = f["scores"][start:stop]
                if meta["has_frame_indices"][row]:
                    frame_indices = f["frame_indices"][start:stop]
            except _H5_ERRORS as err:
                raise _corrupt(self.path, f"reading clip {meta['name'][row]!r}: {err}") from None
        fps = meta["fps"][row]
        return Clip(
            name=meta["name"][row], poses=poses, label=meta["label"][row], subject=meta["subject"][row],
            camera=meta["camera"][row], setup=meta["setup"][row], replication=meta["replication"][row],
            fps=math.nan if fps is None else float(fps), source=meta["source"][row],
            extractor=meta["extractor"][row], model_id=meta["model_id"][row], persons=meta["persons"][row],
            scores=scores, frame_indices=frame_indices, status=meta["status"][row], message=meta["message"][row],
        )


def _check_meta(path: Path, meta: dict[str, list[Any]], offsets: np.ndarray, max_persons: int) -> None:
    """Check the types and ranges of a segment's metadata columns (lengths already agree).

    A damaged segment must fail here with the file named, not later with a raw ValueError /
    TypeError deep inside :meth:`Cache.metadata` or a silently wrong slice of the pose data.
    """

    def bad(column: str, what: str) -> CacheError:
        return _corrupt(path, f"metadata column {column!r} {what}")

    if not all(isinstance(v, str) and CLIP_NAME_RE.fullmatch(v) for v in meta["name"]):
        raise bad("name", "holds something that is not a clip name")
    for col in (*INT_FIELDS, "frames", "persons"):
        if not all(type(v) is int and -(2**63) <= v < 2**63 for v in meta[col]):
            raise bad(col, "holds something that is not a 64-bit integer")
    for col in STR_FIELDS:
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
        if (frames < 1) if status == ClipStatus.OK else (frames != 0):
            raise bad("frames", f"gives {frames} frames to a clip with status {status!r}")
    if offsets[0] != 0 or not np.array_equal(np.diff(offsets), np.asarray(meta["frames"], dtype=np.int64)):
        raise bad("offsets", "does not match the clips' frame counts")


def _check_seal(path: Path) -> list[tuple[int, int]] | None:
    """The seal's unchecked byte ranges (None: an unsealed segment); :class:`CacheError` when it fails."""
    try:
        return segment_seal.verify(path)
    except segment_seal.SealError as err:
        raise _corrupt(path, f"checksum failed: {err}") from None
    except OSError as err:
        raise _corrupt(path, str(err)) from None


def _check_header(f: Any, path: Path) -> None:
    """The file's format and version attributes are a msclr segment's of this version."""
    if f.attrs.get("format") != SEGMENT_FORMAT:
        raise CacheError(
            f"cache segment {path} is unreadable: an HDF5 file but not a msclr cache segment (no "
            f"format={SEGMENT_FORMAT!r} attribute); {path.parent} may hold only the segments msclr "
            "writes: move this file out of it (if it was a segment that got damaged, delete it and "
            "rerun the same `msclr extract` / `msclr import` command to redo its clips)"
        )
    version = f.attrs.get("version")
    is_int = isinstance(version, int | np.integer)
    if is_int and version > VERSION:
        raise CacheError(
            f"cache segment {path} was written by a newer msclr (segment version {version}); "
            "upgrade msclr (pip install -U msclr)"
        )
    if not (is_int and version == VERSION):
        shown = version if is_int else repr(version)
        what = "no segment version" if version is None else f"segment version {shown}"
        raise _corrupt(path, f"{what}; this msclr reads segment version {VERSION}")


def _read_meta(f: Any, path: Path, max_persons: int) -> tuple[dict[str, list[Any]], np.ndarray]:
    """The checked metadata columns and row offsets of an open segment."""
    text = f["meta"][()]
    meta = json.loads(text.decode("utf-8") if isinstance(text, bytes) else text)
    offsets = np.asarray(meta.pop("offsets"), dtype=np.int64)
    n = len(meta["name"])
    if any(len(meta[c]) != n for c in META_COLUMNS) or offsets.shape != (n + 1,):
        raise _corrupt(path, "metadata columns disagree in length")
    _check_meta(path, meta, offsets, max_persons)
    return meta, offsets


def _check_datasets(f: Any, path: Path, conventions: Mapping[str, Skeleton], max_persons: int, total: int,
                    sealed: list[tuple[int, int]] | None) -> dict[str, int | None]:
    """Check the shapes of an open segment's datasets; the byte offset of each convention's raw pose data."""
    raw: dict[str, int | None] = {}
    pose_ranges: list[tuple[int, int]] = []
    stored = sorted(f["poses"].keys())
    if not stored:
        raise _corrupt(path, "no poses group entries")
    for conv in stored:
        ds = f["poses"][conv]
        span = _raw_range(ds)
        if span is not None:
            pose_ranges.append(span)
        skel = conventions.get(conv)
        if skel is None:  # added by a writer whose manifest update was lost to a concurrent one: ignored
            continue
        expected = (total, max_persons, skel.num_joints, 3)
        if ds.shape != expected:
            raise _corrupt(path, f"poses/{conv} has shape {ds.shape}, expected {expected}")
        raw[conv] = None if span is None else span[0]
    if sealed is not None and sorted(pose_ranges) != sealed:
        raise _corrupt(path, "the seal's unchecked byte ranges are not the pose data's")
    if f["scores"].shape != (total, max_persons) or f["frame_indices"].shape != (total,):
        raise _corrupt(path, "scores / frame_indices have the wrong shape")
    return raw


def read_segment(path: Path, conventions: Mapping[str, Skeleton], max_persons: int) -> Segment:
    """Check a segment's seal, read its metadata and check its structure (shapes only, no pose data).

    Args:
        conventions: the cache's conventions; the segment holds all of them or a subset.
    """
    sealed = _check_seal(path)
    with _open_h5(path) as f:
        try:
            _check_header(f, path)
            meta, offsets = _read_meta(f, path, max_persons)
            raw = _check_datasets(f, path, conventions, max_persons, int(offsets[-1]), sealed)
            adds = bool(f.attrs.get("adds", False))
        except CacheError:
            raise
        except _H5_ERRORS as err:
            raise _corrupt(path, f"{type(err).__name__}: {err}") from None
    if adds and any(s != ClipStatus.OK for s in meta["status"]):
        raise _corrupt(path, "an addition segment holds a record whose status is not 'ok'")
    return Segment(path, meta, offsets, raw, adds)


# ---------------------------------------------------------------------- writing
def _meta_json(clips: list[Clip], offsets: np.ndarray) -> str:
    """The ``/meta`` JSON of ``clips`` (validated)."""
    meta: dict[str, list[Any]] = {c: [] for c in META_COLUMNS}
    for c in clips:
        meta["name"].append(c.name)
        for f in INT_FIELDS:
            meta[f].append(int(getattr(c, f)))
        meta["frames"].append(c.frames)
        meta["fps"].append(None if math.isnan(c.fps) else float(c.fps))
        meta["persons"].append(int(c.persons))
        for f in STR_FIELDS:
            meta[f].append(getattr(c, f))
        meta["has_scores"].append(c.scores is not None)
        meta["has_frame_indices"].append(c.frame_indices is not None)
    meta["offsets"] = offsets.tolist()
    return json.dumps(meta)


def _concat_rows(clips: list[Clip], offsets: np.ndarray, max_persons: int) -> tuple[np.ndarray, np.ndarray]:
    """``(sum T, M)`` scores (NaN: unknown) and ``(sum T,)`` frame indices (-1: unknown) of ``clips``."""
    total = int(offsets[-1])
    scores = np.full((total, max_persons), np.nan, dtype=np.float32)
    frame_indices = np.full((total,), -1, dtype=np.int64)
    for c, start in zip(clips, offsets[:-1], strict=True):
        if c.scores is not None:
            scores[start:start + c.frames] = c.scores
        if c.frame_indices is not None:
            frame_indices[start:start + c.frames] = c.frame_indices
    return scores, frame_indices


def _pose_data(clips: list[Clip], conv: str, shape: tuple[int, int, int, int]) -> np.ndarray:
    """The ``(sum T, M, V, 3)`` poses of the ok ``clips`` for one convention, one clip after the other."""
    ok = [c for c in clips if c.poses]
    return np.concatenate([c.poses[conv] for c in ok]) if ok else np.zeros(shape, np.float32)


def _chunking(shape: tuple[int, int, int, int], compression: str | None) -> dict[str, Any]:
    """``create_dataset`` options of a pose dataset: ~1 MiB chunks when compressed, else contiguous."""
    total, m, v, _ = shape
    if compression is None or total == 0:
        return {}
    row_bytes = m * v * 3 * 4
    return {"compression": compression, "chunks": (max(1, min(total, (1 << 20) // row_bytes)), m, v, 3)}


def encode_segment(clips: list[Clip], skeletons: Mapping[str, Skeleton], max_persons: int, writer_id: str,
                   compression: str | None, adds: bool = False) -> memoryview:
    """The bytes of a sealed segment file holding ``clips`` (validated), built in memory.

    ``skeletons`` are the conventions the segment stores (every ok clip holds exactly these); ``adds`` makes
    it an addition segment (attribute ``adds``).

    Built in memory and written with plain Python I/O by the caller, a full disk (ENOSPC, quota,
    ``ulimit -f``) is a clean OSError from ``write()``: when HDF5 itself wrote to a full disk it was left
    holding a file it could neither flush nor close, and its next call crashed the process (SIGSEGV).
    This costs one copy of the segment in memory and some write speed (``bench/cache_io.py``).
    """
    offsets = np.zeros(len(clips) + 1, dtype=np.int64)
    np.cumsum([c.frames for c in clips], out=offsets[1:])
    scores, frame_indices = _concat_rows(clips, offsets, max_persons)
    userblock = segment_seal.userblock_size(len(skeletons))
    image = io.BytesIO()
    with _h5py().File(image, "w", userblock_size=userblock) as f:
        f.attrs["format"] = SEGMENT_FORMAT
        f.attrs["version"] = VERSION
        f.attrs["units"] = UNITS
        f.attrs["axes"] = AXES
        f.attrs["writer_id"] = writer_id
        f.attrs["clips"] = len(clips)
        if adds:  # written only when set, so other segments keep their bytes
            f.attrs["adds"] = True
        f["meta"] = _meta_json(clips, offsets)
        group = f.create_group("poses")
        pose_ranges: list[tuple[int, int]] = []
        for conv, skel in skeletons.items():
            # HDF5 places a compressed dataset's chunks when the dataset is closed: when ``ds`` is rebound
            # to the next convention's dataset (after creating it, before its attributes) and, for the
            # last, with the file.  Keep this sequence, or the bytes of compressed segments change.
            shape = (int(offsets[-1]), max_persons, skel.num_joints, 3)
            data = _pose_data(clips, conv, shape)
            ds = group.create_dataset(conv, data=data, **_chunking(shape, compression))
            if (span := _raw_range(ds)) is not None:
                pose_ranges.append(span)
            ds.attrs["skeleton"] = conv
            ds.attrs["units"] = UNITS
            ds.attrs["axes"] = AXES
        f.create_dataset("scores", data=scores)
        f.create_dataset("frame_indices", data=frame_indices)
    buffer = image.getbuffer()
    segment_seal.seal(buffer, userblock, pose_ranges)
    return buffer


__all__ = ["META_COLUMNS", "SEGMENT_FORMAT", "Rows", "Segment", "encode_segment", "read_segment"]
