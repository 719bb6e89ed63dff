"""``msclr predict --render``: the input clip with its skeleton(s) and the top label drawn on it.

Where the 2D joints come from (decision):

- **MediaPipe**: its own normalised *image* landmarks (``pose_landmarks``, x / width and y / height),
  which are exactly where BlazePose saw the joints; the 3D world landmarks are hip-centred and
  cannot be projected.  An extractor built with ``record_2d=True``
  (:func:`msclr.extractors.registry.build_extractor`) keeps them, one row per processed frame, in
  its ``landmarks`` (MediaPipe has one person, slot 0).
- **MeTRAbs**: the tracked 3D joints of each person slot, projected back through the same pinhole
  camera the extractor used (its ``camera_matrix``: ``--fov`` 55 degrees on the larger image side
  unless intrinsics were given).  MeTRAbs estimates camera-space 3D
  consistent with those intrinsics (its own ``poses2d`` output is that projection), so the drawing
  matches the image without keeping a second output around, and it shows what the classifier
  received, person slot by person slot (one colour per slot).
- Any other extractor: no skeleton overlay, only the label (noted).

Output: every frame of the input (same count and fps; the fps falls back to 30 when the container
reports none), frame size unchanged, ``mp4v`` in ``.mp4`` / ``.m4v`` / ``.mov`` or ``MJPG`` in ``.avi``.
The file is written under a temporary name next to the target, decoded again to check that it has the
input's frame count, and only then renamed onto the target (``os.replace``), so an interrupted or
failed render never leaves a truncated file under the requested name.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from msclr.errors import MsclrError
from msclr.skeletons import Skeleton

VIDEO_CODECS = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG"}
"""Output suffix -> OpenCV FourCC (codecs every OpenCV build can write)."""

PALETTE_BGR = ((0, 220, 255), (255, 160, 0), (80, 220, 80), (220, 80, 255), (0, 80, 255), (255, 255, 255))
"""Colour of person slot m (BGR)."""


class RenderError(MsclrError):
    """The rendered video cannot be written or does not read back correctly."""


def check_render_path(path: str | Path) -> Path:
    """Validate ``--render OUT`` before any work: a known video suffix, not a folder; creates the parent."""
    out = Path(path)
    if out.suffix.lower() not in VIDEO_CODECS:
        raise RenderError(f"--render {out}: use a file name ending in {', '.join(VIDEO_CODECS)} "
                          "(mp4v in .mp4, MJPG in .avi).")
    if out.is_dir():
        raise RenderError(f"--render {out} is a folder; give a file name such as {out / 'prediction.mp4'}.")
    out.parent.mkdir(parents=True, exist_ok=True)
    return out


# ----------------------------------------------------------------------------- geometry
def project_kinect(points: np.ndarray, intrinsics: np.ndarray) -> np.ndarray:
    """Pixels ``(..., 2)`` of Kinect-space points ``(..., 3)`` metres through a pinhole ``(3, 3)``.

    Kinect axes -> camera axes is ``diag(-1, -1, 1)`` (its own inverse); u = fx x / z + cx,
    v = fy y / z + cy.  Points at z <= 0 and all-zero (absent) points give NaN.
    """
    p = np.asarray(points, np.float64) * np.array([-1.0, -1.0, 1.0])
    k = np.asarray(intrinsics, np.float64)
    z = p[..., 2]
    ok = (z > 1e-6) & np.any(points != 0, axis=-1)
    zs = np.where(ok, z, 1.0)
    u = k[0, 0] * p[..., 0] / zs + k[0, 1] * p[..., 1] / zs + k[0, 2]
    v = k[1, 1] * p[..., 1] / zs + k[1, 2]
    out = np.stack([u, v], axis=-1)
    out[~ok] = np.nan
    return out


def keypoints_2d(clip: Any, skeleton: Skeleton, extractor: Any, width: int, height: int) -> tuple[np.ndarray | None, str]:
    """``(T, M, V, 2)`` pixel joints of ``clip`` for drawing (NaN where absent), and where they came from."""
    poses = clip.poses[skeleton.name]
    t_len, m = poses.shape[:2]
    landmarks = getattr(extractor, "landmarks", None)
    if isinstance(landmarks, list):
        if len(landmarks) != t_len:
            return None, f"MediaPipe recorded {len(landmarks)} frames of landmarks for {t_len} frames: not drawn"
        out = np.full((t_len, m, skeleton.num_joints, 2), np.nan)
        for t, lm in enumerate(landmarks):
            if lm is not None and len(lm) == skeleton.num_joints:
                out[t, 0] = lm * np.array([width, height], np.float32)
        return out, "MediaPipe image landmarks"
    camera_matrix = getattr(extractor, "camera_matrix", None)
    if callable(camera_matrix):
        return project_kinect(poses, camera_matrix(width, height)), "3D joints projected with the extractor's camera"
    return None, f"the {getattr(extractor, 'name', '?')} extractor gives no image coordinates: skeleton not drawn"


# ----------------------------------------------------------------------------- drawing
def draw_overlay(frame_bgr: np.ndarray, points: np.ndarray | None, edges: Any, lines: list[str]) -> np.ndarray:
    """Draw skeletons ``points`` ``(M, V, 2)`` (NaN = absent) and text ``lines`` on a BGR frame, in place."""
    import cv2

    h, w = frame_bgr.shape[:2]
    thick = max(1, round(min(h, w) / 180))
    if points is not None:
        for m in range(points.shape[0]):
            pts = points[m]
            colour = PALETTE_BGR[m % len(PALETTE_BGR)]
            finite = np.isfinite(pts).all(axis=1) & (np.abs(pts) < 1e5).all(axis=1)
            for a, b in edges:
                if finite[a] and finite[b]:
                    cv2.line(frame_bgr, (int(round(pts[a, 0])), int(round(pts[a, 1]))),
                             (int(round(pts[b, 0])), int(round(pts[b, 1]))), colour, thick, cv2.LINE_AA)
            for v in np.flatnonzero(finite):
                cv2.circle(frame_bgr, (int(round(pts[v, 0])), int(round(pts[v, 1]))), thick + 1, colour, -1,
                           cv2.LINE_AA)
    font = cv2.FONT_HERSHEY_SIMPLEX
    scale = max(0.4, min(h, w) / 500)
    y = 4
    for i, text in enumerate(lines):
        (tw, th), base = cv2.getTextSize(text, font, scale, 1 + (i == 0))
        cv2.rectangle(frame_bgr, (4, y), (12 + tw, y + th + base + 6), (0, 0, 0), -1)
        cv2.putText(frame_bgr, text, (8, y + th + 3), font, scale, (255, 255, 255), 1 + (i == 0), cv2.LINE_AA)
        y += th + base + 8
    return frame_bgr


@dataclass
class RenderResult:
    """A written render: path, frames written, fps, notes."""

    path: Path
    frames: int
    fps: float
    notes: list[str] = field(default_factory=list)


def count_frames(path: str | Path) -> int:
    """Frames OpenCV decodes from ``path`` (reads them all)."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            return 0
        n = 0
        while cap.grab():
            n += 1
        return n
    finally:
        cap.release()


def render_prediction(video: str | Path, out: str | Path, clip: Any, skeleton: Skeleton, prediction: Any,
                      extractor: Any, *, progress: Callable[[int, int], None] | None = None) -> RenderResult:
    """Write ``video`` with ``clip``'s skeletons (convention ``skeleton``) and the top-2 labels to ``out``.

    Args:
        video: the input clip (decoded again, every frame).
        out: ``.mp4`` / ``.m4v`` / ``.mov`` (mp4v) or ``.avi`` (MJPG).
        clip: the extracted :class:`~msclr.pipeline.cache.Clip` (poses, ``frame_indices``).
        skeleton: which of the clip's conventions to draw (edges from its definition).
        prediction: a :class:`msclr.pipeline.predict.Prediction`.
        extractor: the extractor that produced ``clip`` (for its 2D landmarks or camera).
        progress: ``(frames written, expected total or 0)`` callback.

    Raises:
        RenderError: OpenCV cannot write the file, or it does not decode with the input's frame count.
    """
    import cv2

    from msclr.extractors.video import FrameReader

    out = check_render_path(out)
    codec = VIDEO_CODECS[out.suffix.lower()]
    tmp = out.with_name(f".{out.stem}.partial{out.suffix}")
    notes: list[str] = []
    top = prediction.top
    lines = [f"{top[0]['class']}  {top[0]['probability']:.0%}"]
    if len(top) > 1:
        lines.append(f"2. {top[1]['class']}  {top[1]['probability']:.0%}")
    rows: dict[int, int] = {}
    if clip.frame_indices is not None:
        rows = {int(f): t for t, f in enumerate(np.asarray(clip.frame_indices).tolist())}
    writer = None
    written = 0
    points: np.ndarray | None = None
    try:
        with FrameReader(video, batch_size=16) as reader:
            info = reader.info
            fps = info.fps if math.isfinite(info.fps) and info.fps > 0 else 30.0
            if not (math.isfinite(info.fps) and info.fps > 0):
                notes.append("the input reports no frame rate: rendered at 30 fps")
            for batch in reader:
                if writer is None:
                    height, width = batch.frames.shape[1:3]
                    points, source = keypoints_2d(clip, skeleton, extractor, width, height)
                    if points is None:
                        notes.append(source)
                    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*codec), fps, (width, height))
                    if not writer.isOpened():
                        raise RenderError(f"OpenCV cannot write {out} with codec {codec}; try a .avi name (MJPG).")
                for frame, index in zip(batch.frames, batch.indices.tolist(), strict=True):
                    bgr = cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)
                    t = rows.get(int(index))
                    draw_overlay(bgr, None if points is None or t is None else points[t], skeleton.edges, lines)
                    writer.write(bgr)
                    written += 1
                if progress is not None:
                    progress(written, info.frame_count)
        if writer is None:
            raise RenderError(f"{video} has no frame to render.")
        writer.release()
        writer = None
        decoded = count_frames(tmp)
        if decoded != written:
            raise RenderError(f"the rendered video decodes to {decoded} frames instead of {written} "
                              f"({codec} in {out.suffix}); try a .avi name (MJPG).")
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, out)
    finally:
        if writer is not None:
            writer.release()
        tmp.unlink(missing_ok=True)
    return RenderResult(out, written, fps, notes)


__all__ = ["VIDEO_CODECS", "RenderError", "RenderResult", "check_render_path", "count_frames",
           "draw_overlay", "keypoints_2d", "project_kinect", "render_prediction"]
