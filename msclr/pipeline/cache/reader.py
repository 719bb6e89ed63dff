""":class:`Cache`: read a cache directory.

``Cache(root)`` reads every segment's ``/meta`` (one small read per segment); ``poses`` reads uncompressed
contiguous datasets straight from the file at the byte offset HDF5 reports (no per-call h5py overhead;
compressed datasets go through h5py).  Batches taken in ``Cache.storage_order()`` make every read a
whole-segment read.  ``bench/cache_io.py`` measures it: at NTU60 size (56,880 clips x ntu_kinect_25 +
smplx_42, 6.8 GB) write and storage-order reads run at the speed of a plain numpy file on the same disk
(writes measured before segments were built in memory first, which costs ~1.5x on writes); lzf saves ~37 %
of the size but writes ~3.5x and reads ~3-4x slower, so the default is no compression.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from msclr.errors import CacheError, closest_match
from msclr.pipeline.cache import seal as segment_seal
from msclr.pipeline.cache.clip import INT_FIELDS, STR_FIELDS, Clip, ClipStatus
from msclr.pipeline.cache.index import SegmentIndex
from msclr.pipeline.cache.manifest import (
    AXES,
    MANIFEST,
    UNITS,
    manifest_skeletons,
    read_manifest,
    read_splits,
    update_splits,
)
from msclr.pipeline.cache.segments import Rows, Segment
from msclr.skeletons import Skeleton


@dataclass
class VerifyReport:
    """What :meth:`Cache.verify` found: sealed segments that matched and their bytes, unsealed and damaged ones."""

    checked: int = 0
    bytes: int = 0
    unsealed: list[Path] = field(default_factory=list)
    damaged: list[tuple[Path, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``msclr info --verify --json``)."""
        return {"checked": self.checked, "bytes": self.bytes, "unsealed": [str(p) for p in self.unsealed],
                "damaged": {str(p): why for p, why in self.damaged}}


class Cache:
    """Read a cache directory.

    Attributes:
        root: the directory.
        skeletons: convention -> Skeleton (rebuilt from the stored definitions).
        max_persons: M.
        classes: class names or None.
        splits: split name -> clip names (as stored; may name clips that are not in the cache).
        names: sorted names of the clips with status ``"ok"``.
        by_convention: convention -> sorted names of the ok clips that hold it (a cache whose conventions were
            all written together has every ok clip under every convention; see :meth:`names_with`).
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
        self.skeletons: dict[str, Skeleton] = manifest_skeletons(data, self.root / MANIFEST)
        self.splits: dict[str, list[str]] = read_splits(self.root)
        self._index = SegmentIndex(self.root, self.skeletons, self.max_persons, progress)
        self.names: list[str] = sorted(n for n in self._index.where if self._index.is_ok(n))
        ok = set(self.names)
        self.by_convention: dict[str, list[str]] = {
            c: sorted(n for n in held if n in ok) for c, held in self._index.holders.items()
        }

    def __len__(self) -> int:
        return len(self.names)

    def __contains__(self, name: object) -> bool:
        return name in self._index.where

    def __repr__(self) -> str:
        return f"Cache({str(self.root)!r}: {len(self)} clips, conventions {list(self.skeletons)})"

    # ---------------------------------------------------------------- lookups
    def _locate(self, name: str) -> tuple[Segment, int]:
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
        for col in (*INT_FIELDS, "frames", "persons"):
            out[col] = np.array([seg.meta[col][r] for seg, r in rows], dtype=np.int64)
        out["fps"] = np.array([math.nan if seg.meta["fps"][r] is None else seg.meta["fps"][r]
                               for seg, r in rows], dtype=np.float64)
        for col in STR_FIELDS:
            out[col] = np.array([seg.meta[col][r] for seg, r in rows], dtype=str)
        return out

    def _check_convention(self, convention: str) -> None:
        if convention not in self.skeletons:
            match = closest_match(convention, self.skeletons)
            hint = f"did you mean {match!r}? " if match else ""
            raise CacheError(
                f"cache {self.root} has no convention {convention!r}; {hint}it has {', '.join(self.skeletons)}"
            )

    def names_with(self, conventions: Iterable[str] | None = None) -> list[str]:
        """Sorted names of the ok clips that hold every one of ``conventions`` (default: all the cache's).

        Raises:
            CacheError: a convention the cache does not list (the closest name suggested).
        """
        wanted = list(self.skeletons) if conventions is None else [conventions] if isinstance(
            conventions, str) else list(conventions)
        for c in wanted:
            self._check_convention(c)
        if not wanted:
            return list(self.names)
        common = set(self.by_convention[wanted[0]]).intersection(*(self.by_convention[c] for c in wanted[1:]))
        return sorted(common)

    def conventions_of(self, name: str) -> list[str]:
        """The conventions clip ``name`` holds, in the cache's order (none for a failed clip)."""
        self._locate(name)
        return self._index.holds(name)

    def _rows_by_segment(self, names: list[str], convention: str) -> dict[int, Rows]:
        """Segment number -> (position in ``names``, row) of each requested clip's ``convention`` poses."""
        by_segment: dict[int, Rows] = {}
        held = self._index.holders[convention]
        lacking: list[str] = []
        for i, name in enumerate(names):
            seg, r = self._locate(name)
            if seg.meta["status"][r] != ClipStatus.OK:
                raise CacheError(
                    f"clip {name!r} has no poses: status {seg.meta['status'][r]!r} "
                    f"({seg.meta['message'][r]}); use Cache.names for the usable clips"
                )
            loc = held.get(name)
            if loc is None:
                lacking.append(name)
                continue
            by_segment.setdefault(loc[0], []).append((i, loc[1]))
        if lacking:
            others = ", ".join(self.conventions_of(lacking[0])) or "none"
            raise CacheError(
                f"{len(lacking)} of the {len(names)} clips asked for hold no {convention!r} poses (e.g. "
                f"{lacking[0]!r}, which holds {others}); use Cache.names_with([{convention!r}, ...]) for the clips "
                "that hold every convention you read"
            )
        return by_segment

    def poses(self, convention: str, names: Sequence[str] | None = None,
              progress: Callable[[int, int], None] | None = None) -> list[np.ndarray]:
        """Raw-length poses of ``names`` (default: :attr:`names`) for one convention.

        Returns:
            one ``(T, M, V, 3)`` float32 array (metres) per name, in the order given.  A segment
            of which at least half is requested is read in one go (the arrays are views into that
            read); otherwise each clip is one contiguous read.  See :meth:`storage_order`.  T is the
            clip's frame count in this convention (conventions added later may have another).

        Raises:
            CacheError: an unknown convention, or a clip that is missing, failed or lacks ``convention``
                (:meth:`names_with` gives the clips that hold it).
        """
        self._check_convention(convention)
        names = self.names if names is None else list(names)
        by_segment = self._rows_by_segment(names, convention)
        row_shape = (self.max_persons, self.skeletons[convention].num_joints, 3)
        out: list[np.ndarray | None] = [None] * len(names)
        for done, (s, wanted) in enumerate(sorted(by_segment.items())):
            seg = self._index.segments[s]
            off = seg.offsets
            needed = sum(int(off[r + 1] - off[r]) for _, r in wanted)
            whole = needed * 2 >= int(off[-1])  # most of the segment: one read, views into it
            seg.read_poses(convention, row_shape, wanted, whole, out)
            if progress is not None and seg.raw.get(convention) is None:
                progress(done + 1, len(by_segment))
        return out  # type: ignore[return-value]

    def storage_order(self, names: Sequence[str] | None = None, convention: str | None = None) -> list[str]:
        """``names`` (default: :attr:`names`) sorted by where they are stored (segment, row): where their clip
        records are, or with ``convention`` where their poses of that convention are.

        Reading in this order, in batches, makes every :meth:`poses` call a few whole-segment
        reads instead of scattered per-clip reads.
        """
        names = self.names if names is None else list(names)
        for n in names:
            if n not in self._index.where:
                self._locate(n)  # raises the "not in cache" error
        if convention is None:
            return sorted(names, key=self._index.where.__getitem__)
        self._check_convention(convention)
        held = self._index.holders[convention]
        return sorted(names, key=lambda n: held.get(n, self._index.where[n]))

    def segment_of(self, name: str) -> Path:
        """The segment file that holds the latest clip record of ``name``."""
        return self._locate(name)[0].path

    def segments_of(self, name: str) -> set[Path]:
        """Every segment file that ``name`` is read from: its clip record's and those of its conventions."""
        paths = {self._locate(name)[0].path}
        for held in self._index.holders.values():
            if name in held:
                paths.add(self._index.segments[held[name][0]].path)
        return paths

    def clip(self, name: str) -> Clip:
        """One clip's record: its metadata and the poses stored with it (status != "ok": no poses).

        For a clip whose conventions were all written together this is every convention; poses added later
        (:meth:`CacheWriter.add_poses`) are in :meth:`additions` and :meth:`poses`.
        """
        seg, r = self._locate(name)
        return seg.read_clip(r, self.skeletons)

    def additions(self, name: str) -> list[Clip]:
        """The records other than its clip record that give clip ``name`` poses (conventions added later), each
        with only the conventions for which it is the latest record (compaction copies these)."""
        self._locate(name)  # raises for an unknown name
        primary = self._index.where[name]
        by_record: dict[tuple[int, int], list[str]] = {}
        for conv in self._index.holds(name):  # none for a failed clip
            loc = self._index.holders[conv][name]
            if loc != primary:
                by_record.setdefault(loc, []).append(conv)
        return [self._index.segments[s].read_clip(r, convs) for (s, r), convs in sorted(by_record.items())]

    def add_splits(self, splits: Mapping[str, Sequence[str]], *, replace: bool = False) -> None:
        """Store named splits in ``splits.json``, atomically (temp file + fsync + rename).

        Args:
            splits: split name -> clip names (each must be a clip of this cache).
            replace: replace stored splits of the same name; by default that is a :class:`CacheError`.
        """
        for key, members in splits.items():
            unknown = [n for n in members if n not in self._index.where]
            if unknown:
                raise CacheError(f"split {key!r} names {len(unknown)} clip(s) that are not in cache {self.root}, "
                                 f"e.g. {unknown[0]!r}")
        update_splits(self.root, splits, replace=replace)
        self.splits = read_splits(self.root)

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
        conventions (name -> V), holding (convention -> ok clips holding it), complete (ok clips holding every
        convention), max_persons, frames (total / min / median / max over ok clips),
        classes (count of distinct labels, names or None, unlabelled clips), splits (name -> ok
        clips present), splits_missing (name -> listed names not usable in the cache), persons
        (persons used -> clips), extractors and model_ids (value -> clips), fps (min / max or None),
        segments, files, size_bytes.
        """
        meta = self.metadata()
        statuses = Counter(s for s, _ in self.statuses().values())
        failed = {k: v for k, v in sorted(statuses.items()) if k != ClipStatus.OK}
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
            "holding": {n: len(held) for n, held in self.by_convention.items()},
            "complete": len(self.names_with()),
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


__all__ = ["Cache", "VerifyReport"]
