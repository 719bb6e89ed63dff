"""Import existing skeleton datasets into a cache: NTU ``.skeleton`` folders and pyskl pickles.

Both importers are resumable: clips already stored with status ``"ok"`` are skipped, clips stored
with a failure status are retried (the new record replaces the old one), and what was committed
before a crash or Ctrl-C stays in the cache.  Progress is reported through an optional
``progress(done, total)`` callback so the functions run silently from Python.

Into an existing cache with other conventions, an import **adds** its convention to the clips the cache
already holds, matched by clip name (:class:`msclr.pipeline.cache.MergePlan`): clips of the source that the
cache lacks, that failed there or that have another label are reported per clip, not added.  Splits the cache
already has are kept then; the source's other splits are added.

Before anything is written, a sample of the source is checked against its convention
(:mod:`msclr.pipeline.datasets.sanity`: bone-length constancy, up axis, left/right, empty frames); the
findings are in the report, and ``strict=True`` turns them into an error.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from msclr.errors import ImportFormatError, MsclrError
from msclr.pipeline.datasets.ntu import (
    infer_benchmark,
    missing_skeletons,
    ntu_class_names,
    ntu_splits,
    parse_ntu_name,
)
from msclr.pipeline.datasets.ntu_skeleton import BODY_ORDERS, BodyOrder, ntu_clip_stub, skeleton_to_clip
from msclr.pipeline.datasets.sanity import SanityReport, check_skeletons, sample_evenly
from msclr.skeletons import Skeleton

if TYPE_CHECKING:
    from msclr.pipeline.cache import Cache, CacheWriter, Decision, MergePlan
    from msclr.pipeline.datasets.pyskl import Annotation

NTU_CONVENTION = "ntu_kinect_25"  # the joint convention of Kinect v2 .skeleton files
MAX_PERSONS = 2  # person slots per frame in new imported caches (NTU's mutual actions need 2)

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
        added: clips already in the cache that got this import's convention (addition records).
        refused: (name, decision, reason) of the source's clips that were not added (not in the cache,
            failed there, another label); see :class:`msclr.pipeline.cache.Decision`.
        complete: ok clips of the cache that hold every convention of the cache after the import.
        conventions: the cache's conventions after the import; new_conventions: those this import added.
        sanity: the checks of the source against its convention.
    """

    found: int = 0
    imported: int = 0
    already: int = 0
    skipped: int = 0
    failures: list[tuple[str, str, str]] = field(default_factory=list)
    splits: dict[str, int] = field(default_factory=dict)
    benchmark: int | None = None
    added: int = 0
    refused: list[tuple[str, str, str]] = field(default_factory=list)
    complete: int = 0
    conventions: list[str] = field(default_factory=list)
    new_conventions: list[str] = field(default_factory=list)
    sanity: SanityReport | None = None


def _open_plan(writer: CacheWriter, before: list[str]) -> tuple[MergePlan, ImportReport]:
    """The merge plan of an import through ``writer`` and a report that knows the conventions added
    (``before``: the cache's conventions before the writer opened it)."""
    from msclr.pipeline.cache import Cache, MergePlan

    report = ImportReport(conventions=list(writer.skeletons))
    report.new_conventions = [c for c in writer.skeletons if c not in before] if before else []
    return MergePlan(Cache(writer.root), writer.conventions), report


def _existing(out: Path) -> tuple[list[str], int]:
    """(conventions, person slots) of the cache at ``out``; ([], :data:`MAX_PERSONS`) when it is not a cache yet.

    An import into an existing cache uses the cache's person slots (an extracted cache may have other than 2).
    """
    from msclr.pipeline.cache import read_manifest

    try:
        data = read_manifest(out)
    except MsclrError:
        return [], MAX_PERSONS
    return list(data["skeletons"]), int(data["max_persons"])


def _finish(writer: CacheWriter, plan: MergePlan, report: ImportReport,
            make_splits: Callable[[Cache], dict[str, list[str]]]) -> None:
    """Store the splits ``make_splits`` gives for the cache (when the import only adds conventions, only those
    the cache lacks) and count the clips that hold every convention."""
    from msclr.pipeline.cache import Cache

    writer.flush()
    cache = Cache(writer.root)
    splits = make_splits(cache)
    if not plan.full:
        splits = {k: v for k, v in splits.items() if k not in cache.splits}
    if splits:
        writer.set_splits(splits)
    report.splits = {k: len(v) for k, v in splits.items()}
    report.complete = len(cache.names_with())


def _check_source(clips: list[np.ndarray], skeleton: Skeleton, strict: bool, source: Path,
                  applied: np.ndarray | None = None) -> SanityReport:
    """The sanity checks of sampled ``(T, M, V, 3)`` clips; with ``strict`` a finding is an error."""
    report = check_skeletons(clips, skeleton, applied)
    if strict and report.warnings:
        raise MsclrError(f"{source} fails the sanity checks against {skeleton.name} (--strict, nothing written): "
                         + "; ".join(report.warnings))
    return report


def _refuse(report: ImportReport, name: str, decision: Decision, reason: str) -> None:
    report.refused.append((name, str(decision), reason))


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
    strict: bool = False,
    progress: Progress | None = None,
) -> ImportReport:
    """Import a folder of NTU RGB+D ``.skeleton`` files into the cache ``out``.

    Files are read in name order (the folder is searched recursively).  Each becomes a clip with
    poses ``ntu_kinect_25`` (T, 2, 25, 3) metres (see :mod:`msclr.pipeline.datasets.ntu_skeleton`).  A file
    that cannot be parsed is stored as a clip with status ``"parse_error"`` and the message, and the
    import goes on; a file without any body gets ``"no_person"``.  At the end the NTU splits of all
    "ok" clips in the cache and the class names are written to the cache.  Into a cache with other
    conventions, ``ntu_kinect_25`` is added to the clips it holds (see the module docstring).

    Args:
        benchmark: 60 or 120; None infers 120 when any file lies outside NTU-60 (setup > 17 or
            action > 60).  With 60, files outside NTU-60 are skipped.
        skip_missing: leave out the samples of NTU's missing-skeleton list (as every paper does).
        body_order: ``"motion"`` (default) or ``"file"`` (st-gcn), see :func:`select_bodies`.
        writer_id: cache writer id (needed only when several imports fill one cache at once).
        strict: a finding of the sanity checks (up to 100 files, sampled evenly) is an error, raised before
            anything is written.

    Returns:
        an :class:`ImportReport`; ``failures`` lists the files that failed in this run.
    """
    from msclr.pipeline.cache import CacheWriter

    if body_order not in BODY_ORDERS:
        raise MsclrError(f"body order must be one of {', '.join(BODY_ORDERS)}, not {body_order!r}")
    out = Path(out)
    files = _skeleton_files(Path(skeleton_dir))
    bench = infer_benchmark(p.name for p in files) if benchmark is None else benchmark
    if bench not in (60, 120):
        raise MsclrError(f"benchmark must be 60 or 120, not {bench!r}")
    missing = missing_skeletons(bench) if skip_missing else set()
    sanity = _check_source(_ntu_sample(files, body_order), _ntu_skeleton(), strict, Path(skeleton_dir))
    before, persons = _existing(out)
    with CacheWriter(out, [NTU_CONVENTION], max_persons=persons, classes=ntu_class_names(bench),
                     writer_id=writer_id, extend=True) as writer:
        plan, report = _open_plan(writer, before)
        report.found, report.benchmark, report.sanity = len(files), bench, sanity
        for i, path in enumerate(files):
            _import_ntu_file(path, writer, plan, report, bench, missing, body_order)
            if progress is not None:
                progress(i + 1, len(files))
        _finish(writer, plan, report, lambda cache: ntu_splits(cache.names, bench))
    return report


def _ntu_skeleton() -> Skeleton:
    from msclr.skeletons import get_skeleton

    return get_skeleton(NTU_CONVENTION)


def _ntu_sample(files: list[Path], body_order: BodyOrder, limit: int = 100) -> list[np.ndarray]:
    """The ``(T, M, 25, 3)`` poses of up to ``limit`` files spread over ``files`` (unreadable ones left out)."""
    clips = []
    for i in sample_evenly(len(files), limit):
        try:
            clip = skeleton_to_clip(files[i], max_persons=MAX_PERSONS, body_order=body_order,
                                    convention=NTU_CONVENTION)
        except ImportFormatError:
            continue
        clips.extend(clip.poses.values())
    return clips


def _import_ntu_file(path: Path, writer: CacheWriter, plan: MergePlan, report: ImportReport, bench: int,
                     missing: set[str], body_order: BodyOrder) -> None:
    """Import one ``.skeleton`` file as its plan says; the outcome goes into ``report``."""
    from msclr.pipeline.cache import ClipStatus, Decision

    ntu = parse_ntu_name(path.name)
    name = ntu.name if ntu else path.name.split(".")[0]
    if not _usable_clip_name(name):
        # Cannot be stored under this name (empty, control characters): report, go on.
        report.failures.append((path.name, "bad_name", f"{path}: the file name gives no usable clip "
                                "name; rename it to NTU's SsssCcccPpppRrrrAaaa.skeleton form"))
        return
    if (ntu is not None and name in missing) or (bench == 60 and (ntu is None or not ntu.in_ntu60)):
        report.skipped += 1
        return
    decision, reason = plan.decide(name, ntu.label if ntu else -1)
    if decision == Decision.DONE:
        report.already += 1
        return
    if decision.refused:
        _refuse(report, name, decision, reason)
        return
    try:
        clip = skeleton_to_clip(path, max_persons=writer.max_persons, body_order=body_order, convention=NTU_CONVENTION)
    except ImportFormatError as err:
        clip = ntu_clip_stub(path, status=ClipStatus.PARSE_ERROR, message=str(err))
    if clip.status != ClipStatus.OK:
        report.failures.append((clip.name, clip.status, clip.message))
        if decision == Decision.ADD:
            return  # nothing to add; the clip's record stays as it is
    if decision == Decision.ADD:
        writer.add_poses(clip)
        report.added += 1
    else:
        writer.add(clip)
        report.imported += clip.status == ClipStatus.OK
    if clip.status == ClipStatus.OK:
        plan.stored(clip.name)


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
    axes: str | None = None,
    class_names: str | Path | None = None,
    writer_id: str | None = None,
    strict: bool = False,
    progress: Progress | None = None,
) -> ImportReport:
    """Import a pyskl / mmaction2 3D annotation pickle into the cache ``out``.

    The whole file is validated first (restricted unpickler, structure, ``keypoint`` [M, T, V, 3]
    against ``skeleton``, 0-based labels, metres after ``scale``), and up to 1000 annotations (sampled
    evenly) go through the sanity checks; nothing is written when it is malformed (or, with ``strict``,
    when a check fails).  Every annotation becomes a clip named by its ``frame_dir``; the file's splits
    become the cache's named splits.  When no class names are given and every ``frame_dir`` is an
    NTU sample name whose label matches its action, NTU's class names are stored.  Into a cache with
    other conventions, ``skeleton`` is added to the clips it holds (see the module docstring).

    Args:
        skeleton: joint convention of the file (e.g. ``ntu_kinect_25``, ``kinect_v1_20``, or a
            definition file); it becomes (or is added to) the cache's conventions.
        scale: multiplies the coordinates (0.001 for a millimetre file).
        axes: ``--axes`` spec mapping the file's axes to Kinect camera axes (e.g. ``y-down``), see
            :func:`msclr.pipeline.datasets.sanity.parse_axes`; None keeps them.
        class_names: text file with one class name per line, label 0 first.
        strict: a finding of the sanity checks is an error.
    """
    from msclr.pipeline.cache import CacheWriter
    from msclr.pipeline.datasets.pyskl import read_annotations
    from msclr.pipeline.datasets.sanity import parse_axes
    from msclr.skeletons import get_skeleton

    annotation = Path(annotation)
    skel = get_skeleton(skeleton)
    matrix = None if axes is None else parse_axes(axes)
    parsed = read_annotations(annotation, skel, scale=scale, axes=matrix)
    anns = parsed.annotations
    classes = _pyskl_classes(anns, annotation, class_names)
    sample = [anns[i].keypoint.transpose(1, 0, 2, 3) for i in sample_evenly(len(anns), 1000)]
    sanity = _check_source(sample, skel, strict, annotation, matrix)
    del sample
    before, persons = _existing(Path(out))
    with CacheWriter(out, [skel], max_persons=persons, classes=classes, writer_id=writer_id,
                     extend=True) as writer:
        plan, report = _open_plan(writer, before)
        report.found, report.sanity = len(anns), sanity
        for i, ann in enumerate(anns):
            _import_annotation(ann, writer, plan, report, skel.name, str(annotation))
            if progress is not None:
                progress(i + 1, len(anns))
        _finish(writer, plan, report, lambda cache: parsed.splits)
    return report


def _pyskl_classes(anns: list[Annotation], annotation: Path, class_names: str | Path | None) -> list[str] | None:
    """The class names of an annotation file: from ``class_names``, NTU's for NTU names, else None."""
    max_label = max(a.label for a in anns)
    if class_names is not None:
        classes = read_class_names(class_names)
        if max_label >= len(classes):
            raise MsclrError(f"{class_names} names {len(classes)} classes but {annotation} uses label "
                             f"{max_label}; give one name per class, label 0 first")
        return classes
    ntu = [parse_ntu_name(a.frame_dir) for a in anns]
    if all(n is not None and n.label == a.label for n, a in zip(ntu, anns, strict=True)):
        return ntu_class_names(120 if max_label >= 60 or not all(n.in_ntu60 for n in ntu) else 60)  # type: ignore[union-attr]
    return None


def _import_annotation(ann: Annotation, writer: CacheWriter, plan: MergePlan, report: ImportReport,
                       convention: str, source: str) -> None:
    """Import one annotation as the plan says; the outcome goes into ``report``."""
    from msclr.pipeline.cache import Decision
    from msclr.pipeline.datasets.pyskl import annotation_to_clip

    decision, reason = plan.decide(ann.frame_dir, ann.label)
    if decision == Decision.DONE:
        report.already += 1
    elif decision.refused:
        _refuse(report, ann.frame_dir, decision, reason)
    else:
        clip = annotation_to_clip(ann, convention=convention, max_persons=writer.max_persons, source=source)
        if decision == Decision.ADD:
            writer.add_poses(clip)
            report.added += 1
        else:
            writer.add(clip)
            report.imported += 1
        plan.stored(ann.frame_dir)
