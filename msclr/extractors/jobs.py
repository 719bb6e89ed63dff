"""Which videos an extraction run processes: discovery, clip names and shards.

1. :func:`find_videos` walks the inputs (folders recursively, files by extension, sorted);
   :func:`plan_jobs` names each clip: the NTU sample ID when the basename is an NTU name
   (``S001C001P001R001A001_rgb.avi`` -> ``S001C001P001R001A001``, label 0, subject 1, ...), else the
   file stem; two videos with the same clip name are an error.
2. ``--shard K/N`` keeps the jobs with :func:`shard_of` ``(name, N) == K`` (:func:`select_shard`): a
   SHA-1 hash of the clip name, so the assignment is stable when videos are added and needs no
   coordination; each shard writes with its own ``writer_id`` (``extract_shardKofN``), which the
   cache requires for concurrent writers.
3. When every clip name is an NTU name, :func:`ntu_metadata` gives the NTU class names and the
   standard splits over all the videos given (before sharding, so every shard writes the same ones).
4. :func:`label_jobs` gives every job its label: from ``--labels FILE``, else NTU names, else class
   folders (``VIDEOS/<class>/<clip>``), else none (:mod:`msclr.pipeline.datasets.labels`), before
   anything is extracted.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from msclr.errors import ExtractionError, MsclrError
from msclr.extractors.video import VIDEO_EXTENSIONS
from msclr.pipeline.datasets.ntu import NtuName, infer_benchmark, ntu_class_names, ntu_splits, parse_ntu_name


@dataclass(frozen=True)
class VideoJob:
    """One video to extract: its path, clip name, NTU fields (None for other names) and 0-based label
    (-1: none; :func:`plan_jobs` sets NTU names' labels, :func:`label_jobs` the others)."""

    path: Path
    name: str
    ntu: NtuName | None
    label: int = -1


def find_videos(inputs: Iterable[str | Path]) -> list[Path]:
    """Video files under ``inputs``: folders are walked recursively for :data:`VIDEO_EXTENSIONS`
    (case-insensitive, hidden entries skipped); files named explicitly are taken whatever their
    extension.  Sorted, duplicates removed.

    Raises:
        ExtractionError: an input does not exist, or nothing was found.
    """
    found: set[Path] = set()
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            for p in path.rglob("*"):
                rel = p.relative_to(path).parts
                if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS and not any(s.startswith(".") for s in rel):
                    found.add(p)
        elif path.is_file():
            found.add(path)
        else:
            raise ExtractionError(f"{path} does not exist; give video files or folders that contain videos")
    if not found:
        raise ExtractionError(
            f"no video found in {', '.join(str(i) for i in inputs)} (extensions "
            f"{', '.join(sorted(VIDEO_EXTENSIONS))})"
        )
    return sorted(found)


def clip_name_for(path: Path) -> tuple[str, NtuName | None]:
    """``(clip name, NTU fields)`` of a video: the NTU sample ID if the basename starts with one, else the stem."""
    ntu = parse_ntu_name(path.name)
    return (ntu.name if ntu is not None else path.stem), ntu


def plan_jobs(videos: Sequence[Path]) -> list[VideoJob]:
    """Name every video (see :func:`clip_name_for`).

    Raises:
        ExtractionError: two videos map to the same clip name.
    """
    jobs: dict[str, VideoJob] = {}
    for path in videos:
        name, ntu = clip_name_for(path)
        if name in jobs:
            raise ExtractionError(
                f"videos {jobs[name].path} and {path} both give the clip name {name!r}; clip names must be "
                "unique in a cache: rename one, or extract them into separate caches"
            )
        jobs[name] = VideoJob(path, name, ntu, ntu.label if ntu is not None else -1)
    return list(jobs.values())


def label_jobs(jobs: Sequence[VideoJob], inputs: Sequence[str | Path], labels_file: str | Path | None = None,
               known: Sequence[str] | None = None) -> tuple[list[VideoJob], list[str] | None, str]:
    """The jobs with their labels, the class names to store (None: none) and where the labels come from.

    Precedence: ``labels_file``, then NTU names (every clip NTU-named), then class folders; ``known`` are the
    cache's class names (names are looked up in them).

    Raises:
        MsclrError: a problem with the list file or a class name (see :mod:`msclr.pipeline.datasets.labels`).
    """
    from dataclasses import replace

    from msclr.pipeline.datasets.labels import folder_labels, list_labels

    roots = [Path(i) for i in inputs]
    videos = [j.path for j in jobs]
    if labels_file is not None:
        found = list_labels(labels_file, videos, roots, known)
    else:
        classes, _ = ntu_metadata(jobs)
        if classes is not None:
            return list(jobs), classes, "NTU names"
        found = folder_labels(videos, roots, known)
        if found is None:
            return list(jobs), None, "none"
    return [replace(j, label=found.labels.get(j.path, -1)) for j in jobs], found.classes, found.source


def parse_shard(text: str) -> tuple[int, int]:
    """``"K/N"`` (1 <= K <= N) -> ``(K, N)``.

    Raises:
        MsclrError: malformed text (the CLI reports it as a usage error).
    """
    try:
        k_text, n_text = text.split("/")
        k, n = int(k_text), int(n_text)
    except ValueError:
        raise MsclrError(f"--shard {text!r} must look like K/N, e.g. 1/4 (K counts from 1)") from None
    if not 1 <= k <= n:
        raise MsclrError(f"--shard {text!r}: need 1 <= K <= N (K counts from 1), e.g. 1/{max(n, 1)} ... {n}/{n}")
    return k, n


def shard_of(name: str, shards: int) -> int:
    """The 1-based shard of a clip name: SHA-1 of the name modulo ``shards`` (stable, no coordination)."""
    digest = hashlib.sha1(name.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % shards + 1


def select_shard(jobs: Sequence[VideoJob], shard: tuple[int, int] | None) -> tuple[list[VideoJob], str]:
    """The jobs of shard ``(K, N)`` (all for None) and the cache ``writer_id`` to write them with."""
    if shard is None:
        return list(jobs), "extract"
    k, n = shard
    return [j for j in jobs if shard_of(j.name, n) == k], f"extract_shard{k}of{n}"


def ntu_metadata(jobs: Sequence[VideoJob]) -> tuple[list[str] | None, dict[str, list[str]] | None]:
    """``(class names, splits)`` to store when every job has an NTU name, else ``(None, None)``;
    splits is None too when no standard split applies."""
    if not jobs or any(j.ntu is None for j in jobs):
        return None, None
    names = [j.name for j in jobs]
    splits = ntu_splits(names)
    return ntu_class_names(infer_benchmark(names)), (splits if any(splits.values()) else None)


__all__ = ["VideoJob", "clip_name_for", "find_videos", "label_jobs", "ntu_metadata", "parse_shard", "plan_jobs", "select_shard",
           "shard_of"]
