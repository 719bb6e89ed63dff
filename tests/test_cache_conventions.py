"""Several conventions in one cache: adding conventions to the clips a cache holds (``CacheWriter(extend=True)``,
``add_poses``), per-convention reads, compaction, SIGKILL at any point, and the importers / extract adding to an
existing cache (generated data; UTD-MHAD with a 16-joint subset convention from a user skeleton file)."""

from __future__ import annotations

import json
import pickle
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import require_file

from msclr.cli import cli
from msclr.errors import CacheError
from msclr.extractors.base import ConstantExtractor
from msclr.extractors.video import write_video
from msclr.pipeline.cache import Cache, CacheWriter, Clip, MergePlan
from msclr.pipeline.cache.compact import compact_cache
from msclr.pipeline.datasets.importers import import_ntu
from msclr.pipeline.datasets.synthetic import ACTIONS, make_dataset
from msclr.pipeline.extract import ExtractOptions, extract_videos

UTD = "utd_mhad/utd_mhad_3d.pkl"
UTD_16 = [0, 1, 2, 3, 4, 5, 6, 8, 9, 10, 12, 13, 14, 16, 17, 18]  # no hands, no feet
UTD_16_TOML = """
name = "utd_16"
joints = ["head", "shoulder_center", "spine", "hip_center", "left_shoulder", "left_elbow", "left_wrist",
          "right_shoulder", "right_elbow", "right_wrist", "left_hip", "left_knee", "left_ankle",
          "right_hip", "right_knee", "right_ankle"]
edges = [["head", "shoulder_center"], ["spine", "shoulder_center"], ["hip_center", "spine"],
         ["left_shoulder", "shoulder_center"], ["left_elbow", "left_shoulder"], ["left_wrist", "left_elbow"],
         ["right_shoulder", "shoulder_center"], ["right_elbow", "right_shoulder"], ["right_wrist", "right_elbow"],
         ["left_hip", "hip_center"], ["left_knee", "left_hip"], ["left_ankle", "left_knee"],
         ["right_hip", "hip_center"], ["right_knee", "right_hip"], ["right_ankle", "right_knee"]]
centre = "shoulder_center"
shoulders = ["left_shoulder", "right_shoulder"]
"""


def _samples(n_per_class: int = 2):
    return make_dataset(["ntu_kinect_25", "smpl_24"], samples_per_class=n_per_class, subjects=2, seed=0)


def _base_cache(root: Path, samples, *, failed: str | None = None) -> None:
    """The samples' ntu_kinect_25 poses (M = 1), plus one failed clip."""
    with CacheWriter(root, ["ntu_kinect_25"], max_persons=1, classes=list(ACTIONS), segment_size=4) as writer:
        for s in samples:
            writer.add(Clip(s.name, poses={"ntu_kinect_25": s.poses["ntu_kinect_25"]}, label=s.label,
                            subject=s.subject))
        if failed:
            writer.add(Clip(failed, status="decode_error", message="broken"))


# ------------------------------------------------------------------ the cache API
def test_add_conventions_per_convention_reads_and_errors(tmp_path: Path) -> None:
    samples = _samples()
    root = tmp_path / "c"
    _base_cache(root, samples[:-2], failed="bad")
    with pytest.raises(CacheError, match="extend=True"):
        CacheWriter(root, ["smpl_24"], max_persons=1)
    with CacheWriter(root, ["smpl_24"], max_persons=1, extend=True, segment_size=3) as writer:
        assert writer.conventions == ["smpl_24"] and list(writer.skeletons) == ["ntu_kinect_25", "smpl_24"]
        for s in samples[:5]:  # a shorter T than the clip's ntu_kinect_25 poses: allowed
            writer.add_poses(Clip(s.name, poses={"smpl_24": s.poses["smpl_24"][:20]}, label=s.label))
        with pytest.raises(CacheError, match="is not in cache"):
            writer.add_poses(Clip(samples[-1].name, poses={"smpl_24": samples[-1].poses["smpl_24"]}))
        with pytest.raises(CacheError, match="failure status"):
            writer.add_poses(Clip("bad", poses={"smpl_24": samples[0].poses["smpl_24"]}))
        with pytest.raises(CacheError, match="smpl_24.*ntu_kinect_25"):  # a new clip needs every convention
            writer.add(Clip("new", poses={"smpl_24": samples[0].poses["smpl_24"]}))
    cache = Cache(root)
    added = sorted(s.name for s in samples[:5])
    assert cache.by_convention["smpl_24"] == added
    assert cache.names_with() == added == cache.names_with(["smpl_24", "ntu_kinect_25"])
    assert cache.names_with(["ntu_kinect_25"]) == cache.names == sorted(s.name for s in samples[:-2])
    assert cache.conventions_of(samples[0].name) == ["ntu_kinect_25", "smpl_24"]
    assert cache.conventions_of(samples[6].name) == ["ntu_kinect_25"] and cache.conventions_of("bad") == []
    poses = cache.poses("smpl_24", added)
    by_name = {s.name: s for s in samples}
    for name, p in zip(added, poses, strict=True):
        np.testing.assert_array_equal(p, by_name[name].poses["smpl_24"][:20])
    np.testing.assert_array_equal(cache.poses("ntu_kinect_25", [added[0]])[0], by_name[added[0]].poses["ntu_kinect_25"])
    with pytest.raises(CacheError, match=r"hold no 'smpl_24' poses.*names_with"):
        cache.poses("smpl_24", cache.names)
    with pytest.raises(CacheError, match="did you mean 'smpl_24'"):
        cache.names_with(["smpl_42"])
    info = cache.info()
    assert info["holding"] == {"ntu_kinect_25": 10, "smpl_24": 5} and info["complete"] == 5
    result = CliRunner().invoke(cli, ["info", str(root)])
    assert result.exit_code == 0 and "5 of 10 clips hold all of them" in result.output

    # compaction keeps every record and convention, and the addition records still win
    report = compact_cache(root)
    assert (report.segments_before, report.segments_after) == (5, 2)  # clip records, then additions
    again = Cache(root)
    assert again.by_convention == cache.by_convention and again.statuses() == cache.statuses()
    for a, b in zip(again.poses("smpl_24", added), poses, strict=True):
        np.testing.assert_array_equal(a, b)
    assert again.storage_order(added, convention="smpl_24") == added


def test_redefined_convention_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "c"
    _base_cache(root, _samples(1))
    other = tmp_path / "ntu_kinect_25.toml"
    other.write_text('name = "ntu_kinect_25"\njoints = ["a", "b"]\nedges = [["a", "b"]]\ncentre = "a"\n')
    with pytest.raises(CacheError, match="another definition"):
        CacheWriter(root, [str(other)], max_persons=1, extend=True)


CHILD = r"""
import sys
sys.path.insert(0, sys.argv[1])
from test_cache_conventions import _samples
from msclr.pipeline.cache import Cache, CacheWriter, Clip, MergePlan
root = sys.argv[2]
with CacheWriter(root, ["smpl_24"], max_persons=1, extend=True, segment_size=2, writer_id="add") as w:
    plan = MergePlan(Cache(root), w.conventions)
    for s in _samples(3):
        decision, _ = plan.decide(s.name, s.label)
        if decision == "add":
            print(s.name, flush=True)
            w.add_poses(Clip(s.name, poses={"smpl_24": s.poses["smpl_24"]}, label=s.label))
print("finished", flush=True)
"""


def _content(root: Path) -> dict:
    cache = Cache(root)
    return {c: dict(zip(names, (p.tobytes() for p in cache.poses(c, names)), strict=True))
            for c, names in cache.by_convention.items()}


def test_sigkill_while_adding_then_rerun_completes(tmp_path: Path) -> None:
    samples = _samples(3)
    reference = tmp_path / "reference"
    _base_cache(reference, samples)
    child = [sys.executable, "-c", CHILD, str(Path(__file__).parent)]
    assert subprocess.run([*child, str(reference)], capture_output=True, timeout=120).returncode == 0
    expected = _content(reference)
    assert len(expected["smpl_24"]) == len(samples)

    root = tmp_path / "killed"
    _base_cache(root, samples)
    rnd = random.Random(7)
    for _ in range(4):
        proc = subprocess.Popen([*child, str(root)], stdout=subprocess.PIPE, text=True)
        target, seen = rnd.randrange(0, 12), 0
        for _line in proc.stdout:  # type: ignore[union-attr]
            seen += 1
            if seen > target:
                break
        time.sleep(rnd.uniform(0.0, 0.003))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        proc.stdout.close()  # type: ignore[union-attr]
        got = _content(root)  # readable; what is there is exact
        assert got["ntu_kinect_25"] == expected["ntu_kinect_25"]
        assert all(expected["smpl_24"][n] == v for n, v in got.get("smpl_24", {}).items())
    assert subprocess.run([*child, str(root)], capture_output=True, timeout=120).returncode == 0
    assert _content(root) == expected


# ------------------------------------------------------------------ importers and extract into a cache
def _pickle(path: Path, anns: list[dict], split: dict | None = None) -> Path:
    path.write_bytes(pickle.dumps({"split": split or {}, "annotations": anns}, protocol=4))
    return path


def test_import_pyskl_adds_to_existing_cache_and_reports(tmp_path: Path) -> None:
    samples = _samples()
    root = tmp_path / "c"
    _base_cache(root, samples[:-1])
    anns = [{"frame_dir": s.name, "label": s.label, "keypoint": s.poses["smpl_24"].transpose(1, 0, 2, 3),
             "total_frames": s.poses["smpl_24"].shape[0]} for s in samples]
    anns[1]["label"] = (anns[1]["label"] + 1) % len(ACTIONS)  # conflicts with the cache
    path = _pickle(tmp_path / "smpl.pkl", anns, {"xsub_train": [samples[0].name], "mine": [samples[2].name]})
    Cache(root).add_splits({"xsub_train": [samples[3].name]})
    result = CliRunner().invoke(cli, ["import", "pyskl", str(path), "--skeleton", "smpl_24", "--out", str(root)])
    assert result.exit_code == 1, result.output  # a label conflict
    assert "added the convention(s) smpl_24" in result.output and "label_differs" in result.output
    assert "not_in_cache" in result.output and samples[-1].name in result.output
    n = len(samples) - 2
    assert f"{n} clips now hold every convention of the cache (ntu_kinect_25, smpl_24)" in result.output
    cache = Cache(root)
    assert cache.names_with() == sorted(s.name for i, s in enumerate(samples[:-1]) if i != 1)
    assert cache.splits["xsub_train"] == [samples[3].name] and cache.splits["mine"] == [samples[2].name]
    assert cache.max_persons == 1  # the import used the cache's person slots


def test_import_ntu_adds_to_extracted_cache(tmp_path: Path) -> None:
    from test_import_ntu import BODY_A, person, write_skeleton

    names = ["S001C001P001R001A001", "S001C002P003R001A050", "S002C003P008R002A060"]
    root = tmp_path / "c"
    with CacheWriter(root, ["smpl_24"], max_persons=2, classes=None) as writer:
        for name in names[:2]:
            writer.add(Clip(name, poses={"smpl_24": np.full((4, 2, 24, 3), 0.5, np.float32)},
                            label=int(name[-3:]) - 1))
    folder = tmp_path / "skel"
    folder.mkdir()
    for name in names:
        write_skeleton(folder / f"{name}.skeleton", [[(BODY_A, person(t))] for t in np.linspace(0, 2, 5)])
    report = import_ntu(folder, root)
    assert (report.added, report.imported, report.complete) == (2, 0, 2)
    assert [r[:2] for r in report.refused] == [(names[2], "not_in_cache")]
    assert report.new_conventions == ["ntu_kinect_25"]
    cache = Cache(root)
    assert cache.names_with() == names[:2] and len(cache.classes) == 60
    assert cache.poses("ntu_kinect_25", names[:2])[0].shape == (5, 2, 25, 3)
    again = import_ntu(folder, root)  # resume: nothing left to add
    assert (again.added, again.already) == (0, 2)


def test_extract_adds_conventions_to_imported_cache(tmp_path: Path) -> None:
    samples = _samples(1)
    root = tmp_path / "c"
    _base_cache(root, samples[:3])
    videos = tmp_path / "v"
    videos.mkdir()
    for s in samples[:4]:  # the fourth is not in the cache
        write_video(videos / f"{s.name}.avi", [np.full((32, 32, 3), 40 * i, np.uint8) for i in range(5)],
                    codec="MJPG")

    def factory() -> ConstantExtractor:
        return ConstantExtractor(conventions=("smplx_42",))

    summary = extract_videos([videos], root, factory, ["smplx_42"], ExtractOptions(max_persons=1))
    assert summary.added == 3 and summary.complete == 3 and summary.new_conventions == ["smplx_42"]
    assert [(r.name, r.status) for r in summary.refused] == [(samples[3].name, "not_in_cache")]
    assert summary.exit_code == 0
    cache = Cache(root)
    assert cache.names_with() == sorted(s.name for s in samples[:3])
    assert cache.poses("smplx_42", [samples[0].name])[0].shape == (5, 1, 42, 3)
    assert cache.clip(samples[0].name).extractor == ""  # the clip record is the import's, unchanged
    again = extract_videos([videos], root, factory, ["smplx_42"], ExtractOptions(max_persons=1))
    assert again.added == 0 and not again.model_loaded and len(again.refused) == 1


def test_utd_mhad_with_a_16_joint_subset_convention(shared_data: Path, tmp_path: Path) -> None:
    source = require_file(shared_data, UTD)
    data = pickle.loads(source.read_bytes())
    subset = [dict(a, keypoint=np.ascontiguousarray(a["keypoint"][:, :, UTD_16])) for a in data["annotations"]]
    subset_file = _pickle(tmp_path / "utd16.pkl", subset[1:], data["split"])  # one clip left out
    definition = tmp_path / "utd_16.toml"
    definition.write_text(UTD_16_TOML)
    out = tmp_path / "utd"
    runner = CliRunner()
    result = runner.invoke(cli, ["import", "pyskl", str(source), "--skeleton", "kinect_v1_20", "--out", str(out)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, ["import", "pyskl", str(subset_file), "--skeleton", str(definition), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "860 clips now hold every convention of the cache (kinect_v1_20, utd_16)" in result.output
    assert "warning" not in result.output
    info = json.loads(runner.invoke(cli, ["info", str(out), "--json"]).output)
    assert info["holding"] == {"kinect_v1_20": 861, "utd_16": 860} and info["complete"] == 860
    cache = Cache(out)
    names = cache.names_with(["kinect_v1_20", "utd_16"])
    assert data["annotations"][0]["frame_dir"] not in names
    full, part = cache.poses("kinect_v1_20", names[:20]), cache.poses("utd_16", names[:20])
    for a, b in zip(full, part, strict=True):
        np.testing.assert_array_equal(a[:, :, UTD_16], b)
    assert cache.splits == data["split"]
    plan = MergePlan(cache, ["utd_16"])
    assert plan.decide(names[0])[0] == "done"
    # a 1-epoch two-convention run on the clips that hold both (the clip left out of utd_16 is not used)
    recipe = tmp_path / "tiny.toml"
    recipe.write_text("[data]\nlength = 16\n[model]\nhidden_channels = 4\nhidden_dim = 8\nfeature_dim = 8\n"
                      "queue_size = 64\n[pretrain]\nbatch_size = 64\n[linear]\nepochs = 2\n")
    run = tmp_path / "run"
    result = runner.invoke(cli, ["train", str(out), "--out", str(run), "--config", str(recipe), "--skeletons",
                                 f"kinect_v1_20,{definition}", "--split", "xsub", "--epochs", "1", "--device", "cpu",
                                 "--no-tensorboard", "-q", "--threads", "1"])
    assert result.exit_code == 0, result.output
    run_info = json.loads((run / "run.json").read_text())
    assert run_info["conventions"] == ["kinect_v1_20", "utd_16"]
    assert run_info["split"]["train_clips"] + run_info["split"]["test_clips"] == 860
