"""Build a small TensorFlow SavedModel with MeTRAbs' multi-person interface, for tests and benches.

The stand-in is a ``tf.Module`` with

- ``detect_poses_batched(images uint8 [N, H, W, 3], intrinsic_matrix=..., ..., skeleton='', ...)``:
  a ``tf.function`` with the **full input signature of the real model** (same keyword arguments and
  defaults), returning ``{"boxes": [N, None, 5], "poses3d": [N, None, J, 3], "poses2d": [N, None, J, 2]}``
  ragged tensors in MeTRAbs' units (pixels, millimetres, OpenCV camera axes);
- ``per_skeleton_joint_names`` / ``per_skeleton_joint_edges`` / ``per_skeleton_indices``: dicts of
  ``tf.Variable`` for ``''`` and the four MeTRAbs conventions, with the **real joint names** from
  msclr's registry.  The ``''`` table is every convention's joints with a suffix (``pelv_smpl``,
  ``pelv_smplx``, ``head_mhad``, ``head_kinect``) plus a few filler joints, in a seeded shuffled
  order, so that a convention is only recovered through its ``per_skeleton_indices``;
- counters to check how msclr calls it: ``calls``, ``frames_seen`` (int64), ``last_skeleton``,
  ``last_intrinsics`` ``(3, 3)``, ``last_num_aug``, ``last_max_detections``, ``last_threshold``.

It refuses ``skeleton != ''`` (msclr must call once with all joints and slice).

Poses: joint j of the ``''`` table of a person with base point ``b`` (mm) is ``b + PATTERN[j]``,
``PATTERN[j] = (10 j, -5 j, 2 j)`` mm.  Two modes:

- **script** (``script=[[(box5, base3), ...] per frame]``): the frame number is read from pixel
  (0, 0): ``R + 256 G``; the frame's people are the script's entries in the order given (so a test
  can swap the detection order or leave a frame empty);
- **pixel** (``script=None``, for encoded videos): a frame whose mean value is <= 8 is empty; else two
  people, left and right image halves, with bases from the halves' mean values (deterministic for a
  given decoded frame), listed in swapped order when ``int(left mean)`` is odd.

Build with :func:`build_standin`; load with msclr's real loader from the returned directory.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from msclr.skeletons import get_skeleton

CONVENTIONS = ("smpl_24", "smplx_42", "berkeley_mhad_43", "kinectv2_25")
SUFFIX = {"smpl_24": "smpl", "smplx_42": "smplx", "berkeley_mhad_43": "mhad", "kinectv2_25": "kinect"}
FILLERS = ("pelv_h36m", "rhip_h36m", "lhip_h36m", "spine_h36m", "head_h36m", "neck_h36m")

Person = tuple[Sequence[float], Sequence[float]]  # (box [x, y, w, h, conf] px, base [x, y, z] mm)


@dataclass
class StandinInfo:
    """What a test needs to predict the stand-in's output.

    Attributes:
        path: SavedModel directory.
        all_names: the ``''`` joint table.
        indices: convention -> positions in the ``''`` table.
        pattern: ``(J, 3)`` float32 mm offsets per ``''`` joint.
    """

    path: Path
    all_names: list[str]
    indices: dict[str, np.ndarray]
    pattern: np.ndarray

    def expected_mm(self, base: Sequence[float], convention: str) -> np.ndarray:
        """``(V, 3)`` float32 millimetres, camera axes, of a person with base ``base``."""
        return (np.asarray(base, np.float32)[None] + self.pattern[self.indices[convention]]).astype(np.float32)


def frame_with_index(index: int, height: int = 48, width: int = 64, value: int = 100) -> np.ndarray:
    """An RGB frame whose pixel (0, 0) encodes ``index`` for script mode."""
    frame = np.full((height, width, 3), value, np.uint8)
    frame[0, 0, 0] = index % 256
    frame[0, 0, 1] = index // 256
    return frame


def build_standin(
    path: str | Path,
    *,
    script: Sequence[Sequence[Person]] | None = None,
    conventions: Sequence[str] = CONVENTIONS,
    rename: Mapping[str, Mapping[int, str]] | None = None,
    seed: int = 0,
    empty_batch_error: bool = False,
) -> StandinInfo:
    """Build and save the stand-in SavedModel under ``path``.

    Args:
        path: output directory (created by ``tf.saved_model.save``).
        script: per-frame people for script mode, or None for pixel mode.
        conventions: conventions offered by the model.
        rename: convention -> {joint index: wrong name}, to provoke a joint-name mismatch.
        seed: shuffle of the ``''`` table.
        empty_batch_error: reproduce MeTRAbs' CPU behaviour on a batch without any detection with
            ``skeleton=''`` (an out-of-range gather in ``_predict_empty``, a known quirk of the MeTRAbs SavedModel).
    """
    import tensorflow as tf

    path = Path(path)
    all_names = [f"{j}_{SUFFIX[c]}" for c in conventions for j in get_skeleton(c).joints] + list(FILLERS)
    random.Random(seed).shuffle(all_names)
    position = {n: i for i, n in enumerate(all_names)}
    indices = {c: np.array([position[f"{j}_{SUFFIX[c]}"] for j in get_skeleton(c).joints], np.int32)
               for c in conventions}
    j_all = len(all_names)
    pattern = (np.arange(j_all, dtype=np.float32)[:, None] * np.array([10.0, -5.0, 2.0], np.float32))

    names = {c: list(get_skeleton(c).joints) for c in conventions}
    for conv, changes in (rename or {}).items():
        for i, new in changes.items():
            names[conv][i] = new

    module = tf.Module()
    module.per_skeleton_joint_names = {"": tf.Variable(all_names, dtype=tf.string, trainable=False)}
    module.per_skeleton_joint_edges = {"": tf.Variable(np.zeros((0, 2), np.int32), trainable=False)}
    module.per_skeleton_indices = {"": tf.Variable(np.arange(j_all, dtype=np.int32), trainable=False)}
    for c in conventions:
        skel = get_skeleton(c)
        module.per_skeleton_joint_names[c] = tf.Variable(names[c], dtype=tf.string, trainable=False)
        module.per_skeleton_joint_edges[c] = tf.Variable(
            np.array(skel.model_edges or skel.edges, np.int32).reshape(-1, 2), trainable=False)
        module.per_skeleton_indices[c] = tf.Variable(indices[c], trainable=False)
    module.calls = tf.Variable(0, dtype=tf.int64, trainable=False)
    module.frames_seen = tf.Variable(0, dtype=tf.int64, trainable=False)
    module.last_skeleton = tf.Variable("unset", dtype=tf.string, trainable=False)
    module.last_intrinsics = tf.Variable(np.zeros((3, 3), np.float32), trainable=False)
    module.last_num_aug = tf.Variable(-1, dtype=tf.int32, trainable=False)
    module.last_max_detections = tf.Variable(-2, dtype=tf.int32, trainable=False)
    module.last_threshold = tf.Variable(-1.0, dtype=tf.float32, trainable=False)
    pattern_c = tf.constant(pattern)

    if script is not None:
        counts = np.array([len(f) for f in script], np.int32)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int32)
        flat = [p for f in script for p in f]
        boxes_flat = np.array([p[0] for p in flat], np.float32).reshape(-1, 5)
        base_flat = np.array([p[1] for p in flat], np.float32).reshape(-1, 3)
        n_frames = len(script)

        def people(images: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
            fidx = tf.cast(images[:, 0, 0, 0], tf.int32) + 256 * tf.cast(images[:, 0, 0, 1], tf.int32)
            fidx = tf.minimum(fidx, n_frames - 1)
            n = tf.gather(tf.constant(counts), fidx)
            st = tf.gather(tf.constant(starts), fidx)
            flat_idx = tf.ragged.range(st, st + n).flat_values
            return n, tf.gather(tf.constant(boxes_flat), flat_idx), tf.gather(tf.constant(base_flat), flat_idx)
    else:
        def people(images: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
            x = tf.cast(images, tf.float32)
            h = tf.cast(tf.shape(images)[1], tf.float32)
            w_int = tf.shape(images)[2]
            half = w_int // 2
            w, hw = tf.cast(w_int, tf.float32), tf.cast(half, tf.float32)
            lm = tf.reduce_mean(x[:, :, :half], axis=[1, 2, 3])
            rm = tf.reduce_mean(x[:, :, half:], axis=[1, 2, 3])
            present = (lm + rm) / 2.0 > 8.0
            ones = tf.ones_like(lm)
            box_l = tf.stack([0.0 * ones, 0.0 * ones, hw * ones, h * ones, 0.9 * ones], axis=-1)
            box_r = tf.stack([hw * ones, 0.0 * ones, (w - hw) * ones, h * ones, 0.8 * ones], axis=-1)
            base_l = tf.stack([-400.0 - 2.0 * lm, 100.0 + lm, 3000.0 + 4.0 * lm], axis=-1)
            base_r = tf.stack([400.0 + 2.0 * rm, 100.0 + rm, 3200.0 + 4.0 * rm], axis=-1)
            swap = tf.math.floormod(tf.cast(tf.floor(lm), tf.int32), 2) == 1
            first_box = tf.where(swap[:, None], box_r, box_l)
            second_box = tf.where(swap[:, None], box_l, box_r)
            first_base = tf.where(swap[:, None], base_r, base_l)
            second_base = tf.where(swap[:, None], base_l, base_r)
            boxes = tf.reshape(tf.stack([first_box, second_box], axis=1), [-1, 5])
            bases = tf.reshape(tf.stack([first_base, second_base], axis=1), [-1, 3])
            keep = tf.repeat(present, 2)
            n = tf.where(present, 2, 0)
            return n, tf.boolean_mask(boxes, keep), tf.boolean_mask(bases, keep)

    @tf.function(input_signature=[
        tf.TensorSpec([None, None, None, 3], tf.uint8),  # images
        tf.TensorSpec([None, 3, 3], tf.float32),  # intrinsic_matrix
        tf.TensorSpec([None, None], tf.float32),  # distortion_coeffs
        tf.TensorSpec([None, 4, 4], tf.float32),  # extrinsic_matrix
        tf.TensorSpec([3], tf.float32),  # world_up_vector
        tf.TensorSpec([], tf.float32),  # default_fov_degrees
        tf.TensorSpec([], tf.int32),  # internal_batch_size
        tf.TensorSpec([], tf.int32),  # antialias_factor
        tf.TensorSpec([], tf.int32),  # num_aug
        tf.TensorSpec([], tf.bool),  # average_aug
        tf.TensorSpec([], tf.string),  # skeleton
        tf.TensorSpec([], tf.float32),  # detector_threshold
        tf.TensorSpec([], tf.float32),  # detector_nms_iou_threshold
        tf.TensorSpec([], tf.int32),  # max_detections
        tf.TensorSpec([], tf.bool),  # detector_flip_aug
        tf.TensorSpec([], tf.bool),  # suppress_implausible_poses
    ])
    def detect_poses_batched(
        images,
        intrinsic_matrix=(((-1.0, -1.0, -1.0),) * 3,),
        distortion_coeffs=((0.0,) * 5,),
        extrinsic_matrix=(((1.0, 0.0, 0.0, 0.0), (0.0, 1.0, 0.0, 0.0), (0.0, 0.0, 1.0, 0.0), (0.0, 0.0, 0.0, 1.0)),),
        world_up_vector=(0.0, -1.0, 0.0),
        default_fov_degrees=55.0,
        internal_batch_size=64,
        antialias_factor=1,
        num_aug=5,
        average_aug=True,
        skeleton="",
        detector_threshold=0.3,
        detector_nms_iou_threshold=0.7,
        max_detections=-1,
        detector_flip_aug=False,
        suppress_implausible_poses=True,
    ):
        tf.debugging.assert_equal(skeleton, tf.constant(""), message="stand-in: msclr must pass skeleton=''")
        module.calls.assign_add(1)
        module.frames_seen.assign_add(tf.cast(tf.shape(images)[0], tf.int64))
        module.last_skeleton.assign(skeleton)
        module.last_intrinsics.assign(intrinsic_matrix[0])
        module.last_num_aug.assign(num_aug)
        module.last_max_detections.assign(max_detections)
        module.last_threshold.assign(detector_threshold)
        n, boxes, bases = people(images)
        if empty_batch_error:
            crop_joints = tf.zeros([4, 3])  # fewer joints than the '' table, as the crop model's
            probe = tf.gather(crop_joints, tf.where(tf.reduce_sum(n) > 0, 0, j_all - 1))
            bases = bases + 0.0 * tf.reduce_sum(probe)
        poses3d = bases[:, None, :] + pattern_c[None]
        k = intrinsic_matrix[0]
        z = poses3d[..., 2]
        poses2d = tf.stack([k[0, 0] * poses3d[..., 0] / z + k[0, 2], k[1, 1] * poses3d[..., 1] / z + k[1, 2]], -1)
        return {
            "boxes": tf.RaggedTensor.from_row_lengths(boxes, n),
            "poses3d": tf.RaggedTensor.from_row_lengths(poses3d, n),
            "poses2d": tf.RaggedTensor.from_row_lengths(poses2d, n),
        }

    module.detect_poses_batched = detect_poses_batched
    tf.saved_model.save(module, str(path))
    return StandinInfo(path=path, all_names=all_names, indices={c: i.astype(np.int64) for c, i in indices.items()},
                       pattern=pattern)


__all__ = ["CONVENTIONS", "StandinInfo", "build_standin", "frame_with_index"]
