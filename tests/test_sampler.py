"""Per-batch skeleton-pair sampler (docs/method.md, "Skeleton-pair sampling" and "Skeleton pairs are drawn per batch")."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from msclr.errors import MsclrError
from msclr.pipeline.training.sampler import PairBatchSampler

CONVS = ["kinectv2_25", "smplx_42"]


def _arrays(n: int = 20) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"kinectv2_25": rng.normal(size=(n, 3, 8, 25, 2)).astype(np.float32),
            "smplx_42": rng.normal(size=(n, 3, 8, 42, 2)).astype(np.float32)}


def test_epoch_length_is_clips_times_conventions_with_drop_last() -> None:
    s = PairBatchSampler(100, CONVS, 16, seed=1)
    assert s.num_items == 200
    assert len(s) == 200 // 16 == 12
    batches = list(s)
    assert len(batches) == 12 and all(len(b.indices) == 16 for b in batches)
    s3 = PairBatchSampler(100, CONVS + ["smpl_24"], 16, seed=1)
    assert len(s3) == 300 // 16


def test_every_clip_seen_once_per_convention_when_divisible() -> None:
    s = PairBatchSampler(32, CONVS, 8, seed=3)  # 64 items, 8 full batches
    counts = Counter(int(i) for b in s for i in b.indices)
    assert set(counts) == set(range(32)) and set(counts.values()) == {2}


def test_one_pair_per_batch_and_q_equals_k_about_half() -> None:
    s = PairBatchSampler(4000, CONVS, 2, seed=0)
    batches = list(s)
    pairs = Counter((b.query, b.key) for b in batches)
    same = sum(v for (q, k), v in pairs.items() if q == k) / len(batches)
    assert abs(same - 0.5) < 0.03, same
    for pair in [(a, b) for a in CONVS for b in CONVS]:
        assert abs(pairs[pair] / len(batches) - 0.25) < 0.03, pairs
    # many distinct pairs within ONE epoch (the reference had at most num_workers)
    assert len(pairs) == 4


def test_half_random_always_contains_the_anchor() -> None:
    s = PairBatchSampler(4000, CONVS, 2, mode="half_random", seed=0)
    batches = list(s)
    assert all(CONVS[0] in (b.query, b.key) for b in batches)
    q_anchor = np.mean([b.query == CONVS[0] for b in batches])
    assert abs(q_anchor - 0.75) < 0.03  # coin 1/2 + (other side uniform) 1/2 * 1/2


def test_seeded_and_epoch_dependent_and_resumable() -> None:
    a, b = PairBatchSampler(50, CONVS, 8, seed=5), PairBatchSampler(50, CONVS, 8, seed=5)
    first = [(tuple(x.indices), x.query, x.key) for x in a]
    assert first == [(tuple(x.indices), x.query, x.key) for x in b]
    a.set_epoch(2)
    second = [(tuple(x.indices), x.query, x.key) for x in a]
    assert second != first
    a.set_epoch(2, start_batch=3)
    assert [(tuple(x.indices), x.query, x.key) for x in a] == second[3:]
    c = PairBatchSampler(50, CONVS, 8, seed=6)
    assert [(tuple(x.indices), x.query, x.key) for x in c] != first
    state = a.state_dict()
    d = PairBatchSampler(50, CONVS, 8, seed=0)
    d.load_state_dict(state)
    assert [(tuple(x.indices), x.query, x.key) for x in d] == second[3:]
    with pytest.raises(MsclrError, match="differs"):
        PairBatchSampler(51, CONVS, 8).load_state_dict(state)


def test_distributed_shards_share_the_pair() -> None:
    full = list(PairBatchSampler(40, CONVS, 8, seed=2))
    r0 = list(PairBatchSampler(40, CONVS, 8, seed=2, rank=0, world_size=2))
    r1 = list(PairBatchSampler(40, CONVS, 8, seed=2, rank=1, world_size=2))
    assert len(r0) == len(r1) == len(full)
    for f, a, b in zip(full, r0, r1, strict=True):
        assert (a.query, a.key) == (b.query, b.key) == (f.query, f.key)
        assert len(a.indices) == len(b.indices) == 4
        assert list(np.concatenate([a.indices, b.indices])) == list(f.indices)
    with pytest.raises(MsclrError, match="divisible"):
        PairBatchSampler(40, CONVS, 7, world_size=2)


def test_too_small_dataset_is_a_clear_error() -> None:
    with pytest.raises(MsclrError, match="batch-size"):
        PairBatchSampler(3, CONVS, 8)


@pytest.mark.parametrize("workers", [0, 2])
def test_dataloader_batches_hold_one_convention_pair_any_worker_count(workers: int) -> None:
    import torch
    from torch.utils.data import DataLoader

    from msclr.pipeline.training.sampler import PairBatchDataset

    arrays = _arrays()
    sampler = PairBatchSampler(20, CONVS, 4, seed=9)
    expected = [(b.query, b.key, b.indices.copy()) for b in sampler]
    loader = DataLoader(PairBatchDataset(arrays), sampler=sampler, batch_size=None, num_workers=workers)
    got = list(loader)
    assert len(got) == len(expected) == 10
    for (x_q, x_k, q, k), (eq, ek, idx) in zip(got, expected, strict=True):
        assert (q, k) == (eq, ek)
        assert x_q.shape == (4, 3, 8, arrays[q].shape[3], 2)
        assert x_k.shape == (4, 3, 8, arrays[k].shape[3], 2)
        assert torch.equal(x_q, torch.from_numpy(arrays[q][idx]))
        assert torch.equal(x_k, torch.from_numpy(arrays[k][idx]))
