"""Fixed-length clips for the encoder: (T, M, V, 3) poses -> (3, length, V, M), 50 frames by default.

This is the authors' 300 -> 50 frame step (their ``feeder/preprocess_ntu.py``; see docs/method.md)
generalised to any skeleton convention and any number of persons M.  Per clip, in this order:

1. **Valid frames.**  ``valid="located"`` (default) keeps the frames where *any* person is
   present (a person is present in a frame when any coordinate of any of its joints is
   non-zero; the cache stores absent persons as zeros) and drops the empty ones, wherever
   they are.  ``valid="counted"`` reproduces the reference: it *counts* the frames where
   joint 0 of person 0 is non-zero and uses frames ``[0, count)``, which assumes that all
   valid frames come first and that person 0 is always there.  Extracted videos break that
   assumption (a detector misses a frame in the middle, or person 0 leaves before person 1),
   so msclr locates frames instead; keep ``"counted"`` for bit-compatibility with reference
   NTU arrays.  Presence is tested on all joints, not only on the centre, because a
   convention whose origin is a joint (MediaPipe's hip-centred world landmarks) legitimately
   has an all-zero joint in every frame.
2. **Centring** on ``skeleton.centre`` per frame and per person (NTU: joint 20, SpineShoulder;
   SMPL-X: 9, thorax; never NTU's index 20 for another convention).  The centre joint becomes
   exactly 0 wherever its person is present; absent persons stay exactly 0.
3. **Temporal resampling** to ``length`` frames with half-pixel linear interpolation (source
   coordinate ``(i + 0.5) * n / length - 0.5`` clamped at the borders, no anti-aliasing).  This
   is OpenCV's ``INTER_LINEAR`` resize used by the reference and equals
   ``torch.nn.functional.interpolate(mode="linear", align_corners=False)`` (tested within 1e-6).
   Frames where a person is absent are zeros and are interpolated as such (as in the
   reference), so a person who appears or leaves mid-clip fades in/out over one frame.
4. **Optional y-rotation** (``parallel_skeleton`` of the reference) using
   ``skeleton.shoulders`` = (left, right): per frame and per person, v = right - left shoulder
   with v_y = 0, and the frame is rotated about the vertical axis with
   ``R = [[c, 0, -s], [0, 1, 0], [s, 0, c]]`` so that the shoulder line lies on +x (yaw removed).

   - ``y_rotation="frame"`` (what ``True`` means): θ_t = atan2(-v_z, v_x) per frame, correct
     for every frame (v = 0, e.g. an absent person, gives θ = 0).
   - ``y_rotation="sequence"``: the reference's formula, θ_t = arccos(v_x / (|v| + 1e-4)) with
     one sign for the whole sequence (θ negated when Σ_t v_z >= 0).  Frames whose v_z sign
     disagrees with the sum are rotated away from +x by twice their angle (a quirk kept only
     for fidelity with the reference's ``NTU60_frame50_rotated`` arrays).

   ``True`` maps to ``"frame"`` because the point of the step is to put every frame's
   shoulders on +x; the sequence-wide sign only agrees with that when the subject never turns
   its back through the camera axis.

5. **Optional mean-pose removal** (``mean_pose=True``; not in the paper): per person and joint, the
   average over the frames where the person is present is subtracted, so a clip becomes the motion
   around its own mean pose; absent frames stay 0.  It removes the body's size and proportions (and a
   constant posture), which on small datasets tell subjects apart rather than actions.

A clip without any valid frame raises :class:`EmptyClipError` (it would otherwise silently
become an all-zero training sample); ``allow_empty=True`` returns zeros instead, for callers
such as prediction that report "no person" themselves.

Units are unchanged (metres in, metres out); coordinates are Kinect camera space (y up), so
the y-rotation is a rotation about the vertical axis.  Arithmetic is float64 inside, float32
out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np

from msclr.errors import MsclrError, SkeletonError
from msclr.skeletons import Skeleton, get_skeleton

ValidMode = Literal["located", "counted"]
RotationMode = Literal["frame", "sequence"]


class EmptyClipError(MsclrError):
    """A clip with no frame in which any person is present."""


def present_mask(poses: np.ndarray) -> np.ndarray:
    """(T, M) bool: person m is present in frame t (any coordinate of any joint non-zero).

    Args:
        poses: (T, M, V, C) array; absent persons are stored as zeros.
    """
    return np.any(poses != 0, axis=(2, 3))


def valid_frames(poses: np.ndarray, mode: ValidMode = "located") -> np.ndarray:
    """Indices (int64) of the frames to keep, in time order.

    ``"located"``: every frame in which any person is present.  ``"counted"``: the reference's
    ``[0, count)`` where count = number of frames whose joint 0 of person 0 is non-zero.
    """
    if mode == "located":
        return np.flatnonzero(present_mask(poses).any(axis=1))
    if mode == "counted":
        count = int(np.count_nonzero(np.abs(poses[:, 0, 0, :]).sum(axis=-1) != 0))
        return np.arange(count)
    raise ValueError(f"valid must be 'located' or 'counted', not {mode!r}")


def linear_resample_weights(n: int, length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and weights of half-pixel linear resampling from n to ``length`` samples.

    Returns ``(i0, i1, w0, w1)``: output sample i = ``w0[i] * x[i0[i]] + w1[i] * x[i1[i]]``.
    The source coordinate ``(i + 0.5) * n / length - 0.5`` is clamped at 0 below and at n - 1
    above.  It is rounded the way PyTorch's CPU ``interpolate(mode="linear",
    align_corners=False)`` rounds it (scale = n / length in float32, then the coordinate as one
    fused multiply-add rounded to float32), so that the two agree to float32
    rounding of the output rather than to float32 rounding of the *coordinate* (which, times a
    large jump between frames, can reach 1e-5).
    """
    if n < 1 or length < 1:
        raise ValueError(f"cannot resample {n} frames to {length}")
    scale = np.float64(np.float32(n) / np.float32(length))
    # float64 holds scale * (i + 0.5) exactly, so this rounds once, like an FMA in float32.
    src = (scale * (np.arange(length, dtype=np.float64) + 0.5) - 0.5).astype(np.float32)
    src = np.maximum(src, np.float32(0.0))
    i0 = np.minimum(np.floor(src).astype(np.int64), n - 1)
    i1 = np.minimum(i0 + 1, n - 1)
    w1 = np.clip(src - i0.astype(np.float32), np.float32(0.0), np.float32(1.0))
    w1 = w1.astype(np.float64)
    return i0, i1, 1.0 - w1, w1


def resample_linear(x: np.ndarray, length: int, axis: int = 0) -> np.ndarray:
    """Resample ``x`` along ``axis`` to ``length`` samples (half-pixel linear, see
    :func:`linear_resample_weights`).  float64 arithmetic; returns float64."""
    x = np.moveaxis(np.asarray(x, dtype=np.float64), axis, 0)
    i0, i1, w0, w1 = linear_resample_weights(x.shape[0], length)
    shape = (-1,) + (1,) * (x.ndim - 1)
    out = w0.reshape(shape) * x[i0] + w1.reshape(shape) * x[i1]
    return np.moveaxis(out, 0, axis)


def y_rotation_angles(
    poses: np.ndarray, shoulders: tuple[int, int], mode: RotationMode = "frame"
) -> np.ndarray:
    """(T, M) rotation angles (radians) about y that put each frame's shoulder line on +x.

    Args:
        poses: (T, M, V, 3) centred poses.
        shoulders: (left, right) joint indices.
        mode: ``"frame"`` (atan2, correct per frame) or ``"sequence"`` (the reference's arccos
            with a sequence-wide sign per person; see the module docstring).
    """
    left, right = shoulders
    v = poses[:, :, right, :] - poses[:, :, left, :]  # (T, M, 3)
    vx, vz = v[..., 0], v[..., 2]
    if mode == "frame":
        return np.arctan2(-vz, vx)
    if mode == "sequence":
        norm = np.sqrt(vx**2 + vz**2)
        theta = np.arccos(np.clip(vx / (norm + 1e-4), -1.0, 1.0))
        sign = np.where(vz.sum(axis=0) >= 0, -1.0, 1.0)  # (M,)
        return theta * sign
    raise ValueError(f"y_rotation must be False, True, 'frame' or 'sequence', not {mode!r}")


def rotate_y(poses: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """Rotate (T, M, V, 3) poses about y by per-(frame, person) angles ``theta`` (T, M):
    p' = R p with R = [[c, 0, -s], [0, 1, 0], [s, 0, c]]."""
    c = np.cos(theta)[:, :, None]
    s = np.sin(theta)[:, :, None]
    x, y, z = poses[..., 0], poses[..., 1], poses[..., 2]
    return np.stack([c * x - s * z, y, s * x + c * z], axis=-1)


def _rotation_mode(y_rotation: bool | str) -> RotationMode | None:
    if y_rotation is False or y_rotation is None:
        return None
    if y_rotation is True:
        return "frame"
    if y_rotation in ("frame", "sequence"):
        return y_rotation  # type: ignore[return-value]
    raise ValueError(f"y_rotation must be False, True, 'frame' or 'sequence', not {y_rotation!r}")


def subtract_mean_pose(x: np.ndarray) -> np.ndarray:
    """(T, M, V, 3) poses minus each person's mean pose over the frames where that person is present
    (absent frames, all zeros, stay zero; a person never present stays zero)."""
    present = present_mask(x)[:, :, None, None]  # (T, M, 1, 1)
    count = np.maximum(present.sum(axis=0, keepdims=True), 1)
    mean = np.where(present, x, 0.0).sum(axis=0, keepdims=True) / count  # (1, M, V, 3)
    return np.where(present, x - mean, 0.0)


def preprocess_clip(
    poses: np.ndarray,
    skeleton: Skeleton | str,
    *,
    length: int = 50,
    centre: bool = True,
    y_rotation: bool | RotationMode = False,
    valid: ValidMode = "located",
    allow_empty: bool = False,
    mean_pose: bool = False,
) -> np.ndarray:
    """One clip's poses -> the encoder's fixed-length input.

    Args:
        poses: (T, M, V, 3) float, metres, Kinect camera space; absent persons all zeros.
        skeleton: the convention of ``poses`` (V must match); its ``centre`` and ``shoulders``
            are used.
        length: output frames (50 in MS-CLR).
        centre: subtract the centre joint per frame and person.
        y_rotation: ``False``, ``True`` (= ``"frame"``), ``"frame"`` or ``"sequence"`` (the
            reference's quirk); see the module docstring.
        valid: ``"located"`` (drop empty frames anywhere) or ``"counted"`` (the reference).
        allow_empty: return zeros for a clip with no valid frame instead of raising.
        mean_pose: subtract each person's time-averaged pose (step 5).

    Returns:
        (3, length, V, M) float32, metres.

    Raises:
        EmptyClipError: no valid frame and ``allow_empty`` is False.
        SkeletonError: y-rotation requested for a skeleton without shoulders.
        ValueError: wrong shape, non-finite values, bad option.
    """
    skeleton = get_skeleton(skeleton)
    poses = np.asarray(poses)
    if poses.ndim != 4 or poses.shape[3] != 3:
        raise ValueError(f"poses must be (T, M, V, 3), got shape {poses.shape}")
    n_frames, n_persons, n_joints, _ = poses.shape
    if n_joints != skeleton.num_joints:
        raise ValueError(
            f"poses have {n_joints} joints but skeleton {skeleton.name!r} has {skeleton.num_joints}; "
            "pass the convention the poses were stored in"
        )
    if length < 1:
        raise ValueError(f"length must be >= 1, got {length}")
    rotation = _rotation_mode(y_rotation)
    if rotation is not None and skeleton.shoulders is None:
        raise SkeletonError(
            f"skeleton {skeleton.name!r} defines no shoulders, so y-rotation is impossible; "
            "add `shoulders = [left, right]` to its definition or preprocess without y-rotation"
        )
    if not np.all(np.isfinite(poses)):
        raise ValueError("poses contain NaN or inf; store absent joints/persons as zeros")

    empty = np.zeros((3, length, n_joints, n_persons), dtype=np.float32)
    frames = valid_frames(poses, valid) if n_frames else np.zeros(0, dtype=np.int64)
    if frames.size == 0:
        if allow_empty:
            return empty
        raise EmptyClipError(
            f"clip has no frame with a person in it ({n_frames} frames, all zero); "
            "drop it from the split or pass allow_empty=True to get an all-zero sample"
        )
    x = poses[frames].astype(np.float64)  # (T', M, V, 3)
    if centre:
        present = present_mask(x)[:, :, None, None]
        x = np.where(present, x - x[:, :, skeleton.centre : skeleton.centre + 1, :], 0.0)
    x = resample_linear(x, length, axis=0)
    if rotation is not None:
        assert skeleton.shoulders is not None
        x = rotate_y(x, y_rotation_angles(x, skeleton.shoulders, rotation))
    if mean_pose:
        x = subtract_mean_pose(x)
    return np.ascontiguousarray(x.transpose(3, 0, 2, 1), dtype=np.float32)


def preprocess_cache(
    cache: Any,
    convention: str,
    names: Sequence[str] | None = None,
    *,
    chunk_size: int = 256,
    progress: Callable[[int], None] | None = None,
    **kwargs: Any,
) -> np.ndarray:
    """Preprocess many clips of one convention from a cache.

    Args:
        cache: a :class:`msclr.pipeline.cache.Cache` (anything with ``.skeletons`` and
            ``.poses(convention, names)``).
        convention: the skeleton name inside the cache.
        names: clips in output order (default: ``cache.names``, the clips with status "ok").
        chunk_size: clips read from the cache at once (bounds memory for large caches).
        progress: called with the number of clips finished after each chunk.
        **kwargs: passed to :func:`preprocess_clip` (``length``, ``centre``, ``y_rotation``,
            ``valid``, ``allow_empty``).

    Returns:
        (N, 3, length, V, M) float32.

    Raises:
        SkeletonError: the cache has no such convention.
        EmptyClipError: a clip has no valid frame (the message names it).
    """
    if convention not in cache.skeletons:
        raise SkeletonError(
            f"the cache has no {convention!r} skeletons; it holds: {', '.join(cache.skeletons)}"
        )
    skeleton = cache.skeletons[convention]
    names = list(cache.names if names is None else names)
    length = int(kwargs.get("length", 50))
    persons = int(getattr(cache, "max_persons", 0) or 0)
    out: np.ndarray | None = None
    if persons:
        out = np.zeros((len(names), 3, length, skeleton.num_joints, persons), dtype=np.float32)
    for start in range(0, len(names), max(1, chunk_size)):
        chunk = names[start : start + chunk_size]
        for offset, (name, poses) in enumerate(zip(chunk, cache.poses(convention, chunk), strict=True)):
            try:
                sample = preprocess_clip(poses, skeleton, **kwargs)
            except EmptyClipError as err:
                raise EmptyClipError(f"clip {name!r} ({convention}): {err}") from None
            if out is None:
                out = np.zeros((len(names),) + sample.shape, dtype=np.float32)
            out[start + offset] = sample
        if progress is not None:
            progress(len(chunk))
    if out is None:
        out = np.zeros((0, 3, length, skeleton.num_joints, persons or 1), dtype=np.float32)
    return out


__all__ = [
    "EmptyClipError",
    "linear_resample_weights",
    "preprocess_cache",
    "preprocess_clip",
    "present_mask",
    "subtract_mean_pose",
    "resample_linear",
    "rotate_y",
    "valid_frames",
    "y_rotation_angles",
]
