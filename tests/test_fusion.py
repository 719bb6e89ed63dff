"""Skeleton ensemble and 3-stream fusion (docs/method.md, "Evaluation protocols") and the report helpers."""

from __future__ import annotations

import numpy as np
import pytest

from msclr.models.fusion import ensemble_scores, fuse_streams, softmax, topk_accuracy, topk_correct
from msclr.pipeline.training.report import (
    confusion_matrix,
    draw_confusion_png,
    per_class_accuracy,
    table_rows,
)


def test_softmax_is_stable_and_normalised() -> None:
    p = softmax(np.array([[1000.0, 1001.0, 999.0], [0.0, 0.0, 0.0]]))
    assert np.allclose(p.sum(1), 1) and np.all(np.isfinite(p))
    assert np.allclose(p[1], 1 / 3)


def test_ensemble_softmax_vs_logits_differ_as_documented() -> None:
    # classifier A is very confident in class 0, B mildly prefers class 1 with large logits spread
    a = np.array([[10.0, 0.0, 0.0]])
    b = np.array([[0.0, 12.0, 11.9]])
    logit_mean = ensemble_scores([a, b], "logits")
    assert np.allclose(logit_mean, (a + b) / 2)
    assert logit_mean.argmax() == 1  # mean logits: [5, 6, 5.95]
    prob_mean = ensemble_scores({"a": a, "b": b}, "softmax")
    assert np.allclose(prob_mean, (softmax(a) + softmax(b)) / 2)
    assert prob_mean.argmax() == 0  # A ~ 1.0 on class 0; B splits ~0.52 / 0.48
    with pytest.raises(ValueError):
        ensemble_scores([a, np.zeros((2, 3))])


def test_fusion_weights_are_the_papers() -> None:
    rng = np.random.default_rng(0)
    s = {k: rng.normal(size=(5, 4)) for k in ("joint", "bone", "motion")}
    fused = fuse_streams(s, mode="logits")
    assert np.allclose(fused, 0.6 * s["joint"] + 0.6 * s["bone"] + 0.4 * s["motion"])
    fused_p = fuse_streams(s)
    assert np.allclose(fused_p, 0.6 * softmax(s["joint"]) + 0.6 * softmax(s["bone"]) + 0.4 * softmax(s["motion"]))
    pre = {k: softmax(v) for k, v in s.items()}
    assert np.allclose(fuse_streams(pre, already="softmax"), fused_p)
    with pytest.raises(ValueError, match="weight"):
        fuse_streams({"other": s["joint"]})


def test_topk() -> None:
    scores = np.array([[0.1, 0.5, 0.4], [0.7, 0.2, 0.1], [0.2, 0.3, 0.5]])
    labels = np.array([2, 0, 0])
    assert list(topk_correct(scores, labels, 1)) == [False, True, False]
    assert list(topk_correct(scores, labels, 2)) == [True, True, False]
    assert topk_accuracy(scores, labels, 1) == pytest.approx(100 / 3)
    assert topk_accuracy(scores, labels, 5) == 100.0


def test_confusion_and_per_class(tmp_path) -> None:
    import cv2

    pred = np.array([0, 1, 1, 2, 2, 2])
    true = np.array([0, 1, 0, 2, 2, 1])
    cm = confusion_matrix(pred, true, 4)
    assert cm.tolist() == [[1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 2, 0], [0, 0, 0, 0]]
    acc = per_class_accuracy(cm)
    assert np.allclose(acc[:3], [50.0, 50.0, 100.0]) and np.isnan(acc[3])
    path = draw_confusion_png(cm, tmp_path / "cm.png", ["a", "b", "c", "d"], title="test")
    img = cv2.imread(str(path))
    assert img is not None and img.ndim == 3 and img.shape[0] > 50
    big = confusion_matrix(np.arange(60) % 60, np.arange(60), 60)
    assert cv2.imread(str(draw_confusion_png(big, tmp_path / "big.png"))) is not None


def test_table_rows_flatten_metrics() -> None:
    metrics = {"streams": {"joint": {"conventions": {"a": {"top1": 50.0, "top5": 90.0}},
                                     "ensemble": {"mode": "softmax", "top1": 55.0, "top5": 91.0}}},
               "fusion": {"mode": "softmax", "results": {"ensemble": {"top1": 60.0, "top5": 95.0}}}}
    rows = table_rows(metrics)
    assert [r["top1"] for r in rows] == [50.0, 55.0, 60.0]
    assert rows[1]["model"].startswith("skeleton ensemble")
