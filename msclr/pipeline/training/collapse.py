"""Collapse signals of contrastive pretraining, and the warning a user gets when pretraining collapsed.

Contrastive pretraining on small data can *collapse*: every embedding ends in one narrow cone, the InfoNCE
loss sits at ln(1 + K) (uniform logits) and the frozen features may be no better than a random encoder's.  Three
cheap signals of one batch's L2-normalised query embeddings E (B, D) show it (:func:`collapse_signals`):

- ``batch_cosine``: mean cosine between the embeddings of *different* clips (off-diagonal mean of E E^T);
  near 0 for a well-spread batch, near 1 when every clip maps to the same direction;
- ``negative_cosine``: mean cosine of the embeddings to the queue's negatives (when given);
- ``effective_rank``: exp(entropy of the normalised singular values of E) (Roy & Vetterli 2007), in
  [1, min(B, D)]: how many directions the batch really spans (1 = all embeddings on one line).

:class:`CollapseMonitor` averages the step signals per epoch and decides, once per stream, whether to warn
(:data:`COSINE_THRESHOLD` / :data:`COSINE_FALL`, :data:`RANK_FRACTION` / :data:`RANK_FLOOR`, from
:data:`FIRST_EPOCH` on).  No I/O here: the pretraining loop emits the warning through its progress callback and
records it in the history.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

COLLAPSE_KEYS = ("batch_cosine", "effective_rank", "negative_cosine")
"""The names of the signals :func:`collapse_signals` returns (a step's, or an epoch record's means)."""

COSINE_THRESHOLD = 0.9
"""Collapse when the epoch mean of ``batch_cosine`` is at least this (and not falling, :data:`COSINE_FALL`).  A
healthy batch of different clips sits near 0.0-0.1 (a BatchNorm projection head with in-batch negatives); with
the reference projection head (Linear-ReLU-Linear, no BatchNorm) the embeddings of different clips already have
mean cosine 0.95-0.97 at initialisation (measured: ``cpu_small`` 0.97 at B = 32, ``ntu60_xsub`` 0.95 at B = 128),
and pretraining that collapses keeps them there or pushes them to 1.00.  0.9 (a mean pairwise angle of
about 25 degrees) is below that initial cone and far above any spread-out batch."""

COSINE_FALL = 0.01
"""A cosine above :data:`COSINE_THRESHOLD` counts only when it fell by less than this since the previous epoch:
a run that is still leaving the initial cone (0.97 -> 0.95 -> 0.93 ...) is not called collapsed."""

RANK_FRACTION = 0.05
"""Collapse when the epoch mean of ``effective_rank`` is at most ``max(RANK_FLOOR, RANK_FRACTION * min(B, D))``."""

RANK_FLOOR = 1.5
"""Lower bound of the rank threshold (see :data:`RANK_FRACTION`).  The effective rank (of the *uncentred*
singular values) is 1 when every embedding lies on one line; a batch in a narrow cone with isotropic spread
around its axis still scores several (the spread's many small singular values add entropy: 5.1 of 32 for
``cpu_small`` and 15.4 of 128 for ``ntu60_xsub`` at initialisation, cosine 0.97 / 0.95), so the rank test
catches *dimensional* collapse (the batch spans about one direction), which the cosine test misses when
embeddings sit on a few opposite directions.  1.5 = "barely more than one direction"; with B = D = 128, 5 % of
min(B, D) = 6.4 directions, well below the 15 of the initial cone, is a dimensional collapse all the same."""

FIRST_EPOCH = 2
"""The first check is at the end of this epoch.  The first epoch's mean mostly measures the initial cone of
the reference head (cosine 0.95-0.97 before any step), which says nothing yet about the run; from the second
epoch on, a cosine still above :data:`COSINE_THRESHOLD` and not falling means the run is not leaving it.
(Measured on a tiny ``cpu_small`` run: 0.99 in epoch 1, 1.00 in epoch 2; the ``demo`` recipe: 0.996, 1.000.)"""


def collapse_signals(embedding: Any, negatives: Any = None) -> dict[str, float]:
    """The collapse signals of one batch.

    Args:
        embedding: (B, D) L2-normalised query embeddings (a torch tensor; detached or not: no gradient is taken).
        negatives: optional (D, K) L2-normalised negative keys (the queue snapshot of the step).

    Returns:
        ``batch_cosine`` (mean off-diagonal entry of E E^T; 1.0 for B = 1), ``effective_rank``
        (exp(-sum p log p) with p = s / sum s of E's singular values s; 1.0 for an all-zero E) and, when
        ``negatives`` is given, ``negative_cosine`` (mean entry of E @ negatives).
    """
    import torch

    with torch.no_grad():
        e = embedding.detach().to("cpu", torch.float64)  # small (B, D): the SVD is cheaper on the CPU
        b = e.shape[0]
        gram = e @ e.T  # (B, B)
        cosine = float((gram.sum() - gram.diagonal().sum()) / (b * (b - 1))) if b > 1 else 1.0
        s = torch.linalg.svdvals(e)  # (min(B, D),)
        total = float(s.sum())
        p = s[s > 0] / total if total > 0 else s[:0]
        rank = float(torch.exp(-(p * p.log()).sum())) if total > 0 else 1.0
        out = {"batch_cosine": cosine, "effective_rank": rank}
        if negatives is not None:
            # mean over (b, k) of e_b . n_k = (mean_b e_b) . (mean_k n_k): no (B, K) product
            mean_negative = negatives.detach().mean(dim=1).to("cpu", torch.float64)  # (D,)
            out["negative_cosine"] = float(e.mean(dim=0) @ mean_negative)
    return out


def rank_threshold(batch: int, dim: int) -> float:
    """The effective rank at or below which a (``batch``, ``dim``) embedding batch counts as collapsed."""
    return max(RANK_FLOOR, RANK_FRACTION * min(batch, dim))


def collapse_message(stream: str, epoch: int, summary: dict[str, float], *, max_rank: int | None = None) -> str:
    """The warning for a user: what happened (the epoch's mean cosine and effective rank, out of ``max_rank`` =
    min(B, D) when given) and what to do."""
    rank = summary.get("effective_rank", float("nan"))
    of = f" of {max_rank}" if max_rank else ""
    return (f"pretraining of the {stream} stream collapsed: embeddings of different clips have mean cosine "
            f"{summary.get('batch_cosine', float('nan')):.3f} (effective rank {rank:.1f}{of}) at epoch {epoch}; "
            "the frozen features may be no better than a random encoder's. On small datasets (a few hundred "
            "clips) use --config small_data; or lower the learning rate / raise the temperature.")


@dataclass
class CollapseMonitor:
    """Per-epoch means of the step signals and a once-per-stream collapse decision.

    ``add(signals)`` after every step; ``epoch_summary()`` at the end of an epoch returns the means (empty dict
    when no step was added) and resets them; ``check(epoch, summary)`` returns the warning message the first
    time, from epoch :data:`FIRST_EPOCH` on, that ``summary`` shows collapse: ``batch_cosine`` >=
    :data:`COSINE_THRESHOLD` and less than :data:`COSINE_FALL` below the previous epoch's, or ``effective_rank``
    <= :func:`rank_threshold`; None otherwise and on every later call.

    Attributes:
        stream: the stream's name, for the message.
        batch, dim: B and D of the step embeddings (B: the per-rank batch), for the rank threshold.
        warned: a warning was given (set it from a resumed run's history, so that it does not warn twice).
        previous_cosine: the previous epoch's mean ``batch_cosine`` (a resumed run: its last record's).
    """

    stream: str
    batch: int
    dim: int
    warned: bool = False
    previous_cosine: float | None = None
    _sums: dict[str, float] = field(default_factory=dict)
    _count: int = 0

    @classmethod
    def after(cls, stream: str, batch: int, dim: int, history: list[dict[str, Any]]) -> CollapseMonitor:
        """A monitor that continues after ``history`` (the per-epoch records of a resumed run)."""
        previous = history[-1].get("batch_cosine") if history else None
        return cls(stream, batch, dim, warned=any(h.get("collapse_warning") for h in history),
                   previous_cosine=previous)

    @property
    def max_rank(self) -> int:
        """min(B, D): the largest effective rank a batch can have."""
        return min(self.batch, self.dim)

    def add(self, signals: dict[str, float]) -> None:
        """Accumulate one step's :func:`collapse_signals`."""
        for key, value in signals.items():
            self._sums[key] = self._sums.get(key, 0.0) + float(value)
        self._count += 1

    def epoch_summary(self) -> dict[str, float]:
        """Mean of every signal over the steps added since the last call (then reset)."""
        out = {k: v / self._count for k, v in self._sums.items()} if self._count else {}
        self._sums, self._count = {}, 0
        return out

    def collapsed(self, summary: dict[str, float]) -> bool:
        """Whether an epoch's ``summary`` shows collapse (against the previous epoch's cosine)."""
        cosine = summary["batch_cosine"]
        previous = self.previous_cosine if self.previous_cosine is not None else cosine
        in_cone = cosine >= COSINE_THRESHOLD and cosine > previous - COSINE_FALL
        return in_cone or summary.get("effective_rank", math.inf) <= rank_threshold(self.batch, self.dim)

    def check(self, epoch: int, summary: dict[str, float]) -> str | None:
        """The warning message if ``summary`` (epoch ``epoch``'s :meth:`epoch_summary`) shows collapse and none
        was given yet; remembers the epoch's cosine for the next check."""
        if "batch_cosine" not in summary:
            return None
        fire = not self.warned and epoch >= FIRST_EPOCH and self.collapsed(summary)
        self.previous_cosine = summary["batch_cosine"]
        if not fire:
            return None
        self.warned = True
        return collapse_message(self.stream, epoch, summary, max_rank=self.max_rank)


__all__ = ["COLLAPSE_KEYS", "COSINE_FALL", "COSINE_THRESHOLD", "FIRST_EPOCH", "RANK_FLOOR", "RANK_FRACTION", "CollapseMonitor",
           "collapse_message", "collapse_signals", "rank_threshold"]
