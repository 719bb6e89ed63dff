"""Segment seals (:mod:`msclr.pipeline.cache.seal`): every byte outside the raw pose data is checked
before HDF5 opens a segment, because damaged HDF5 metadata can make libhdf5 loop forever (random fuzzing
found such files; see docs/reliability.md)."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from msclr.errors import CacheError
from msclr.pipeline.cache import Cache, CacheWriter, Clip
from msclr.pipeline.cache import seal as segment_seal
from msclr.pipeline.cache import segments as cache_module

CONVENTIONS = ("ntu_kinect_25", "smplx_42")


def _clip(name: str, frames: int, seed: int) -> Clip:
    rng = np.random.default_rng(seed)
    return Clip(name=name, label=seed % 3, fps=30.0, persons=1,
                poses={c: rng.uniform(-1, 1, (frames, 2, v, 3)).astype(np.float32)
                       for c, v in (("ntu_kinect_25", 25), ("smplx_42", 42))},
                scores=rng.uniform(0, 1, (frames, 2)).astype(np.float32), frame_indices=np.arange(frames))


def _write(root: Path, clips: list[Clip], **kwargs) -> Path:
    """Write ``clips`` to a new cache; the first segment."""
    with CacheWriter(root, list(CONVENTIONS), max_persons=2, classes=["a", "b", "c"], **kwargs) as writer:
        for clip in clips:
            writer.add(clip)
    return sorted((root / "segments").glob("*.h5"))[0]


def _write_unsealed(root: Path, clips: list[Clip], monkeypatch: pytest.MonkeyPatch, **kwargs) -> Path:
    """A cache written as before seals existed (no user block, HDF5 signature at byte 0); its first segment."""
    with monkeypatch.context() as patch:
        patch.setattr(cache_module.segment_seal, "userblock_size", lambda n: 0)
        patch.setattr(cache_module.segment_seal, "seal", lambda image, userblock, ranges: None)
        segment = _write(root, clips, **kwargs)
    assert segment.read_bytes()[:8] == segment_seal.HDF5_SIGNATURE
    return segment


@pytest.fixture()
def one_segment(tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "cache"
    clips = [_clip("S001C001P001R001A001", 4, 1), _clip("S001C001P001R001A002", 3, 2)]
    return root, _write(root, clips, segment_size=8)


def test_seal_skips_exactly_the_pose_data(one_segment: tuple[Path, Path]) -> None:
    root, segment = one_segment
    ranges = segment_seal.verify(segment)
    data = segment.read_bytes()
    assert data[:8] == segment_seal.MAGIC
    with h5py.File(segment, "r") as f:
        userblock = f.userblock_size
        expected = sorted((f["poses"][c].id.get_offset(), f["poses"][c].id.get_storage_size()) for c in CONVENTIONS)
        assert f.attrs["format"] == "msclr-cache-segment"
    assert data[userblock:userblock + 8] == segment_seal.HDF5_SIGNATURE
    assert ranges == expected
    assert sum(n for _, n in ranges) == (4 + 3) * 2 * (25 + 42) * 3 * 4
    cache = Cache(root)  # the reader's raw pose reads sit inside the sealed ranges and return what was written
    assert cache.clip("S001C001P001R001A002").label == 2
    np.testing.assert_array_equal(cache.poses("smplx_42")[0], _clip("S001C001P001R001A001", 4, 1).poses["smplx_42"])


def test_every_flipped_byte_outside_the_poses_is_caught_before_hdf5(one_segment: tuple[Path, Path]) -> None:
    """Exhaustive over the segment: one flipped bit at every byte that is not pose data fails the seal."""
    _, segment = one_segment
    ranges = segment_seal.verify(segment)
    original = segment.read_bytes()
    damaged = segment.with_name("damaged.bin")
    checked = 0
    for i in range(len(original)):
        if any(o <= i < o + n for o, n in ranges):
            continue
        data = bytearray(original)
        data[i] ^= 1 << (i % 8)
        damaged.write_bytes(data)
        with pytest.raises(segment_seal.SealError):
            segment_seal.verify(damaged)
        checked += 1
    assert checked == len(original) - sum(n for _, n in ranges) > 1000


def test_cache_names_the_damaged_segment_and_the_fix(one_segment: tuple[Path, Path]) -> None:
    root, segment = one_segment
    data = bytearray(segment.read_bytes())
    data[600] ^= 0x10  # HDF5's superblock / object headers: right after the 512-byte user block
    segment.write_bytes(data)
    with pytest.raises(CacheError, match="checksum failed") as err:
        Cache(root)
    assert str(segment) in str(err.value) and "delete this file and rerun" in str(err.value)


def test_flipped_pose_bits_change_only_that_coordinate(one_segment: tuple[Path, Path]) -> None:
    """The documented gap: pose data is not checked (a bit flip there is a wrong coordinate, not a hang)."""
    root, segment = one_segment
    (first, _), _ = segment_seal.verify(segment)
    data = bytearray(segment.read_bytes())
    data[first + 3] ^= 0x01  # bit 24 of the first little-endian float32: an exponent bit
    segment.write_bytes(data)
    cache = Cache(root)
    with h5py.File(segment, "r") as f:
        conv = next(c for c in CONVENTIONS if f["poses"][c].id.get_offset() == first)
    written = _clip("S001C001P001R001A001", 4, 1).poses[conv]
    read = cache.poses(conv)[0]
    differs = np.argwhere(read != written)
    assert differs.tolist() == [[0, 0, 0, 0]]


@pytest.mark.parametrize("cut", [1, 100, -1])
def test_truncated_and_extended_segments_fail_the_seal(one_segment: tuple[Path, Path], cut: int) -> None:
    root, segment = one_segment
    data = segment.read_bytes()
    segment.write_bytes(data + b"\0" if cut < 0 else data[:-cut])
    with pytest.raises(CacheError, match="truncated or appended"):
        Cache(root)


def test_damaged_seal_header(one_segment: tuple[Path, Path]) -> None:
    root, segment = one_segment
    for offset, message in ((0, "neither a msclr seal nor the HDF5 signature"), (11, "record length"),
                            (20, "its own checksum"), (500, "padding")):
        data = bytearray(segment.read_bytes())
        data[offset] ^= 0x40
        damaged = segment.with_name("damaged.bin")
        damaged.write_bytes(data)
        with pytest.raises(segment_seal.SealError, match=message):
            segment_seal.verify(damaged)


def test_unsealed_segments_from_before_seals_are_still_read(tmp_path: Path, monkeypatch) -> None:
    """Segments written before seals existed (HDF5 at byte 0) open unchecked, with the same contents."""
    root = tmp_path / "old"
    clip = _clip("S001C001P001R001A001", 5, 4)
    segment = _write_unsealed(root, [clip], monkeypatch)
    assert segment_seal.verify(segment) is None
    cache = Cache(root)
    np.testing.assert_array_equal(cache.poses("ntu_kinect_25")[0], clip.poses["ntu_kinect_25"])
    report = cache.verify()
    assert (report.checked, report.unsealed, report.damaged) == (0, [segment], [])


def test_compressed_segments_are_sealed_whole(tmp_path: Path) -> None:
    root = tmp_path / "lzf"
    clip = _clip("S001C001P001R001A001", 6, 5)
    segment = _write(root, [clip], compression="lzf")
    assert segment_seal.verify(segment) == []  # chunked poses: no unchecked ranges
    data = bytearray(segment.read_bytes())
    data[-1] ^= 0x01
    segment.write_bytes(data)
    with pytest.raises(CacheError, match="checksum failed"):
        Cache(root)


def test_seal_refuses_bad_inputs() -> None:
    image = bytearray(2048)
    image[512:520] = segment_seal.HDF5_SIGNATURE
    with pytest.raises(segment_seal.SealError, match="out of order or outside"):
        segment_seal.seal(memoryview(image), 512, [(600, 100), (650, 100)])
    with pytest.raises(segment_seal.SealError, match="out of order or outside"):
        segment_seal.seal(memoryview(image), 512, [(2000, 100)])
    with pytest.raises(segment_seal.SealError, match="out of order or outside"):
        segment_seal.seal(memoryview(image), 512, [(100, 10)])  # inside the user block
    image[3] = 1
    with pytest.raises(ValueError, match="user block is not empty"):
        segment_seal.seal(memoryview(image), 512, [])
    assert segment_seal.userblock_size(4) == 512
    assert segment_seal.userblock_size(40) == 4096
    for n in (1, 4, 5, 40):  # the size estimate holds for the longest possible record
        userblock = segment_seal.userblock_size(n)
        big = 10**18
        record = json.dumps({"userblock": userblock, "size": big + n * big,
                             "skip": [[big + i * big, big, "f" * 32] for i in range(n)], "blake2b": "f" * 32},
                            separators=(",", ":"))
        assert 12 + len(record) + 16 <= userblock


def test_seal_round_trip_on_bytes(tmp_path: Path) -> None:
    image = bytearray(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    image[:1024] = bytes(1024)
    segment_seal.seal(memoryview(image), 1024, [(3000, 500), (1500, 10)])
    path = tmp_path / "x.bin"
    path.write_bytes(image)
    assert segment_seal.verify(path) == [(1500, 10), (3000, 500)]
    record = json.loads(image[12:12 + int.from_bytes(image[8:12], "little")])
    assert record["userblock"] == 1024 and record["size"] == 5000
    image[3200] ^= 1  # inside a skipped range: still valid
    path.write_bytes(image)
    assert segment_seal.verify(path) == [(1500, 10), (3000, 500)]
    image[2000] ^= 1
    path.write_bytes(image)
    with pytest.raises(segment_seal.SealError, match="differ from the ones written"):
        segment_seal.verify(path)


def test_verify_checks_the_pose_data_too(one_segment: tuple[Path, Path]) -> None:
    root, segment = one_segment
    report = Cache(root).verify()
    assert (report.checked, report.unsealed, report.damaged) == (1, [], [])
    assert report.bytes == segment.stat().st_size
    (_, _), (second, length) = segment_seal.verify(segment)
    data = bytearray(segment.read_bytes())
    data[second + length - 1] ^= 0x02  # the last byte of the second pose array
    segment.write_bytes(data)
    cache = Cache(root)  # opening does not read the poses, so it still works
    report = cache.verify()
    assert report.checked == 0 and [p for p, _ in report.damaged] == [segment]
    assert f"bytes [{second}, {second + length})" in report.damaged[0][1]


def test_info_verify_cli(one_segment: tuple[Path, Path]) -> None:
    from click.testing import CliRunner

    from msclr.cli import cli

    root, segment = one_segment
    runner = CliRunner()
    ok = runner.invoke(cli, ["info", str(root), "--verify"])
    assert ok.exit_code == 0, ok.output
    assert "every checked segment is intact" in ok.output and "1 sealed segments" in ok.output
    as_json = runner.invoke(cli, ["info", str(root), "--verify", "--json"])
    assert as_json.exit_code == 0 and json.loads(as_json.stdout)["verify"]["damaged"] == {}
    (first, _), _ = segment_seal.verify(segment)
    data = bytearray(segment.read_bytes())
    data[first] ^= 0x80
    segment.write_bytes(data)
    assert runner.invoke(cli, ["info", str(root)]).exit_code == 0  # the summary does not read poses
    bad = runner.invoke(cli, ["info", str(root), "--verify"])
    assert bad.exit_code == 1
    assert "damaged:" in bad.output and "1 damaged segments" in bad.output
    bad_json = runner.invoke(cli, ["info", str(root), "--verify", "--json"])
    assert bad_json.exit_code == 1
    assert list(json.loads(bad_json.stdout)["verify"]["damaged"]) == [str(segment)]


def test_compact_rewrites_unsealed_segments_sealed(tmp_path: Path, monkeypatch) -> None:
    from msclr.pipeline.cache.compact import compact_cache

    root = tmp_path / "old"
    clips = [_clip(f"S001C001P001R001A00{i}", 3 + i, i) for i in range(1, 4)]
    _write_unsealed(root, clips, monkeypatch, segment_size=1)
    assert Cache(root).verify().unsealed and not Cache(root).verify().checked
    compact_cache(root)
    report = Cache(root).verify()
    assert (report.checked, report.unsealed, report.damaged) == (1, [], [])
    for clip, poses in zip(clips, Cache(root).poses("smplx_42"), strict=True):
        np.testing.assert_array_equal(poses, clip.poses["smplx_42"])
