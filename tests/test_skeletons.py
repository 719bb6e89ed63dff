"""The skeleton registry: reference facts, invariants, user files and the `msclr skeletons` command."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from msclr.cli import cli
from msclr.errors import SkeletonError
from msclr.skeletons import ALIASES, SKELETONS, Skeleton, derive_flip, get_skeleton, skeleton_from_json

# Reference flips (skeletons.md; OFF feeder/tools.py), smpl_24 corrected (the reference leaves the hands).
REFERENCE_FLIPS = {
    "ntu_kinect_25": [0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 16, 17, 18, 19, 12, 13, 14, 15, 20, 23, 24, 21, 22],
    "smpl_24": [0, 2, 1, 3, 5, 4, 6, 8, 7, 9, 11, 10, 12, 14, 13, 15, 17, 16, 19, 18, 21, 20, 23, 22],
    "smplx_42": [0, 2, 1, 3, 5, 4, 6, 8, 7, 9, 11, 10, 12, 14, 13, 15, 17, 16, 19, 18, 21, 20, 22, 24, 23,
                 26, 25, 27, 29, 28, 31, 30, 35, 36, 37, 32, 33, 34, 40, 41, 38, 39],
    "berkeley_mhad_43": [0, 2, 1, 6, 4, 5, 3, 10, 8, 9, 7, *range(19, 27), *range(11, 19), *range(35, 43),
                         *range(27, 35)],
}
NTU_REFERENCE_BONES = {
    (0, 1), (1, 20), (2, 20), (3, 2), (4, 20), (5, 4), (6, 5), (7, 6), (8, 20), (9, 8), (10, 9), (11, 10),
    (12, 0), (13, 12), (14, 13), (15, 14), (16, 0), (17, 16), (18, 17), (19, 18), (21, 22), (22, 7),
    (23, 24), (24, 11),
}
SMPLX_REFERENCE_BONES = {
    (6, 9), (3, 6), (0, 3), (1, 0), (4, 1), (7, 4), (34, 7), (10, 7), (32, 10), (33, 10), (2, 0), (5, 2),
    (8, 5), (37, 8), (11, 8), (35, 11), (36, 11), (13, 9), (16, 13), (18, 16), (20, 18), (25, 20), (38, 20),
    (39, 20), (14, 9), (17, 14), (19, 17), (21, 19), (26, 21), (40, 21), (41, 21), (12, 9), (22, 12), (15, 22),
    (27, 15), (29, 27), (31, 29), (28, 27), (30, 28),
}
SMPL_REFERENCE_BONES = {
    (0, 3), (3, 6), (6, 9), (12, 9), (15, 12), (1, 0), (4, 1), (7, 4), (10, 7), (2, 0), (5, 2), (8, 5),
    (11, 8), (13, 9), (16, 13), (18, 16), (20, 18), (22, 20), (14, 9), (17, 14), (19, 17), (21, 19), (23, 21),
}
CENTRES = {"ntu_kinect_25": 20, "kinectv2_25": 20, "smpl_24": 9, "smplx_42": 9, "berkeley_mhad_43": 8}


# ------------------------------------------------------------ reference facts
@pytest.mark.parametrize("name", list(REFERENCE_FLIPS))
def test_flips_equal_the_reference_and_derive_from_names(name: str) -> None:
    skeleton = SKELETONS[name]
    assert list(skeleton.flip) == REFERENCE_FLIPS[name]
    assert list(derive_flip(skeleton.joints)) == REFERENCE_FLIPS[name]


@pytest.mark.parametrize("name", list(CENTRES))
def test_centres(name: str) -> None:
    assert SKELETONS[name].centre == CENTRES[name]


def test_bones_equal_the_reference_pairs() -> None:
    assert set(SKELETONS["ntu_kinect_25"].bones) == NTU_REFERENCE_BONES | {(20, 20)}
    assert set(SKELETONS["smplx_42"].bones) == SMPLX_REFERENCE_BONES | {(9, 9), (23, 23), (24, 24)}
    assert set(SKELETONS["smpl_24"].bones) == SMPL_REFERENCE_BONES | {(9, 9)}
    assert get_skeleton("ntu-rgb+d") is SKELETONS["ntu_kinect_25"]
    assert all(target in SKELETONS for target in ALIASES.values())


# ------------------------------------------------------------------ invariants
@pytest.mark.parametrize("name", list(SKELETONS))
def test_flip_is_an_involution_fixing_the_centre_and_an_automorphism(name: str) -> None:
    s = SKELETONS[name]
    assert sorted(s.flip) == list(range(s.num_joints))
    assert all(s.flip[s.flip[v]] == v for v in range(s.num_joints))
    assert s.flip[s.centre] == s.centre
    for edges in (s.edges, s.model_edges):
        edge_set = {frozenset(e) for e in edges}
        assert {frozenset((s.flip[a], s.flip[b])) for a, b in edges} == edge_set
    if s.shoulders is not None:
        left, right = s.shoulders
        assert s.flip[left] == right and s.flip[right] == left


@pytest.mark.parametrize("name", list(SKELETONS))
def test_bones_form_a_tree_rooted_at_the_centre(name: str) -> None:
    s = SKELETONS[name]
    expected_isolated = {"smplx_42": (23, 24)}.get(name, ())
    assert s.isolated == expected_isolated
    assert len(s.edges) == s.num_joints - 1 - len(s.isolated)
    edge_set = {frozenset(e) for e in s.edges}
    for v in range(s.num_joints):
        if v == s.centre or v in s.isolated:
            assert s.parents[v] == v
            continue
        assert frozenset((v, s.parents[v])) in edge_set
        path, w = [v], v
        while w != s.centre:  # parents reach the centre without cycling
            w = s.parents[w]
            assert w not in path, f"{name}: cycle through {path}"
            path.append(w)
    assert len(s.bones) == s.num_joints


# ------------------------------------------------------------------ user files
def _write_toml(path, data: dict) -> None:
    tomli_w = pytest.importorskip("tomli_w")
    path.write_text(tomli_w.dumps({k: v for k, v in data.items() if v is not None}), encoding="utf-8")


@pytest.mark.parametrize("name", list(SKELETONS))
def test_builtins_round_trip_through_toml_and_json(name: str, tmp_path) -> None:
    s = SKELETONS[name]
    _write_toml(tmp_path / f"{name}.toml", s.to_dict())
    (tmp_path / f"{name}.json").write_text(json.dumps(s.to_dict()), encoding="utf-8")
    assert get_skeleton(str(tmp_path / f"{name}.toml")).to_dict() == s.to_dict()
    assert get_skeleton(str(tmp_path / f"{name}.json")).to_dict() == s.to_dict()
    assert get_skeleton(tmp_path / f"{name}.json") == s  # a pathlib.Path works too
    assert skeleton_from_json(json.dumps(s.to_dict()), origin="test") == s


USER_SKELETON = {
    "name": "stick_figure",
    "joints": ["pelvis", "spine", "head", "left_shoulder", "left_hand", "right_shoulder", "right_hand",
               "left_foot", "right_foot"],
    "edges": [["spine", "pelvis"], ["head", "spine"], ["left_shoulder", "spine"], ["left_hand", "left_shoulder"],
              ["right_shoulder", "spine"], ["right_hand", "right_shoulder"], ["left_foot", "pelvis"],
              ["right_foot", "pelvis"]],
    "centre": "spine",
    "description": "a hand-written test skeleton",
}


def test_user_toml_with_names_derives_flip_and_shoulders(tmp_path) -> None:
    path = tmp_path / "stick.toml"
    _write_toml(path, USER_SKELETON)
    s = get_skeleton(str(path))
    assert s.name == "stick_figure" and s.centre == 1 and s.shoulders == (3, 5)
    assert s.flip == (0, 1, 2, 5, 6, 3, 4, 8, 7)
    assert s.parents == (1, 1, 1, 1, 3, 1, 5, 0, 0)
    assert str(path) in s.source  # provenance defaults to the file


def _broken(**changes) -> dict:
    data = json.loads(json.dumps(USER_SKELETON))
    data.update(changes)
    return data


@pytest.mark.parametrize("data,message", [
    (_broken(edges=USER_SKELETON["edges"] + [["left_foot", "right_foot"]]), "cycle"),
    (_broken(flip=[0, 1, 2, 5, 6, 4, 3, 8, 7]), "involution"),
    (_broken(joints=USER_SKELETON["joints"] + ["tail"]), "declare it isolated"),
    (_broken(edges=[["spine", "pelvis"], ["neck", "spine"]]), "unknown joint 'neck'"),
    (_broken(isolated=["head"]), "isolated but has edges"),
    (_broken(flip=[0, 2, 1, 5, 6, 3, 4, 8, 7]), "automorphism|centre"),
    (_broken(centre="nose"), "unknown joint 'nose'"),
    ({k: v for k, v in USER_SKELETON.items() if k != "centre"}, "centre"),
])
def test_invalid_user_files_raise_helpful_errors(tmp_path, data: dict, message: str) -> None:
    for suffix in ("toml", "json"):
        path = tmp_path / f"bad.{suffix}"
        if suffix == "toml":
            _write_toml(path, data)
        else:
            path.write_text(json.dumps(data), encoding="utf-8")
        with pytest.raises(SkeletonError, match=message) as err:
            get_skeleton(str(path))
        assert str(path) in str(err.value)  # the message names the file


def test_unreadable_files_and_unknown_names(tmp_path) -> None:
    bad_toml = tmp_path / "bad.toml"
    bad_toml.write_text('name = "x"\njoints = [', encoding="utf-8")
    with pytest.raises(SkeletonError, match="not valid TOML"):
        get_skeleton(str(bad_toml))
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{", encoding="utf-8")
    with pytest.raises(SkeletonError, match="not valid JSON"):
        get_skeleton(str(bad_json))
    with pytest.raises(SkeletonError, match="does not exist"):
        get_skeleton(str(tmp_path / "missing.toml"))
    with pytest.raises(SkeletonError, match="smplx_42"):  # lists the built-ins
        get_skeleton("smplx_41")
    with pytest.raises(SkeletonError, match="no joint 'tail'"):
        SKELETONS["smpl_24"].index("tail")


def test_index_and_to_dict() -> None:
    s = SKELETONS["smplx_42"]
    assert s.index("thor") == 9 and s.joints[s.index("lsho")] == "lsho"
    assert Skeleton.from_dict(s.to_dict()) == s


# ------------------------------------------------------------------------ CLI
def test_cli_lists_skeletons() -> None:
    result = CliRunner().invoke(cli, ["skeletons"])
    assert result.exit_code == 0, result.output
    for name in SKELETONS:
        assert name in result.output
    listed = json.loads(CliRunner().invoke(cli, ["skeletons", "--json"]).output)
    assert listed == {n: s.num_joints for n, s in SKELETONS.items()}


def test_cli_shows_one_skeleton_as_json_and_table(tmp_path) -> None:
    result = CliRunner().invoke(cli, ["skeletons", "smplx_42", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == SKELETONS["smplx_42"].to_dict()
    table = CliRunner().invoke(cli, ["skeletons", "smplx_42"])
    assert table.exit_code == 0 and "thor" in table.output and "(isolated)" in table.output
    path = tmp_path / "stick.json"
    path.write_text(json.dumps(USER_SKELETON), encoding="utf-8")
    user = CliRunner().invoke(cli, ["skeletons", str(path), "--json"])
    assert user.exit_code == 0 and json.loads(user.output)["name"] == "stick_figure"


def test_cli_reports_bad_skeletons_cleanly(tmp_path) -> None:
    result = CliRunner().invoke(cli, ["skeletons", "nonsense"])
    assert result.exit_code == 1
    assert "Error" in result.output and "ntu_kinect_25" in result.output
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(_broken(flip=[0, 1, 2, 5, 6, 4, 3, 8, 7])), encoding="utf-8")
    bad = CliRunner().invoke(cli, ["skeletons", str(path)])
    assert bad.exit_code == 1 and "involution" in bad.output and "Traceback" not in bad.output
