"""NTU ``.skeleton`` reader, body selection, and ``msclr import ntu``.

No real ``.skeleton`` file is freely redistributable, so the tests write their own from the format
spec (docs/method.md, "NTU .skeleton files").
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from msclr.cli import cli
from msclr.errors import ImportFormatError
from msclr.pipeline.cache import Cache
from msclr.pipeline.datasets.importers import import_ntu
from msclr.pipeline.datasets.ntu import ntu_class_names
from msclr.pipeline.datasets.ntu_skeleton import read_skeleton_file, select_bodies, skeleton_to_clip

BODY_A = 72057594037931101  # real-looking 64-bit Kinect body IDs
BODY_B = 72057594037931102
BODY_C = 72057594037931999

Frame = Sequence[tuple[int, np.ndarray]]  # per frame: (bodyID, xyz (25, 3))


# ------------------------------------------------------------------ writing files from the spec
def skeleton_text(frames: Sequence[Frame]) -> str:
    """The text of a ``.skeleton`` file with the given bodies per frame."""
    lines = [str(len(frames))]
    for bodies in frames:
        lines.append(str(len(bodies)))
        for body_id, xyz in bodies:
            lines.append(f"{body_id} 0 1 1 1 1 0 0.02764709 0.05745083 2")
            lines.append("25")
            for j, (x, y, z) in enumerate(np.asarray(xyz, dtype=np.float64)):
                # x y z depthX depthY colorX colorY orientationW/X/Y/Z trackingState
                lines.append(f"{x!r} {y!r} {z!r} 277.419 191.8218 1036.233 519.1677 "
                             f"-0.2059419 0.05349901 0.9692109 -0.1239193 {2 if j % 7 else 1}")
    return "\n".join(lines) + "\n"


def write_skeleton(path: Path, frames: Sequence[Frame]) -> Path:
    path.write_text(skeleton_text(frames))
    return path


def person(t: float, *, x0: float = 0.0, amplitude: float = 0.3, seed: int = 0) -> np.ndarray:
    """(25, 3) a tall (1.6 m), narrow body at time t, swaying and moving its arms."""
    rng = np.random.default_rng(seed)
    xyz = np.column_stack([x0 + rng.uniform(-0.2, 0.2, 25), np.linspace(-0.8, 0.8, 25),
                           3.0 + rng.uniform(-0.1, 0.1, 25)])
    xyz[:, 0] += amplitude * np.sin(t)
    xyz[:12, 1] += amplitude * np.cos(t)
    return np.round(xyz, 6)


def furniture(t: float) -> np.ndarray:
    """(25, 3) a wide (1.5 m), flat (0.4 m), almost static object that Kinect tracked as a body."""
    rng = np.random.default_rng(99)
    xyz = np.column_stack([np.linspace(-0.75, 0.75, 25), rng.uniform(-0.2, 0.2, 25), np.full(25, 2.5)])
    xyz[:, 2] += 0.001 * np.sin(t)
    return np.round(xyz, 6)


@pytest.fixture()
def two_body_file(tmp_path: Path) -> tuple[Path, list[np.ndarray]]:
    """3 frames: bodies A and B, then no body, then B listed before A."""
    a0, a2 = person(0.0), person(2.0)
    b0, b2 = (person(t, x0=1.0, amplitude=0.05, seed=1) for t in (0.0, 2.0))
    frames = [[(BODY_A, a0), (BODY_B, b0)], [], [(BODY_B, b2), (BODY_A, a2)]]
    path = write_skeleton(tmp_path / "S002C003P004R001A055.skeleton", frames)
    return path, [a0, b0, a2, b2]


# ------------------------------------------------------------------ reader
def test_reader_exact_values(two_body_file) -> None:
    path, (a0, b0, a2, b2) = two_body_file
    parsed = read_skeleton_file(path)
    assert parsed.num_frames == 3
    assert [t.body_id for t in parsed.tracks] == [BODY_A, BODY_B]  # 64-bit IDs kept exactly
    assert parsed.tracks[0].frames.tolist() == [0, 2] and parsed.tracks[1].frames.tolist() == [0, 2]
    np.testing.assert_array_equal(parsed.tracks[0].xyz, np.stack([a0, a2]))
    assert [len(b) for b in parsed.frame_bodies] == [2, 0, 2]


def test_clip_from_skeleton_file(two_body_file) -> None:
    path, (a0, b0, a2, b2) = two_body_file
    clip = skeleton_to_clip(path)
    assert clip.status == "ok" and clip.name == "S002C003P004R001A055"
    assert (clip.label, clip.setup, clip.camera, clip.subject, clip.replication) == (54, 2, 3, 4, 1)
    assert clip.fps == 30.0 and clip.extractor == "import-ntu" and clip.persons == 2
    poses = clip.poses["ntu_kinect_25"]
    assert poses.shape == (3, 2, 25, 3) and poses.dtype == np.float32
    # A moves more than B -> slot 0; the empty frame stays a zero row (video time axis kept).
    np.testing.assert_array_equal(poses[0, 0], a0.astype(np.float32))
    np.testing.assert_array_equal(poses[0, 1], b0.astype(np.float32))
    np.testing.assert_array_equal(poses[1], 0)
    np.testing.assert_array_equal(poses[2, 0], a2.astype(np.float32))
    np.testing.assert_array_equal(poses[2, 1], b2.astype(np.float32))
    assert clip.frame_indices.tolist() == [0, 1, 2]
    # st-gcn file order: frame 2 lists B first.
    file_order, persons = select_bodies(read_skeleton_file(path), body_order="file")
    assert persons == 2
    np.testing.assert_array_equal(file_order[2, 0], b2.astype(np.float32))
    np.testing.assert_array_equal(file_order[2, 1], a2.astype(np.float32))


def test_no_body_file_is_no_person(tmp_path: Path) -> None:
    clip = skeleton_to_clip(write_skeleton(tmp_path / "S001C001P001R001A001.skeleton", [[], []]))
    assert clip.status == "no_person" and not clip.poses and clip.label == 0


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


@pytest.mark.parametrize(
    ("mutate", "line", "phrase"),
    [
        # truncated: the last joint line is gone -> the missing line is named
        (lambda ls: ls[:-1], lambda n: n, "file ends early"),
        # truncated in the middle of the last line
        (lambda ls: ls[:-1] + [ls[-1][:15]], lambda n: n, "expected a joint line of 12 numbers"),
        # garbled number in the first joint line of the first body (line 5)
        (lambda ls: ls[:4] + ["0.1 0.2 zz 1 2 3 4 5 6 7 8 2"] + ls[5:], lambda n: 5, "non-numeric"),
        # wrong joint count (line 4)
        (lambda ls: ls[:3] + ["24"] + ls[4:], lambda n: 4, "expected 25 joints"),
        # body-info line with a missing value (line 3)
        (lambda ls: ls[:2] + [" ".join(ls[2].split()[:9])] + ls[3:], lambda n: 3, "body-info line"),
        # bodyID that is not an integer
        (lambda ls: ls[:2] + ["7.2e16" + ls[2][ls[2].index(" "):]] + ls[3:], lambda n: 3, "integer bodyID"),
        # frame count not a number (line 1)
        (lambda ls: ["three"] + ls[1:], lambda n: 1, "frame count"),
        # extra data after the declared frames
        (lambda ls: ls + ["", "1"], lambda n: n + 2, "unexpected data after the 3 declared frames"),
        # declared frame count larger than the content
        (lambda ls: ["4"] + ls[1:], lambda n: n + 1, "file ends early"),
    ],
)
def test_malformed_files_name_file_and_line(two_body_file, mutate, line, phrase) -> None:
    path, _ = two_body_file
    lines = _lines(path)
    path.write_text("\n".join(mutate(lines)) + "\n")
    with pytest.raises(ImportFormatError) as err:
        read_skeleton_file(path)
    message = str(err.value)
    assert str(path) in message and phrase in message
    assert f"line {line(len(lines))}:" in message


def test_binary_garbage_names_line(tmp_path: Path) -> None:
    path = tmp_path / "S001C001P001R001A001.skeleton"
    path.write_bytes(b"2\n1\n\xff\xfe garbage\n")
    with pytest.raises(ImportFormatError, match=r"S001C001P001R001A001\.skeleton: line 3: not a text"):
        read_skeleton_file(path)
    path.write_bytes(b"")
    with pytest.raises(ImportFormatError, match=r"line 1: file ends early"):
        read_skeleton_file(path)


# ------------------------------------------------------------------ body selection
def test_motion_picks_person_over_furniture(tmp_path: Path) -> None:
    # The table is listed first in every frame: file order puts it in slot 0.
    frames = [[(BODY_C, furniture(t)), (BODY_A, person(t))] for t in np.linspace(0, 3, 15)]
    parsed = read_skeleton_file(write_skeleton(tmp_path / "S001C001P001R001A010.skeleton", frames))
    poses, persons = select_bodies(parsed)
    assert persons == 1  # the spread filter dropped the table entirely
    np.testing.assert_array_equal(poses[:, 0], np.stack([person(t) for t in np.linspace(0, 3, 15)]).astype(np.float32))
    np.testing.assert_array_equal(poses[:, 1], 0)
    file_poses, file_persons = select_bodies(parsed, body_order="file")
    assert file_persons == 2
    np.testing.assert_array_equal(file_poses[:, 0], np.stack([furniture(t) for t in np.linspace(0, 3, 15)]).astype(np.float32))


def test_two_people_and_furniture(tmp_path: Path) -> None:
    ts = np.linspace(0, 3, 15)
    frames = [[(BODY_C, furniture(t)), (BODY_B, person(t, x0=1.0, amplitude=0.1, seed=2)),
               (BODY_A, person(t, amplitude=0.4))] for t in ts]
    poses, persons = select_bodies(read_skeleton_file(write_skeleton(tmp_path / "x.skeleton", frames)))
    assert persons == 2
    np.testing.assert_array_equal(poses[:, 0], np.stack([person(t, amplitude=0.4) for t in ts]).astype(np.float32))
    np.testing.assert_array_equal(poses[:, 1],
                                  np.stack([person(t, x0=1.0, amplitude=0.1, seed=2) for t in ts]).astype(np.float32))


def test_short_noise_track_dropped_and_gaps_kept(tmp_path: Path) -> None:
    # Person A visible in frames 0-5 and 10-19 (same bodyID), absent in 6-9; a 4-frame ghost
    # with huge motion appears in frames 6-9.  pyskl would compress A's frames; we keep them.
    frames: list[list] = []
    for f in range(20):
        if 6 <= f <= 9:
            frames.append([(BODY_B, person(f, amplitude=2.0, seed=5))])
        else:
            frames.append([(BODY_A, person(f * 0.3))])
    poses, persons = select_bodies(read_skeleton_file(write_skeleton(tmp_path / "x.skeleton", frames)))
    assert persons == 1
    for f in range(20):
        expected = 0 if 6 <= f <= 9 else person(f * 0.3).astype(np.float32)
        np.testing.assert_array_equal(poses[f, 0], expected)
    np.testing.assert_array_equal(poses[:, 1], 0)


def test_successive_tracks_share_a_slot(tmp_path: Path) -> None:
    # Kinect re-identifies one person under a new bodyID: spans do not overlap -> same slot.
    frames = [[(BODY_A if f < 7 else BODY_B, person(f * 0.4))] for f in range(14)]
    poses, persons = select_bodies(read_skeleton_file(write_skeleton(tmp_path / "x.skeleton", frames)))
    assert persons == 1
    np.testing.assert_array_equal(poses[:, 0], np.stack([person(f * 0.4) for f in range(14)]).astype(np.float32))


# ------------------------------------------------------------------ import into a cache
def _dataset(folder: Path) -> None:
    folder.mkdir()
    ts = np.linspace(0, 2, 5)
    for name in ("S001C001P001R001A001", "S001C002P003R001A050", "S002C003P008R002A060"):
        write_skeleton(folder / f"{name}.skeleton", [[(BODY_A, person(t))] for t in ts])
    write_skeleton(folder / "S001C002P005R002A008.skeleton", [[(BODY_A, person(0.0))]])  # on the missing list
    bad = skeleton_text([[(BODY_A, person(t))] for t in ts]).splitlines()
    (folder / "S001C001P002R001A002.skeleton").write_text("\n".join(bad[:-3]) + "\n")  # truncated


def test_import_ntu_cache_splits_failures_and_resume(tmp_path: Path) -> None:
    _dataset(tmp_path / "skel")
    calls: list[tuple[int, int]] = []
    report = import_ntu(tmp_path / "skel", tmp_path / "cache", progress=lambda d, t: calls.append((d, t)))
    assert (report.found, report.imported, report.skipped, report.benchmark) == (5, 3, 1, 60)
    assert calls[-1] == (5, 5)
    assert [f[:2] for f in report.failures] == [("S001C001P002R001A002", "parse_error")]
    assert "S001C001P002R001A002.skeleton: line" in report.failures[0][2]
    cache = Cache(tmp_path / "cache")
    assert cache.names == ["S001C001P001R001A001", "S001C002P003R001A050", "S002C003P008R002A060"]
    assert cache.classes == ntu_class_names(60)
    assert cache.statuses()["S001C001P002R001A002"][0] == "parse_error"
    assert cache.splits["xsub_train"] == ["S001C001P001R001A001", "S002C003P008R002A060"]
    assert cache.splits["xsub_val"] == ["S001C002P003R001A050"]
    assert cache.splits["xview_val"] == ["S001C001P001R001A001"]
    clip = cache.clip("S002C003P008R002A060")
    assert (clip.label, clip.setup, clip.camera, clip.subject, clip.replication, clip.fps) == (59, 2, 3, 8, 2, 30.0)
    np.testing.assert_array_equal(clip.poses["ntu_kinect_25"][:, 0], np.stack([person(t) for t in np.linspace(0, 2, 5)]).astype(np.float32))
    assert clip.frame_indices.tolist() == list(range(5))

    # Resume: ok clips are skipped, the repaired failure is retried and replaces its record.
    write_skeleton(tmp_path / "skel" / "S001C001P002R001A002.skeleton", [[(BODY_A, person(0.0))]])
    again = import_ntu(tmp_path / "skel", tmp_path / "cache")
    assert (again.already, again.imported, again.failures) == (3, 1, [])
    cache = Cache(tmp_path / "cache")
    assert len(cache) == 4 and cache.statuses()["S001C001P002R001A002"][0] == "ok"
    assert "S001C001P002R001A002" in cache.splits["xsub_train"]

    # --keep-missing imports the listed sample too.
    kept = import_ntu(tmp_path / "skel", tmp_path / "cache", skip_missing=False)
    assert kept.imported == 1 and "S001C002P005R002A008" in Cache(tmp_path / "cache").names


def test_import_ntu_benchmark_120(tmp_path: Path) -> None:
    folder = tmp_path / "skel"
    folder.mkdir()
    for name in ("S001C001P001R001A001", "S018C001P045R001A100"):
        write_skeleton(folder / f"{name}.skeleton", [[(BODY_A, person(0.1 * f))] for f in range(3)])
    report = import_ntu(folder, tmp_path / "c120")
    assert report.benchmark == 120 and report.imported == 2
    cache = Cache(tmp_path / "c120")
    assert len(cache.classes) == 120
    assert cache.splits["xset_train"] == ["S018C001P045R001A100"] and cache.splits["xset_val"] == ["S001C001P001R001A001"]
    report60 = import_ntu(folder, tmp_path / "c60", benchmark=60)
    assert report60.imported == 1 and report60.skipped == 1


def test_cli_import_ntu(tmp_path: Path) -> None:
    _dataset(tmp_path / "skel")
    runner = CliRunner()
    result = runner.invoke(cli, ["import", "ntu", str(tmp_path / "skel"), "--out", str(tmp_path / "cache"),
                                 "--body-order", "file"])
    assert result.exit_code == 1, result.output  # one file failed
    assert "3 imported" in result.output and "1 failed" in result.output
    assert "S001C001P002R001A002" in result.output and "parse_error" in result.output
    info = json.loads(runner.invoke(cli, ["info", str(tmp_path / "cache"), "--json"]).output)
    assert info["clips"] == 3 and info["failed"] == {"parse_error": 1}
    assert info["splits"]["xsub_train"] == 2


def test_cli_import_ntu_missing_folder(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(cli, ["import", "ntu", str(tmp_path / "empty"), "--out", str(tmp_path / "c")])
    assert result.exit_code == 1 and "no .skeleton files" in result.output


def test_import_ntu_unusable_file_name_is_a_per_file_failure(tmp_path: Path) -> None:
    skel = tmp_path / "skel"
    skel.mkdir()
    write_skeleton(skel / "S001C001P001R001A001.skeleton", [[(BODY_A, person(0.0))]])
    write_skeleton(skel / ".skeleton", [[(BODY_A, person(0.0))]])
    write_skeleton(skel / "bad\x07name.skeleton", [[(BODY_A, person(0.0))]])
    report = import_ntu(skel, tmp_path / "cache", benchmark=120)
    assert report.imported == 1
    assert sorted(status for _, status, _ in report.failures) == ["bad_name", "bad_name"]
    assert Cache(tmp_path / "cache").names == ["S001C001P001R001A001"]
