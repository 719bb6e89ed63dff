"""Streaming video decoding with OpenCV: RGB frame batches, decoded ahead in a background thread.

:func:`iter_frame_batches` yields :class:`FrameBatch` objects of at most ``batch_size`` frames,
``(B, H, W, 3)`` uint8 **RGB** (OpenCV decodes BGR; the conversion happens here, once, straight
into the batch buffer).  A daemon thread decodes the next batches while the caller runs inference
on the current one; the hand-over queue holds at most ``prefetch`` batches, so memory is bounded
by ``(prefetch + 2) * batch_size * H * W * 3`` bytes whatever the length of the video (e.g.
4 x 16 x 1920 x 1080 x 3 = 398 MB for 1080p at the defaults), for a consumer that drops each batch
before asking for the next (``del batch`` at the end of the loop body, as msclr's pipeline does).  cv2 releases the GIL while
decoding and converting, so the thread runs truly in parallel with TensorFlow or MediaPipe.

Batch buffers are recycled: a buffer goes back into use only once nothing outside the reader
references it any more (its reference count drops to the pool's own), so a consumer that keeps a
batch (or a view of it) keeps valid data (it then costs fresh allocations), and one that drops it
saves the page faults and zeroing of a fresh 100 MB allocation per 1080p batch (measured: +3.5 to
7 ms CPU per frame without recycling, about as much as decoding the frame).

Decisions:

- **Frame size changes mid-stream** (rare; some concatenated or broken files): every frame is
  resized to the **first** frame's size (``cv2.INTER_AREA``).  Extractors then see one image size
  per video, so the camera intrinsics stay one matrix per clip; the number of resized frames is
  reported in :attr:`VideoInfo.resized_frames`.
- ``stride`` keeps frames 0, stride, 2*stride, ... (skipped frames are ``grab()``-ed, not
  converted); ``limit`` decodes at most the first ``limit`` frames **of the source** (frame indices
  ``< limit``), as MS-CLR truncated NTU clips to their first 300 frames.
- Errors: a missing, zero-byte, unopenable (not a video) or frameless file raises
  :class:`VideoDecodeError` (an :class:`~msclr.errors.ExtractionError`) naming the file, with a
  ``status`` of ``"empty"`` (zero bytes or no decodable frame) or ``"decode_error"``.  A stream that
  stops decoding early (truncated file) ends the clip there; :attr:`VideoInfo.decoded_frames` against
  :attr:`VideoInfo.frame_count` tells the caller.
"""

from __future__ import annotations

import math
import queue
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from msclr.errors import ExtractionError

VIDEO_EXTENSIONS = frozenset({
    ".avi", ".mp4", ".mkv", ".mov", ".webm", ".mpg", ".mpeg", ".m4v", ".wmv", ".flv", ".3gp", ".ts",
})
"""Extensions (lower case) that :func:`msclr.pipeline.extract.find_videos` picks up in folders."""


class VideoDecodeError(ExtractionError):
    """A video that cannot be decoded; ``status`` is ``"decode_error"`` or ``"empty"``."""

    def __init__(self, message: str, status: str = "decode_error") -> None:
        super().__init__(message)
        self.status = status


@dataclass
class VideoInfo:
    """What the container says plus what decoding found.

    Attributes:
        path: the file.
        fps: frames per second from the container (NaN when it reports none).
        frame_count: frame count from the container metadata (0 when unknown; may be wrong).
        width, height: size of the first decoded frame (all yielded frames have this size).
        decoded_frames: source frames read so far (including those skipped by the stride).
        resized_frames: frames whose size differed from the first frame's and were resized.
    """

    path: Path
    fps: float
    frame_count: int
    width: int = 0
    height: int = 0
    decoded_frames: int = 0
    resized_frames: int = 0


@dataclass
class FrameBatch:
    """Consecutive decoded frames of one video.

    Attributes:
        frames: ``(B, H, W, 3)`` uint8 RGB, C-contiguous.
        indices: ``(B,)`` int64 frame index of each row in the source video.
    """

    frames: np.ndarray
    indices: np.ndarray

    def __len__(self) -> int:
        return len(self.indices)


def _cv2() -> Any:
    import cv2

    return cv2


def open_video(path: str | Path) -> tuple[Any, VideoInfo]:
    """Open ``path`` with OpenCV and read its container metadata.

    Returns:
        ``(capture, info)``; the caller releases the capture.

    Raises:
        VideoDecodeError: missing file, zero bytes, or not openable as a video.
    """
    cv2 = _cv2()
    path = Path(path)
    if not path.is_file():
        raise VideoDecodeError(f"video {path} does not exist or is not a file; check the path")
    if path.stat().st_size == 0:
        raise VideoDecodeError(f"video {path} is empty (0 bytes); re-copy or re-download it", status="empty")
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        cap.release()
        raise VideoDecodeError(
            f"video {path} cannot be opened by OpenCV: not a video, or a codec this OpenCV build "
            "lacks; check it with `ffprobe`, or re-encode it (e.g. ffmpeg -i IN -c:v libx264 OUT.mp4)"
        )
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    info = VideoInfo(path=path, fps=fps if math.isfinite(fps) and fps > 0 else math.nan,
                     frame_count=max(count, 0))
    return cap, info


_END = object()


class FrameReader:
    """Background-thread decoder of one video into RGB batches.

    Use as an iterator (``for batch in reader``) inside a ``with`` block, or through
    :func:`iter_frame_batches`.  Closing the reader (or leaving the ``with`` block early) stops
    the thread and releases the capture.

    Args:
        path: the video.
        batch_size: frames per batch (the last batch may be shorter).
        stride: keep every ``stride``-th source frame.
        limit: decode at most the first ``limit`` source frames (None: all).
        prefetch: batches decoded ahead (queue bound; >= 1).

    Raises (on construction):
        VideoDecodeError: see :func:`open_video`.
    """

    def __init__(self, path: str | Path, *, batch_size: int = 16, stride: int = 1, limit: int | None = None,
                 prefetch: int = 2) -> None:
        if batch_size < 1 or stride < 1 or prefetch < 1 or (limit is not None and limit < 1):
            raise ExtractionError(
                f"invalid decoding options batch_size={batch_size}, stride={stride}, limit={limit}, "
                f"prefetch={prefetch}: all must be positive integers"
            )
        self._cap, self.info = open_video(path)
        self.batch_size = batch_size
        self.stride = stride
        self.limit = limit
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=prefetch)
        self._pool: list[np.ndarray] = []
        # the queue + the batch being filled + the consumer's current batch
        self._pool_size = prefetch + 2
        self._next = 0
        probe = [np.empty(0, np.uint8)]
        self._free_refs = sys.getrefcount(probe[0])  # count of a buffer only the pool holds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"msclr-decode:{Path(path).name}", daemon=True)
        self._started = False
        self._finished = False

    # ------------------------------------------------------------------ thread
    def _buffer(self, shape: tuple[int, ...]) -> np.ndarray:
        """A batch buffer that nobody else references.

        The first ``pool size`` batches get buffers of their own (so peak memory reaches its bound
        early and deterministically, whatever the video's length); after that, buffers are reused in
        rotation once their reference count shows that only the pool holds them.  A consumer that
        keeps every batch gets fresh, unpooled buffers.
        """
        if len(self._pool) < self._pool_size:
            self._pool.append(np.empty(shape, dtype=np.uint8))
            return self._pool[-1]
        n = len(self._pool)
        for k in range(n):
            i = (self._next + k) % n
            # more references than the pool's own: a consumer still holds the batch or a view of it
            if sys.getrefcount(self._pool[i]) <= self._free_refs and self._pool[i].shape == shape:
                self._next = (i + 1) % n
                return self._pool[i]
        return np.empty(shape, dtype=np.uint8)

    def _put(self, item: Any) -> bool:
        """Blocking put that gives up when the reader is closed."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        cv2 = _cv2()
        cap, info = self._cap, self.info
        try:
            index = 0
            first_shape: tuple[int, int] | None = None
            buf: np.ndarray | None = None
            idx = np.empty(self.batch_size, dtype=np.int64)
            filled = 0
            while not self._stop.is_set():
                if self.limit is not None and index >= self.limit:
                    break
                keep = index % self.stride == 0
                if keep:
                    ok, frame = cap.read()
                else:
                    ok, frame = cap.grab(), None
                if not ok:
                    break
                info.decoded_frames = index + 1
                if keep:
                    if frame is None or frame.ndim != 3 or frame.shape[2] != 3:
                        raise VideoDecodeError(
                            f"video {info.path}: frame {index} is not a 3-channel image "
                            f"(shape {None if frame is None else frame.shape}); re-encode the video"
                        )
                    if first_shape is None:
                        first_shape = frame.shape[:2]
                        info.height, info.width = first_shape
                    if buf is None:
                        buf = self._buffer((self.batch_size, *first_shape, 3))
                    if frame.shape[:2] != first_shape:
                        frame = cv2.resize(frame, (first_shape[1], first_shape[0]), interpolation=cv2.INTER_AREA)
                        info.resized_frames += 1
                    cv2.cvtColor(frame, cv2.COLOR_BGR2RGB, dst=buf[filled])
                    idx[filled] = index
                    filled += 1
                    if filled == self.batch_size:
                        if not self._put(FrameBatch(buf, idx.copy())):
                            return
                        buf, filled = None, 0
                index += 1
            if filled and buf is not None:
                self._put(FrameBatch(buf[:filled], idx[:filled].copy()))
            self._put(_END)
        except BaseException as err:  # noqa: BLE001 - handed to the consumer thread
            self._put(err)
        finally:
            cap.release()

    # ---------------------------------------------------------------- consumer
    def __iter__(self) -> Iterator[FrameBatch]:
        if not self._started:
            self._started = True
            self._thread.start()
        while not self._finished:
            item = self._queue.get()
            if item is _END:
                self._finished = True
                break
            if isinstance(item, BaseException):
                self._finished = True
                if isinstance(item, ExtractionError):
                    raise item
                raise VideoDecodeError(f"video {self.info.path}: decoding failed: {item}") from item
            yield item
            item = None  # do not pin the consumer's previous batch while waiting for the next
        if self.info.decoded_frames == 0 or self.info.width == 0:
            raise VideoDecodeError(
                f"video {self.info.path} has no decodable frame (container reports "
                f"{self.info.frame_count}); the file is empty or truncated, re-copy or re-encode it",
                status="empty",
            )

    def close(self) -> None:
        """Stop the decoding thread and release the capture (idempotent)."""
        self._stop.set()
        if self._started:
            while self._thread.is_alive():
                try:  # unblock a producer waiting on a full queue
                    self._queue.get_nowait()
                except queue.Empty:
                    pass
                self._thread.join(timeout=0.05)
        else:
            self._cap.release()

    def __enter__(self) -> FrameReader:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def iter_frame_batches(path: str | Path, *, batch_size: int = 16, stride: int = 1, limit: int | None = None,
                       prefetch: int = 2) -> Iterator[FrameBatch]:
    """Yield RGB batches of ``path`` (see :class:`FrameReader`); the thread stops when the generator closes."""
    with FrameReader(path, batch_size=batch_size, stride=stride, limit=limit, prefetch=prefetch) as reader:
        yield from reader


def write_video(path: str | Path, frames: Iterator[np.ndarray] | list[np.ndarray], *, fps: float = 30.0,
                codec: str = "MJPG") -> int:
    """Write RGB ``(H, W, 3)`` uint8 frames to ``path`` with OpenCV (tests, benchmarks, demos).

    ``codec`` is a FourCC (``"MJPG"`` in ``.avi`` is fast to write and decode; ``"mp4v"`` for ``.mp4``).

    Returns:
        the number of frames written.

    Raises:
        ExtractionError: OpenCV cannot open a writer for this codec / container.
    """
    cv2 = _cv2()
    writer = None
    count = 0
    try:
        for frame in frames:
            if writer is None:
                h, w = frame.shape[:2]
                writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), fps, (w, h))
                if not writer.isOpened():
                    raise ExtractionError(f"OpenCV cannot write {path} with codec {codec!r}; try MJPG in .avi")
            writer.write(cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2BGR))
            count += 1
    finally:
        if writer is not None:
            writer.release()
    return count


__all__ = [
    "VIDEO_EXTENSIONS",
    "write_video",
    "FrameBatch",
    "FrameReader",
    "VideoDecodeError",
    "VideoInfo",
    "iter_frame_batches",
    "open_video",
]
