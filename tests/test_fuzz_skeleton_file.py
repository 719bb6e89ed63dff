"""Property-based fuzzing of the NTU ``.skeleton`` reader (:mod:`msclr.pipeline.datasets.ntu_skeleton`).

- Valid files generated from the format spec (random frame / body / ID structure) parse exactly and
  the body selection keeps its documented shapes and invariants.
- Mutated files (lines deleted, duplicated, replaced by garbage, counts changed, truncation, raw
  bytes inserted) and random bytes raise only :class:`~msclr.errors.ImportFormatError` naming the
  file (and the line where there is one), or parse into data the cache accepts: a garbled file must
  become one ``parse_error`` clip, never abort a long import.
"""

from __future__ import annotations

import math
import os
import random
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from msclr.errors import CacheError, ImportFormatError
from msclr.pipeline.datasets.ntu_skeleton import (
    MAX_ABS_METRES,
    NUM_JOINTS,
    read_skeleton_file,
    select_bodies,
    skeleton_to_clip,
)

FUZZ = settings(max_examples=int(os.environ.get("MSCLR_FUZZ_EXAMPLES", "150")), deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
NAME = "S001C001P001R001A001.skeleton"


@st.composite
def skeleton_files(draw) -> tuple[str, list[list[tuple[int, np.ndarray]]]]:
    """(text, frames): a valid file and, per frame, (bodyID, xyz (25, 3)) as written."""
    ids = draw(st.lists(st.integers(0, 2**64 - 1), min_size=1, max_size=3, unique=True))
    num_frames = draw(st.integers(0, 14))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    scale = draw(st.sampled_from([1e-6, 0.5, 3.0, MAX_ABS_METRES]))
    lines = [str(num_frames)]
    frames = []
    for _ in range(num_frames):
        bodies = draw(st.lists(st.sampled_from(ids), max_size=3))
        lines.append(str(len(bodies)))
        frame = []
        for body_id in bodies:
            xyz = np.round(rng.uniform(-scale, scale, (NUM_JOINTS, 3)), 6)
            lines.append(f"{body_id} 0 1 1 1 1 0 0.02764709 -0.05745083 2")
            lines.append(str(NUM_JOINTS))
            lines.extend(f"{x!r} {y!r} {z!r} 277.4 191.8 1036.2 519.1 -0.2 0.05 0.97 -0.12 2" for x, y, z in xyz)
            frame.append((body_id, xyz))
        frames.append(frame)
    eol = draw(st.sampled_from(["\n", "\r\n"]))
    return eol.join(lines) + eol * draw(st.integers(0, 2)), frames


def _check_parsed(path: Path) -> None:
    """Everything a successfully parsed file must satisfy, down to what the cache accepts."""
    parsed = read_skeleton_file(path)
    assert parsed.num_frames == len(parsed.frame_bodies) >= 0
    for bodies in parsed.frame_bodies:
        for index, xyz in bodies:
            assert 0 <= index < len(parsed.tracks)
            assert xyz.shape == (NUM_JOINTS, 3) and np.isfinite(xyz).all()
            assert np.abs(xyz).max() <= MAX_ABS_METRES
    for track in parsed.tracks:
        assert track.xyz.shape == (len(track.frames), NUM_JOINTS, 3) and len(track.frames) >= 1
        assert (np.diff(track.frames) >= 0).all() and track.frames[-1] < parsed.num_frames
        assert math.isfinite(track.motion)
    for order in ("motion", "file"):
        poses, persons = select_bodies(parsed, max_persons=2, body_order=order)
        assert poses.shape == (parsed.num_frames, 2, NUM_JOINTS, 3) and poses.dtype == np.float32
        assert np.isfinite(poses).all() and 0 <= persons <= 2
        assert (persons == 0) == (not parsed.tracks)
    clip = skeleton_to_clip(path)
    assert clip.name == "S001C001P001R001A001" and clip.label == 0
    if clip.status == "ok":
        poses = clip.poses["ntu_kinect_25"]
        assert poses.shape[0] == parsed.num_frames >= 1
        np.testing.assert_array_equal(clip.frame_indices, np.arange(parsed.num_frames))
    else:
        assert clip.status == "no_person" and not clip.poses
    _cache_accepts(path.parent, clip)


def _cache_accepts(folder: Path, clip) -> None:
    """The cache writer validates the clip like ``msclr import ntu`` does (no CacheError)."""
    from msclr.pipeline.cache import CacheWriter

    root = folder / "cache"
    try:
        with CacheWriter(root, ["ntu_kinect_25"], max_persons=2) as writer:
            writer.add(clip)
    except CacheError as err:  # pragma: no cover - a failure here is the bug this test looks for
        pytest.fail(f"a parsed .skeleton file gives a clip the cache refuses: {err}")
    finally:
        import shutil

        shutil.rmtree(root, ignore_errors=True)


@FUZZ
@given(spec=skeleton_files())
def test_valid_files_parse_exactly(tmp_path: Path, spec) -> None:
    text, frames = spec
    path = tmp_path / NAME
    path.write_bytes(text.encode("ascii"))
    parsed = read_skeleton_file(path)
    assert parsed.num_frames == len(frames)
    for t, (written, read) in enumerate(zip(frames, parsed.frame_bodies, strict=True)):
        assert len(written) == len(read)
        for (body_id, xyz), (index, got) in zip(written, read, strict=True):
            np.testing.assert_array_equal(got, xyz)  # repr() round-trips float64 exactly
            assert parsed.tracks[index].body_id == body_id
            assert t in parsed.tracks[index].frames
        # "file" order: the first two bodies as listed, per frame
        poses, _ = select_bodies(parsed, max_persons=2, body_order="file")
        for slot in range(2):
            expected = written[slot][1] if slot < len(written) else np.zeros((NUM_JOINTS, 3))
            np.testing.assert_array_equal(poses[t, slot], expected.astype(np.float32))
    # "motion" order: every non-empty slot row is one of that frame's bodies, time axis kept
    poses, persons = select_bodies(parsed, max_persons=2)
    for t, written in enumerate(frames):
        candidates = [xyz.astype(np.float32) for _, xyz in written]
        for slot in range(2):
            row = poses[t, slot]
            if row.any():
                assert any(np.array_equal(row, c) for c in candidates)
    # same ID twice in a frame -> two tracks
    assert len(parsed.tracks) >= max((len(f) for f in frames), default=0)
    _check_parsed(path)


# where an edit lands, as a fraction of the file: hashed from a drawn seed, because hypothesis' own
# floats and integers favour 0 (line 1) and most edits would hit the frame count
_WHERE = st.integers(0, 2**32 - 1).map(lambda n: random.Random(n).random())
_GARBAGE = st.one_of(
    st.sampled_from(["", " ", "nan", "inf", "-inf", "1e999", "1e5", "-1", "+3", "3.0", "0x10", "1_000", "25 25",
                     "99999999999999999999", "\t", "\x0c", "\x1c", "a b c", "0 " * 11 + "0", "0 " * 12 + "0",
                     "1e30 0 0 0 0 0 0 0 0 0 0 0", "nan 0 0 0 0 0 0 0 0 0 0 0", "123.5 1 2 3 4 5 6 7 8 9 10 11"]),
    st.text(st.characters(codec="ascii"), max_size=12),
)
_EDIT = st.one_of(
    st.tuples(st.just("delete"), _WHERE),
    st.tuples(st.just("duplicate"), _WHERE),
    st.tuples(st.just("replace"), _WHERE, _GARBAGE),
    st.tuples(st.just("insert"), _WHERE, _GARBAGE),
    st.tuples(st.just("token"), _WHERE, st.integers(0, 12), _GARBAGE),
    st.tuples(st.just("count"), _WHERE, st.integers(0, 10**6)),
)
_BYTE_EDIT = st.one_of(
    st.tuples(st.just("truncate"), _WHERE),
    st.tuples(st.just("bytes"), _WHERE, st.binary(min_size=1, max_size=4)),
    st.tuples(st.just("flip"), _WHERE, st.integers(0, 7)),
)


def _edit_lines(lines: list[str], edit: tuple) -> None:
    i = int(edit[1] * len(lines)) if lines else 0
    kind = edit[0]
    if not lines and kind != "insert":
        return
    if kind == "delete":
        del lines[i]
    elif kind == "duplicate":
        lines.insert(i, lines[i])
    elif kind == "replace":
        lines[i] = edit[2]
    elif kind == "insert":
        lines.insert(i, edit[2])
    elif kind == "token":
        tokens = lines[i].split() or [""]
        tokens[edit[2] % len(tokens)] = edit[3]
        lines[i] = " ".join(tokens)
    else:  # count: a structural line gets another number
        counts = [k for k, line in enumerate(lines) if line.strip().isdigit()]
        if counts:
            lines[counts[int(edit[1] * len(counts))]] = str(edit[2])


def _edit_bytes(data: bytearray, edit: tuple) -> None:
    if not data:
        return
    i = int(edit[1] * len(data))
    if edit[0] == "truncate":
        del data[i:]
    elif edit[0] == "bytes":
        data[i:i] = edit[2]
    else:
        data[i] ^= 1 << edit[2]


def _expect_documented(path: Path) -> None:
    try:
        _check_parsed(path)
    except ImportFormatError as err:
        message = str(err)
        assert str(path) in message
        assert "line " in message or "cannot read" in message, message
        assert "\n" not in message


@FUZZ
@given(spec=skeleton_files(), edits=st.lists(_EDIT, min_size=1, max_size=3),
       byte_edits=st.lists(_BYTE_EDIT, max_size=2))
def test_mutated_files_give_only_documented_errors(tmp_path: Path, spec, edits, byte_edits) -> None:
    lines = spec[0].split("\n")
    for edit in edits:
        _edit_lines(lines, edit)
    data = bytearray("\n".join(lines).encode("ascii"))
    for edit in byte_edits:
        _edit_bytes(data, edit)
    path = tmp_path / NAME
    path.write_bytes(bytes(data))
    _expect_documented(path)


_VALUE = st.one_of(st.floats().map(repr), st.integers().map(str), _GARBAGE)


@FUZZ
@given(spec=skeleton_files(), edits=st.lists(st.tuples(_WHERE, st.integers(0, 11), _VALUE), min_size=1, max_size=4))
def test_value_edits_in_joint_and_body_lines(tmp_path: Path, spec, edits) -> None:
    """Values change but the structure stays: the file parses into what the cache takes, or the
    error names the line."""
    lines = spec[0].split("\n")
    editable = [k for k, line in enumerate(lines) if len(line.split()) in (10, 12)]
    for where, token, value in edits:
        if editable:
            k = editable[int(where * len(editable))]
            tokens = lines[k].split()
            tokens[token % len(tokens)] = value
            lines[k] = " ".join(tokens)
    path = tmp_path / NAME
    path.write_bytes("\n".join(lines).encode("ascii"))
    _expect_documented(path)


@FUZZ
@given(data=st.binary(max_size=400), prefix=st.sampled_from([b"", b"1\n1\n", b"1\n1\n7 0 0 0 0 0 0 0 0 0\n25\n"]))
def test_random_bytes_give_only_documented_errors(tmp_path: Path, data: bytes, prefix: bytes) -> None:
    path = tmp_path / NAME
    path.write_bytes(prefix + data)
    _expect_documented(path)


@pytest.mark.parametrize(
    ("joint", "phrase"),
    [("1e30 0 0", "beyond 100 m"), ("0 -250.5 0", "beyond 100 m"), ("1e400 0 0", "non-finite"),
     ("nan 0 0", "non-finite")],
)
def test_out_of_range_positions_name_the_line(tmp_path: Path, joint: str, phrase: str) -> None:
    """Found by fuzzing: 1e30 m parsed fine, then the cache refused the clip and the whole import stopped."""
    body = ["1", "1", "5 0 0 0 0 0 0 0 0 2", "25"] + ["0.1 0.2 3.0 0 0 0 0 0 0 0 0 2"] * 25
    body[4 + 7] = f"{joint} 0 0 0 0 0 0 0 0 2"
    path = tmp_path / NAME
    path.write_text("\n".join(body) + "\n")
    with pytest.raises(ImportFormatError, match=rf"{NAME}: line 12: .*{phrase}"):
        read_skeleton_file(path)


def test_garbled_file_is_one_failure_in_an_import(tmp_path: Path) -> None:
    """A file the parser used to accept with absurd coordinates no longer stops ``import_ntu``."""
    from msclr.pipeline.cache import Cache
    from msclr.pipeline.datasets.importers import import_ntu

    folder = tmp_path / "skeletons"
    folder.mkdir()
    good = ["1", "1", "5 0 0 0 0 0 0 0 0 2", "25"] + [f"0.{k} {k / 10} 3.0 0 0 0 0 0 0 0 0 2" for k in range(25)]
    bad = list(good)
    bad[10] = "1e30 0 0 0 0 0 0 0 0 0 0 2"
    (folder / "S001C001P001R001A001.skeleton").write_text("\n".join(good) + "\n")
    (folder / "S001C001P001R001A002.skeleton").write_text("\n".join(bad) + "\n")
    report = import_ntu(folder, tmp_path / "cache", benchmark=60, skip_missing=False)
    assert report.imported == 1
    assert [(name, status) for name, status, _ in report.failures] == [("S001C001P001R001A002", "parse_error")]
    assert Cache(tmp_path / "cache").names == ["S001C001P001R001A001"]
