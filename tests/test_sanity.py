"""Import sanity checks (bone lengths, up axis, left/right, empty frames), ``--axes`` and ``--strict``; the
acceptance test on UTD-MHAD: its own joint order passes, a permuted one warns with the bone-length figure."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import require_file

from msclr.cli import cli
from msclr.errors import MsclrError
from msclr.pipeline.cache import Cache
from msclr.pipeline.datasets.sanity import axes_spec, check_skeletons, parse_axes
from msclr.pipeline.datasets.synthetic import make_dataset
from msclr.skeletons import get_skeleton

UTD = "utd_mhad/utd_mhad_3d.pkl"
NTU = get_skeleton("ntu_kinect_25")


@pytest.fixture(scope="module")
def clips() -> list[np.ndarray]:
    """Synthetic ntu_kinect_25 clips (T, 1, 25, 3): right joint order, y up, facing the camera."""
    return [s.poses["ntu_kinect_25"] for s in make_dataset(["ntu_kinect_25"], samples_per_class=4, seed=1)]


def test_parse_axes_and_presets() -> None:
    np.testing.assert_array_equal(parse_axes("y-down"), np.diag([-1, -1, 1]))
    np.testing.assert_array_equal(parse_axes("x,-y,z"), np.diag([1, -1, 1]))
    np.testing.assert_array_equal(parse_axes(" +x, z ,-y"), parse_axes("z-up"))
    assert axes_spec(parse_axes("-x,-y,z")) == "y-down" and axes_spec(parse_axes("y,x,-z")) == "y,x,-z"
    for bad in ("x,y", "x,x,z", "a,b,c", "--x,y,z", ""):
        with pytest.raises(MsclrError, match="--axes"):
            parse_axes(bad)


def test_right_data_pass(clips: list[np.ndarray]) -> None:
    report = check_skeletons(clips, NTU)
    assert report.warnings == []
    assert report.bone_spread < 0.25 and report.upright > 0.9 and report.left_on_left > 0.9
    assert report.empty_frames == 0 and report.clips == len(clips)


def test_wrong_joint_order_warns_with_figures(clips: list[np.ndarray]) -> None:
    perm = np.random.default_rng(0).permutation(25)
    report = check_skeletons([c[:, :, perm] for c in clips], NTU)
    assert any("bone lengths vary across frames by" in w and "joint order" in w for w in report.warnings)
    right = check_skeletons(clips, NTU)
    assert right.tree_ratio < 1.5 < 2.0 < report.tree_ratio  # little motion: the spread alone stays small here
    assert report.mean_bone_m > 2 * right.mean_bone_m


@pytest.mark.parametrize(("spec", "fix", "phrase"), [
    ("y-down", "y-down", "not y-up"),
    ("x,-z,y", "z-up", "not y-up"),
    ("-x,y,z", "-x,y,z", "left and right look swapped"),
])
def test_axes_problems_suggest_the_fix(clips: list[np.ndarray], spec: str, fix: str, phrase: str) -> None:
    turned = [c @ parse_axes(spec).T for c in clips]
    report = check_skeletons(turned, NTU)
    hits = [w for w in report.warnings if phrase in w]
    assert hits and f"--axes {fix}" in hits[0], report.warnings
    fixed = [c @ parse_axes(fix).T for c in turned]
    assert check_skeletons(fixed, NTU).warnings == []


def test_empty_frames_counted(clips: list[np.ndarray]) -> None:
    holed = [c.copy() for c in clips]
    for c in holed:
        c[: len(c) // 2] = 0
    report = check_skeletons(holed, NTU)
    assert report.empty_frames == sum(len(c) // 2 for c in clips)
    assert any("have no person" in w for w in report.warnings)


# ------------------------------------------------------------------ through the importers
def _ntu_files(folder: Path, clips: list[np.ndarray], perm: np.ndarray | None = None) -> Path:
    from test_import_ntu import BODY_A, write_skeleton

    folder.mkdir()
    for i, c in enumerate(clips[:6]):
        xyz = c[:, 0] if perm is None else c[:, 0, perm]
        write_skeleton(folder / f"S001C001P{i + 1:03d}R001A{i + 1:03d}.skeleton", [[(BODY_A, f)] for f in xyz])
    return folder


def test_import_ntu_checks_and_strict(tmp_path: Path, clips: list[np.ndarray]) -> None:
    runner = CliRunner()
    good = _ntu_files(tmp_path / "good", clips)
    result = runner.invoke(cli, ["import", "ntu", str(good), "--out", str(tmp_path / "c"), "--strict"])
    assert result.exit_code == 0, result.output
    assert "checks: 6 clips" in result.output and "warning" not in result.output
    bad = _ntu_files(tmp_path / "bad", clips, np.random.default_rng(2).permutation(25))
    result = runner.invoke(cli, ["import", "ntu", str(bad), "--out", str(tmp_path / "c2"), "--strict"])
    assert result.exit_code == 1 and "bone lengths vary" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "c2").exists()  # nothing written
    result = runner.invoke(cli, ["import", "ntu", str(bad), "--out", str(tmp_path / "c3")])
    assert result.exit_code == 0 and "warning: bone lengths vary" in result.output


def _utd(shared_data: Path) -> dict:
    return pickle.loads(require_file(shared_data, UTD).read_bytes())


def test_utd_mhad_right_order_passes_permuted_order_warns(shared_data: Path, tmp_path: Path) -> None:
    source = require_file(shared_data, UTD)
    runner = CliRunner()
    result = runner.invoke(cli, ["import", "pyskl", str(source), "--skeleton", "kinect_v1_20", "--out",
                                 str(tmp_path / "utd")])
    assert result.exit_code == 0, result.output
    assert "warning" not in result.output and "bone-length spread 11%" in result.output

    data = _utd(shared_data)
    perm = np.random.default_rng(0).permutation(20)
    for ann in data["annotations"]:
        ann["keypoint"] = np.ascontiguousarray(ann["keypoint"][:, :, perm])
    permuted = tmp_path / "permuted.pkl"
    permuted.write_bytes(pickle.dumps(data, protocol=4))
    result = runner.invoke(cli, ["import", "pyskl", str(permuted), "--skeleton", "kinect_v1_20", "--out",
                                 str(tmp_path / "p"), "--strict"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "bone lengths vary across frames by 64% of a typical bone" in result.output
    assert not (tmp_path / "p").exists()
    result = runner.invoke(cli, ["import", "pyskl", str(permuted), "--skeleton", "kinect_v1_20", "--out",
                                 str(tmp_path / "p")])
    assert result.exit_code == 0 and "warning: bone lengths vary across frames by 64%" in result.output
    assert len(Cache(tmp_path / "p")) == 861


def test_utd_mhad_axes_option(shared_data: Path, tmp_path: Path) -> None:
    data = _utd(shared_data)
    for ann in data["annotations"]:
        ann["keypoint"] = ann["keypoint"] * np.float32([-1, -1, 1])  # a y-down camera frame
    turned = tmp_path / "ydown.pkl"
    turned.write_bytes(pickle.dumps(data, protocol=4))
    runner = CliRunner()
    result = runner.invoke(cli, ["import", "pyskl", str(turned), "--skeleton", "kinect_v1_20", "--out",
                                 str(tmp_path / "a"), "--strict"])
    assert result.exit_code == 1 and "--axes y-down" in result.output
    result = runner.invoke(cli, ["import", "pyskl", str(turned), "--skeleton", "kinect_v1_20", "--out",
                                 str(tmp_path / "b"), "--axes", "y-down", "--strict"])
    assert result.exit_code == 0, result.output
    original = _utd(shared_data)["annotations"][5]
    got = Cache(tmp_path / "b").poses("kinect_v1_20", [original["frame_dir"]])[0]
    np.testing.assert_array_equal(got[:, 0], original["keypoint"][0])
    result = runner.invoke(cli, ["import", "pyskl", str(turned), "--skeleton", "kinect_v1_20", "--out",
                                 str(tmp_path / "c"), "--axes", "up"])
    assert result.exit_code == 2 and "--axes" in result.output and not (tmp_path / "c").exists()
