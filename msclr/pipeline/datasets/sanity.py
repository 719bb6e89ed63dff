"""Sanity checks of imported skeletons against their convention, and the ``--axes`` vocabulary (pure NumPy).

A wrong joint order, a y-down source or mirrored data import without any error: the arrays have the right
shape and units.  :func:`check_skeletons` looks at the data the way a person would:

- **bone lengths** are nearly constant over the frames of a clip when the joint order is right.  The figure is
  the largest, over bones, of the median (over clips and person slots) standard deviation of the bone's
  length across frames, relative to the typical (median) bone length of the skeleton.  UTD-MHAD's Kinect v1
  data in their own order give 0.11 (the hand bones, short and jittery); shuffled joint orders give 0.27-0.64
  and mean bones about three times as long (0.57-0.74 m instead of 0.21 m);
- **bones join neighbours**: with the right order the skeleton's tree is nearly the shortest tree through the
  same joints (its total length over the minimum spanning tree's: 1.16-1.31 on UTD-MHAD and on the synthetic
  NTU / SMPL data); a shuffled order gives 3.3-4.5, even for clips with little motion, where the spread alone
  stays small;
- **up axis**: the head (joints named ``head`` / ``nose``) is above the feet (``foot``, ``ankle``, ``toe``,
  ``heel`` and MeTRAbs' abbreviations) along +y in most frames;
- **left / right**: with the skeleton's shoulder hint, a person facing the camera has the left shoulder at the
  smaller x (Kinect camera space: x towards the camera's left); most action datasets film people from the
  front, so this holds in most frames;
- **empty frames**: frames whose every person slot is all zeros are counted.

Joint meaning comes from the skeleton registry (names and the shoulder hint); a check whose joints a
convention lacks is skipped.  Coordinates are metres in Kinect camera space (x towards the camera's left, y up,
z away from the camera).

``--axes`` maps a source's axes onto these: three comma-separated source axes with optional signs, giving the
new x, y and z (``-x,-y,z`` turns a y-down camera frame into Kinect axes), or a preset: ``y-up`` (unchanged),
``y-down`` (``-x,-y,z``), ``z-up`` (``x,z,-y``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from msclr.errors import MsclrError
from msclr.skeletons import Skeleton

BONE_SPREAD_LIMIT = 0.25
"""Warn above this bone-length spread (std across frames / typical bone length)."""
TREE_RATIO_LIMIT = 2.0
"""Warn when the skeleton's tree is more than this many times as long as the shortest tree through its joints."""
TREE_FRAMES = 500
"""Frames (spread evenly) whose minimum spanning tree is computed."""
UPRIGHT_MIN = 0.5
"""Warn when the head is above the feet (+y) in fewer than this fraction of frames."""
LEFT_SIDE_MIN = 0.5
"""Warn when the left shoulder has the smaller x in fewer than this fraction of frames."""
EMPTY_FRAMES_MAX = 0.10
"""Warn when more than this fraction of frames have no person."""
HEAD_WORDS = ("head", "nose")
FEET_WORDS = ("foot", "foo", "ankle", "ank", "toe", "heel", "hee")
AXES_PRESETS = {"y-up": "x,y,z", "y-down": "-x,-y,z", "z-up": "x,z,-y"}


# --------------------------------------------------------------------------- axes
def parse_axes(spec: str) -> np.ndarray:
    """The (3, 3) float32 matrix ``R`` of an ``--axes`` spec: ``p_kinect = R @ p_source``.

    Raises:
        MsclrError: not three signed, distinct axes and not a preset (one line, with examples).
    """
    text = AXES_PRESETS.get(spec.strip().lower(), spec.strip().lower())
    parts = [p.strip() for p in text.split(",")]
    rows = []
    for part in parts:
        sign = -1.0 if part.startswith("-") else 1.0
        axis = part.lstrip("+-")
        if axis not in ("x", "y", "z") or len(part) - len(axis) > 1:
            rows = []
            break
        row = np.zeros(3, dtype=np.float32)
        row["xyz".index(axis)] = sign
        rows.append(row)
    if len(rows) != 3 or sorted(int(np.flatnonzero(r)[0]) for r in rows) != [0, 1, 2]:
        raise MsclrError(
            f"--axes {spec!r} must give the source axis for the new x, y and z, each of x, y, z once with an "
            f"optional sign (e.g. -x,-y,z), or one of {', '.join(AXES_PRESETS)}"
        )
    return np.stack(rows)


def axes_spec(matrix: np.ndarray) -> str:
    """The ``--axes`` text of a signed permutation matrix (a preset's name when there is one)."""
    parts = []
    for row in np.asarray(matrix):
        j = int(np.flatnonzero(row)[0])
        parts.append(("-" if row[j] < 0 else "") + "xyz"[j])
    text = ",".join(parts)
    return next((name for name, preset in AXES_PRESETS.items() if preset == text), text)


def rotation_to_y_up(up: int, sign: float, centroid: np.ndarray | None = None) -> np.ndarray:
    """The rotation (a signed permutation, determinant +1) taking source axis ``up`` (0-2, with ``sign``) to +y.

    Of the four, the one that puts ``centroid`` (the mean joint position, metres) farthest in front of the
    camera (+z) is chosen, then the one that changes the axes least (people stay in front of the camera).
    """
    best, best_key = np.eye(3), (-math.inf, -math.inf)
    centroid = np.zeros(3) if centroid is None else np.asarray(centroid, dtype=np.float64)
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1.0, -1.0), repeat=3):
            matrix = np.zeros((3, 3))
            for row, (col, s) in enumerate(zip(perm, signs, strict=True)):
                matrix[row, col] = s
            if np.linalg.det(matrix) < 0 or not np.allclose(matrix @ (np.eye(3)[up] * sign), (0.0, 1.0, 0.0)):
                continue
            key = (round(float((matrix @ centroid)[2]), 3), float(np.trace(matrix)))
            if key > best_key:
                best, best_key = matrix, key
    return best


# ------------------------------------------------------------------------- checks
@dataclass
class SanityReport:
    """What :func:`check_skeletons` found (None: the check did not apply).

    Attributes:
        skeleton: the convention checked against.
        clips, frames: clips and frames looked at.
        empty_frames: frames whose every person slot is all zeros.
        bone_spread: largest median std of a bone's length across frames / typical bone length.
        worst_bone: ``"child-parent"`` joint names of that bone; worst_bone_std_m its median std, metres.
        mean_bone_m: mean over bones of their median length, metres.
        tree_ratio: median over frames of the skeleton tree's length / the minimum spanning tree's.
        upright: fraction of frames whose feet-to-head vector points mostly along +y.
        up_axis: the source axis that points from the feet to the head most often, e.g. ``"+y"``, ``"-y"``.
        left_on_left: fraction of frames with the left shoulder at the smaller x (after fixing ``up_axis``).
        warnings: one sentence each, with the numbers and the likely fix.
    """

    skeleton: str
    clips: int = 0
    frames: int = 0
    empty_frames: int = 0
    bone_spread: float | None = None
    worst_bone: str | None = None
    worst_bone_std_m: float | None = None
    mean_bone_m: float | None = None
    tree_ratio: float | None = None
    upright: float | None = None
    up_axis: str | None = None
    left_on_left: float | None = None
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line with every figure."""
        parts = [f"{self.clips} clips, {self.frames} frames checked against {self.skeleton}",
                 f"{self.empty_frames} empty frames"]
        if self.bone_spread is not None:
            parts.append(f"bone-length spread {self.bone_spread:.0%} of a typical bone (limit "
                         f"{BONE_SPREAD_LIMIT:.0%}), mean bone {self.mean_bone_m:.2f} m")
        if self.tree_ratio is not None:
            parts.append(f"bones {self.tree_ratio:.2f}x the shortest tree (limit {TREE_RATIO_LIMIT:g}x)")
        if self.upright is not None:
            parts.append(f"head above feet in {self.upright:.0%} of frames")
        if self.left_on_left is not None:
            parts.append(f"left shoulder on the left in {self.left_on_left:.0%}")
        return "; ".join(parts)


def _joints_named(skeleton: Skeleton, words: Sequence[str]) -> list[int]:
    return [v for v, name in enumerate(skeleton.joints) if any(w in name.lower() for w in words)]


def _slots(clips: Iterable[np.ndarray]) -> Iterable[np.ndarray]:
    """Every (frames, V, 3) float64 run of present frames of every person slot of ``(T, M, V, 3)`` clips."""
    for poses in clips:
        poses = np.asarray(poses, dtype=np.float64)
        for m in range(poses.shape[1]):
            slot = poses[:, m]
            present = np.any(slot != 0, axis=(1, 2))
            if present.sum() >= 2:
                yield slot[present]


def _bone_figures(slots: list[np.ndarray], skeleton: Skeleton) -> tuple[float, int, float, float] | None:
    """(spread, worst bone index in the bone list, its median std in metres, mean bone length in metres)."""
    bones = [(c, p) for c, p in skeleton.bones if c != p]
    if not bones or not slots:
        return None
    stds, means = [], []
    child = np.array([c for c, _ in bones])
    parent = np.array([p for _, p in bones])
    for xyz in slots:
        known = np.any(xyz != 0, axis=2)  # (F, V)
        length = np.linalg.norm(xyz[:, child] - xyz[:, parent], axis=2)  # (F, B)
        length[~(known[:, child] & known[:, parent])] = np.nan
        with np.errstate(all="ignore"):
            stds.append(np.nanstd(length, axis=0))
            means.append(np.nanmean(length, axis=0))
    with np.errstate(all="ignore"):
        std = np.nanmedian(np.stack(stds), axis=0)
        mean = np.nanmedian(np.stack(means), axis=0)
    typical = float(np.nanmedian(mean)) if np.isfinite(mean).any() else 0.0
    if not typical > 0 or not np.isfinite(std).any():
        return None
    worst = int(np.nanargmax(std))
    return float(std[worst] / typical), worst, float(std[worst]), float(np.nanmean(mean))


def _mst_length(points: np.ndarray) -> float:
    """Total length of the minimum spanning tree of ``points`` (N, 3) (Prim's algorithm)."""
    dist = np.linalg.norm(points[:, None] - points[None], axis=2)
    inside = np.zeros(len(points), dtype=bool)
    inside[0] = True
    best = dist[0].copy()
    total = 0.0
    for _ in range(len(points) - 1):
        candidates = np.where(inside, np.inf, best)
        j = int(np.argmin(candidates))
        total += float(candidates[j])
        inside[j] = True
        best = np.minimum(best, dist[j])
    return total


def _tree_ratio(slots: list[np.ndarray], skeleton: Skeleton) -> float | None:
    """Median over frames (at most :data:`TREE_FRAMES`) of the skeleton tree's length / the shortest tree's."""
    bones = np.array([(c, p) for c, p in skeleton.bones if c != p])
    if len(bones) < 2 or not slots:
        return None
    joints = np.unique(bones)
    frames = [xyz[np.all(np.any(xyz[:, joints] != 0, axis=2), axis=1)] for xyz in slots]
    stacked = np.concatenate([f for f in frames if len(f)] or [np.zeros((0, skeleton.num_joints, 3))])
    if not len(stacked):
        return None
    ratios = []
    for frame in stacked[sample_evenly(len(stacked), TREE_FRAMES)]:
        shortest = _mst_length(frame[joints])
        if shortest > 0:
            ratios.append(float(np.linalg.norm(frame[bones[:, 0]] - frame[bones[:, 1]], axis=1).sum()) / shortest)
    return float(np.median(ratios)) if ratios else None


def _up_figures(slots: list[np.ndarray], skeleton: Skeleton) -> tuple[float, int, float] | None:
    """(fraction of frames whose feet-to-head vector points mostly along +y, most frequent such axis 0-2, its
    sign)."""
    head, feet = _joints_named(skeleton, HEAD_WORDS), _joints_named(skeleton, FEET_WORDS)
    if not head or not feet or set(head) & set(feet):
        return None
    diffs = []
    for xyz in slots:
        known = np.all(np.any(xyz[:, head + feet] != 0, axis=2), axis=1)
        if known.any():
            diffs.append(xyz[known][:, head].mean(axis=1) - xyz[known][:, feet].mean(axis=1))
    if not diffs:
        return None
    d = np.concatenate(diffs)  # (F, 3) head - feet
    dominant = np.argmax(np.abs(d), axis=1)
    votes = np.zeros((3, 2))
    for axis in range(3):
        chosen = d[dominant == axis, axis]
        votes[axis] = ((chosen > 0).sum(), (chosen < 0).sum())
    axis, side = np.unravel_index(int(np.argmax(votes)), votes.shape)
    return float(votes[1, 0] / len(d)), int(axis), 1.0 if side == 0 else -1.0


def _left_figure(slots: list[np.ndarray], skeleton: Skeleton, rotation: np.ndarray) -> float | None:
    """Fraction of frames with the left shoulder at the smaller x, after ``rotation``."""
    if skeleton.shoulders is None:
        return None
    left, right = skeleton.shoulders
    hits = total = 0
    for xyz in slots:
        both = np.any(xyz[:, left] != 0, axis=1) & np.any(xyz[:, right] != 0, axis=1)
        x_left = xyz[both, left] @ rotation[0]
        x_right = xyz[both, right] @ rotation[0]
        hits += int((x_left < x_right).sum())
        total += int(both.sum())
    return hits / total if total else None


def check_skeletons(clips: Iterable[np.ndarray], skeleton: Skeleton, applied: np.ndarray | None = None) -> SanityReport:
    """Check ``(T, M, V, 3)`` clips (metres, Kinect camera axes) against ``skeleton``; see the module docstring.

    Args:
        applied: the ``--axes`` matrix already applied to the clips (suggested fixes are given for the source).

    Returns:
        a :class:`SanityReport`; ``warnings`` is empty when the data look right.
    """
    clips = list(clips)
    report = SanityReport(skeleton.name, clips=len(clips))
    for poses in clips:
        report.frames += int(poses.shape[0])
        report.empty_frames += int((~np.any(np.asarray(poses) != 0, axis=(1, 2, 3))).sum())
    slots = list(_slots(clips))
    bones = _bone_figures(slots, skeleton)
    if bones is not None:
        report.bone_spread, worst, report.worst_bone_std_m, report.mean_bone_m = bones
        child, parent = [(c, p) for c, p in skeleton.bones if c != p][worst]
        report.worst_bone = f"{skeleton.joints[child]}-{skeleton.joints[parent]}"
    report.tree_ratio = _tree_ratio(slots, skeleton)
    rotation = np.eye(3)
    up = _up_figures(slots, skeleton)
    if up is not None:
        report.upright, axis, sign = up
        report.up_axis = ("+" if sign > 0 else "-") + "xyz"[axis]
        centroid = np.mean([xyz.mean(axis=(0, 1)) for xyz in slots], axis=0)
        rotation = rotation_to_y_up(axis, sign, centroid)
    report.left_on_left = _left_figure(slots, skeleton, rotation)
    report.warnings = _warnings(report, rotation, np.eye(3) if applied is None else np.asarray(applied))
    return report


def _warnings(report: SanityReport, rotation: np.ndarray, applied: np.ndarray) -> list[str]:
    out = []
    spread = report.bone_spread is not None and report.bone_spread > BONE_SPREAD_LIMIT
    long = report.tree_ratio is not None and report.tree_ratio > TREE_RATIO_LIMIT
    if spread or long:
        out.append(
            f"bone lengths vary across frames by {report.bone_spread:.0%} of a typical bone (limit "
            f"{BONE_SPREAD_LIMIT:.0%}; bone {report.worst_bone}: {100 * (report.worst_bone_std_m or 0):.1f} cm std) "
            f"and the bones are {report.tree_ratio or float('nan'):.1f}x as long as the shortest tree through the "
            f"joints (limit {TREE_RATIO_LIMIT:g}x; mean bone {report.mean_bone_m:.2f} m): the joint order of the "
            f"data does not look like {report.skeleton}'s; check --skeleton, or write a definition in the data's "
            "joint order (msclr skeletons FILE)"
        )
    if report.upright is not None and report.upright < UPRIGHT_MIN:
        out.append(
            f"the head is above the feet (+y) in only {report.upright:.0%} of frames and points along "
            f"{report.up_axis} most often: the data are not y-up; convert with --axes {axes_spec(rotation @ applied)}"
        )
    if report.left_on_left is not None and report.left_on_left < LEFT_SIDE_MIN:
        out.append(
            f"the left shoulder has the smaller x (the camera's right) in only {report.left_on_left:.0%} of frames: "
            f"left and right look swapped (mirrored data: --axes {axes_spec(np.diag([-1.0, 1, 1]) @ rotation @ applied)}; "
            "or left/right joints exchanged in the "
            "joint order), unless the people face away from the camera"
        )
    if report.frames and report.empty_frames > EMPTY_FRAMES_MAX * report.frames:
        out.append(
            f"{report.empty_frames} of {report.frames} frames ({report.empty_frames / report.frames:.0%}) have no "
            "person (all zeros); check that the source stores its bodies where the format expects them"
        )
    return out


def sample_evenly(count: int, limit: int) -> list[int]:
    """At most ``limit`` indices spread evenly over ``range(count)`` (all when ``count <= limit``)."""
    if count <= limit:
        return list(range(count))
    return sorted({int(i) for i in np.linspace(0, count - 1, limit).round()})


__all__ = ["AXES_PRESETS", "BONE_SPREAD_LIMIT", "EMPTY_FRAMES_MAX", "LEFT_SIDE_MIN", "TREE_RATIO_LIMIT", "UPRIGHT_MIN",
           "SanityReport",
           "axes_spec", "check_skeletons", "parse_axes", "rotation_to_y_up", "sample_evenly"]
