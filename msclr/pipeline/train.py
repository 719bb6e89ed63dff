"""``msclr train``: pretrain every stream, then linear evaluation, skeleton ensemble and stream fusion.

The steps, each a function below: read the cache's split (:func:`_open_data`, :func:`_load_data`), describe and create the
run folder (:func:`_run_info`, :class:`msclr.pipeline.rundir.RunFolder`), MS-AimCLR pretraining per stream
(:func:`msclr.pipeline.training.pretrain.pretrain`), a linear classifier per stream and convention on the
frozen encoder (:func:`_linear_streams`), 3-stream fusion (:func:`_fusion`), then the reports, the test
scores and ``model.pt`` (:func:`_write_outputs`).  What the run folder holds is described in
:mod:`msclr.pipeline.rundir`.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from msclr.console import EventProgress
from msclr.errors import CheckpointError, MsclrError
from msclr.pipeline.config import TrainConfig, to_toml
from msclr.pipeline.rundir import (
    Fusion,
    ModelFile,
    Preprocessing,
    RunFolder,
    RunInfo,
    SplitInfo,
    StreamWeights,
)
from msclr.skeletons import Skeleton


# --------------------------------------------------------------------- TensorBoard
@dataclass
class _Tensorboard:
    """TensorBoard scalars when the ``tensorboard`` package is installed, else nothing."""

    writer: Any = None

    @classmethod
    def open(cls, folder: Path, enabled: bool) -> _Tensorboard:
        if not enabled:
            return cls()
        # tensorboard imports TensorFlow when it is installed (slow, and noisy on stderr) unless the module
        # ``tensorboard.compat.notf`` exists; it only writes event files here, so declare "no TensorFlow".
        sys.modules.setdefault("tensorboard.compat.notf", type(sys)("tensorboard.compat.notf"))
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


# --------------------------------------------------------------------- data and run folder
@dataclass
class _Data:
    """The cache's train / test split, preprocessed, with everything the run records about it."""

    skeletons: dict[str, Skeleton]
    train: Any
    test: Any
    train_split: str
    test_split: str
    classes: list[str]
    max_persons: int


def _open_data(cache_path: str | Path, config: TrainConfig) -> tuple[Any, dict[str, Skeleton], str, str]:
    """Open the cache, check the conventions and resolve the split: (cache, skeletons, train, test split)."""
    from msclr.pipeline.cache import Cache
    from msclr.pipeline.training.dataset import check_conventions, resolve_split

    cache = Cache(cache_path)
    conventions = list(config.data.skeletons)
    skeletons = dict(zip(conventions, check_conventions(cache.skeletons, conventions), strict=True))
    train_split, test_split = resolve_split(cache.splits, config.data.split)
    return cache, skeletons, train_split, test_split


def _load_data(cache: Any, config: TrainConfig, skeletons: dict[str, Skeleton], train_split: str, test_split: str,
               say: Any) -> _Data:
    """Load and preprocess both sides of the split (:func:`msclr.pipeline.training.dataset.load_split`)."""
    from msclr.pipeline.training.dataset import class_names, load_split

    conventions = list(skeletons)
    say(f"loading {train_split} / {test_split} ({', '.join(conventions)})")
    prep = {"length": config.data.length, "centre": config.data.centre, "y_rotation": config.data.y_rotation}
    train = load_split(cache, cache.splits[train_split], conventions, **prep)
    test = load_split(cache, cache.splits[test_split], conventions, **prep)
    classes = class_names(cache.classes, train.labels, test.labels)
    return _Data(skeletons, train, test, train_split, test_split, classes, cache.max_persons)


def _run_info(cache_path: str | Path, config: TrainConfig, data: _Data) -> RunInfo:
    return RunInfo(
        conventions=list(data.skeletons), streams=list(config.data.streams),
        preprocessing=Preprocessing(length=config.data.length, centre=config.data.centre,
                                    y_rotation=config.data.y_rotation, valid="located",
                                    max_persons=data.max_persons),
        classes=data.classes,
        split=SplitInfo(data.train_split, data.test_split, len(data.train), len(data.test)),
        model={**config.to_dict()["model"], "head": "mlp", "in_channels": 3},
        ensemble_mode=config.linear.score_mode,
        fusion=Fusion(weights=config.fusion.weights(), mode=config.fusion.mode),
        skeletons={n: s.to_dict() for n, s in data.skeletons.items()},
        config=config.to_dict(), cache=str(Path(cache_path).resolve()),
    )


def check_run_folder(folder: RunFolder, config: TrainConfig, resume: bool) -> None:
    """Refuse to overwrite a folder, or to resume a run with different data / model / pretraining settings."""
    if not folder.run_json.exists():
        if folder.root.exists() and any(folder.root.iterdir()) and not resume:
            raise CheckpointError(f"{folder.root} exists and is not empty: choose a new --out folder "
                                  "(or --resume an msclr run).")
        return
    if not resume:
        raise CheckpointError(f"{folder.root} already holds an msclr run: pass --resume to continue it, "
                              "or choose a new --out folder.")
    saved = folder.read_info().config
    for section in ("data", "model", "pretrain"):
        for key, value in config.to_dict()[section].items():
            if key == "workers":
                continue
            if saved.get(section, {}).get(key) != value:
                raise CheckpointError(f"cannot resume {folder.root}: {section}.{key} was "
                                      f"{saved.get(section, {}).get(key)!r}, now {value!r}. Use the same options "
                                      "(see RUN/config.toml) or a new --out folder.")


# --------------------------------------------------------------------- the run
def train_run(cache_path: str | Path, out: str | Path, config: TrainConfig, *, device: str = "cpu",
              resume: bool = False, progress: EventProgress | None = None, tensorboard: bool = True,
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
        handle_sigint: save a checkpoint on Ctrl-C before stopping.

    Returns:
        The metrics dict (also written to ``RUN/metrics.json``); ranks other than 0 return ``{}``.
    """
    import torch.distributed as torch_dist

    from msclr.pipeline.training.distributed import init_distributed

    config = config.validate()
    owns_group = torch_dist.is_available() and not torch_dist.is_initialized()
    dist = init_distributed(device)
    try:
        return _train_run(cache_path, RunFolder(out), config, dist, device=device, resume=resume,
                          progress=progress if dist.is_main else None,  # one progress display (rank 0's)
                          tensorboard=tensorboard, handle_sigint=handle_sigint)
    finally:
        if owns_group and dist.enabled and torch_dist.is_initialized():
            torch_dist.destroy_process_group()


def _train_run(cache_path: str | Path, folder: RunFolder, config: TrainConfig, dist: Any, *, device: str,
               resume: bool, progress: EventProgress | None, tensorboard: bool, handle_sigint: bool) -> dict[str, Any]:
    from msclr.pipeline.training.pretrain import pretrain

    say = (lambda msg: progress("stage", {"message": msg})) if progress else (lambda msg: None)
    cache, skeletons, train_split, test_split = _open_data(cache_path, config)
    config = replace(config, data=replace(config.data, split=train_split[: -len("_train")]))
    check_run_folder(folder, config, resume)  # every rank, before anything is written
    if dist.enabled:
        import torch.distributed

        torch.distributed.barrier()
    data = _load_data(cache, config, skeletons, train_split, test_split, say)
    info = _run_info(cache_path, config, data)
    if dist.is_main:
        folder.write_start(info, to_toml(config), data.skeletons)
    tb = _Tensorboard.open(folder.tensorboard, tensorboard and dist.is_main)
    try:
        encoders: dict[str, dict[str, Any]] = {}
        pre_metrics: dict[str, Any] = {}
        for stream in config.data.streams:
            say(f"pretraining the {stream} stream")
            result = pretrain(data.train.arrays, data.skeletons, stream, config, folder.stream_dir(stream),
                              device=device, resume=resume, progress=progress, log_scalar=tb.scalar, dist_info=dist,
                              handle_sigint=handle_sigint)
            encoders[stream] = result.encoder_state
            last = result.history[-1] if result.history else {}
            pre_metrics[stream] = {"epochs": result.epochs, "final_loss": last.get("loss"),
                                   "seconds": float(sum(h.get("seconds", 0.0) for h in result.history))}
        if not dist.is_main:
            return {}
        metrics = _evaluate(encoders, data, config, device, progress, tb, folder)
        metrics["pretrain"] = pre_metrics
        folder.write_metrics(metrics)
        folder.write_info(info.completed())
        say(f"run complete: {folder.root}")
        return metrics
    finally:
        tb.close()


# --------------------------------------------------------------------- evaluation
@dataclass
class _StreamResults:
    """Linear evaluation of every stream: metrics, weights and test logits (stream -> convention -> (N, C))."""

    metrics: dict[str, Any]
    weights: dict[str, StreamWeights]
    logits: dict[str, dict[str, np.ndarray]]
    headline: dict[str, np.ndarray]


def _evaluate(encoders: Mapping[str, dict[str, Any]], data: _Data, config: TrainConfig, device: str,
              progress: EventProgress | None, tb: _Tensorboard, folder: RunFolder) -> dict[str, Any]:
    tr, te = data.train.labelled(), data.test.labelled()
    if len(tr) == 0 or len(te) == 0:
        raise MsclrError(f"linear evaluation needs labelled clips in {data.train_split} and {data.test_split} "
                         f"(found {len(tr)} and {len(te)}); label the clips in the cache.")
    streams = _linear_streams(encoders, tr, te, data, config, device, progress, tb)
    fusion = _fusion(streams, te.labels, list(data.skeletons), config) if len(encoders) > 1 else None
    _write_outputs(folder, streams, te, data, config)
    metrics: dict[str, Any] = {
        "protocol": {"train_split": data.train_split, "test_split": data.test_split, "train_clips": len(tr),
                     "test_clips": len(te), "num_classes": len(data.classes), "linear_epochs": config.linear.epochs,
                     "reported": "last epoch" + (" (+ best, test-set selection)" if config.linear.report_best else ""),
                     "score_mode": config.linear.score_mode},
        "classes": data.classes, "streams": streams.metrics,
    }
    if fusion:
        metrics["fusion"] = fusion
    return metrics


def _linear_streams(encoders: Mapping[str, dict[str, Any]], tr: Any, te: Any, data: _Data, config: TrainConfig,
                    device: str, progress: EventProgress | None, tb: _Tensorboard) -> _StreamResults:
    """A linear classifier per stream and convention on the frozen encoder (the last epoch is reported)."""
    from msclr.models.build import build_encoder
    from msclr.pipeline.training.linear_eval import evaluate_stream
    from msclr.pipeline.training.report import confusion_matrix, per_class_accuracy

    conventions = list(data.skeletons)
    out = _StreamResults({}, {}, {}, {})
    for stream, state in encoders.items():
        if progress:
            progress("stage", {"message": f"linear evaluation of the {stream} stream"})
        enc = build_encoder([data.skeletons[c] for c in conventions], config.model, head="mlp")
        enc.load_state_dict(state)
        ev = evaluate_stream(enc.to(device).eval(), tr.arrays, tr.labels, te.arrays, te.labels, data.skeletons,
                             stream, len(data.classes), config.linear, device=device, progress=progress)
        out.metrics[stream] = ev.metrics(report_best=config.linear.report_best)
        out.logits[stream] = {c: r.test_logits for c, r in ev.results.items()}
        out.weights[stream] = StreamWeights(state, {c: {"weight": r.weight, "bias": r.bias}
                                                    for c, r in ev.results.items()})
        for c, r in ev.results.items():
            for h in r.history:
                tb.scalar(f"linear/{stream}/{c}/loss", h["loss"], int(h["epoch"]))
            tb.scalar(f"linear/{stream}/{c}/top1", r.top1, config.linear.epochs)
            cm = confusion_matrix(r.test_logits.argmax(1), te.labels, len(data.classes))
            out.metrics[stream]["conventions"][c]["per_class"] = _nan_none(per_class_accuracy(cm))
        if ev.ensemble_logits is not None:
            out.headline[f"{stream}/ensemble"] = ev.ensemble_logits
        else:
            out.headline[f"{stream}/{conventions[0]}"] = next(iter(ev.results.values())).test_logits
    return out


def _fusion(streams: _StreamResults, labels: np.ndarray, conventions: list[str], config: TrainConfig) -> dict[str, Any]:
    """3-stream fusion per convention and of the skeleton ensembles (adds the headline score to ``streams``)."""
    from msclr.models.fusion import ensemble_scores, fuse_streams, topk_accuracy

    mode, weights = config.fusion.mode, config.fusion.weights()

    def accuracy(scores: np.ndarray) -> dict[str, float]:
        return {"top1": topk_accuracy(scores, labels, 1), "top5": topk_accuracy(scores, labels, 5)}

    results = {}
    for c in conventions:
        scores = fuse_streams({s: v[c] for s, v in streams.logits.items()}, weights, mode=mode)
        results[c] = accuracy(scores)
    if len(conventions) > 1:
        ens = {s: ensemble_scores(v, mode) for s, v in streams.logits.items()}
        scores = fuse_streams(ens, weights, already=mode)
        results["ensemble"] = accuracy(scores)
        streams.headline["fusion/ensemble"] = scores
    else:
        streams.headline[f"fusion/{conventions[0]}"] = scores
    return {"mode": mode, "weights": weights, "results": results}


def _write_outputs(folder: RunFolder, streams: _StreamResults, te: Any, data: _Data, config: TrainConfig) -> None:
    """Confusion matrices and per-class accuracy of the headline models, the test scores, ``model.pt``."""
    from msclr.pipeline.training.report import confusion_matrix, draw_confusion_png, per_class_accuracy

    per_class: dict[str, Any] = {}
    for key, scores in streams.headline.items():
        cm = confusion_matrix(np.asarray(scores).argmax(1), te.labels, len(data.classes))
        draw_confusion_png(cm, folder.report / f"confusion_{key.replace('/', '_')}.png", data.classes, title=key)
        per_class[key] = dict(zip(data.classes, _nan_none(per_class_accuracy(cm)), strict=True))
    folder.write_report_json("per_class.json", per_class)
    folder.write_scores(te.labels, list(te.names), streams.logits)
    folder.write_model(ModelFile(conventions=list(data.skeletons),
                                 skeletons={n: s.to_dict() for n, s in data.skeletons.items()},
                                 model_config=config.to_dict()["model"], streams=streams.weights))


def _nan_none(values: np.ndarray) -> list[float | None]:
    return [None if not np.isfinite(v) else float(v) for v in values]


__all__ = ["train_run", "check_run_folder"]
