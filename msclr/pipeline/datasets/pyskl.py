"""The pyskl / mmaction2 3D skeleton annotation pickle: validated reading and atomic writing.

Format (as documented in kennymckormick/pyskl:tools/data/README.md)::

    {"split": {"xsub_train": [frame_dir, ...], ...},
     "annotations": [{"frame_dir": str, "label": int (0-based),
                      "keypoint": ndarray [M, T, V, C], "total_frames": T}, ...]}

M persons, T frames, V joints, C = 3 coordinates.  msclr reads and writes **metres** in Kinect
camera space (pyskl's ``ntu60_3danno.pkl`` / ``ntu120_3danno.pkl`` are metres; pass ``scale=0.001``
for a millimetre file).  2D files (C = 2, with ``keypoint_score``) are refused with an explanation:
feeding them to a 3D layout is the classic mmaction2#1581 mistake.

Reading goes through :mod:`msclr.pipeline.datasets.safe_pickle`, never plain ``pickle.load``.
"""

from __future__ import annotations

import itertools
import math
import pickle
import re
import reprlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from msclr.errors import ImportFormatError, MsclrError, closest
from msclr.pipeline.datasets.ntu import parse_ntu_name
from msclr.pipeline.datasets.safe_pickle import safe_load
from msclr.skeletons import Skeleton, available_skeletons, get_skeleton

if TYPE_CHECKING:
    from msclr.pipeline.cache import Cache, Clip

MAX_ABS_METRES = 100.0  # larger coordinates are millimetres (or pixels), not metres
NTU_FPS = 30.0  # frame rate given to clips whose frame_dir is an NTU sample name
_CLIP_NAME_RE = re.compile(r"[^\x00-\x1f/\x7f\ud800-\udfff]+")  # no control characters, "/" or lone surrogates
MAX_LABEL = 2**31 - 1  # labels are stored as int64 and used as class indices
_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother, _REPR.maxlist = 3, 60, 60, 4


@dataclass
class Annotation:
    """One validated sample.

    Attributes:
        frame_dir: the sample's name (becomes the clip name).
        label: 0-based class.
        raw_keypoint: (M, T, V, 3) the file's array, unconverted (kept as is to save memory).
        scale: factor to metres.
        frame_inds: (T,) int64 frame indices in the source video when the file has them, else None.
        axes: (3, 3) signed permutation taking the file's axes to Kinect camera axes, or None (unchanged).
    """

    frame_dir: str
    label: int
    raw_keypoint: np.ndarray
    scale: float = 1.0
    frame_inds: np.ndarray | None = None
    axes: np.ndarray | None = None

    @property
    def keypoint(self) -> np.ndarray:
        """(M, T, V, 3) float32 metres, Kinect camera axes."""
        return _to_metres(self.raw_keypoint, self.scale, self.axes)


def _to_metres(raw: np.ndarray, scale: float, axes: np.ndarray | None = None) -> np.ndarray:
    """``raw`` (..., 3) times ``scale``, axes mapped by ``axes`` (p' = axes @ p), as float32."""
    if scale == 1.0:
        out = raw.astype(np.float32)
    else:
        out = (raw.astype(np.float64) * scale).astype(np.float32)
    if axes is not None:  # a signed permutation: exact in float32
        out = out @ np.asarray(axes, dtype=np.float32).T
    return out


@dataclass
class AnnotationFile:
    """A validated annotation pickle: its samples and its named splits (as stored)."""

    path: Path
    annotations: list[Annotation]
    splits: dict[str, list[str]] = field(default_factory=dict)


def _show(value: Any, *, as_str: bool = False) -> str:
    """A short repr (or str) of a value read from an untrusted file: bounded length and depth, never raises."""
    try:
        if as_str and isinstance(value, str | np.dtype):
            text = str(value)
            return text if len(text) <= 60 else text[:57] + "..."
        return _REPR.repr(value)
    except Exception:  # noqa: BLE001 - e.g. RecursionError from a deeply nested numpy dtype
        return f"<{type(value).__name__}>"


def _fail(path: Path, where: str, what: str) -> ImportFormatError:
    return ImportFormatError(f"{path}: {where}: {what}")


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool | np.bool_):
        return None
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, np.ndarray) and value.size == 1 and np.issubdtype(value.dtype, np.integer):
        return int(value.reshape(()))
    return None


def _skeletons_with(num_joints: int) -> str:
    names = [n for n in available_skeletons() if get_skeleton(n).num_joints == num_joints]
    return ", ".join(names) if names else f"none built in (define one with {num_joints} joints in a .toml file)"


def _check_keypoint(path: Path, where: str, ann: Mapping[str, Any], skeleton: Skeleton) -> np.ndarray:
    kp = ann.get("keypoint")
    if not isinstance(kp, np.ndarray) or not np.issubdtype(kp.dtype, np.number) or np.issubdtype(
        kp.dtype, np.complexfloating
    ):
        kind = type(kp).__name__ if not isinstance(kp, np.ndarray) else f"array of {_show(kp.dtype, as_str=True)}"
        raise _fail(path, where, f"'keypoint' must be a numeric array [M, T, V, C], found {kind}")
    if kp.ndim != 4:
        raise _fail(path, where, f"'keypoint' has shape {kp.shape}; expected 4 axes [M persons, T frames, "
                                 "V joints, C coordinates]")
    m, t, v, c = kp.shape
    if c != 3:
        twod = " with 'keypoint_score'" if "keypoint_score" in ann else ""
        raise _fail(
            path, where,
            f"'keypoint' has C={c} coordinates{twod}; msclr imports 3D skeletons (C=3, metres). "
            f"This looks like a 2D (image-pixel) pose file, e.g. pyskl's HRNet annotations; use the 3D "
            f"annotation file (e.g. ntu60_3danno.pkl) instead (a 2D/3D mix-up is mmaction2#1581)",
        )
    if v != skeleton.num_joints:
        raise _fail(
            path, where,
            f"'keypoint' has V={v} joints but skeleton {skeleton.name!r} has {skeleton.num_joints}; pass "
            f"--skeleton with a {v}-joint convention ({_skeletons_with(v)})",
        )
    if m < 1 or t < 1:
        raise _fail(path, where, f"'keypoint' has shape {kp.shape}: it needs at least one person and one frame")
    return kp


def read_annotations(
    path: str | Path, skeleton: str | Skeleton, *, scale: float = 1.0, axes: np.ndarray | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> AnnotationFile:
    """Load and validate a pyskl / mmaction2 3D annotation pickle.

    Args:
        path: the ``.pkl`` file (loaded with the restricted unpickler).
        skeleton: the joint convention of ``keypoint`` (V must match, C must be 3).
        scale: multiplies every coordinate (1.0 for metres, 0.001 for millimetres).
        axes: (3, 3) signed permutation taking the file's axes to Kinect camera axes
            (:func:`msclr.pipeline.datasets.sanity.parse_axes`), or None.

    Returns:
        the annotations with ``keypoint`` as (M, T, V, 3) float32 metres, and the file's splits.

    Raises:
        UnsafePickleError: the pickle refers to code, not plain data.
        ImportFormatError: structure, shapes, labels, units or names are wrong (sample named).
    """
    path = Path(path)
    skel = get_skeleton(skeleton)
    if not (isinstance(scale, int | float) and math.isfinite(scale) and scale > 0):
        raise MsclrError(f"--scale must be a positive number (1 for metres, 0.001 for millimetres), got {scale!r}")
    raw_anns, splits = _split_file(path, safe_load(path))
    annotations: list[Annotation] = []
    seen: set[str] = set()
    for i, ann in enumerate(raw_anns):
        annotations.append(_check_annotation(path, i, ann, skel, scale, seen))
        annotations[-1].axes = axes
        if progress is not None:
            progress(i + 1, len(raw_anns))
    return AnnotationFile(path, annotations, splits)


def _split_file(path: Path, data: Any) -> tuple[list[Any], dict[str, list[str]]]:
    """The raw annotation list and the validated splits of a loaded annotation file."""
    if isinstance(data, list):
        raw_anns, raw_split = data, {}
    elif isinstance(data, Mapping) and "annotations" in data:
        raw_anns, raw_split = data["annotations"], data.get("split", {})
    else:
        found = (f"a dict with keys {sorted(_show(k, as_str=True) for k in itertools.islice(data, 8))}" if isinstance(data, Mapping)
                 else type(data).__name__)
        raise ImportFormatError(
            f"{path}: not a pyskl annotation file: expected a dict with 'annotations' (and 'split'), "
            f"found {found}"
        )
    if not isinstance(raw_anns, list) or not raw_anns:
        raise ImportFormatError(f"{path}: 'annotations' must be a non-empty list of dicts")
    if raw_split is None:
        raw_split = {}
    if not isinstance(raw_split, Mapping):
        raise ImportFormatError(f"{path}: 'split' must be a dict of split name -> list of frame_dir names")
    splits: dict[str, list[str]] = {}
    for key, names in raw_split.items():
        if not isinstance(key, str) or not key or not isinstance(names, list | tuple) or not all(
            isinstance(n, str) for n in names
        ):
            raise ImportFormatError(f"{path}: split {_show(key)} must map a name to a list of frame_dir strings")
        splits[key] = list(names)
    return raw_anns, splits


def _check_annotation(path: Path, i: int, ann: Any, skel: Skeleton, scale: float, seen: set[str]) -> Annotation:
    """Validate annotation ``i`` (name unique in ``seen``, label, keypoint shape and units)."""
    where = f"annotation {i}"
    if not isinstance(ann, Mapping):
        raise _fail(path, where, f"expected a dict, found {type(ann).__name__}")
    name = ann.get("frame_dir")
    if not isinstance(name, str) or not name or not _CLIP_NAME_RE.fullmatch(name) or name != name.strip():
        raise _fail(path, where, f"'frame_dir' must be a non-empty name without '/' or control "
                                 f"characters, found {_show(name)}")
    where = f"annotation {i} ({name})"
    if name in seen:
        raise _fail(path, where, "duplicate frame_dir; every sample needs a unique name")
    seen.add(name)
    label = _as_int(ann.get("label"))
    if label is None or not 0 <= label <= MAX_LABEL:
        raise _fail(path, where, f"'label' must be a 0-based class index (0..{MAX_LABEL}), found "
                                 f"{_show(ann.get('label'))}")
    kp = _check_keypoint(path, where, ann, skel)
    total = ann.get("total_frames")
    if total is not None and _as_int(total) != kp.shape[1]:
        raise _fail(path, where, f"'total_frames' is {_show(total)} but 'keypoint' has T={kp.shape[1]} frames")
    metres = _to_metres(kp, scale)
    if not np.isfinite(metres).all():
        raise _fail(path, where, "'keypoint' contains NaN or infinite values")
    peak = float(np.abs(metres).max())
    del metres
    if peak > MAX_ABS_METRES:
        raise _fail(path, where, f"coordinates reach {peak:.0f} after --scale {scale:g}, but msclr stores "
                                 "metres; for millimetres pass --scale 0.001")
    frame_inds = ann.get("frame_inds")
    if isinstance(frame_inds, np.ndarray) and frame_inds.shape == (kp.shape[1],) and np.issubdtype(
        frame_inds.dtype, np.integer
    ):
        frame_inds = frame_inds.astype(np.int64)
    else:
        frame_inds = None
    return Annotation(name, label, kp, scale, frame_inds)


def annotation_to_clip(ann: Annotation, *, convention: str, max_persons: int, source: str = "") -> Clip:
    """A cache :class:`~msclr.pipeline.cache.Clip` for one annotation.

    ``keypoint`` [M, T, V, 3] becomes ``poses[convention]`` (T, max_persons, V, 3) with the person slots
    beyond M zero; ``persons`` records the original M (persons beyond ``max_persons`` are dropped, the
    file's first ones kept).  When ``frame_dir`` is an NTU sample name, setup / camera / subject /
    replication come from it and fps is 30; otherwise they are unknown (-1, NaN).
    """
    from msclr.pipeline.cache import Clip

    keypoint = ann.keypoint
    m, t, v, _ = keypoint.shape
    keep = min(m, max_persons)
    poses = np.zeros((t, max_persons, v, 3), dtype=np.float32)
    poses[:, :keep] = keypoint[:keep].transpose(1, 0, 2, 3)
    clip = Clip(
        name=ann.frame_dir, poses={convention: poses}, label=ann.label, source=source,
        extractor="import-pyskl", persons=keep, frame_indices=ann.frame_inds,
    )
    ntu = parse_ntu_name(ann.frame_dir)
    if ntu is not None:
        clip.setup, clip.camera, clip.subject, clip.replication = ntu.setup, ntu.camera, ntu.subject, ntu.replication
        clip.fps = NTU_FPS
    return clip


# ------------------------------------------------------------------------- export
def write_pickle_atomic(path: str | Path, obj: Any) -> None:
    """Pickle ``obj`` (protocol 4) to ``path`` atomically (:func:`msclr.files.atomic_open`)."""
    from msclr.files import atomic_open

    with atomic_open(path, "wb") as handle:
        pickle.dump(obj, handle, protocol=4)


def resolve_convention(cache: Cache, skeleton: str | None) -> str:
    """The cache convention named by ``skeleton`` (a name, alias or definition file), or the only one."""
    if skeleton is None:
        if len(cache.skeletons) != 1:
            raise MsclrError(
                f"cache {cache.root} holds {len(cache.skeletons)} conventions ({', '.join(cache.skeletons)}); "
                "choose one with --skeleton"
            )
        return next(iter(cache.skeletons))
    if skeleton in cache.skeletons:
        return skeleton
    hint = closest(skeleton, cache.skeletons)
    try:
        resolved = get_skeleton(skeleton).name
    except MsclrError:
        resolved = None
    if resolved not in cache.skeletons:
        raise MsclrError(f"cache {cache.root} has no convention {skeleton!r}{hint}; it has {', '.join(cache.skeletons)}")
    return resolved


def cache_to_annotations(
    cache: Cache, convention: str | None = None, *, split_prefixes: Sequence[str] = (),
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """The pyskl annotation dict of a cache's ``"ok"`` clips that hold ``convention`` (the reverse of the import).

    Each clip becomes ``{"frame_dir": name, "label": int (0-based, -1 unlabelled), "keypoint":
    [M, T, V, 3] float32 metres, "total_frames": T}`` with raw length T and M = the clip's
    ``persons`` (at least 1).  ``split`` holds the cache's splits restricted to exported clips, in
    their stored order; ``split_prefixes`` keeps only the splits whose names start with one of them.
    """
    convention = resolve_convention(cache, convention)
    for prefix in split_prefixes:
        if not any(key.startswith(prefix) for key in cache.splits):
            families = {key.rsplit("_", 1)[0] for key in cache.splits}
            hint = closest(prefix, sorted(families | set(cache.splits)), quote=True)
            raise MsclrError(f"no split of cache {cache.root} starts with {prefix!r}{hint}; its splits: "
                             f"{', '.join(cache.splits) or 'none'}")
    names = cache.names_with([convention])
    if not names:
        raise MsclrError(f"cache {cache.root} has no usable clips of {convention} to export")
    meta = cache.metadata(names)
    annotations = []
    chunk = 512
    for start in range(0, len(names), chunk):
        part = names[start:start + chunk]
        for offset, (name, poses) in enumerate(zip(part, cache.poses(convention, part), strict=True)):
            row = start + offset
            m = max(1, int(meta["persons"][row]))
            keypoint = np.ascontiguousarray(poses[:, :m].transpose(1, 0, 2, 3), dtype=np.float32)
            annotations.append({
                "frame_dir": name,
                "label": int(meta["label"][row]),
                "keypoint": keypoint,
                "total_frames": int(keypoint.shape[1]),
            })
        if progress is not None:
            progress(min(start + chunk, len(names)), len(names))
    exported = set(names)
    splits = {
        key: [n for n in members if n in exported]
        for key, members in cache.splits.items()
        if not split_prefixes or any(key.startswith(p) for p in split_prefixes)
    }
    return {"split": splits, "annotations": annotations}


def export_pyskl(
    cache_root: str | Path, out: str | Path, *, skeleton: str | None = None, split_prefixes: Sequence[str] = (),
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Write a cache's clips of one convention as a pyskl annotation pickle (atomically).

    Returns:
        a summary: ``{"clips": N, "convention": name, "splits": {name: count}, "out": path}``.
    """
    from msclr.pipeline.cache import Cache

    out = Path(out)
    if out.is_dir():
        raise MsclrError(f"--out {out} is a directory; give a file name such as {out / 'annotations.pkl'}")
    if not out.parent.is_dir():
        raise MsclrError(f"the folder of --out {out} does not exist; create it first")
    cache = Cache(cache_root)
    convention = resolve_convention(cache, skeleton)
    data = cache_to_annotations(cache, convention, split_prefixes=split_prefixes, progress=progress)
    write_pickle_atomic(out, data)
    return {"clips": len(data["annotations"]), "convention": convention,
            "splits": {k: len(v) for k, v in data["split"].items()}, "out": str(out)}
