"""Stratified, seeded train/test splits of clip names (pure Python and NumPy; no file is read or written).

:func:`stratified_split` is what ``msclr split`` writes into a cache, and what training uses to make an
automatic split when a cache has none.

Rules, in order of priority:

1. The result depends only on the clips (names, labels, groups) and the seed, never on their input order.
2. Unlabelled clips (label None) go to train: a test clip must have a label to be scored.
3. With ``groups``, the labelled clips of one group (e.g. one subject) are all on the same side.
4. Every class with two or more labelled clips has at least one on each side (with groups: whenever the
   groups allow it).
5. Each class, and the whole set, puts as close to ``test`` of its labelled clips on the test side as rule 3
   allows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from msclr.errors import MsclrError

_MISSING_SIDE = 1000.0
"""Cost of a class with two or more clips that has no clip on one side (dominates any imbalance)."""
_RESTARTS = 8
_MANY_GROUPS = 500
"""With more groups than this, one greedy start (not :data:`_RESTARTS`) and at most :data:`_MAX_MOVES` moves."""
_MAX_MOVES = 500
_SWAP_LIMIT = 4_000_000
"""Pairwise group swaps are tried when (test groups x train groups x classes) is at most this."""


def _checked(names: Sequence[str], labels: Sequence[int | None], test: float,
             groups: Sequence[str | None] | None) -> None:
    if not isinstance(test, int | float) or isinstance(test, bool) or not 0.0 < float(test) < 1.0:
        raise MsclrError(f"the test fraction must be between 0 and 1 (exclusive), got {test!r}")
    if len(labels) != len(names):
        raise MsclrError(f"{len(names)} clip names but {len(labels)} labels; give one label (or None) per clip")
    if groups is not None and len(groups) != len(names):
        raise MsclrError(f"{len(names)} clip names but {len(groups)} groups; give one group (or None) per clip")
    if len(set(names)) != len(names):
        dup = next(n for i, n in enumerate(names) if n in names[:i])
        raise MsclrError(f"clip name {dup!r} appears more than once; clip names must be unique")
    bad = [lab for lab in labels if lab is not None and (isinstance(lab, bool) or not isinstance(lab, int | np.integer))]
    if bad:
        raise MsclrError(f"labels must be integers or None, got {bad[0]!r}")


def _groups_matter(labels: Sequence[int | None], groups: Sequence[str | None]) -> bool:
    """True when some group holds two or more labelled clips (otherwise groups constrain nothing)."""
    seen: set[str] = set()
    for group, label in zip(groups, labels, strict=True):
        if label is not None and group is not None:
            if group in seen:
                return True
            seen.add(group)
    return False


def _n_test(count: int, test: float) -> int:
    """Test clips of a class of ``count`` labelled clips: the rounded share, at least 1 and at most count - 1."""
    if count < 2:
        return 0
    return min(max(int(math.floor(count * test + 0.5)), 1), count - 1)


def _by_class(names: Sequence[str], labels: Sequence[int | None], test: float, seed: int) -> set[str]:
    """Test names without groups: per class (in label order), a seeded shuffle of its sorted names."""
    rng = np.random.default_rng(seed)
    classes: dict[int, list[str]] = {}
    for name, label in zip(names, labels, strict=True):
        if label is not None:
            classes.setdefault(int(label), []).append(name)
    chosen: set[str] = set()
    for label in sorted(classes):
        members = sorted(classes[label])
        order = rng.permutation(len(members))
        chosen.update(members[i] for i in order[:_n_test(len(members), test)])
    return chosen


class _GroupCost:
    """Cost of a test-side class histogram: missing sides, per-class and overall deviation from the target.

    ``counts`` is (G, C): labelled clips of each group (row) in each class (column).
    """

    def __init__(self, counts: np.ndarray, test: float) -> None:
        self.counts = counts
        self.total = counts.sum(axis=0).astype(np.float64)  # (C,)
        self.target = self.total * test
        self.needs_both = self.total >= 2
        self.scale = np.maximum(self.total, 1.0)
        self.n_all = max(float(self.total.sum()), 1.0)
        self.t_all = float(self.total.sum()) * test

    def __call__(self, test_counts: np.ndarray) -> np.ndarray:
        """Cost of each row of ``test_counts`` (..., C) -> (...)."""
        missing = self.needs_both & ((test_counts == 0) | (test_counts == self.total))
        dev = ((test_counts - self.target) ** 2 / self.scale).sum(axis=-1)
        overall = (test_counts.sum(axis=-1) - self.t_all) ** 2 / self.n_all
        return _MISSING_SIDE * missing.sum(axis=-1) + dev + overall


def _improve(side: np.ndarray, cost: _GroupCost) -> tuple[np.ndarray, float]:
    """Local search from ``side`` (G,) bool (True = test): best single flips, then best pairwise swaps."""
    counts = cost.counts
    sign = np.where(side, -1.0, 1.0)
    current = counts[side].sum(axis=0).astype(np.float64)
    best = float(cost(current))
    for _ in range(_MAX_MOVES):
        flips = cost(current[None, :] + sign[:, None] * counts)  # (G,)
        g = int(np.argmin(flips))
        if flips[g] < best - 1e-12:
            current = current + sign[g] * counts[g]
            side[g] = not side[g]
            sign[g] = -sign[g]
            best = float(flips[g])
            continue
        tests, trains = np.flatnonzero(side), np.flatnonzero(~side)
        if len(tests) * len(trains) * counts.shape[1] > _SWAP_LIMIT or not len(tests) or not len(trains):
            break
        moved = current[None, None, :] - counts[tests][:, None, :] + counts[trains][None, :, :]
        swaps = cost(moved)  # (test groups, train groups)
        i, j = np.unravel_index(int(np.argmin(swaps)), swaps.shape)
        if swaps[i, j] >= best - 1e-12:
            break
        side[tests[i]], side[trains[j]] = False, True
        sign = np.where(side, -1.0, 1.0)
        current = moved[i, j]
        best = float(swaps[i, j])
    return side, best


def _by_group(labels: Sequence[int | None], groups: Sequence[str | None], names: Sequence[str],
              test: float, seed: int) -> set[str]:
    """Test names with groups: whole groups of labelled clips, chosen by seeded greedy starts + local search."""
    keys = [g if g is not None else f"\0clip:{n}" for g, n in zip(groups, names, strict=True)]
    labelled = [i for i, lab in enumerate(labels) if lab is not None]
    group_names = sorted({keys[i] for i in labelled})
    class_ids = sorted({int(labels[i]) for i in labelled})  # type: ignore[arg-type]
    if not group_names:
        return set()
    g_index = {g: k for k, g in enumerate(group_names)}
    c_index = {c: k for k, c in enumerate(class_ids)}
    counts = np.zeros((len(group_names), len(class_ids)), dtype=np.float64)
    for i in labelled:
        counts[g_index[keys[i]], c_index[int(labels[i])]] += 1  # type: ignore[arg-type]
    cost = _GroupCost(counts, test)
    rng = np.random.default_rng(seed)
    best_side, best_cost = None, math.inf
    for _ in range(_RESTARTS if len(group_names) <= _MANY_GROUPS else 1):
        side = np.zeros(len(group_names), dtype=bool)
        current = np.zeros(len(class_ids))
        now = float(cost(current))
        for g in rng.permutation(len(group_names)):  # greedy: move a group to test when that lowers the cost
            moved = float(cost(current + counts[g]))
            if moved < now:
                side[g], current, now = True, current + counts[g], moved
        side, value = _improve(side, cost)
        if value < best_cost - 1e-12:
            best_side, best_cost = side.copy(), value
    assert best_side is not None
    test_groups = {group_names[k] for k in np.flatnonzero(best_side)}
    return {names[i] for i in labelled if keys[i] in test_groups}


def stratified_split(names: Sequence[str], labels: Sequence[int | None], *, test: float = 0.2, seed: int = 0,
                     groups: Sequence[str | None] | None = None) -> tuple[list[str], list[str]]:
    """Split clip names into (train, test), stratified by label and seeded.

    Args:
        names: unique clip names.
        labels: one class index per clip, or None for an unlabelled clip (it goes to train).
        test: fraction of each class's labelled clips to put on the test side, 0 < test < 1.
        seed: the same seed and clips give the same split, whatever their input order.
        groups: optional group per clip (e.g. the subject); the labelled clips of one group stay on one side,
            a None group is the clip alone.  Groups are chosen to match ``test`` per class as well as possible.

    Returns:
        (train names, test names), each in the input order; together they hold every name once.

    Raises:
        MsclrError: mismatched lengths, duplicate names, a non-integer label or ``test`` outside (0, 1).
    """
    names = [str(n) for n in names]
    labels = list(labels)
    _checked(names, labels, test, groups)
    if groups is None or not _groups_matter(labels, groups):
        chosen = _by_class(names, labels, float(test), seed)
    else:
        chosen = _by_group(labels, list(groups), names, float(test), seed)
    return [n for n in names if n not in chosen], [n for n in names if n in chosen]


__all__ = ["stratified_split"]
