"""Evaluation reports: confusion matrices, per-class accuracy, the accuracy table's rows and captions, the
pretraining's collapse warnings, a confusion-matrix PNG.

The PNG is drawn with numpy + OpenCV (no matplotlib): one cell per (true, predicted) class pair, shaded by the
row-normalised rate, class indices on the axes and, for up to 30 classes, the class names on the left.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def confusion_matrix(pred: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """``(C, C)`` int64 counts, rows = true class, columns = predicted class."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(labels, dtype=np.int64), np.asarray(pred, dtype=np.int64)), 1)
    return cm


def per_class_accuracy(cm: np.ndarray) -> np.ndarray:
    """``(C,)`` per-class recall in percent (NaN for classes absent from the test set)."""
    totals = cm.sum(axis=1).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, 100.0 * np.diag(cm) / np.maximum(totals, 1), np.nan)


def draw_confusion_png(cm: np.ndarray, path: str | Path, class_names: Sequence[str] | None = None,
                       title: str = "") -> Path:
    """Write a confusion-matrix image to ``path`` (PNG) with OpenCV; returns the path."""
    import cv2

    from msclr.files import atomic_write_bytes

    c = cm.shape[0]
    rates = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    cell = int(np.clip(720 // max(c, 1), 6, 40))
    show_names = class_names is not None and c <= 30
    left = 60 + (min(max((len(n) for n in class_names), default=0), 32) * 8 if show_names and class_names else 0)
    top, margin = 50, 20
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, 0.35
    acc = 100.0 * np.trace(cm) / max(cm.sum(), 1)
    caption = f"{title}  top-1 {acc:.1f}%  (rows: true class, columns: predicted)".strip()
    (caption_w, _), _ = cv2.getTextSize(caption, font, 0.45, 1)
    width = max(left + c * cell + margin, caption_w + 20)
    height = top + c * cell + margin + 20
    img = np.full((height, width, 3), 255, dtype=np.uint8)
    # white -> dark blue (BGR)
    shade = (255 - rates[..., None] * np.array([75, 200, 255])).clip(0, 255).astype(np.uint8)
    grid = np.kron(shade, np.ones((cell, cell, 1), dtype=np.uint8)) if cell > 1 else shade
    img[top:top + c * cell, left:left + c * cell] = grid
    for i in range(c + 1):
        colour = (200, 200, 200)
        cv2.line(img, (left, top + i * cell), (left + c * cell, top + i * cell), colour, 1)
        cv2.line(img, (left + i * cell, top), (left + i * cell, top + c * cell), colour, 1)
    step = max(1, int(np.ceil(14 / cell)))
    for i in range(0, c, step):
        label = str(i)
        if show_names and class_names:
            label = f"{class_names[i][:32]} {i}"
        (tw, _), _ = cv2.getTextSize(label, font, scale, 1)
        cv2.putText(img, label, (left - tw - 4, top + i * cell + cell // 2 + 4), font, scale, (0, 0, 0), 1,
                    cv2.LINE_AA)
        cv2.putText(img, str(i), (left + i * cell + 1, top - 6), font, scale, (0, 0, 0), 1, cv2.LINE_AA)
    if c <= 30:
        for i in range(c):
            for j in range(c):
                if cm[i, j]:
                    colour = (255, 255, 255) if rates[i, j] > 0.5 else (0, 0, 0)
                    cv2.putText(img, str(int(cm[i, j])), (left + j * cell + 2, top + i * cell + cell // 2 + 4),
                                font, 0.3, colour, 1, cv2.LINE_AA)
    cv2.putText(img, caption, (10, 20), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    ok, encoded = cv2.imencode(".png", img)
    if not ok:  # pragma: no cover
        raise RuntimeError("OpenCV could not encode the confusion matrix PNG")
    atomic_write_bytes(path, encoded.tobytes())
    return Path(path)


def table_rows(metrics: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Flatten ``metrics.json`` into table rows: stream, model, top-1, top-5 (and best when recorded)."""
    rows: list[dict[str, Any]] = []
    for stream, entry in metrics.get("streams", {}).items():
        for conv, res in entry.get("conventions", {}).items():
            rows.append({"stream": stream, "model": conv, "top1": res["top1"], "top5": res["top5"],
                         "best_top1": res.get("best_top1")})
        if "ensemble" in entry:
            res = entry["ensemble"]
            rows.append({"stream": stream, "model": f"skeleton ensemble ({res['mode']})", "top1": res["top1"],
                         "top5": res["top5"], "best_top1": None})
    fusion = metrics.get("fusion")
    if fusion:
        for name, res in fusion.get("results", {}).items():
            rows.append({"stream": "3-stream fusion", "model": f"{name} ({fusion['mode']})", "top1": res["top1"],
                         "top5": res["top5"], "best_top1": None})
    return rows


def protocol_sections(metrics: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """Protocol -> its section of ``metrics.json`` (``protocol``, ``streams``, ``fusion``): ``linear`` is the
    top level (when the run evaluated it), the others are under ``"protocols"``."""
    sections: dict[str, Mapping[str, Any]] = {}
    if "streams" in metrics:
        sections["linear"] = metrics
    sections.update(metrics.get("protocols", {}))
    return sections


def protocol_rows(metrics: Mapping[str, Any]) -> list[dict[str, Any]]:
    """:func:`table_rows` of every protocol, each row with its ``protocol``, protocols in run order."""
    return [{"protocol": name, **row} for name, section in protocol_sections(metrics).items()
            for row in table_rows(section)]


def split_caption(info: Mapping[str, Any]) -> str:
    """The test clips, classes and split of a metrics ``protocol`` section, for a table caption."""
    return (f"{info.get('test_clips', '?')} test clips, {info.get('num_classes', '?')} classes, "
            f"split {info.get('train_split', '?')} -> {info.get('test_split', '?')}")


def protocol_caption(name: str, section: Mapping[str, Any]) -> str:
    """One phrase per protocol for the table caption."""
    info = section.get("protocol", {})
    kind = name.split(":", 1)[0]
    text = {"linear": "frozen pretrained encoder + linear classifiers",
            "finetune": "pretrained encoder fine-tuned with all labels",
            "semi": f"pretrained encoder fine-tuned with {info.get('label_fraction', 0):.0%} of the labels",
            "scratch": "the same network trained from random weights"}.get(kind, "")
    return f"{name}: {text} ({info.get('train_clips', '?')} training clips)"


def collapse_warnings(metrics: Mapping[str, Any]) -> list[str]:
    """The collapse warning of every stream whose pretraining collapsed (``metrics["pretrain"][stream]
    ["collapse_warning"]``, written by :mod:`msclr.pipeline.train`), in stream order."""
    return [rec["collapse_warning"] for rec in metrics.get("pretrain", {}).values()
            if isinstance(rec, Mapping) and rec.get("collapse_warning")]


__all__ = ["collapse_warnings", "confusion_matrix", "per_class_accuracy", "draw_confusion_png", "protocol_caption",
           "protocol_rows", "protocol_sections", "split_caption", "table_rows"]
