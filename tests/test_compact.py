"""`msclr compact`: merging per-clip segments keeps every record bit for bit, survives a crash, and
keeps the cache's "latest commit wins" order."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from msclr.cli import cli
from msclr.errors import CacheError
from msclr.pipeline.cache import Cache, CacheWriter
from msclr.pipeline.cache.compact import compact_cache
from tests.test_cache import CONVS, M, assert_same_clip, make_clip

N_CLIPS = 10


def per_clip_cache(root: Path) -> None:
    """10 clips committed one per segment (as `msclr extract` does), two failures, one clip committed
    twice (first as a failure, then ok: the later one must survive compaction), and splits."""
    with CacheWriter(root, CONVS, max_persons=M, segment_size=1, writer_id="w1") as w:
        w.add(make_clip(0, status="failed"))  # superseded below
        for i in range(N_CLIPS):
            w.add(make_clip(i, status="failed" if i in (3, 7) else "ok"))
        w.set_splits({"train": [make_clip(i).name for i in range(6)], "test": [make_clip(i).name for i in range(6, 10)]})


def snapshot(root: Path) -> dict:
    cache = Cache(root)
    return {"statuses": cache.statuses(), "clips": {n: cache.clip(n) for n in cache.statuses()},
            "splits": cache.splits, "manifest": json.loads((root / "msclr-cache.json").read_text()),
            "names": cache.names}


def assert_same(a: dict, b: dict) -> None:
    assert a["statuses"] == b["statuses"]
    assert a["splits"] == b["splits"] and a["manifest"] == b["manifest"] and a["names"] == b["names"]
    for name, clip in a["clips"].items():
        assert_same_clip(clip, b["clips"][name])


def segments(root: Path) -> list[Path]:
    return sorted((root / "segments").glob("*.h5"))


def test_compaction_keeps_every_record_and_merges_the_files(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    per_clip_cache(root)
    before = snapshot(root)
    assert len(segments(root)) == N_CLIPS + 1
    assert before["statuses"][make_clip(0).name][0] == "ok"  # the later commit won
    calls = []
    report = compact_cache(root, segment_size=4, progress=lambda d, t: calls.append((d, t)))
    assert (report.clips, report.segments_before, report.segments_after) == (N_CLIPS, N_CLIPS + 1, 3)
    assert calls[-1] == (N_CLIPS, N_CLIPS)
    assert len(segments(root)) == 3
    assert_same(before, snapshot(root))
    # bulk reads too (the training path)
    cache = Cache(root)
    for conv in CONVS:
        got = cache.poses(conv)
        for name, arr in zip(cache.names, got, strict=True):
            np.testing.assert_array_equal(arr, before["clips"][name].poses[conv])
    # compacting again is a no-op on content
    compact_cache(root, segment_size=100)
    assert len(segments(root)) == 1
    assert_same(before, snapshot(root))


def test_killed_while_deleting_then_rerun(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "cache"
    per_clip_cache(root)
    before = snapshot(root)
    deleted = []
    real_unlink = Path.unlink

    def crash_after_three(self: Path, missing_ok: bool = False) -> None:
        if self.suffix == ".h5" and len(deleted) == 3:
            raise KeyboardInterrupt("simulated kill")
        deleted.append(self)
        real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", crash_after_three)
    with pytest.raises(KeyboardInterrupt):
        compact_cache(root, segment_size=4)
    monkeypatch.setattr(Path, "unlink", real_unlink)
    assert len(segments(root)) == 3 + (N_CLIPS + 1 - 3)  # new ones + the old ones not yet deleted
    assert_same(before, snapshot(root))  # readable, same content while half done
    compact_cache(root, segment_size=4)
    assert len(segments(root)) == 3
    assert_same(before, snapshot(root))


def test_a_clip_committed_after_compaction_wins(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    per_clip_cache(root)
    compact_cache(root, segment_size=4)
    newer = make_clip(3, seed=7)  # clip 3 was a failure; now re-extracted successfully
    with CacheWriter(root, None, segment_size=1, writer_id="w2") as w:
        w.add(newer)
    assert_same_clip(Cache(root).clip(newer.name), newer)


def test_compacted_segments_sort_before_later_commits(tmp_path: Path) -> None:
    """A writer that commits while compaction copies must still win: compacted names carry the newest old
    segment's timestamp + 1, not the time of compaction."""
    root = tmp_path / "cache"
    per_clip_cache(root)
    newest_old = max(int(p.name[:20]) for p in segments(root))
    compact_cache(root, segment_size=4)
    stamps = {int(p.name[:20]) for p in segments(root)}
    assert stamps == {newest_old + 1}


def test_refuses_while_a_writer_is_active(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    per_clip_cache(root)
    (root / "segments" / "other@host.123.000001.5.partial").write_bytes(b"half a segment")
    n = len(segments(root))
    with pytest.raises(CacheError, match="unfinished segment"):
        compact_cache(root)
    assert len(segments(root)) == n


def test_never_deletes_when_a_clip_still_resolves_to_an_old_segment(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "cache"
    per_clip_cache(root)
    before = snapshot(root)
    n = len(segments(root))
    # a broken writer that commits nothing: every clip still lives in an old segment
    monkeypatch.setattr(CacheWriter, "add", lambda self, clip: None)
    with pytest.raises(CacheError, match="nothing was deleted"):
        compact_cache(root)
    assert len(segments(root)) == n
    assert_same(before, snapshot(root))


def test_cli_compact(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    per_clip_cache(root)
    result = CliRunner().invoke(cli, ["compact", str(root), "--segment-size", "5"])
    assert result.exit_code == 0, result.output
    assert f"{N_CLIPS} clips: {N_CLIPS + 1} -> 2 segment files" in result.output
    bad = CliRunner().invoke(cli, ["compact", str(tmp_path / "nope")])
    assert bad.exit_code == 2


def test_info_suggests_compact_for_many_segments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import msclr.console as cli_module

    root = tmp_path / "cache"
    per_clip_cache(root)
    monkeypatch.setattr(cli_module, "COMPACT_HINT_SEGMENTS", N_CLIPS)
    before = CliRunner().invoke(cli, ["info", str(root)])
    assert before.exit_code == 0 and "msclr compact" in before.output
    compact_cache(root)
    after = CliRunner().invoke(cli, ["info", str(root)])
    assert after.exit_code == 0 and "msclr compact" not in after.output
