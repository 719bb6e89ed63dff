"""Per-batch skeleton-pair sampler for multi-skeleton pretraining.

Every batch holds ONE (query, key) convention pair and a list of clip indices; all three views of a batch
(query extreme, query normal, key normal) come from the same clips.

Epoch = every clip once per convention: ``len(conventions) * num_clips`` item slots (the reference's
"extended training iterations"), shuffled, cut into batches with ``drop_last``; slot ``i``
uses clip ``i mod num_clips``.

Pair modes:

- ``full_random`` (default, the paper's ``full_random_skeleton: True``): q and k independent and uniform over
  the conventions; q == k is allowed (probability 1/S, 1/2 with two conventions).
- ``half_random``: a fair coin puts the *anchor* convention (the first one) on the query or the key side; the
  other side is uniform over all conventions.

Deviation from the reference: the reference draws the pair once per DataLoader *worker* per epoch inside
``worker_init_fn`` (at most ``num_workers`` distinct pairs per epoch, behaviour that depends on the worker
count, and a crash with 0 workers).  Here the pair is drawn per *batch* in the main
process from an explicit generator, so the marginal distribution is the same but the draw is independent of
the worker count and works with ``num_workers=0``.

Determinism and resume: the order and the pairs of epoch ``e`` are a pure function of ``(seed, e)`` (like
``DistributedSampler.set_epoch``), so a resumed run replays the same batches; ``start_batch`` skips batches
already done in a partially finished epoch.

Distributed training: every rank draws the same permutation and the same pairs; rank r keeps the slice
``[r * B/W, (r+1) * B/W)`` of each global batch of ``B`` items (B divisible by the world size W), so all
ranks process the same (q, k) at each step.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from msclr.errors import MsclrError

_SEED_STRIDE = 1_000_003  # separates per-epoch streams of different seeds


@dataclass(frozen=True)
class PairBatch:
    """One batch: clip indices (into each convention's array) and the convention pair.

    Attributes:
        indices: (B,) int64 clip indices (this rank's share of the global batch).
        query: convention of the query views (extreme + normal).
        key: convention of the key view.
        epoch: 1-based epoch this batch belongs to.
        step: 0-based batch index inside the epoch.
    """

    indices: np.ndarray
    query: str
    key: str
    epoch: int = 0
    step: int = 0


class PairBatchSampler:
    """Yields :class:`PairBatch` objects; usable directly or as a DataLoader ``sampler`` with ``batch_size=None``.

    Args:
        num_clips: N, clips per convention.
        conventions: convention names; the first is the ``half_random`` anchor.
        batch_size: global batch size B (summed over ranks).
        mode: ``full_random`` or ``half_random``.
        shuffle: shuffle item slots each epoch (pretraining always does).
        drop_last: drop the last incomplete batch (pretraining always does).
        seed: base seed; epoch ``e`` uses a generator seeded from ``(seed, e)``.
        rank, world_size: distributed sharding of each global batch.
    """

    def __init__(self, num_clips: int, conventions: Sequence[str], batch_size: int, *,
                 mode: str = "full_random", shuffle: bool = True, drop_last: bool = True, seed: int = 0,
                 rank: int = 0, world_size: int = 1) -> None:
        if mode not in ("full_random", "half_random"):
            raise MsclrError(f"unknown pair mode {mode!r}: use 'full_random' or 'half_random'.")
        if not conventions:
            raise MsclrError("the pair sampler needs at least one convention.")
        if num_clips < 1:
            raise MsclrError("no training clips: check the split and that the cache holds the conventions.")
        if batch_size % world_size:
            raise MsclrError(f"batch size {batch_size} is not divisible by the {world_size} processes: "
                             "choose a batch size that is a multiple of the process count.")
        if not 0 <= rank < world_size:
            raise MsclrError(f"rank {rank} outside world size {world_size}.")
        self.num_clips = int(num_clips)
        self.conventions = list(conventions)
        self.batch_size = int(batch_size)
        self.mode = mode
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = int(seed)
        self.rank = rank
        self.world_size = world_size
        self.epoch = 1
        self.start_batch = 0
        if self.drop_last and len(self) == 0:
            raise MsclrError(f"an epoch has {self.num_items} items (clips x conventions), fewer than one batch "
                             f"of {batch_size}: lower --batch-size (and the queue size with it).")

    # ------------------------------------------------------------------ sizes
    @property
    def num_items(self) -> int:
        """Item slots per epoch: clips x conventions."""
        return self.num_clips * len(self.conventions)

    def __len__(self) -> int:
        """Batches per epoch (global batches; every rank sees the same count)."""
        if self.drop_last:
            return self.num_items // self.batch_size
        return -(-self.num_items // self.batch_size)

    # ------------------------------------------------------------------ state
    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select 1-based ``epoch`` and skip its first ``start_batch`` batches (resume mid-epoch)."""
        self.epoch = int(epoch)
        self.start_batch = int(start_batch)

    def state_dict(self) -> dict[str, int | str | list[str]]:
        """Plain-typed state (safe for ``torch.load(weights_only=True)``)."""
        return {"seed": self.seed, "epoch": self.epoch, "start_batch": self.start_batch, "mode": self.mode,
                "conventions": list(self.conventions), "batch_size": self.batch_size,
                "num_clips": self.num_clips}

    def load_state_dict(self, state: dict) -> None:
        for key in ("mode", "conventions", "batch_size", "num_clips"):
            if key in state and state[key] != getattr(self, key):
                raise MsclrError(f"checkpoint sampler {key} {state[key]!r} differs from this run's "
                                 f"{getattr(self, key)!r}: resume with the same data and settings, or start a new run.")
        self.seed = int(state["seed"])
        self.set_epoch(int(state["epoch"]), int(state.get("start_batch", 0)))

    # ------------------------------------------------------------------ draws
    def _generator(self) -> np.random.Generator:
        return np.random.default_rng([self.seed % 2**32, self.epoch, _SEED_STRIDE])

    def draw_pair(self, rng: np.random.Generator) -> tuple[str, str]:
        """One (query, key) pair from ``rng`` following :attr:`mode`."""
        s = len(self.conventions)
        if self.mode == "full_random":
            q, k = rng.integers(0, s, size=2)
            return self.conventions[int(q)], self.conventions[int(k)]
        other = int(rng.integers(0, s))
        if rng.integers(0, 2) == 0:
            return self.conventions[0], self.conventions[other]
        return self.conventions[other], self.conventions[0]

    def batches(self) -> list[PairBatch]:
        """All batches of the current epoch for this rank (before ``start_batch`` skipping)."""
        rng = self._generator()
        order = rng.permutation(self.num_items) if self.shuffle else np.arange(self.num_items)
        n_batches = len(self)
        pairs = [self.draw_pair(rng) for _ in range(n_batches)]
        share = self.batch_size // self.world_size
        out = []
        for b in range(n_batches):
            slots = order[b * self.batch_size:(b + 1) * self.batch_size]
            mine = slots[self.rank * share:(self.rank + 1) * share] if self.world_size > 1 else slots
            out.append(PairBatch((mine % self.num_clips).astype(np.int64), pairs[b][0], pairs[b][1],
                                 self.epoch, b))
        return out

    def __iter__(self) -> Iterator[PairBatch]:
        yield from self.batches()[self.start_batch:]


class PairBatchDataset:
    """Map-style dataset indexed by :class:`PairBatch`: returns ``(x_q, x_k, q, k)`` CPU tensors.

    ``x_q``: (B, 3, T, V_q, M) raw clips in the query convention, ``x_k``: (B, 3, T, V_k, M) the same clips in
    the key convention.  Used with ``DataLoader(dataset, sampler=PairBatchSampler, batch_size=None)`` so the
    pair is decided in the main process whatever the number of workers.
    """

    def __init__(self, arrays: Mapping[str, Any]) -> None:
        import torch

        self.arrays = {k: torch.as_tensor(v) for k, v in arrays.items()}

    def __getitem__(self, batch: PairBatch) -> tuple[Any, Any, str, str]:
        import torch

        idx = torch.from_numpy(batch.indices)
        return self.arrays[batch.query][idx], self.arrays[batch.key][idx], batch.query, batch.key

    def __len__(self) -> int:  # pragma: no cover - DataLoader with a sampler does not need it
        return next(iter(self.arrays.values())).shape[0]


__all__ = ["PairBatch", "PairBatchSampler", "PairBatchDataset"]
