"""NTU RGB+D facts: name parsing, split protocols, package-data lists and their checksums."""

from __future__ import annotations

import hashlib
import re

import pytest
from conftest import require_file

from msclr.errors import MsclrError
from msclr.pipeline.datasets.ntu import (
    MUTUAL_ACTIONS,
    NTU60_XSUB_TRAIN_SUBJECTS,
    NTU120_XSUB_TRAIN_SUBJECTS,
    infer_benchmark,
    missing_skeletons,
    ntu_class_names,
    ntu_splits,
    parse_ntu_name,
)

# sha256 of the sorted IDs joined by "\n" plus a trailing newline (docs/method.md, "Missing skeletons and class names").
NTU60_MISSING_SHA256 = "4a964781573e86c3f3bb24d489d2b4768d2d03ede396d20ea9c09ddc92b6df18"
NTU120_MISSING_SHA256 = "f8abc124c4fc4b4e8f144caa34948f8307e5d7dcba17acf96132c9f311ff93cf"


def id_set_sha256(ids: set[str]) -> str:
    return hashlib.sha256(("\n".join(sorted(ids)) + "\n").encode()).hexdigest()


# ------------------------------------------------------------------ names
def test_parse_name_fields_and_zero_based_label() -> None:
    parsed = parse_ntu_name("S001C002P003R002A013.skeleton")
    assert parsed is not None
    assert (parsed.setup, parsed.camera, parsed.subject, parsed.replication, parsed.action) == (1, 2, 3, 2, 13)
    assert parsed.label == 12
    assert parsed.name == "S001C002P003R002A013"
    assert parse_ntu_name("S001C001P001R001A001_rgb.avi").label == 0
    assert parse_ntu_name("S032C003P106R002A120").label == 119


def test_parse_name_uses_basename_strictly() -> None:
    # A directory named like a sample must not be mistaken for it (hang-rui/STA-GCN#2).
    assert parse_ntu_name("/data/S001C001P001R001A001/video.avi") is None
    assert parse_ntu_name("/data/S999/S017C003P020R001A059.skeleton").action == 59
    assert parse_ntu_name("C:\\ntu\\S002C001P003R001A004.skeleton").setup == 2
    for bad in ("xS001C001P001R001A001", "S01C001P001R001A001", "s001c001p001r001a001", "A001", ""):
        assert parse_ntu_name(bad) is None, bad


def test_mutual_actions() -> None:
    assert len(MUTUAL_ACTIONS) == 26
    assert parse_ntu_name("S001C001P001R001A050").mutual
    assert parse_ntu_name("S001C001P001R001A060").mutual
    assert not parse_ntu_name("S001C001P001R001A049").mutual
    assert not parse_ntu_name("S018C001P001R001A105").mutual
    assert parse_ntu_name("S018C001P001R001A106").mutual
    assert parse_ntu_name("S018C001P001R001A120").mutual


# ------------------------------------------------------------------ splits
def test_subject_lists() -> None:
    assert len(NTU120_XSUB_TRAIN_SUBJECTS) == 53
    assert sorted(NTU60_XSUB_TRAIN_SUBJECTS) == [1, 2, 4, 5, 8, 9, 13, 14, 15, 16, 17, 18, 19, 25, 27, 28, 31,
                                                 34, 35, 38]


def test_ntu60_split_membership() -> None:
    names = [
        "S001C001P001R001A001",  # subject 1 train, camera 1 -> xview val
        "S001C002P003R001A001",  # subject 3 val, camera 2 -> xview train
        "S017C003P038R002A060",  # subject 38 train, camera 3 train
        "S017C003P040R002A060",  # subject 40 val
        "S018C001P001R001A001",  # setup 18: not NTU-60
        "S001C001P001R001A061",  # action 61: not NTU-60
        "README.txt",            # not an NTU name
    ]
    splits = ntu_splits(names, benchmark=60)
    assert set(splits) == {"xsub_train", "xsub_val", "xview_train", "xview_val"}
    assert splits["xsub_train"] == ["S001C001P001R001A001", "S017C003P038R002A060"]
    assert splits["xsub_val"] == ["S001C002P003R001A001", "S017C003P040R002A060"]
    assert splits["xview_train"] == ["S001C002P003R001A001", "S017C003P038R002A060", "S017C003P040R002A060"]
    assert splits["xview_val"] == ["S001C001P001R001A001"]


def test_ntu120_split_membership_and_inference() -> None:
    names = [
        "S001C001P001R001A001",  # odd setup -> xset val; subject 1 train
        "S002C001P045R001A001",  # even setup -> xset train; subject 45 train
        "S032C002P044R002A120",  # even setup -> train; subject 44 val
        "S031C003P103R001A100",  # odd setup -> val; subject 103 train
        "S031C003P106R001A100",  # subject 106 val
    ]
    assert infer_benchmark(names) == 120
    assert infer_benchmark(names[:1]) == 60
    splits = ntu_splits(names)
    assert set(splits) == {"xsub_train", "xsub_val", "xset_train", "xset_val"}
    assert splits["xsub_train"] == [names[0], names[1], names[3]]
    assert splits["xsub_val"] == [names[2], names[4]]
    assert splits["xset_train"] == [names[1], names[2]]
    assert splits["xset_val"] == [names[0], names[3], names[4]]
    with pytest.raises(MsclrError, match="60 .* or 120"):
        ntu_splits(names, benchmark=90)


# ------------------------------------------------------------------ package data
def test_missing_lists_checksums() -> None:
    m60, m120 = missing_skeletons(60), missing_skeletons(120)
    assert len(m60) == 302 and len(m120) == 535
    assert id_set_sha256(m60) == NTU60_MISSING_SHA256
    assert id_set_sha256(m120) == NTU120_MISSING_SHA256
    assert m60 < m120
    assert {parse_ntu_name(n).setup for n in m120 - m60} <= set(range(19, 33))
    assert "S001C002P005R002A008" in m60


def test_missing_lists_match_shared_data(shared_data) -> None:
    rx = re.compile(r"^S\d{3}C\d{3}P\d{3}R\d{3}A\d{3}$")
    for bench in (60, 120):
        path = require_file(shared_data, f"ntu/ntu{bench}_samples_with_missing_skeletons.txt")
        ids = {line.strip() for line in path.read_text().splitlines() if rx.match(line.strip())}
        assert ids == missing_skeletons(bench)


def test_class_names_and_quirks() -> None:
    names = ntu_class_names(120)
    assert len(names) == 120 and len(set(names)) == 120
    assert ntu_class_names(60) == names[:60]
    assert names[0] == "drink water"
    assert names[66] == "hush (quite)"  # A067, misspelling kept
    assert "\u2019" in names[108] and names[108] == "grab other person\u2019s stuff"  # A109
    assert names[116] == "whisper in other person\u2019s ear"  # A117
    assert names[56] == "touch other person's pocket"  # A057, ASCII apostrophe
    assert not any(name.endswith(".") or name != name.strip() for name in names)
    names.append("mutated")  # callers get a copy
    assert len(ntu_class_names(120)) == 120


def test_class_names_match_shared_data(shared_data) -> None:
    path = require_file(shared_data, "ntu/ntu120_class_names.txt")
    assert path.read_text(encoding="utf-8").splitlines() == ntu_class_names(120)
