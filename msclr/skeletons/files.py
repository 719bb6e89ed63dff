"""User skeleton definitions: reading ``.toml`` / ``.json`` files and checking their fields.

:func:`parse_definition` turns the content of a definition (a user file, or the JSON a cache or run
stores) into the keyword arguments of :class:`msclr.skeletons.Skeleton`; the invariants of the
result (tree, flip, ...) are checked by ``Skeleton.validate``.  Every problem is a
:class:`~msclr.errors.SkeletonError` whose one-line message starts with the file (``origin``) and
names the key; values from the file are quoted with a bounded length and nesting depth.

Format (TOML shown; JSON has the same keys)::

    name = "my_skeleton"
    joints = ["pelvis", "left_hip", "right_hip", ...]
    edges = [["left_hip", "pelvis"], ["right_hip", "pelvis"], ...]   # names or indices
    centre = "pelvis"
    # optional: isolated = [...], shoulders = ["left_shoulder", "right_shoulder"],
    #           flip = [...] (else derived from left/right names), description = "..."
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from msclr.errors import SkeletonError

Edge = tuple[int, int]

KNOWN_KEYS = frozenset({"name", "joints", "edges", "centre", "center", "flip", "shoulders", "isolated",
                        "model_edges", "source", "description"})
"""Keys a definition may have (``center`` is accepted for ``centre``)."""


# ------------------------------------------------------------------------ reading files
def read_definition_file(path: str | Path) -> Any:
    """The parsed content of a ``.toml`` / ``.json`` skeleton file (not yet checked).

    Raises:
        SkeletonError: a missing or unreadable file, invalid TOML / JSON, or another suffix.
    """
    path = Path(path)
    if not path.is_file():
        raise SkeletonError(f"skeleton file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8-sig")  # a BOM (Windows editors) is fine
    except (OSError, UnicodeDecodeError) as err:
        raise SkeletonError(f"cannot read skeleton file {path}: {err}") from None
    # ValueError covers TOMLDecodeError / JSONDecodeError and integers over Python's 4300-digit
    # limit; RecursionError, arrays nested a thousand deep (found by tests/test_fuzz_skeleton_defs.py).
    if path.suffix == ".toml":
        import tomllib

        try:
            return tomllib.loads(text)
        except (ValueError, RecursionError) as err:
            raise SkeletonError(f"{path} is not valid TOML: {_brief(err)}") from None
    if path.suffix == ".json":
        try:
            return json.loads(text)
        except (ValueError, RecursionError) as err:
            raise SkeletonError(f"{path} is not valid JSON: {_brief(err)}") from None
    raise SkeletonError(f"skeleton file {path} must end in .toml or .json")


def parse_stored_json(text: str, *, origin: str) -> Any:
    """The parsed JSON of a definition stored by ``Skeleton.to_dict`` (caches, runs)."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as err:
        raise SkeletonError(f"{origin}: stored skeleton definition is not valid JSON: {_brief(err)}") from None


def _brief(err: Exception) -> str:
    if isinstance(err, RecursionError):
        return "arrays or tables nested too deep"
    return str(err).splitlines()[0][:200] if str(err) else type(err).__name__


# ------------------------------------------------------------------------ checking fields
class _Fields:
    """Reads the fields of one definition; joints may be named or indexed wherever a joint is expected."""

    def __init__(self, data: Mapping[str, Any], origin: str) -> None:
        self.data = data
        self.origin = origin
        joints = data["joints"]
        if not isinstance(joints, list | tuple) or not all(isinstance(j, str) and j and _utf8(j) for j in joints):
            raise SkeletonError(f"{origin}: 'joints' must be a list of non-empty strings")
        self.joints: tuple[str, ...] = tuple(joints)

    def index(self, value: Any, what: str) -> int:
        origin, joints = self.origin, self.joints
        if isinstance(value, bool):
            raise SkeletonError(f"{origin}: {what} must be a joint name or index, got {_short(value)}")
        if isinstance(value, int):
            if not 0 <= value < len(joints):
                raise SkeletonError(f"{origin}: {what} index {value} is outside 0..{len(joints) - 1}")
            return value
        if isinstance(value, str):
            if value not in joints:
                raise SkeletonError(f"{origin}: {what} names unknown joint {_short(value)}")
            return joints.index(value)
        raise SkeletonError(f"{origin}: {what} must be a joint name or index, got {_short(value)}")

    def edges(self, values: Any, what: str) -> tuple[Edge, ...]:
        if not isinstance(values, list | tuple):
            raise SkeletonError(f"{self.origin}: {what!r} must be a list of [a, b] pairs")
        out = []
        for i, pair in enumerate(values):
            if not isinstance(pair, list | tuple) or len(pair) != 2:
                raise SkeletonError(f"{self.origin}: {what}[{i}] must be a pair [a, b], got {_short(pair)}")
            out.append((self.index(pair[0], f"{what}[{i}]"), self.index(pair[1], f"{what}[{i}]")))
        return tuple(out)

    def isolated(self) -> tuple[int, ...]:
        raw = self.data.get("isolated", [])
        if not isinstance(raw, list | tuple):
            raise SkeletonError(f"{self.origin}: 'isolated' must be a list of joints")
        return tuple(self.index(v, "isolated") for v in raw)

    def flip(self) -> tuple[int, ...]:
        raw = self.data.get("flip")
        if raw is None:
            return derive_flip(self.joints)
        if not isinstance(raw, list | tuple) or len(raw) != len(self.joints):
            raise SkeletonError(f"{self.origin}: 'flip' must list one joint per joint ({len(self.joints)})")
        return tuple(self.index(v, "flip") for v in raw)

    def shoulders(self) -> tuple[int, int] | None:
        raw = self.data.get("shoulders")
        if raw is None:
            return guess_shoulders(self.joints)
        if not isinstance(raw, list | tuple) or len(raw) != 2:
            raise SkeletonError(f"{self.origin}: 'shoulders' must be [left, right]")
        return self.index(raw[0], "shoulders"), self.index(raw[1], "shoulders")


def parse_definition(data: Any, *, origin: str) -> dict[str, Any]:
    """The ``Skeleton`` keyword arguments of a definition's content (not yet validated as a graph).

    A definition needs ``name``, ``joints``, ``edges`` and ``centre``; joints in edges, ``centre``,
    ``shoulders``, ``isolated`` and ``flip`` may be given by name or index.  A missing ``flip`` is
    derived from left/right joint names (:func:`derive_flip`); missing ``shoulders`` are looked up
    by name.

    Raises:
        SkeletonError: not a table, unknown or missing keys, or a field of the wrong form.
    """
    if not isinstance(data, Mapping):
        raise SkeletonError(f"{origin}: expected a table/object at the top level")
    unknown = sorted(map(str, set(data) - KNOWN_KEYS))
    if unknown:
        raise SkeletonError(f"{origin}: unknown keys {unknown}; allowed: {sorted(KNOWN_KEYS - {'center'})}")
    for key in ("name", "joints", "edges"):
        if key not in data:
            raise SkeletonError(f"{origin}: missing required key {key!r}")
    if "centre" not in data and "center" not in data:
        raise SkeletonError(f"{origin}: missing required key 'centre' (the joint the graph is rooted at)")
    name = data["name"]
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_+\-.]+", name):
        raise SkeletonError(f"{origin}: 'name' must be a non-empty word of letters, digits, _ + - .")
    fields = _Fields(data, origin)
    edges = fields.edges(data["edges"], "edges")
    centre = fields.index(data.get("centre", data.get("center")), "centre")
    isolated = fields.isolated()
    flip = fields.flip()
    shoulders = fields.shoulders()
    return dict(
        name=name,
        joints=fields.joints,
        edges=edges,
        centre=centre,
        flip=flip,
        shoulders=shoulders,
        isolated=isolated,
        model_edges=fields.edges(data.get("model_edges", []), "model_edges"),
        source=_text(data.get("source", origin), "source", origin),
        description=_text(data.get("description", ""), "description", origin),
    )


def _utf8(text: str) -> bool:
    """True when ``text`` can be written as UTF-8 (JSON's ``\\ud800`` escapes give lone surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _text(value: Any, key: str, origin: str) -> str:
    """A free-text field: a string, or a number written as one (not a nested structure)."""
    if isinstance(value, str) and _utf8(value):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise SkeletonError(f"{origin}: {key!r} must be a string of UTF-8 text, got {type(value).__name__}")


def _short(value: Any) -> str:
    """A bounded repr of a value from a user file (length and nesting capped, so never a RecursionError)."""
    import reprlib

    short = reprlib.Repr()
    short.maxlevel, short.maxstring, short.maxother, short.maxlist = 3, 60, 60, 6
    return short.repr(value)


# ------------------------------------------------------------------------ names -> flip, shoulders
_SWAPS = (("left", "right"), ("Left", "Right"), ("LEFT", "RIGHT"))


def _mirror_name(name: str) -> list[str]:
    """Candidate mirror names of a joint name, most specific first."""
    out = []
    for a, b in _SWAPS:
        if a in name or b in name:
            out.append(name.replace(a, "\0").replace(b, a).replace("\0", b))
    for a, b in (("_l", "_r"), ("_L", "_R"), (".l", ".r"), (".L", ".R")):
        if name.endswith(a):
            out.append(name[: -len(a)] + b)
        elif name.endswith(b):
            out.append(name[: -len(b)] + a)
    for a, b in (("l", "r"), ("L", "R")):
        if name.startswith(a):
            out.append(b + name[1:])
        elif name.startswith(b):
            out.append(a + name[1:])
    return out


def derive_flip(joints: Sequence[str]) -> tuple[int, ...]:
    """Mirror permutation from joint names: a joint whose name contains left/right
    (``ShoulderLeft``, ``left_hip``, ``LEFT_WRIST``), ends in ``_l``/``_r`` or starts with
    ``l``/``r`` (``lsho``) is paired with the joint of the mirrored name if one exists; every
    other joint maps to itself."""
    position = {name: i for i, name in enumerate(joints)}
    flip = list(range(len(joints)))
    for i, name in enumerate(joints):
        for candidate in _mirror_name(name):
            j = position.get(candidate)
            if j is not None and j != i:
                flip[i] = j
                break
    return tuple(flip)


def guess_shoulders(joints: Sequence[str]) -> tuple[int, int] | None:
    """``(left, right)`` shoulder indices found by common names (``left_shoulder``, ``lsho``, ...), or None."""
    lower = [j.lower() for j in joints]
    for left, right in (("left_shoulder", "right_shoulder"), ("shoulderleft", "shoulderright"),
                        ("lsho", "rsho"), ("l_shoulder", "r_shoulder")):
        if left in lower and right in lower:
            return lower.index(left), lower.index(right)
    return None


__all__ = ["KNOWN_KEYS", "derive_flip", "guess_shoulders", "parse_definition", "parse_stored_json",
           "read_definition_file"]
