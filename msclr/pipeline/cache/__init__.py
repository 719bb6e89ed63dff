"""The HDF5 skeleton cache: a crash-safe directory of immutable HDF5 segments.

The contract it keeps is written down in ``docs/cache.md``.

Coordinates are metres in Kinect camera space: x towards the camera's left, y up, z forward
(away from the camera).  Every array stored for a convention is ``(T, M, V, 3)`` float32 at the
clip's raw length T (no resampling), M = the cache's ``max_persons`` person slots (an unused slot
is all zeros), V = the convention's joint count.  A clip may hold only some of the cache's conventions
(conventions added to a cache later, :meth:`CacheWriter.add_poses`); :meth:`Cache.names_with` gives the clips
that hold a given set.

Modules, one job each:

- :mod:`.clip`: :class:`Clip` (one record) and :class:`ClipStatus`.
- :mod:`.manifest`: the directory layout, ``msclr-cache.json`` and ``splits.json``.
- :mod:`.segments`: the HDF5 layout of one segment file; encoding, checking and reading one segment.
- :mod:`.index`: the committed segments of a cache, and which one holds the latest commit of each clip.
- :mod:`.seal`: the checksum in each segment's user block, checked before HDF5 opens the file.
- :mod:`.validate`: the checks a clip passes before it is written.
- :mod:`.writer`: :class:`CacheWriter` (crash safety and concurrent writers).
- :mod:`.reader`: :class:`Cache`.
- :mod:`.merge`: what a run does with each clip of its source (new clip, added conventions, skip, refuse).
- :mod:`.compact`: rewrite many small segments into a few large ones (``msclr compact``).
- :mod:`.diskio`: temporary names, exclusive creation, fsync, out-of-space errors.

h5py is imported lazily (``msclr --help`` must stay fast).
"""

from msclr.pipeline.cache.clip import Clip, ClipStatus
from msclr.pipeline.cache.diskio import disk_error_reason
from msclr.pipeline.cache.manifest import (
    AXES,
    FORMAT,
    MANIFEST,
    SEGMENTS,
    SPLITS,
    UNITS,
    VERSION,
    read_manifest,
)
from msclr.pipeline.cache.merge import Decision, MergePlan
from msclr.pipeline.cache.reader import Cache, VerifyReport
from msclr.pipeline.cache.segments import SEGMENT_FORMAT
from msclr.pipeline.cache.validate import MAX_ABS_METRES
from msclr.pipeline.cache.writer import CacheWriter

__all__ = [
    "AXES",
    "FORMAT",
    "MANIFEST",
    "MAX_ABS_METRES",
    "SEGMENTS",
    "SEGMENT_FORMAT",
    "SPLITS",
    "UNITS",
    "VERSION",
    "Cache",
    "CacheWriter",
    "Clip",
    "ClipStatus",
    "Decision",
    "MergePlan",
    "VerifyReport",
    "disk_error_reason",
    "read_manifest",
]
