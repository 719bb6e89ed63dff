"""One cache record: :class:`Clip` (poses of one clip plus its metadata) and :class:`ClipStatus`."""

from __future__ import annotations

import enum
import math
import re
from dataclasses import dataclass, field

import numpy as np


class ClipStatus(str, enum.Enum):  # noqa: UP042 - a str mixin; __str__ below returns the value
    """The status of a clip record: ``OK`` (it has poses) or why it has none.

    Members are plain strings (``ClipStatus.OK == "ok"``, ``str()`` and JSON give the value), so records
    written or compared with the bare strings stay the same.  The cache accepts any non-empty status
    string; these are the ones msclr writes.
    """

    OK = "ok"
    DECODE_ERROR = "decode_error"
    """The video could not be decoded (damaged, or not a video)."""
    EMPTY = "empty"
    """The video has zero bytes or no decodable frame."""
    UNREADABLE = "unreadable"
    """The operating system refused to read the file (permissions, I/O error)."""
    NO_PERSON = "no_person"
    """No frame shows a person."""
    ERROR = "error"
    """The pose extractor failed on this clip."""
    PARSE_ERROR = "parse_error"
    """An imported skeleton file could not be parsed."""

    def __str__(self) -> str:
        return self.value


INT_FIELDS = ("label", "subject", "camera", "setup", "replication")
"""Integer metadata fields of a clip (-1: unknown)."""
STR_FIELDS = ("source", "extractor", "model_id", "status", "message")
"""String metadata fields of a clip."""
CLIP_NAME_RE = re.compile(r"[^\x00-\x1f/\x7f]+")
"""What a clip name may contain: no ``/`` and no control characters."""


@dataclass(eq=False)
class Clip:
    """One clip: raw-length poses per convention plus metadata.

    Attributes:
        name: unique id (NTU sample name such as ``S001C001P001R001A001`` or a video stem);
            non-empty, no ``/``.
        poses: convention -> ``(T, M, V, 3)`` float32 metres, Kinect camera axes; every convention
            of the cache for an ``"ok"`` clip, none for a failed clip.  All conventions share T.
        label: 0-based class, -1 unknown.
        subject, camera, setup, replication: dataset fields, -1 unknown.
        fps: frames per second of the source, NaN unknown.
        source: source file.
        extractor: ``"metrabs"``, ``"mediapipe"``, ``"import-ntu"``, ``"import-pyskl"``, ``"synthetic"``.
        model_id: pose model URL / path / version.
        persons: person slots actually used (``0 <= persons <= M``); 0 on an ``"ok"`` clip means
            "not given" and is inferred on :meth:`CacheWriter.add` as the number of non-zero slots.
        scores: ``(T, M)`` float32 per-frame person score (NaN unknown), or None.
        frame_indices: ``(T,)`` int64 frame index of each row in the source video, or None.
        status: :attr:`ClipStatus.OK` or a failure status (:class:`ClipStatus`, or any other non-empty
            string).
        message: human-readable detail for a failure.
    """

    name: str
    poses: dict[str, np.ndarray] = field(default_factory=dict)
    label: int = -1
    subject: int = -1
    camera: int = -1
    setup: int = -1
    replication: int = -1
    fps: float = math.nan
    source: str = ""
    extractor: str = ""
    model_id: str = ""
    persons: int = 0
    scores: np.ndarray | None = None
    frame_indices: np.ndarray | None = None
    status: str = ClipStatus.OK
    message: str = ""

    @property
    def frames(self) -> int:
        """T, the number of stored frames (0 for a failed clip)."""
        for array in self.poses.values():
            return int(np.shape(array)[0])
        return 0


__all__ = ["CLIP_NAME_RE", "INT_FIELDS", "STR_FIELDS", "Clip", "ClipStatus"]
