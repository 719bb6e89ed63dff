"""Every line msclr prints for people: rich tables, progress bars and notes, in one place.

The library reports progress through two callback shapes, both defined here so that the pipeline can name
them without importing rich:

- :data:`CountProgress` ``(done, total)`` for loops over clips or files (import, export, compact, verify);
- :data:`EventProgress` ``(event, info)`` for training, whose events (``stage``, ``start``, ``step``,
  ``epoch``, ``checkpoint``, ``features``, ...) carry a dict of numbers;

plus the extraction protocol (:class:`msclr.pipeline.extract.ExtractProgress`: run / video / frame
callbacks), implemented for rich by :class:`ExtractBars`.  rich is imported only when something is shown,
so importing this module is cheap.  Tables go to stdout, progress bars and notes to stderr.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

CountProgress = Callable[[int, int], None]
"""``progress(done, total)``: items finished so far out of ``total``."""

EventProgress = Callable[[str, dict[str, Any]], None]
"""``progress(event, info)``: a named training event and its numbers."""

COMPACT_HINT_SEGMENTS = 1000
"""`msclr info` suggests `msclr compact` from this many segment files on."""


def console(*, stderr: bool = False) -> Any:
    """A rich Console on stdout (tables, results) or stderr (progress, notes)."""
    from rich.console import Console

    return Console(stderr=stderr)


def note(text: str, *, out: Any = None) -> None:
    """A yellow ``note:`` line on stderr."""
    (out or console(stderr=True)).print(f"[yellow]note:[/yellow] {text}")


def warning(text: str, *, out: Any = None) -> None:
    """A yellow ``warning:`` line on stderr (``text`` as is: no markup, not wrapped)."""
    (out or console(stderr=True)).print(f"warning: {text}", style="bold yellow", markup=False, highlight=False,
                                        soft_wrap=True)


def print_lines(*lines: str | None) -> None:
    """Plain result lines on stdout (empty ones are skipped)."""
    out = console()
    for line in lines:
        if line:
            out.print(line, markup=False, highlight=False, soft_wrap=True)


def _table(title: str | None, columns: Mapping[str, str] | tuple[str, ...], **options: Any) -> Any:
    """A rich Table with the given columns (name -> justify, or names left-justified)."""
    from rich.table import Table

    table = Table(title=title, **options)
    items = columns.items() if isinstance(columns, Mapping) else ((c, "left") for c in columns)
    for name, justify in items:
        table.add_column(name, justify=justify, overflow="fold")  # type: ignore[arg-type]
    return table


# ------------------------------------------------------------------ progress
@contextlib.contextmanager
def count_bar(description: str) -> Iterator[CountProgress]:
    """A bar on stderr, as a context manager yielding a :data:`CountProgress` callback."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), console=console(stderr=True)) as progress:
        task = progress.add_task(description, total=None)
        yield lambda done, total: progress.update(task, completed=done, total=total)


class TrainProgress:
    """An :data:`EventProgress` for ``msclr train`` / ``msclr demo``: one bar per pretraining stream (epochs x
    steps) with loss, the collapse signals (``cos``: mean cosine of different clips' embeddings, ``rank``: their
    effective rank), lr, samples/s and ETA, a line per finished epoch / stage, and a yellow line per ``warning``
    event (also with ``quiet``; each message once).  A context manager."""

    def __init__(self, out: Any = None, *, quiet: bool = False) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        self.console = out or console(stderr=True)
        self.quiet = quiet
        self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.fields[info]}"),
                            TimeRemainingColumn(), console=self.console, transient=False)
        self.task: Any = None
        self._last = 0.0
        self._warned: set[str] = set()

    def __enter__(self) -> TrainProgress:
        self.bar.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.bar.stop()

    def __call__(self, event: str, info: dict[str, Any]) -> None:
        if event == "stage":
            self.console.print(f"[cyan]>[/cyan] {info['message']}")
        elif event == "start":
            self._start(info)
        elif event == "step" and self.task is not None:
            self._step(info)
        elif event == "epoch" and not self.quiet:
            self.bar.console.print(f"  epoch {info['epoch']}/{info['epochs']}: loss {info['loss']:.4f}, "
                                   f"{_signals(info, ', ')}lr {info['lr']:.3g}, {info['seconds']:.1f} s"
                                   + ("  [mining]" if info.get("mining") else ""))
        elif event == "checkpoint" and not self.quiet:
            where = (f"epoch {info['epoch'] - 1} done" if not info.get("start_batch")
                     else f"epoch {info['epoch']}, step {info['start_batch']}")
            self.bar.console.print(f"  checkpoint {info['path']} ({where})", style="dim")
        elif event == "features":
            self.bar.console.print(f"  features: {info['stream']} / {info['convention']}", style="dim")
        elif event == "warning" and info["message"] not in self._warned:
            self._warned.add(info["message"])
            warning(info["message"], out=self.bar.console)

    def _start(self, info: dict[str, Any]) -> None:
        total = info["epochs"] * info["steps_per_epoch"]
        done = (info["start_epoch"] - 1) * info["steps_per_epoch"]
        if self.task is not None:
            self.bar.remove_task(self.task)
        self.task = self.bar.add_task(f"pretrain {info['stream']}", total=total, completed=done,
                                      info=f"{info['clips']} clips x {len(info['conventions'])} skeletons, "
                                           f"{info['steps_per_epoch']} steps/epoch")

    def _step(self, info: dict[str, Any]) -> None:
        now = time.monotonic()
        if now - self._last <= 0.2 and info["step"] != info["steps"]:
            return
        self._last = now
        self.bar.update(self.task, completed=(info["epoch"] - 1) * info["steps"] + info["step"], info=(
            f"epoch {info['epoch']}/{info['epochs']}  loss {info['loss']:.3f}  {_signals(info, '  ')}"
            f"lr {info['lr']:.3g}  {info['samples_per_s']:.0f} samples/s  ETA {info['eta_s'] / 60:.1f} min"))


def _signals(info: Mapping[str, Any], sep: str) -> str:
    """``cos 0.97 rank 1.3`` + ``sep`` from a pretraining event's collapse signals ("" without them)."""
    return f"cos {info['batch_cosine']:.2f} rank {info['effective_rank']:.1f}{sep}" if "batch_cosine" in info else ""


class ExtractBars:
    """The extraction protocol (:class:`msclr.pipeline.extract.ExtractProgress`) on stderr: a videos bar
    (with ETA) and a frames bar (frames/s) of the current video; ``single=True`` (``msclr predict``) shows
    the frames bar only.  A context manager."""

    def __init__(self, *, single: bool = False) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.console = console(stderr=True)
        self.single = single
        columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn()]
        columns += [TextColumn("{task.fields[rate]}"), TimeElapsedColumn()] if single else [
            TaskProgressColumn(), TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn()]
        self._progress = Progress(*columns, console=self.console, transient=False)
        self._videos = None if single else self._progress.add_task("videos", total=None, rate="")
        self._frames = self._progress.add_task("extracting" if single else "frames", total=None, rate="",
                                               visible=single)
        self._run_frames = 0
        self._t0 = time.perf_counter()

    def __enter__(self) -> ExtractBars:
        self._t0 = time.perf_counter()
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def run_started(self, total: int, skipped: int, frames_hint: int) -> None:
        if self._videos is not None:
            self._progress.update(self._videos, total=total, completed=0)
        if skipped:
            self.console.print(f"{skipped} videos already in the cache: skipped")
        self._t0 = time.perf_counter()

    def message(self, text: str) -> None:
        self.console.print(text)

    def video_started(self, job: Any, expected_frames: int) -> None:
        name = f"extracting {job.path.name}" if self.single else job.name[:40]
        self._progress.update(self._frames, description=name, total=expected_frames or None, completed=0,
                              visible=True)

    def frames_done(self, count: int) -> None:
        self._run_frames += count
        rate = self._run_frames / max(time.perf_counter() - self._t0, 1e-6)
        self._progress.update(self._frames, advance=count, rate=f"{rate:.1f} frames/s")

    def video_finished(self, clip: Any, seconds: float) -> None:
        if self._videos is not None:
            self._progress.update(self._videos, advance=1)
        if clip.status != "ok" or clip.message:  # ClipStatus.OK == "ok"
            self.console.print(f"[yellow]{clip.name}: {clip.status}[/yellow] {clip.message}")


# ------------------------------------------------------------------ skeletons
def print_skeleton_list(skeletons: Mapping[str, Any]) -> None:
    """``msclr skeletons``: one row per convention."""
    table = _table("Skeleton conventions (msclr skeletons NAME for details)",
                   {"name": "left", "joints": "right", "edges": "right", "centre": "left", "description": "left"})
    for skel in skeletons.values():
        table.add_row(skel.name, str(skel.num_joints), str(len(skel.edges)), skel.joints[skel.centre],
                      skel.description)
    console().print(table)


def print_skeleton(skel: Any) -> None:
    """``msclr skeletons NAME``: every joint with its parent (bone) and mirror joint, the edges, the flip pairs."""
    out = console()
    out.print(f"[bold]{skel.name}[/bold]: {skel.description}")
    out.print(f"source: {skel.source}")
    out.print(f"centre: {skel.centre} {skel.joints[skel.centre]}")
    table = _table(None, ("#", "joint", "parent (bone)", "flip"))
    for v, joint in enumerate(skel.joints):
        parent = skel.parents[v]
        bone = "(isolated)" if v in skel.isolated else "-" if parent == v else f"{parent} {skel.joints[parent]}"
        flip = skel.flip[v]
        table.add_row(str(v), joint, bone, "-" if flip == v else f"{flip} {skel.joints[flip]}")
    out.print(table)
    out.print("edges: " + " ".join(f"({a},{b})" for a, b in skel.edges))
    pairs = sorted({tuple(sorted((v, w))) for v, w in enumerate(skel.flip) if v != w})
    out.print("flip pairs: " + " ".join(f"({a},{b})" for a, b in pairs))


# ------------------------------------------------------------------ caches
def print_ntu_import(report: Any, out_dir: str) -> None:
    """The closing lines of ``msclr import ntu``, with a table of the files that failed."""
    out = console()
    out.print(f"NTU-{report.benchmark}: {report.found} files, {report.imported} imported, {report.already} already "
              f"in the cache, {report.skipped} skipped (missing-skeleton list / outside the benchmark), "
              f"{len(report.failures)} failed -> {out_dir}")
    out.print("splits: " + ", ".join(f"{k} {v}" for k, v in report.splits.items()))
    if report.failures:
        table = _table("Failed files (stored in the cache with their status; rerun to retry)",
                       ("clip", "status", "message"))
        for name, status, message in report.failures[:50]:
            table.add_row(name, status, message)
        out.print(table)
        if len(report.failures) > 50:
            out.print(f"... and {len(report.failures) - 50} more (msclr info {out_dir})")


def print_extract_summary(summary: Any, out_dir: str | Path) -> None:
    """The end of ``msclr extract``: one row per processed video, counts per status, the frame rate."""
    out = console()
    done = [r for r in summary.rows if not r.skipped]
    table = _table(f"msclr extract -> {out_dir}", {"clip": "left", "status": "left", "frames": "right",
                                                  "persons": "right", "s": "right", "message": "left"})
    shown = done[:200]
    for r in shown:
        table.add_row(r.name, r.status, str(r.frames), str(r.persons), f"{r.seconds:.1f}", r.message,
                      style="" if r.status == "ok" else "yellow")
    if done:
        out.print(table)
        if len(done) > len(shown):
            out.print(f"... {len(done) - len(shown)} more rows")
    counts = summary.counts()
    skipped = sum(1 for r in summary.rows if r.skipped)
    rate = summary.frames / summary.elapsed if summary.elapsed > 0 else 0.0
    out.print(f"{len(summary.rows)} videos: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
              + f" ({skipped} already done); {summary.frames} frames in {summary.elapsed:.1f} s ({rate:.1f} frames/s)")
    failed_before = [r for r in summary.failed if r.skipped]
    if failed_before:
        out.print(f"{len(failed_before)} videos failed in an earlier run; rerun with --retry-failed to try again")


def print_cache_summary(summary: dict[str, Any], verify: bool) -> None:
    """``msclr info``: sizes, an overview table, the splits, and the ``--verify`` verdict when asked."""
    from rich.markup import escape

    out = console()
    out.print(f"[bold]{escape(summary['path'])}[/bold]: {summary['clips']} clips, {summary['segments']} segments, "
              f"{summary['files']} files, {summary['size_bytes'] / 1e6:.1f} MB")
    if summary["segments"] >= COMPACT_HINT_SEGMENTS:
        out.print(f"[yellow]hint:[/yellow] {summary['segments']} segment files make opening the cache slow; "
                  f"`msclr compact {escape(summary['path'])}` merges them (same content).")
    out.print(_cache_overview(summary))
    if summary["splits"]:
        splits = _table("Splits", {"split": "left", "clips in cache": "right", "listed but missing": "right"})
        for split, count in summary["splits"].items():
            splits.add_row(escape(split), str(count), str(summary["splits_missing"][split]))
        out.print(splits)
    if verify:
        _print_verify(out, summary["verify"], summary["path"])


def _cache_overview(summary: dict[str, Any]) -> Any:
    from rich.markup import escape

    frames, classes, fps = summary["frames"], summary["classes"], summary["fps"]
    rows = {"clips (ok)": str(summary["clips"]),
            "failed": escape(", ".join(f"{k} {v}" for k, v in summary["failed"].items()) or "none"),
            "conventions": escape(", ".join(f"{n} (V={v})" for n, v in summary["conventions"].items())),
            "person slots (M)": str(summary["max_persons"]),
            "persons used": ", ".join(f"{k}: {v}" for k, v in summary["persons"].items()) or "-"}
    if frames["min"] is not None:
        rows["frames"] = (f"total {frames['total']}, min {frames['min']}, median {frames['median']:g}, "
                          f"max {frames['max']}")
    names = classes["names"]
    rows["classes"] = (f"{classes['count']} labelled" + (f" of {len(names)} named" if names else "")
                       + (f", {classes['unlabelled']} clips unlabelled" if classes["unlabelled"] else ""))
    rows["units / axes"] = escape(f"{summary['units']}; {summary['axes']}")
    rows["fps"] = "unknown" if fps is None else f"{fps['min']:g} - {fps['max']:g}"
    rows["extractors"] = escape(", ".join(f"{k or '?'} ({v})" for k, v in summary["extractors"].items()))
    rows["model ids"] = escape(", ".join(f"{k or '?'} ({v})" for k, v in summary["model_ids"].items()))
    table = _table("Cache", ("key", "value"), show_header=False)
    for key, value in rows.items():
        table.add_row(f"[bold]{key}[/bold]", value)
    return table


def _print_verify(out: Any, result: dict[str, Any], path: str) -> None:
    from rich.markup import escape

    out.print(f"verify: {result['checked']} sealed segments, {result['bytes'] / 1e6:.1f} MB read")
    if result["unsealed"]:
        out.print(f"[yellow]{len(result['unsealed'])} segments predate checksums and were not checked[/yellow]; "
                  f"`msclr compact {escape(path)}` rewrites them with checksums.")
    for segment, why in result["damaged"].items():
        out.print(f"[red]damaged:[/red] {escape(segment)}: {escape(why)}")
    if result["damaged"]:
        out.print(f"[red]{len(result['damaged'])} damaged segments.[/red] Delete them and rerun the "
                  "`msclr extract` / `msclr import` commands that wrote them: finished clips are skipped and "
                  "only the deleted ones are redone.")
    elif result["checked"]:
        out.print("[green]every checked segment is intact[/green]")


def print_import_checks(report: Any) -> None:
    """An import's sanity checks (a ``SanityReport``): the figures on stdout, each finding a warning on stderr."""
    if report is not None:
        print_lines(f"checks: {report.summary()}")
        extra = ["imported anyway; --strict makes these findings an error (nothing written)"] if report.warnings else []
        for text in [*report.warnings, *extra]:
            console(stderr=True).print(f"warning: {text}", markup=False, highlight=False, soft_wrap=True)


def print_merge(refused: list[tuple[str, str, str]], *, added: int, complete: int, conventions: list[str],
                new_conventions: list[str], out_dir: str | Path) -> None:
    """How a run's clips met the cache: conventions added, clips not added (a table), clips holding every convention."""
    from rich.markup import escape

    print_lines(f"added the convention(s) {', '.join(new_conventions)} to the cache {out_dir}" if new_conventions else None,
                f"{added} clips of the cache got this run's convention(s)" if added else None)
    table = _table(f"{len(refused)} clips not added (nothing was written for them)", ("clip", "why", "detail"))
    for name, decision, reason in refused[:50]:
        table.add_row(escape(name), decision, escape(reason))
    if refused:
        console().print(table)
    print_lines(f"... and {len(refused) - 50} more" if len(refused) > 50 else None,
                f"{complete} clips now hold every convention of the cache ({', '.join(conventions)})"
                if len(conventions) > 1 else None)


# ------------------------------------------------------------------ runs
def print_metrics(metrics: Mapping[str, Any]) -> None:
    """``msclr train`` / ``msclr evaluate``: top-1 / top-5 per stream and model, the protocol in the caption."""
    from msclr.pipeline.training.report import split_caption, table_rows

    table = _table("Linear evaluation (frozen encoder, last epoch, test split)",
                   {"stream": "left", "model": "left", "top-1 %": "right", "top-5 %": "right"})
    rows = table_rows(metrics)
    with_best = any(r.get("best_top1") is not None for r in rows)
    if with_best:
        table.add_column("best top-1 % (test-set selection)", justify="right")
    for row in rows:
        cells = [row["stream"], row["model"], f"{row['top1']:.2f}", f"{row['top5']:.2f}"]
        if with_best:
            cells.append("" if row.get("best_top1") is None else f"{row['best_top1']:.2f}")
        table.add_row(*cells)
    info = metrics.get("protocol", {})
    if info:
        table.caption = split_caption(info)
    console().print(table)


def print_prediction(prediction: Any, out: Any = None) -> None:
    """``msclr predict``: the top-k classes with probability bars and a line of provenance."""
    out = out or console()
    title = f"{Path(prediction.source).name}" if prediction.source else "prediction"
    table = _table(f"{title}: top {len(prediction.top)} of {len(prediction.classes)} classes",
                   {"#": "right", "class": "left", "label": "right", "probability": "right"})
    for row in prediction.top:
        bar = "█" * int(round(20 * row["probability"]))
        table.add_row(str(row["rank"]), f"[bold]{row['class']}[/bold]", str(row["label"]),
                      f"{row['probability']:.1%} {bar}")
    table.caption = prediction.score
    out.print(table)
    convs = ", ".join(k if k == v else f"{k} <- {v}" for k, v in prediction.conventions.items())
    extractor = f"{prediction.extractor}, " if prediction.extractor else ""
    out.print(f"{extractor}{prediction.frames} frames, {prediction.persons} person(s); conventions {convs}; "
              f"streams {', '.join(prediction.streams)}")
    for text in prediction.notes:
        out.print(f"[yellow]note:[/yellow] {text}")
    if prediction.render:
        out.print(f"rendered: {prediction.render}")


def print_demo(result: Any, out: Any = None) -> None:
    """The demo's closing report: the accuracy table, the baseline, the prediction, elapsed time, next steps."""
    out = out or console()
    out.rule("[bold]msclr demo: SYNTHETIC data[/bold]")
    out.print("These clips are synthetic: procedural motions of a stick body, not recordings of people. "
              "Accuracy here shows that the pipeline works end to end, not how well it recognises real actions.")
    columns = {"model": "left", "MS-AimCLR pretrained, top-1 %": "right"}
    if result.baseline:
        columns["random-init encoder, top-1 %"] = "right"
    table = _table(f"Linear evaluation, test split ({result.clips[1]} held-out clips of other subjects; "
                   f"{result.clips[0]} training clips)", columns)
    entry = result.metrics["streams"]["joint"]
    for name in [*entry["conventions"], "ensemble"]:
        if name == "ensemble" and "ensemble" not in entry:
            continue
        label = f"skeleton ensemble ({entry['ensemble']['mode']})" if name == "ensemble" else name
        row = [label, f"{result.top1(name):.1f}"]
        if result.baseline:
            row.append(f"{result.baseline.get(name, float('nan')):.1f}")
        table.add_row(*row)
    table.caption = f"chance = {result.chance:.1f} %"
    out.print(table)
    pred = result.prediction
    mark = "[green]correct[/green]" if pred.label == result.true_label else "[red]wrong[/red]"
    top = ", ".join(f"{r['class']} {r['probability']:.0%}" for r in pred.top)
    out.print(f"Prediction for held-out clip {result.sample} (true: [bold]{result.true_class}[/bold]): "
              f"[bold]{pred.name}[/bold] ({mark}); top-3: {top}")
    stages = ", ".join(f"{k} {v:.0f} s" for k, v in result.stages.items())
    out.print(f"Elapsed: {result.seconds:.0f} s ({stages}).")
    out.print(f"Everything is in [bold]{result.out}[/bold]:")
    out.print(f"  msclr info {result.cache}")
    out.print(f"  msclr evaluate {result.run}")
    out.print(f"  msclr predict VIDEO --model {result.run}   # MeTRAbs: kinectv2_25 stands in for ntu_kinect_25")


def print_protocol_metrics(metrics: Mapping[str, Any]) -> None:
    """``msclr train`` / ``msclr evaluate``: one row group per evaluation protocol (stream, model, top-1, top-5);
    a run with linear evaluation only prints :func:`print_metrics`' table.  Then a warning per stream whose
    pretraining collapsed (``metrics["pretrain"][stream]["collapse_warning"]``)."""
    from msclr.pipeline.training.report import collapse_warnings, protocol_sections

    sections = protocol_sections(metrics)
    if list(sections) in ([], ["linear"]):
        print_metrics(metrics)
    else:
        console().print(_protocol_table(metrics, sections))
    for text in collapse_warnings(metrics):
        warning(text)


def _protocol_table(metrics: Mapping[str, Any], sections: Mapping[str, Mapping[str, Any]]) -> Any:
    """The table of :func:`print_protocol_metrics` (a rich Table), protocols in row groups, captions below."""
    from msclr.pipeline.training.report import protocol_caption, protocol_rows, split_caption

    table = _table("Evaluation (last epoch, test split)", {"protocol": "left", "stream": "left", "model": "left",
                                                           "top-1 %": "right", "top-5 %": "right"})
    last = None
    for row in protocol_rows(metrics):
        if last is not None and row["protocol"] != last:
            table.add_section()
        table.add_row(row["protocol"] if row["protocol"] != last else "", row["stream"], row["model"],
                      f"{row['top1']:.2f}", f"{row['top5']:.2f}")
        last = row["protocol"]
    info = next(iter(sections.values())).get("protocol", {})
    table.caption = "\n".join([split_caption(info), *(protocol_caption(n, sec) for n, sec in sections.items())])
    return table


def print_prediction_protocol(prediction: Any, out: Any = None) -> None:
    """``msclr predict``: :func:`print_prediction`, then which evaluation protocol's model classified the clip."""
    out = out or console()
    print_prediction(prediction, out)
    if getattr(prediction, "protocol", ""):
        out.print(f"model: the run's {prediction.protocol} protocol (--protocol to choose; "
                  f"available: {', '.join(prediction.protocols) or prediction.protocol})")


__all__ = ["CountProgress", "EventProgress", "COMPACT_HINT_SEGMENTS", "console", "note", "warning", "print_lines",
           "count_bar", "TrainProgress", "ExtractBars", "print_skeleton_list", "print_skeleton", "print_ntu_import",
           "print_extract_summary", "print_cache_summary", "print_metrics", "print_prediction", "print_demo",
           "print_protocol_metrics", "print_prediction_protocol"]
