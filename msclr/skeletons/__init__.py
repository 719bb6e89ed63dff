"""The skeleton registry: the single source of truth for joints, edges, centre, flips and bones.

Every stage (extractors, cache, preprocessing, models, prediction) asks this package what a
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
  and a zero bone.  This reproduces MS-CLR's ``smplx_42`` graph, where the two eye points
  23 / 24 have no edge, and with it that graph's ST-GCN adjacency values.
- ``flip`` maps each joint to its mirror (left <-> right).  It must be an involution, fix
  the centre and map edges to edges (a graph automorphism).
- ``shoulders`` = (left, right) joint indices, used by the optional y-rotation of the
  50-frame preprocessing.
- ``model_edges`` are the source's own stick figure (e.g. the MeTRAbs model attribute),
  kept for drawing and for checking a loaded model against the registry.

Coordinates stored with any skeleton are metres in Kinect camera space (x towards the
camera's left, y up, z forward, away from the camera); see :mod:`msclr.pipeline.cache`.

Modules: :mod:`msclr.skeletons.layouts` holds the built-in conventions as data (and where they
depart from their sources); :mod:`msclr.skeletons.files` reads and checks user definition files.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from msclr.errors import SkeletonError, closest_match
from msclr.skeletons.files import derive_flip, parse_definition, parse_stored_json, read_definition_file
from msclr.skeletons.layouts import ALIASES, BUILTIN_LAYOUTS, Edge, Layout


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
        themselves (a zero bone), as MS-CLR's bone lists include ``(centre, centre)``."""
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
        where = f"skeleton {self.name!r}"
        if self.num_joints == 0:
            raise SkeletonError(f"{where} has no joints")
        if len(set(self.joints)) != self.num_joints:
            dup = sorted({j for j in self.joints if self.joints.count(j) > 1})
            raise SkeletonError(f"{where}: duplicate joint names {dup}")
        if not 0 <= self.centre < self.num_joints:
            raise SkeletonError(f"{where}: centre {self.centre} is not a joint index (0..{self.num_joints - 1})")
        edge_set = self._check_edges(where)
        self._check_flip(where, edge_set)
        self._check_tree(where)
        v_count = self.num_joints
        if self.shoulders is not None:
            left, right = self.shoulders
            if not (0 <= left < v_count and 0 <= right < v_count) or left == right:
                raise SkeletonError(f"{where}: shoulders {self.shoulders} must be two distinct joint indices")
        for a, b in self.model_edges:
            if not (0 <= a < v_count and 0 <= b < v_count):
                raise SkeletonError(f"{where}: model edge ({a}, {b}) has an index outside 0..{v_count - 1}")
        return self

    def _check_edges(self, where: str) -> set[frozenset[int]]:
        v_count = self.num_joints
        seen: set[frozenset[int]] = set()
        for a, b in self.edges:
            if not (0 <= a < v_count and 0 <= b < v_count):
                raise SkeletonError(f"{where}: edge ({a}, {b}) has an index outside 0..{v_count - 1}")
            if a == b:
                raise SkeletonError(f"{where}: edge ({a}, {b}) joins a joint to itself")
            key = frozenset((a, b))
            if key in seen:
                raise SkeletonError(f"{where}: edge ({a}, {b}) appears twice")
            seen.add(key)
        return seen

    def _check_flip(self, where: str, edge_set: set[frozenset[int]]) -> None:
        flip, joints = self.flip, self.joints
        if sorted(flip) != list(range(self.num_joints)):
            raise SkeletonError(f"{where}: flip must be a permutation of 0..{self.num_joints - 1}")
        for v, w in enumerate(flip):
            if flip[w] != v:
                raise SkeletonError(
                    f"{where}: flip is not an involution ({joints[v]} -> {joints[w]} -> {joints[flip[w]]})"
                )
        if flip[self.centre] != self.centre:
            raise SkeletonError(f"{where}: flip moves the centre joint {joints[self.centre]!r}")
        for a, b in self.edges:
            if frozenset((flip[a], flip[b])) not in edge_set:
                raise SkeletonError(
                    f"{where}: flip is not a graph automorphism: edge ({joints[a]}, {joints[b]}) "
                    f"maps to ({joints[flip[a]]}, {joints[flip[b]]}), which is no edge"
                )

    def _check_tree(self, where: str) -> None:
        joints = self.joints
        connected = {v for v, p in enumerate(self.parents) if p != v} | {self.centre}
        component_edges = sum(1 for a, b in self.edges if a in connected)
        if component_edges != len(connected) - 1:
            raise SkeletonError(
                f"{where}: the edges reachable from the centre contain a cycle "
                f"({component_edges} edges for {len(connected)} joints); give a tree"
            )
        touched = {a for e in self.edges for a in e}
        for v in range(self.num_joints):
            if v in connected:
                if v in self.isolated:
                    raise SkeletonError(f"{where}: joint {joints[v]!r} is declared isolated but has edges")
                continue
            if v not in self.isolated:
                raise SkeletonError(
                    f"{where}: joint {joints[v]!r} is not connected to the centre "
                    f"{joints[self.centre]!r}; add an edge or declare it isolated"
                )
            if v in touched:
                raise SkeletonError(
                    f"{where}: isolated joint {joints[v]!r} has edges; only single joints may be isolated"
                )

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
        ``shoulders`` are looked up by name (see :mod:`msclr.skeletons.files`).
        """
        skeleton = cls(**parse_definition(data, origin=origin))
        try:
            return skeleton.validate()
        except SkeletonError as err:
            raise SkeletonError(f"{origin}: {err}") from None


# ------------------------------------------------------------------- the registry
def skeleton_from_layout(layout: Layout) -> Skeleton:
    """The validated :class:`Skeleton` of a built-in :class:`~msclr.skeletons.layouts.Layout`."""
    flip = layout.flip if layout.flip is not None else derive_flip(layout.joints)
    return Skeleton(layout.name, layout.joints, layout.edges, layout.centre, flip, layout.shoulders,
                    isolated=layout.isolated, model_edges=layout.model_edges, source=layout.source,
                    description=layout.description).validate()


SKELETONS: dict[str, Skeleton] = {layout.name: skeleton_from_layout(layout) for layout in BUILTIN_LAYOUTS}
"""Built-in conventions by name."""


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
    match = closest_match(name, [*SKELETONS, *ALIASES])
    hint = f" (did you mean {ALIASES.get(match, match)}?)" if match else ""
    raise SkeletonError(
        f"unknown skeleton {name!r}{hint}; built-in skeletons: {', '.join(SKELETONS)} "
        "(or give the path of a .toml / .json definition)"
    )


def load_skeleton_file(path: str | Path) -> Skeleton:
    """Load and validate a user-defined convention from a TOML or JSON file (format: see
    :mod:`msclr.skeletons.files`).

    Raises:
        SkeletonError: the file is missing, unreadable, not valid TOML / JSON, or not a valid skeleton.
    """
    return Skeleton.from_dict(read_definition_file(path), origin=str(Path(path)))


def skeleton_from_json(text: str, *, origin: str) -> Skeleton:
    """Rebuild a skeleton stored by :meth:`Skeleton.to_dict` (caches, runs)."""
    return Skeleton.from_dict(parse_stored_json(text, origin=origin), origin=origin)


__all__ = [
    "ALIASES",
    "SKELETONS",
    "Edge",
    "Skeleton",
    "available_skeletons",
    "derive_flip",
    "get_skeleton",
    "load_skeleton_file",
    "skeleton_from_json",
    "skeleton_from_layout",
]
