"""The fine-tuned protocols: the encoder and one linear head per convention, every weight trained with labels.

``msclr train --protocol ...`` (see :data:`msclr.pipeline.config.PROTOCOL_KINDS`):

- ``finetune``: starts from the pretrained encoder, trains on every labelled training clip (AimCLR's
  fine-tuned protocol);
- ``semi:P``: the same on a class-balanced fraction P of the training labels (:func:`label_subset`); the other
  training clips are not used at all (AimCLR's semi-supervised protocol, P = 0.01 and 0.1 published);
- ``scratch``: the same network and schedule from random weights (the supervised baseline).

**One fine-tuned encoder per stream serves every convention.**  MS-CLR pretrains one multi-skeleton encoder
whose blocks are shared and whose per-convention parts are the adjacency, the input ``data_bn`` and the edge
importance; fine-tuning keeps that shape: each step takes one batch of clips and sums, over the conventions,
the cross-entropy of that convention's head on that convention's skeletons of the same clips (the reference's
summed per-skeleton cross-entropy, now with the encoder trained too).  So the shared blocks learn from every
convention, each convention's own parts and head from its skeletons, and ``model.pt`` holds one encoder per
stream and protocol, as for linear evaluation; the skeleton ensemble and the 3-stream fusion are then made from
the per-convention test scores exactly as for linear evaluation.  (One encoder per convention would multiply
the weights, the training time and the prediction cost by the number of conventions, and would fine-tune the
shared blocks away from the multi-skeleton representation the method is about.)  The contrastive MLP head of
pretraining is neither used nor trained; it stays in the saved state so that the encoder loads as pretrained.

Schedule (:class:`msclr.pipeline.config.FinetuneConfig`; defaults are AimCLR's fine-tuning code values): SGD
momentum 0.9, Nesterov on, weight decay 1e-4, lr 0.01 (``lr_steps`` none), 100 epochs, batch 128 (``drop_last``
unless the training set is smaller than a batch), heads initialised as the reference's ``weights_init``
(N(0, 0.02) weights, zero bias), the normal augmentation (shear + temporal crop) on training batches
(``augment``), BatchNorm and dropout in training mode (``eval_mode = true`` keeps the reference's ``eval()``
loop).  The LAST epoch's test accuracy is reported; there is no model selection on the test set.

Randomness: the global torch seed (dropout, the scratch encoder's initialisation, made by the caller), the
batch order and head initialisation (a CPU generator) and the augmentation (a device generator) are all seeded
from ``seed``, so a run on the CPU is repeatable.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from msclr.errors import MsclrError
from msclr.pipeline.config import FinetuneConfig
from msclr.skeletons import Skeleton

Progress = Callable[[str, dict[str, Any]], None]


@dataclass
class FinetuneResult:
    """One stream fine-tuned (or trained from scratch).

    Attributes:
        encoder_state: the trained encoder's ``state_dict`` (CPU tensors).
        classifiers: convention -> ``{"weight": (C, D), "bias": (C,)}`` CPU tensors of its head.
        test_logits: convention -> (N_test, C) float32 logits of the last epoch.
        history: per-epoch dicts (epoch, lr, loss, seconds).
    """

    encoder_state: dict[str, Any]
    classifiers: dict[str, dict[str, Any]]
    test_logits: dict[str, np.ndarray]
    history: list[dict[str, float]] = field(default_factory=list)


def label_subset(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Indices of a class-balanced fraction of labelled clips: per class, ``max(1, round(fraction * n_class))``
    clips drawn without replacement with a generator seeded by ``seed`` (classes in label order).

    Args:
        labels: (N,) int labels, -1 for unlabelled clips (never chosen).
        fraction: 0 < fraction <= 1.

    Returns:
        Sorted (K,) int64 indices into ``labels``.
    """
    if not 0.0 < fraction <= 1.0:
        raise MsclrError(f"the label fraction must be in (0, 1], got {fraction!r}")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    for label in np.unique(labels[labels >= 0]):
        members = np.flatnonzero(labels == label)
        count = max(1, min(len(members), int(math.floor(fraction * len(members) + 0.5))))
        chosen.extend(int(i) for i in rng.choice(members, size=count, replace=False))
    return np.sort(np.asarray(chosen, dtype=np.int64))


@dataclass
class _Loop:
    """What one fine-tuning run works on."""

    encoder: Any
    heads: Any
    optimizer: Any
    inputs: dict[str, Any]
    labels: Any
    skeletons: Mapping[str, Skeleton]
    stream: str
    config: FinetuneConfig
    device: Any
    order_gen: Any
    aug_gen: Any


def _build_loop(encoder: Any, train_arrays: Mapping[str, np.ndarray], y_train: np.ndarray, skeletons: Mapping[str, Skeleton],
                stream: str, num_classes: int, config: FinetuneConfig, device: Any) -> _Loop:
    """Heads (one per convention, seeded reference init), SGD over the encoder (not its contrastive head) and
    the heads, generators."""
    import torch

    from msclr.models.stgcn import module_key
    from msclr.pipeline.training.linear_eval import new_linear

    dev = torch.device(device)
    order_gen = torch.Generator().manual_seed(int(config.seed))
    heads = torch.nn.ModuleDict({module_key(c): new_linear(encoder.hidden_dim, num_classes, order_gen)
                                 for c in train_arrays}).to(dev)
    params = [p for n, p in encoder.named_parameters() if not n.startswith("fc.")] + list(heads.parameters())
    optimizer = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov,
                                weight_decay=config.weight_decay)
    aug_gen = torch.Generator(device=dev)
    aug_gen.manual_seed(int(config.seed) + 1)
    inputs = {c: torch.as_tensor(np.asarray(a, dtype=np.float32)) for c, a in train_arrays.items()}
    labels = torch.as_tensor(np.asarray(y_train), dtype=torch.long)
    return _Loop(encoder.to(dev), heads, optimizer, inputs, labels, skeletons, stream, config, dev, order_gen, aug_gen)


def _step(loop: _Loop, idx: Any) -> float:
    """One optimiser step on clips ``idx``: summed cross-entropy of every convention's head; returns the loss."""
    import torch.nn.functional as F

    from msclr.models.augment import normal_augment
    from msclr.models.stgcn import module_key
    from msclr.models.streams import to_stream

    y = loop.labels[idx].to(loop.device)
    loss = 0.0
    for conv, x in loop.inputs.items():
        batch = x[idx].to(loop.device, non_blocking=True)
        if loop.config.augment:
            batch = normal_augment(batch, loop.aug_gen)
        skel = loop.skeletons[conv]
        feats = loop.encoder.features(to_stream(batch, loop.stream, skel), skel.name)
        loss = loss + F.cross_entropy(loop.heads[module_key(conv)](feats), y)
    loop.optimizer.zero_grad(set_to_none=True)
    loss.backward()  # type: ignore[union-attr]
    loop.optimizer.step()
    return float(loss.detach())  # type: ignore[union-attr]


def _epoch(loop: _Loop, epoch: int) -> dict[str, float]:
    """Train 1-based ``epoch``; returns its record (epoch, lr, loss, seconds)."""
    import torch

    cfg = loop.config
    lr = cfg.lr_at(epoch)
    for group in loop.optimizer.param_groups:
        group["lr"] = lr
    loop.encoder.train(not cfg.eval_mode)
    loop.heads.train()
    n = int(loop.labels.shape[0])
    batch = min(cfg.batch_size, n)
    stop = (n // batch) * batch if n >= cfg.batch_size else n
    order = torch.randperm(n, generator=loop.order_gen)
    t0, total, count = time.perf_counter(), 0.0, 0
    for start in range(0, stop, batch):
        idx = order[start:start + batch]
        value = _step(loop, idx)
        if not math.isfinite(value):
            raise MsclrError(f"fine-tuning diverged (loss {value}) at epoch {epoch}: lower [finetune] lr.")
        total, count = total + value * len(idx), count + len(idx)
    return {"epoch": epoch, "lr": lr, "loss": total / max(count, 1), "seconds": time.perf_counter() - t0}


def finetune_stream(encoder: Any, train_arrays: Mapping[str, np.ndarray], y_train: np.ndarray,
                    test_arrays: Mapping[str, np.ndarray], skeletons: Mapping[str, Skeleton], stream: str,
                    num_classes: int, config: FinetuneConfig, *, device: Any = "cpu",
                    progress: Progress | None = None) -> FinetuneResult:
    """Train ``encoder`` and one linear head per convention with labels; score the test clips.

    Args:
        encoder: a :class:`~msclr.models.stgcn.MultiSkeletonSTGCN` with the pretrained weights (``finetune``,
            ``semi:P``) or freshly initialised (``scratch``); it is trained in place.
        train_arrays / test_arrays: convention -> (N, 3, T, V, M) float32 clips, same row order in every
            convention (only the clips to train on: a ``semi:P`` subset is taken by the caller).
        y_train: (N,) int64 labels, all >= 0.
        skeletons: convention -> definition (bones of the bone stream, the encoder's convention).
        stream: ``joint``, ``motion`` or ``bone``.
        config: the schedule (:class:`~msclr.pipeline.config.FinetuneConfig`).
        progress: ``("epoch", {epoch, epochs, loss, lr, seconds})`` after every epoch.

    Returns:
        :class:`FinetuneResult` of the last epoch.
    """
    import torch

    from msclr.models.build import extract_features
    from msclr.models.stgcn import module_key

    if len(y_train) == 0 or np.any(np.asarray(y_train) < 0):
        raise MsclrError("fine-tuning needs labelled training clips (labels >= 0).")
    torch.manual_seed(int(config.seed))
    loop = _build_loop(encoder, train_arrays, y_train, skeletons, stream, num_classes, config, device)
    history = []
    for epoch in range(1, config.epochs + 1):
        record = _epoch(loop, epoch)
        history.append(record)
        if progress is not None:
            progress("epoch", {**record, "epochs": config.epochs})
    loop.encoder.eval()
    loop.heads.eval()
    logits = {}
    with torch.no_grad():
        for conv, x in test_arrays.items():
            feats = extract_features(loop.encoder, x, skeletons[conv], stream, device=loop.device)
            logits[conv] = loop.heads[module_key(conv)](feats).float().cpu().numpy()
    heads = {c: {"weight": loop.heads[module_key(c)].weight.detach().cpu().clone(),
                 "bias": loop.heads[module_key(c)].bias.detach().cpu().clone()} for c in train_arrays}
    state = {k: v.detach().cpu().clone() for k, v in loop.encoder.state_dict().items()}
    return FinetuneResult(state, heads, logits, history)


__all__ = ["FinetuneResult", "finetune_stream", "label_subset"]
