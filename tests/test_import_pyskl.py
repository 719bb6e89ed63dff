"""Restricted unpickler, ``msclr import pyskl`` and ``msclr export`` (pyskl annotation pickles)."""

from __future__ import annotations

import builtins
import json
import os
import pickle
import subprocess
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import require_file

from msclr.cli import cli
from msclr.errors import ImportFormatError, MsclrError, UnsafePickleError
from msclr.pipeline.cache import Cache, CacheWriter, Clip
from msclr.pipeline.datasets.importers import import_pyskl
from msclr.pipeline.datasets.pyskl import export_pyskl, read_annotations
from msclr.pipeline.datasets.safe_pickle import safe_load, safe_loads

UTD = "utd_mhad/utd_mhad_3d.pkl"


# ------------------------------------------------------------------ restricted unpickler
class _Payload:
    """Unpickling this calls ``func(*args)``: the classic malicious pickle."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _evil_annotation_file(path: Path, marker: Path) -> Path:
    payload = _Payload(os.system, f"touch {marker}")
    data = {"split": {}, "annotations": [{"frame_dir": "a", "label": 0, "keypoint": payload}]}
    path.write_bytes(pickle.dumps(data))
    return path


def test_refuses_os_system_before_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = _evil_annotation_file(tmp_path / "evil.pkl", marker)
    with pytest.raises(UnsafePickleError) as err:
        safe_load(evil)
    message = str(err.value)
    assert f"{os.system.__module__}.system" in message  # posix.system / nt.system
    assert "not a plain annotation pickle" in message or "not plain data" in message
    assert str(evil) in message
    assert not marker.exists()


@pytest.mark.parametrize(
    "payload",
    [
        _Payload(builtins.eval, "1 + 1"),
        _Payload(subprocess.Popen, ["true"]),
        _Payload(getattr, 1, "real"),
        _Payload(pickle.loads, b"x"),
        _Payload(np.load, "x.npy"),  # numpy, but not an array constructor
    ],
)
def test_refuses_other_globals(payload) -> None:
    name = f"{payload.func.__module__}.{payload.func.__name__}"
    with pytest.raises(UnsafePickleError, match=rf"`{name}`"):
        safe_loads(pickle.dumps([1, payload]))


def test_refuses_classes_and_persistent_ids() -> None:
    with pytest.raises(UnsafePickleError, match="collections.Counter"):
        safe_loads(pickle.dumps({"a": __import__("collections").Counter("ab")}))

    class WithPid(pickle.Pickler):
        def persistent_id(self, obj):
            return "storage" if isinstance(obj, bytes) else None

    import io

    buf = io.BytesIO()
    WithPid(buf).dump({"x": b"data"})
    with pytest.raises(UnsafePickleError, match="persistent IDs"):
        safe_loads(buf.getvalue())


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_plain_data_round_trips(protocol: int) -> None:
    data = {
        "split": {"train": ["a"], "val": []},
        "annotations": [{"frame_dir": "a", "label": np.int64(3), "keypoint": np.arange(24, dtype=np.float16).reshape(1, 2, 4, 3),
                         "total_frames": 2, "extra": (None, True, 1.5, b"\x00\xff", {1, 2}, frozenset([3]), 2j)}],
        "objects": np.array([1, "x", None], dtype=object),
        "scalar": np.float32(0.25),
        "dtype": np.dtype("<f4"),
    }
    loaded = safe_loads(pickle.dumps(data, protocol=protocol))
    ann = loaded["annotations"][0]
    assert ann["keypoint"].dtype == np.float16
    np.testing.assert_array_equal(ann["keypoint"], data["annotations"][0]["keypoint"])
    assert ann["label"] == 3 and ann["extra"] == data["annotations"][0]["extra"]
    assert loaded["objects"].tolist() == [1, "x", None]
    assert loaded["scalar"] == np.float32(0.25) and loaded["dtype"] == np.dtype("<f4")


def test_truncated_pickle_is_format_error(tmp_path: Path) -> None:
    data = pickle.dumps({"annotations": [np.zeros((1, 2, 3))]})
    with pytest.raises(ImportFormatError, match="not a readable pickle"):
        safe_loads(data[: len(data) // 2], source="half.pkl")
    with pytest.raises(ImportFormatError, match="cannot read"):
        safe_load(tmp_path / "absent.pkl")


def test_cli_refuses_malicious_pickle(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = _evil_annotation_file(tmp_path / "evil.pkl", marker)
    result = CliRunner().invoke(cli, ["import", "pyskl", str(evil), "--skeleton", "ntu_kinect_25",
                                      "--out", str(tmp_path / "cache")])
    assert result.exit_code == 1
    assert "refused to unpickle" in result.output and ".system" in result.output
    assert not marker.exists()
    assert not (tmp_path / "cache").exists()  # validated before anything is written


# ------------------------------------------------------------------ validation
def _ann(name: str, label: int, m: int, t: int, v: int = 25, c: int = 3, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    kp = rng.uniform(-1, 1, (m, t, v, c)).astype(np.float32)
    kp[..., 2:] += 3.0  # in front of the camera
    return {"frame_dir": name, "label": label, "keypoint": kp, "total_frames": t}


def _write(path: Path, anns: list[dict], split: dict | None = None) -> Path:
    path.write_bytes(pickle.dumps({"split": split or {}, "annotations": anns}))
    return path


@pytest.mark.parametrize(
    ("ann", "phrase"),
    [
        ({**_ann("a", 0, 1, 4, v=17, c=2), "keypoint_score": np.ones((1, 4, 17))}, "C=2 coordinates with 'keypoint_score'"),
        (_ann("a", 0, 1, 4, v=17), "V=17 joints but skeleton 'ntu_kinect_25' has 25"),
        (_ann("a", -1, 1, 4), "'label' must be a 0-based"),
        ({**_ann("a", 0, 1, 4), "label": 1.0}, "'label' must be a 0-based"),
        ({**_ann("a", 0, 1, 4), "total_frames": 5}, "'total_frames' is 5 but 'keypoint' has T=4"),
        ({**_ann("a", 0, 1, 4), "keypoint": np.zeros((4, 25, 3))}, "expected 4 axes"),
        ({**_ann("a", 0, 1, 4), "keypoint": [[0.0]]}, "must be a numeric array"),
        ({**_ann("a", 0, 1, 4), "frame_dir": "x/y"}, "'frame_dir' must be"),
        ({**_ann("a", 0, 1, 4), "keypoint": _ann("a", 0, 1, 4)["keypoint"] * 1000}, "--scale 0.001"),
        ({**_ann("a", 0, 1, 4), "keypoint": np.full((1, 4, 25, 3), np.nan, np.float32)}, "NaN"),
    ],
)
def test_validation_messages(tmp_path: Path, ann: dict, phrase: str) -> None:
    path = _write(tmp_path / "bad.pkl", [_ann("ok", 0, 1, 3), ann])
    with pytest.raises(ImportFormatError) as err:
        read_annotations(path, "ntu_kinect_25")
    assert phrase in str(err.value) and "annotation 1" in str(err.value)


def test_v_mismatch_suggests_matching_skeletons(tmp_path: Path) -> None:
    path = _write(tmp_path / "utd_like.pkl", [_ann("a", 0, 1, 3, v=20)])
    with pytest.raises(ImportFormatError, match="kinect_v1_20"):
        read_annotations(path, "ntu_kinect_25")


def test_structure_errors(tmp_path: Path) -> None:
    (tmp_path / "a.pkl").write_bytes(pickle.dumps({"foo": 1}))
    with pytest.raises(ImportFormatError, match="expected a dict with 'annotations'"):
        read_annotations(tmp_path / "a.pkl", "ntu_kinect_25")
    _write(tmp_path / "b.pkl", [_ann("a", 0, 1, 3), _ann("a", 1, 1, 3)])
    with pytest.raises(ImportFormatError, match="duplicate frame_dir"):
        read_annotations(tmp_path / "b.pkl", "ntu_kinect_25")
    (tmp_path / "c.pkl").write_bytes(pickle.dumps({"split": {"x": "abc"}, "annotations": [_ann("a", 0, 1, 3)]}))
    with pytest.raises(ImportFormatError, match="split 'x'"):
        read_annotations(tmp_path / "c.pkl", "ntu_kinect_25")
    with pytest.raises(MsclrError, match="--scale"):
        read_annotations(tmp_path / "b.pkl", "ntu_kinect_25", scale=0.0)


def test_scale_for_millimetres(tmp_path: Path) -> None:
    ann = _ann("a", 0, 1, 3)
    mm = {**ann, "keypoint": ann["keypoint"].astype(np.float64) * 1000}
    parsed = read_annotations(_write(tmp_path / "mm.pkl", [mm]), "ntu_kinect_25", scale=0.001)
    np.testing.assert_allclose(parsed.annotations[0].keypoint, ann["keypoint"], rtol=1e-6)


# ------------------------------------------------------------------ import + export round trip
def _synthetic(tmp_path: Path) -> tuple[Path, list[dict], dict]:
    anns = [
        _ann("S001C001P001R001A001", 0, 1, 5, seed=1),
        _ann("S001C002P003R002A050", 49, 2, 7, seed=2),
        _ann("S002C003P004R001A003", 2, 2, 1, seed=3),
    ]
    split = {"xsub_train": ["S001C001P001R001A001"], "xsub_val": ["S001C002P003R002A050", "S002C003P004R001A003"],
             "other": ["S002C003P004R001A003", "not_in_file"]}
    return _write(tmp_path / "anno.pkl", anns, split), anns, split


def test_synthetic_round_trip(tmp_path: Path) -> None:
    path, anns, split = _synthetic(tmp_path)
    report = import_pyskl(path, tmp_path / "cache", skeleton="ntu_kinect_25")
    assert (report.found, report.imported) == (3, 3)
    cache = Cache(tmp_path / "cache")
    assert cache.splits == split and cache.max_persons == 2
    assert cache.classes is not None and len(cache.classes) == 60  # NTU names -> NTU-60 class names
    clip = cache.clip("S001C002P003R002A050")
    assert (clip.label, clip.setup, clip.camera, clip.subject, clip.replication, clip.fps, clip.persons) == (
        49, 1, 2, 3, 2, 30.0, 2)
    assert clip.extractor == "import-pyskl"
    one = cache.clip("S001C001P001R001A001")
    assert one.persons == 1
    np.testing.assert_array_equal(one.poses["ntu_kinect_25"][:, 1], 0)  # padded slot

    out = tmp_path / "export.pkl"
    summary = export_pyskl(tmp_path / "cache", out, skeleton="ntu_kinect_25")
    assert summary["clips"] == 3
    exported = safe_load(out)
    by_name = {a["frame_dir"]: a for a in exported["annotations"]}
    for ann in anns:
        got = by_name[ann["frame_dir"]]
        assert set(got) == {"frame_dir", "label", "keypoint", "total_frames"}
        assert got["keypoint"].dtype == np.float32
        np.testing.assert_array_equal(got["keypoint"], ann["keypoint"])
        assert got["label"] == ann["label"] and got["total_frames"] == ann["total_frames"]
    assert exported["split"]["xsub_val"] == split["xsub_val"]
    assert exported["split"]["other"] == ["S002C003P004R001A003"]  # names not in the cache are dropped
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]

    # Resume: nothing is imported twice.
    again = import_pyskl(path, tmp_path / "cache", skeleton="ntu_kinect_25")
    assert (again.imported, again.already) == (0, 3)


def test_class_names_file_and_split_prefix(tmp_path: Path) -> None:
    anns = [_ann("clip_a", 0, 1, 3, v=20), _ann("clip_b", 1, 1, 4, v=20)]
    path = _write(tmp_path / "a.pkl", anns, {"xsub_train": ["clip_a"], "xsub_val": ["clip_b"], "fold1": ["clip_a"]})
    names = tmp_path / "classes.txt"
    names.write_text("first class\nsecond class\n", encoding="utf-8")
    runner = CliRunner()
    result = runner.invoke(cli, ["import", "pyskl", str(path), "--skeleton", "kinect_v1_20", "--out",
                                 str(tmp_path / "c"), "--class-names", str(names)])
    assert result.exit_code == 0, result.output
    cache = Cache(tmp_path / "c")
    assert cache.classes == ["first class", "second class"]
    clip = cache.clip("clip_a")
    assert clip.subject == -1 and np.isnan(clip.fps)  # not an NTU name
    result = runner.invoke(cli, ["export", str(tmp_path / "c"), "--out", str(tmp_path / "e.pkl"),
                                 "--split-prefix", "xsub"])
    assert result.exit_code == 0, result.output
    assert set(safe_load(tmp_path / "e.pkl")["split"]) == {"xsub_train", "xsub_val"}
    names.write_text("only one\n", encoding="utf-8")
    result = runner.invoke(cli, ["import", "pyskl", str(path), "--skeleton", "kinect_v1_20", "--out",
                                 str(tmp_path / "c2"), "--class-names", str(names)])
    assert result.exit_code == 1 and "names 1 classes" in result.output


def test_export_needs_skeleton_for_multi_convention_cache(tmp_path: Path) -> None:
    with CacheWriter(tmp_path / "c", ["ntu_kinect_25", "smpl_24"]) as writer:
        writer.add(Clip(name="x", poses={"ntu_kinect_25": np.ones((2, 2, 25, 3), np.float32),
                                         "smpl_24": np.ones((2, 2, 24, 3), np.float32)}, label=0))
    with pytest.raises(MsclrError, match="choose one with --skeleton"):
        export_pyskl(tmp_path / "c", tmp_path / "e.pkl")
    summary = export_pyskl(tmp_path / "c", tmp_path / "e.pkl", skeleton="smpl_24")
    assert summary["convention"] == "smpl_24"
    ann = safe_load(tmp_path / "e.pkl")["annotations"][0]
    assert ann["keypoint"].shape == (2, 2, 24, 3)  # persons inferred as 2 by the cache
    result = CliRunner().invoke(cli, ["export", str(tmp_path / "c"), "--out", str(tmp_path / "e.pkl"),
                                      "--skeleton", "blazepose_33"])
    assert result.exit_code == 1 and "no convention" in result.output


def test_utd_mhad_round_trip(shared_data: Path, tmp_path: Path) -> None:
    source = require_file(shared_data, UTD)
    runner = CliRunner()
    result = runner.invoke(cli, ["import", "pyskl", str(source), "--skeleton", "kinect_v1_20", "--out",
                                 str(tmp_path / "utd")])
    assert result.exit_code == 0, result.output
    info = json.loads(runner.invoke(cli, ["info", str(tmp_path / "utd"), "--json"]).output)
    assert info["clips"] == 861 and info["classes"]["count"] == 27
    assert info["splits"] == {"xsub_train": 431, "xsub_val": 430}
    result = runner.invoke(cli, ["export", str(tmp_path / "utd"), "--skeleton", "kinect_v1_20", "--out",
                                 str(tmp_path / "utd_export.pkl")])
    assert result.exit_code == 0, result.output
    original = safe_load(source)
    exported = safe_load(tmp_path / "utd_export.pkl")
    assert exported["split"] == original["split"]
    by_name = {a["frame_dir"]: a for a in exported["annotations"]}
    assert len(by_name) == len(original["annotations"]) == 861
    for ann in original["annotations"]:
        got = by_name[ann["frame_dir"]]
        assert got["label"] == ann["label"] and got["total_frames"] == ann["total_frames"]
        assert got["keypoint"].dtype == ann["keypoint"].dtype and got["keypoint"].shape == ann["keypoint"].shape
        np.testing.assert_array_equal(got["keypoint"], ann["keypoint"])
