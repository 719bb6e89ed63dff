"""The evaluation protocols of a run, each over every stream: scores, ensemble, fusion, reports.

For each protocol of ``[evaluation] protocols`` (:class:`msclr.pipeline.config.Protocol`):

- ``linear``: the frozen pretrained encoder, one linear classifier per convention
  (:mod:`msclr.pipeline.training.linear_eval`);
- ``finetune`` / ``semi:P`` / ``scratch``: the encoder and one linear head per convention trained with labels
  (:mod:`msclr.pipeline.training.finetune`), from the pretrained encoder or (``scratch``) from random weights;
  ``semi:P`` trains on the class-balanced label subset of :func:`~msclr.pipeline.training.finetune.label_subset`
  (its clip names go to ``RUN/protocols/TAG/train_clips.txt``).

Every protocol then gives the same things, in the same layout: per stream and convention top-1 / top-5 and
per-class accuracy, the skeleton ensemble (``[linear] score_mode``, softmax averaging by default) and, with
several streams, the 3-stream fusion (:func:`fuse`); the weights (:class:`msclr.pipeline.rundir.StreamWeights`)
and the test logits.  :func:`write_reports` writes the confusion matrices, ``report/per_class.json`` and
``test_scores.npz`` of all protocols; ``linear`` keeps the names it always had, the others' start with their tag.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from msclr.errors import MsclrError
from msclr.pipeline.config import Protocol, TrainConfig
from msclr.pipeline.rundir import RunFolder, StreamWeights
from msclr.skeletons import Skeleton

Progress = Callable[[str, dict[str, Any]], None]
ScalarLog = Callable[[str, float, int], None]


@dataclass
class EvalSet:
    """What every protocol evaluates on.

    Attributes:
        skeletons: convention -> definition, in the encoder's order.
        train / test: labelled :class:`~msclr.pipeline.training.dataset.SplitData` of the two sides.
        classes: class names in label order.
        train_split / test_split: the split names (for the record).
    """

    skeletons: dict[str, Skeleton]
    train: Any
    test: Any
    classes: list[str]
    train_split: str
    test_split: str


@dataclass
class ProtocolResult:
    """One protocol over every stream.

    Attributes:
        protocol: which one.
        metrics: ``{"protocol": settings, "streams": stream -> {"conventions", "ensemble"?}, "fusion"?}``.
        weights: stream -> encoder + per-convention classifier.
        logits: stream -> convention -> (N_test, C) test logits.
        headline: report key (``joint/ensemble``, ``fusion/ensemble``) -> (N_test, C) scores.
        train_names: the training clips used, when a subset (``semi:P``).
    """

    protocol: Protocol
    metrics: dict[str, Any]
    weights: dict[str, StreamWeights] = field(default_factory=dict)
    logits: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    headline: dict[str, np.ndarray] = field(default_factory=dict)
    train_names: list[str] | None = None

    def key(self, name: str) -> str:
        """A report / score key, prefixed with the protocol's tag unless it is ``linear``."""
        return name if self.protocol.kind == "linear" else f"{self.protocol.tag}/{name}"


def nan_none(values: np.ndarray) -> list[float | None]:
    """Floats for JSON, NaN as None."""
    return [None if not np.isfinite(v) else float(v) for v in values]


def _stream_metrics(logits: Mapping[str, np.ndarray], labels: np.ndarray, classes: int,
                    mode: str) -> tuple[dict[str, Any], np.ndarray]:
    """``{"conventions": conv -> top1/top5/per_class, "ensemble"?}`` of one stream, and its headline scores."""
    from msclr.models.fusion import ensemble_scores, topk_accuracy
    from msclr.pipeline.training.report import confusion_matrix, per_class_accuracy

    out: dict[str, Any] = {"conventions": {}}
    for conv, scores in logits.items():
        cm = confusion_matrix(np.asarray(scores).argmax(1), labels, classes)
        out["conventions"][conv] = {"top1": topk_accuracy(scores, labels, 1), "top5": topk_accuracy(scores, labels, 5),
                                    "per_class": nan_none(per_class_accuracy(cm))}
    if len(logits) < 2:
        return out, next(iter(logits.values()))
    ens = ensemble_scores(list(logits.values()), mode)
    out["ensemble"] = {"mode": mode, "top1": topk_accuracy(ens, labels, 1), "top5": topk_accuracy(ens, labels, 5)}
    return out, ens


def _headline_name(stream: str, logits: Mapping[str, np.ndarray]) -> str:
    return f"{stream}/ensemble" if len(logits) > 1 else f"{stream}/{next(iter(logits))}"


def _linear(encoders: Mapping[str, dict[str, Any]], ev: EvalSet, config: TrainConfig, result: ProtocolResult,
            device: str, progress: Progress | None, log_scalar: ScalarLog) -> None:
    """A linear classifier per stream and convention on the frozen encoder (the last epoch is reported)."""
    from msclr.models.build import build_encoder
    from msclr.pipeline.training.linear_eval import evaluate_stream

    tr, te = ev.train, ev.test
    for stream, state in encoders.items():
        if progress:
            progress("stage", {"message": f"linear evaluation of the {stream} stream"})
        enc = build_encoder(list(ev.skeletons.values()), config.model, head="mlp")
        enc.load_state_dict(state)
        run = evaluate_stream(enc.to(device).eval(), tr.arrays, tr.labels, te.arrays, te.labels, ev.skeletons,
                              stream, len(ev.classes), config.linear, device=device, progress=progress)
        logits = {c: r.test_logits for c, r in run.results.items()}
        metrics, headline = _stream_metrics(logits, te.labels, len(ev.classes), config.linear.score_mode)
        for c, r in run.results.items():
            if config.linear.report_best and r.best_top1 is not None:
                metrics["conventions"][c].update(best_top1=r.best_top1, best_epoch=r.best_epoch)
            for h in r.history:
                log_scalar(f"linear/{stream}/{c}/loss", h["loss"], int(h["epoch"]))
            log_scalar(f"linear/{stream}/{c}/top1", r.top1, config.linear.epochs)
        result.metrics["streams"][stream] = metrics
        result.logits[stream] = logits
        result.headline[result.key(_headline_name(stream, logits))] = headline
        result.weights[stream] = StreamWeights(state, {c: {"weight": r.weight, "bias": r.bias}
                                                       for c, r in run.results.items()})


def _finetuned(encoders: Mapping[str, dict[str, Any]], ev: EvalSet, config: TrainConfig, result: ProtocolResult,
               device: str, progress: Progress | None, log_scalar: ScalarLog) -> None:
    """``finetune`` / ``semi:P`` / ``scratch``: encoder + heads trained with labels, per stream."""
    import torch

    from msclr.models.build import build_encoder
    from msclr.pipeline.training.finetune import finetune_stream, label_subset

    protocol, tr, te = result.protocol, ev.train, ev.test
    arrays, labels = tr.arrays, tr.labels
    if protocol.fraction < 1.0:  # semi:P / scratch:P: only these clips, no other label (and no other clip) is seen
        keep = label_subset(tr.labels, protocol.fraction, config.finetune.seed)
        result.train_names = [tr.names[i] for i in keep]
        arrays, labels = {c: a[keep] for c, a in tr.arrays.items()}, tr.labels[keep]
    for stream in config.data.streams:
        start = "the pretrained encoder" if protocol.pretrained else "random weights"
        if progress:
            progress("stage", {"message": f"{protocol.name}: training the {stream} stream from {start} "
                                          f"({len(labels)} labelled clips, {config.finetune.epochs} epochs)"})
        torch.manual_seed(int(config.finetune.seed))  # the scratch encoder's initialisation
        enc = build_encoder(list(ev.skeletons.values()), config.model, head="mlp")
        if protocol.pretrained:
            enc.load_state_dict(encoders[stream])
        run = finetune_stream(enc, arrays, labels, te.arrays, ev.skeletons, stream, len(ev.classes), config.finetune,
                              device=device, progress=progress)
        for h in run.history:
            log_scalar(f"{protocol.tag}/{stream}/loss", h["loss"], int(h["epoch"]))
        metrics, headline = _stream_metrics(run.test_logits, te.labels, len(ev.classes), config.linear.score_mode)
        result.metrics["streams"][stream] = metrics
        result.logits[stream] = run.test_logits
        result.headline[result.key(_headline_name(stream, run.test_logits))] = headline
        result.weights[stream] = StreamWeights(run.encoder_state, run.classifiers)
    result.metrics["protocol"]["train_clips"] = int(len(labels))


def _settings(protocol: Protocol, ev: EvalSet, config: TrainConfig) -> dict[str, Any]:
    """The ``protocol`` record of a section: what was trained on what, and what is reported."""
    base = {"name": protocol.name, "train_split": ev.train_split, "test_split": ev.test_split,
            "train_clips": len(ev.train), "test_clips": len(ev.test), "num_classes": len(ev.classes)}
    if protocol.kind == "linear":
        best = " (+ best, test-set selection)" if config.linear.report_best else ""
        return {**base, "linear_epochs": config.linear.epochs, "reported": "last epoch" + best,
                "score_mode": config.linear.score_mode}
    ft = config.finetune
    return {**base, "encoder": "pretrained, fine-tuned" if protocol.pretrained else "random init (scratch)",
            "label_fraction": protocol.fraction, "epochs": ft.epochs, "batch_size": ft.batch_size, "lr": ft.lr,
            "lr_steps": list(ft.lr_steps), "reported": "last epoch", "score_mode": config.linear.score_mode}


def evaluate_protocol(protocol: Protocol, encoders: Mapping[str, dict[str, Any]], ev: EvalSet, config: TrainConfig,
                      *, device: str = "cpu", progress: Progress | None = None,
                      log_scalar: ScalarLog | None = None) -> ProtocolResult:
    """Run one protocol over every stream (``encoders``: stream -> pretrained encoder state; unused by
    ``scratch``), then the 3-stream fusion when there are several streams."""
    if len(ev.train) == 0 or len(ev.test) == 0:
        raise MsclrError(f"evaluation needs labelled clips in {ev.train_split} and {ev.test_split} (found "
                         f"{len(ev.train)} and {len(ev.test)}); label the clips in the cache.")
    result = ProtocolResult(protocol, {"protocol": _settings(protocol, ev, config), "streams": {}})
    sink = log_scalar or (lambda tag, value, step: None)
    if protocol.kind == "linear":
        _linear(encoders, ev, config, result, device, progress, sink)
    else:
        _finetuned(encoders, ev, config, result, device, progress, sink)
    if len(result.logits) > 1:
        result.metrics["fusion"] = fuse(result, ev.test.labels, list(ev.skeletons), config)
    return result


def fuse(result: ProtocolResult, labels: np.ndarray, conventions: list[str], config: TrainConfig) -> dict[str, Any]:
    """3-stream fusion per convention and of the skeleton ensembles (adds the headline score to ``result``)."""
    from msclr.models.fusion import ensemble_scores, fuse_streams, topk_accuracy

    mode, weights = config.fusion.mode, config.fusion.weights()

    def accuracy(scores: np.ndarray) -> dict[str, float]:
        return {"top1": topk_accuracy(scores, labels, 1), "top5": topk_accuracy(scores, labels, 5)}

    results = {}
    for c in conventions:
        scores = fuse_streams({s: v[c] for s, v in result.logits.items()}, weights, mode=mode)
        results[c] = accuracy(scores)
    if len(conventions) > 1:
        ens = {s: ensemble_scores(v, mode) for s, v in result.logits.items()}
        scores = fuse_streams(ens, weights, already=mode)
        results["ensemble"] = accuracy(scores)
        result.headline[result.key("fusion/ensemble")] = scores
    else:
        result.headline[result.key(f"fusion/{conventions[0]}")] = scores
    return {"mode": mode, "weights": weights, "results": results}


def write_reports(folder: RunFolder, results: list[ProtocolResult], test: Any, classes: list[str]) -> None:
    """Confusion matrices and per-class accuracy of every protocol's headline scores, the clip lists of label
    subsets, and ``test_scores.npz`` (every protocol's test logits)."""
    from msclr.pipeline.training.report import confusion_matrix, draw_confusion_png, per_class_accuracy

    per_class: dict[str, Any] = {}
    logits: dict[str, dict[str, np.ndarray]] = {}
    for result in results:
        for key, scores in result.headline.items():
            cm = confusion_matrix(np.asarray(scores).argmax(1), test.labels, len(classes))
            name = key.replace("/", "_").replace(":", "_")
            draw_confusion_png(cm, folder.report / f"confusion_{name}.png", classes, title=key)
            per_class[key] = dict(zip(classes, nan_none(per_class_accuracy(cm)), strict=True))
        for stream, by_conv in result.logits.items():
            logits[stream if result.protocol.kind == "linear" else f"{result.protocol.tag}__{stream}"] = by_conv
        if result.train_names is not None:
            folder.write_names(folder.protocol_clips(result.protocol.tag), result.train_names)
    folder.write_report_json("per_class.json", per_class)
    folder.write_scores(test.labels, list(test.names), logits)


__all__ = ["EvalSet", "ProtocolResult", "evaluate_protocol", "fuse", "nan_none", "write_reports"]
