"""Property-based fuzzing of the cache reader (:mod:`msclr.pipeline.cache`) and ``msclr info``.

A small valid cache (two conventions, three segments, a failed clip, splits, class names) is built
once with :class:`CacheWriter`; every example copies it and damages the copy: segment files
truncated, deleted, renamed, bit-flipped or replaced by foreign HDF5 files; ``msclr-cache.json``,
``splits.json`` and the segments' metadata rewritten with hypothesis-generated JSON.  Reading the
whole copy (``Cache(root)``, ``info()``, ``metadata()``, ``statuses()``, ``poses()`` of every
convention, ``clip()`` of every clip) must raise only :class:`~msclr.errors.CacheError` naming the
cache, or succeed; where the damage cannot alter pose data (truncation, deletion, JSON files) a
success must return exactly the data written.  Flipped bits outside the raw pose arrays must be caught
by the segment's seal (:mod:`msclr.pipeline.cache.seal`), before HDF5 reads the file: damaged HDF5
metadata could make libhdf5 loop forever.  Flipped bits inside the raw pose arrays are not checked (they
change coordinates), so there only shapes, types and the non-pose data are checked.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from msclr.cli import cli
from msclr.errors import CacheError
from msclr.pipeline.cache import Cache, CacheWriter, Clip
from msclr.pipeline.cache import seal as segment_seal

FUZZ = settings(max_examples=int(os.environ.get("MSCLR_FUZZ_EXAMPLES", "40")), deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
CONVENTIONS = {"ntu_kinect_25": 25, "kinect_v1_20": 20}
_WHERE = st.integers(0, 2**32 - 1).map(lambda n: random.Random(n).random())  # uniform, unlike st.floats
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)


def _clips() -> list[Clip]:
    rng = np.random.default_rng(0)
    clips = []
    for i in range(5):
        t = 3 + i
        clips.append(Clip(
            name=f"S001C001P001R001A00{i + 1}", label=i % 2, fps=30.0, extractor="synthetic", persons=2,
            poses={conv: rng.uniform(-1, 1, (t, 2, v, 3)).astype(np.float32) for conv, v in CONVENTIONS.items()},
            scores=rng.uniform(0, 1, (t, 2)).astype(np.float32), frame_indices=np.arange(t) * 2,
        ))
    clips.append(Clip(name="broken_video", status="decode_error", message="cannot decode frame 0"))
    return clips


CLIPS = {c.name: c for c in _clips()}


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fuzz-cache") / "template"
    with CacheWriter(root, list(CONVENTIONS), max_persons=2, classes=["drink", "eat"], segment_size=2) as writer:
        for clip in CLIPS.values():
            writer.add(clip)
        writer.set_splits({"train": ["S001C001P001R001A001", "S001C001P001R001A002", "elsewhere"],
                           "val": ["S001C001P001R001A003"]})
    assert len(list((root / "segments").glob("*.h5"))) == 3
    return root


_COUNTER = itertools.count()


def _copy(template: Path) -> Path:
    root = template.parent / f"work{next(_COUNTER)}"
    shutil.copytree(template, root)
    return root


def _read_everything(root: Path) -> Cache | None:
    """Every reader entry point; None on CacheError (checked to name the cache), raises anything else."""
    try:
        cache = Cache(root)
        info = cache.info()
        json.dumps(info)
        meta = cache.metadata()
        statuses = cache.statuses()
        assert set(cache.names) == {n for n, (s, _) in statuses.items() if s == "ok"}
        for conv, skel in cache.skeletons.items():
            for name, frames, poses in zip(cache.names, meta["frames"], cache.poses(conv), strict=True):
                assert poses.shape == (frames, cache.max_persons, skel.num_joints, 3), name
                assert poses.dtype == np.float32
        for name in sorted(statuses)[::2]:  # one clip per segment or so: each call opens a file
            clip = cache.clip(name)
            assert clip.status == statuses[name][0]
    except CacheError as err:
        assert str(root) in str(err), str(err)
        assert "\n" not in str(err)
        return None
    return cache


def _assert_data_intact(cache: Cache) -> None:
    """Every clip the damaged cache still returns is exactly the clip that was written."""
    for conv in cache.skeletons:
        for name, poses in zip(cache.names, cache.poses(conv), strict=True):
            np.testing.assert_array_equal(poses, CLIPS[name].poses[conv])
    for name in cache.names[1::2]:
        clip = cache.clip(name)
        np.testing.assert_array_equal(clip.scores, CLIPS[name].scores)
        np.testing.assert_array_equal(clip.frame_indices, CLIPS[name].frame_indices)
        assert clip.label == CLIPS[name].label


def _files(root: Path) -> list[Path]:
    return sorted((root / "segments").glob("*.h5")) + [root / "msclr-cache.json", root / "splits.json"]


# ------------------------------------------------------------------------ damage to files
_FILE_DAMAGE = st.tuples(st.sampled_from(["truncate", "delete", "empty", "directory", "rename-partial",
                                          "rename-hidden", "rename-order", "garbage"]), _WHERE, _WHERE)


@FUZZ
@given(damage=st.lists(_FILE_DAMAGE, min_size=1, max_size=2))
def test_truncated_deleted_renamed_files(template: Path, damage: list) -> None:
    root = _copy(template)
    for kind, which, where in damage:
        files = [f for f in _files(root) if f.is_file()]
        if not files:
            break
        path = files[int(which * len(files))]
        data = path.read_bytes()
        if kind == "truncate":
            path.write_bytes(data[: int(where * len(data))])
        elif kind == "delete":
            path.unlink()
        elif kind == "empty":
            path.write_bytes(b"")
        elif kind == "directory":
            path.unlink()
            path.mkdir()
        elif kind == "rename-partial":  # a killed writer's leftover: ignored by readers
            path.rename(path.with_name(path.name + ".partial"))
        elif kind == "rename-hidden":
            path.rename(path.with_name("." + path.name))
        elif kind == "rename-order":  # a segment that now sorts first
            path.rename(path.with_name("0" + path.name))
        else:
            path.write_bytes(random.Random(where).randbytes(len(data)))
    cache = _read_everything(root)
    if cache is not None:
        _assert_data_intact(cache)
    shutil.rmtree(root)


@FUZZ
@given(segment=_WHERE, flips=st.lists(st.tuples(_WHERE, st.integers(0, 7)), min_size=1, max_size=6))
def test_flipped_bits_in_segments(template: Path, segment: float, flips: list) -> None:
    root = _copy(template)
    segments = sorted((root / "segments").glob("*.h5"))
    path = segments[int(segment * len(segments))]
    pose_ranges = segment_seal.verify(path)
    data = bytearray(path.read_bytes())
    for where, bit in flips:
        data[int(where * len(data))] ^= 1 << bit
    changed = [i for i, (a, b) in enumerate(zip(data, path.read_bytes(), strict=True)) if a != b]
    path.write_bytes(bytes(data))
    cache = _read_everything(root)
    outside_poses = [i for i in changed if not any(o <= i < o + n for o, n in pose_ranges)]
    if outside_poses:
        assert cache is None, f"bytes {outside_poses} changed outside the pose data and the seal missed it"
    elif changed:  # only coordinates changed: everything else is still what was written
        assert cache is not None
        for name in cache.names:
            clip = cache.clip(name)
            np.testing.assert_array_equal(clip.scores, CLIPS[name].scores)
            np.testing.assert_array_equal(clip.frame_indices, CLIPS[name].frame_indices)
            assert clip.label == CLIPS[name].label
    shutil.rmtree(root)


@st.composite
def _foreign_hdf5(draw) -> dict:
    return {
        "datasets": draw(st.dictionaries(st.sampled_from(["meta", "poses", "poses/ntu_kinect_25", "scores",
                                                          "frame_indices", "data", "keypoint"]),
                                         st.sampled_from(["json", "zeros", "text", "group"]), max_size=4)),
        "format": draw(st.sampled_from([None, "msclr-cache-segment", "other", 1])),
        "version": draw(st.sampled_from([None, 1, 2, -1, "1"])),
        "meta": draw(st.one_of(_JSON, st.builds(lambda n: {"name": ["S001C001P001R001A001"] * n,
                                                          "offsets": list(range(n + 1))}, st.integers(0, 3)))),
    }


@FUZZ
@given(spec=_foreign_hdf5(), which=_WHERE)
def test_foreign_hdf5_instead_of_a_segment(template: Path, spec: dict, which: float) -> None:
    root = _copy(template)
    segments = sorted((root / "segments").glob("*.h5"))
    path = segments[int(which * len(segments))]
    path.unlink()
    with h5py.File(path, "w") as f:
        for attr in ("format", "version"):
            if spec[attr] is not None:
                f.attrs[attr] = spec[attr]
        for name, kind in spec["datasets"].items():
            try:
                if kind == "json":
                    f[name] = json.dumps(spec["meta"])
                elif kind == "zeros":
                    f[name] = np.zeros((3, 2, 25, 3), np.float32)
                elif kind == "text":
                    f[name] = "not json"
                else:
                    f.create_group(name)
            except (ValueError, TypeError, KeyError, OSError):  # "poses/x" under a dataset "poses": skip
                pass
    with pytest.raises(CacheError, match=str(path)):
        Cache(root)
    shutil.rmtree(root)


# ------------------------------------------------------------------------ damage to JSON
@FUZZ
@given(key=st.sampled_from(["format", "version", "units", "axes", "max_persons", "skeletons", "classes", None]),
       value=_JSON, skeleton_value=st.booleans())
def test_manifest_rewritten_with_generated_json(template: Path, key: str | None, value: object,
                                                skeleton_value: bool) -> None:
    root = _copy(template)
    manifest = root / "msclr-cache.json"
    data = json.loads(manifest.read_text())
    if key is None:
        data = value
    elif key == "skeletons" and skeleton_value:  # one convention's definition replaced
        data["skeletons"]["kinect_v1_20"] = value
    else:
        data[key] = value
    manifest.write_text(json.dumps(data))
    cache = _read_everything(root)
    if cache is not None:
        _assert_data_intact(cache)
        assert cache.max_persons == 2 and set(cache.skeletons) == set(CONVENTIONS)
    shutil.rmtree(root)


@FUZZ
@given(value=_JSON | st.dictionaries(st.text(max_size=5), st.lists(st.text(max_size=20), max_size=3), max_size=3))
def test_splits_rewritten_with_generated_json(template: Path, value: object) -> None:
    root = _copy(template)
    (root / "splits.json").write_text(json.dumps(value))
    cache = _read_everything(root)
    if cache is not None:
        assert cache.splits == value
        _assert_data_intact(cache)
    shutil.rmtree(root)


_META_EDIT = st.one_of(
    st.tuples(st.just("column"), st.sampled_from(["name", "label", "subject", "frames", "fps", "persons", "source",
                                                  "status", "message", "has_scores", "has_frame_indices",
                                                  "offsets"]), _JSON),
    st.tuples(st.just("item"), st.sampled_from(["name", "label", "frames", "fps", "persons", "status", "offsets",
                                                "has_scores", "extractor"]), _WHERE, _JSON),
    st.tuples(st.just("delete"), st.sampled_from(["name", "offsets", "frames", "status", "message"]), _WHERE),
)


@FUZZ
@given(which=_WHERE, edits=st.lists(_META_EDIT, min_size=1, max_size=3))
def test_segment_metadata_rewritten_with_generated_json(template: Path, which: float, edits: list) -> None:
    root = _copy(template)
    segments = sorted((root / "segments").glob("*.h5"))
    path = segments[int(which * len(segments))]
    with h5py.File(path, "r+") as f:
        meta = json.loads(f["meta"][()])
        for edit in edits:
            kind, column = edit[0], edit[1]
            if kind == "column":
                meta[column] = edit[2]
            elif kind == "delete":
                meta.pop(column, None)
            elif isinstance(meta.get(column), list) and meta[column]:
                meta[column][int(edit[2] * len(meta[column]))] = edit[3]
        del f["meta"]
        f["meta"] = json.dumps(meta)
    _read_everything(root)
    shutil.rmtree(root)


# ------------------------------------------------------------------------ msclr info
@pytest.mark.parametrize("damage", ["no-manifest", "manifest-garbage", "truncated-segment", "foreign-segment",
                                    "splits-garbage", "segment-is-directory", "cache-is-h5-file"])
def test_msclr_info_reports_damage_without_traceback(template: Path, damage: str) -> None:
    root = _copy(template)
    segment = sorted((root / "segments").glob("*.h5"))[1]
    target = root
    if damage == "no-manifest":
        (root / "msclr-cache.json").unlink()
        named = root / "msclr-cache.json"
    elif damage == "manifest-garbage":
        (root / "msclr-cache.json").write_bytes(b"\x89HDF\r\n\x1a\n\x00\xff")
        named = root / "msclr-cache.json"
    elif damage == "truncated-segment":
        segment.write_bytes(segment.read_bytes()[:3000])
        named = segment
    elif damage == "foreign-segment":
        segment.unlink()
        with h5py.File(segment, "w") as f:
            f["keypoint"] = np.zeros((2, 3))
        named = segment
    elif damage == "splits-garbage":
        (root / "splits.json").write_text('{"train": [1, 2]}')
        named = root / "splits.json"
    elif damage == "segment-is-directory":
        segment.unlink()
        segment.mkdir()
        named = segment
    else:
        target = named = segment  # a segment file given instead of the cache directory
    for args in (["info", str(target)], ["info", "--json", str(target)]):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 1, result.output
        assert result.output.startswith("Error: ") and str(named) in result.output, result.output
        assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)
    shutil.rmtree(root)


def test_msclr_info_on_intact_cache(template: Path) -> None:
    result = CliRunner().invoke(cli, ["info", "--json", str(template)])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["clips"] == 5 and info["failed"] == {"decode_error": 1} and info["segments"] == 3
    assert info["splits"] == {"train": 2, "val": 1} and info["splits_missing"] == {"train": 1, "val": 0}


def test_msclr_info_prints_markup_like_text_verbatim(tmp_path: Path) -> None:
    clip = CLIPS["S001C001P001R001A001"]
    root = tmp_path / "cache[/]"
    with CacheWriter(root, list(CONVENTIONS), max_persons=2) as writer:
        writer.add(Clip(name=clip.name, poses=clip.poses, extractor="metrabs", model_id="models/[v2]/[/]x"))
    result = CliRunner().invoke(cli, ["info", str(root)])
    assert result.exit_code == 0, result.output
    assert "models/[v2]/[/]x" in result.output.replace("\n", "")
