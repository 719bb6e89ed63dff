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
- **OpenCV's FFmpeg backend does not follow a size change**: it keeps converting with the first
  size's scaler, which fails, and hands back the **last good frame again** for every frame of the new
  size, with no error (found by ``tests/test_bad_inputs.py`` with a hand-written MJPEG AVI whose frame
  size changes; OpenCV 4.11).  The resize above therefore only applies to backends that do report the
  new size; for FFmpeg the symptom is a run of frames that repeat their predecessor exactly, which the
  reader counts (:attr:`VideoInfo.repeated_frames`, cheap: a strided sample is compared first) so the
  caller can warn.  A truly frozen video gives the same count; it is a warning, not a failure.
- Errors: a missing, zero-byte, unreadable (permissions), unopenable (not a video) or frameless file
  raises :class:`VideoDecodeError` (an :class:`~msclr.errors.ExtractionError`) naming the file, with a
  ``status`` of ``"empty"`` (zero bytes or no decodable frame), ``"unreadable"`` (the operating system
  refuses to read it) or ``"decode_error"``; the message of an unopenable file says whether its first
  bytes look like a video container (then it is truncated or damaged) or not (text, another format).
  A stream that stops decoding early (truncated file) ends the clip there;
  :attr:`VideoInfo.decoded_frames` against :attr:`VideoInfo.frame_count` tells the caller.
"""

from __future__ import annotations

import math
import os
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
"""Extensions (lower case) that :func:`msclr.extractors.jobs.find_videos` picks up in folders."""


class VideoDecodeError(ExtractionError):
    """A video that cannot be decoded; ``status`` is ``"decode_error"``, ``"empty"`` or ``"unreadable"``."""

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
        repeated_frames: kept frames that equal the previous kept frame byte for byte (a frozen
            video, or a size change that OpenCV's FFmpeg backend cannot decode; see the module notes).
    """

    path: Path
    fps: float
    frame_count: int
    width: int = 0
    height: int = 0
    decoded_frames: int = 0
    resized_frames: int = 0
    repeated_frames: int = 0

    def notes(self, kept: int, *, limited: bool = False) -> list[str]:
        """Remarks on a decode that still gave frames: a truncated file (not checked when the
        decode was ``limited`` to the first frames), resized frames, repeated frames (of ``kept``)."""
        notes = []
        if self.frame_count and not limited and self.decoded_frames < self.frame_count - 1:
            notes.append(f"truncated or damaged file? decoded {self.decoded_frames} of {self.frame_count} "
                         "frames the container reports; the clip keeps the decoded ones")
        if self.resized_frames:
            notes.append(f"{self.resized_frames} frames of another size resized to {self.width}x{self.height}")
        if self.repeated_frames:
            notes.append(f"{self.repeated_frames} of {kept} frames repeat the previous frame exactly: "
                         "a frozen video, or a frame size change mid-stream that OpenCV cannot decode (it "
                         "repeats the last good frame); if the size changes, re-encode at one size "
                         "(ffmpeg -i IN -vf scale=W:H OUT.mp4) and extract it again")
        return notes


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
    # FFmpeg's own log lines ("moov atom not found", "[swscaler] Slice parameters ... invalid") would
    # interleave with the progress bars and say less than the per-file status msclr records; keep
    # fatal ones only.  Read by OpenCV when its FFmpeg backend first opens a file; a user's own
    # setting wins (OPENCV_FFMPEG_LOGLEVEL=32 shows everything).
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "8")
    import cv2

    return cv2


_CONTAINERS = (
    (0, b"RIFF", "an AVI/RIFF file"), (4, b"ftyp", "an MP4/MOV file"), (4, b"moov", "an MP4/MOV file"),
    (4, b"mdat", "an MP4/MOV file"), (4, b"wide", "an MP4/MOV file"), (4, b"free", "an MP4/MOV file"),
    (0, b"\x1a\x45\xdf\xa3", "a Matroska/WebM file"), (0, b"\x00\x00\x01\xba", "an MPEG program stream"),
    (0, b"\x00\x00\x01\xb3", "an MPEG video stream"), (0, b"FLV", "an FLV file"), (0, b"OggS", "an Ogg file"),
    (0, b"\x30\x26\xb2\x75\x8e\x66\xcf\x11", "an ASF/WMV file"),
)


def _describe_head(head: bytes) -> str | None:
    """What the first bytes of a file look like: a video container (named), text, or None (unknown)."""
    for offset, magic, kind in _CONTAINERS:
        if head[offset:offset + len(magic)] == magic:
            return kind
    if len(head) > 376 and head[0] == head[188] == head[376] == 0x47:
        return "an MPEG transport stream"
    sample = head[:256]
    if sample and all(32 <= b < 127 or b in b"\t\r\n" for b in sample):
        return "text"
    return None


def _read_head(path: Path, size: int = 512) -> bytes:
    """The first ``size`` bytes of ``path``.

    Raises:
        VideoDecodeError: ``status="unreadable"`` when the operating system refuses to read the file
            (permissions, I/O error): OpenCV would only say it cannot open it.
    """
    try:
        with open(path, "rb") as fh:
            return fh.read(size)
    except PermissionError:
        raise VideoDecodeError(
            f"video {path} cannot be read: permission denied; give this user read access "
            "(e.g. chmod a+r FILE) or run msclr as a user who can read it, then rerun with --retry-failed",
            status="unreadable",
        ) from None
    except OSError as err:
        raise VideoDecodeError(
            f"video {path} cannot be read ({type(err).__name__}: {err.strerror or err}); check the disk or "
            "network share, re-copy the file, then rerun with --retry-failed",
            status="unreadable",
        ) from None


def open_video(path: str | Path) -> tuple[Any, VideoInfo]:
    """Open ``path`` with OpenCV and read its container metadata.

    Returns:
        ``(capture, info)``; the caller releases the capture.

    Raises:
        VideoDecodeError: missing file, zero bytes, unreadable, or not openable as a video.
    """
    cv2 = _cv2()
    path = Path(path)
    if not path.is_file():
        raise VideoDecodeError(f"video {path} does not exist or is not a file; check the path")
    if path.stat().st_size == 0:
        raise VideoDecodeError(f"video {path} is empty (0 bytes); re-copy or re-download it", status="empty")
    head = _read_head(path)
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        cap.release()
        kind = _describe_head(head)
        if kind == "text":
            preview = head[:40].decode("ascii", "replace").splitlines()[0] if head.strip() else ""
            why = (f"it is not a video but a text file (starts with {preview!r}); remove it from the "
                   "inputs or give it its real extension")
        elif kind is not None:
            why = (f"it starts like {kind} but is truncated or damaged, or uses a codec this OpenCV build "
                   "lacks; check it with `ffprobe`, re-copy it, or re-encode it "
                   "(e.g. ffmpeg -i IN -c:v libx264 OUT.mp4)")
        else:
            why = ("not a video, or a codec this OpenCV build lacks; check it with `ffprobe`, or re-encode "
                   "it (e.g. ffmpeg -i IN -c:v libx264 OUT.mp4)")
        raise VideoDecodeError(f"video {path} cannot be opened by OpenCV: {why}")
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    info = VideoInfo(path=path, fps=fps if math.isfinite(fps) and fps > 0 else math.nan,
                     frame_count=max(count, 0))
    return cap, info


_END = object()


def _same_frame(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two decoded frames are byte-identical; a strided sample (~1/64 of the pixels) is
    compared first, so frames that differ (nearly all) cost next to nothing."""
    if a.shape != b.shape or not np.array_equal(a[::8, ::8], b[::8, ::8]):
        return False
    return bool(np.array_equal(a, b))


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
            previous: np.ndarray | None = None  # the last kept frame as decoded (BGR, its own size)
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
                    if previous is not None and _same_frame(frame, previous):
                        info.repeated_frames += 1
                    previous = frame
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
