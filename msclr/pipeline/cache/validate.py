"""Checking a :class:`Clip` against a cache's contract before it is written (:meth:`CacheWriter.add`)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from msclr.errors import CacheError
from msclr.pipeline.cache.clip import CLIP_NAME_RE, INT_FIELDS, STR_FIELDS, Clip, ClipStatus
from msclr.skeletons import Skeleton

MAX_ABS_METRES = 100.0
"""Coordinates beyond this (in metres) are rejected: almost surely millimetres not divided by 1000."""


def _check_identity(clip: Clip) -> str:
    """Check the clip's type, name and status; the clip's name for messages (``clip 'NAME'``)."""
    if not isinstance(clip, Clip):
        raise CacheError(f"CacheWriter.add expects a Clip, got {type(clip).__name__}")
    name = clip.name
    if not isinstance(name, str) or not name or not CLIP_NAME_RE.fullmatch(name) or name != name.strip():
        raise CacheError(
            f"clip name {name!r} is invalid: it must be a non-empty string without '/', control "
            "characters or surrounding spaces"
        )
    where = f"clip {name!r}"
    if not isinstance(clip.status, str) or not clip.status:
        raise CacheError(f"{where}: status must be 'ok' or a failure status such as 'decode_error'")
    return where


def _check_field_types(clip: Clip, where: str) -> None:
    for f in (*INT_FIELDS, "persons"):
        value = getattr(clip, f)
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise CacheError(f"{where}: {f} must be an integer, got {value!r}")
    for f in STR_FIELDS:
        if not isinstance(getattr(clip, f), str):
            raise CacheError(f"{where}: {f} must be a string, got {getattr(clip, f)!r}")


def _checked_fps(clip: Clip, where: str) -> float:
    try:
        fps = float(clip.fps)
    except (TypeError, ValueError):
        raise CacheError(f"{where}: fps must be a number (NaN if unknown), got {clip.fps!r}") from None
    if not (math.isnan(fps) or (math.isfinite(fps) and fps > 0)):
        raise CacheError(f"{where}: fps must be positive or NaN (unknown), got {fps}")
    return fps


def _checked_label(clip: Clip, where: str, classes: Sequence[str] | None) -> int:
    label = int(clip.label)
    if label < -1:
        raise CacheError(f"{where}: label must be a 0-based class or -1 (unknown), got {label}")
    if classes is not None and label >= len(classes):
        raise CacheError(f"{where}: label {label} is outside the cache's {len(classes)} classes")
    return label


def _checked_persons(clip: Clip, where: str, max_persons: int) -> int:
    persons = int(clip.persons)
    if not 0 <= persons <= max_persons:
        raise CacheError(f"{where}: persons={persons} must be between 0 and max_persons={max_persons}")
    return persons


def _check_failed(clip: Clip, where: str) -> None:
    """A failed clip stores no poses, scores or frame indices."""
    status = str(clip.status)
    if clip.poses:
        raise CacheError(
            f"{where}: a failed clip (status {status!r}) must have no poses; "
            "use status='ok' for a clip with skeletons"
        )
    for f in ("scores", "frame_indices"):
        value = getattr(clip, f)
        if value is not None and np.size(value) != 0:
            raise CacheError(f"{where}: a failed clip (status {status!r}) stores no {f}")


def _checked_pose_array(value: object, what: str, skel: Skeleton, max_persons: int,
                        frames: int | None) -> np.ndarray:
    """One convention's poses as a contiguous ``(T, M, V, 3)`` float32 array of metres; T must be ``frames``
    unless that is None."""
    arr = np.asarray(value)
    if not np.issubdtype(arr.dtype, np.floating):
        raise CacheError(f"{what}: dtype {arr.dtype} is not floating point; give float32 metres")
    m, v = max_persons, skel.num_joints
    if arr.ndim != 4 or arr.shape[1:] != (m, v, 3) or arr.shape[0] < 1:
        raise CacheError(
            f"{what}: shape {arr.shape}, expected (T, M={m}, V={v}, 3) with T >= 1 "
            "(pad unused person slots with zeros)"
        )
    if frames is not None and arr.shape[0] != frames:
        raise CacheError(f"{what}: {arr.shape[0]} frames, other conventions have {frames}; "
                         "all conventions of a clip must cover the same frames")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    peak = float(np.abs(arr).max())  # one pass: NaN / inf propagate into the peak
    if not math.isfinite(peak):
        raise CacheError(f"{what}: contains NaN or infinite values; store empty slots as zeros")
    if peak > MAX_ABS_METRES:
        raise CacheError(
            f"{what}: coordinates up to {peak:.0f}, but the cache stores metres; "
            "convert millimetres with / 1000"
        )
    return arr


def _checked_poses(clip: Clip, where: str, skeletons: Mapping[str, Skeleton],
                   max_persons: int) -> tuple[dict[str, np.ndarray], int]:
    """The poses of an ok clip, checked and converted, and their common frame count T."""
    missing = sorted(set(skeletons) - set(clip.poses))
    extra = sorted(set(clip.poses) - set(skeletons))
    if missing or extra:
        raise CacheError(
            f"{where}: an 'ok' clip needs poses for exactly the cache's conventions "
            f"{sorted(skeletons)}; missing {missing}, unexpected {extra}"
        )
    poses: dict[str, np.ndarray] = {}
    frames: int | None = None
    for conv, skel in skeletons.items():
        arr = _checked_pose_array(clip.poses[conv], f"{where} poses[{conv!r}]", skel, max_persons, frames)
        frames = arr.shape[0]
        poses[conv] = arr
    assert frames is not None
    return poses, frames


def _checked_scores(clip: Clip, where: str, frames: int, max_persons: int) -> np.ndarray | None:
    if clip.scores is None:
        return None
    scores = np.asarray(clip.scores)
    if scores.shape != (frames, max_persons) or not np.issubdtype(scores.dtype, np.floating):
        raise CacheError(f"{where}: scores must be a float (T={frames}, M={max_persons}) array, "
                         f"got {scores.dtype} {scores.shape}")
    return np.ascontiguousarray(scores, dtype=np.float32)


def _checked_frame_indices(clip: Clip, where: str, frames: int) -> np.ndarray | None:
    if clip.frame_indices is None:
        return None
    frame_indices = np.asarray(clip.frame_indices)
    if frame_indices.shape != (frames,) or not np.issubdtype(frame_indices.dtype, np.integer):
        raise CacheError(f"{where}: frame_indices must be an integer (T={frames},) array, "
                         f"got {frame_indices.dtype} {frame_indices.shape}")
    return np.ascontiguousarray(frame_indices, dtype=np.int64)


def validate_clip(clip: Clip, skeletons: Mapping[str, Skeleton], max_persons: int,
                  classes: Sequence[str] | None) -> Clip:
    """A checked copy of ``clip`` for a cache with these conventions, person slots and class names.

    Poses become contiguous float32, scores float32, frame indices int64, and ``persons=0`` on an ok clip
    becomes the number of person slots that are not all zeros.

    Raises:
        CacheError: the clip breaks the cache contract (the message says which field and how).
    """
    where = _check_identity(clip)
    _check_field_types(clip, where)
    fps = _checked_fps(clip, where)
    label = _checked_label(clip, where, classes)
    if not isinstance(clip.poses, Mapping):
        raise CacheError(f"{where}: poses must be a dict convention -> (T, M, V, 3) array")
    persons = _checked_persons(clip, where, max_persons)
    if clip.status != ClipStatus.OK:
        _check_failed(clip, where)
        return _copy_clip(clip, {}, None, None, fps, label, persons)
    poses, frames = _checked_poses(clip, where, skeletons, max_persons)
    scores = _checked_scores(clip, where, frames, max_persons)
    frame_indices = _checked_frame_indices(clip, where, frames)
    if persons == 0:
        first = next(iter(poses.values()))
        persons = int(np.any(first != 0, axis=(0, 2, 3)).sum())
    return _copy_clip(clip, poses, scores, frame_indices, fps, label, persons)


def _copy_clip(clip: Clip, poses: dict[str, np.ndarray], scores: np.ndarray | None,
               frame_indices: np.ndarray | None, fps: float, label: int, persons: int) -> Clip:
    return Clip(
        name=clip.name, poses=poses, label=label, subject=int(clip.subject), camera=int(clip.camera),
        setup=int(clip.setup), replication=int(clip.replication), fps=fps, source=clip.source,
        extractor=clip.extractor, model_id=clip.model_id, persons=persons, scores=scores,
        frame_indices=frame_indices, status=str(clip.status), message=clip.message,
    )


__all__ = ["MAX_ABS_METRES", "validate_clip"]
