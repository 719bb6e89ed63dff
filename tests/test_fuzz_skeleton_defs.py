"""Property-based fuzzing of user skeleton definitions (:mod:`msclr.skeletons`).

``Skeleton.from_dict``, ``load_skeleton_file`` (TOML and JSON) and ``skeleton_from_json`` (the form
stored in caches and runs) must raise only :class:`~msclr.errors.SkeletonError` on bad input, and
whatever they accept must satisfy every registry invariant:

- valid random skeletons (a spine, mirrored left/right limbs, isolated joints) round-trip through
  ``to_dict`` -> JSON / TOML -> loader unchanged, with the flip derived from the names;
- mutated definitions (keys removed, retyped or added, list items replaced) and arbitrary JSON values;
- mutated and random file text, deep nesting, huge integers, byte-order marks, invalid UTF-8.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from msclr.errors import SkeletonError
from msclr.skeletons import SKELETONS, Skeleton, get_skeleton, load_skeleton_file, skeleton_from_json

tomli_w = pytest.importorskip("tomli_w")

FUZZ = settings(max_examples=int(os.environ.get("MSCLR_FUZZ_EXAMPLES", "200")), deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


# ------------------------------------------------------------------------ generators
@st.composite
def skeleton_dicts(draw) -> dict:
    """A valid user definition: spine chain from the centre, mirrored limbs, isolated joints."""
    spine = [f"spine{i}" for i in range(draw(st.integers(1, 4)))]
    joints = list(spine)
    edges: list[list[str]] = [[spine[i], spine[i - 1]] for i in range(1, len(spine))]
    limbs = draw(st.integers(0, 4))
    for k in range(limbs):
        for side in ("left", "right"):
            name = f"{side}_j{k}"
            attach = draw(st.sampled_from(spine + [f"{side}_j{i}" for i in range(k)])) if side == "left" else None
            if side == "right":  # mirror of the left joint's attachment
                left_attach = next(a for a, b in ((e[1], e[0]) for e in edges) if b == f"left_j{k}")
                attach = left_attach.replace("left", "right")
            joints.append(name)
            edges.append([name, attach])
    joints += [f"marker{i}" for i in range(draw(st.integers(0, 2)))]
    order = draw(st.permutations(range(len(joints))))
    joints = [joints[i] for i in order]
    centre = spine[0]
    data: dict = {"name": draw(st.from_regex(r"[A-Za-z0-9_+\-.]{1,12}", fullmatch=True)), "joints": joints,
                  "edges": [[draw(st.sampled_from([a, joints.index(a)])), b] for a, b in edges],
                  "centre": draw(st.sampled_from([centre, joints.index(centre)]))}
    isolated = [j for j in joints if j.startswith("marker")]
    if isolated:
        data["isolated"] = isolated
    if draw(st.booleans()):
        data["description"] = draw(st.text(max_size=20))
    return data


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)
_KEYS = ["name", "joints", "edges", "centre", "center", "flip", "shoulders", "isolated", "model_edges", "source",
         "description"]


def _check_valid(skel: Skeleton) -> None:
    """Every invariant of the registry holds for an accepted skeleton."""
    v = skel.num_joints
    assert v >= 1 and len(set(skel.joints)) == v and all(isinstance(j, str) and j for j in skel.joints)
    assert 0 <= skel.centre < v
    assert sorted(skel.flip) == list(range(v)) and all(skel.flip[skel.flip[i]] == i for i in range(v))
    assert skel.flip[skel.centre] == skel.centre
    edge_set = {frozenset(e) for e in skel.edges}
    assert all(frozenset((skel.flip[a], skel.flip[b])) in edge_set for a, b in skel.edges)
    parents = skel.parents
    for joint in range(v):  # every joint reaches the centre through its parents, or is isolated
        seen = set()
        while parents[joint] != joint:
            assert joint not in seen
            seen.add(joint)
            joint = parents[joint]
        assert joint == skel.centre or joint in skel.isolated
    assert len(skel.bones) == v
    assert Skeleton.from_dict(json.loads(json.dumps(skel.to_dict()))) == skel


# ------------------------------------------------------------------------ properties
@FUZZ
@given(data=skeleton_dicts())
def test_valid_definitions_round_trip_through_json_and_toml(tmp_path: Path, data: dict) -> None:
    skel = Skeleton.from_dict(data, origin="generated")
    _check_valid(skel)
    assert skel.joints == tuple(data["joints"])
    for k in range(4):  # the flip was derived from the left/right names
        if f"left_j{k}" in skel.joints:
            assert skel.flip[skel.index(f"left_j{k}")] == skel.index(f"right_j{k}")
    json_path = tmp_path / "skel.json"
    json_path.write_text(json.dumps(data), encoding="utf-8")
    assert load_skeleton_file(json_path).to_dict() == {**skel.to_dict(), "source": str(json_path)}
    toml_path = tmp_path / "skel.toml"
    toml_path.write_text(tomli_w.dumps(data), encoding="utf-8")
    assert load_skeleton_file(toml_path).to_dict() == {**skel.to_dict(), "source": str(toml_path)}
    assert skeleton_from_json(json.dumps(skel.to_dict()), origin="cache") == skel
    assert get_skeleton(str(toml_path)).joints == skel.joints


_MUTATION = st.one_of(
    st.tuples(st.just("delete"), st.sampled_from(_KEYS)),
    st.tuples(st.just("set"), st.sampled_from(_KEYS + ["bogus"]), _JSON),
    st.tuples(st.just("item"), st.sampled_from(["joints", "edges", "flip", "isolated", "model_edges", "shoulders"]),
              st.integers(0, 30), _JSON),
    st.tuples(st.just("index"), st.sampled_from(["edges", "flip", "isolated", "centre", "shoulders"]),
              st.integers(-3, 40)),
)


def _mutate(data: dict, mutation: tuple) -> None:
    kind, key = mutation[0], mutation[1]
    if kind == "delete":
        data.pop(key, None)
    elif kind == "set":
        data[key] = mutation[2]
    elif kind == "item":
        target = data.get(key)
        if isinstance(target, list) and target:
            target[mutation[2] % len(target)] = mutation[3]
        else:
            data[key] = [mutation[3]]
    else:  # an index somewhere in range or just outside
        value = mutation[2]
        if key == "centre":
            data["centre"] = value
        elif key == "flip":
            joints = data.get("joints")
            count = len(joints) if isinstance(joints, list | str) else 0  # an earlier mutation may have set a bool
            data["flip"] = [value % max(1, count)] + list(range(1, count))
        elif key == "shoulders":
            data["shoulders"] = [value, value + 1]
        elif key == "isolated":
            data["isolated"] = [value]
        elif isinstance(data.get("edges"), list) and data["edges"]:
            data["edges"][value % len(data["edges"])] = [value, 0]


def _expect_documented(data: object) -> None:
    try:
        skel = Skeleton.from_dict(data, origin="fuzzed")  # type: ignore[arg-type]
    except SkeletonError as err:
        assert str(err).startswith("fuzzed") and "\n" not in str(err)
        assert len(str(err)) < 1000
        return
    _check_valid(skel)


@FUZZ
@given(data=skeleton_dicts(), mutations=st.lists(_MUTATION, min_size=1, max_size=3))
def test_mutated_definitions_give_only_skeleton_errors(data: dict, mutations: list) -> None:
    for mutation in mutations:
        _mutate(data, mutation)
    _expect_documented(data)


@FUZZ
@given(data=_JSON | st.dictionaries(st.sampled_from(_KEYS), _JSON, max_size=6))
def test_arbitrary_values_give_only_skeleton_errors(data: object) -> None:
    _expect_documented(data)


_TEXT_EDIT = st.tuples(st.integers(0, 2**32 - 1).map(lambda n: random.Random(n).random()),
                       st.sampled_from(["delete", "insert", "truncate"]),
                       st.text(st.sampled_from('[]{}",=:\'\\0123456789.-+e \n\tnull true #x"""\ud800\ufeff'),
                               max_size=4))


@FUZZ
@given(data=skeleton_dicts(), suffix=st.sampled_from([".json", ".toml"]),
       edits=st.lists(_TEXT_EDIT, min_size=1, max_size=3))
def test_mutated_files_give_only_skeleton_errors(tmp_path: Path, data: dict, suffix: str, edits: list) -> None:
    text = json.dumps(data) if suffix == ".json" else tomli_w.dumps(data)
    for where, kind, chunk in edits:
        i = int(where * len(text))
        if kind == "delete":
            text = text[:i] + text[i + max(1, len(chunk)):]
        elif kind == "insert":
            text = text[:i] + chunk + text[i:]
        else:
            text = text[:i]
    path = tmp_path / f"skel{suffix}"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    try:
        skel = load_skeleton_file(path)
    except SkeletonError as err:
        assert str(path) in str(err) and len(str(err)) < 1000
        return
    _check_valid(skel)


@FUZZ
@given(raw=st.binary(max_size=200), suffix=st.sampled_from([".json", ".toml"]))
def test_random_bytes_give_only_skeleton_errors(tmp_path: Path, raw: bytes, suffix: str) -> None:
    path = tmp_path / f"skel{suffix}"
    path.write_bytes(raw)
    try:
        _check_valid(load_skeleton_file(path))
    except SkeletonError as err:
        assert str(path) in str(err)


@FUZZ
@given(text=st.text(max_size=40))
def test_stored_definitions_give_only_skeleton_errors(text: str) -> None:
    try:
        _check_valid(skeleton_from_json(text, origin="cache.json"))
    except SkeletonError as err:
        assert str(err).startswith("cache.json")


# ------------------------------------------------------------------------ found by fuzzing
@pytest.mark.parametrize(
    ("suffix", "text", "phrase"),
    [
        (".json", "[" * 100_000 + "]" * 100_000, "nested too deep"),  # was a raw RecursionError
        (".toml", "a = " + "[" * 100_000 + "]" * 100_000, "nested too deep"),
        (".toml", "a = " + "{b = " * 5000 + "1" + "}" * 5000, "nested too deep"),
        (".json", '{"name": "a", "joints": ["x"], "edges": [], "centre": ' + "1" * 5000 + "}", "4300 digits"),
        (".toml", "name = 'a'\njoints = ['x']\nedges = []\ncentre = " + "1" * 5000, "4300 digits"),  # raw ValueError
        (".json", '{"name": "a", "joints": ["\\ud800"], "edges": [], "centre": 0}', "'joints' must be"),
        (".json", '{"name": "a", "joints": ["x"], "edges": [], "centre": 0, "description": {"x": '
                  + "[" * 900 + "]" * 900 + "}}", "'description' must be a string"),
        (".json", '{"name": "a", "joints": ["x"], "edges": [' + "[" * 900 + "]" * 900 + '], "centre": 0}',
         r"edges\[0\] must be a pair"),
    ],
)
def test_hostile_definitions_are_skeleton_errors(tmp_path: Path, suffix: str, text: str, phrase: str) -> None:
    path = tmp_path / f"evil{suffix}"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SkeletonError, match=phrase) as err:
        load_skeleton_file(path)
    assert str(path) in str(err.value) and len(str(err.value)) < 600
    with pytest.raises(SkeletonError):
        get_skeleton(str(path))


def test_byte_order_mark_and_builtins(tmp_path: Path) -> None:
    path = tmp_path / "bom.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(SKELETONS["kinect_v1_20"].to_dict()).encode())
    assert load_skeleton_file(path).joints == SKELETONS["kinect_v1_20"].joints
    (tmp_path / "latin1.toml").write_bytes(b"name = '\xe9'\n")
    with pytest.raises(SkeletonError, match="cannot read"):
        load_skeleton_file(tmp_path / "latin1.toml")
    for skel in SKELETONS.values():
        _check_valid(skel)
