"""The cache directory's JSON files: the manifest (conventions, person slots, class names) and the splits.

Layout of a cache directory::

    CACHE/msclr-cache.json    {"format": "msclr-cache", "version": 1, "units": "m", "axes": AXES,
                               "max_persons": M, "skeletons": {name: Skeleton.to_dict()},
                               "classes": [...] | null}
    CACHE/splits.json         {split name: [clip names]}            (optional)
    CACHE/segments/*.h5       committed segments, immutable once written (:mod:`.segments`)

``msclr-cache.json`` is created with a hard link of a fully written temporary file (atomic and never
overwritten), so writers that create the same cache concurrently with identical settings all succeed.
``max_persons`` is fixed when the cache is created.  ``skeletons`` lists every convention that clips of the
cache may hold: a writer that adds conventions to existing clips first adds their definitions here
(:func:`merge_conventions`; a convention is never removed or redefined).  ``splits.json`` and updates of
``msclr-cache.json`` (classes or conventions added later) use temp file + fsync + ``os.replace``; concurrent
updates are last-writer-wins per file (a writer re-adds its conventions when another's update dropped them).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from msclr.errors import CacheError, MsclrError
from msclr.pipeline.cache import seal as segment_seal
from msclr.pipeline.cache.diskio import atomic_write_text, create_exclusive
from msclr.skeletons import Skeleton, get_skeleton

FORMAT = "msclr-cache"
VERSION = 1
"""Version of the manifest and of the segment files; a cache of any other version is refused."""
UNITS = "m"
AXES = "kinect-camera: x towards the camera's left, y up, z forward (away from the camera)"
MANIFEST = "msclr-cache.json"
SPLITS = "splits.json"
SEGMENTS = "segments"

_MADE_BY = "a msclr cache is a directory made by `msclr extract` or `msclr import`"


# ------------------------------------------------------------------ skeletons
def normalise_skeletons(skeletons: Any) -> dict[str, Skeleton]:
    """Accept a mapping name -> Skeleton, or an iterable of Skeletons / registry names / files."""
    if skeletons is None:
        return {}
    if isinstance(skeletons, str | Skeleton):
        skeletons = [skeletons]
    items = list(skeletons.values()) if isinstance(skeletons, Mapping) else list(skeletons)
    out: dict[str, Skeleton] = {}
    for item in items:
        skel = get_skeleton(item)
        if skel.name in out and out[skel.name] != skel:
            raise CacheError(f"two different skeleton definitions are both named {skel.name!r}")
        out[skel.name] = skel
    return out


def manifest_skeletons(data: Mapping[str, Any], manifest: Path) -> dict[str, Skeleton]:
    """The skeletons stored in a manifest (``data``, read from the file ``manifest``), rebuilt and checked."""
    out = {}
    for name, d in data["skeletons"].items():
        try:
            out[name] = Skeleton.from_dict(d, origin=f"{manifest} skeleton {name!r}")
        except MsclrError as err:
            raise CacheError(f"{err}; the cache manifest is damaged, re-create the cache") from None
        if out[name].name != name:
            raise CacheError(f"{manifest}: skeleton stored under {name!r} is named {out[name].name!r}; "
                             "the cache manifest is damaged, re-create the cache")
    return out


def _describe(skeletons: Mapping[str, Any]) -> str:
    return ", ".join(f"{n} ({len(d['joints'])} joints)" for n, d in skeletons.items()) or "none"


def check_conventions(root: Path, data: Mapping[str, Any], existing: Mapping[str, Skeleton],
                      wanted: Mapping[str, Skeleton]) -> None:
    """:class:`CacheError` unless ``wanted`` equals the conventions ``existing`` of the cache (manifest ``data``)."""
    same = set(wanted) == set(existing) and all(wanted[n].to_dict() == existing[n].to_dict() for n in wanted)
    if not same:
        raise CacheError(
            f"cache {root} holds conventions {_describe(data['skeletons'])}, but this run "
            f"writes {_describe({n: s.to_dict() for n, s in wanted.items()})}; write to a new cache path "
            "(--out), or add the conventions to the cache's clips (CacheWriter(..., extend=True))"
        )


def merge_conventions(root: Path, data: dict[str, Any], existing: Mapping[str, Skeleton],
                      wanted: Mapping[str, Skeleton]) -> dict[str, Skeleton]:
    """Add the conventions of ``wanted`` that the cache (manifest ``data``) lacks to its manifest; all of them.

    Raises:
        CacheError: a convention of ``wanted`` has the name of one of the cache's but another definition.
    """
    for name, skel in wanted.items():
        if name in existing and existing[name].to_dict() != skel.to_dict():
            raise CacheError(
                f"cache {root} already holds a convention named {name!r} with another definition "
                f"({existing[name].num_joints} joints, this run's has {skel.num_joints}); give your "
                "definition another name"
            )
    new = {n: s for n, s in wanted.items() if n not in existing}
    if new:
        data["skeletons"] = {**data["skeletons"], **{n: s.to_dict() for n, s in new.items()}}
        atomic_write_text(root / MANIFEST, json.dumps(data, indent=1))
    return {**existing, **new}


# ------------------------------------------------------------------- manifest
def _is_hdf5(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(8) in (segment_seal.HDF5_SIGNATURE, segment_seal.MAGIC)
    except OSError:
        return False


def _load_manifest(root: Path) -> dict[str, Any]:
    """The JSON of ``root/msclr-cache.json``; :class:`CacheError` when ``root`` is not a cache directory."""
    if not root.exists():
        raise CacheError(
            f"cache {root} does not exist; create it with `msclr extract VIDEOS --out {root}` or "
            f"`msclr import ntu|pyskl ... --out {root}`"
        )
    if not root.is_dir():
        kind = "an HDF5 file" if _is_hdf5(root) else "a file"
        raise CacheError(
            f"{root} is {kind}, not a cache directory; {_MADE_BY} (it contains {MANIFEST} and "
            f"{SEGMENTS}/); pass that directory instead"
        )
    manifest = root / MANIFEST
    if not manifest.is_file():
        raise CacheError(
            f"{root} is not a msclr cache: {manifest} is missing; {_MADE_BY}. If an extraction was "
            "killed before writing anything, rerun it"
        )
    try:
        return json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CacheError(f"{manifest} cannot be read as JSON ({err}); {_MADE_BY}") from None


def _check_version(manifest: Path, data: Any) -> None:
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CacheError(f"{manifest} is not a msclr cache manifest (no \"format\": \"{FORMAT}\"); {_MADE_BY}")
    version = data.get("version")
    if type(version) is not int or version < 1:
        raise CacheError(f"{manifest} has an invalid version {version!r}; {_MADE_BY}")
    if version != VERSION:
        raise CacheError(
            f"{manifest} was written by a newer msclr (cache format version {version}; this msclr "
            f"reads version {VERSION}); upgrade msclr (pip install -U msclr)"
        )


def _check_fields(manifest: Path, data: dict[str, Any]) -> None:
    for key, kind in (("max_persons", int), ("skeletons", dict)):
        if not isinstance(data.get(key), kind):
            raise CacheError(f"{manifest}: missing or invalid {key!r}; {_MADE_BY}")
    # a cache has at least one convention and one person slot (an empty table made every clip
    # readable with no conventions at all)
    if isinstance(data["max_persons"], bool) or data["max_persons"] < 1 or not data["skeletons"]:
        raise CacheError(f"{manifest}: 'max_persons' must be >= 1 and 'skeletons' non-empty; {_MADE_BY}")
    classes = data.get("classes")
    if classes is not None and not (isinstance(classes, list) and all(isinstance(c, str) for c in classes)):
        raise CacheError(f"{manifest}: 'classes' must be a list of names or null")


def read_manifest(root: Path) -> dict[str, Any]:
    """Read and check ``root/msclr-cache.json``; :class:`CacheError` naming the file and the fix."""
    root = Path(root)
    data = _load_manifest(root)
    _check_version(root / MANIFEST, data)
    _check_fields(root / MANIFEST, data)
    return data


def create_manifest(root: Path, skeletons: Mapping[str, Skeleton], max_persons: int,
                    classes: list[str] | None) -> None:
    """Make ``root`` a cache with these settings unless a concurrent writer just did.

    Raises:
        CacheError: no conventions given, or ``root`` holds files of something else.
    """
    if not skeletons:
        raise CacheError(f"{root} is not a cache yet: give the skeleton conventions to create it")
    ours = {SEGMENTS, MANIFEST, SPLITS}  # MANIFEST: a concurrent writer may just have made it
    if root.is_dir() and any(p.name not in ours and not p.name.startswith(".") for p in root.iterdir()):
        raise CacheError(
            f"{root} already contains other files but no {MANIFEST}; choose an empty or "
            "new directory for the cache"
        )
    root.mkdir(parents=True, exist_ok=True)
    data = {
        "format": FORMAT,
        "version": VERSION,
        "units": UNITS,
        "axes": AXES,
        "max_persons": max_persons,
        "skeletons": {n: s.to_dict() for n, s in skeletons.items()},
        "classes": classes,
    }
    create_exclusive(root / MANIFEST, json.dumps(data, indent=1))  # False: made concurrently; checked later


def store_classes(root: Path, data: dict[str, Any], classes: list[str] | None) -> list[str] | None:
    """The cache's class names after this run gives ``classes`` (None: no names given).

    A cache without class names gets them (the manifest ``data`` is updated and rewritten).

    Raises:
        CacheError: the cache has other class names.
    """
    stored = data.get("classes")
    if classes is not None and stored != classes:
        if stored is not None:
            raise CacheError(
                f"cache {root} has {len(stored)} class names that differ from this "
                f"run's {len(classes)} (first stored: {stored[:3]}); the class list is "
                "fixed once set, so write to a new cache path"
            )
        data["classes"] = classes
        atomic_write_text(root / MANIFEST, json.dumps(data, indent=1))
    return data.get("classes")


# --------------------------------------------------------------------- splits
def read_splits(root: Path) -> dict[str, list[str]]:
    """``root/splits.json``: split name -> clip names; {} when there is none."""
    path = Path(root) / SPLITS
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CacheError(f"{path} cannot be read ({err}); delete it and rerun the import to rewrite it") from None
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, list) and all(isinstance(n, str) for n in v) for k, v in data.items()
    ):
        raise CacheError(f"{path} must map split names to lists of clip names; delete it and rerun the import")
    return data


def update_splits(root: Path, splits: Mapping[str, Sequence[str]], *, replace: bool = True) -> None:
    """Store ``splits`` in ``root/splits.json``, keeping the other stored splits.

    Args:
        replace: replace stored splits of the same name; False: :class:`CacheError` naming them instead
            (nothing is written).
    """
    clean: dict[str, list[str]] = {}
    for key, names in splits.items():
        if not isinstance(key, str) or not key:
            raise CacheError(f"split names must be non-empty strings, got {key!r}")
        if isinstance(names, str):
            raise CacheError(f"split {key!r} must be a list of clip names, not a string")
        names = list(names)
        bad = [n for n in names if not isinstance(n, str) or not n]
        if bad:
            raise CacheError(f"split {key!r} contains invalid clip names, e.g. {bad[0]!r}")
        clean[key] = names
    current = read_splits(root)
    taken = sorted(k for k in clean if k in current)
    if taken and not replace:
        raise CacheError(
            f"cache {root} already has the split(s) {', '.join(taken)}; choose another name, or replace "
            "them (msclr split --force)"
        )
    current.update(clean)
    atomic_write_text(root / SPLITS, json.dumps(current))


__all__ = ["AXES", "FORMAT", "MANIFEST", "SEGMENTS", "SPLITS", "UNITS", "VERSION", "check_conventions",
           "create_manifest", "manifest_skeletons", "merge_conventions", "normalise_skeletons", "read_manifest", "read_splits",
           "store_classes", "update_splits"]
