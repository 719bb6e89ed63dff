"""MediaPipe BlazePose backend (``--extractor mediapipe``, extra ``msclr[mediapipe]``): CPU, offline.

Uses the legacy ``mp.solutions.pose.Pose`` of ``mediapipe==0.10.21`` with ``model_complexity=1``
(the only complexity whose model ships in the wheel; 0 and 2 try to download and fail offline) and
``static_image_mode=False`` (video tracking mode; a fresh graph per video).  Later mediapipe
releases removed ``mp.solutions``.

Output per frame: at most one person ("the most prominent"), the 33 ``pose_world_landmarks``
(metres, origin at the hip midpoint, x image-right, y down, z away from the camera), mapped to
Kinect axes by :func:`msclr.extractors.axes.mediapipe_world_to_kinect` (``diag(-1, -1, 1)``, which
keeps the person's left and right: see that module for the check on the NTU A001 clip).  Score =
mean landmark visibility.  A frame without a pose has no detection, so its slot is zeros with
score 0.  Only slot 0 is ever used.

"Has a person" (:data:`MEDIAPIPE_PERSON`): a frame counts when its mean visibility is >= 0.65 and a
clip needs such a pose in >= 50 % of its frames.  Measured with mediapipe 0.10.21: full-body clips
have mean visibility 0.85-0.99 (A001 0.90-0.96, ta_chi.mp4 0.85-0.99, exercise_three_people.avi
0.91-0.97, poses in 98-100 % of frames) and come out ``ok``; ``pool_partial_body.mp4`` (legs and a
hand at the frame edge: a pose in 235 of 300 frames, visibility 0.51-0.76, median 0.61) and
``face_closeup.avi`` (face, hand and shoulder: poses in all 164 frames, visibility 0.47-0.62) come out
``no_person``; a plain gradient gives no pose at all (``no_person``).  A person cut at the waist
scores about 0.74 and still counts.

``record_2d=True`` also keeps, per processed frame, the normalised image landmarks ``(33, 2)``
(x / width, y / height; where BlazePose saw the joints) or None (:attr:`MediaPipeExtractor.landmarks`,
reset per video) for drawing the skeleton on the video; the 3D output is unchanged.

MediaPipe is imported without TensorFlow (:func:`msclr.extractors.tensorflow_env.tensorflow_blocked`)
and, unless ``verbose``, with its glog output limited to errors (``GLOG_minloglevel=2``).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from msclr.errors import ExtractionError
from msclr.extractors.axes import mediapipe_world_to_kinect
from msclr.extractors.base import FrameDetections, PersonCriterion
from msclr.extractors.registry import MEDIAPIPE_CONVENTIONS
from msclr.extractors.tensorflow_env import tensorflow_blocked

log = logging.getLogger(__name__)

MEDIAPIPE_CONVENTION = MEDIAPIPE_CONVENTIONS[0]
"""``blazepose_33``, the only convention MediaPipe produces."""
MEDIAPIPE_PERSON = PersonCriterion(min_score=0.65, min_fraction=0.5)
"""Default "has a person" criterion for MediaPipe (see the module docstring)."""


def _import_mediapipe() -> Any:
    try:
        with tensorflow_blocked():
            import mediapipe as mp
    except ModuleNotFoundError as err:
        if not (err.name or "").startswith("tensorflow"):
            raise
        import mediapipe as mp  # a mediapipe build that needs TensorFlow after all
    return mp


def _mediapipe(verbose: bool) -> Any:
    if not verbose:
        os.environ.setdefault("GLOG_minloglevel", "2")
    try:
        mp = _import_mediapipe()
    except ImportError as err:
        raise ExtractionError(
            f"--extractor mediapipe needs the mediapipe extra ({err}): pip install 'msclr[mediapipe]' "
            "(mediapipe==0.10.21, which pins numpy<2; use a separate environment if that conflicts)"
        ) from None
    if not hasattr(mp, "solutions") or not hasattr(mp.solutions, "pose"):
        raise ExtractionError(
            f"mediapipe {getattr(mp, '__version__', '?')} has no mp.solutions.pose (removed in 0.10.30+); "
            "pip install mediapipe==0.10.21"
        )
    return mp


@dataclass
class MediaPipeExtractor:
    """BlazePose 33 world landmarks, one person (see the module docstring).

    Args:
        min_detection_confidence, min_tracking_confidence: MediaPipe's thresholds.
        person: the clip-level "has a person" criterion.
        record_2d: also keep the image landmarks of every frame (:attr:`landmarks`).
        verbose: keep MediaPipe's glog output (default: errors only).
    """

    min_detection_confidence: float = 0.5
    min_tracking_confidence: float = 0.5
    person: PersonCriterion = field(default_factory=lambda: PersonCriterion(
        MEDIAPIPE_PERSON.min_score, MEDIAPIPE_PERSON.min_fraction))
    name: str = "mediapipe"
    conventions: tuple[str, ...] = (MEDIAPIPE_CONVENTION,)
    multi_person: bool = False
    record_2d: bool = False
    verbose: bool = False

    def __post_init__(self) -> None:
        self._mp = _mediapipe(self.verbose)
        self.model_id = f"mediapipe=={self._mp.__version__} pose model_complexity=1"
        self._pose: Any = None
        self._size = (1, 1)
        # with record_2d: one (33, 2) normalised image landmark array (or None) per processed frame
        self.landmarks: list[np.ndarray | None] | None = [] if self.record_2d else None

    def describe(self) -> list[str]:
        return [f"MediaPipe {self._mp.__version__} BlazePose (model_complexity=1, video mode), CPU, one person"]

    def start_video(self, width: int, height: int) -> None:
        if self._pose is not None:
            self._pose.close()
        self._pose = self._mp.solutions.pose.Pose(
            static_image_mode=False,
            model_complexity=1,
            smooth_landmarks=True,
            enable_segmentation=False,
            min_detection_confidence=self.min_detection_confidence,
            min_tracking_confidence=self.min_tracking_confidence,
        )
        self._size = (width, height)
        if self.landmarks is not None:
            self.landmarks = []

    def process(self, frames: np.ndarray) -> list[FrameDetections]:
        if self._pose is None:
            self.start_video(frames.shape[2], frames.shape[1])
        width, height = self._size
        out = []
        for frame in frames:
            frame = np.ascontiguousarray(frame)
            frame.flags.writeable = False
            result = self._pose.process(frame)
            world, image = result.pose_world_landmarks, result.pose_landmarks
            if self.landmarks is not None:
                self.landmarks.append(None if world is None or image is None else
                                      np.array([[p.x, p.y] for p in image.landmark], np.float32))
            if world is None:
                out.append(FrameDetections.empty({MEDIAPIPE_CONVENTION: 33}))
                continue
            xyzv = np.array([[p.x, p.y, p.z, p.visibility] for p in world.landmark], np.float32)
            if image is not None:
                uv = np.array([[p.x * width, p.y * height] for p in image.landmark], np.float32)
                lo, hi = uv.min(axis=0), uv.max(axis=0)
                box = np.array([[lo[0], lo[1], hi[0] - lo[0], hi[1] - lo[1]]], np.float32)
            else:  # pragma: no cover - MediaPipe returns both or neither
                box = np.array([[0, 0, width, height]], np.float32)
            out.append(FrameDetections(
                boxes=box,
                scores=np.array([xyzv[:, 3].mean()], np.float32),
                poses={MEDIAPIPE_CONVENTION: mediapipe_world_to_kinect(xyzv[None, :, :3])},
                roots=np.full((1, 3), np.nan, np.float32),  # hip-centred output: no absolute position
            ))
        return out

    def close(self) -> None:
        if self._pose is not None:
            self._pose.close()
            self._pose = None


__all__ = ["MEDIAPIPE_CONVENTION", "MEDIAPIPE_PERSON", "MediaPipeExtractor"]
