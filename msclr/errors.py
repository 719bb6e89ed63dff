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
