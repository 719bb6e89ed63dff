"""What a run that writes some conventions does with each clip of its source, given what the cache holds.

``msclr extract`` and ``msclr import`` fill new caches and add conventions to existing ones with the same
rules (clips are matched by name):

- a clip the cache does not have is stored as a new clip only when the run writes *every* convention of the
  cache (otherwise it would lack some): :attr:`Decision.NEW`, else refused as :attr:`Decision.NOT_IN_CACHE`;
- a clip stored with a failure status is retried when the run writes every convention
  (:attr:`Decision.RETRY`), else refused (:attr:`Decision.FAILED_IN_CACHE`);
- an ok clip that already holds every convention of the run is skipped (:attr:`Decision.DONE`: resume);
- an ok clip that lacks some gets them as an addition record (:attr:`Decision.ADD`), unless the source gives
  it another label than the cache (:attr:`Decision.LABEL_DIFFERS`; an unknown label, -1, on either side
  never conflicts).

Refusals are reported per clip by the callers; nothing is written for them.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

from msclr.pipeline.cache.clip import ClipStatus
from msclr.pipeline.cache.reader import Cache


class Decision(str, enum.Enum):  # noqa: UP042 - a str mixin, like ClipStatus
    """What to do with one clip of a source."""

    NEW = "new"
    RETRY = "retry"
    ADD = "add"
    DONE = "done"
    NOT_IN_CACHE = "not_in_cache"
    FAILED_IN_CACHE = "failed_in_cache"
    LABEL_DIFFERS = "label_differs"

    def __str__(self) -> str:
        return self.value

    @property
    def refused(self) -> bool:
        """True for the decisions that write nothing and are reported."""
        return self in (Decision.NOT_IN_CACHE, Decision.FAILED_IN_CACHE, Decision.LABEL_DIFFERS)


class MergePlan:
    """The per-clip decisions of a run that writes ``conventions`` into ``cache``.

    Args:
        cache: the cache, opened after the run's :class:`CacheWriter` (so that its manifest lists the run's
            conventions).
        conventions: the names of the conventions the run writes.

    Attributes:
        full: the run writes every convention of the cache (new clips may be stored).
        missing: the cache's conventions the run does not write.
    """

    def __init__(self, cache: Cache, conventions: Iterable[str]) -> None:
        self.conventions = list(conventions)
        self.missing = [c for c in cache.skeletons if c not in self.conventions]
        self.full = not self.missing
        self._statuses = cache.statuses()
        ok = cache.names
        self._labels = dict(zip(ok, cache.metadata(ok)["label"].tolist(), strict=True)) if ok else {}
        self._held = {c: set(cache.by_convention.get(c, ())) for c in self.conventions}

    def decide(self, name: str, label: int = -1) -> tuple[Decision, str]:
        """(decision, reason) for clip ``name`` whose source gives ``label`` (-1: none); the reason is empty
        unless the clip is refused."""
        status = self._statuses.get(name, (None, ""))[0]
        if status is None:
            if self.full:
                return Decision.NEW, ""
            return Decision.NOT_IN_CACHE, (
                f"not in the cache; this run writes {', '.join(self.conventions)} only, so the clip would lack "
                f"{', '.join(self.missing)} (clips are matched by name)")
        if status != ClipStatus.OK:
            if self.full:
                return Decision.RETRY, ""
            return Decision.FAILED_IN_CACHE, f"stored with status {status!r}; conventions are added to ok clips only"
        if all(name in held for held in self._held.values()):
            return Decision.DONE, ""
        stored = self._labels.get(name, -1)
        if label >= 0 and stored >= 0 and label != stored:
            return Decision.LABEL_DIFFERS, f"label {label} here but {stored} in the cache; nothing added"
        return Decision.ADD, ""

    def status(self, name: str) -> tuple[str, str] | None:
        """(status, message) of the clip record of ``name`` in the cache, or None when it has none."""
        return self._statuses.get(name)

    def stored(self, name: str) -> None:
        """Note that ``name`` now holds every convention of the run (a name given twice is then DONE)."""
        self._statuses[name] = (ClipStatus.OK, "")
        for held in self._held.values():
            held.add(name)


__all__ = ["Decision", "MergePlan"]
