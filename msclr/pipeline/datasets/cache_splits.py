"""``msclr split``: write a stratified, seeded train/test pair of splits into a cache.

The pair is stored as ``NAME_train`` / ``NAME_val``, the way NTU's splits are named (``xsub_train`` /
``xsub_val``), so ``msclr train --split NAME`` finds it.  Three ways to split the cache's ok clips:

- ``random``: per class, a seeded shuffle puts ``test`` of its clips on the test side
  (:func:`msclr.pipeline.datasets.splits.stratified_split`);
- ``subject``: the same, but all the clips of one subject stay on one side (the cache's ``subject`` field,
  given by NTU names and NTU imports);
- a regular expression: the clips whose name matches it (``re.search``) are the test side, e.g. ``_s[2468]_``
  for UTD-MHAD's even subjects.

The splits file is rewritten atomically (temporary file, fsync, rename); a pair that exists already is kept
unless ``force``.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from msclr.errors import MsclrError
from msclr.pipeline.datasets.splits import stratified_split

DEFAULT_NAMES = {"random": "random", "subject": "subject"}
"""Default pair name per way of splitting; a regular expression gives ``custom``."""


@dataclass
class SplitResult:
    """What :func:`split_cache` wrote.

    Attributes:
        name: the pair's name (splits ``name_train`` and ``name_val``).
        by: ``"random"``, ``"subject"`` or the regular expression.
        train, test: the clip names on each side.
        classes: labelled classes of the cache's ok clips.
        one_sided: classes with two or more clips that have no clip on one side (possible with subjects).
        test_groups: the subjects on the test side (``by="subject"``).
        unlabelled: unlabelled clips (all on the train side for ``random`` / ``subject``).
    """

    name: str
    by: str
    train: list[str]
    test: list[str]
    classes: int = 0
    one_sided: list[int] = field(default_factory=list)
    test_groups: list[int] = field(default_factory=list)
    unlabelled: int = 0

    @property
    def splits(self) -> tuple[str, str]:
        """The names of the two splits written."""
        return f"{self.name}_train", f"{self.name}_val"


def compile_pattern(by: str) -> re.Pattern[str]:
    """The regular expression of ``--by``; :class:`MsclrError` (one line) when it does not compile."""
    try:
        return re.compile(by)
    except re.error as err:
        raise MsclrError(f"--by {by!r} is neither random, subject nor a valid regular expression ({err})") from None


def _sides(by: str, names: list[str], labels: list[int | None], subjects: list[int], test: float,
           seed: int) -> tuple[list[str], list[str]]:
    if by == "random":
        return stratified_split(names, labels, test=test, seed=seed)
    if by == "subject":
        if all(s < 0 for s in subjects):
            raise MsclrError("the cache's clips carry no subject numbers (NTU names and NTU imports give them); "
                             "split with --by random, or with a regular expression on the clip names "
                             "(e.g. --by '_s[2468]_')")
        groups = [f"subject {s}" if s >= 0 else None for s in subjects]
        return stratified_split(names, labels, test=test, seed=seed, groups=groups)
    pattern = compile_pattern(by)
    test_side = [n for n in names if pattern.search(n)]
    if not test_side or len(test_side) == len(names):
        what = "no clip" if not test_side else f"all {len(names)} clips"
        raise MsclrError(f"--by {by!r} matches {what} of the cache (e.g. {names[0]!r}); the matching clips "
                         "form the test side, so it must match some but not all")
    chosen = set(test_side)
    return [n for n in names if n not in chosen], test_side


def split_cache(root: str | os.PathLike[str], *, by: str = "random", test: float = 0.2, seed: int = 0,
                name: str | None = None, force: bool = False) -> SplitResult:
    """Write the splits ``NAME_train`` / ``NAME_val`` of the cache at ``root`` (see the module docstring).

    Args:
        by: ``"random"``, ``"subject"`` or a regular expression on clip names (matches: test side).
        test: fraction of each class's clips on the test side (``random`` / ``subject``), 0 < test < 1.
        seed: the same seed gives the same split.
        name: the pair's name (default: ``random``, ``subject`` or ``custom``).
        force: replace a pair of the same name.

    Raises:
        MsclrError: no ok clip, no subjects for ``subject``, a regular expression that does not compile or
            matches no clip / every clip, a pair that exists (without ``force``), ``test`` outside (0, 1).
    """
    from msclr.pipeline.cache import Cache

    cache = Cache(Path(root))
    names = list(cache.names)
    if not names:
        raise MsclrError(f"cache {root} has no usable clips to split")
    pair = name or DEFAULT_NAMES.get(by, "custom")
    if not pair.strip() or pair != pair.strip():
        raise MsclrError(f"--name {pair!r} must be a non-empty name without surrounding spaces")
    meta = cache.metadata(names)
    labels = [int(v) if v >= 0 else None for v in meta["label"].tolist()]
    subjects = [int(v) for v in meta["subject"].tolist()]
    train, test_side = _sides(by, names, labels, subjects, test, seed)
    result = SplitResult(pair, by, train, test_side, unlabelled=sum(lab is None for lab in labels))
    side = dict.fromkeys(test_side, 1)
    per_class: dict[int, set[int]] = {}
    for n, lab in zip(names, labels, strict=True):
        if lab is not None:
            per_class.setdefault(lab, set()).add(side.get(n, 0))
    counts = Counter(lab for lab in labels if lab is not None)
    result.classes = len(per_class)
    result.one_sided = sorted(lab for lab, sides in per_class.items() if len(sides) < 2 and counts[lab] >= 2)
    if by == "subject":
        result.test_groups = sorted({s for n, s in zip(names, subjects, strict=True) if n in side and s >= 0})
    cache.add_splits(dict(zip(result.splits, (train, test_side), strict=True)), replace=force)
    return result


__all__ = ["DEFAULT_NAMES", "SplitResult", "compile_pattern", "split_cache"]
