"""Tests of the HDF5 skeleton cache (msclr/pipeline/cache.py) and `msclr info`."""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from msclr.cli import cli
from msclr.errors import CacheError
from msclr.pipeline.cache import AXES, UNITS, Cache, CacheWriter, Clip
from msclr.skeletons import SKELETONS

CONVS = ("ntu_kinect_25", "smplx_42")
M = 2


def make_clip(i: int, *, status: str = "ok", seed: int = 0) -> Clip:
    """Deterministic synthetic clip number ``i`` (also used by the child processes)."""
    name = f"S{1 + i % 3:03d}C001P{i:03d}R001A{1 + i % 5:03d}"
    if status != "ok":
        return Clip(name, status=status, message=f"failure {i}", source=f"/videos/{name}.avi",
                    extractor="metrabs", model_id="m1", fps=25.0)
    rng = np.random.default_rng(1000 * seed + i)
    t = int(rng.integers(1, 40))
    poses = {c: rng.normal(0.0, 1.0, (t, M, SKELETONS[c].num_joints, 3)).astype(np.float32) for c in CONVS}
    if i % 4 == 1:  # a one-person clip: the second slot stays zero
        for arr in poses.values():
            arr[:, 1] = 0.0
    return Clip(
        name, poses, label=i % 5, subject=i, camera=1, setup=1 + i % 3, replication=1,
        fps=30.0 if i % 3 else math.nan, source=f"/videos/{name}.avi", extractor="metrabs",
        model_id="https://example.org/metrabs_s", persons=1 if i % 4 == 1 else 2,
        scores=rng.random((t, M)).astype(np.float32) if i % 2 else None,
        frame_indices=np.arange(t, dtype=np.int64) * 2 if i % 3 == 0 else None,
        message="",
    )


def assert_same_clip(a: Clip, b: Clip) -> None:
    for f in ("name", "label", "subject", "camera", "setup", "replication", "source", "extractor",
              "model_id", "persons", "status", "message", "frames"):
        assert getattr(a, f) == getattr(b, f), f
    assert (math.isnan(a.fps) and math.isnan(b.fps)) or a.fps == b.fps
    assert sorted(a.poses) == sorted(b.poses)
    for c in a.poses:
        assert a.poses[c].dtype == np.float32 and b.poses[c].dtype == np.float32
        np.testing.assert_array_equal(a.poses[c], b.poses[c])
    for f in ("scores", "frame_indices"):
        x, y = getattr(a, f), getattr(b, f)
        assert (x is None) == (y is None), f
        if x is not None:
            np.testing.assert_array_equal(x, y)


def write(root: Path, clips, **kw) -> None:
    kw.setdefault("segment_size", 4)
    with CacheWriter(root, list(CONVS), max_persons=M, **kw) as w:
        for c in clips:
            w.add(c)


# ----------------------------------------------------------------- round trip
@pytest.mark.parametrize("compression", [None, "lzf"])
def test_round_trip_exact(tmp_path: Path, compression: str | None) -> None:
    root = tmp_path / "cache"
    clips = [make_clip(i) for i in range(11)] + [make_clip(11, status="decode_error")]
    write(root, clips, classes=[f"a{k}" for k in range(5)], compression=compression)
    assert len(list((root / "segments").glob("*.h5"))) == 3
    cache = Cache(root)
    assert cache.units == UNITS == "m" and cache.axes == AXES and cache.max_persons == M
    assert cache.skeletons == {c: SKELETONS[c] for c in CONVS}
    assert cache.classes == [f"a{k}" for k in range(5)]
    ok = sorted(c.name for c in clips[:11])
    assert cache.names == ok and len(cache) == 11
    for c in clips:
        assert_same_clip(cache.clip(c.name), c)
    assert cache.statuses()[clips[-1].name] == ("decode_error", "failure 11")
    # bulk read, in a custom order, equals the per-clip arrays
    order = [clips[i].name for i in (7, 0, 3)]
    for conv in CONVS:
        got = cache.poses(conv, order)
        for name, arr in zip(order, got, strict=True):
            np.testing.assert_array_equal(arr, next(c for c in clips if c.name == name).poses[conv])
        everything = cache.poses(conv)  # whole-segment reads
        for name, arr in zip(cache.names, everything, strict=True):
            np.testing.assert_array_equal(arr, cache.clip(name).poses[conv])
        for name in cache.names:  # single-clip reads (a small part of a segment)
            np.testing.assert_array_equal(cache.poses(conv, [name])[0], cache.clip(name).poses[conv])
    assert sorted(cache.storage_order()) == cache.names
    seg_of = {n: i for i, seg in enumerate(cache._index.segments) for n in seg.names}
    assert [seg_of[n] for n in cache.storage_order()] == sorted(seg_of[n] for n in cache.names)
    meta = cache.metadata()
    assert list(meta["name"]) == ok
    by_name = {c.name: c for c in clips}
    assert list(meta["label"]) == [by_name[n].label for n in ok]
    assert list(meta["frames"]) == [by_name[n].frames for n in ok]
    assert meta["fps"].dtype == np.float64 and np.isnan(meta["fps"]).sum() == sum(
        math.isnan(by_name[n].fps) for n in ok)
    # the segment records units and axes on every pose dataset
    seg = sorted((root / "segments").glob("*.h5"))[0]
    with h5py.File(seg, "r") as f:
        assert f["poses/smplx_42"].attrs["units"] == "m"
        assert f["poses/smplx_42"].attrs["axes"] == AXES


def test_persons_inferred_and_float64_cast(tmp_path: Path) -> None:
    root = tmp_path / "c"
    clip = make_clip(1)  # one-person clip
    clip.persons = 0
    clip.poses = {c: a.astype(np.float64) for c, a in clip.poses.items()}
    write(root, [clip])
    got = Cache(root).clip(clip.name)
    assert got.persons == 1
    assert got.poses["ntu_kinect_25"].dtype == np.float32


def test_info_values(tmp_path: Path) -> None:
    root = tmp_path / "c"
    clips = [make_clip(i) for i in range(6)] + [make_clip(6, status="no_person"), make_clip(7, status="no_person")]
    write(root, clips)
    with CacheWriter(root, CONVS) as w:
        w.set_splits({"train": [clips[0].name, clips[1].name, "missing"], "val": [clips[2].name]})
    info = Cache(root).info()
    frames = [c.frames for c in clips[:6]]
    assert info["clips"] == 6
    assert info["failed"] == {"no_person": 2}
    assert info["conventions"] == {"ntu_kinect_25": 25, "smplx_42": 42}
    assert info["frames"] == {"total": sum(frames), "min": min(frames), "median": float(np.median(frames)),
                              "max": max(frames)}
    assert info["classes"]["count"] == len({c.label for c in clips[:6]})
    assert info["splits"] == {"train": 2, "val": 1} and info["splits_missing"] == {"train": 1, "val": 0}
    assert info["persons"] == {"1": 2, "2": 4}
    assert info["extractors"] == {"metrabs": 6}
    assert info["fps"] == {"min": 30.0, "max": 30.0}
    assert info["units"] == "m" and info["size_bytes"] > 0
    json.dumps(info)  # plain JSON


# ---------------------------------------------------------- resume and commits
def test_resume_done_and_latest_wins(tmp_path: Path) -> None:
    root = tmp_path / "c"
    write(root, [make_clip(i) for i in range(3)] + [make_clip(3, status="decode_error")])
    with CacheWriter(root, CONVS) as w:
        assert w.done == {make_clip(i).name for i in range(4)}
        w.add(make_clip(3))  # the retried failure now succeeds
        w.add(make_clip(0, seed=5))  # a rewrite replaces the first version
    cache = Cache(root)
    assert cache.statuses()[make_clip(3).name] == ("ok", "")
    assert make_clip(3).name in cache.names
    assert_same_clip(cache.clip(make_clip(0).name), make_clip(0, seed=5))
    # within one buffer the later add wins too
    with CacheWriter(root, CONVS, segment_size=10) as w:
        w.add(make_clip(1, seed=7))
        w.add(make_clip(1, seed=8))
    assert_same_clip(Cache(root).clip(make_clip(1).name), make_clip(1, seed=8))


def test_exit_on_error_keeps_completed_clips(tmp_path: Path) -> None:
    root = tmp_path / "c"
    with pytest.raises(RuntimeError), CacheWriter(root, CONVS, segment_size=100) as w:
        w.add(make_clip(0))
        w.add(make_clip(1))
        raise RuntimeError("extractor crashed")
    assert Cache(root).names == sorted([make_clip(0).name, make_clip(1).name])


def test_partials_ignored_and_stale_ones_removed(tmp_path: Path) -> None:
    root = tmp_path / "c"
    write(root, [make_clip(0)], writer_id="w1")
    seg_dir = root / "segments"
    from msclr.pipeline.cache.diskio import host_tag as _host

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = seg_dir / f"w1@{_host()}.{dead.pid}.000001.123.partial"
    live = seg_dir / f"w1@{_host()}.{os.getppid()}.000001.123.partial"
    other = seg_dir / f"w2@{_host()}.{dead.pid}.000001.123.partial"
    stale_tmp = root / f".msclr-cache.json.{_host()}.{dead.pid}.123.tmp"
    for p in (stale, live, other, stale_tmp):
        p.write_bytes(b"\x89HDF\r\n\x1a\ngarbage, half written")
    assert Cache(root).names == [make_clip(0).name]
    CacheWriter(root, CONVS, writer_id="w1").close()
    assert not stale.exists() and not stale_tmp.exists()  # its own writer id / host, dead process
    assert live.exists() and other.exists()  # a running process / another writer's
    assert Cache(root).names == [make_clip(0).name]


# ------------------------------------------------------- crash and concurrency
CHILD = r"""
import sys, time
sys.path.insert(0, sys.argv[1])
from test_cache import make_clip, CONVS
from msclr.pipeline.cache import CacheWriter
root, start, stop, wid, size = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], int(sys.argv[6])
with CacheWriter(root, list(CONVS), max_persons=2, writer_id=wid, segment_size=size) as w:
    for i in range(start, stop):
        name = make_clip(i).name
        if name in w.done:
            continue
        clip = make_clip(i, status="decode_error") if i % 7 == 3 else make_clip(i)
        print(i, flush=True)  # announced before the add: line k is this run's k-th add
        w.add(clip)
print("finished", flush=True)
"""


def run_child(root: Path, start: int, stop: int, wid: str = "w", size: int = 3) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(Path(__file__).parent), str(root), str(start), str(stop), wid, str(size)],
        stdout=subprocess.PIPE, text=True,
    )


def cache_content(root: Path) -> dict:
    cache = Cache(root)
    return {n: cache.clip(n) for n in sorted(cache.statuses())}


def test_sigkill_mid_write_leaves_readable_cache_and_rerun_completes(tmp_path: Path) -> None:
    n = 120
    reference = tmp_path / "reference"
    assert run_child(reference, 0, n).wait(timeout=120) == 0
    expected = cache_content(reference)
    assert len(expected) == n

    root = tmp_path / "killed"
    rnd = random.Random(1234)
    for _ in range(5):
        child = run_child(root, 0, n)
        # every 3rd add of a run commits a segment (segment_size=3): kill during or just after it
        target = 3 * rnd.randrange(1, 12) + rnd.choice((0, 0, 1))
        seen = 0
        for _line in child.stdout:  # type: ignore[union-attr]
            seen += 1
            if seen >= target:
                break
        time.sleep(rnd.uniform(0.0, 0.003))
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=60)
        child.stdout.close()  # type: ignore[union-attr]
        if not (root / "msclr-cache.json").exists():
            continue
        got = cache_content(root)  # readable, every committed clip exact
        assert set(got) <= set(expected)
        for name, clip in got.items():
            assert_same_clip(clip, expected[name])
    rerun = run_child(root, 0, n)
    assert rerun.wait(timeout=120) == 0
    rerun.stdout.close()  # type: ignore[union-attr]
    got = cache_content(root)
    assert sorted(got) == sorted(expected)
    for name in expected:
        assert_same_clip(got[name], expected[name])
    assert Cache(root).info()["clips"] == Cache(reference).info()["clips"]


def test_two_concurrent_writers(tmp_path: Path) -> None:
    root = tmp_path / "shared"
    a = run_child(root, 0, 40, "a", 4)  # both create the cache at the same time
    b = run_child(root, 30, 70, "b", 5)  # 30..39 written by both: identical content
    assert a.wait(timeout=120) == 0 and b.wait(timeout=120) == 0
    a.stdout.close()  # type: ignore[union-attr]
    b.stdout.close()  # type: ignore[union-attr]
    got = cache_content(root)
    assert len(got) == 70
    for i in range(70):
        want = make_clip(i, status="decode_error") if i % 7 == 3 else make_clip(i)
        assert_same_clip(got[want.name], want)
    names = [p.name for p in (root / "segments").iterdir()]
    assert any("-a-" in x for x in names) and any("-b-" in x for x in names)
    assert not [x for x in names if x.endswith(".partial")]


def test_same_settings_reopen_and_conflicts(tmp_path: Path) -> None:
    root = tmp_path / "c"
    write(root, [make_clip(0)])
    CacheWriter(root, {c: SKELETONS[c] for c in reversed(CONVS)}).close()  # order does not matter
    with pytest.raises(CacheError, match=r"ntu_kinect_25 \(25 joints\).*new cache path"):
        CacheWriter(root, ["ntu_kinect_25"])
    with pytest.raises(CacheError, match="person slots"):
        CacheWriter(root, CONVS, max_persons=1)
    w = CacheWriter(root, None)  # append with the cache's own settings
    assert w.skeletons == {c: SKELETONS[c] for c in CONVS} and w.max_persons == M
    w.close()
    CacheWriter(root, CONVS, classes=["x"] * 5).close()  # classes added to a cache without them
    assert Cache(root).classes == ["x"] * 5
    with pytest.raises(CacheError, match="class names"):
        CacheWriter(root, CONVS, classes=["y"] * 5)


def test_concurrent_manifest_creation_identical(tmp_path: Path) -> None:
    from msclr.pipeline.cache.diskio import create_exclusive as _create_exclusive

    path = tmp_path / "m.json"
    assert _create_exclusive(path, "one")
    assert not _create_exclusive(path, "two")
    assert path.read_text() == "one"
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


# ----------------------------------------------------------------- bad caches
def test_missing_and_non_directory_paths(tmp_path: Path) -> None:
    with pytest.raises(CacheError, match="does not exist"):
        Cache(tmp_path / "nope")
    h5 = tmp_path / "poses.h5"
    with h5py.File(h5, "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(CacheError, match=r"poses\.h5 is an HDF5 file, not a cache directory.*msclr extract"):
        Cache(h5)
    text = tmp_path / "notes.txt"
    text.write_text("hi")
    with pytest.raises(CacheError, match="notes.txt is a file"):
        Cache(text)
    with pytest.raises(CacheError, match="msclr-cache.json is missing"):
        Cache(tmp_path)


def test_foreign_and_newer_manifest(tmp_path: Path) -> None:
    root = tmp_path / "c"
    write(root, [make_clip(0)])
    manifest = root / "msclr-cache.json"
    data = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**data, "version": 99}))
    with pytest.raises(CacheError, match="newer msclr"):
        Cache(root)
    manifest.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(CacheError, match="msclr-cache.json is not a msclr cache manifest"):
        Cache(root)
    manifest.write_text("{not json")
    with pytest.raises(CacheError, match="msclr-cache.json cannot be read as JSON"):
        Cache(root)


def test_truncated_and_foreign_segments(tmp_path: Path) -> None:
    root = tmp_path / "c"
    write(root, [make_clip(i) for i in range(8)])
    segs = sorted((root / "segments").glob("*.h5"))
    data = segs[1].read_bytes()
    segs[1].write_bytes(data[: len(data) // 2])
    with pytest.raises(CacheError, match=rf"{segs[1].name} is unreadable.*delete this file and rerun"):
        Cache(root)
    segs[1].unlink()  # the documented fix: delete it and rerun the writer
    write(root, [make_clip(i) for i in range(8)])
    assert len(Cache(root)) == 8
    foreign = root / "segments" / "zzz.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(CacheError, match="zzz.h5 is unreadable.*not a msclr cache segment"):
        Cache(root)
    with pytest.raises(CacheError, match="zzz.h5"):
        CacheWriter(root, CONVS)


def test_reader_errors(tmp_path: Path) -> None:
    root = tmp_path / "c"
    write(root, [make_clip(0), make_clip(3, status="decode_error")])
    cache = Cache(root)
    with pytest.raises(CacheError, match="no convention 'smpl_24'"):
        cache.poses("smpl_24")
    with pytest.raises(CacheError, match="has no poses: status 'decode_error'"):
        cache.poses("smplx_42", [make_clip(3).name])
    with pytest.raises(CacheError, match="'nope' is not in cache"):
        cache.clip("nope")


# ----------------------------------------------------------------- validation
def _bad(field: str, value):
    clip = make_clip(2)
    if field.startswith("poses."):
        clip.poses = dict(clip.poses)
        conv = field.split(".", 1)[1]
        if value is None:
            del clip.poses[conv]
        else:
            clip.poses[conv] = value
    else:
        setattr(clip, field, value)
    return clip


T2 = make_clip(2).frames
NAN_POSES = np.zeros((T2, 2, 25, 3), np.float32)
NAN_POSES[0, 0, 0, 0] = np.nan


@pytest.mark.parametrize(
    ("clip", "message"),
    [
        (_bad("name", ""), "clip name '' is invalid"),
        (_bad("name", "a/b"), "without '/'"),
        (_bad("poses.ntu_kinect_25", np.zeros((T2, 2, 25, 3), np.int32)), "not floating point"),
        (_bad("poses.ntu_kinect_25", NAN_POSES), "NaN or infinite"),
        (_bad("poses.ntu_kinect_25", np.zeros((T2, 2, 24, 3), np.float32)), r"expected \(T, M=2, V=25, 3\)"),
        (_bad("poses.ntu_kinect_25", np.zeros((T2, 1, 25, 3), np.float32)), r"expected \(T, M=2, V=25, 3\)"),
        (_bad("poses.ntu_kinect_25", np.zeros((0, 2, 25, 3), np.float32)), "T >= 1"),
        (_bad("poses.ntu_kinect_25", np.zeros((T2 + 1, 2, 25, 3), np.float32)), "same frames"),
        (_bad("poses.ntu_kinect_25", np.full((T2, 2, 25, 3), 1500.0, np.float32)), "millimetres"),
        (_bad("poses.ntu_kinect_25", None), r"missing \['ntu_kinect_25'\]"),
        (_bad("poses.smpl_24", np.zeros((T2, 2, 24, 3), np.float32)), r"unexpected \['smpl_24'\]"),
        (_bad("status", "decode_error"), "must have no poses"),
        (_bad("status", ""), "status must be"),
        (_bad("persons", 3), "between 0 and max_persons=2"),
        (_bad("label", -2), "label must be"),
        (_bad("fps", -1.0), "fps must be positive"),
        (_bad("scores", np.zeros((T2, 3), np.float32)), "scores must be"),
        (_bad("frame_indices", np.zeros(T2, np.float32)), "frame_indices must be"),
        (_bad("source", None), "source must be a string"),
    ],
)
def test_validation_errors(tmp_path: Path, clip: Clip, message: str) -> None:
    with CacheWriter(tmp_path / "c", CONVS) as w:
        with pytest.raises(CacheError, match=message):
            w.add(clip)
        w.add(make_clip(0))
    assert Cache(tmp_path / "c").names == [make_clip(0).name]  # a rejected clip never lands


# ------------------------------------------------------------------------ CLI
def test_cli_info_json_and_table(tmp_path: Path) -> None:
    root = tmp_path / "c"
    write(root, [make_clip(i) for i in range(5)] + [make_clip(5, status="no_person")])
    runner = CliRunner()
    result = runner.invoke(cli, ["info", str(root), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == Cache(root).info()
    result = runner.invoke(cli, ["info", str(root)])
    assert result.exit_code == 0, result.output
    assert "smplx_42 (V=42)" in result.output and "no_person 1" in result.output
    result = runner.invoke(cli, ["info", str(tmp_path / "missing")])
    assert result.exit_code == 1 and "Error:" in result.output and "does not exist" in result.output
    assert "Traceback" not in result.output


def test_empty_cache_info_and_foreign_directory(tmp_path: Path) -> None:
    root = tmp_path / "empty"
    CacheWriter(root, ["ntu_kinect_25"], max_persons=1).close()
    info = Cache(root).info()
    assert info["clips"] == 0 and info["frames"] == {"total": 0, "min": None, "median": None, "max": None}
    assert info["fps"] is None and info["persons"] == {}
    result = CliRunner().invoke(cli, ["info", str(root)])
    assert result.exit_code == 0, result.output
    other = tmp_path / "photos"
    other.mkdir()
    (other / "a.jpg").write_bytes(b"x")
    with pytest.raises(CacheError, match="already contains other files"):
        CacheWriter(other, CONVS)
