"""Frozen-encoder linear evaluation on cached features, skeleton ensemble per stream.

Protocol (the reference's): the pretrained encoder is frozen and stays in ``eval()`` mode (running BN
statistics, no dropout) and no augmentation is applied, so an encoder maps each clip to the
same 256-d feature in every epoch.  msclr therefore computes the features ONCE per convention (train and test)
and trains each linear classifier on the cached features: SGD momentum 0.9, Nesterov off, weight decay 0,
lr 3.0 -> 0.3 after epoch 80 of 100, batch 128, shuffled with a seeded generator.  The reference instead
re-runs the frozen encoder on every batch of every epoch; :func:`linear_eval_forward` keeps that protocol as a
reference path (it draws the same random numbers, so both give the same classifier up to float rounding; see
tests and ``bench/linear_eval.py``).

Reported number: the LAST epoch's test accuracy.  The reference reports the best test accuracy over
evaluations every 5 epochs, which selects the model on the test set and so gives optimistic numbers; msclr can
record that too (``report_best``), always labelled "best (test-set selection)".

Skeleton ensemble: one classifier per convention, each trained on its own convention's features
(equivalent to the reference's summed per-skeleton cross-entropy with a frozen encoder).  Test scores are the
mean of the per-convention softmax probabilities (``score_mode="softmax"``, the paper's description, default)
or of the raw logits (``"logits"``, what the reference code does).

Bones use each convention's own bone list, whereas the reference's evaluation applied NTU's 25-joint bone
pairs to SMPL-X too (joints 25-41 left zero, unlike its pretraining); the same
:func:`msclr.models.streams.to_stream` is used in pretraining, evaluation and prediction.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from msclr.models.build import FEATURE_BATCH, encoder_features, extract_features
from msclr.models.fusion import ensemble_scores, topk_accuracy
from msclr.pipeline.config import LinearConfig
from msclr.skeletons import Skeleton

Progress = Callable[[str, dict[str, Any]], None]


@dataclass
class ClassifierResult:
    """One trained linear classifier and its test scores.

    Attributes:
        weight: (C, D) float32 tensor; bias: (C,) float32 tensor (on the CPU).
        test_logits: (N_test, C) float32 logits of the last epoch.
        top1, top5: last-epoch test accuracy, percent.
        best_top1, best_epoch: best test top-1 over the periodic evaluations (test-set selection; reported only
            when asked, labelled as such).
        history: per-epoch dicts (epoch, lr, loss[, top1]).
    """

    weight: Any
    bias: Any
    test_logits: np.ndarray
    top1: float
    top5: float
    best_top1: float | None = None
    best_epoch: int | None = None
    history: list[dict[str, float]] = field(default_factory=list)


def calibrate_batchnorm(encoder: Any, arrays: Mapping[str, Any], skeletons: Mapping[str, Skeleton], stream: str,
                        *, device: Any = None, batch_size: int = FEATURE_BATCH) -> Any:
    """Recompute every BatchNorm's running statistics from ``arrays`` (no labels, no gradient); eval mode after.

    Needed for a *random-init* baseline only: a freshly initialised encoder has running statistics (0, 1),
    so in eval mode its N(0, 0.02) weights shrink the input by orders of magnitude per block and the frozen
    features are ~1e-6, which a linear classifier cannot use.  A pretrained encoder already has statistics
    from pretraining and must not be recalibrated (that would change the protocol).

    Only the BatchNorm layers run in training mode; dropout stays off, because the statistics are for
    eval-mode features, which have no dropout (with dropout 0.5 on, every BatchNorm after a dropped layer
    would see about twice the variance it meets at evaluation; on UTD-MHAD that cost the random-init
    baseline 2.5 points).
    """
    import torch

    from msclr.models.streams import to_stream

    device = torch.device(device) if device is not None else next(encoder.parameters()).device
    bns = [m for m in encoder.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over all batches
    encoder.eval()
    for m in bns:
        m.train()
    with torch.no_grad():
        for name, x in arrays.items():
            x = torch.as_tensor(x)
            for start in range(0, x.shape[0], batch_size):
                batch = x[start:start + batch_size].to(device)
                encoder.features(to_stream(batch, stream, skeletons[name]), name)
    for m, mom in zip(bns, saved, strict=True):
        m.momentum = mom
    return encoder.eval()


def feature_stats(features: Any, eps: float = 1e-6) -> tuple[Any, Any]:
    """Per-dimension mean and standard deviation (+ eps) of ``(N, D)`` training features."""
    return features.mean(0), features.std(0, unbiased=False) + eps


def new_linear(dim: int, num_classes: int, gen: Any) -> Any:
    """A ``Linear(dim, num_classes)`` (CPU) with the reference's ``weights_init``: N(0, 0.02) weights drawn from
    the torch generator ``gen``, zero bias."""
    import torch

    fc = torch.nn.Linear(dim, num_classes)
    with torch.no_grad():
        fc.weight.copy_(torch.randn(fc.weight.shape, generator=gen) * 0.02)
        fc.bias.zero_()
    return fc


def _new_classifier(dim: int, num_classes: int, gen: Any, device: Any,
                    stats: tuple[Any, Any] | None) -> tuple[Any, Callable[[Any], Any]]:
    """:func:`new_linear` on ``device``, and the classifier as the training loop sees it (standardise with
    ``stats`` first when given)."""
    linear = new_linear(dim, num_classes, gen).to(device)
    if stats is None:
        return linear, linear
    mean, std = (t.to(device) for t in stats)

    def classify(features: Any) -> Any:
        return linear((features - mean) / std)

    return linear, classify


def _raw_feature_weights(linear: Any, stats: tuple[Any, Any] | None, device: Any) -> tuple[Any, Any]:
    """(C, D) weight and (C,) bias on the CPU that apply to raw features: a classifier trained on
    ``(f - mean) / std`` is folded back (``W' = W / std``, ``b' = b - W' @ mean``)."""
    import torch

    with torch.no_grad():
        weight, bias = linear.weight.detach(), linear.bias.detach()
        if stats is not None:
            mean, std = (t.to(device) for t in stats)
            weight = weight / std
            bias = bias - weight @ mean
    return weight.cpu().clone(), bias.cpu().clone()


def _train_loop(batch_features: Callable[[Any], Any], n_train: int, y_train: Any, test_logits_fn: Callable[[Any], Any],
                y_test: np.ndarray, num_classes: int, dim: int, config: LinearConfig, device: Any,
                eval_every: int | None, progress: Progress | None, tag: str,
                stats: tuple[Any, Any] | None = None) -> ClassifierResult:
    """Shared loop of the cached and per-epoch-forward paths (identical random draws in both).

    ``stats`` = (mean, std) of the training features when ``config.standardize``: the classifier then sees
    ``(f - mean) / std`` during training and the returned weight / bias are folded back so that they apply
    to raw features.
    """
    import torch
    import torch.nn.functional as F

    gen = torch.Generator().manual_seed(int(config.seed))
    linear, fc = _new_classifier(dim, num_classes, gen, device, stats)
    opt = torch.optim.SGD(linear.parameters(), lr=config.lr, momentum=config.momentum, nesterov=config.nesterov,
                          weight_decay=config.weight_decay)
    y_train = torch.as_tensor(y_train, dtype=torch.long).to(device)
    batch = min(config.batch_size, n_train)
    drop_last = config.drop_last and n_train >= config.batch_size
    history: list[dict[str, float]] = []
    best: tuple[float, int] | None = None
    for epoch in range(1, config.epochs + 1):
        lr = config.lr_at(epoch)
        for group in opt.param_groups:
            group["lr"] = lr
        order = torch.randperm(n_train, generator=gen)
        stop = (n_train // batch) * batch if drop_last else n_train
        total, count = 0.0, 0
        linear.train()
        for start in range(0, stop, batch):
            idx = order[start:start + batch]
            feats = batch_features(idx)
            loss = F.cross_entropy(fc(feats), y_train[idx.to(device)])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
            count += len(idx)
        record = {"epoch": epoch, "lr": lr, "loss": total / max(count, 1)}
        if eval_every and (epoch % eval_every == 0 or epoch == config.epochs):
            with torch.no_grad():
                logits = test_logits_fn(fc).float().cpu().numpy()
            record["top1"] = topk_accuracy(logits, y_test, 1)
            if best is None or record["top1"] >= best[0]:
                best = (record["top1"], epoch)
        history.append(record)
        if progress is not None:
            progress("linear_epoch", {"tag": tag, **record, "epochs": config.epochs})
    with torch.no_grad():
        logits = test_logits_fn(fc).float().cpu().numpy()
    weight, bias = _raw_feature_weights(linear, stats, device)
    return ClassifierResult(
        weight=weight, bias=bias, test_logits=logits,
        top1=topk_accuracy(logits, y_test, 1), top5=topk_accuracy(logits, y_test, 5),
        best_top1=None if best is None else best[0], best_epoch=None if best is None else best[1],
        history=history)


def linear_eval_cached(train_features: Any, y_train: np.ndarray, test_features: Any, y_test: np.ndarray,
                       num_classes: int, config: LinearConfig, *, device: Any = None, eval_every: int | None = 5,
                       progress: Progress | None = None, tag: str = "") -> ClassifierResult:
    """Train a linear classifier on cached ``(N, D)`` features (msclr's protocol)."""
    import torch

    device = torch.device(device) if device is not None else train_features.device
    train_features = train_features.to(device)
    test_features = test_features.to(device)
    return _train_loop(lambda idx: train_features[idx.to(device)], int(train_features.shape[0]), y_train,
                       lambda fc: fc(test_features), np.asarray(y_test), num_classes, int(train_features.shape[1]),
                       config, device, eval_every, progress, tag,
                       feature_stats(train_features) if config.standardize else None)


def linear_eval_forward(encoder: Any, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray,
                        y_test: np.ndarray, skeleton: Skeleton, stream: str, num_classes: int,
                        config: LinearConfig, *, device: Any = None, eval_every: int | None = 5,
                        progress: Progress | None = None, tag: str = "") -> ClassifierResult:
    """Reference protocol: re-run the frozen encoder on every batch of every epoch (slow; for comparison)."""
    import torch

    encoder.eval()
    device = torch.device(device) if device is not None else next(encoder.parameters()).device
    x_train_t = torch.as_tensor(x_train)
    x_test_t = torch.as_tensor(x_test)

    def batch_features(idx: Any) -> Any:
        return encoder_features(encoder, x_train_t[idx].to(device), skeleton, stream)

    def test_logits(fc: Any) -> Any:
        parts = [fc(encoder_features(encoder, x_test_t[s:s + config.batch_size].to(device), skeleton, stream))
                 for s in range(0, x_test_t.shape[0], config.batch_size)]
        return torch.cat(parts)

    dim = int(encoder_features(encoder, x_train_t[:1].to(device), skeleton, stream).shape[1])
    stats = None
    if config.standardize:  # one extra pass for the statistics (the reference has no such option)
        stats = feature_stats(extract_features(encoder, x_train_t, skeleton, stream, device=device,
                                               batch_size=config.batch_size))
    return _train_loop(batch_features, int(x_train_t.shape[0]), y_train, test_logits, np.asarray(y_test),
                       num_classes, dim, config, device, eval_every, progress, tag, stats)


@dataclass
class StreamEvaluation:
    """Linear evaluation of one stream: per-convention classifiers and their skeleton ensemble."""

    stream: str
    results: dict[str, ClassifierResult]
    ensemble_logits: np.ndarray | None
    ensemble_mode: str
    labels: np.ndarray

    def metrics(self, *, report_best: bool = False) -> dict[str, Any]:
        conv = {}
        for name, res in self.results.items():
            conv[name] = {"top1": res.top1, "top5": res.top5}
            if report_best and res.best_top1 is not None:
                conv[name].update(best_top1=res.best_top1, best_epoch=res.best_epoch)
        out: dict[str, Any] = {"conventions": conv}
        if self.ensemble_logits is not None:
            out["ensemble"] = {"mode": self.ensemble_mode,
                               "top1": topk_accuracy(self.ensemble_logits, self.labels, 1),
                               "top5": topk_accuracy(self.ensemble_logits, self.labels, 5)}
        return out


def evaluate_stream(encoder: Any, train_arrays: Mapping[str, np.ndarray], y_train: np.ndarray,
                    test_arrays: Mapping[str, np.ndarray], y_test: np.ndarray, skeletons: Mapping[str, Skeleton],
                    stream: str, num_classes: int, config: LinearConfig, *, device: Any = None,
                    progress: Progress | None = None) -> StreamEvaluation:
    """Features once per convention, one classifier per convention, and the skeleton ensemble of the test scores.

    Args:
        encoder: frozen multi-skeleton encoder (any head; only ``features`` is used).
        train_arrays / test_arrays: convention -> (N, 3, T, V, M) float32 (labelled clips only).
        y_train / y_test: (N,) int64 labels.
        skeletons: convention -> definition (bones for the bone stream, name for the encoder).
    """
    results: dict[str, ClassifierResult] = {}
    for name in train_arrays:
        skel = skeletons[name]
        if progress is not None:
            progress("features", {"stream": stream, "convention": name})
        tr = extract_features(encoder, train_arrays[name], skel, stream, device=device)
        te = extract_features(encoder, test_arrays[name], skel, stream, device=device)
        results[name] = linear_eval_cached(tr, y_train, te, y_test, num_classes, config, device=device,
                                           eval_every=5 if config.report_best else None, progress=progress,
                                           tag=f"{stream}/{name}")
    ens = ensemble_scores([r.test_logits for r in results.values()], config.score_mode) if len(results) > 1 else None
    return StreamEvaluation(stream, results, ens, config.score_mode, np.asarray(y_test))


__all__ = ["ClassifierResult", "StreamEvaluation", "calibrate_batchnorm", "feature_stats", "new_linear",
           "linear_eval_cached",
           "linear_eval_forward", "evaluate_stream"]
