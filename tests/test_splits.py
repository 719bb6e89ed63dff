"""``stratified_split`` and ``msclr split``: stratified, seeded, subject-disjoint, crash-safe, no silent overwrite."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from msclr.cli import cli
from msclr.errors import CacheError, MsclrError
from msclr.pipeline.cache import Cache, CacheWriter, Clip
from msclr.pipeline.datasets.cache_splits import split_cache
from msclr.pipeline.datasets.splits import stratified_split


def _dataset(classes: int = 5, per_class: int = 12, subjects: int = 6) -> tuple[list[str], list[int], list[str]]:
    names, labels, groups = [], [], []
    for c in range(classes):
        for i in range(per_class):
            names.append(f"c{c}_i{i:02d}")
            labels.append(c)
            groups.append(f"s{(c + i) % subjects}")
    return names, labels, groups


# ------------------------------------------------------------------ the pure function
def test_stratified_and_deterministic() -> None:
    names, labels, _ = _dataset()
    train, test = stratified_split(names, labels, test=0.25, seed=3)
    assert sorted(train + test) == sorted(names) and not set(train) & set(test)
    by_class = Counter(labels[names.index(n)] for n in test)
    assert by_class == dict.fromkeys(range(5), 3)  # 25 % of 12 per class
    assert stratified_split(names, labels, test=0.25, seed=3) == (train, test)
    assert stratified_split(names, labels, test=0.25, seed=4) != (train, test)
    # the result does not depend on the input order; lists keep the input order
    order = np.random.default_rng(0).permutation(len(names))
    train2, test2 = stratified_split([names[i] for i in order], [labels[i] for i in order], test=0.25, seed=3)
    assert sorted(train2) == sorted(train) and sorted(test2) == sorted(test)
    assert test2 == [names[i] for i in order if names[i] in set(test)]


def test_small_classes_get_both_sides_and_unlabelled_train() -> None:
    names = ["a1", "a2", "b1", "c1", "c2", "c3", "u1", "u2"]
    labels = [0, 0, 1, 2, 2, 2, None, None]
    train, test = stratified_split(names, labels, test=0.01, seed=0)
    assert {"u1", "u2", "b1"} <= set(train)  # unlabelled and single clips train
    assert len({"a1", "a2"} & set(test)) == 1 and len({"c1", "c2", "c3"} & set(test)) == 1
    train, test = stratified_split(names, labels, test=0.99, seed=0)
    assert len({"a1", "a2"} & set(train)) == 1 and len({"c1", "c2", "c3"} & set(train)) == 1


def test_groups_stay_on_one_side_and_stratify() -> None:
    names, labels, groups = _dataset(classes=6, per_class=24, subjects=8)
    for seed in range(3):
        train, test = stratified_split(names, labels, test=0.25, seed=seed, groups=groups)
        side = {g: set() for g in groups}
        for n, g in zip(names, groups, strict=True):
            side[g].add(n in set(test))
        assert all(len(s) == 1 for s in side.values())
        per_class = Counter(labels[names.index(n)] for n in test)
        assert set(per_class) == set(range(6)) and all(c < 24 for c in per_class.values())
        assert 0.15 < len(test) / len(names) < 0.35
        assert stratified_split(names, labels, test=0.25, seed=seed, groups=groups) == (train, test)
    # None groups: each clip alone (same as no groups)
    assert stratified_split(names, labels, seed=1, groups=[None] * len(names)) == stratified_split(
        names, labels, seed=1)


@pytest.mark.parametrize(("kwargs", "phrase"), [
    ({"test": 0.0}, "between 0 and 1"),
    ({"test": 1.0}, "between 0 and 1"),
    ({"groups": ["a"]}, "groups"),
])
def test_bad_arguments(kwargs: dict, phrase: str) -> None:
    with pytest.raises(MsclrError, match=phrase):
        stratified_split(["a", "b"], [0, 0], **kwargs)
    with pytest.raises(MsclrError, match="more than once"):
        stratified_split(["a", "a"], [0, 0])
    with pytest.raises(MsclrError, match="labels"):
        stratified_split(["a", "b"], [0])


# ------------------------------------------------------------------ msclr split
def _cache(root: Path, *, subjects: bool = True) -> Path:
    names, labels, groups = _dataset(classes=4, per_class=10, subjects=5)
    with CacheWriter(root, ["smpl_24"], max_persons=1, classes=[f"k{i}" for i in range(4)]) as writer:
        for n, lab, g in zip(names, labels, groups, strict=True):
            pose = np.full((3, 1, 24, 3), 0.1, np.float32)
            writer.add(Clip(n, poses={"smpl_24": pose}, label=lab, subject=int(g[1:]) + 1 if subjects else -1))
        writer.add(Clip("unlabelled", poses={"smpl_24": np.ones((2, 1, 24, 3), np.float32)}))
        writer.set_splits({"xsub_train": names[:5], "xsub_val": names[5:8]})
    return root


def test_cli_split_random_subject_regex(tmp_path: Path) -> None:
    root = _cache(tmp_path / "c")
    runner = CliRunner()
    result = runner.invoke(cli, ["split", str(root), "--test", "0.3", "--seed", "1"])
    assert result.exit_code == 0, result.output
    cache = Cache(root)
    train, test = cache.splits["random_train"], cache.splits["random_val"]
    assert "unlabelled" in train and sorted(train + test) == sorted(cache.names)
    assert Counter(n.split("_")[0] for n in test) == {f"c{i}": 3 for i in range(4)}
    assert cache.splits["xsub_train"] and cache.splits["xsub_val"]  # the other splits are kept
    assert "random_train: 29 clips, random_val: 12 clips" in result.output

    result = runner.invoke(cli, ["split", str(root), "--by", "subject", "--test", "0.4"])
    assert result.exit_code == 0, result.output
    meta = Cache(root).metadata()
    subject = dict(zip(meta["name"].tolist(), meta["subject"].tolist(), strict=True))
    val = set(Cache(root).splits["subject_val"])
    assert {subject[n] for n in val}.isdisjoint({subject[n] for n in Cache(root).splits["subject_train"]
                                                 if n != "unlabelled"})
    assert "test subjects:" in result.output

    result = runner.invoke(cli, ["split", str(root), "--by", "_i0[0-2]$"])
    assert result.exit_code == 0, result.output
    assert sorted(Cache(root).splits["custom_val"]) == sorted(n for n in cache.names if n[-3:] in ("i00", "i01", "i02"))


def test_cli_split_deterministic_and_refuses_overwrite(tmp_path: Path) -> None:
    a, b = _cache(tmp_path / "a"), _cache(tmp_path / "b")
    runner = CliRunner()
    for root in (a, b):
        assert runner.invoke(cli, ["split", str(root), "--seed", "7", "--name", "mine"]).exit_code == 0
    assert Cache(a).splits["mine_val"] == Cache(b).splits["mine_val"]
    before = (a / "splits.json").read_bytes()
    result = runner.invoke(cli, ["split", str(a), "--seed", "8", "--name", "mine"])
    assert result.exit_code == 1 and "already has the split(s) mine_train, mine_val" in result.output
    assert "--force" in result.output and (a / "splits.json").read_bytes() == before
    result = runner.invoke(cli, ["split", str(a), "--seed", "8", "--name", "mine", "--force"])
    assert result.exit_code == 0 and (a / "splits.json").read_bytes() != before


@pytest.mark.parametrize(("args", "code", "phrase"), [
    (["--by", "(["], 2, "valid regular expression"),
    (["--by", "nomatch"], 1, "matches no clip"),
    (["--by", "."], 1, "matches all"),
    (["--test", "0"], 2, "0<x<1"),
    (["--by", "subject"], 1, "no subject numbers"),
])
def test_cli_split_errors_are_one_line(tmp_path: Path, args: list[str], code: int, phrase: str) -> None:
    root = _cache(tmp_path / "c", subjects=False)
    result = CliRunner().invoke(cli, ["split", str(root), *args])
    assert result.exit_code == code, result.output
    assert phrase in result.output and "Traceback" not in result.output
    assert "random_train" not in json.loads((root / "splits.json").read_text())
    result = CliRunner().invoke(cli, ["split", str(tmp_path / "nowhere")])
    assert result.exit_code == 1 and "does not exist" in result.output


def test_split_write_is_crash_safe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A crash while the splits file is rewritten leaves the old file whole (temp file + rename)."""
    root = _cache(tmp_path / "c")
    before = (root / "splits.json").read_bytes()
    real_replace = os.replace

    def crash(src, dst, *a, **k):  # noqa: ANN001, ANN202
        if str(dst).endswith("splits.json"):
            raise OSError(28, "No space left on device")
        return real_replace(src, dst, *a, **k)

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises((OSError, CacheError)):
        split_cache(root)
    monkeypatch.undo()
    assert (root / "splits.json").read_bytes() == before
    assert not [p for p in root.iterdir() if p.name.endswith(".tmp")]
    result = split_cache(root)  # the rerun finishes
    assert Cache(root).splits["random_val"] == result.test


def test_export_unknown_split_prefix_suggests(tmp_path: Path) -> None:
    root = _cache(tmp_path / "c")
    result = CliRunner().invoke(cli, ["export", str(root), "--out", str(tmp_path / "e.pkl"), "--split-prefix", "xsb"])
    assert result.exit_code == 1 and "did you mean 'xsub'" in result.output
    assert not (tmp_path / "e.pkl").exists()
