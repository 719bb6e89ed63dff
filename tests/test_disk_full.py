"""Issue 6 item 6: the disk fills up during ``msclr extract``.

Three simulations of a small limit, each followed by the checks: one clean error line (exit 1,
says what is full and that rerunning resumes, no traceback), the cache stays readable (``msclr info``
works, the clips committed before the failure are intact, no partial or temporary file is left or
counted), and a rerun with space available completes to a cache equal to an uninterrupted run's.

1. **A real file-size limit** (:func:`test_file_size_limit_in_a_child_process`): the CLI runs in a
   child process with ``RLIMIT_FSIZE`` set and ``SIGXFSZ`` ignored, so the operating system makes
   HDF5's writes fail with ``EFBIG`` once a file grows past the limit.  The videos are sized so the
   first two segments fit and the third (a longer clip) does not.  This found that h5py reports the
   failed write as ``OSError`` and the close that follows as a ``RuntimeError`` ("Can't decrement
   id ref count ... errno = 27"), which escaped as a traceback before.
2. **ENOSPC while committing a segment** (:func:`test_enospc_while_committing`): ``fsync`` of the
   segment fails with ``ENOSPC`` from the third segment on (as it does on file systems that allocate
   late: NFS, thin volumes), through the in-process CLI.
3. **ENOSPC before anything is written** (:func:`test_enospc_creating_the_cache`): the cache
   manifest cannot be written.

The tmpfs alternative (a real full file system) needs mount privileges that CI rarely has.
"""

from __future__ import annotations

import errno
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from msclr.cli import cli
from msclr.extractors.video import write_video
from msclr.pipeline.cache import Cache
from msclr.pipeline.cache import writer as cache_module

REPO = Path(__file__).resolve().parents[1]
SKELETONS = "smpl_24,smplx_42"
# frames per video, in name order: the third is the long one (its segment is ~4x the others')
LENGTHS = {"a": 4, "b": 4, "c": 40, "d": 4, "e": 4}
FSIZE_LIMIT = 48 * 1024  # bytes: between a 4-frame segment (~17 kB) and the 40-frame one (~74 kB)


@pytest.fixture(scope="module")
def standin(pixel_standin) -> Path:
    return pixel_standin.path


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("videos")
    for k, (name, n) in enumerate(LENGTHS.items()):
        rng = np.random.default_rng(k)
        base = np.clip(rng.normal(110, 40, (48, 64, 3)), 0, 255).astype(np.uint8)
        write_video(root / f"{name}.avi", [np.roll(base, 3 * t, axis=1) for t in range(n)])
    return root


def _args(videos: Path, out: Path, standin: Path) -> list[str]:
    return ["extract", str(videos), "--out", str(out), "--pose-model", str(standin), "--skeletons", SKELETONS,
            "--batch-size", "8"]


def _snapshot(root: Path) -> dict:
    cache = Cache(root)
    out: dict = {"statuses": cache.statuses(), "names": cache.names}
    for name in cache.names:
        clip = cache.clip(name)
        out[name] = ({c: a.tobytes() for c, a in clip.poses.items()}, clip.scores.tobytes(),
                     clip.frame_indices.tobytes(), clip.persons, clip.frames, clip.fps, clip.message)
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, videos: Path, standin: Path) -> dict:
    """An uninterrupted run with space to spare."""
    out = tmp_path_factory.mktemp("reference") / "cache"
    result = CliRunner().invoke(cli, _args(videos, out, standin))
    assert result.exit_code == 0, result.output
    return _snapshot(out)


def _assert_clean_and_readable(out: Path, committed: list[str]) -> None:
    """No partial / temporary file; the committed clips, and only they, are in a readable cache."""
    leftovers = [p.name for p in out.rglob("*") if p.name.endswith((".partial", ".tmp"))]
    assert leftovers == []
    assert Cache(out).names == committed
    assert len(list((out / "segments").glob("*.h5"))) == len(committed)
    info = CliRunner().invoke(cli, ["info", str(out), "--json"])
    assert info.exit_code == 0, info.output
    assert f'"clips": {len(committed)}' in info.output


def _assert_one_clean_error(text: str, reason: str) -> None:
    assert "Traceback" not in text
    errors = [line for line in text.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, text
    line = errors[0]
    assert "cannot write to the cache" in line and reason in line
    assert "rerun the same command" in line and "resumes" in line


def _limit_file_size() -> None:  # pragma: no cover - runs in the child before exec
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG, no kill
    resource.setrlimit(resource.RLIMIT_FSIZE, (FSIZE_LIMIT, FSIZE_LIMIT))


def test_file_size_limit_in_a_child_process(tmp_path: Path, videos: Path, standin: Path,
                                            reference: dict) -> None:
    out = tmp_path / "cache"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO), "COLUMNS": "200"}
    proc = subprocess.run([sys.executable, "-m", "msclr", *_args(videos, out, standin)], env=env,
                          capture_output=True, text=True, preexec_fn=_limit_file_size, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    _assert_one_clean_error(proc.stderr, "a file-size limit was reached")
    assert "2 clip(s) committed by this run" in proc.stderr
    _assert_clean_and_readable(out, ["a", "b"])

    # rerun with room: the committed clips are skipped, the rest is extracted, same as uninterrupted
    result = CliRunner().invoke(cli, _args(videos, out, standin))
    assert result.exit_code == 0, result.output
    assert "2 videos already in the cache" in result.output
    assert _snapshot(out) == reference


def test_enospc_while_committing(tmp_path: Path, videos: Path, standin: Path, reference: dict,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "cache"
    real_fsync = cache_module.fsync_file
    calls: list[Path] = []

    def fsync_until_full(path: Path) -> None:
        calls.append(path)
        if len(calls) >= 3:  # the disk is full from the third segment on
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        real_fsync(path)

    with monkeypatch.context() as m:
        m.setattr(cache_module, "fsync_file", fsync_until_full)
        result = CliRunner().invoke(cli, _args(videos, out, standin))
    assert result.exit_code == 1, result.output
    assert not isinstance(result.exception, OSError | RuntimeError)  # a clean exit, not a crash
    _assert_one_clean_error(result.output, "the disk is full (no space left on device)")
    assert "2 clip(s) committed by this run" in result.output
    assert len(calls) >= 3 and all(p.name.endswith(".partial") for p in calls)
    _assert_clean_and_readable(out, ["a", "b"])

    again = CliRunner().invoke(cli, _args(videos, out, standin))
    assert again.exit_code == 0, again.output
    assert _snapshot(out) == reference


def test_enospc_creating_the_cache(tmp_path: Path, videos: Path, standin: Path, reference: dict,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "cache"

    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with monkeypatch.context() as m:
        m.setattr(cache_module.os, "fsync", no_space)
        result = CliRunner().invoke(cli, _args(videos, out, standin))
    assert result.exit_code == 1, result.output
    _assert_one_clean_error(result.output, "the disk is full")
    assert not (out / "msclr-cache.json").exists()  # no half-made cache, no temporary file
    assert not out.exists() or [p.name for p in out.iterdir()] == []

    again = CliRunner().invoke(cli, _args(videos, out, standin))
    assert again.exit_code == 0, again.output
    assert _snapshot(out) == reference
