"""NTU RGB+D 60 / 120 facts: sample names, labels, evaluation splits, class names, missing samples.

Sample names look like ``S001C002P003R002A013`` (setup, camera, performer, replication, action;
each a zero-padded number, as the NTU RGB+D release names its files).  They are parsed from the **basename** with a regex anchored at
its start, so a directory called ``S...`` can never be mistaken for the sample (hang-rui/STA-GCN#2).
Labels are 0-based (A001 -> 0).

The class names and the missing-skeleton lists are package data (``msclr/data/``), loaded with
:mod:`importlib.resources`:

- ``ntu120_class_names.txt``: 120 names, A001 first, in the strings of the pyskl / mmaction2 label
  maps (kennymckormick/pyskl:tools/data/label_map/nturgbd_120.txt).  Quirks are kept on purpose:
  A067 is "hush (quite)", A109 and A117 contain U+2019 (’), A057 an ASCII apostrophe.  NTU-60
  uses the first 60.
- ``ntu60_missing_skeletons.txt`` / ``ntu120_missing_skeletons.txt``: the sample IDs with missing or
  incomplete skeletons (shahroudy/NTURGB-D:Matlab/NTU_RGBD*_samples_with_missing_skeletons.txt),
  302 and 535 IDs, stored ID-only and sorted.

Deviation from pyskl (``tools/data/ntu_preproc.py``): its NTU-60 splits, when built from an NTU-120
folder, keep every sample with action <= 60 including setups S018-S032, which are not part of NTU-60.
:func:`ntu_splits` with ``benchmark=60`` keeps only setups S001-S017 and actions A001-A060.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import PurePath, PureWindowsPath

from msclr.errors import MsclrError

#: Strict sample-name pattern, anchored at the start of the basename.
NTU_NAME_RE = re.compile(r"^S(\d{3})C(\d{3})P(\d{3})R(\d{3})A(\d{3})")

#: Number of classes of each benchmark.
NUM_CLASSES = {60: 60, 120: 120}
#: Last setup of NTU-60 (NTU-120 adds S018-S032).
NTU60_LAST_SETUP = 17

#: Cross-subject training performers of NTU-120 (53 IDs, shahroudy/NTURGB-D README).
NTU120_XSUB_TRAIN_SUBJECTS = frozenset(
    (1, 2, 4, 5, 8, 9, 13, 14, 15, 16, 17, 18, 19, 25, 27, 28, 31, 34, 35, 38, 45, 46, 47, 49, 50, 52, 53, 54,
     55, 56, 57, 58, 59, 70, 74, 78, 80, 81, 82, 83, 84, 85, 86, 89, 91, 92, 93, 94, 95, 97, 98, 100, 103)
)
#: Cross-subject training performers of NTU-60: the NTU-120 list restricted to P001-P040 (20 IDs).
NTU60_XSUB_TRAIN_SUBJECTS = frozenset(s for s in NTU120_XSUB_TRAIN_SUBJECTS if s <= 40)
#: Cross-view (NTU-60) training cameras; camera 1 is the test view.
NTU60_XVIEW_TRAIN_CAMERAS = frozenset((2, 3))
#: Mutual (two-person) actions, 1-based: A050-A060 and A106-A120 (26 classes).
MUTUAL_ACTIONS = frozenset([*range(50, 61), *range(106, 121)])
#: NTU-120 one-shot evaluation classes, 1-based (every 6th class from A001).
ONE_SHOT_EVAL_ACTIONS = tuple(range(1, 121, 6))


@dataclass(frozen=True)
class NtuName:
    """The fields of an NTU sample name; all 1-based as written, except :attr:`label`."""

    name: str  # the 20-character sample ID, e.g. "S001C002P003R002A013"
    setup: int
    camera: int
    subject: int
    replication: int
    action: int  # 1-based action number (A013 -> 13)

    @property
    def label(self) -> int:
        """0-based class label (A001 -> 0)."""
        return self.action - 1

    @property
    def mutual(self) -> bool:
        """True for the two-person actions A050-A060 and A106-A120."""
        return self.action in MUTUAL_ACTIONS

    @property
    def in_ntu60(self) -> bool:
        """True when the sample belongs to NTU-60 (setups S001-S017, actions A001-A060)."""
        return self.setup <= NTU60_LAST_SETUP and self.action <= 60


def _basename(name: str | PurePath) -> str:
    text = str(name)
    # Both separators, so a Windows path parsed on Linux still yields its basename.
    return PureWindowsPath(PurePath(text).name).name if text else text


def parse_ntu_name(basename: str | PurePath) -> NtuName | None:
    """Parse an NTU sample name (``S001C002P003R002A013...``) or return None.

    Args:
        basename: a file name such as ``S001C001P001R001A001.skeleton`` or ``..._rgb.avi``; when a
            path is given only its last component is looked at.
    """
    base = _basename(basename)
    match = NTU_NAME_RE.match(base)
    if match is None:
        return None
    setup, camera, subject, replication, action = (int(g) for g in match.groups())
    return NtuName(match.group(0), setup, camera, subject, replication, action)


def _check_benchmark(benchmark: int) -> int:
    if benchmark not in NUM_CLASSES:
        raise MsclrError(f"unknown NTU benchmark {benchmark!r}: use 60 (NTU RGB+D) or 120 (NTU RGB+D 120).")
    return benchmark


def infer_benchmark(names: Iterable[str]) -> int:
    """120 when any name lies outside NTU-60 (setup > 17 or action > 60), else 60."""
    for name in names:
        parsed = parse_ntu_name(name)
        if parsed is not None and not parsed.in_ntu60:
            return 120
    return 60


def ntu_splits(names: Iterable[str], benchmark: int | None = None) -> dict[str, list[str]]:
    """The standard evaluation splits of NTU sample names.

    Args:
        names: clip names; names that are not NTU sample names are ignored.
        benchmark: 60 (splits ``xsub_*`` and ``xview_*``) or 120 (``xsub_*`` and ``xset_*``); None
            infers it with :func:`infer_benchmark`.  With 60, samples outside NTU-60 are left out.

    Returns:
        ``{"xsub_train", "xsub_val", "xview_train", "xview_val"}`` (NTU-60) or ``{"xsub_train",
        "xsub_val", "xset_train", "xset_val"}`` (NTU-120), each a list of names in input order.
        The names are returned as given (a name may carry a suffix after the sample ID).
    """
    names = list(names)
    bench = infer_benchmark(names) if benchmark is None else _check_benchmark(benchmark)
    second = "xview" if bench == 60 else "xset"
    splits: dict[str, list[str]] = {
        "xsub_train": [], "xsub_val": [], f"{second}_train": [], f"{second}_val": []
    }
    subjects = NTU60_XSUB_TRAIN_SUBJECTS if bench == 60 else NTU120_XSUB_TRAIN_SUBJECTS
    for name in names:
        parsed = parse_ntu_name(name)
        if parsed is None or (bench == 60 and not parsed.in_ntu60):
            continue
        splits["xsub_train" if parsed.subject in subjects else "xsub_val"].append(name)
        if bench == 60:
            train = parsed.camera in NTU60_XVIEW_TRAIN_CAMERAS
        else:
            train = parsed.setup % 2 == 0
        splits[f"{second}_train" if train else f"{second}_val"].append(name)
    return splits


def _read_data(filename: str) -> str:
    return resources.files("msclr").joinpath("data", filename).read_text(encoding="utf-8")


@cache
def _class_names_120() -> tuple[str, ...]:
    names = tuple(line.strip() for line in _read_data("ntu120_class_names.txt").splitlines() if line.strip())
    if len(names) != 120:  # pragma: no cover - a broken installation
        raise MsclrError(f"msclr/data/ntu120_class_names.txt has {len(names)} names, expected 120: reinstall msclr.")
    return names


def ntu_class_names(benchmark: int = 120) -> list[str]:
    """Class names in label order: 120 names, or the first 60 for NTU-60."""
    return list(_class_names_120()[: _check_benchmark(benchmark)])


@cache
def _missing(benchmark: int) -> frozenset[str]:
    text = _read_data(f"ntu{benchmark}_missing_skeletons.txt")
    return frozenset(line.strip() for line in text.splitlines() if NTU_NAME_RE.fullmatch(line.strip()))


def missing_skeletons(benchmark: int = 120) -> set[str]:
    """Sample IDs whose skeletons are missing or incomplete (302 for NTU-60, 535 for NTU-120).

    The NTU-60 list is a strict subset of the NTU-120 list.
    """
    return set(_missing(_check_benchmark(benchmark)))
