"""The extractor interface and its per-frame result type.

An extractor turns a batch of RGB frames into, for every frame, the people it found:
:class:`FrameDetections` with boxes, a score per person and, for every requested skeleton
convention, ``(P, V, 3)`` float32 joints **already in the cache's frame** (metres, Kinect camera
space: x towards the camera's left, y up, z forward).  Unit and axis conversion happen inside the
extractor (see :mod:`msclr.extractors.axes`); person tracking across frames is done afterwards by
:mod:`msclr.extractors.tracking`, the same for every backend.

Backends: :class:`msclr.extractors.metrabs.MetrabsExtractor` (default),
:class:`msclr.extractors.mediapipe_pose.MediaPipeExtractor`, and :class:`ConstantExtractor` here
(no model; for benchmarks of the decode + track + cache path).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from msclr.skeletons import get_skeleton


@dataclass
class FrameDetections:
    """The people found in one frame (P >= 0, in the backend's order).

    Attributes:
        boxes: ``(P, 4)`` float32 ``[left, top, width, height]`` in pixels.
        scores: ``(P,)`` float32 person confidence (detector score; mean visibility for MediaPipe).
        poses: convention -> ``(P, V, 3)`` float32 metres, Kinect camera axes.
        roots: ``(P, 3)`` float32 metres, a reference point per person used by tracking (NaN:
            unknown, e.g. MediaPipe's hip-centred output).
    """

    boxes: np.ndarray
    scores: np.ndarray
    poses: dict[str, np.ndarray]
    roots: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)

    @classmethod
    def empty(cls, conventions: dict[str, int]) -> FrameDetections:
        """No person; ``conventions`` maps name -> V."""
        return cls(
            boxes=np.zeros((0, 4), np.float32),
            scores=np.zeros((0,), np.float32),
            poses={c: np.zeros((0, v, 3), np.float32) for c, v in conventions.items()},
            roots=np.zeros((0, 3), np.float32),
        )


@dataclass
class PersonCriterion:
    """When a clip counts as "showing a person" (else it is recorded with status ``no_person``).

    A frame has a person when its best slot's score is >= ``min_score``; the clip needs at least
    ``max(1, ceil(min_fraction * T))`` such frames.
    """

    min_score: float = 0.3
    min_fraction: float = 0.1

    def evaluate(self, scores: np.ndarray) -> tuple[bool, int]:
        """``(the clip shows a person, frames with one)`` for ``(T, M)`` per-slot scores."""
        best = scores.max(axis=1) if scores.size else np.zeros(len(scores), np.float32)
        frames = int((best >= self.min_score).sum())
        need = max(1, math.ceil(self.min_fraction * len(scores)))
        return frames >= need, frames


@runtime_checkable
class Extractor(Protocol):
    """What :func:`msclr.pipeline.extract.extract_video` needs from a pose backend."""

    name: str
    """Stored as ``Clip.extractor`` (``"metrabs"``, ``"mediapipe"``, ...)."""
    model_id: str
    """Stored as ``Clip.model_id`` (model URL / path / version)."""
    conventions: tuple[str, ...]
    """Registry names of the skeletons produced, in cache order."""
    person: PersonCriterion
    """When a clip counts as showing a person."""
    multi_person: bool
    """True: people are tracked into up to M slots; False: at most one detection per frame, in slot 0."""

    def describe(self) -> list[str]:
        """Lines to log at start: device, library versions, model id."""
        ...

    def start_video(self, width: int, height: int) -> None:
        """Reset per-video state (trackers, intrinsics) before the first batch of a video."""
        ...

    def process(self, frames: np.ndarray) -> list[FrameDetections]:
        """Detect and lift the people of ``frames`` ``(B, H, W, 3)`` uint8 RGB; one entry per frame."""
        ...

    def close(self) -> None:
        """Release model resources."""
        ...


@dataclass
class ConstantExtractor:
    """A model-free backend: one synthetic person per frame, a fixed pose translated by the frame's
    mean brightness.  Exercises decoding, tracking and caching without a pose model (benchmarks).
    """

    conventions: tuple[str, ...] = ("smpl_24",)
    name: str = "constant"
    model_id: str = "constant"
    person: PersonCriterion = field(default_factory=PersonCriterion)
    multi_person: bool = True

    def describe(self) -> list[str]:
        return ["constant extractor (no model)"]

    def start_video(self, width: int, height: int) -> None:
        self._size = (width, height)

    def process(self, frames: np.ndarray) -> list[FrameDetections]:
        out = []
        means = frames.reshape(len(frames), -1).mean(axis=1, dtype=np.float64) / 255.0
        for m in means:
            poses = {}
            for conv in self.conventions:
                v = get_skeleton(conv).num_joints
                base = np.linspace(-0.5, 0.5, v * 3, dtype=np.float32).reshape(1, v, 3)
                poses[conv] = base + np.float32(m)
            w, h = getattr(self, "_size", (1, 1))
            out.append(FrameDetections(
                boxes=np.array([[0, 0, w, h]], np.float32), scores=np.array([0.9], np.float32),
                poses=poses, roots=np.array([[0.0, 0.0, 3.0 + m]], np.float32),
            ))
        return out

    def close(self) -> None:
        pass


__all__ = ["ConstantExtractor", "Extractor", "FrameDetections", "PersonCriterion"]
