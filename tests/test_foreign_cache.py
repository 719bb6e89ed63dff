"""Issue 6 item 5: a truncated or foreign HDF5 file given to ``msclr info`` / ``msclr train``.

A cache is a directory (``msclr-cache.json`` + ``segments/*.h5``), so an HDF5 file reaches these
commands in two ways, both tested for both commands:

- **as the CACHE argument** (someone passes ``data.h5`` or one segment): a foreign HDF5 file, a
  truncated msclr segment, a file cut inside the HDF5 superblock;
- **inside a cache's ``segments/``**: a committed segment truncated (an interrupted copy), a zero-byte
  segment (a copy tool that writes in place), a foreign HDF5 file dropped there; and a folder of
  HDF5 files that is not a cache at all.

Each must end in one ``Error:`` line (exit 1 for a bad cache, no traceback) that names the file and
says what to do; following that advice must work (tested for the truncated segment).  ``train`` must
fail before it creates the run folder.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from msclr.cli import cli
from msclr.pipeline.cache import Cache, CacheWriter, Clip

CONVS = ("kinectv2_25", "smpl_24")


@pytest.fixture(scope="module")
def good_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six labelled clips in six segments, with class names and an xsub split pair."""
    root = tmp_path_factory.mktemp("good") / "cache"
    rng = np.random.default_rng(0)
    with CacheWriter(root, list(CONVS), max_persons=1, classes=["a", "b"], segment_size=1) as writer:
        for i in range(6):
            poses = {c: rng.uniform(-1, 1, (20, 1, v, 3)).astype(np.float32) for c, v in (("kinectv2_25", 25),
                                                                                           ("smpl_24", 24))}
            writer.add(Clip(f"clip{i}", poses=poses, label=i % 2, subject=i % 3, extractor="synthetic"))
        writer.set_splits({"xsub_train": [f"clip{i}" for i in range(4)], "xsub_val": ["clip4", "clip5"]})
    return root


def _copy(good_cache: Path, tmp_path: Path) -> Path:
    root = tmp_path / "cache"
    shutil.copytree(good_cache, root)
    return root


def _segments(root: Path) -> list[Path]:
    return sorted((root / "segments").glob("*.h5"))


def _foreign_h5(path: Path) -> Path:
    with h5py.File(path, "w") as f:
        f["images"] = np.zeros((4, 8, 8), np.uint8)
        f.attrs["creator"] = "another tool"
    return path


def _invoke(command: str, target: Path, tmp_path: Path):  # noqa: ANN202
    if command == "info":
        args = ["info", str(target)]
    else:
        args = ["train", str(target), "--out", str(tmp_path / "run"), "--config", "cpu_small", "--epochs", "1",
                "--device", "cpu", "--no-tensorboard", "-q"]
    return CliRunner().invoke(cli, args)


def _assert_clean_error(result, command: str, tmp_path: Path, *needles: str) -> None:  # noqa: ANN001
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)  # no crash, no traceback
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    if command == "train":
        assert not (tmp_path / "run").exists()  # nothing written before the cache was checked


# ------------------------------------------------------------ an HDF5 file as the CACHE argument
def _file_argument(kind: str, good_cache: Path, tmp_path: Path) -> Path:
    if kind == "foreign":
        return _foreign_h5(tmp_path / "data.h5")
    segment = _segments(good_cache)[0].read_bytes()
    path = tmp_path / f"{kind}.h5"
    path.write_bytes(segment if kind == "segment" else segment[: len(segment) // 2] if kind == "truncated"
                     else segment[:40])
    return path


FILE_KINDS = ["foreign", "segment", "truncated", "cut_in_superblock"]


@pytest.mark.parametrize("command", ["info", "train"])
@pytest.mark.parametrize("kind", FILE_KINDS)
def test_hdf5_file_given_as_the_cache(command: str, kind: str, good_cache: Path, tmp_path: Path) -> None:
    path = _file_argument(kind, good_cache, tmp_path)
    result = _invoke(command, path, tmp_path)
    _assert_clean_error(result, command, tmp_path, str(path), "is an HDF5 file, not a cache directory",
                        "pass that directory instead")


# --------------------------------------------------------------- bad HDF5 files inside a cache
@pytest.mark.parametrize("command", ["info", "train"])
def test_truncated_segment_then_the_advised_fix(command: str, good_cache: Path, tmp_path: Path) -> None:
    root = _copy(good_cache, tmp_path)
    bad = _segments(root)[2]
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) * 2 // 3])  # an interrupted copy
    result = _invoke(command, root, tmp_path)
    _assert_clean_error(result, command, tmp_path, str(bad), "is unreadable", "truncated",
                        "delete this file and rerun the same `msclr extract` / `msclr import` command")
    # follow the advice: delete it; the cache is readable again, minus that clip, and a rerun refills it
    bad.unlink()
    assert len(Cache(root)) == 5
    info = CliRunner().invoke(cli, ["info", str(root)])
    assert info.exit_code == 0, info.output
    with CacheWriter(root, list(CONVS), max_persons=1, segment_size=1) as writer:
        missing = sorted({f"clip{i}" for i in range(6)} - writer.done)
        assert missing == ["clip2"]


@pytest.mark.parametrize("command", ["info", "train"])
def test_zero_byte_segment(command: str, good_cache: Path, tmp_path: Path) -> None:
    root = _copy(good_cache, tmp_path)
    bad = _segments(root)[-1]
    bad.write_bytes(b"")
    result = _invoke(command, root, tmp_path)
    _assert_clean_error(result, command, tmp_path, str(bad), "is unreadable", "delete this file and rerun")


@pytest.mark.parametrize("command", ["info", "train"])
def test_foreign_hdf5_in_segments(command: str, good_cache: Path, tmp_path: Path) -> None:
    root = _copy(good_cache, tmp_path)
    foreign = _foreign_h5(root / "segments" / "mine.h5")
    result = _invoke(command, root, tmp_path)
    _assert_clean_error(result, command, tmp_path, str(foreign), "not a msclr cache segment",
                        "move this file out of it")
    foreign.rename(tmp_path / "mine.h5")  # the advice works
    assert len(Cache(root)) == 6


@pytest.mark.parametrize("command", ["info", "train"])
def test_folder_of_foreign_hdf5_files(command: str, tmp_path: Path) -> None:
    folder = tmp_path / "features"
    folder.mkdir()
    for name in ("a.h5", "b.h5"):
        _foreign_h5(folder / name)
    result = _invoke(command, folder, tmp_path)
    _assert_clean_error(result, command, tmp_path, str(folder), "is not a msclr cache",
                        "msclr-cache.json is missing", "msclr extract")
