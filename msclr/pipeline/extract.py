"""``msclr extract``: videos -> per-clip skeletons in a cache; resumable, crash-safe, shardable.

Flow (:func:`extract_videos`):

1. :func:`find_videos` walks the inputs (folders recursively, files by extension, sorted);
   :func:`plan_jobs` names each clip: the NTU sample ID when the basename is an NTU name
   (``S001C001P001R001A001_rgb.avi`` -> ``S001C001P001R001A001``, label 0, subject 1, ...), else the
   file stem; two videos with the same clip name are an error.
2. ``--shard K/N`` keeps the jobs with :func:`shard_of` ``(name, N) == K``: a SHA-1 hash of the clip
   name, so the assignment is stable when videos are added and needs no coordination; each shard
   writes with its own ``writer_id`` (``extract_shardKofN``), which the cache requires for concurrent
   writers.
3. The cache is opened with ``segment_size=1``: every clip is committed atomically (temp file, fsync,
   rename) as soon as it is done, so after ``kill -9`` at any moment the cache stays readable and at
   most the in-flight clip is redone.  Clips already committed (any status) are skipped
   (``CacheWriter.done``); ``retry_failed`` re-extracts the failed ones, and the new commit replaces
   the failure.  The pose model is loaded only when there is something to do.
4. Per video (:func:`extract_video`): decode in a background thread, one extractor call per frame
   batch, track people into M slots, then a :class:`~msclr.pipeline.cache.Clip` with status
   ``"ok"``, or a recorded failure: ``"decode_error"`` / ``"empty"`` (not a video, damaged, zero
   bytes, no frame), ``"unreadable"`` (the operating system refuses to read the file: permissions,
   I/O error), ``"no_person"`` (the extractor's :class:`~msclr.extractors.base.PersonCriterion` not
   met), ``"error"`` (the extractor raised; five in a row abort the run).  A clip that is ``"ok"`` but
   suspicious (truncated file, resized or repeated frames, people dropped) says so in its message.
   Running out of disk space stops the run with one clean error (see :func:`extract_videos`).
5. When every clip name is an NTU name, the NTU class names and the standard splits (over all the
   videos given, before sharding, so every shard writes the same file) are stored in the cache.

Library code is silent; pass an :class:`ExtractProgress` to observe it (the CLI draws rich bars).
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from msclr.errors import CacheError, ExtractionError, MsclrError
from msclr.extractors.base import Extractor, FrameDetections
from msclr.extractors.tracking import TrackerConfig, track_people
from msclr.extractors.video import VIDEO_EXTENSIONS, FrameReader, VideoDecodeError
from msclr.pipeline.cache import Cache, CacheWriter, Clip, disk_error_reason
from msclr.pipeline.datasets.ntu import NtuName, infer_benchmark, ntu_class_names, ntu_splits, parse_ntu_name
from msclr.skeletons import Skeleton, get_skeleton

log = logging.getLogger(__name__)

FAILURE_STATUSES = ("decode_error", "empty", "unreadable", "no_person", "error")
MAX_CONSECUTIVE_ERRORS = 5


# ------------------------------------------------------------------------ planning
@dataclass(frozen=True)
class VideoJob:
    """One video to extract: its path, clip name and NTU fields (None for other names)."""

    path: Path
    name: str
    ntu: NtuName | None


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
        jobs[name] = VideoJob(path, name, ntu)
    return list(jobs.values())


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
    """

    batch_size: int = 16
    stride: int = 1
    limit_frames: int | None = None
    max_persons: int = 2
    prefetch: int = 2
    retry_failed: bool = False
    shard: tuple[int, int] | None = None
    tracker: TrackerConfig = field(default_factory=TrackerConfig)


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
    """

    rows: list[SummaryRow] = field(default_factory=list)
    elapsed: float = 0.0
    frames: int = 0
    model_loaded: bool = False

    def counts(self) -> dict[str, int]:
        """status -> number of selected videos (skipped ones counted by their stored status)."""
        out: dict[str, int] = {}
        for row in self.rows:
            out[row.status] = out.get(row.status, 0) + 1
        return out

    @property
    def failed(self) -> list[SummaryRow]:
        """Selected videos without an ``ok`` clip (failed now or earlier)."""
        return [r for r in self.rows if r.status != "ok"]

    @property
    def exit_code(self) -> int:
        """0 when every selected video has an ``ok`` clip, else 1."""
        return 1 if self.failed else 0


# -------------------------------------------------------------------- one video
def _person_present(scores: np.ndarray, min_score: float, min_fraction: float) -> tuple[bool, int]:
    best = scores.max(axis=1) if scores.size else np.zeros(len(scores), np.float32)
    frames = int((best >= min_score).sum())
    need = max(1, math.ceil(min_fraction * len(scores)))
    return frames >= need, frames


def _single_person(frames: Sequence[FrameDetections], conventions: dict[str, int],
                   max_persons: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    t_len = len(frames)
    poses = {c: np.zeros((t_len, max_persons, v, 3), np.float32) for c, v in conventions.items()}
    scores = np.zeros((t_len, max_persons), np.float32)
    for t, det in enumerate(frames):
        if len(det):
            best = int(np.argmax(det.scores))
            scores[t, 0] = det.scores[best]
            for c in conventions:
                poses[c][t, 0] = det.poses[c][best]
    return poses, scores


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
        label=ntu.label if ntu else -1, subject=ntu.subject if ntu else -1, camera=ntu.camera if ntu else -1,
        setup=ntu.setup if ntu else -1, replication=ntu.replication if ntu else -1,
    )
    skeletons = getattr(extractor, "skeletons", None) or {c: get_skeleton(c) for c in extractor.conventions}
    conventions = {name: skel.num_joints for name, skel in skeletons.items()}
    try:
        reader = FrameReader(job.path, batch_size=options.batch_size, stride=options.stride,
                             limit=options.limit_frames, prefetch=options.prefetch)
    except VideoDecodeError as err:
        return Clip(status=err.status, message=str(err), **base)
    info = reader.info
    expected = info.frame_count if options.limit_frames is None else min(info.frame_count, options.limit_frames)
    progress.video_started(job, -(-expected // options.stride) if expected else 0)
    detections: list[FrameDetections] = []
    indices: list[np.ndarray] = []
    started = False
    try:
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
                del batch, result  # lets the decoder recycle the buffer while we wait for the next
    except VideoDecodeError as err:
        return Clip(status=err.status, message=str(err), fps=info.fps, **base)
    frame_indices = np.concatenate(indices)
    fps = info.fps
    notes = []
    if info.frame_count and options.limit_frames is None and info.decoded_frames < info.frame_count - 1:
        notes.append(f"truncated or damaged file? decoded {info.decoded_frames} of {info.frame_count} frames "
                     "the container reports; the clip keeps the decoded ones")
    if info.resized_frames:
        notes.append(f"{info.resized_frames} frames of another size resized to {info.width}x{info.height}")
    if info.repeated_frames:
        notes.append(f"{info.repeated_frames} of {len(frame_indices)} frames repeat the previous frame exactly: "
                     "a frozen video, or a frame size change mid-stream that OpenCV cannot decode (it repeats "
                     "the last good frame); if the size changes, re-encode at one size "
                     "(ffmpeg -i IN -vf scale=W:H OUT.mp4) and extract it again")
    if extractor.multi_person:
        tracked = track_people(detections, conventions, options.max_persons, options.tracker)
        poses, scores, persons = tracked.poses, tracked.scores, tracked.persons
        if tracked.dropped:
            notes.append(f"{tracked.dropped} of {tracked.tracks} person tracks dropped (more than "
                         f"{options.max_persons} people or short false detections)")
    else:
        poses, scores = _single_person(detections, conventions, options.max_persons)
        persons = int(scores[:, 0].max(initial=0) > 0)
    crit = extractor.person
    present, person_frames = _person_present(scores, crit.min_score, crit.min_fraction)
    t_len = len(frame_indices)
    if not present:
        return Clip(
            status="no_person", fps=fps,
            message=(f"a person (score >= {crit.min_score:g}) in {person_frames} of {t_len} frames; "
                     f"needs {crit.min_fraction:.0%}"),
            **base,
        )
    return Clip(poses=poses, scores=scores, frame_indices=frame_indices, persons=max(persons, 1), fps=fps,
                message="; ".join(notes), **base)


# ----------------------------------------------------------------------- the run
def _stored_statuses(root: Path) -> dict[str, tuple[str, str]]:
    try:
        return Cache(root).statuses()
    except MsclrError:
        return {}


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
        out: cache directory (created when missing).
        extractor_factory: builds the extractor; called once, only if some video needs extraction.
        conventions: the skeletons the extractor produces (the cache's conventions).
        options: :class:`ExtractOptions`.
        progress: observer.

    Returns:
        an :class:`ExtractSummary`; ``exit_code`` is 0 when every selected video has an ``ok`` clip.

    Raises:
        ExtractionError: no video, duplicate clip names, the model cannot be loaded,
            :data:`MAX_CONSECUTIVE_ERRORS` videos in a row failed inside the extractor, or the cache
            cannot be written for lack of space (full disk, quota, file-size limit: the committed clips
            stay readable, the failed segment leaves no file, and a rerun resumes).
        CacheError: ``out`` is not a compatible cache.
    """
    opts = options or ExtractOptions()
    progress = progress or ExtractProgress()
    t0 = time.perf_counter()
    all_jobs = plan_jobs(find_videos(inputs))
    jobs = all_jobs
    writer_id = "extract"
    if opts.shard is not None:
        k, n = opts.shard
        jobs = [j for j in all_jobs if shard_of(j.name, n) == k]
        writer_id = f"extract_shard{k}of{n}"
    all_ntu = all(j.ntu is not None for j in all_jobs)
    all_names = [j.name for j in all_jobs]
    classes = ntu_class_names(infer_benchmark(all_names)) if all_ntu else None
    summary = ExtractSummary()
    rows: dict[str, SummaryRow] = {}
    try:
        with CacheWriter(out, list(conventions), max_persons=opts.max_persons, classes=classes,
                         writer_id=writer_id, segment_size=1) as writer:
            if all_ntu:
                splits = ntu_splits(all_names)
                if any(splits.values()):
                    writer.set_splits(splits)
            stored = _stored_statuses(Path(out)) if writer.done else {}
            pending: list[VideoJob] = []
            skipped: dict[str, SummaryRow] = {}
            for job in jobs:
                if job.name in writer.done:
                    status, message = stored.get(job.name, ("ok", ""))
                    if not (opts.retry_failed and status != "ok"):
                        skipped[job.name] = SummaryRow(job.name, status, 0, 0, 0.0, message, skipped=True)
                        continue
                pending.append(job)
            progress.run_started(len(pending), len(skipped), 0)
            rows.update(skipped)
            extractor: Extractor | None = None
            consecutive_errors = 0
            try:
                for job in pending:
                    if extractor is None:
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
                        log.exception("extraction of %s failed", job.path)
                        consecutive_errors += 1
                        detail = f"{type(err).__name__}: {err}"
                        if consecutive_errors >= MAX_CONSECUTIVE_ERRORS:
                            raise ExtractionError(
                                f"{consecutive_errors} videos in a row failed inside the {extractor.name} extractor; "
                                f"last ({job.path}): {detail}. Fix the cause, then rerun with --retry-failed"
                            ) from err
                        clip = Clip(name=job.name, source=str(job.path), extractor=extractor.name,
                                    model_id=extractor.model_id, status="error", message=detail)
                    writer.add(clip)  # segment_size=1: committed now
                    seconds = time.perf_counter() - start
                    summary.frames += clip.frames
                    rows[job.name] = SummaryRow(job.name, clip.status, clip.frames, clip.persons, seconds, clip.message)
                    progress.video_finished(clip, seconds)
            finally:
                if extractor is not None:
                    extractor.close()
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
    summary.elapsed = time.perf_counter() - t0
    return summary




# ------------------------------------------------------------ CLI helpers
EXTRACTOR_CONVENTIONS = {
    "metrabs": ("smpl_24", "smplx_42", "berkeley_mhad_43", "kinectv2_25"),
    "mediapipe": ("blazepose_33",),
}
"""Default conventions per extractor; MediaPipe produces only ``blazepose_33``."""

NOT_METRABS = frozenset({"blazepose_33", "ntu_kinect_25", "kinect_v1_20"})
"""Registry conventions that no MeTRAbs model outputs."""


def resolve_conventions(kind: str, text: str | None) -> list[Skeleton]:
    """The skeletons of an ``--extractor kind --skeletons a,b`` request.

    Raises:
        MsclrError: an unknown name, a convention the extractor cannot produce, or a repeat.
    """
    names = [t.strip() for t in text.split(",") if t.strip()] if text else list(EXTRACTOR_CONVENTIONS[kind])
    skels = [get_skeleton(n) for n in names]
    seen = [s.name for s in skels]
    if len(set(seen)) != len(seen):
        raise MsclrError(f"--skeletons lists a convention twice: {', '.join(seen)}")
    if kind == "mediapipe":
        bad = [s for s in seen if s != "blazepose_33"]
        if bad:
            raise MsclrError(
                f"--extractor mediapipe produces only blazepose_33, not {', '.join(bad)}; drop --skeletons or "
                "use --extractor metrabs for MeTRAbs conventions"
            )
    else:
        bad = [s for s in seen if s in NOT_METRABS]
        if bad:
            raise MsclrError(
                f"MeTRAbs does not output {', '.join(bad)}; its conventions include "
                f"{', '.join(EXTRACTOR_CONVENTIONS['metrabs'])} (use --extractor mediapipe for blazepose_33)"
            )
    return skels


class RichExtractProgress(ExtractProgress):
    """Progress on stderr with rich: a videos bar (ETA) and a frames bar (frames/s) for the current video."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.console = Console(stderr=True)
        self._progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
            TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn(),
            console=self.console, transient=False,
        )
        self._videos = self._progress.add_task("videos", total=None, rate="")
        self._frames = self._progress.add_task("frames", total=None, rate="", visible=False)
        self._run_frames = 0
        self._t0 = time.perf_counter()

    def __enter__(self) -> RichExtractProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def run_started(self, total: int, skipped: int, frames_hint: int) -> None:
        self._progress.update(self._videos, total=total, completed=0)
        if skipped:
            self.console.print(f"{skipped} videos already in the cache: skipped")
        self._t0 = time.perf_counter()

    def message(self, text: str) -> None:
        self.console.print(text)

    def video_started(self, job: VideoJob, expected_frames: int) -> None:
        self._progress.update(self._frames, description=job.name[:40], total=expected_frames or None,
                              completed=0, visible=True)

    def frames_done(self, count: int) -> None:
        self._run_frames += count
        rate = self._run_frames / max(time.perf_counter() - self._t0, 1e-6)
        self._progress.update(self._frames, advance=count, rate=f"{rate:.1f} frames/s")

    def video_finished(self, clip: Clip, seconds: float) -> None:
        self._progress.update(self._videos, advance=1)
        if clip.status != "ok" or clip.message:
            self.console.print(f"[yellow]{clip.name}: {clip.status}[/yellow] {clip.message}")


def print_summary(summary: ExtractSummary, out: str | Path) -> None:
    """The end-of-run table (processed videos, skipped counts, failures) on stdout."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    done = [r for r in summary.rows if not r.skipped]
    table = Table(title=f"msclr extract -> {out}")
    for col, justify in (("clip", "left"), ("status", "left"), ("frames", "right"), ("persons", "right"),
                         ("s", "right"), ("message", "left")):
        table.add_column(col, justify=justify, overflow="fold")  # type: ignore[arg-type]
    shown = done[:200]
    for r in shown:
        style = "" if r.status == "ok" else "yellow"
        table.add_row(r.name, r.status, str(r.frames), str(r.persons), f"{r.seconds:.1f}", r.message, style=style)
    if done:
        console.print(table)
        if len(done) > len(shown):
            console.print(f"... {len(done) - len(shown)} more rows")
    counts = summary.counts()
    skipped = sum(1 for r in summary.rows if r.skipped)
    rate = summary.frames / summary.elapsed if summary.elapsed > 0 else 0.0
    console.print(
        f"{len(summary.rows)} videos: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
        + f" ({skipped} already done); {summary.frames} frames in {summary.elapsed:.1f} s ({rate:.1f} frames/s)"
    )
    failed_before = [r for r in summary.failed if r.skipped]
    if failed_before:
        console.print(f"{len(failed_before)} videos failed in an earlier run; rerun with --retry-failed to try again")


__all__ = [
    "EXTRACTOR_CONVENTIONS",
    "FAILURE_STATUSES",
    "ExtractOptions",
    "ExtractProgress",
    "ExtractSummary",
    "SummaryRow",
    "VideoJob",
    "clip_name_for",
    "extract_video",
    "extract_videos",
    "find_videos",
    "parse_shard",
    "plan_jobs",
    "print_summary",
    "resolve_conventions",
    "RichExtractProgress",
    "shard_of",
]
