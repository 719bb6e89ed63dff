"""``msclr extract``: videos -> per-clip skeletons in a cache; resumable, crash-safe, shardable.

Flow (:func:`extract_videos`): the videos are found, named, labelled (``--labels`` list, NTU names or
class folders; checked before anything is extracted) and sharded by :mod:`msclr.extractors.jobs`.  The cache is opened with ``segment_size=1``: every clip
is committed atomically (temp file, fsync, rename) as soon as it is done, so after ``kill -9`` at any
moment the cache stays readable and at most the in-flight clip is redone.  Clips already committed
(any status) are skipped (``CacheWriter.done``); ``retry_failed`` re-extracts the failed ones, and the
new commit replaces the failure.  The pose model is loaded only when there is something to do.

Per video (:func:`extract_video`): decode in a background thread, one extractor call per frame batch,
track people into M slots, then a :class:`~msclr.pipeline.cache.Clip` with status ``"ok"``, or a
recorded failure: ``"decode_error"`` / ``"empty"`` (not a video, damaged, zero bytes, no frame),
``"unreadable"`` (the operating system refuses to read the file: permissions, I/O error),
``"no_person"`` (the extractor's :class:`~msclr.extractors.base.PersonCriterion` not met), ``"error"``
(the extractor raised; five in a row abort the run).  A clip that is ``"ok"`` but suspicious
(truncated file, resized or repeated frames, people dropped) says so in its message.  Running out of
disk space stops the run with one clean error.  When every clip name is an NTU name, the NTU class
names and standard splits are stored in the cache.

Into a cache with other conventions the run adds its conventions to the clips the cache holds, matched by
clip name (:class:`~msclr.pipeline.cache.MergePlan`): videos whose clip the cache lacks, holds as a failure or
labels differently are reported (:attr:`ExtractSummary.refused`), not extracted; the cache's splits are kept.

Which extractors exist and what they produce: :mod:`msclr.extractors.registry`.  Library code is
silent; pass an :class:`ExtractProgress` to observe it (the CLI draws rich bars).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from msclr.errors import CacheError, ExtractionError, MsclrError
from msclr.extractors.base import Extractor, FrameDetections
from msclr.extractors.jobs import VideoJob, find_videos, label_jobs, ntu_metadata, plan_jobs, select_shard
from msclr.extractors.tracking import TrackerConfig, best_person, track_people
from msclr.extractors.video import FrameReader, VideoDecodeError
from msclr.files import pause_point
from msclr.pipeline.cache import (
    Cache,
    CacheWriter,
    Clip,
    ClipStatus,
    Decision,
    MergePlan,
    disk_error_reason,
    read_manifest,
)
from msclr.skeletons import Skeleton, get_skeleton

log = logging.getLogger(__name__)

MAX_CONSECUTIVE_ERRORS = 5


# ------------------------------------------------------------------------ options
@dataclass
class ExtractOptions:
    """Decoding, tracking and resume options of :func:`extract_videos`.

    Attributes:
        batch_size: frames per extractor call.
        stride: keep every stride-th frame.
        limit_frames: decode at most the first N frames of each video (None: all).
        max_persons: M person slots.
        prefetch: frame batches decoded ahead of inference.
        retry_failed: re-extract clips whose committed status is a failure.
        shard: ``(K, N)`` or None.
        tracker: association settings.
        labels: ``--labels`` list file (mmaction2 ``path label`` lines or ``path,label`` CSV), or None.
    """

    batch_size: int = 16
    stride: int = 1
    limit_frames: int | None = None
    max_persons: int = 2
    prefetch: int = 2
    retry_failed: bool = False
    shard: tuple[int, int] | None = None
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    labels: str | Path | None = None


class ExtractProgress:
    """Observer of an extraction run; every method is a no-op here (subclass to display)."""

    def run_started(self, total: int, skipped: int, frames_hint: int) -> None:
        """``total`` videos to process now, ``skipped`` already done, ``frames_hint`` expected frames."""

    def message(self, text: str) -> None:
        """A line worth showing (model, device, versions)."""

    def video_started(self, job: VideoJob, expected_frames: int) -> None:
        """A video starts; ``expected_frames`` from the container (0 unknown)."""

    def frames_done(self, count: int) -> None:
        """``count`` more frames went through the extractor."""

    def video_finished(self, clip: Clip, seconds: float) -> None:
        """A clip was committed."""


@dataclass
class SummaryRow:
    """One video of a run."""

    name: str
    status: str
    frames: int
    persons: int
    seconds: float
    message: str
    skipped: bool = False


@dataclass
class ExtractSummary:
    """What a run did.

    Attributes:
        rows: one per selected video (processed now or skipped as already done), in job order.
        elapsed: seconds.
        frames: frames processed in this run.
        model_loaded: whether the pose model was loaded (False when everything was already done).
        refused: videos not extracted because the cache cannot take them (status: the
            :class:`~msclr.pipeline.cache.Decision`, message: why), in job order.
        added: clips already in the cache that got this run's conventions.
        complete: ok clips of the cache holding every convention of the cache after the run.
        conventions: the cache's conventions after the run; new_conventions: those this run added.
        label_source: where the labels came from (``"NTU names"``, ``"folders"``, ``"list FILE"``, ``"none"``).
    """

    rows: list[SummaryRow] = field(default_factory=list)
    elapsed: float = 0.0
    frames: int = 0
    model_loaded: bool = False
    refused: list[SummaryRow] = field(default_factory=list)
    added: int = 0
    complete: int = 0
    conventions: list[str] = field(default_factory=list)
    new_conventions: list[str] = field(default_factory=list)
    label_source: str = "none"

    def counts(self) -> dict[str, int]:
        """status -> number of selected videos (skipped ones counted by their stored status)."""
        out: dict[str, int] = {}
        for row in self.rows:
            out[row.status] = out.get(row.status, 0) + 1
        return out

    @property
    def failed(self) -> list[SummaryRow]:
        """Selected videos without an ``ok`` clip (failed now or earlier)."""
        return [r for r in self.rows if r.status != ClipStatus.OK]

    @property
    def exit_code(self) -> int:
        """0 when every selected video has an ``ok`` clip (refused ones aside, unless their label differs from
        the cache's), else 1."""
        conflicts = any(r.status == Decision.LABEL_DIFFERS for r in self.refused)
        return 1 if self.failed or conflicts else 0


# -------------------------------------------------------------------- one video
def _detect(reader: FrameReader, extractor: Extractor,
            progress: ExtractProgress) -> tuple[list[FrameDetections], np.ndarray]:
    """Every decoded batch through the extractor: per-frame detections and the frame indices."""
    info = reader.info
    detections: list[FrameDetections] = []
    indices: list[np.ndarray] = []
    started = False
    with reader:
        for batch in reader:
            if not started:
                extractor.start_video(info.width, info.height)
                started = True
            result = extractor.process(batch.frames)
            if len(result) != len(batch):
                raise ExtractionError(
                    f"extractor {extractor.name} returned {len(result)} results for {len(batch)} frames")
            detections.extend(result)
            indices.append(batch.indices)
            progress.frames_done(len(batch))
            pause_point("extract-batch")  # test hook, inert unless $MSCLR_TEST_PAUSE is set
            del batch, result  # lets the decoder recycle the buffer while we wait for the next
    return detections, np.concatenate(indices)


def extract_video(job: VideoJob, extractor: Extractor, options: ExtractOptions,
                  progress: ExtractProgress | None = None) -> Clip:
    """Decode, detect, track one video into a :class:`Clip` (status ``ok`` or a recorded failure).

    Raises:
        Exception: whatever the extractor raises (the caller records it); decoding problems become
            failure clips.
    """
    progress = progress or ExtractProgress()
    ntu = job.ntu
    base = dict(
        name=job.name, source=str(job.path), extractor=extractor.name, model_id=extractor.model_id,
        label=job.label, subject=ntu.subject if ntu else -1, camera=ntu.camera if ntu else -1,
        setup=ntu.setup if ntu else -1, replication=ntu.replication if ntu else -1,
    )
    skeletons = getattr(extractor, "skeletons", None) or {c: get_skeleton(c) for c in extractor.conventions}
    conventions = {name: skel.num_joints for name, skel in skeletons.items()}
    try:
        reader = FrameReader(job.path, batch_size=options.batch_size, stride=options.stride,
                             limit=options.limit_frames, prefetch=options.prefetch)
    except VideoDecodeError as err:
        return Clip(status=ClipStatus(err.status), message=str(err), **base)
    info = reader.info
    expected = info.frame_count if options.limit_frames is None else min(info.frame_count, options.limit_frames)
    progress.video_started(job, -(-expected // options.stride) if expected else 0)
    try:
        detections, frame_indices = _detect(reader, extractor, progress)
    except VideoDecodeError as err:
        return Clip(status=ClipStatus(err.status), message=str(err), fps=info.fps, **base)
    notes = info.notes(len(frame_indices), limited=options.limit_frames is not None)
    if extractor.multi_person:
        slots = track_people(detections, conventions, options.max_persons, options.tracker)
    else:
        slots = best_person(detections, conventions, options.max_persons)
    if slots.dropped:
        notes.append(f"{slots.dropped} of {slots.tracks} person tracks dropped (more than "
                     f"{options.max_persons} people or short false detections)")
    crit = extractor.person
    present, person_frames = crit.evaluate(slots.scores)
    if not present:
        return Clip(
            status=ClipStatus.NO_PERSON, fps=info.fps,
            message=(f"a person (score >= {crit.min_score:g}) in {person_frames} of {len(frame_indices)} "
                     f"frames; needs {crit.min_fraction:.0%}"),
            **base,
        )
    return Clip(poses=slots.poses, scores=slots.scores, frame_indices=frame_indices,
                persons=max(slots.persons, 1), fps=info.fps, message="; ".join(notes), **base)


# ----------------------------------------------------------------------- the run
def _split_done(jobs: Sequence[VideoJob], plan: MergePlan, retry_failed: bool
                ) -> tuple[list[tuple[VideoJob, Decision]], dict[str, SummaryRow], list[SummaryRow]]:
    """``(jobs to process with their decision, rows of the jobs skipped as done, rows of refused jobs)``."""
    pending: list[tuple[VideoJob, Decision]] = []
    skipped: dict[str, SummaryRow] = {}
    refused: list[SummaryRow] = []
    for job in jobs:
        decision, reason = plan.decide(job.name, job.label)
        if decision.refused:
            refused.append(SummaryRow(job.name, str(decision), 0, 0, 0.0, reason, skipped=True))
        elif decision == Decision.DONE or (decision == Decision.RETRY and not retry_failed):
            status, message = plan.status(job.name) or (ClipStatus.OK, "")
            skipped[job.name] = SummaryRow(job.name, status, 0, 0, 0.0, message, skipped=True)
        else:
            pending.append((job, decision))
    return pending, skipped, refused


def _failure_clip(job: VideoJob, extractor: Extractor, err: Exception, consecutive: int) -> Clip:
    """The ``"error"`` clip of a video the extractor failed on; the run stops at
    :data:`MAX_CONSECUTIVE_ERRORS` consecutive failures."""
    log.error("extraction of %s failed", job.path, exc_info=err)
    detail = f"{type(err).__name__}: {err}"
    if consecutive >= MAX_CONSECUTIVE_ERRORS:
        raise ExtractionError(
            f"{consecutive} videos in a row failed inside the {extractor.name} extractor; "
            f"last ({job.path}): {detail}. Fix the cause, then rerun with --retry-failed"
        ) from err
    return Clip(name=job.name, source=str(job.path), extractor=extractor.name,
                model_id=extractor.model_id, status=ClipStatus.ERROR, message=detail)


def _commit(clip: Clip, decision: Decision, writer: CacheWriter, summary: ExtractSummary) -> str:
    """Store a finished clip as its decision says; the message for its summary row."""
    if decision != Decision.ADD:
        writer.add(clip)  # segment_size=1: committed now
        return clip.message
    if clip.status != ClipStatus.OK:  # nothing to add; the clip's record in the cache stays as it is
        return f"{clip.message} (nothing added to the cached clip)"
    writer.add_poses(clip)
    summary.added += 1
    added = f"added {', '.join(clip.poses)} to the cached clip"
    return f"{added}; {clip.message}" if clip.message else added


def _process(pending: Sequence[tuple[VideoJob, Decision]], writer: CacheWriter,
             extractor_factory: Callable[[], Extractor], opts: ExtractOptions, progress: ExtractProgress,
             summary: ExtractSummary, rows: dict[str, SummaryRow]) -> None:
    """Extract and commit every pending job; the model is built before the first one and closed after."""
    extractor: Extractor | None = None
    consecutive_errors = 0
    try:
        for job, decision in pending:
            if extractor is None:
                pause_point("model-load")  # test hook, inert unless $MSCLR_TEST_PAUSE is set
                extractor = extractor_factory()
                summary.model_loaded = True
                for line in extractor.describe():
                    log.info(line)
                    progress.message(line)
            start = time.perf_counter()
            try:
                clip = extract_video(job, extractor, opts, progress)
                consecutive_errors = 0
            except Exception as err:  # noqa: BLE001 - recorded per video; KeyboardInterrupt passes
                consecutive_errors += 1
                clip = _failure_clip(job, extractor, err, consecutive_errors)
            message = _commit(clip, decision, writer, summary)
            seconds = time.perf_counter() - start
            summary.frames += clip.frames
            rows[job.name] = SummaryRow(job.name, clip.status, clip.frames, clip.persons, seconds, message)
            progress.video_finished(clip, seconds)
    finally:
        if extractor is not None:
            extractor.close()


def _existing_manifest(out: str | Path) -> dict[str, Any]:
    """The manifest of the cache at ``out`` ({} when it is not a cache yet)."""
    try:
        return read_manifest(Path(out))
    except MsclrError:
        return {}


def _run(jobs: Sequence[VideoJob], all_jobs: Sequence[VideoJob], writer: CacheWriter,
         extractor_factory: Callable[[], Extractor], opts: ExtractOptions, progress: ExtractProgress,
         summary: ExtractSummary, rows: dict[str, SummaryRow]) -> None:
    """Plan every job against the cache, store the NTU splits the cache lacks, extract the pending jobs."""
    cache = Cache(writer.root)
    plan = MergePlan(cache, writer.conventions)
    _, splits = ntu_metadata(all_jobs)
    if splits:
        stored = cache.splits if not plan.full else {}
        splits = {k: v for k, v in splits.items() if k not in stored}
        if splits:
            writer.set_splits(splits)
    pending, skipped, summary.refused = _split_done(jobs, plan, opts.retry_failed)
    progress.run_started(len(pending), len(skipped), 0)
    rows.update(skipped)
    _process(pending, writer, extractor_factory, opts, progress, summary, rows)


def extract_videos(
    inputs: Iterable[str | Path],
    out: str | Path,
    extractor_factory: Callable[[], Extractor],
    conventions: Sequence[str | Skeleton],
    options: ExtractOptions | None = None,
    progress: ExtractProgress | None = None,
) -> ExtractSummary:
    """Extract every video under ``inputs`` into the cache ``out`` (see the module docstring).

    Args:
        inputs: video files and folders.
        out: cache directory (created when missing, or extended with ``conventions``).
        extractor_factory: builds the extractor; called once, only if some video needs extraction
            (:func:`msclr.extractors.registry.extractor_factory` makes one).
        conventions: the skeletons the extractor produces (the cache's conventions, or added to them).
        options: :class:`ExtractOptions`.
        progress: observer.

    Returns:
        an :class:`ExtractSummary`; ``exit_code`` is 0 when every selected video has an ``ok`` clip.

    Raises:
        ExtractionError: no video, duplicate clip names, the model cannot be loaded,
            :data:`MAX_CONSECUTIVE_ERRORS` videos in a row failed inside the extractor, or the cache
            cannot be written for lack of space (full disk, quota, file-size limit: the committed clips
            stay readable, the failed segment leaves no file, and a rerun resumes).
        MsclrError: a problem with the labels (list file, class names), found before anything is extracted.
        CacheError: ``out`` is not a compatible cache.
    """
    opts = options or ExtractOptions()
    progress = progress or ExtractProgress()
    t0 = time.perf_counter()
    inputs = list(inputs)
    existing = _existing_manifest(out)
    all_jobs, classes, label_source = label_jobs(plan_jobs(find_videos(inputs)), inputs, opts.labels,
                                                 existing.get("classes"))
    jobs, writer_id = select_shard(all_jobs, opts.shard)
    summary = ExtractSummary(label_source=label_source)
    before = list(existing.get("skeletons", ()))
    rows: dict[str, SummaryRow] = {}
    try:
        with CacheWriter(out, list(conventions), max_persons=opts.max_persons, classes=classes,
                         writer_id=writer_id, segment_size=1, extend=True) as writer:
            summary.conventions = list(writer.skeletons)
            summary.new_conventions = [c for c in writer.skeletons if before and c not in before]
            _run(jobs, all_jobs, writer, extractor_factory, opts, progress, summary, rows)
    except (OSError, CacheError) as err:
        reason = disk_error_reason(err)
        if reason is None:
            raise
        now = sum(1 for r in rows.values() if not r.skipped)
        raise ExtractionError(
            f"cannot write to the cache {out}: {reason}. The {now} clip(s) committed by this run before it "
            "stopped are kept and the cache stays readable (`msclr info`); free some space (or move the cache "
            "to a bigger disk), then rerun the same command: it resumes where this run stopped"
        ) from err
    summary.rows = [rows[j.name] for j in jobs if j.name in rows]
    summary.complete = len(Cache(out).names_with())
    summary.elapsed = time.perf_counter() - t0
    return summary


__all__ = ["MAX_CONSECUTIVE_ERRORS", "ExtractOptions", "ExtractProgress", "ExtractSummary",
           "SummaryRow", "extract_video", "extract_videos"]
