"""Associate per-frame detections into at most M stable person slots.

Pose backends return people per frame in detector order, which changes from frame to frame
(MeTRAbs: order after NMS; MS-CLR's extraction kept that order, so its "person 0" jumps between
people).  msclr tracks instead, in two stages:

1. **Online association** (:func:`link_tracks`): frame by frame, live tracks are matched to the
   detections by an optimal assignment (Hungarian algorithm, :func:`linear_assignment`) on
   ``cost = (1 - IoU(last box, box)) + min(root distance / root_scale, 1)``.  A pair is allowed only
   if its boxes overlap (IoU >= ``min_iou``) or its 3D roots are within ``max_root_distance`` metres
   (roots that are unknown, NaN, fall back to the box test alone).  A track not matched for more than
   ``max_gap`` frames ends; unmatched detections start new tracks.
2. **Slot packing** (:func:`assign_slots`): tracks are ranked by salience (sum of the per-frame
   scores, i.e. long and confident tracks first; ties by first frame) and placed greedily into M
   lanes: a track goes to the first lane (slot) where it overlaps no frame already taken, the lane
   whose last track ended nearest in space when several fit.  So fragments of one person broken by a
   long occlusion usually re-join their slot, and a third person (or a false detection) is dropped
   whenever it coexists with two more salient tracks.  Slot 0 holds the most salient track.

All functions are pure NumPy; times are positions in the frame sequence (not source indices).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from msclr.extractors.base import FrameDetections

_BIG = 1e9


def linear_assignment(cost: np.ndarray) -> list[tuple[int, int]]:
    """Minimum-cost assignment of rows to columns (Hungarian algorithm, O(n^2 m)).

    Args:
        cost: ``(n, m)`` finite costs.

    Returns:
        ``min(n, m)`` pairs ``(row, col)``, each row and column used at most once, sorted by row.
    """
    cost = np.asarray(cost, dtype=np.float64)
    if cost.size == 0:
        return []
    transposed = cost.shape[0] > cost.shape[1]
    a = cost.T if transposed else cost
    n, m = a.shape
    u = np.zeros(n + 1)
    v = np.zeros(m + 1)
    p = np.zeros(m + 1, dtype=np.int64)  # p[j]: row (1-based) matched to column j
    way = np.zeros(m + 1, dtype=np.int64)
    for i in range(1, n + 1):
        p[0] = i
        j0 = 0
        minv = np.full(m + 1, np.inf)
        used = np.zeros(m + 1, dtype=bool)
        while True:
            used[j0] = True
            i0 = p[j0]
            cur = a[i0 - 1] - u[i0] - v[1:]
            free = ~used[1:]
            better = free & (cur < minv[1:])
            minv[1:][better] = cur[better]
            way[1:][better] = j0
            candidates = np.where(free, minv[1:], np.inf)
            j1 = int(np.argmin(candidates)) + 1
            delta = candidates[j1 - 1]
            u[p[used]] += delta
            v[used] -= delta
            minv[1:][free] -= delta
            j0 = j1
            if p[j0] == 0:
                break
        while True:
            j1 = way[j0]
            p[j0] = p[j1]
            j0 = j1
            if j0 == 0:
                break
    pairs = [(int(p[j]) - 1, j - 1) for j in range(1, m + 1) if p[j] != 0]
    if transposed:
        pairs = [(c, r) for r, c in pairs]
    return sorted(pairs)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of ``(n, 4)`` and ``(m, 4)`` ``[left, top, width, height]`` boxes -> ``(n, m)``."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    ax2, ay2 = a[:, 0] + a[:, 2], a[:, 1] + a[:, 3]
    bx2, by2 = b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    iw = np.clip(np.minimum(ax2[:, None], bx2[None]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    ih = np.clip(np.minimum(ay2[:, None], by2[None]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = iw * ih
    area_a = np.clip(a[:, 2], 0, None) * np.clip(a[:, 3], 0, None)
    area_b = np.clip(b[:, 2], 0, None) * np.clip(b[:, 3], 0, None)
    union = area_a[:, None] + area_b[None] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


@dataclass
class TrackerConfig:
    """Association settings (see the module docstring).

    Attributes:
        max_gap: frames a track may go undetected and still be continued.
        max_reid_distance: metres between the end of one track and the start of another for slot
            packing to treat them as the same person.
        min_iou: smallest box IoU that allows a match on its own.
        max_root_distance: metres; roots closer than this allow a match on their own.
        root_scale: metres of root motion that cost as much as a full box mismatch.
    """

    max_gap: int = 15
    min_iou: float = 0.1
    max_root_distance: float = 0.5
    root_scale: float = 0.5
    max_reid_distance: float = 1.0


@dataclass
class Track:
    """One person's detections: ``frames[k]`` (sequence position) -> ``detections[k]`` (index in that frame)."""

    frames: list[int] = field(default_factory=list)
    detections: list[int] = field(default_factory=list)
    score: float = 0.0
    box: np.ndarray | None = None  # last matched box / root
    root: np.ndarray | None = None
    first_box: np.ndarray | None = None
    first_root: np.ndarray | None = None

    @property
    def first(self) -> int:
        return self.frames[0]

    @property
    def last(self) -> int:
        return self.frames[-1]


def link_tracks(frames: Sequence[FrameDetections], config: TrackerConfig | None = None) -> list[Track]:
    """Online association of detections into tracks (stage 1)."""
    cfg = config or TrackerConfig()
    finished: list[Track] = []
    live: list[Track] = []
    for t, det in enumerate(frames):
        still = []
        for tr in live:
            (still if t - tr.last <= cfg.max_gap else finished).append(tr)
        live = still
        n = len(det)
        matched: set[int] = set()
        if live and n:
            boxes = np.stack([tr.box for tr in live])
            iou = box_iou(boxes, det.boxes)
            roots = np.stack([tr.root for tr in live]).astype(np.float64)
            dist = np.linalg.norm(roots[:, None, :] - det.roots[None].astype(np.float64), axis=-1)
            known = np.isfinite(dist)
            dist_cost = np.where(known, np.minimum(np.where(known, dist, 0.0) / cfg.root_scale, 1.0), 0.0)
            cost = (1.0 - iou) + dist_cost
            allowed = (iou >= cfg.min_iou) | (known & (dist <= cfg.max_root_distance))
            cost = np.where(allowed, cost, _BIG)
            for r, c in linear_assignment(cost):
                if not allowed[r, c]:
                    continue
                tr = live[r]
                tr.frames.append(t)
                tr.detections.append(c)
                tr.score += float(det.scores[c])
                tr.box = det.boxes[c].astype(np.float64)
                tr.root = det.roots[c].astype(np.float64)
                matched.add(c)
        for c in range(n):
            if c not in matched:
                box, root = det.boxes[c].astype(np.float64), det.roots[c].astype(np.float64)
                live.append(Track([t], [c], float(det.scores[c]), box, root, box, root))
    return finished + live


def _affine(early: Track, late: Track, cfg: TrackerConfig) -> bool:
    """Whether ``late`` plausibly continues ``early`` (end of one near the start of the other)."""
    assert early.box is not None and late.first_box is not None
    if box_iou(early.box, late.first_box)[0, 0] >= cfg.min_iou:
        return True
    if early.root is None or late.first_root is None:
        return False
    d = float(np.linalg.norm(early.root - late.first_root))
    return bool(np.isfinite(d) and d <= cfg.max_reid_distance)


def assign_slots(tracks: Sequence[Track], max_persons: int,
                 config: TrackerConfig | None = None) -> list[list[Track]]:
    """Pack tracks into ``max_persons`` lanes (stage 2); lane 0 starts with the most salient track.

    A track goes to a lane it does not overlap in time, preferring (1) a lane whose temporally
    nearest track it plausibly continues (box overlap or 3D distance <= ``max_reid_distance``),
    (2) an empty lane, (3) any lane it fits.  Tracks that fit no lane are dropped.
    """
    cfg = config or TrackerConfig()
    order = sorted(tracks, key=lambda tr: (-tr.score, tr.first, tr.detections[0]))
    lanes: list[list[Track]] = [[] for _ in range(max_persons)]
    taken: list[set[int]] = [set() for _ in range(max_persons)]
    for tr in order:
        span = set(tr.frames)
        fits = [k for k in range(max_persons) if not (taken[k] & span)]
        if not fits:
            continue  # overlaps more salient tracks in every slot: a third person or a false detection
        continuing = []
        for k in fits:
            if not lanes[k]:
                continue
            # The lane's track nearest in time (lanes hold tracks that do not overlap this one).
            gap, nearest = min(
                ((tr.first - o.last) if o.last < tr.first else (o.first - tr.last), i)
                for i, o in enumerate(lanes[k])
            )
            o = lanes[k][nearest]
            early, late = (o, tr) if o.last < tr.first else (tr, o)
            if _affine(early, late, cfg):
                continuing.append((gap, k))
        if continuing:
            k = min(continuing)[1]
        else:
            empty = [k for k in fits if not lanes[k]]
            k = empty[0] if empty else fits[0]
        lanes[k].append(tr)
        taken[k] |= span
    return lanes


@dataclass
class TrackedPoses:
    """Slot-ordered result for one clip.

    Attributes:
        poses: convention -> ``(T, M, V, 3)`` float32 metres (zeros where a slot is empty).
        scores: ``(T, M)`` float32 person score per frame and slot (0 where empty).
        persons: number of slots that hold at least one detection.
        tracks: number of tracks found before packing (diagnostics).
        dropped: tracks left out (a third person, false detections).
    """

    poses: dict[str, np.ndarray]
    scores: np.ndarray
    persons: int
    tracks: int
    dropped: int


def track_people(frames: Sequence[FrameDetections], conventions: dict[str, int], max_persons: int,
                 config: TrackerConfig | None = None) -> TrackedPoses:
    """Link, pack and gather: per-frame detections -> ``(T, M, V, 3)`` per convention.

    Args:
        frames: one :class:`FrameDetections` per frame, in time order.
        conventions: name -> V, the conventions to gather.
        max_persons: M.
    """
    t_len = len(frames)
    tracks = link_tracks(frames, config)
    lanes = assign_slots(tracks, max_persons, config)
    poses = {c: np.zeros((t_len, max_persons, v, 3), np.float32) for c, v in conventions.items()}
    scores = np.zeros((t_len, max_persons), np.float32)
    for m, lane in enumerate(lanes):
        for tr in lane:
            for t, d in zip(tr.frames, tr.detections, strict=True):
                det = frames[t]
                scores[t, m] = det.scores[d]
                for c in conventions:
                    poses[c][t, m] = det.poses[c][d]
    used = sum(1 for lane in lanes if lane)
    kept = sum(len(lane) for lane in lanes)
    return TrackedPoses(poses, scores, used, len(tracks), len(tracks) - kept)


def best_person(frames: Sequence[FrameDetections], conventions: dict[str, int], max_persons: int) -> TrackedPoses:
    """For single-person backends: the best-scored detection of every frame in slot 0, the other
    slots empty (``tracks`` = ``persons``, nothing dropped)."""
    t_len = len(frames)
    poses = {c: np.zeros((t_len, max_persons, v, 3), np.float32) for c, v in conventions.items()}
    scores = np.zeros((t_len, max_persons), np.float32)
    for t, det in enumerate(frames):
        if len(det):
            best = int(np.argmax(det.scores))
            scores[t, 0] = det.scores[best]
            for c in conventions:
                poses[c][t, 0] = det.poses[c][best]
    persons = int(scores[:, 0].max(initial=0) > 0)
    return TrackedPoses(poses, scores, persons, persons, 0)


__all__ = [
    "Track",
    "TrackedPoses",
    "TrackerConfig",
    "assign_slots",
    "best_person",
    "box_iou",
    "link_tracks",
    "linear_assignment",
    "track_people",
]
