"""Exceptions that msclr raises for problems a user can fix.

Every message says what was wrong and how to fix it.  The CLI turns an
:class:`MsclrError` into a one-line error and a non-zero exit status; anything else
is a bug and keeps its traceback.
"""

from __future__ import annotations


class MsclrError(Exception):
    """Base class for user-facing errors (bad input, missing file, wrong option)."""


class SkeletonError(MsclrError):
    """An unknown skeleton name or an invalid skeleton definition."""


class CacheError(MsclrError):
    """A cache that is missing, foreign, truncated or inconsistent."""


class ImportFormatError(MsclrError):
    """A dataset file (NTU ``.skeleton``, pyskl pickle) that cannot be parsed."""


class UnsafePickleError(ImportFormatError):
    """A pickle that would import or call something other than plain data."""


class ExtractionError(MsclrError):
    """A video that cannot be decoded or a pose model that cannot be used."""


class CheckpointError(MsclrError):
    """A training run or checkpoint that is missing, foreign or unsafe."""


def closest_match(name: object, choices: object) -> str | None:
    """The closest of ``choices`` to ``name`` (difflib, cutoff 0.6), or None."""
    import difflib

    match = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.6)  # type: ignore[attr-defined]
    return match[0] if match else None


def closest(name: object, choices: object, *, quote: bool = False) -> str:
    """`` (did you mean X?)`` for :func:`closest_match`, or ``""``; ``quote`` writes X as a Python literal
    (``'xsub'``).  Every "unknown name" message uses this."""
    match = closest_match(name, choices)
    if match is None:
        return ""
    return f" (did you mean {match!r}?)" if quote else f" (did you mean {match}?)"
