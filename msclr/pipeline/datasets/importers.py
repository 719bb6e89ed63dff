"""Import existing skeleton datasets into a cache: NTU ``.skeleton`` folders and pyskl pickles.

Both importers are resumable: clips already stored with status ``"ok"`` are skipped, clips stored
with a failure status are retried (the new record replaces the old one), and what was committed
before a crash or Ctrl-C stays in the cache.  Progress is reported through an optional
``progress(done, total)`` callback so the functions run silently from Python.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from msclr.errors import ImportFormatError, MsclrError
from msclr.pipeline.datasets.ntu import (
    infer_benchmark,
    missing_skeletons,
    ntu_class_names,
    ntu_splits,
    parse_ntu_name,
)
from msclr.pipeline.datasets.ntu_skeleton import BODY_ORDERS, BodyOrder, ntu_clip_stub, skeleton_to_clip

NTU_CONVENTION = "ntu_kinect_25"  # the joint convention of Kinect v2 .skeleton files
MAX_PERSONS = 2  # person slots per frame in imported caches (NTU's mutual actions need 2)

Progress = Callable[[int, int], None]


@dataclass
class ImportReport:
    """What an import did.

    Attributes:
        found: input samples (files or annotations).
        imported: clips committed with status "ok" in this run.
        already: clips skipped because the cache already had them (status "ok").
        skipped: clips left out on purpose (NTU missing-skeleton list, outside the benchmark).
        failures: (name, status, message) of clips that failed in this run (also stored in the cache).
        splits: split name -> number of clips written to the cache's splits.
        benchmark: NTU benchmark used (60 / 120), None for pickles.
    """

    found: int = 0
    imported: int = 0
    already: int = 0
    skipped: int = 0
    failures: list[tuple[str, str, str]] = field(default_factory=list)
    splits: dict[str, int] = field(default_factory=dict)
    benchmark: int | None = None


def _ok_names(root: Path) -> set[str]:
    from msclr.pipeline.cache import Cache

    return set(Cache(root).names)


def _skeleton_files(skeleton_dir: Path) -> list[Path]:
    if skeleton_dir.is_file() and skeleton_dir.suffix == ".skeleton":
        return [skeleton_dir]
    if not skeleton_dir.is_dir():
        raise MsclrError(f"{skeleton_dir} is not a folder of NTU .skeleton files; pass the folder that the "
                         "NTU skeleton archive (nturgbd_skeletons_*.zip) extracts to")
    files = sorted(skeleton_dir.rglob("*.skeleton"), key=lambda p: (p.name, str(p)))
    if not files:
        raise MsclrError(f"no .skeleton files under {skeleton_dir}; extract the NTU skeleton archive there first")
    by_stem: dict[str, Path] = {}
    for path in files:
        key = path.name.split(".")[0]
        if key in by_stem:
            raise MsclrError(f"two files for sample {key}: {by_stem[key]} and {path}; remove one of them")
        by_stem[key] = path
    return files


def import_ntu(
    skeleton_dir: str | Path,
    out: str | Path,
    *,
    benchmark: int | None = None,
    skip_missing: bool = True,
    body_order: BodyOrder = "motion",
    writer_id: str | None = None,
    progress: Progress | None = None,
) -> ImportReport:
    """Import a folder of NTU RGB+D ``.skeleton`` files into the cache ``out``.

    Files are read in name order (the folder is searched recursively).  Each becomes a clip with
    poses ``ntu_kinect_25`` (T, 2, 25, 3) metres (see :mod:`msclr.pipeline.datasets.ntu_skeleton`).  A file
    that cannot be parsed is stored as a clip with status ``"parse_error"`` and the message, and the
    import goes on; a file without any body gets ``"no_person"``.  At the end the NTU splits of all
    "ok" clips in the cache and the class names are written to the cache.

    Args:
        benchmark: 60 or 120; None infers 120 when any file lies outside NTU-60 (setup > 17 or
            action > 60).  With 60, files outside NTU-60 are skipped.
        skip_missing: leave out the samples of NTU's missing-skeleton list (as every paper does).
        body_order: ``"motion"`` (default) or ``"file"`` (st-gcn), see :func:`select_bodies`.
        writer_id: cache writer id (needed only when several imports fill one cache at once).

    Returns:
        an :class:`ImportReport`; ``failures`` lists the files that failed in this run.
    """
    from msclr.pipeline.cache import CacheWriter, ClipStatus

    if body_order not in BODY_ORDERS:
        raise MsclrError(f"body order must be one of {', '.join(BODY_ORDERS)}, not {body_order!r}")
    out = Path(out)
    files = _skeleton_files(Path(skeleton_dir))
    bench = infer_benchmark(p.name for p in files) if benchmark is None else benchmark
    if bench not in (60, 120):
        raise MsclrError(f"benchmark must be 60 or 120, not {bench!r}")
    missing = missing_skeletons(bench) if skip_missing else set()
    report = ImportReport(found=len(files), benchmark=bench)
    with CacheWriter(out, [NTU_CONVENTION], max_persons=MAX_PERSONS, classes=ntu_class_names(bench),
                     writer_id=writer_id) as writer:
        ok = _ok_names(out)
        for i, path in enumerate(files):
            ntu = parse_ntu_name(path.name)
            name = ntu.name if ntu else path.name.split(".")[0]
            if not _usable_clip_name(name):
                # Cannot be stored under this name (empty, control characters): report, go on.
                report.failures.append((path.name, "bad_name", f"{path}: the file name gives no usable clip "
                                        "name; rename it to NTU's SsssCcccPpppRrrrAaaa.skeleton form"))
            elif (ntu is not None and name in missing) or (bench == 60 and (ntu is None or not ntu.in_ntu60)):
                report.skipped += 1
            elif name in ok:
                report.already += 1
            else:
                try:
                    clip = skeleton_to_clip(path, max_persons=MAX_PERSONS, body_order=body_order,
                                            convention=NTU_CONVENTION)
                except ImportFormatError as err:
                    clip = ntu_clip_stub(path, status=ClipStatus.PARSE_ERROR, message=str(err))
                writer.add(clip)
                if clip.status == ClipStatus.OK:
                    report.imported += 1
                    ok.add(clip.name)
                else:
                    report.failures.append((clip.name, clip.status, clip.message))
            if progress is not None:
                progress(i + 1, len(files))
        splits = ntu_splits(sorted(ok), bench)
        writer.set_splits(splits)
    report.splits = {k: len(v) for k, v in splits.items()}
    return report


def _usable_clip_name(name: str) -> bool:
    """A name the cache accepts: non-empty, printable, no path separators."""
    return bool(name) and name.isprintable() and "/" not in name and "\\" not in name


def read_class_names(path: str | Path) -> list[str]:
    """Class names from a UTF-8 text file, one per line in label order (blank lines ignored)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise MsclrError(f"cannot read class names from {path} ({err}); give a UTF-8 text file with one "
                         "name per line, label 0 first") from None
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names:
        raise MsclrError(f"{path} holds no class names; give one name per line, label 0 first")
    return names


def import_pyskl(
    annotation: str | Path,
    out: str | Path,
    *,
    skeleton: str,
    scale: float = 1.0,
    class_names: str | Path | None = None,
    writer_id: str | None = None,
    progress: Progress | None = None,
) -> ImportReport:
    """Import a pyskl / mmaction2 3D annotation pickle into the cache ``out``.

    The whole file is validated first (restricted unpickler, structure, ``keypoint`` [M, T, V, 3]
    against ``skeleton``, 0-based labels, metres after ``scale``); nothing is written when it is
    malformed.  Every annotation becomes a clip named by its ``frame_dir``; the file's splits
    become the cache's named splits.  When no class names are given and every ``frame_dir`` is an
    NTU sample name whose label matches its action, NTU's class names are stored.

    Args:
        skeleton: joint convention of the file (e.g. ``ntu_kinect_25``, ``kinect_v1_20``, or a
            definition file); it becomes the cache's convention.
        scale: multiplies the coordinates (0.001 for a millimetre file).
        class_names: text file with one class name per line, label 0 first.
    """
    from msclr.pipeline.cache import CacheWriter
    from msclr.pipeline.datasets.pyskl import annotation_to_clip, read_annotations
    from msclr.skeletons import get_skeleton

    annotation = Path(annotation)
    skel = get_skeleton(skeleton)
    parsed = read_annotations(annotation, skel, scale=scale)
    anns = parsed.annotations
    max_label = max(a.label for a in anns)
    classes: list[str] | None = None
    if class_names is not None:
        classes = read_class_names(class_names)
        if max_label >= len(classes):
            raise MsclrError(f"{class_names} names {len(classes)} classes but {annotation} uses label "
                             f"{max_label}; give one name per class, label 0 first")
    else:
        ntu = [parse_ntu_name(a.frame_dir) for a in anns]
        if all(n is not None and n.label == a.label for n, a in zip(ntu, anns, strict=True)):
            classes = ntu_class_names(120 if max_label >= 60 or not all(n.in_ntu60 for n in ntu) else 60)
    report = ImportReport(found=len(anns))
    with CacheWriter(out, [skel], max_persons=MAX_PERSONS, classes=classes, writer_id=writer_id) as writer:
        ok = _ok_names(Path(out))
        for i, ann in enumerate(anns):
            if ann.frame_dir in ok:
                report.already += 1
            else:
                writer.add(annotation_to_clip(ann, convention=skel.name, max_persons=MAX_PERSONS,
                                              source=str(annotation)))
                report.imported += 1
            if progress is not None:
                progress(i + 1, len(anns))
        if parsed.splits:
            writer.set_splits(parsed.splits)
    report.splits = {k: len(v) for k, v in parsed.splits.items()}
    return report
