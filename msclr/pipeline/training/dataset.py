"""Training arrays from a cache: splits, labels and in-memory ``(N, 3, T, V, M)`` arrays per convention.

Every convention's array has the same row order (row i is the same clip in every convention), so a batch of
clip indices can be taken from any convention.  Arrays are built once with
:func:`msclr.pipeline.preprocess.preprocess_cache` (centring, temporal resize to ``length`` frames, optional
y-rotation) and kept in memory: NTU-60 X-Sub with ``kinectv2_25`` + ``smplx_42`` is about 3.2 GB float32.

Split names: a *family* ``xsub`` means the cache's ``xsub_train`` / ``xsub_val`` splits; a full name
``xsub_train`` is accepted too.  With no split given and exactly one ``*_train`` / ``*_val`` pair in the cache,
that pair is used; with no pair at all, training makes an automatic one (:func:`automatic_split`:
stratified 80/20, seeded).  Only clips that hold every requested convention are used (:func:`usable_names`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from msclr.errors import CacheError, MsclrError
from msclr.skeletons import Skeleton

TEST_SUFFIXES = ("_val", "_test")
AUTO_FAMILY = "auto"
"""Split family of an automatic split (``auto_train`` / ``auto_test``), made when the cache has none."""
AUTO_TEST_FRACTION = 0.2


@dataclass
class SplitData:
    """One split of a cache, preprocessed.

    Attributes:
        names: clip names in row order.
        labels: (N,) int64, 0-based, -1 for unlabelled clips.
        arrays: convention -> (N, 3, length, V, M) float32, metres (centred when configured).
    """

    names: list[str]
    labels: np.ndarray
    arrays: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.names)

    def labelled(self) -> SplitData:
        """The clips with a label (label >= 0)."""
        keep = np.flatnonzero(self.labels >= 0)
        return SplitData([self.names[i] for i in keep], self.labels[keep],
                         {k: v[keep] for k, v in self.arrays.items()})


def split_families(splits: dict[str, list[str]]) -> list[str]:
    """Families with a ``*_train`` and a ``*_val`` / ``*_test`` split in ``splits``."""
    families = sorted({s[: -len("_train")] for s in splits if s.endswith("_train")})
    return [f for f in families if any(f + t in splits for t in TEST_SUFFIXES)]


def resolve_split(splits: dict[str, list[str]], split: str) -> tuple[str, str]:
    """``(train_split, test_split)`` names for a split family / name; :class:`MsclrError` listing what exists."""
    from msclr.errors import closest

    available = sorted(splits)
    families = sorted({s[: -len("_train")] for s in available if s.endswith("_train")})
    hint = (f"available splits: {', '.join(available)}" if available else
            "the cache has no splits.json; write splits with the importer (msclr import ... writes NTU/pyskl "
            "splits) or CacheWriter.set_splits")
    if not split:
        pairs = split_families(splits)
        if len(pairs) == 1:
            split = pairs[0]
        else:
            raise MsclrError(f"choose a split with --split NAME ({hint}; families: {', '.join(families) or 'none'}).")
    family = split[: -len("_train")] if split.endswith("_train") else split
    train = family + "_train"
    tests = [family + t for t in TEST_SUFFIXES if family + t in splits]
    if train not in splits or not tests:
        raise MsclrError(f"split {split!r}{closest(family, families)} needs '{train}' and '{family}_val' in the "
                         f"cache; {hint}.")
    return train, tests[0]


def check_conventions(cache_skeletons: dict[str, Skeleton], conventions: Sequence[str]) -> list[Skeleton]:
    """The cache's definitions of ``conventions``; :class:`CacheError` naming the missing ones."""
    from msclr.errors import closest

    missing = [c for c in conventions if c not in cache_skeletons]
    if missing:
        raise CacheError(f"the cache has no {', '.join(missing)} skeletons{closest(missing[0], cache_skeletons)}; "
                         f"it holds: {', '.join(cache_skeletons)}. Choose with --skeletons a,b, or extract them.")
    return [cache_skeletons[c] for c in conventions]


def usable_names(cache: Any, conventions: Sequence[str]) -> list[str]:
    """The cache's ``ok`` clips that hold poses of every convention in ``conventions`` (sorted; a cache may hold
    some conventions for some clips only)."""
    return list(cache.names_with(list(conventions)))


def automatic_split(cache: Any, names: Sequence[str], *, seed: int) -> tuple[list[str], list[str]]:
    """A stratified 80/20 (:data:`AUTO_TEST_FRACTION`) split of ``names`` by label, seeded
    (:func:`msclr.pipeline.datasets.splits.stratified_split`; unlabelled clips go to train)."""
    from msclr.pipeline.datasets.splits import stratified_split

    labels = [int(v) if v >= 0 else None for v in cache.metadata(list(names))["label"]] if names else []
    return stratified_split(list(names), labels, test=AUTO_TEST_FRACTION, seed=seed)


def load_split(cache: Any, names: Sequence[str], conventions: Sequence[str], *, length: int = 50,
               centre: bool = True, y_rotation: bool = False, mean_pose: bool = False,
               progress: Callable[[int], None] | None = None) -> SplitData:
    """Preprocess ``names`` (restricted to the cache's ``ok`` clips, order kept) in every convention.

    Args:
        cache: a :class:`msclr.pipeline.cache.Cache`.
        names: clip names of the split.
        conventions: conventions to load.
        length, centre, y_rotation, mean_pose: preprocessing options (see :mod:`msclr.pipeline.preprocess`).
        progress: called with the number of clips done after each chunk (summed over conventions).
    """
    from msclr.pipeline.preprocess import preprocess_cache

    check_conventions(cache.skeletons, conventions)
    ok = set(usable_names(cache, conventions))
    kept = [n for n in names if n in ok]
    if not kept:
        raise MsclrError(f"none of the {len(names)} clips of this split is an 'ok' clip of the cache holding "
                         f"{', '.join(conventions)}; check the split names against `msclr info CACHE`.")
    labels = np.asarray(cache.metadata(kept)["label"], dtype=np.int64)
    arrays = {c: preprocess_cache(cache, c, kept, length=length, centre=centre, y_rotation=y_rotation,
                                  mean_pose=mean_pose, allow_empty=True, progress=progress)
              for c in conventions}
    return SplitData(kept, labels, arrays)


def class_names(cache_classes: Sequence[str] | None, *label_arrays: np.ndarray) -> list[str]:
    """Class names of the cache, or ``class_<i>`` up to the largest label seen."""
    top = max((int(a.max()) for a in label_arrays if len(a)), default=-1)
    if cache_classes:
        if top >= len(cache_classes):
            raise CacheError(f"label {top} exceeds the cache's {len(cache_classes)} class names; "
                             "fix the labels or the classes list of the cache.")
        return list(cache_classes)
    return [f"class_{i}" for i in range(top + 1)]


__all__ = ["AUTO_FAMILY", "SplitData", "automatic_split", "check_conventions", "class_names", "load_split",
           "resolve_split", "split_families", "usable_names"]
