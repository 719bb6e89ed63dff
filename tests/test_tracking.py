"""Person tracking: optimal assignment, identities under detection-order swaps, gaps, a third person."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from msclr.extractors.base import FrameDetections
from msclr.extractors.tracking import (
    TrackerConfig,
    assign_slots,
    box_iou,
    linear_assignment,
    link_tracks,
    track_people,
)

V = 3
CONV = {"toy": V}


def person(x: float, score: float = 0.9, z: float = 3.0, tag: float | None = None) -> dict:
    """A person at horizontal position x (metres; box in pixels = 100 x), tagged by a pose value."""
    tag = x if tag is None else tag
    return {"box": [100 * x, 0, 80, 200], "score": score, "root": [x, 0.0, z], "tag": tag}


def frame(*people: dict) -> FrameDetections:
    if not people:
        return FrameDetections.empty(CONV)
    return FrameDetections(
        boxes=np.array([p["box"] for p in people], np.float32),
        scores=np.array([p["score"] for p in people], np.float32),
        poses={"toy": np.stack([np.full((V, 3), p["tag"], np.float32) for p in people])},
        roots=np.array([p["root"] for p in people], np.float32),
    )


def test_linear_assignment_is_optimal() -> None:
    rng = np.random.default_rng(0)
    for n, m in [(1, 1), (2, 3), (3, 2), (4, 4), (5, 3)]:
        cost = rng.random((n, m))
        pairs = linear_assignment(cost)
        assert len(pairs) == min(n, m)
        assert len({r for r, _ in pairs}) == len({c for _, c in pairs}) == len(pairs)
        got = sum(cost[r, c] for r, c in pairs)
        # brute force over all injective maps
        k = min(n, m)
        brute = min(
            sum(cost[r, c] for r, c in zip(rows, cols, strict=True))
            for rows in itertools.combinations(range(n), k)
            for cols in itertools.permutations(range(m), k)
        )
        assert got == pytest.approx(brute)
    assert linear_assignment(np.zeros((0, 3))) == []


def test_box_iou() -> None:
    a = np.array([[0, 0, 10, 10]], np.float32)
    b = np.array([[5, 0, 10, 10], [20, 20, 5, 5], [0, 0, 10, 10]], np.float32)
    np.testing.assert_allclose(box_iou(a, b), [[50 / 150, 0.0, 1.0]])


def test_identities_kept_when_detection_order_swaps() -> None:
    frames = []
    for t in range(12):
        pa = person(-1.0 + 0.02 * t, 0.95, tag=-1.0)
        pb = person(1.0 - 0.02 * t, 0.9, tag=1.0)
        frames.append(frame(pa, pb) if t % 2 == 0 else frame(pb, pa))
    out = track_people(frames, CONV, max_persons=2)
    assert out.persons == 2 and out.dropped == 0
    tags = out.poses["toy"][:, :, 0, 0]
    # slot 0 is the more salient person (a, score 0.95) in every frame
    np.testing.assert_array_equal(tags[:, 0], -1.0)
    np.testing.assert_array_equal(tags[:, 1], 1.0)
    np.testing.assert_allclose(out.scores[:, 0], 0.95)
    np.testing.assert_allclose(out.scores[:, 1], 0.9)


def test_crossing_people_follow_3d_roots() -> None:
    # Boxes overlap while the two pass each other, depth keeps them apart.
    frames = []
    for t in range(10):
        x = -0.5 + 0.1 * t
        near = {"box": [100 * x, 0, 80, 200], "score": 0.9, "root": [x, 0, 2.0], "tag": 2.0}
        far = {"box": [-100 * x, 0, 80, 200], "score": 0.8, "root": [-x, 0, 4.0], "tag": 4.0}
        frames.append(frame(far, near) if t % 3 else frame(near, far))
    out = track_people(frames, CONV, 2)
    np.testing.assert_array_equal(out.poses["toy"][:, 0, 0, 0], 2.0)
    np.testing.assert_array_equal(out.poses["toy"][:, 1, 0, 0], 4.0)


def test_empty_frames_and_short_gaps_keep_the_slot() -> None:
    frames = [frame(person(0.0)), frame(), frame(), frame(person(0.05)), frame(person(0.1))]
    out = track_people(frames, CONV, 2)
    assert out.tracks == 1 and out.persons == 1
    np.testing.assert_array_equal(out.scores[:, 0] > 0, [True, False, False, True, True])
    assert np.all(out.poses["toy"][[1, 2]] == 0) and np.all(out.poses["toy"][:, 1] == 0)


def test_long_gap_fragments_rejoin_their_slot() -> None:
    cfg = TrackerConfig(max_gap=2)
    frames = ([frame(person(-1.0, tag=-1), person(1.0, tag=1)) for _ in range(5)]
              + [frame(person(1.0, tag=1)) for _ in range(6)]  # left person occluded for 6 frames
              + [frame(person(-1.0, tag=-1), person(1.0, tag=1)) for _ in range(5)])
    out = track_people(frames, CONV, 2, cfg)
    assert out.tracks == 3 and out.dropped == 0 and out.persons == 2
    tags = out.poses["toy"][:, :, 0, 0]
    assert set(np.unique(tags[:, 0])) == {1.0}  # the always-visible person is the most salient
    assert set(np.unique(tags[:, 1])) == {-1.0, 0.0}  # both fragments of the other in slot 1


def test_third_person_is_dropped() -> None:
    frames = []
    for t in range(20):
        people = [person(-1.5, 0.9, tag=1), person(0.0, 0.85, tag=2)]
        if 5 <= t < 9:  # a bystander for a few frames, detected first
            people.insert(0, person(1.5, 0.95, tag=3))
        frames.append(frame(*people))
    out = track_people(frames, CONV, 2)
    assert out.tracks == 3 and out.dropped == 1 and out.persons == 2
    assert 3.0 not in out.poses["toy"]
    np.testing.assert_array_equal(out.poses["toy"][:, 0, 0, 0], 1.0)
    np.testing.assert_array_equal(out.poses["toy"][:, 1, 0, 0], 2.0)


def test_single_slot_keeps_most_salient() -> None:
    frames = [frame(person(0.0, 0.5, tag=1), person(2.0, 0.9, tag=2)) for _ in range(4)]
    out = track_people(frames, CONV, 1)
    np.testing.assert_array_equal(out.poses["toy"][:, 0, 0, 0], 2.0)
    assert out.dropped == 1


def test_unknown_roots_use_boxes_only() -> None:
    def f(x: float, tag: float) -> dict:
        return {"box": [100 * x, 0, 80, 200], "score": 0.9, "root": [np.nan] * 3, "tag": tag}
    frames = [frame(f(0.0, 1), f(3.0, 2)), frame(f(3.05, 2), f(0.05, 1)), frame(f(0.1, 1), f(3.1, 2))]
    out = track_people(frames, CONV, 2)
    np.testing.assert_array_equal(out.poses["toy"][:, 0, 0, 0], 1.0)
    np.testing.assert_array_equal(out.poses["toy"][:, 1, 0, 0], 2.0)


def test_assign_slots_empty() -> None:
    assert assign_slots([], 2) == [[], []]
    assert link_tracks([frame(), frame()]) == []
    out = track_people([frame(), frame()], CONV, 2)
    assert out.persons == 0 and out.poses["toy"].shape == (2, 2, V, 3) and not out.scores.any()
