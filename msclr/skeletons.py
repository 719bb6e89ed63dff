"""The skeleton registry: the single source of truth for joints, edges, centre, flips and bones.

Every stage (extractors, cache, preprocessing, models, prediction) asks this module what a
convention's joints mean.  A :class:`Skeleton` is three facts in the style of pyskl's graph
layouts (ordered joint names, tree edges, centre joint) plus a flip permutation and two
optional hints; everything else (bones, neighbours, the ST-GCN partition) is derived.

Conventions
-----------
- Indices are 0-based.
- ``edges`` are the graph of the ST-GCN layout.  Inside the centre's connected component
  they must form a tree; bones are derived from it by orienting every edge towards the
  centre (``bone[v] = x[v] - x[parent[v]]``).  The centre's bone is zero.
- Joints listed in ``isolated`` have no edge at all: they only get their self-loop in the
  adjacency (so they are still convolved in time and pooled, but exchange no messages)
  and a zero bone.  This reproduces the reference's ``smplx_42`` graph, where the two eye
  points 23 / 24 have no edge, and keeps its unit-test adjacency values (method.md §8).
- ``flip`` maps each joint to its mirror (left <-> right).  It must be an involution, fix
  the centre and map edges to edges (a graph automorphism).
- ``shoulders`` = (left, right) joint indices, used by the optional y-rotation of the
  50-frame preprocessing.
- ``model_edges`` are the source's own stick figure (e.g. the MeTRAbs model attribute),
  kept for drawing and for checking a loaded model against the registry.

Coordinates stored with any skeleton are metres in Kinect camera space (x towards the
camera's left, y up, z forward, away from the camera); see :mod:`msclr.pipeline.cache`.

Facts come from ``shared/reference/skeletons.md``; the deviations from the reference are:

- ``smpl_24`` uses the corrected flip (the reference's does not swap the hands).
- ``berkeley_mhad_43``: the reference graph has three components and two cycles, so its
  arms and head never reach the centre and its bones are ill-defined.  msclr defines a
  connected tree rooted at ``bell`` (8): ``chest``, ``backl``, ``lside`` and ``rside``
  hang from ``bell``; the head markers and both shoulder chains hang from ``chest``; the
  back markers from ``backl``; each hip cluster from its side marker.  The model's
  drawing graph is kept in ``model_edges`` (and reproduces the reference's adjacency values).
- ``blazepose_33`` (no spine joints): the nose (0) is the only landmark the flip fixes, so
  it is the centre; shoulders and mouth corners hang from it, hips from the shoulders;
  the hand and foot triangles and the shoulder/hip quadrilateral are opened into chains.
- ``kinect_v1_20`` has no published centre or flip: centre ``shoulder_center`` (1, the
  analogue of NTU's SpineShoulder), flip derived from the joint names.
"""

from __future__ import annotations

import json
import re
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from msclr.errors import SkeletonError

Edge = tuple[int, int]


@dataclass(frozen=True)
class Skeleton:
    """One skeleton convention.

    Attributes:
        name: registry key, e.g. ``"smplx_42"``.
        joints: ordered joint names; ``len(joints)`` is V.
        edges: undirected graph edges (pairs of indices); a tree inside the centre's component.
        centre: index of the centre joint (ST-GCN partition, centring, root of the bone tree).
        flip: mirror permutation, ``flip[v]`` is the joint that v becomes after a left/right swap.
        shoulders: (left, right) shoulder indices for the y-rotation, or ``None``.
        isolated: joints declared to have no edge.
        model_edges: the source's own drawing edges (may contain cycles); ``()`` if unknown.
        source: where the facts come from.
        description: one line for ``msclr skeletons``.
    """

    name: str
    joints: tuple[str, ...]
    edges: tuple[Edge, ...]
    centre: int
    flip: tuple[int, ...]
    shoulders: tuple[int, int] | None = None
    isolated: tuple[int, ...] = ()
    model_edges: tuple[Edge, ...] = ()
    source: str = ""
    description: str = ""

    # ------------------------------------------------------------------ derived
    @property
    def num_joints(self) -> int:
        """V, the number of joints."""
        return len(self.joints)

    @cached_property
    def parents(self) -> tuple[int, ...]:
        """``parents[v]``: the neighbour of v one step closer to the centre (v itself for the
        centre and for isolated joints).  Bone v is ``x[v] - x[parents[v]]``."""
        neighbours: list[list[int]] = [[] for _ in self.joints]
        for a, b in self.edges:
            neighbours[a].append(b)
            neighbours[b].append(a)
        parent = list(range(self.num_joints))
        seen = {self.centre}
        queue = deque([self.centre])
        while queue:
            v = queue.popleft()
            for w in neighbours[v]:
                if w not in seen:
                    seen.add(w)
                    parent[w] = v
                    queue.append(w)
        return tuple(parent)

    @property
    def bones(self) -> tuple[Edge, ...]:
        """(child, parent) pairs for every joint, the centre and isolated joints paired with
        themselves (a zero bone), as the reference's bone lists include ``(centre, centre)``."""
        return tuple((v, p) for v, p in enumerate(self.parents))

    def index(self, joint: str) -> int:
        """Index of a joint by name (raises :class:`SkeletonError` listing the names)."""
        try:
            return self.joints.index(joint)
        except ValueError:
            raise SkeletonError(
                f"skeleton {self.name!r} has no joint {joint!r}; its joints are: {', '.join(self.joints)}"
            ) from None

    # --------------------------------------------------------------- validation
    def validate(self) -> Skeleton:
        """Check every invariant; raise :class:`SkeletonError` naming the first violation.

        Invariants: unique names; indices in range; no self-edges or duplicates; the flip is
        a permutation, an involution, fixes the centre and maps edges onto edges; the centre's
        component is a tree; every joint outside it is declared isolated and has no edge.
        """
        v_count = self.num_joints
        where = f"skeleton {self.name!r}"
        if v_count == 0:
            raise SkeletonError(f"{where} has no joints")
        if len(set(self.joints)) != v_count:
            dup = sorted({j for j in self.joints if self.joints.count(j) > 1})
            raise SkeletonError(f"{where}: duplicate joint names {dup}")
        if not 0 <= self.centre < v_count:
            raise SkeletonError(f"{where}: centre {self.centre} is not a joint index (0..{v_count - 1})")
        seen_edges: set[frozenset[int]] = set()
        for a, b in self.edges:
            if not (0 <= a < v_count and 0 <= b < v_count):
                raise SkeletonError(f"{where}: edge ({a}, {b}) has an index outside 0..{v_count - 1}")
            if a == b:
                raise SkeletonError(f"{where}: edge ({a}, {b}) joins a joint to itself")
            key = frozenset((a, b))
            if key in seen_edges:
                raise SkeletonError(f"{where}: edge ({a}, {b}) appears twice")
            seen_edges.add(key)
        if sorted(self.flip) != list(range(v_count)):
            raise SkeletonError(f"{where}: flip must be a permutation of 0..{v_count - 1}")
        for v, w in enumerate(self.flip):
            if self.flip[w] != v:
                raise SkeletonError(
                    f"{where}: flip is not an involution ({self.joints[v]} -> {self.joints[w]} -> "
                    f"{self.joints[self.flip[w]]})"
                )
        if self.flip[self.centre] != self.centre:
            raise SkeletonError(f"{where}: flip moves the centre joint {self.joints[self.centre]!r}")
        for a, b in self.edges:
            if frozenset((self.flip[a], self.flip[b])) not in seen_edges:
                raise SkeletonError(
                    f"{where}: flip is not a graph automorphism: edge ({self.joints[a]}, {self.joints[b]}) "
                    f"maps to ({self.joints[self.flip[a]]}, {self.joints[self.flip[b]]}), which is no edge"
                )
        connected = {v for v, p in enumerate(self.parents) if p != v} | {self.centre}
        component_edges = sum(1 for a, b in self.edges if a in connected)
        if component_edges != len(connected) - 1:
            raise SkeletonError(
                f"{where}: the edges reachable from the centre contain a cycle "
                f"({component_edges} edges for {len(connected)} joints); give a tree"
            )
        touched = {a for e in self.edges for a in e}
        for v in range(v_count):
            if v in connected:
                if v in self.isolated:
                    raise SkeletonError(f"{where}: joint {self.joints[v]!r} is declared isolated but has edges")
                continue
            if v not in self.isolated:
                raise SkeletonError(
                    f"{where}: joint {self.joints[v]!r} is not connected to the centre "
                    f"{self.joints[self.centre]!r}; add an edge or declare it isolated"
                )
            if v in touched:
                raise SkeletonError(
                    f"{where}: isolated joint {self.joints[v]!r} has edges; only single joints may be isolated"
                )
        if self.shoulders is not None:
            left, right = self.shoulders
            if not (0 <= left < v_count and 0 <= right < v_count) or left == right:
                raise SkeletonError(f"{where}: shoulders {self.shoulders} must be two distinct joint indices")
        for a, b in self.model_edges:
            if not (0 <= a < v_count and 0 <= b < v_count):
                raise SkeletonError(f"{where}: model edge ({a}, {b}) has an index outside 0..{v_count - 1}")
        return self

    # ------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (stored in caches and runs so they are self-describing)."""
        return {
            "name": self.name,
            "joints": list(self.joints),
            "edges": [list(e) for e in self.edges],
            "centre": self.centre,
            "flip": list(self.flip),
            "shoulders": list(self.shoulders) if self.shoulders is not None else None,
            "isolated": list(self.isolated),
            "model_edges": [list(e) for e in self.model_edges],
            "source": self.source,
            "description": self.description,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, origin: str = "skeleton definition") -> Skeleton:
        """Build and validate a skeleton from :meth:`to_dict` output or a user file's content.

        A user definition needs ``name``, ``joints``, ``edges`` and ``centre``; joints in edges,
        ``centre``, ``shoulders`` and ``isolated`` may be given by name or index.  A missing
        ``flip`` is derived from left/right joint names (:func:`derive_flip`); missing
        ``shoulders`` are looked up by name.
        """
        if not isinstance(data, Mapping):
            raise SkeletonError(f"{origin}: expected a table/object at the top level")
        known = {"name", "joints", "edges", "centre", "center", "flip", "shoulders", "isolated",
                 "model_edges", "source", "description"}
        unknown = sorted(map(str, set(data) - known))
        if unknown:
            raise SkeletonError(f"{origin}: unknown keys {unknown}; allowed: {sorted(known - {'center'})}")
        for key in ("name", "joints", "edges"):
            if key not in data:
                raise SkeletonError(f"{origin}: missing required key {key!r}")
        if "centre" not in data and "center" not in data:
            raise SkeletonError(f"{origin}: missing required key 'centre' (the joint the graph is rooted at)")
        name = data["name"]
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_+\-.]+", name):
            raise SkeletonError(f"{origin}: 'name' must be a non-empty word of letters, digits, _ + - .")
        joints = data["joints"]
        if not isinstance(joints, list | tuple) or not all(isinstance(j, str) and j and _utf8(j) for j in joints):
            raise SkeletonError(f"{origin}: 'joints' must be a list of non-empty strings")
        joints_t = tuple(joints)

        def as_index(value: Any, what: str) -> int:
            if isinstance(value, bool):
                raise SkeletonError(f"{origin}: {what} must be a joint name or index, got {_short(value)}")
            if isinstance(value, int):
                if not 0 <= value < len(joints_t):
                    raise SkeletonError(f"{origin}: {what} index {value} is outside 0..{len(joints_t) - 1}")
                return value
            if isinstance(value, str):
                if value not in joints_t:
                    raise SkeletonError(f"{origin}: {what} names unknown joint {_short(value)}")
                return joints_t.index(value)
            raise SkeletonError(f"{origin}: {what} must be a joint name or index, got {_short(value)}")

        def as_edges(values: Any, what: str) -> tuple[Edge, ...]:
            if not isinstance(values, list | tuple):
                raise SkeletonError(f"{origin}: {what!r} must be a list of [a, b] pairs")
            out = []
            for i, pair in enumerate(values):
                if not isinstance(pair, list | tuple) or len(pair) != 2:
                    raise SkeletonError(f"{origin}: {what}[{i}] must be a pair [a, b], got {_short(pair)}")
                out.append((as_index(pair[0], f"{what}[{i}]"), as_index(pair[1], f"{what}[{i}]")))
            return tuple(out)

        edges = as_edges(data["edges"], "edges")
        centre = as_index(data.get("centre", data.get("center")), "centre")
        isolated_raw = data.get("isolated", [])
        if not isinstance(isolated_raw, list | tuple):
            raise SkeletonError(f"{origin}: 'isolated' must be a list of joints")
        isolated = tuple(as_index(v, "isolated") for v in isolated_raw)
        if data.get("flip") is not None:
            flip_raw = data["flip"]
            if not isinstance(flip_raw, list | tuple) or len(flip_raw) != len(joints_t):
                raise SkeletonError(f"{origin}: 'flip' must list one joint per joint ({len(joints_t)})")
            flip = tuple(as_index(v, "flip") for v in flip_raw)
        else:
            flip = derive_flip(joints_t)
        shoulders_raw = data.get("shoulders")
        if shoulders_raw is not None:
            if not isinstance(shoulders_raw, list | tuple) or len(shoulders_raw) != 2:
                raise SkeletonError(f"{origin}: 'shoulders' must be [left, right]")
            shoulders: tuple[int, int] | None = (
                as_index(shoulders_raw[0], "shoulders"), as_index(shoulders_raw[1], "shoulders"))
        else:
            shoulders = _guess_shoulders(joints_t)
        skeleton = cls(
            name=name,
            joints=joints_t,
            edges=edges,
            centre=centre,
            flip=flip,
            shoulders=shoulders,
            isolated=isolated,
            model_edges=as_edges(data.get("model_edges", []), "model_edges"),
            source=_text(data.get("source", origin), "source", origin),
            description=_text(data.get("description", ""), "description", origin),
        )
        try:
            return skeleton.validate()
        except SkeletonError as err:
            raise SkeletonError(f"{origin}: {err}") from None


# ---------------------------------------------------------------------- helpers
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


def _guess_shoulders(joints: Sequence[str]) -> tuple[int, int] | None:
    lower = [j.lower() for j in joints]
    for left, right in (("left_shoulder", "right_shoulder"), ("shoulderleft", "shoulderright"),
                        ("lsho", "rsho"), ("l_shoulder", "r_shoulder")):
        if left in lower and right in lower:
            return lower.index(left), lower.index(right)
    return None


def _oriented(pairs: Iterable[Edge]) -> tuple[Edge, ...]:
    return tuple((int(a), int(b)) for a, b in pairs)


# ------------------------------------------------------------------- built-ins
_NTU_JOINTS = (
    "SpineBase", "SpineMid", "Neck", "Head", "ShoulderLeft", "ElbowLeft", "WristLeft", "HandLeft",
    "ShoulderRight", "ElbowRight", "WristRight", "HandRight", "HipLeft", "KneeLeft", "AnkleLeft",
    "FootLeft", "HipRight", "KneeRight", "AnkleRight", "FootRight", "SpineShoulder", "HandTipLeft",
    "ThumbLeft", "HandTipRight", "ThumbRight",
)
# ST-GCN 'ntu-rgb+d' layout (child, parent), as MS-CLR / AimCLR / CrosSCLR use it.
_NTU_EDGES = _oriented([
    (0, 1), (1, 20), (2, 20), (3, 2), (4, 20), (5, 4), (6, 5), (7, 6), (8, 20), (9, 8), (10, 9), (11, 10),
    (12, 0), (13, 12), (14, 13), (15, 14), (16, 0), (17, 16), (18, 17), (19, 18), (21, 22), (22, 7),
    (23, 24), (24, 11),
])
_NTU_FLIP = (0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 16, 17, 18, 19, 12, 13, 14, 15, 20, 23, 24, 21, 22)

_KINECTV2_JOINTS = (
    "spinebase", "spinemid", "neck", "head", "lsho", "lelb", "lwri", "lhan", "rsho", "relb", "rwri",
    "rhan", "lhip", "lkne", "lank", "lfoo", "rhip", "rkne", "rank", "rfoo", "spineshoulder",
    "lhandtip", "lthu", "rhandtip", "rthu",
)
# MeTRAbs model attribute order: hand tips on the hands, thumbs on the wrists.
_KINECTV2_MODEL_EDGES = _oriented([
    (2, 3), (2, 20), (1, 20), (0, 1), (0, 16), (0, 12), (16, 17), (12, 13), (17, 18), (13, 14), (18, 19),
    (14, 15), (8, 20), (4, 20), (8, 9), (4, 5), (9, 10), (5, 6), (10, 24), (6, 22), (10, 11), (6, 7),
    (11, 23), (7, 21),
])

_SMPL_JOINTS = (
    "pelv", "lhip", "rhip", "spi1", "lkne", "rkne", "spi2", "lank", "rank", "spi3", "ltoe", "rtoe",
    "neck", "lcla", "rcla", "head", "lsho", "rsho", "lelb", "relb", "lwri", "rwri", "lhan", "rhan",
)
_SMPL_EDGES = _oriented([
    (0, 3), (3, 6), (6, 9), (12, 9), (15, 12), (1, 0), (4, 1), (7, 4), (10, 7), (2, 0), (5, 2), (8, 5),
    (11, 8), (13, 9), (16, 13), (18, 16), (20, 18), (22, 20), (14, 9), (17, 14), (19, 17), (21, 19),
    (23, 21),
])
_SMPL_MODEL_EDGES = _oriented([
    (1, 4), (1, 0), (2, 5), (2, 0), (3, 6), (3, 0), (4, 7), (5, 8), (6, 9), (7, 10), (8, 11), (9, 12),
    (9, 13), (9, 14), (12, 15), (13, 16), (14, 17), (16, 18), (17, 19), (18, 20), (19, 21), (20, 22),
    (21, 23),
])
# Corrected: the reference's flip leaves the hands (22, 23) unswapped.
_SMPL_FLIP = (0, 2, 1, 3, 5, 4, 6, 8, 7, 9, 11, 10, 12, 14, 13, 15, 17, 16, 19, 18, 21, 20, 23, 22)

_SMPLX_JOINTS = (
    "pelv", "lhip", "rhip", "bell", "lkne", "rkne", "spin", "lank", "rank", "thor", "ltoe", "rtoe",
    "neck", "lcla", "rcla", "head", "lsho", "rsho", "lelb", "relb", "lwri", "rwri", "jaw", "leyehf",
    "reyehf", "lmiddle1", "rmiddle1", "nose", "reye", "leye", "rear", "lear", "lto2", "lto3", "lhee",
    "rto2", "rto3", "rhee", "lthu", "lmiddle", "rthu", "rmiddle",
)
# MS-CLR's 39-edge graph: the 33 model edges plus 6 hand edges; eye points 23 / 24 isolated.
_SMPLX_EDGES = _oriented([
    (6, 9), (3, 6), (0, 3), (1, 0), (4, 1), (7, 4), (34, 7), (10, 7), (32, 10), (33, 10), (2, 0), (5, 2),
    (8, 5), (37, 8), (11, 8), (35, 11), (36, 11), (13, 9), (16, 13), (18, 16), (20, 18), (25, 20),
    (38, 20), (39, 20), (14, 9), (17, 14), (19, 17), (21, 19), (26, 21), (40, 21), (41, 21), (12, 9),
    (22, 12), (15, 22), (27, 15), (29, 27), (31, 29), (28, 27), (30, 28),
])
_SMPLX_MODEL_EDGES = _oriented([
    (0, 1), (0, 2), (0, 3), (1, 4), (2, 5), (3, 6), (4, 7), (5, 8), (6, 9), (7, 10), (7, 34), (8, 11),
    (8, 37), (9, 12), (9, 13), (9, 14), (10, 32), (10, 33), (11, 35), (11, 36), (12, 22), (13, 16),
    (14, 17), (15, 22), (15, 27), (16, 18), (17, 19), (18, 20), (19, 21), (27, 28), (27, 29), (28, 30),
    (29, 31),
])
_SMPLX_FLIP = (
    0, 2, 1, 3, 5, 4, 6, 8, 7, 9, 11, 10, 12, 14, 13, 15, 17, 16, 19, 18, 21, 20, 22, 24, 23, 26, 25, 27,
    29, 28, 31, 30, 35, 36, 37, 32, 33, 34, 40, 41, 38, 39,
)

_BERKELEY_JOINTS = (
    "head", "lhead", "rhead", "rback", "backl", "backt", "lback", "lside", "bell", "chest", "rside",
    "lsho1", "lsho2", "larm", "lelb", "lwri", "lhan1", "lhan2", "lhan3", "rsho1", "rsho2", "rarm", "relb",
    "rwri", "rhan1", "rhan2", "rhan3", "lhipb", "lhipf", "lhipl", "lleg", "lkne", "lank", "lhee", "lfoo",
    "rhipb", "rhipf", "rhipl", "rleg", "rkne", "rank", "rhee", "rfoo",
)
# msclr's connected tree rooted at bell (8); see the module docstring.
_BERKELEY_EDGES = _oriented([
    (9, 8), (4, 8), (7, 8), (10, 8),
    (5, 4), (3, 4), (6, 4),
    (0, 9), (1, 0), (2, 0),
    (11, 9), (12, 11), (13, 12), (14, 13), (15, 14), (16, 15), (17, 15), (18, 15),
    (19, 9), (20, 19), (21, 20), (22, 21), (23, 22), (24, 23), (25, 23), (26, 23),
    (28, 7), (29, 28), (27, 29), (30, 28), (31, 30), (32, 31), (33, 32), (34, 33),
    (36, 10), (37, 36), (35, 37), (38, 36), (39, 38), (40, 39), (41, 40), (42, 41),
])
_BERKELEY_MODEL_EDGES = _oriented([
    (0, 1), (0, 2), (3, 4), (3, 35), (4, 5), (4, 6), (6, 27), (7, 8), (7, 28), (8, 9), (8, 10), (10, 36),
    (11, 12), (11, 19), (12, 13), (13, 14), (14, 15), (15, 16), (15, 17), (15, 18), (19, 20), (20, 21),
    (21, 22), (22, 23), (23, 24), (23, 25), (23, 26), (27, 29), (27, 35), (28, 29), (28, 30), (30, 31),
    (31, 32), (32, 33), (33, 34), (35, 37), (36, 37), (36, 38), (38, 39), (39, 40), (40, 41), (41, 42),
])
_BERKELEY_FLIP = (
    0, 2, 1, 6, 4, 5, 3, 10, 8, 9, 7,
    *range(19, 27), *range(11, 19), *range(35, 43), *range(27, 35),
)

_BLAZEPOSE_JOINTS = (
    "NOSE", "LEFT_EYE_INNER", "LEFT_EYE", "LEFT_EYE_OUTER", "RIGHT_EYE_INNER", "RIGHT_EYE",
    "RIGHT_EYE_OUTER", "LEFT_EAR", "RIGHT_EAR", "MOUTH_LEFT", "MOUTH_RIGHT", "LEFT_SHOULDER",
    "RIGHT_SHOULDER", "LEFT_ELBOW", "RIGHT_ELBOW", "LEFT_WRIST", "RIGHT_WRIST", "LEFT_PINKY",
    "RIGHT_PINKY", "LEFT_INDEX", "RIGHT_INDEX", "LEFT_THUMB", "RIGHT_THUMB", "LEFT_HIP", "RIGHT_HIP",
    "LEFT_KNEE", "RIGHT_KNEE", "LEFT_ANKLE", "RIGHT_ANKLE", "LEFT_HEEL", "RIGHT_HEEL",
    "LEFT_FOOT_INDEX", "RIGHT_FOOT_INDEX",
)
_BLAZEPOSE_EDGES = _oriented([
    (1, 0), (2, 1), (3, 2), (7, 3), (4, 0), (5, 4), (6, 5), (8, 6), (9, 0), (10, 0),
    (11, 0), (12, 0), (13, 11), (15, 13), (17, 15), (19, 15), (21, 15), (14, 12), (16, 14), (18, 16),
    (20, 16), (22, 16), (23, 11), (25, 23), (27, 25), (29, 27), (31, 27), (24, 12), (26, 24), (28, 26),
    (30, 28), (32, 28),
])
_BLAZEPOSE_MODEL_EDGES = _oriented([
    (0, 1), (1, 2), (2, 3), (3, 7), (0, 4), (4, 5), (5, 6), (6, 8), (9, 10), (11, 12), (11, 13), (13, 15),
    (15, 17), (15, 19), (15, 21), (17, 19), (12, 14), (14, 16), (16, 18), (16, 20), (16, 22), (18, 20),
    (11, 23), (12, 24), (23, 24), (23, 25), (24, 26), (25, 27), (26, 28), (27, 29), (28, 30), (29, 31),
    (30, 32), (27, 31), (28, 32),
])

_KINECT_V1_JOINTS = (
    "head", "shoulder_center", "spine", "hip_center", "left_shoulder", "left_elbow", "left_wrist",
    "left_hand", "right_shoulder", "right_elbow", "right_wrist", "right_hand", "left_hip", "left_knee",
    "left_ankle", "left_foot", "right_hip", "right_knee", "right_ankle", "right_foot",
)
_KINECT_V1_EDGES = _oriented([
    (0, 1), (2, 1), (3, 2), (4, 1), (5, 4), (6, 5), (7, 6), (8, 1), (9, 8), (10, 9), (11, 10),
    (12, 3), (13, 12), (14, 13), (15, 14), (16, 3), (17, 16), (18, 17), (19, 18),
])


def _builtin() -> dict[str, Skeleton]:
    skeletons = [
        Skeleton(
            "ntu_kinect_25", _NTU_JOINTS, _NTU_EDGES, 20, _NTU_FLIP, (4, 8),
            model_edges=_NTU_EDGES,
            source="NTU RGB+D Kinect v2 ground truth; ST-GCN 'ntu-rgb+d' layout (yysijie/st-gcn)",
            description="NTU RGB+D's native Kinect v2 skeleton (ST-GCN layout), metres",
        ),
        Skeleton(
            "kinectv2_25", _KINECTV2_JOINTS,
            # Same tree as the Kinect SDK / MeTRAbs model edges, rooted at spineshoulder.
            _KINECTV2_MODEL_EDGES, 20, _NTU_FLIP, (4, 8),
            model_edges=_KINECTV2_MODEL_EDGES,
            source="MeTRAbs 28-dataset models (kinectv2_25, affine-regressed on NTU Kinect data)",
            description="MeTRAbs' Kinect v2 skeleton estimate (NTU joint order by name)",
        ),
        Skeleton(
            "smpl_24", _SMPL_JOINTS, _SMPL_EDGES, 9, _SMPL_FLIP, (16, 17),
            model_edges=_SMPL_MODEL_EDGES,
            source="MeTRAbs smpl_24; MS-CLR graph (alvaroritter/AimCLR); corrected flip",
            description="SMPL body joints (MeTRAbs), centre spine3",
        ),
        Skeleton(
            "smplx_42", _SMPLX_JOINTS, _SMPLX_EDGES, 9, _SMPLX_FLIP, (16, 17), isolated=(23, 24),
            model_edges=_SMPLX_MODEL_EDGES,
            source="MeTRAbs smplx_42; MS-CLR 39-edge graph (alvaroritter/AimCLR)",
            description="SMPL-X body, face, feet and hand points (MeTRAbs), centre thorax",
        ),
        Skeleton(
            "berkeley_mhad_43", _BERKELEY_JOINTS, _BERKELEY_EDGES, 8, _BERKELEY_FLIP, (11, 19),
            model_edges=_BERKELEY_MODEL_EDGES,
            source="MeTRAbs berkeley_mhad_43 markers; msclr's connected tree (the reference graph is not one)",
            description="Berkeley MHAD mocap markers (MeTRAbs), centre belly",
        ),
        Skeleton(
            "blazepose_33", _BLAZEPOSE_JOINTS, _BLAZEPOSE_EDGES, 0, derive_flip(_BLAZEPOSE_JOINTS), (11, 12),
            model_edges=_BLAZEPOSE_MODEL_EDGES,
            source="MediaPipe BlazePose 33 landmarks (mediapipe 0.10.21); msclr tree rooted at the nose",
            description="MediaPipe BlazePose world landmarks, centre nose",
        ),
        Skeleton(
            "kinect_v1_20", _KINECT_V1_JOINTS, _KINECT_V1_EDGES, 1, derive_flip(_KINECT_V1_JOINTS), (4, 8),
            model_edges=_KINECT_V1_EDGES,
            source="Kinect v1 in UTD-MHAD joint order; tree from the joint names",
            description="Kinect v1 skeleton, UTD-MHAD joint order, centre shoulder_center",
        ),
    ]
    return {s.name: s.validate() for s in skeletons}


SKELETONS: dict[str, Skeleton] = _builtin()
"""Built-in conventions by name."""

ALIASES: dict[str, str] = {"ntu-rgb+d": "ntu_kinect_25", "ntu": "ntu_kinect_25", "kinect_v2_25": "kinectv2_25"}
"""Other names users may know a built-in by (the reference calls NTU's layout ``ntu-rgb+d``)."""


def available_skeletons() -> list[str]:
    """Names of the built-in conventions, in registry order."""
    return list(SKELETONS)


def get_skeleton(name: str | Skeleton) -> Skeleton:
    """Look a convention up by name (or alias), or load it from a ``.toml`` / ``.json`` file path.

    Raises:
        SkeletonError: unknown name; the message lists the known ones.
    """
    if isinstance(name, Skeleton):
        return name
    name = str(name)  # a pathlib.Path to a .toml / .json file works too
    key = ALIASES.get(name, name)
    if key in SKELETONS:
        return SKELETONS[key]
    if name.endswith((".toml", ".json")):
        return load_skeleton_file(name)
    raise SkeletonError(
        f"unknown skeleton {name!r}; built-in skeletons: {', '.join(SKELETONS)} "
        "(or give the path of a .toml / .json definition)"
    )


def load_skeleton_file(path: str | Path) -> Skeleton:
    """Load and validate a user-defined convention from a TOML or JSON file.

    Format (TOML shown; JSON has the same keys)::

        name = "my_skeleton"
        joints = ["pelvis", "left_hip", "right_hip", ...]
        edges = [["left_hip", "pelvis"], ["right_hip", "pelvis"], ...]   # names or indices
        centre = "pelvis"
        # optional: isolated = [...], shoulders = ["left_shoulder", "right_shoulder"],
        #           flip = [...] (else derived from left/right names), description = "..."
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
            data = tomllib.loads(text)
        except (ValueError, RecursionError) as err:
            raise SkeletonError(f"{path} is not valid TOML: {_brief(err)}") from None
    elif path.suffix == ".json":
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as err:
            raise SkeletonError(f"{path} is not valid JSON: {_brief(err)}") from None
    else:
        raise SkeletonError(f"skeleton file {path} must end in .toml or .json")
    return Skeleton.from_dict(data, origin=str(path))


def _brief(err: Exception) -> str:
    if isinstance(err, RecursionError):
        return "arrays or tables nested too deep"
    return str(err).splitlines()[0][:200] if str(err) else type(err).__name__


def skeleton_from_json(text: str, *, origin: str) -> Skeleton:
    """Rebuild a skeleton stored by :meth:`Skeleton.to_dict` (caches, runs)."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as err:
        raise SkeletonError(f"{origin}: stored skeleton definition is not valid JSON: {_brief(err)}") from None
    return Skeleton.from_dict(data, origin=origin)


__all__ = [
    "ALIASES",
    "SKELETONS",
    "Skeleton",
    "available_skeletons",
    "derive_flip",
    "get_skeleton",
    "load_skeleton_file",
    "skeleton_from_json",
]
