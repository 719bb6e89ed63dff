"""Skeleton ensemble and 3-stream fusion: pure functions on per-sample class scores.

Scores are ``(N, num_classes)`` arrays of classifier logits.  Both combinations can work on

- ``"softmax"`` (default): average / weight the softmax *probabilities* (what the paper describes), or
- ``"logits"``: average / weight the raw logits (what the reference code does: ``ensemble_ntu_{cs,cv}.py`` and
  the ensemble classifier's plain mean of logits).

The two can rank classes differently when the classifiers' logit scales differ; msclr reports which one it
used.  Fusion weights default to the paper's 0.6 joint, 0.6 bone, 0.4 motion.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

DEFAULT_FUSION_WEIGHTS = {"joint": 0.6, "bone": 0.6, "motion": 0.4}
MODES = ("softmax", "logits")


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax of ``logits`` along ``axis`` (float64)."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def _as_score(logits: np.ndarray, mode: str) -> np.ndarray:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    return softmax(logits) if mode == "softmax" else np.asarray(logits, dtype=np.float64)


def ensemble_scores(logits: Sequence[np.ndarray] | Mapping[str, np.ndarray], mode: str = "softmax") -> np.ndarray:
    """Skeleton ensemble: the mean over classifiers of softmax(logits) (``softmax``) or of logits (``logits``).

    Args:
        logits: one ``(N, C)`` logit array per convention (a sequence or a name -> array mapping).
        mode: ``softmax`` or ``logits``.

    Returns:
        ``(N, C)`` float64 combined scores (probabilities in softmax mode).
    """
    arrays = list(logits.values()) if isinstance(logits, Mapping) else list(logits)
    if not arrays:
        raise ValueError("ensemble of zero classifiers")
    shape = np.shape(arrays[0])
    if any(np.shape(a) != shape for a in arrays):
        raise ValueError(f"ensemble members have different shapes: {[np.shape(a) for a in arrays]}")
    return np.mean([_as_score(a, mode) for a in arrays], axis=0)


def fuse_streams(scores: Mapping[str, np.ndarray], weights: Mapping[str, float] | None = None, *,
                 mode: str = "softmax", already: str | None = None) -> np.ndarray:
    """3-stream fusion: ``sum_s weights[s] * score_s`` over the streams present in ``scores``.

    Args:
        scores: stream name -> ``(N, C)`` array.
        weights: stream weights (default 0.6 joint, 0.6 bone, 0.4 motion).
        mode: ``softmax`` turns logits into probabilities first; ``logits`` uses them as they are.
        already: set to ``"softmax"`` / ``"logits"`` when the inputs are already combined scores of that kind
            (e.g. skeleton-ensemble outputs); they are then used as they are.

    Returns:
        ``(N, C)`` float64 fused scores.
    """
    weights = dict(DEFAULT_FUSION_WEIGHTS if weights is None else weights)
    missing = [s for s in scores if s not in weights]
    if missing:
        raise ValueError(f"no fusion weight for stream(s) {missing}")
    if not scores:
        raise ValueError("fusion of zero streams")
    total = None
    for stream, value in scores.items():
        part = np.asarray(value, dtype=np.float64) if already else _as_score(value, mode)
        total = weights[stream] * part if total is None else total + weights[stream] * part
    assert total is not None
    return total


def topk_correct(scores: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Boolean ``(N,)``: is ``labels[i]`` among the ``k`` highest scores of row i (ties broken by index)."""
    scores = np.asarray(scores)
    labels = np.asarray(labels)
    k = min(k, scores.shape[1])
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return (top == labels[:, None]).any(axis=1)


def topk_accuracy(scores: np.ndarray, labels: np.ndarray, k: int = 1) -> float:
    """Top-k accuracy in percent."""
    if len(labels) == 0:
        return float("nan")
    return 100.0 * float(topk_correct(scores, labels, k).mean())


__all__ = ["DEFAULT_FUSION_WEIGHTS", "MODES", "softmax", "ensemble_scores", "fuse_streams", "topk_correct",
           "topk_accuracy"]
