"""Labels for the videos of ``msclr extract``: from class folders or from a list file.

Sources, in order of precedence (the first that applies labels the run):

1. ``--labels FILE``: a list as mmaction2 uses (``relative/path label`` per line, whitespace-separated, the
   label last) or a CSV (``path,label``, an optional ``path,label`` header).  A label is a class index or a
   class name, not both kinds in one file.  Paths are relative to the input folder (or absolute), with or
   without the file extension.  Videos the file does not list stay unlabelled.
2. NTU RGB+D names, when every clip has one (:mod:`msclr.pipeline.datasets.ntu`; handled by
   :mod:`msclr.extractors.jobs`).
3. Class folders: when every video lies in a sub-folder of an input folder (``VIDEOS/<class>/.../<clip>``),
   the first sub-folder is its class; the class names are the folder names, sorted; label = index.
4. Otherwise the clips are unlabelled (-1), which pretraining accepts.

When the cache already has class names, names are looked up in them (the cache's list is kept) and indices
must lie inside it; otherwise the names found become the class list, sorted.  Every problem (a listed video
that is not among the inputs, an unknown class name, an index outside the class list, a malformed line) is an
error before anything is extracted, naming the file and line.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from msclr.errors import MsclrError, closest


@dataclass
class VideoLabels:
    """Labels of a run's videos.

    Attributes:
        labels: video path -> 0-based label (videos without one are absent).
        classes: the class names to store, or None (indices only).
        source: where they come from, for messages (``"folders"``, ``"list FILE"``).
    """

    labels: dict[Path, int]
    classes: list[str] | None
    source: str


def _relative(video: Path, inputs: Sequence[Path]) -> PurePosixPath | None:
    """``video`` relative to the input folder it was found in (None: given as a file)."""
    for root in inputs:
        if root.is_dir():
            try:
                return PurePosixPath(video.relative_to(root).as_posix())
            except ValueError:
                continue
    return None


def _resolve_names(names: Sequence[str], known: Sequence[str] | None, where: Sequence[str]) -> tuple[list[int], list[str]]:
    """Labels of class ``names`` (``where[i]`` says where name i comes from) and the class list."""
    classes = list(known) if known is not None else sorted(set(names))
    index = {c: i for i, c in enumerate(classes)}
    for name, place in zip(names, where, strict=True):
        if name not in index:
            hint = closest(name, classes, quote=True)
            raise MsclrError(f"{place}: class {name!r} is not one of the cache's {len(classes)} class names{hint}; "
                             "use one of them, or extract into a new cache")
    return [index[n] for n in names], classes


def folder_labels(videos: Sequence[Path], inputs: Sequence[Path], known: Sequence[str] | None) -> VideoLabels | None:
    """Labels from class folders (``VIDEOS/<class>/.../<clip>``), or None unless every video lies in one.

    Args:
        videos: the videos found under ``inputs``.
        known: the cache's class names, or None.
    """
    rel = [_relative(v, inputs) for v in videos]
    if not videos or any(r is None or len(r.parts) < 2 for r in rel):
        return None
    names = [r.parts[0] for r in rel]  # type: ignore[union-attr]
    labels, classes = _resolve_names(names, known, [f"folder {n!r}" for n in names])
    return VideoLabels(dict(zip(videos, labels, strict=True)), classes, "folders")


def _parse_lines(path: Path) -> list[tuple[int, str, str]]:
    """(line number, path, label) of every entry of a list file or CSV."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise MsclrError(f"cannot read the label list {path} ({err}); give a UTF-8 text file") from None
    lines = text.splitlines()
    first = next((ln for ln in lines if ln.strip() and not ln.lstrip().startswith("#")), "")
    entries = []
    if path.suffix.lower() == ".csv" or ("," in first and len(first.split()) == 1):
        for number, row in enumerate(csv.reader(io.StringIO(text)), 1):
            if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
                continue
            if len(row) != 2:
                raise MsclrError(f"{path}:{number}: expected 'path,label', found {len(row)} fields")
            if number == 1 and [c.strip().lower() for c in row] == ["path", "label"]:
                continue
            entries.append((number, row[0].strip(), row[1].strip()))
        return entries
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.rsplit(maxsplit=1)
        if len(parts) != 2:
            raise MsclrError(f"{path}:{number}: expected 'relative/path label', found {line.strip()!r}")
        entries.append((number, parts[0].strip(), parts[1].strip()))
    return entries


def _video_keys(videos: Sequence[Path], inputs: Sequence[Path]) -> dict[str, Path]:
    """Every way a list may name a video: its path relative to its input folder (or its file name), with and
    without the extension, and its absolute path."""
    keys: dict[str, Path] = {}
    for video in videos:
        rel = _relative(video, inputs) or PurePosixPath(video.name)
        for key in (str(rel), str(rel.with_suffix("")), str(video.resolve())):
            keys.setdefault(key, video)
    return keys


def _labels_of(values: list[str], where: list[str], known: Sequence[str] | None) -> tuple[list[int], list[str] | None]:
    """Class indices or names of a list file's entries -> (labels, class list)."""
    numeric = [v.lstrip("-").isdigit() for v in values]
    if all(numeric):
        labels = [int(v) for v in values]
        for label, place in zip(labels, where, strict=True):
            if label < 0 or (known is not None and label >= len(known)):
                bound = f"0..{len(known) - 1} (the cache's classes)" if known is not None else ">= 0"
                raise MsclrError(f"{place}: label {label} is outside {bound}; leave unlabelled clips out of the list")
        return labels, None if known is None else list(known)
    if any(numeric):
        first = where[numeric.index(True)]
        raise MsclrError(f"{first}: the list mixes class numbers and class names; use one kind")
    return _resolve_names(values, known, where)


def list_labels(path: str | Path, videos: Sequence[Path], inputs: Sequence[Path],
                known: Sequence[str] | None) -> VideoLabels:
    """Labels from a list file (mmaction2 ``path label`` lines, or a ``path,label`` CSV); see the module docstring.

    Raises:
        MsclrError: a malformed line, a listed video that is not among ``videos``, a video listed twice, an
            unknown class name or an index outside the cache's classes (file and line named).
    """
    path = Path(path)
    entries = _parse_lines(path)
    if not entries:
        raise MsclrError(f"the label list {path} has no entries; give one 'relative/path label' per line")
    keys = _video_keys(videos, inputs)
    found: dict[Path, str] = {}
    missing = []
    values, where, targets = [], [], []
    for number, listed, value in entries:
        key = listed.removeprefix("./")
        video = keys.get(key) or (keys.get(str(Path(key).resolve())) if Path(key).is_absolute() else None)
        if video is None:
            missing.append(f"{path}:{number}: {listed!r}")
            continue
        if video in found:
            raise MsclrError(f"{path}:{number}: {listed!r} names the same video as line {found[video]}")
        found[video] = str(number)
        values.append(value)
        where.append(f"{path}:{number}")
        targets.append(video)
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise MsclrError(f"{missing[0]} is not among the videos found{more}; paths are relative to the input "
                         "folder, with or without the extension")
    labels, classes = _labels_of(values, where, known)
    return VideoLabels(dict(zip(targets, labels, strict=True)), classes, f"list {path}")


__all__ = ["VideoLabels", "folder_labels", "list_labels"]
