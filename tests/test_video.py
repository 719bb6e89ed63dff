"""Streaming OpenCV decoding: RGB order, batches, stride / limit, size changes, error statuses."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from msclr.errors import ExtractionError
from msclr.extractors.video import FrameReader, VideoDecodeError, iter_frame_batches, write_video


def _frames(n: int, h: int = 48, w: int = 64) -> list[np.ndarray]:
    """Frames with a red left half and a blue right half whose brightness encodes the index."""
    out = []
    for i in range(n):
        f = np.zeros((h, w, 3), np.uint8)
        f[:, : w // 2, 0] = 200  # red (RGB channel 0)
        f[:, w // 2:, 2] = 200  # blue
        f[:, :, 1] = (i * 7) % 250  # green ramps with the index
        out.append(f)
    return out


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("vid") / "clip.avi"
    assert write_video(path, _frames(23), fps=25.0) == 23
    return path


def test_batches_are_rgb_with_indices_and_fps(video: Path) -> None:
    with FrameReader(video, batch_size=5) as reader:
        batches = list(reader)
        info = reader.info
    assert [len(b) for b in batches] == [5, 5, 5, 5, 3]
    frames = np.concatenate([b.frames for b in batches])
    assert frames.shape == (23, 48, 64, 3) and frames.dtype == np.uint8 and frames.flags.c_contiguous
    np.testing.assert_array_equal(np.concatenate([b.indices for b in batches]), np.arange(23))
    # RGB, not BGR: the left half is red, the right half blue (MJPG is lossy: tolerances).
    left, right = frames[:, 10:40, 5:25].mean(axis=(0, 1, 2)), frames[:, 10:40, 40:60].mean(axis=(0, 1, 2))
    assert left[0] > 150 and left[2] < 60
    assert right[2] > 150 and right[0] < 60
    # the green ramp survives in order
    green = frames[:, 10:40, 5:60, 1].mean(axis=(1, 2))
    np.testing.assert_allclose(green, [(i * 7) % 250 for i in range(23)], atol=6)
    assert info.fps == pytest.approx(25.0)
    assert info.frame_count == 23 and info.decoded_frames == 23
    assert (info.width, info.height) == (64, 48)


def test_stride_and_limit(video: Path) -> None:
    idx = np.concatenate([b.indices for b in iter_frame_batches(video, batch_size=4, stride=3, limit=20)])
    np.testing.assert_array_equal(idx, np.arange(0, 20, 3))
    idx = np.concatenate([b.indices for b in iter_frame_batches(video, batch_size=4, stride=1, limit=6)])
    np.testing.assert_array_equal(idx, np.arange(6))
    # strided frames equal the unstrided ones at those indices
    full = np.concatenate([b.frames for b in iter_frame_batches(video, batch_size=8)])
    strided = np.concatenate([b.frames for b in iter_frame_batches(video, batch_size=8, stride=3)])
    np.testing.assert_array_equal(strided, full[::3])


def test_frame_size_change_is_resized_to_first(tmp_path: Path) -> None:
    # Two MJPG streams of different sizes cannot share one file via OpenCV's writer, so exercise
    # the resize path through a capture stub that changes size mid-stream.
    frames = [np.full((40, 60, 3), 10 * i, np.uint8) for i in range(3)] + [
        np.full((80, 120, 3), 10 * i, np.uint8) for i in range(3, 7)]

    class FakeCap:
        def __init__(self) -> None:
            self.i = 0

        def read(self):  # noqa: ANN201
            if self.i >= len(frames):
                return False, None
            self.i += 1
            return True, frames[self.i - 1].copy()

        def grab(self) -> bool:
            ok, _ = self.read()
            return ok

        def release(self) -> None:
            pass

    path = tmp_path / "x.avi"
    write_video(path, _frames(2))
    reader = FrameReader(path, batch_size=4)
    reader._cap.release()
    reader._cap = FakeCap()
    with reader:
        out = list(reader)
    got = np.concatenate([b.frames for b in out])
    assert got.shape == (7, 40, 60, 3)
    assert reader.info.resized_frames == 4
    np.testing.assert_array_equal(got[:, :, :, 0].mean(axis=(1, 2)), [10 * i for i in range(7)])


@pytest.mark.parametrize(
    ("content", "status", "needle"),
    [
        (b"", "empty", "0 bytes"),
        (b"this is not a video at all\n" * 50, "decode_error", "cannot be opened"),
    ],
)
def test_bad_files_raise_named_errors(tmp_path: Path, content: bytes, status: str, needle: str) -> None:
    path = tmp_path / "bad.avi"
    path.write_bytes(content)
    with pytest.raises(VideoDecodeError) as info:
        list(iter_frame_batches(path))
    assert info.value.status == status
    assert str(path) in str(info.value) and needle in str(info.value)
    assert isinstance(info.value, ExtractionError)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(VideoDecodeError, match="does not exist"):
        FrameReader(tmp_path / "nope.mp4")


def test_truncated_header_only_is_empty(tmp_path: Path, video: Path) -> None:
    # Keep only the first kilobytes: the container opens (or not) but no frame decodes.
    path = tmp_path / "trunc.avi"
    path.write_bytes(video.read_bytes()[:600])
    with pytest.raises(VideoDecodeError) as info:
        list(iter_frame_batches(path))
    assert info.value.status in ("empty", "decode_error")
    assert str(path) in str(info.value)


def test_invalid_options(video: Path) -> None:
    with pytest.raises(ExtractionError, match="positive"):
        FrameReader(video, batch_size=0)


def test_decoding_runs_ahead_with_a_bounded_queue(tmp_path: Path) -> None:
    path = tmp_path / "long.avi"
    write_video(path, _frames(60))
    reader = FrameReader(path, batch_size=2, prefetch=2)
    with reader:
        it = iter(reader)
        first = next(it)
        assert len(first) == 2
        # Give the producer time: it fills the queue (2 batches) plus the one it is holding, then waits.
        deadline = time.monotonic() + 5
        while reader._queue.qsize() < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.1)
        assert reader._queue.qsize() == 2
        assert reader.info.decoded_frames <= 2 + 2 * 2 + 2  # bounded read-ahead, not the whole video
    # closing early stops the thread
    assert not reader._thread.is_alive()
    assert not any(t.name.startswith("msclr-decode") and t.is_alive() for t in threading.enumerate())


def test_generator_close_stops_thread(tmp_path: Path) -> None:
    path = tmp_path / "g.avi"
    write_video(path, _frames(40))
    gen = iter_frame_batches(path, batch_size=2, prefetch=1)
    next(gen)
    gen.close()
    time.sleep(0.05)
    assert not any(t.name == "msclr-decode:g.avi" and t.is_alive() for t in threading.enumerate())


def test_matches_bare_opencv(video: Path) -> None:
    cap = cv2.VideoCapture(str(video))
    bare = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        bare.append(cv2.cvtColor(f, cv2.COLOR_BGR2RGB))
    cap.release()
    ours = np.concatenate([b.frames for b in iter_frame_batches(video, batch_size=7)])
    np.testing.assert_array_equal(ours, np.stack(bare))


def test_buffers_are_recycled_only_when_released(tmp_path: Path) -> None:
    path = tmp_path / "r.avi"
    write_video(path, _frames(40))
    expected = np.concatenate([b.frames.copy() for b in iter_frame_batches(path, batch_size=4)])
    kept = []  # views of some batches, kept: their data must never be overwritten
    seen_buffers = []
    got = []
    with FrameReader(path, batch_size=4, prefetch=1) as reader:
        for i, batch in enumerate(reader):
            got.append(batch.frames.copy())
            seen_buffers.append(any(batch.frames is buf for buf in reader._pool))
            if i % 3 == 0:
                kept.append((i, batch.frames[1:3]))
            del batch
    np.testing.assert_array_equal(np.concatenate(got), expected)
    for i, view in kept:
        np.testing.assert_array_equal(view, expected[4 * i + 1: 4 * i + 3])
    # dropped batches were recycled: more pooled batches than pool buffers
    assert sum(seen_buffers) > len(reader._pool) == 3
