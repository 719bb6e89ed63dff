"""``msclr extract`` end to end with the MeTRAbs stand-in: statuses, resume, retry, shards, NTU
metadata, usage errors, and SIGKILL at several points followed by a rerun (== an uninterrupted run)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from msclr.cli import cli
from msclr.errors import ExtractionError, MsclrError
from msclr.extractors.base import ConstantExtractor
from msclr.extractors.jobs import find_videos, parse_shard, plan_jobs, shard_of
from msclr.extractors.video import write_video
from msclr.pipeline.cache import Cache
from msclr.pipeline.extract import ExtractOptions, extract_videos

REPO = Path(__file__).resolve().parents[1]


def _noise_video(path: Path, n: int, seed: int, *, dark: bool = False, codec: str = "MJPG") -> Path:
    rng = np.random.default_rng(seed)
    base = np.clip(rng.normal(110, 40, (48, 64, 3)), 0, 255).astype(np.uint8)
    frames = []
    for t in range(n):
        f = np.zeros_like(base) if dark else np.roll(base, 3 * t, axis=1)
        frames.append(f)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_video(path, frames, codec=codec)
    return path


@pytest.fixture(scope="module")
def model_dir(pixel_standin) -> Path:
    """The MeTRAbs stand-in SavedModel folder (pixel mode); tests using it skip without TensorFlow."""
    return pixel_standin.path


@pytest.fixture(scope="module")
def mixed_videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("videos")
    _noise_video(root / "S001C002P003R002A013_rgb.avi", 9, 1)
    _noise_video(root / "plain.avi", 7, 2)
    _noise_video(root / "sub" / "nested.mp4", 6, 3, codec="mp4v")
    _noise_video(root / "dark.avi", 5, 4, dark=True)
    (root / "zero.avi").write_bytes(b"")
    (root / "notvideo.mp4").write_text("hello\n" * 100)
    (root / "readme.txt").write_text("not picked up")
    return root


def _run(args: list[str]):  # noqa: ANN202
    result = CliRunner().invoke(cli, ["extract", *args], catch_exceptions=False)
    return result


def test_extract_statuses_summary_resume_and_retry(tmp_path: Path, model_dir: Path, mixed_videos: Path) -> None:
    out = tmp_path / "cache"
    k = [[1000.0, 0, 32], [0, 1000.0, 24], [0, 0, 1]]
    (tmp_path / "k.json").write_text(json.dumps({"K": k}))
    args = [str(mixed_videos), "--out", str(out), "--pose-model", str(model_dir), "--batch-size", "4",
            "--intrinsics", str(tmp_path / "k.json")]
    result = _run(args)
    assert result.exit_code == 1, result.output  # some videos failed / showed nobody
    cache = Cache(out)
    statuses = {n: s for n, (s, _) in cache.statuses().items()}
    assert statuses == {
        "S001C002P003R002A013": "ok", "plain": "ok", "nested": "ok",
        "dark": "no_person", "zero": "empty", "notvideo": "decode_error",
    }
    assert "zero.avi" in cache.statuses()["zero"][1] and "0 bytes" in cache.statuses()["zero"][1]
    assert set(cache.skeletons) == {"smpl_24", "smplx_42", "berkeley_mhad_43", "kinectv2_25"}
    clip = cache.clip("S001C002P003R002A013")
    assert (clip.label, clip.subject, clip.camera, clip.setup, clip.replication) == (12, 3, 2, 1, 2)
    assert clip.frames == 9 and clip.persons == 2 and clip.extractor == "metrabs"
    assert clip.model_id == str(model_dir) and clip.fps == pytest.approx(30.0)
    assert clip.poses["smplx_42"].shape == (9, 2, 42, 3)
    np.testing.assert_array_equal(clip.frame_indices, np.arange(9))
    assert clip.scores.shape == (9, 2) and (clip.scores > 0).all()
    assert cache.classes is None  # not every name is an NTU name
    for word in ("no_person", "decode_error", "empty", "6 videos"):
        assert word in result.output
    segments = sorted((out / "segments").glob("*.h5"))
    assert len(segments) == 6  # one committed segment per clip

    # Rerun: everything is done, no model call, same exit status (failures are still failures).
    again = _run(args)
    assert again.exit_code == 1
    assert "already" in again.output and "retry-failed" in again.output
    assert sorted((out / "segments").glob("*.h5")) == segments

    # --retry-failed redoes the three failures only.
    retry = _run([*args, "--retry-failed"])
    assert retry.exit_code == 1
    assert len(list((out / "segments").glob("*.h5"))) == 9
    assert {n: s for n, (s, _) in Cache(out).statuses().items()} == statuses


def test_ntu_names_store_classes_and_splits(tmp_path: Path, model_dir: Path) -> None:
    vids = tmp_path / "ntu"
    _noise_video(vids / "S001C001P001R001A001_rgb.avi", 4, 5)
    _noise_video(vids / "S001C002P002R001A002_rgb.avi", 4, 6)
    out = tmp_path / "c"
    result = _run([str(vids), "--out", str(out), "--pose-model", str(model_dir), "--skeletons", "smpl_24"])
    assert result.exit_code == 0, result.output
    cache = Cache(out)
    assert cache.classes is not None and len(cache.classes) == 60 and cache.classes[0] == "drink water"
    assert cache.splits["xsub_train"] == ["S001C001P001R001A001", "S001C002P002R001A002"]
    assert cache.splits["xview_val"] == ["S001C001P001R001A001"]
    assert cache.metadata()["label"].tolist() == [0, 1]
    assert list(cache.skeletons) == ["smpl_24"]


def test_shards_fill_one_cache(tmp_path: Path, model_dir: Path) -> None:
    vids = tmp_path / "v"
    names = [f"clip{i}" for i in range(6)]
    for i, n in enumerate(names):
        _noise_video(vids / f"{n}.avi", 3, 10 + i)
    assert len({shard_of(n, 2) for n in names}) == 2  # both shards get work
    out = tmp_path / "c"
    base = [str(vids), "--out", str(out), "--pose-model", str(model_dir), "--skeletons", "smpl_24,kinectv2_25"]
    r1 = _run([*base, "--shard", "1/2"])
    assert r1.exit_code == 0, r1.output
    first = set(Cache(out).names)
    assert first == {n for n in names if shard_of(n, 2) == 1}
    r2 = _run([*base, "--shard", "2/2"])
    assert r2.exit_code == 0, r2.output
    assert Cache(out).names == sorted(names)
    writers = {p.name.split("-")[1] for p in (out / "segments").glob("*.h5")}
    assert writers == {"extract_shard1of2", "extract_shard2of2"}


def test_parse_shard() -> None:
    assert parse_shard("3/4") == (3, 4)
    assert shard_of("S001C001P001R001A001", 4) == shard_of("S001C001P001R001A001", 4)
    counts = np.bincount([shard_of(f"clip{i}", 4) for i in range(400)], minlength=5)
    assert counts[0] == 0 and counts[1:].min() > 60  # 1-based, roughly balanced
    for bad in ("4/3", "0/1", "1/0", "a/b", "1/2/3"):
        with pytest.raises(MsclrError):
            parse_shard(bad)


# ------------------------------------------------------------- pipeline, no model
def test_find_videos_and_clip_names(tmp_path: Path) -> None:
    _noise_video(tmp_path / "a" / "S002C003P004R001A050_rgb.avi", 2, 1)
    _noise_video(tmp_path / "a" / "B.MP4", 2, 2, codec="mp4v")
    _noise_video(tmp_path / "a" / ".hidden" / "h.avi", 2, 3)
    (tmp_path / "a" / "notes.txt").write_text("x")
    odd = tmp_path / "odd.bin"
    odd.write_bytes(b"x")
    found = find_videos([tmp_path / "a", odd])
    assert [p.name for p in found] == ["B.MP4", "S002C003P004R001A050_rgb.avi", "odd.bin"]
    jobs = plan_jobs(found)
    assert [j.name for j in jobs] == ["B", "S002C003P004R001A050", "odd"]
    assert jobs[1].ntu is not None and jobs[1].ntu.label == 49 and jobs[0].ntu is None
    _noise_video(tmp_path / "b" / "B.avi", 2, 4)
    with pytest.raises(ExtractionError, match="both give the clip name 'B'"):
        plan_jobs(find_videos([tmp_path / "a", tmp_path / "b"]))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ExtractionError, match="no video found"):
        find_videos([tmp_path / "empty"])
    with pytest.raises(ExtractionError, match="does not exist"):
        find_videos([tmp_path / "nothing"])


class _Flaky(ConstantExtractor):
    """Fails on frames brighter than a threshold (to provoke extractor errors)."""

    def process(self, frames: np.ndarray):  # noqa: ANN201
        if frames.mean() > 100:
            raise RuntimeError("GPU out of memory (simulated)")
        return super().process(frames)


def test_extractor_errors_are_recorded_and_many_abort(tmp_path: Path) -> None:
    vids = tmp_path / "v"
    _noise_video(vids / "bright.avi", 3, 1)  # mean ~110: fails
    _noise_video(vids / "dark.avi", 3, 2, dark=True)  # succeeds (the constant extractor always sees one)
    calls = []

    def factory() -> ConstantExtractor:
        calls.append(1)
        return _Flaky(conventions=("smpl_24",))

    summary = extract_videos([vids], tmp_path / "c", factory, ["smpl_24"], ExtractOptions(batch_size=2))
    assert len(calls) == 1 and summary.model_loaded
    statuses = {r.name: (r.status, r.message) for r in summary.rows}
    assert statuses["bright"][0] == "error" and "out of memory" in statuses["bright"][1]
    assert statuses["dark"][0] == "ok"
    assert summary.exit_code == 1
    assert Cache(tmp_path / "c").statuses()["bright"][0] == "error"
    # rerun: nothing to do, the extractor is not even built
    again = extract_videos([vids], tmp_path / "c", factory, ["smpl_24"])
    assert len(calls) == 1 and not again.model_loaded and all(r.skipped for r in again.rows)
    # five failures in a row stop the run
    many = tmp_path / "many"
    for i in range(6):
        _noise_video(many / f"b{i}.avi", 2, 10 + i)
    with pytest.raises(ExtractionError, match="5 videos in a row failed"):
        extract_videos([many], tmp_path / "c2", factory, ["smpl_24"])
    assert len(Cache(tmp_path / "c2").statuses()) == 4  # the first four are recorded


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--extractor", "mediapipe", "--skeletons", "smpl_24"], "only blazepose_33"),
        (["--skeletons", "blazepose_33"], "does not output"),
        (["--skeletons", "nonsense_7"], "unknown skeleton"),
        (["--shard", "0/2"], "K counts from 1"),
        (["--shard", "two"], "K/N"),
        (["--fov", "60", "--intrinsics", "__K__"], "not both"),
        (["--extractor", "mediapipe", "--fov", "60"], "only apply to --extractor metrabs"),
    ],
)
def test_usage_errors_exit_2(tmp_path: Path, mixed_videos: Path, extra: list[str], needle: str) -> None:
    kfile = tmp_path / "k.json"
    kfile.write_text("[[1,0,0],[0,1,0],[0,0,1]]")
    extra = [str(kfile) if e == "__K__" else e for e in extra]
    result = CliRunner().invoke(cli, ["extract", str(mixed_videos), "--out", str(tmp_path / "c"), *extra])
    assert result.exit_code == 2, result.output
    assert needle in result.output
    assert not (tmp_path / "c").exists()


def test_bad_model_is_a_clean_error(tmp_path: Path) -> None:
    vids = tmp_path / "v"
    _noise_video(vids / "a.avi", 2, 1)
    result = CliRunner().invoke(cli, ["extract", str(vids), "--out", str(tmp_path / "c"),
                                      "--pose-model", str(tmp_path)])
    assert result.exit_code == 1
    assert "saved_model.pb" in result.output


# ----------------------------------------------------------------------------- kill -9
def _snapshot(root: Path) -> dict:
    cache = Cache(root)
    out = {"statuses": cache.statuses(), "classes": cache.classes, "splits": cache.splits}
    for name in cache.names:
        clip = cache.clip(name)
        out[name] = (
            {c: a.tobytes() for c, a in clip.poses.items()}, clip.scores.tobytes(), clip.frame_indices.tobytes(),
            clip.persons, clip.frames, clip.label, clip.fps,
        )
    return out


def test_sigkill_at_several_points_then_rerun_equals_uninterrupted(tmp_path: Path, model_dir: Path) -> None:
    vids = tmp_path / "videos"
    for i in range(8):
        _noise_video(vids / f"S001C00{1 + i % 3}P00{1 + i}R001A00{1 + i}_rgb.avi", 24, 100 + i, dark=(i == 5))
    (vids / "S001C001P009R001A009_rgb.avi").write_bytes(b"")  # a recorded failure too
    args = [str(vids), "--out", "", "--pose-model", str(model_dir), "--batch-size", "2",
            "--skeletons", "smpl_24,smplx_42"]

    reference = tmp_path / "reference"
    args[2] = str(reference)
    assert _run(args).exit_code == 1  # the dark and the empty video

    killed = tmp_path / "killed"
    args[2] = str(killed)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO)}
    seg_dir = killed / "segments"

    def committed() -> int:
        return len(list(seg_dir.glob("*.h5"))) if seg_dir.is_dir() else 0

    # (segments committed before the kill, extra delay in seconds): during start-up, while TensorFlow
    # loads, right after a commit, mid-clip, near the end.  Each late kill costs a TensorFlow start-up.
    plan = [(0, 0.3), (0, 2.0), (2, 0.0), (4, 0.02), (7, 0.005)]
    kills = 0
    at_kill = []
    for target, delay in plan:
        if committed() >= 9:
            break
        proc = subprocess.Popen([sys.executable, "-m", "msclr", "extract", *args], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while proc.poll() is None and committed() < target and time.monotonic() < deadline:
            time.sleep(0.002)
        time.sleep(delay)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
            at_kill.append(committed())
        proc.wait()
        # After any kill the cache (if created) stays readable.
        if (killed / "msclr-cache.json").exists():
            Cache(killed)
    assert kills >= 5
    assert len(set(at_kill)) >= 3, at_kill  # the kills hit different stages of the run
    final = _run(args)
    assert final.exit_code == 1
    assert not list(seg_dir.glob("*.partial"))
    # no committed clip was extracted twice: only in-flight clips were redone
    assert len(list(seg_dir.glob("*.h5"))) == 9
    assert _snapshot(killed) == _snapshot(reference)
