"""Labels for any folder of videos: class folders, mmaction2 list files and CSVs, precedence, and the errors
that stop ``msclr extract`` before anything is written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from msclr.cli import cli
from msclr.errors import MsclrError
from msclr.extractors.base import ConstantExtractor
from msclr.extractors.jobs import find_videos, label_jobs, plan_jobs
from msclr.extractors.video import write_video
from msclr.pipeline.cache import Cache
from msclr.pipeline.extract import ExtractOptions, extract_videos


def _video(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_video(path, [np.full((16, 16, 3), 30 + 20 * seed + 5 * t, np.uint8) for t in range(3)], codec="MJPG")
    return path


@pytest.fixture()
def classed(tmp_path: Path) -> Path:
    root = tmp_path / "videos"
    for i, (cls, clip) in enumerate([("wave", "a"), ("jump", "b"), ("wave", "c"), ("sit", "d/e")]):
        _video(root / cls / f"{clip}.avi", i)
    return root


def _extract(inputs: list[Path], out: Path, labels: Path | None = None):  # noqa: ANN202
    return extract_videos(inputs, out, lambda: ConstantExtractor(conventions=("smpl_24",)), ["smpl_24"],
                          ExtractOptions(max_persons=1, labels=labels))


def _labels(out: Path) -> dict[str, int]:
    meta = Cache(out).metadata()
    return dict(zip(meta["name"].tolist(), meta["label"].tolist(), strict=True))


def test_class_folders(classed: Path, tmp_path: Path) -> None:
    summary = _extract([classed], tmp_path / "c")
    assert summary.label_source == "folders" and summary.exit_code == 0
    assert Cache(tmp_path / "c").classes == ["jump", "sit", "wave"]
    assert _labels(tmp_path / "c") == {"a": 2, "b": 0, "c": 2, "e": 1}
    # a second folder extracted into the same cache: names are looked up in the cache's classes
    more = tmp_path / "more"
    _video(more / "sit" / "f.avi", 7)
    _extract([more], tmp_path / "c")
    assert _labels(tmp_path / "c")["f"] == 1 and Cache(tmp_path / "c").classes == ["jump", "sit", "wave"]
    _video(more / "dance" / "g.avi", 8)
    with pytest.raises(MsclrError, match="folder 'dance'.*not one of the cache's 3 class names"):
        _extract([more], tmp_path / "c")


def test_loose_videos_stay_unlabelled(tmp_path: Path) -> None:
    root = tmp_path / "v"
    _video(root / "x.avi")
    _video(root / "cls" / "y.avi", 1)  # not every video lies in a class folder: no folder labels
    summary = _extract([root], tmp_path / "c")
    assert summary.label_source == "none" and set(_labels(tmp_path / "c").values()) == {-1}
    assert Cache(tmp_path / "c").classes is None


def test_mmaction_list_and_csv(classed: Path, tmp_path: Path) -> None:
    listing = tmp_path / "train.txt"
    listing.write_text("# comment\nwave/a.avi 3\njump/b 0\n\nsit/d/e.avi 1\n")
    summary = _extract([classed], tmp_path / "c1", listing)
    assert summary.label_source == f"list {listing}"
    assert _labels(tmp_path / "c1") == {"a": 3, "b": 0, "c": -1, "e": 1}  # c is not listed: unlabelled
    assert Cache(tmp_path / "c1").classes is None
    table = tmp_path / "labels.csv"
    table.write_text("path,label\nwave/a.avi,waving\njump/b.avi,hopping\n" + f"{classed / 'wave' / 'c.avi'},waving\n")
    _extract([classed], tmp_path / "c2", table)
    assert Cache(tmp_path / "c2").classes == ["hopping", "waving"]
    assert _labels(tmp_path / "c2") == {"a": 1, "b": 0, "c": 1, "e": -1}


@pytest.mark.parametrize(("text", "phrase"), [
    ("wave/a.avi 0\nwave/zz.avi 1\n", "train.txt:2: 'wave/zz.avi' is not among the videos found"),
    ("wave/a.avi,0,extra\n", "train.txt:1: expected 'path,label', found 3 fields"),
    ("wave/a.avi 0\njump/b.avi waving\n", "mixes class numbers and class names"),
    ("wave/a.avi -2\n", "label -2 is outside"),
    ("wave/a.avi\n", "train.txt:1: expected 'relative/path label'"),
    ("wave/a.avi 0\n./wave/a 1\n", "names the same video as line 1"),
])
def test_list_errors_stop_before_anything_is_written(classed: Path, tmp_path: Path, text: str, phrase: str) -> None:
    listing = tmp_path / "train.txt"
    listing.write_text(text)
    out = tmp_path / "c"
    result = CliRunner().invoke(cli, ["extract", str(classed), "--out", str(out), "--labels", str(listing)])
    assert result.exit_code == 1, result.output
    assert phrase in result.output and "Traceback" not in result.output
    assert not out.exists()


def test_unknown_name_suggests_and_index_outside_cache_classes(classed: Path, tmp_path: Path) -> None:
    _extract([classed], tmp_path / "c")  # classes jump, sit, wave
    listing = tmp_path / "l.txt"
    listing.write_text("wave/a.avi wav\n")
    with pytest.raises(MsclrError, match="did you mean 'wave'"):
        _extract([classed], tmp_path / "c", listing)
    listing.write_text("wave/a.avi 3\n")
    with pytest.raises(MsclrError, match=r"label 3 is outside 0..2 \(the cache's classes\)"):
        _extract([classed], tmp_path / "c", listing)


def test_precedence_list_over_ntu_over_folders(tmp_path: Path) -> None:
    root = tmp_path / "v"
    _video(root / "drinks" / "S001C001P001R001A001_rgb.avi")
    _video(root / "hugs" / "S001C001P002R001A055_rgb.avi", 1)
    jobs = plan_jobs(find_videos([root]))
    labelled, classes, source = label_jobs(jobs, [root])
    assert source == "NTU names" and len(classes) == 60 and [j.label for j in labelled] == [0, 54]
    listing = tmp_path / "l.csv"
    listing.write_text("hugs/S001C001P002R001A055_rgb.avi,7\n")
    labelled, classes, source = label_jobs(jobs, [root], listing)
    assert source.startswith("list") and classes is None and [j.label for j in labelled] == [-1, 7]
    other = tmp_path / "w"
    _video(other / "drinks" / "clip1.avi")
    labelled, classes, source = label_jobs(plan_jobs(find_videos([other])), [other])
    assert source == "folders" and classes == ["drinks"]
