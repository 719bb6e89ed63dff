"""Reader for NTU RGB+D ``.skeleton`` text files and the choice of up to two bodies.

File format (as read by the dataset's own shahroudy/NTURGB-D:Matlab/read_skeleton_file.m),
whitespace-separated, one record per line::

    frameCount
    per frame:   bodyCount
      per body:  bodyID clipedEdges handLeftConfidence handLeftState handRightConfidence
                 handRightState isResticted leanX leanY trackingState        (10 values)
                 jointCount                                                  (25)
                 25 x: x y z depthX depthY colorX colorY oW oX oY oZ trackingState   (12 values)

x, y, z are metres in Kinect v2 camera space, which is the cache's frame, so they are stored as
they are (a position beyond 100 m is garbage and rejected here, naming the line, rather than
aborting the import when the cache refuses it).  The reader is exact: every line must have the expected number of values, and the file
must end after the declared frames (trailing blank lines aside).  Any violation raises
:class:`~msclr.errors.ImportFormatError` naming the file and the 1-based line number.

Body selection (:func:`select_bodies`) keeps the video's time axis: a frame with no body stays a
zero row, so frame ``t`` of the result is frame ``t`` of the video (``frame_indices = arange(T)``).
Two rules:

``"motion"`` (default): the NTU FAQ rule, as pyskl (``tools/data/ntu_preproc.py``) implements it,
with its mistakes fixed.  Bodies are tracks keyed by the Kinect ``bodyID``.

1. motion(track) = sum over x, y, z of the variance over all its frames and joints;
2. a single track is kept; otherwise tracks with <= 11 frames are dropped (if that would drop
   every track, all are kept: pyskl fails an assertion there);
3. spread denoising: a frame is valid when its x-range <= 0.8 x its y-range (a person is taller
   than wide; tables and seats are not); a track with an invalid fraction >= 0.69754 is dropped,
   otherwise motion = min(motion, motion over its valid frames) (if every track would be dropped,
   none is: pyskl again fails an assertion);
4. tracks sorted by motion (descending, ties by first appearance) are packed greedily into two
   slots: a track goes to the first slot whose frame span (first to last frame of the tracks already
   there) does not overlap its own span; otherwise it is discarded.

Fixed relative to pyskl: frames with no body are kept instead of dropped (pyskl shortens the
time axis, so its frames no longer match the video); a track that disappears and reappears keeps
its true frame indices (pyskl assumes tracks are contiguous from their first frame); an empty slot
has no span (pyskl starts slot 1 with the span [0, 0), which it then extends to start at frame 0);
a file with no body at all is reported (pyskl's filter ``if anno_dict is not None`` tests the dict,
not the sample, so such samples kept a ``None`` annotation).  No leading/trailing trimming and no
slot swap: slot 0 always holds the highest-motion track.

``"file"``: the st-gcn rule (yysijie/st-gcn:tools/ntu_gendata.py, used by CrosSCLR, AimCLR and
MS-CLR): in each frame the first two bodies as listed go to slots 0 and 1, with no tracking and no
denoising (slots can swap identity between frames).  Use it to reproduce those papers' inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from msclr.errors import ImportFormatError
from msclr.pipeline.datasets.ntu import parse_ntu_name

if TYPE_CHECKING:
    from msclr.pipeline.cache import Clip

NUM_JOINTS = 25  # Kinect v2 joints per body
BODY_INFO_VALUES = 10  # values on a body-info line
JOINT_VALUES = 12  # values on a joint line
MIN_TRACK_FRAMES = 11  # tracks with at most this many frames are noise (pyskl's length_threshold)
SPREAD_RATIO = 0.8  # a valid frame has x-range <= SPREAD_RATIO * y-range
NOISE_FRACTION = 0.69754  # tracks with at least this fraction of invalid frames are noise
NTU_FPS = 30.0  # Kinect v2 frame rate
MAX_ABS_METRES = 100.0  # Kinect v2 sees < 10 m; larger values are garbage (and the cache refuses them)

BodyOrder = Literal["motion", "file"]
BODY_ORDERS: tuple[str, ...] = ("motion", "file")


@dataclass
class BodyTrack:
    """One Kinect body track: the frames in which a ``bodyID`` appears.

    Attributes:
        body_id: the 64-bit Kinect ``bodyID``.
        frames: (k,) int64 frame indices (0-based, increasing).
        xyz: (k, 25, 3) float64 joint positions, metres, Kinect camera space.
    """

    body_id: int
    frames: np.ndarray
    xyz: np.ndarray

    @property
    def motion(self) -> float:
        """Sum over x, y, z of the variance over all frames and joints (m^2)."""
        return _motion(self.xyz)


@dataclass
class SkeletonFile:
    """A parsed ``.skeleton`` file.

    Attributes:
        path: the file read.
        num_frames: declared frame count T (frames with no body included).
        tracks: body tracks in order of first appearance.
        frame_bodies: per frame, ``(track index, xyz (25, 3))`` for each body in file order.
    """

    path: Path
    num_frames: int
    tracks: list[BodyTrack] = field(default_factory=list)
    frame_bodies: list[list[tuple[int, np.ndarray]]] = field(default_factory=list)


def _motion(xyz: np.ndarray) -> float:
    return float(np.sum(np.var(xyz.reshape(-1, 3), axis=0)))


class _Lines:
    """Line cursor that reports 1-based line numbers in its errors."""

    def __init__(self, path: Path, lines: list[str]):
        self.path = path
        self.lines = lines
        self.pos = 0  # index of the next line

    def fail(self, line_index: int, what: str) -> ImportFormatError:
        return ImportFormatError(
            f"{self.path}: line {line_index + 1}: {what}. The file is truncated or garbled: "
            "download or extract it again, or leave it out (the NTU missing-skeleton list names "
            "the samples known to be empty)."
        )

    def take(self, count: int, what: str) -> list[str]:
        if self.pos + count > len(self.lines):
            raise self.fail(len(self.lines), f"file ends early, expected {what}")
        chunk = self.lines[self.pos : self.pos + count]
        self.pos += count
        return chunk

    def integer(self, what: str) -> int:
        (line,) = self.take(1, what)
        tokens = line.split()
        if len(tokens) != 1 or not _is_int(tokens[0]) or int(tokens[0]) < 0:
            raise self.fail(self.pos - 1, f"expected {what} (one non-negative integer), found {line.strip()!r:.60}")
        return int(tokens[0])


def _is_int(token: str) -> bool:
    return token.isdigit() or (token[:1] in "+-" and token[1:].isdigit())


def read_skeleton_file(path: str | Path) -> SkeletonFile:
    """Parse one ``.skeleton`` file exactly.

    Raises:
        ImportFormatError: unreadable, truncated or garbled file, naming the file and line.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise ImportFormatError(f"cannot read {path}: {err.strerror or err}. Check the path and permissions.") from None
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise ImportFormatError(
            f"{path}: line {line}: not a text .skeleton file (byte {err.start} is not ASCII). "
            "The file is garbled or is not an NTU skeleton file: download or extract it again."
        ) from None
    cursor = _Lines(path, text.splitlines())
    num_frames = cursor.integer("the frame count")
    result = SkeletonFile(path=path, num_frames=num_frames)
    # Pass 1: structure (counts, body-info lines); remember where each joint block starts.
    track_index: dict[tuple[int, int], int] = {}
    blocks: list[tuple[int, int, int]] = []  # (frame, track index, first joint line index)
    for frame in range(num_frames):
        body_count = cursor.integer(f"the body count of frame {frame + 1}")
        seen: dict[int, int] = {}
        for body in range(body_count):
            (info,) = cursor.take(1, f"the body-info line of body {body + 1} in frame {frame + 1}")
            tokens = info.split()
            if len(tokens) != BODY_INFO_VALUES or not _is_int(tokens[0]) or not _all_numbers(tokens[1:]):
                raise cursor.fail(
                    cursor.pos - 1,
                    f"expected the body-info line of body {body + 1} in frame {frame + 1} "
                    f"({BODY_INFO_VALUES} numbers, the first an integer bodyID), found {info.strip()!r:.80}",
                )
            body_id = int(tokens[0])
            joint_count = cursor.integer(f"the joint count of body {body + 1} in frame {frame + 1}")
            if joint_count != NUM_JOINTS:
                raise cursor.fail(cursor.pos - 1, f"expected {NUM_JOINTS} joints, found {joint_count}")
            start = cursor.pos
            cursor.take(NUM_JOINTS, f"{NUM_JOINTS} joint lines of body {body + 1} in frame {frame + 1}")
            # Two bodies with one ID in one frame are kept apart as separate tracks.
            dup = seen.get(body_id, 0)
            seen[body_id] = dup + 1
            key = (body_id, dup)
            if key not in track_index:
                track_index[key] = len(track_index)
            blocks.append((frame, track_index[key], start))
    rest = cursor.lines[cursor.pos :]
    extra = next((i for i, line in enumerate(rest) if line.strip()), None)
    if extra is not None:
        raise cursor.fail(
            cursor.pos + extra, f"unexpected data after the {num_frames} declared frames ({rest[extra].strip()!r:.60})"
        )
    # Pass 2: all joint lines in one vectorised parse; the per-line check runs only to explain a failure.
    xyz_all = _parse_all_joints(cursor, [start for _, _, start in blocks])
    result.frame_bodies = [[] for _ in range(num_frames)]
    track_rows: list[list[int]] = [[] for _ in track_index]
    for row, (frame, index, _) in enumerate(blocks):
        result.frame_bodies[frame].append((index, xyz_all[row]))
        track_rows[index].append(row)
    for (body_id, _), index in track_index.items():
        rows = np.asarray(track_rows[index], dtype=np.int64)
        frames = np.asarray([blocks[r][0] for r in track_rows[index]], dtype=np.int64)
        result.tracks.append(BodyTrack(body_id, frames, xyz_all[rows]))
    return result


def _parse_all_joints(cursor: _Lines, starts: list[int]) -> np.ndarray:
    """(bodies, 25, 3) float64 x, y, z of every joint block (each 25 lines of 12 numbers)."""
    if not starts:
        return np.zeros((0, NUM_JOINTS, 3))
    lines = [line for start in starts for line in cursor.lines[start : start + NUM_JOINTS]]
    try:
        values = np.loadtxt(lines, dtype=np.float64, comments=None, ndmin=2)
        ok = values.shape == (len(lines), JOINT_VALUES) and bool((np.abs(values[:, :3]) <= MAX_ABS_METRES).all())
    except ValueError:
        ok = False
    if not ok:  # find and name the first bad line
        for start in starts:
            _parse_joints(cursor, start, cursor.lines[start : start + NUM_JOINTS])
        raise cursor.fail(starts[0], "unparseable joint lines")  # pragma: no cover - the loop raises
    return values[:, :3].reshape(len(starts), NUM_JOINTS, 3)


def _all_numbers(tokens: Sequence[str]) -> bool:
    try:
        for token in tokens:
            float(token)
    except ValueError:
        return False
    return True


def _parse_joints(cursor: _Lines, start: int, block: list[str]) -> np.ndarray:
    """(25, 3) float64 x, y, z of one body; every line must hold 12 numbers and x, y, z within
    ±MAX_ABS_METRES (finite)."""
    rows = [line.split() for line in block]
    for k, row in enumerate(rows):
        if len(row) != JOINT_VALUES:
            raise cursor.fail(
                start + k, f"expected a joint line of {JOINT_VALUES} numbers, found {len(row)} values ({block[k].strip()!r:.60})"
            )
    try:
        values = np.array(rows, dtype=np.float64)
    except ValueError:
        bad = next(k for k, row in enumerate(rows) if not _all_numbers(row))
        raise cursor.fail(start + bad, f"non-numeric value in a joint line ({block[bad].strip()!r:.60})") from None
    xyz = values[:, :3]
    finite = np.isfinite(xyz).all(axis=1)
    if not finite.all():
        bad = int(np.argmin(finite))
        raise cursor.fail(start + bad, "non-finite joint position")
    in_range = (np.abs(xyz) <= MAX_ABS_METRES).all(axis=1)
    if not in_range.all():
        bad = int(np.argmin(in_range))
        raise cursor.fail(start + bad, f"joint position beyond {MAX_ABS_METRES:g} m ({block[bad].strip()!r:.60})")
    return xyz


# ------------------------------------------------------------------ body selection
def _valid_frames(xyz: np.ndarray) -> np.ndarray:
    """(k,) bool: frames whose x-range is at most SPREAD_RATIO times the y-range."""
    x_range = np.ptp(xyz[:, :, 0], axis=1)
    y_range = np.ptp(xyz[:, :, 1], axis=1)
    return x_range <= SPREAD_RATIO * y_range


def rank_tracks(tracks: Sequence[BodyTrack]) -> list[int]:
    """Indices of the tracks that survive the noise filters, by decreasing motion (module doc, 1-3)."""
    if not tracks:
        return []
    motion = {i: track.motion for i, track in enumerate(tracks)}
    candidates = list(range(len(tracks)))
    if len(candidates) > 1:
        long_enough = [i for i in candidates if len(tracks[i].frames) > MIN_TRACK_FRAMES]
        candidates = long_enough or candidates
    if len(candidates) > 1:
        kept = []
        for i in candidates:
            valid = _valid_frames(tracks[i].xyz)
            if 1.0 - valid.mean() >= NOISE_FRACTION:
                continue
            if not valid.all():
                motion[i] = min(motion[i], _motion(tracks[i].xyz[valid]))
            kept.append(i)
        candidates = kept or candidates
    return sorted(candidates, key=lambda i: (-motion[i], i))


def _pack_by_motion(parsed: SkeletonFile, out: np.ndarray) -> int:
    """Fill ``out`` (T, M, 25, 3) from the ranked tracks; returns the number of slots used."""
    spans: list[tuple[int, int] | None] = [None] * out.shape[1]
    for i in rank_tracks(parsed.tracks):
        track = parsed.tracks[i]
        start, end = int(track.frames[0]), int(track.frames[-1]) + 1
        for slot, span in enumerate(spans):
            if span is None or max(span[0], start) >= min(span[1], end):
                out[track.frames, slot] = track.xyz
                spans[slot] = (start, end) if span is None else (min(span[0], start), max(span[1], end))
                break
    return sum(span is not None for span in spans)


def select_bodies(
    parsed: SkeletonFile, *, max_persons: int = 2, body_order: BodyOrder = "motion"
) -> tuple[np.ndarray, int]:
    """Choose up to ``max_persons`` bodies per frame, keeping the video's time axis.

    Returns:
        poses: (T, max_persons, 25, 3) float32 metres, zero where a slot is empty.
        persons: slots used (0 when the file has no body at all).
    """
    if body_order not in BODY_ORDERS:
        raise ValueError(f"body_order must be one of {BODY_ORDERS}, not {body_order!r}")
    out = np.zeros((parsed.num_frames, max_persons, NUM_JOINTS, 3), dtype=np.float64)
    if body_order == "file":
        persons = 0
        for frame, bodies in enumerate(parsed.frame_bodies):
            for slot, (_, xyz) in enumerate(bodies[:max_persons]):
                out[frame, slot] = xyz
            persons = max(persons, min(len(bodies), max_persons))
    else:
        persons = _pack_by_motion(parsed, out)
    return out.astype(np.float32), persons


def skeleton_to_clip(
    path: str | Path, *, max_persons: int = 2, body_order: BodyOrder = "motion", convention: str = "ntu_kinect_25"
) -> Clip:
    """Read a ``.skeleton`` file into a :class:`~msclr.pipeline.cache.Clip`.

    The clip is named after the NTU sample ID (or the file stem when the name is not an NTU
    name), with label / subject / camera / setup / replication from the name, fps 30, poses
    ``{convention: (T, max_persons, 25, 3)}`` float32 metres and ``frame_indices = arange(T)``.
    A file without any body gives a clip with status ``"no_person"`` and no poses (the cache
    stores no arrays for failed clips).

    Raises:
        ImportFormatError: the file cannot be parsed (file and line in the message).
    """
    from msclr.pipeline.cache import ClipStatus

    path = Path(path)
    parsed = read_skeleton_file(path)
    poses, persons = select_bodies(parsed, max_persons=max_persons, body_order=body_order)
    clip = ntu_clip_stub(path, status=ClipStatus.OK)
    clip.model_id = f"kinect-v2 .skeleton, body order {body_order}"
    if persons == 0:
        clip.status = ClipStatus.NO_PERSON
        clip.message = f"{path.name}: no body in any of its {parsed.num_frames} frames"
        return clip
    clip.poses = {convention: poses}
    clip.persons = persons
    clip.frame_indices = np.arange(parsed.num_frames, dtype=np.int64)
    return clip


def ntu_clip_stub(path: str | Path, *, status: str, message: str = "") -> Clip:
    """A pose-less clip for ``path`` with the fields its NTU name gives (name, label, ...).

    Used for the clips of files that failed (``status="parse_error"``) and as the base of
    :func:`skeleton_to_clip`.  A name that is not an NTU name gives the file stem and -1 fields.
    """
    from msclr.pipeline.cache import Clip

    path = Path(path)
    ntu = parse_ntu_name(path.name)
    clip = Clip(
        name=ntu.name if ntu else path.name.split(".")[0],
        fps=NTU_FPS,
        source=str(path),
        extractor="import-ntu",
        status=status,
        message=message,
    )
    if ntu is not None:
        clip.label, clip.subject, clip.camera = ntu.label, ntu.subject, ntu.camera
        clip.setup, clip.replication = ntu.setup, ntu.replication
    return clip
