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
    """The MeTRAbs stand-in SavedModel folder (pixel mode); tests using it skip without TensorFlow (fail under CI=true)."""
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


KILL_FRAMES, KILL_BATCH = 24, 2  # frames per video, frames per extractor call: 12 batches a (non-empty) video
WAIT_S = 120  # a stuck subprocess fails the test instead of hanging it


def _batch_plan(pending: list[str], empty: str) -> list[int]:
    """Frame batches the extractor sees for each pending clip, in job order (the empty file has none)."""
    return [0 if name == empty else KILL_FRAMES // KILL_BATCH for name in pending]


def _commits_before_batch(batches: list[int], n: int) -> int:
    """Clips a run has committed when its extractor finishes its n-th frame batch (clips without frames, such
    as a zero-byte file, are committed without any batch)."""
    seen = done = 0
    for count in batches:
        if seen + count >= n:
            return done
        seen, done = seen + count, done + 1
    raise AssertionError(f"the run has only {seen} batches, not {n}")


def test_sigkill_at_several_points_then_rerun_equals_uninterrupted(tmp_path: Path, model_dir: Path) -> None:
    """SIGKILL at five distinct, exact stages (test hook :func:`msclr.files.pause_point`: the run creates a marker
    file and sleeps at the named point; the test waits for the marker, checks the cache shows that stage, and
    kills), a rerun after each; then a last run completes a cache equal to an uninterrupted run's."""
    vids = tmp_path / "videos"
    for i in range(8):
        _noise_video(vids / f"S001C00{1 + i % 3}P00{1 + i}R001A00{1 + i}_rgb.avi", KILL_FRAMES, 100 + i,
                     dark=(i == 5))
    empty = "S001C001P009R001A009"
    (vids / f"{empty}_rgb.avi").write_bytes(b"")  # a recorded failure too
    jobs = [j.name for j in plan_jobs(find_videos([vids]))]
    assert len(jobs) == 9
    args = [str(vids), "--out", "", "--pose-model", str(model_dir), "--batch-size", str(KILL_BATCH),
            "--skeletons", "smpl_24,smplx_42"]

    reference = tmp_path / "reference"
    args[2] = str(reference)
    assert _run(args).exit_code == 1  # the dark and the empty video

    killed = tmp_path / "killed"
    args[2] = str(killed)
    seg_dir = killed / "segments"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MSCLR_TEST_PAUSE")}
    env.update(TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(REPO))

    def segments() -> set[str]:
        return {p.name for p in seg_dir.glob("*.h5")} if seg_dir.is_dir() else set()

    def partials() -> list[str]:
        return sorted(p.name for p in seg_dir.glob("*.partial")) if seg_dir.is_dir() else []

    def pending() -> list[str]:
        done = set(Cache(killed).statuses()) if (killed / "msclr-cache.json").exists() else set()
        return [name for name in jobs if name not in done]

    def mid_second_clip(batches: list[int]) -> int:
        """The batch in the middle of the second pending clip that has frames."""
        with_frames = [k for k, count in enumerate(batches) if count]
        return sum(batches[: with_frames[1]]) + batches[with_frames[1]] // 2

    # (stage, pause point as a function of the pending clips' batches, commits this run makes before the kill)
    plan = [
        ("start-up: cache opened, pose model about to load", lambda b: "model-load", lambda b: 0),
        ("right after commit 2", lambda b: "commit#2", lambda b: 2),
        ("mid-clip", lambda b: f"extract-batch#{mid_second_clip(b)}",
         lambda b: _commits_before_batch(b, mid_second_clip(b))),
        ("inside a segment write (written, not renamed)", lambda b: "segment-written#2", lambda b: 1),
        ("near the end: after the last but one commit", lambda b: f"commit#{len(b) - 1}", lambda b: len(b) - 1),
    ]
    stages = []
    for k, (stage, point, commits) in enumerate(plan):
        todo = pending()
        batches = _batch_plan(todo, empty)
        before = segments()
        marker = tmp_path / f"kill{k}"
        log = tmp_path / f"run{k}.log"
        with open(log, "w") as handle:
            proc = subprocess.Popen(
                [sys.executable, "-m", "msclr", "extract", *args],
                env={**env, "MSCLR_TEST_PAUSE": point(batches), "MSCLR_TEST_PAUSE_MARKER": str(marker)},
                stdout=handle, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + WAIT_S
            while not marker.exists():  # the kill lands at its stage, or the test fails here
                if proc.poll() is not None:
                    pytest.fail(f"{stage}: the run ended (exit {proc.returncode}) before its pause point "
                                f"{point(batches)}:\n{log.read_text()[-3000:]}")
                if time.monotonic() > deadline:
                    pytest.fail(f"{stage}: the run did not reach {point(batches)} in {WAIT_S} s")
                time.sleep(0.01)
            proc.send_signal(signal.SIGKILL)
            assert proc.wait(timeout=WAIT_S) == -signal.SIGKILL
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        # the cache shows the stage: exactly the expected new commits, earlier segments untouched
        after = segments()
        assert before <= after, stage
        assert len(after - before) == commits(batches), (stage, point(batches), len(after - before))
        stray = partials()
        if "segment-written" in point(batches):  # killed between the segment's fsync and its rename
            assert len(stray) == 1 and f".{proc.pid}." in stray[0], (stage, stray)
        else:  # a stale partial of an earlier killed run is removed when the next writer opens the cache
            assert stray == [], (stage, stray)
        Cache(killed)  # after any kill the cache (if created) stays readable
        stages.append((stage, len(after)))
    assert [n for _, n in stages] == sorted(n for _, n in stages) and stages[-1][1] == len(jobs) - 1, stages

    final = _run(args)
    assert final.exit_code == 1
    assert not list(seg_dir.glob("*.partial"))
    # no committed clip was extracted twice: only in-flight clips were redone
    assert len(list(seg_dir.glob("*.h5"))) == 9
    assert _snapshot(killed) == _snapshot(reference)
