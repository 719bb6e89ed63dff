"""A training run: ``msclr train`` orchestration and the RUN directory that ``evaluate`` / ``predict`` read.

Layout of ``RUN/``::

    run.json               what the run is: conventions, streams, preprocessing, classes, model sizes,
                           ensemble / fusion modes, split, cache, status ("running" / "complete")
    config.toml            the resolved configuration (reusable: msclr train ... --config RUN/config.toml)
    config.json            the same as JSON
    classes.txt            class names, one per line, label order
    skeletons/NAME.json    each convention's full definition (user-defined ones included)
    streams/STREAM/checkpoints/last.pt   pretraining state (resume)
    model.pt               what predict needs: per stream the encoder weights and one linear classifier
                           per convention, plus run.json's content (weights_only=True loadable)
    metrics.json           accuracy per stream x convention, skeleton ensemble, 3-stream fusion; per-class
    test_scores.npz        test logits per stream/convention + labels + clip names (re-fusion offline)
    report/*.png           confusion matrices (OpenCV)
    tensorboard/           TensorBoard event files (when the ``tensorboard`` package is installed)

Every file is written atomically; ``run.json`` is written first with status "running" and rewritten as
"complete" at the end, so a crashed run is recognisable and ``--resume`` continues it.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from msclr import __version__
from msclr.errors import CheckpointError, MsclrError
from msclr.files import atomic_write_bytes, atomic_write_text, load_checkpoint, save_checkpoint
from msclr.pipeline.config import TrainConfig, config_from_dict, to_toml
from msclr.skeletons import Skeleton

RUN_FORMAT = "msclr-run"
RUN_VERSION = 1
Progress = Callable[[str, dict[str, Any]], None]


# --------------------------------------------------------------------- paths
@dataclass(frozen=True)
class RunPaths:
    """File names inside a run folder."""

    root: Path

    @property
    def run_json(self) -> Path:
        return self.root / "run.json"

    @property
    def config_toml(self) -> Path:
        return self.root / "config.toml"

    @property
    def config_json(self) -> Path:
        return self.root / "config.json"

    @property
    def classes(self) -> Path:
        return self.root / "classes.txt"

    @property
    def model(self) -> Path:
        return self.root / "model.pt"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def scores(self) -> Path:
        return self.root / "test_scores.npz"

    @property
    def report(self) -> Path:
        return self.root / "report"

    @property
    def tensorboard(self) -> Path:
        return self.root / "tensorboard"

    def skeleton(self, name: str) -> Path:
        return self.root / "skeletons" / f"{name}.json"

    def stream_dir(self, stream: str) -> Path:
        return self.root / "streams" / stream


def _json(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=False, allow_nan=True) + "\n"


def read_run_info(run: str | Path) -> dict[str, Any]:
    """``run.json`` of a run folder; :class:`CheckpointError` if it is not one."""
    paths = RunPaths(Path(run))
    if not paths.run_json.is_file():
        raise CheckpointError(f"{run} is not an msclr run folder (no run.json); give the --out folder of "
                              "`msclr train`.")
    try:
        info = json.loads(paths.run_json.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise CheckpointError(f"cannot read {paths.run_json}: {err}") from None
    if info.get("format") != RUN_FORMAT:
        raise CheckpointError(f"{paths.run_json} is not an msclr run description.")
    return info


def read_metrics(run: str | Path) -> dict[str, Any]:
    """``metrics.json`` of a finished run; :class:`CheckpointError` naming what is missing."""
    info = read_run_info(run)
    path = RunPaths(Path(run)).metrics
    if not path.is_file():
        raise CheckpointError(f"{run} has no metrics.json (run status: {info.get('status')}); finish it with "
                              "`msclr train ... --out RUN --resume`.")
    return json.loads(path.read_text(encoding="utf-8"))


# --------------------------------------------------------------------- the trained model
@dataclass
class TrainedRun:
    """A finished run loaded for inference (what ``msclr predict`` uses).

    Attributes:
        info: ``run.json`` content.
        skeletons: convention -> definition (from the run, so user skeletons work without the registry).
        encoders: stream -> frozen :class:`MultiSkeletonSTGCN` in eval mode.
        classifiers: stream -> convention -> ``torch.nn.Linear``.
    """

    info: dict[str, Any]
    skeletons: dict[str, Skeleton]
    encoders: dict[str, Any]
    classifiers: dict[str, dict[str, Any]]

    @property
    def classes(self) -> list[str]:
        return list(self.info["classes"])

    def logits(self, inputs: Mapping[str, Any]) -> dict[str, dict[str, np.ndarray]]:
        """Per-stream, per-convention logits of preprocessed clips.

        Args:
            inputs: convention -> (N, 3, T, V, M) float32 array/tensor, preprocessed like the training data
                (:func:`msclr.pipeline.preprocess.preprocess_clip` with ``info["preprocessing"]``).
                Conventions the run does not know are ignored; at least one must be known.

        Returns:
            stream -> convention -> (N, C) float32 logits.
        """
        import torch

        from msclr.pipeline.training.linear_eval import encoder_features

        known = [c for c in inputs if c in self.skeletons]
        if not known:
            raise MsclrError(f"none of the conventions {list(inputs)} was trained in this run "
                             f"({', '.join(self.skeletons)}).")
        out: dict[str, dict[str, np.ndarray]] = {}
        for stream, encoder in self.encoders.items():
            device = next(encoder.parameters()).device
            out[stream] = {}
            for conv in known:
                x = torch.as_tensor(np.asarray(inputs[conv], dtype=np.float32)).to(device)
                with torch.no_grad():
                    feats = encoder_features(encoder, x, self.skeletons[conv], stream)
                    out[stream][conv] = self.classifiers[stream][conv](feats).float().cpu().numpy()
        return out

    def scores(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """Logits, per-stream skeleton-ensemble scores and the fused score (all streams) for prediction.

        Returns:
            ``{"logits": stream -> conv -> (N, C), "streams": stream -> (N, C) ensemble score,
            "final": (N, C)}``; scores are probabilities in softmax mode (the run's ``ensemble_mode`` /
            ``fusion.mode``), averaged logits in logits mode.
        """
        from msclr.models.fusion import ensemble_scores, fuse_streams

        logits = self.logits(inputs)
        mode = self.info["ensemble_mode"]
        streams = {s: ensemble_scores(v, mode) for s, v in logits.items()}
        if len(streams) > 1:
            fusion = self.info["fusion"]
            final = fuse_streams({s: ensemble_scores(logits[s], fusion["mode"]) for s in streams},
                                 fusion["weights"], already=fusion["mode"])
        else:
            final = next(iter(streams.values()))
        return {"logits": logits, "streams": streams, "final": final}


def load_run(run: str | Path, *, device: str = "cpu") -> TrainedRun:
    """Load ``RUN/model.pt`` (``weights_only=True``) and rebuild the frozen encoders and classifiers."""
    import torch

    from msclr.pipeline.config import ModelConfig
    from msclr.pipeline.training.pretrain import build_encoder

    info = read_run_info(run)
    state = load_checkpoint(RunPaths(Path(run)).model, kind="model", map_location="cpu")
    skeletons = {name: Skeleton.from_dict(d, origin=f"{run}/model.pt") for name, d in state["skeletons"].items()}
    model_cfg = config_from_dict({"model": state["model_config"]}).model if state.get("model_config") else ModelConfig()
    convs = list(state["conventions"])
    encoders, classifiers = {}, {}
    for stream, part in state["streams"].items():
        enc = build_encoder([skeletons[c] for c in convs], model_cfg, head="mlp")
        enc.load_state_dict(part["encoder"])
        encoders[stream] = enc.to(device).eval()
        classifiers[stream] = {}
        for conv, wb in part["classifiers"].items():
            fc = torch.nn.Linear(wb["weight"].shape[1], wb["weight"].shape[0])
            fc.load_state_dict({"weight": wb["weight"], "bias": wb["bias"]})
            classifiers[stream][conv] = fc.to(device).eval()
    return TrainedRun(info, skeletons, encoders, classifiers)


# --------------------------------------------------------------------- orchestration
@dataclass
class _Tensorboard:
    writer: Any = None

    @classmethod
    def open(cls, folder: Path, enabled: bool) -> _Tensorboard:
        if not enabled:
            return cls()
        try:
            from torch.utils.tensorboard import SummaryWriter
        except Exception:  # tensorboard not installed: skip silently
            return cls()
        return cls(SummaryWriter(log_dir=str(folder)))

    def scalar(self, tag: str, value: float, step: int) -> None:
        if self.writer is not None:
            self.writer.add_scalar(tag, value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _check_run_folder(paths: RunPaths, config: TrainConfig, resume: bool) -> None:
    if not paths.run_json.exists():
        if paths.root.exists() and any(paths.root.iterdir()) and not resume:
            raise CheckpointError(f"{paths.root} exists and is not empty: choose a new --out folder "
                                  "(or --resume an msclr run).")
        return
    if not resume:
        raise CheckpointError(f"{paths.root} already holds an msclr run: pass --resume to continue it, "
                              "or choose a new --out folder.")
    saved = read_run_info(paths.root).get("config", {})
    for section in ("data", "model", "pretrain"):
        for key, value in config.to_dict()[section].items():
            if key == "workers":
                continue
            if saved.get(section, {}).get(key) != value:
                raise CheckpointError(f"cannot resume {paths.root}: {section}.{key} was "
                                      f"{saved.get(section, {}).get(key)!r}, now {value!r}. Use the same options "
                                      "(see RUN/config.toml) or a new --out folder.")


def train_run(cache_path: str | Path, out: str | Path, config: TrainConfig, *, device: str = "cpu",
              resume: bool = False, progress: Progress | None = None, tensorboard: bool = True,
              handle_sigint: bool = True) -> dict[str, Any]:
    """``msclr train``: pretrain every stream, then linear evaluation, skeleton ensemble and fusion.

    Args:
        cache_path: cache folder (:class:`msclr.pipeline.cache.Cache`).
        out: run folder (created; must be new unless ``resume``).
        config: resolved, validated configuration.
        device: ``cpu``, ``cuda`` or ``cuda:N``.
        resume: continue an interrupted run in ``out``.
        progress: optional ``(event, info)`` callback (pretraining and linear-evaluation events plus
            ``stage`` events with a ``message``).
        tensorboard: write TensorBoard logs when the package is importable.

    Returns:
        The metrics dict (also written to ``RUN/metrics.json``); ranks other than 0 return ``{}``.
    """
    import torch.distributed as torch_dist

    from msclr.pipeline.training.pretrain import init_distributed

    config = config.validate()
    owns_group = torch_dist.is_available() and not torch_dist.is_initialized()
    dist = init_distributed(device)
    try:
        return _train_run(cache_path, out, config, dist, device=device, resume=resume, progress=progress,
                          tensorboard=tensorboard, handle_sigint=handle_sigint)
    finally:
        if owns_group and dist.enabled and torch_dist.is_initialized():
            torch_dist.destroy_process_group()


def _train_run(cache_path: str | Path, out: str | Path, config: TrainConfig, dist: Any, *, device: str,
               resume: bool, progress: Progress | None, tensorboard: bool, handle_sigint: bool) -> dict[str, Any]:
    from msclr.pipeline.cache import Cache
    from msclr.pipeline.training.dataset import check_conventions, class_names, load_split, resolve_split
    from msclr.pipeline.training.pretrain import pretrain

    if not dist.is_main:
        progress = None  # one progress display (rank 0's)
    say = (lambda msg: progress("stage", {"message": msg})) if progress else (lambda msg: None)
    paths = RunPaths(Path(out))
    cache = Cache(cache_path)
    conventions = list(config.data.skeletons)
    skel_list = check_conventions(cache.skeletons, conventions)
    skeletons = dict(zip(conventions, skel_list, strict=True))
    train_split, test_split = resolve_split(cache.splits, config.data.split)
    config = replace(config, data=replace(config.data, split=train_split[: -len("_train")]))
    _check_run_folder(paths, config, resume)  # every rank, before anything is written
    if dist.enabled:
        import torch.distributed

        torch.distributed.barrier()
    say(f"loading {train_split} / {test_split} ({', '.join(conventions)})")
    prep = {"length": config.data.length, "centre": config.data.centre, "y_rotation": config.data.y_rotation}
    train = load_split(cache, cache.splits[train_split], conventions, **prep)
    test = load_split(cache, cache.splits[test_split], conventions, **prep)
    classes = class_names(cache.classes, train.labels, test.labels)
    info = {
        "format": RUN_FORMAT, "version": RUN_VERSION, "msclr_version": __version__, "status": "running",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "cache": str(Path(cache_path).resolve()),
        "conventions": conventions, "streams": list(config.data.streams),
        "preprocessing": {**prep, "valid": "located", "max_persons": cache.max_persons},
        "classes": classes, "num_classes": len(classes),
        "split": {"train": train_split, "test": test_split, "train_clips": len(train), "test_clips": len(test)},
        "model": {**config.to_dict()["model"], "head": "mlp", "in_channels": 3},
        "ensemble_mode": config.linear.score_mode,
        "fusion": {"weights": config.fusion.weights(), "mode": config.fusion.mode},
        "skeletons": {n: s.to_dict() for n, s in skeletons.items()},
        "files": {"model": "model.pt", "metrics": "metrics.json", "config": "config.toml",
                  "classes": "classes.txt", "scores": "test_scores.npz"},
        "config": config.to_dict(),
    }
    if dist.is_main:
        paths.root.mkdir(parents=True, exist_ok=True)
        atomic_write_text(paths.config_toml, to_toml(config))
        atomic_write_text(paths.config_json, _json(config.to_dict()))
        atomic_write_text(paths.classes, "\n".join(classes) + "\n")
        for name, skel in skeletons.items():
            atomic_write_text(paths.skeleton(name), _json(skel.to_dict()))
        atomic_write_text(paths.run_json, _json(info))
    tb = _Tensorboard.open(paths.tensorboard, tensorboard and dist.is_main)
    try:
        encoders: dict[str, dict[str, Any]] = {}
        pre_metrics: dict[str, Any] = {}
        for stream in config.data.streams:
            say(f"pretraining the {stream} stream")
            result = pretrain(train.arrays, skeletons, stream, config, paths.stream_dir(stream), device=device,
                              resume=resume, progress=progress, log_scalar=tb.scalar, dist_info=dist,
                              handle_sigint=handle_sigint)
            encoders[stream] = result.encoder_state
            last = result.history[-1] if result.history else {}
            pre_metrics[stream] = {"epochs": result.epochs, "final_loss": last.get("loss"),
                                   "seconds": float(sum(h.get("seconds", 0.0) for h in result.history))}
        if not dist.is_main:
            return {}
        metrics = _evaluate(encoders, train, test, skeletons, classes, config, device, progress, tb, paths,
                            train_split, test_split)
        metrics["pretrain"] = pre_metrics
        atomic_write_text(paths.metrics, _json(metrics))
        info["status"] = "complete"
        info["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        atomic_write_text(paths.run_json, _json(info))
        say(f"run complete: {paths.root}")
        return metrics
    finally:
        tb.close()


def _evaluate(encoders: Mapping[str, dict[str, Any]], train: Any, test: Any, skeletons: Mapping[str, Skeleton],
              classes: list[str], config: TrainConfig, device: str, progress: Progress | None, tb: _Tensorboard,
              paths: RunPaths, train_split: str, test_split: str) -> dict[str, Any]:
    from msclr.models.fusion import ensemble_scores, fuse_streams, topk_accuracy
    from msclr.pipeline.training.linear_eval import evaluate_stream
    from msclr.pipeline.training.pretrain import build_encoder
    from msclr.pipeline.training.report import confusion_matrix, draw_confusion_png, per_class_accuracy

    tr, te = train.labelled(), test.labelled()
    if len(tr) == 0 or len(te) == 0:
        raise MsclrError(f"linear evaluation needs labelled clips in {train_split} and {test_split} "
                         f"(found {len(tr)} and {len(te)}); label the clips in the cache.")
    num_classes = len(classes)
    conventions = list(skeletons)
    say = (lambda msg: progress("stage", {"message": msg})) if progress else (lambda msg: None)
    streams_out: dict[str, Any] = {}
    model_streams: dict[str, Any] = {}
    stream_logits: dict[str, dict[str, np.ndarray]] = {}
    report: dict[str, Any] = {}
    for stream, state in encoders.items():
        say(f"linear evaluation of the {stream} stream")
        enc = build_encoder([skeletons[c] for c in conventions], config.model, head="mlp")
        enc.load_state_dict(state)
        enc = enc.to(device).eval()
        ev = evaluate_stream(enc, tr.arrays, tr.labels, te.arrays, te.labels, skeletons, stream, num_classes,
                             config.linear, device=device, progress=progress)
        streams_out[stream] = ev.metrics(report_best=config.linear.report_best)
        stream_logits[stream] = {c: r.test_logits for c, r in ev.results.items()}
        model_streams[stream] = {"encoder": state, "classifiers": {
            c: {"weight": r.weight, "bias": r.bias} for c, r in ev.results.items()}}
        for c, r in ev.results.items():
            for h in r.history:
                tb.scalar(f"linear/{stream}/{c}/loss", h["loss"], int(h["epoch"]))
            tb.scalar(f"linear/{stream}/{c}/top1", r.top1, config.linear.epochs)
        final = ev.ensemble_logits if ev.ensemble_logits is not None else next(iter(ev.results.values())).test_logits
        name = "ensemble" if ev.ensemble_logits is not None else conventions[0]
        report[f"{stream}/{name}"] = final
        for c, r in ev.results.items():
            cm = confusion_matrix(r.test_logits.argmax(1), te.labels, num_classes)
            streams_out[stream]["conventions"][c]["per_class"] = _nan_none(per_class_accuracy(cm))
    fusion_out = None
    if len(encoders) > 1:
        mode = config.fusion.mode
        weights = config.fusion.weights()
        results = {}
        for c in conventions:
            scores = fuse_streams({s: v[c] for s, v in stream_logits.items()}, weights, mode=mode)
            results[c] = {"top1": topk_accuracy(scores, te.labels, 1), "top5": topk_accuracy(scores, te.labels, 5)}
        if len(conventions) > 1:
            ens = {s: ensemble_scores(v, mode) for s, v in stream_logits.items()}
            scores = fuse_streams(ens, weights, already=mode)
            results["ensemble"] = {"top1": topk_accuracy(scores, te.labels, 1),
                                   "top5": topk_accuracy(scores, te.labels, 5)}
            report["fusion/ensemble"] = scores
        else:
            report[f"fusion/{conventions[0]}"] = scores
        fusion_out = {"mode": mode, "weights": weights, "results": results}
    # confusion matrices of the headline models
    per_class: dict[str, Any] = {}
    for key, scores in report.items():
        cm = confusion_matrix(np.asarray(scores).argmax(1), te.labels, num_classes)
        draw_confusion_png(cm, paths.report / f"confusion_{key.replace('/', '_')}.png", classes, title=key)
        per_class[key] = dict(zip(classes, _nan_none(per_class_accuracy(cm)), strict=True))
    atomic_write_text(paths.report / "per_class.json", _json(per_class))
    # test scores for offline fusion
    buffer = io.BytesIO()
    arrays = {f"{s}__{c}": v for s, d in stream_logits.items() for c, v in d.items()}
    np.savez(buffer, labels=te.labels, names=np.asarray(te.names), **arrays)
    atomic_write_bytes(paths.scores, buffer.getvalue())
    # model.pt: everything predict needs
    save_checkpoint(paths.model, {
        "conventions": conventions, "classes": classes, "skeletons": {n: s.to_dict() for n, s in skeletons.items()},
        "model_config": config.to_dict()["model"], "streams": model_streams,
        "preprocessing": {"length": config.data.length, "centre": config.data.centre,
                          "y_rotation": config.data.y_rotation, "valid": "located"},
        "ensemble_mode": config.linear.score_mode, "fusion": {"weights": config.fusion.weights(),
                                                              "mode": config.fusion.mode},
    }, kind="model")
    metrics: dict[str, Any] = {
        "protocol": {"train_split": train_split, "test_split": test_split, "train_clips": len(tr),
                     "test_clips": len(te), "num_classes": num_classes, "linear_epochs": config.linear.epochs,
                     "reported": "last epoch" + (" (+ best, test-set selection)" if config.linear.report_best else ""),
                     "score_mode": config.linear.score_mode},
        "classes": classes, "streams": streams_out,
    }
    if fusion_out:
        metrics["fusion"] = fusion_out
    return metrics


class ConsoleProgress:
    """A rich progress display for :func:`train_run` events (the CLI passes it as ``progress``).

    Shows one bar per pretraining stream (epochs x steps) with loss, lr, samples/s and ETA, and a line per
    finished epoch / linear-evaluation stage.  Use as a context manager.
    """

    def __init__(self, console: Any = None, *, quiet: bool = False) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        self.console = console or Console(stderr=True)
        self.quiet = quiet
        self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.fields[info]}"),
                            TimeRemainingColumn(), console=self.console, transient=False)
        self.task: Any = None
        self._last = 0.0

    def __enter__(self) -> ConsoleProgress:
        self.bar.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.bar.stop()

    def __call__(self, event: str, info: dict[str, Any]) -> None:
        if event == "stage":
            self.console.print(f"[cyan]>[/cyan] {info['message']}")
        elif event == "start":
            total = info["epochs"] * info["steps_per_epoch"]
            done = (info["start_epoch"] - 1) * info["steps_per_epoch"]
            if self.task is not None:
                self.bar.remove_task(self.task)
            self.task = self.bar.add_task(f"pretrain {info['stream']}", total=total, completed=done,
                                          info=f"{info['clips']} clips x {len(info['conventions'])} skeletons, "
                                               f"{info['steps_per_epoch']} steps/epoch")
        elif event == "step" and self.task is not None:
            now = time.monotonic()
            step_done = (info["epoch"] - 1) * info["steps"] + info["step"]
            if now - self._last > 0.2 or info["step"] == info["steps"]:
                self._last = now
                eta = info["eta_s"]
                self.bar.update(self.task, completed=step_done, info=(
                    f"epoch {info['epoch']}/{info['epochs']}  loss {info['loss']:.3f}  lr {info['lr']:.3g}  "
                    f"{info['samples_per_s']:.0f} samples/s  ETA {eta / 60:.1f} min"))
        elif event == "epoch" and not self.quiet:
            self.bar.console.print(f"  epoch {info['epoch']}/{info['epochs']}: loss {info['loss']:.4f}, "
                                   f"lr {info['lr']:.3g}, {info['seconds']:.1f} s"
                                   + ("  [mining]" if info.get("mining") else ""))
        elif event == "checkpoint" and not self.quiet:
            where = (f"epoch {info['epoch'] - 1} done" if not info.get("start_batch")
                     else f"epoch {info['epoch']}, step {info['start_batch']}")
            self.bar.console.print(f"  checkpoint {info['path']} ({where})", style="dim")
        elif event == "features":
            self.bar.console.print(f"  features: {info['stream']} / {info['convention']}", style="dim")


def _nan_none(values: np.ndarray) -> list[float | None]:
    return [None if not np.isfinite(v) else float(v) for v in values]


__all__ = ["RunPaths", "TrainedRun", "ConsoleProgress", "read_run_info", "read_metrics", "load_run", "train_run",
           "RUN_FORMAT", "RUN_VERSION"]
