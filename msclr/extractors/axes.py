"""Units, axes and camera intrinsics at the extractor boundary.

The cache stores metres in **Kinect camera space**: x towards the camera's left (= the image's
left as the camera sees it), y up, z forward (away from the camera).  A subject facing the camera
therefore has ``left_shoulder.x < right_shoulder.x`` (UTD-MHAD's Kinect recordings, whose subjects
face the sensor, show exactly that in every frame).

- **MeTRAbs** returns millimetres in the OpenCV camera frame (x image right, y image down, z
  forward): ``p_kinect = diag(-1, -1, 1) @ p_mm / 1000``.  diag(-1, -1, 1) is a 180 degree rotation
  about the optical axis (determinant +1), so handedness, and with it the person's left/right,
  is preserved.
- **MediaPipe** ``pose_world_landmarks`` are metres with the origin at the hip midpoint, axes
  aligned with the camera: x towards the image right, y down, z away from the camera (larger z =
  farther; MediaPipe documents "the smaller the value the closer to the camera" for z).  The same
  rotation applies without scaling: ``p_kinect = diag(-1, -1, 1) @ p_world``.  Verified on
  ``S001C001P001R001A001_rgb.avi`` (subject facing the camera): after the mapping,
  ``LEFT_SHOULDER.x < RIGHT_SHOULDER.x``, the nose is nearer the camera (smaller z) than the hips
  and above them (larger y); see ``tests/test_mediapipe_real.py``.  (A plausible first guess,
  ``left_shoulder.x > right_shoulder.x``, is wrong: the Kinect definition "x towards the sensor's
  left" and the UTD-MHAD data say the opposite, and that is what msclr follows.)
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from msclr.errors import ExtractionError

CAMERA_TO_KINECT = np.diag([-1.0, -1.0, 1.0]).astype(np.float32)
"""Rotation from an OpenCV-style camera frame (x right, y down, z forward) to Kinect axes."""

DEFAULT_FOV_DEGREES = 55.0
"""MeTRAbs' default field of view along the larger image side.  NTU RGB+D's Kinect v2 colour
camera (1920x1080) is nearer 84 degrees horizontally (f ~ 1065 px); 55 degrees puts people too far
away (absolute depth), which matters less after root-centring."""


def metrabs_to_kinect(points_mm: np.ndarray) -> np.ndarray:
    """MeTRAbs camera-frame millimetres ``(..., 3)`` -> Kinect-space metres ``(..., 3)`` float32."""
    p = np.asarray(points_mm, dtype=np.float32)
    return p * (CAMERA_TO_KINECT.diagonal() / np.float32(1000.0))


def mediapipe_world_to_kinect(points_m: np.ndarray) -> np.ndarray:
    """MediaPipe world landmarks ``(..., 3)`` metres (x right, y down, z away) -> Kinect axes, float32."""
    p = np.asarray(points_m, dtype=np.float32)
    return p * CAMERA_TO_KINECT.diagonal()


def intrinsics_from_fov(fov_degrees: float, width: int, height: int) -> np.ndarray:
    """Pinhole ``(3, 3)`` float32 matrix as MeTRAbs builds it for unknown intrinsics.

    ``f = max(W, H) / (2 tan(fov / 2))``, principal point at the image centre (``W / 2, H / 2``).
    """
    if not 0.0 < fov_degrees < 180.0:
        raise ExtractionError(f"field of view {fov_degrees} degrees is outside (0, 180); pass e.g. --fov 55")
    f = max(width, height) / (2.0 * math.tan(math.radians(fov_degrees) / 2.0))
    return np.array([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]], dtype=np.float32)


def load_intrinsics(path: str | Path) -> np.ndarray:
    """Read a ``(3, 3)`` camera matrix from JSON: ``[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]`` (pixels),
    either bare or under the key ``"intrinsic_matrix"`` or ``"K"``.

    Raises:
        ExtractionError: missing file, invalid JSON, wrong shape, non-finite or non-positive focal length.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ExtractionError(f"cannot read intrinsics file {path}: {err}") from None
    except json.JSONDecodeError as err:
        raise ExtractionError(f"intrinsics file {path} is not valid JSON: {err}") from None
    if isinstance(data, dict):
        data = data.get("intrinsic_matrix", data.get("K"))
    try:
        matrix = np.asarray(data, dtype=np.float64)
    except (TypeError, ValueError):
        matrix = np.zeros(0)
    if matrix.shape != (3, 3) or not np.isfinite(matrix).all() or matrix[0, 0] <= 0 or matrix[1, 1] <= 0:
        raise ExtractionError(
            f"intrinsics file {path} must hold a 3x3 matrix [[fx, 0, cx], [0, fy, cy], [0, 0, 1]] in pixels "
            "with positive focal lengths (bare, or under the key 'intrinsic_matrix' or 'K')"
        )
    return matrix.astype(np.float32)


__all__ = [
    "CAMERA_TO_KINECT",
    "DEFAULT_FOV_DEGREES",
    "intrinsics_from_fov",
    "load_intrinsics",
    "mediapipe_world_to_kinect",
    "metrabs_to_kinect",
]
