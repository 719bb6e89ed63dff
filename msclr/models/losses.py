"""Losses of MoCo / AimCLR as used by MS-AimCLR, as small pure functions.

Shapes: ``B`` = batch, ``K`` = queue size, ``D`` = embedding size.  Logits are ``(B, 1 + K)``: column 0 is
the positive key, columns 1..K the queue, already divided by the temperature.

- :func:`info_nce`: MoCo's InfoNCE, cross-entropy with target index 0.
- :func:`d3m_loss`: AimCLR's D3M (dual distributional divergence minimisation) term: the extreme and the
  EADM-dropped views must reproduce the (detached) similarity distribution of the normal view,
  ``-mean_b sum_j softmax(l)_j log softmax(l_x)_j``.
- :func:`nearest_neighbour_mask` and :func:`multi_positive_nce`: AimCLR's nearest-neighbour mining used
  after ``mining_epoch``: the top-k queue entries of each of q, q_e, q_ed become extra positives of the
  normal view, ``-mean_b (sum_j mask_j log softmax(l)_j) / sum_j mask_j``.

Deviation (numerics only): the reference computes ``log(softmax(l_x))``, which underflows to ``-inf`` for
far negatives; :func:`torch.log_softmax` computes the same value stably.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def contrastive_logits(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float) -> torch.Tensor:
    """``[q·k, q·queue] / T``: (B, 1 + K) from q, k (B, D) and the queue (D, K) (all L2-normalised)."""
    l_pos = torch.einsum("nc,nc->n", q, k).unsqueeze(-1)  # (B, 1)
    l_neg = q @ queue  # (B, K)
    return torch.cat([l_pos, l_neg], dim=1) / temperature


def info_nce(logits: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of (B, 1 + K) logits with the positive at index 0 (scalar, mean over B)."""
    target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits, target)


def d3m_loss(logits: torch.Tensor, target_logits: torch.Tensor) -> torch.Tensor:
    """D3M: ``-mean_b sum_j p_j log softmax(logits)_j`` with ``p = softmax(target_logits)`` detached."""
    p = torch.softmax(target_logits.detach(), dim=1)
    return -(p * torch.log_softmax(logits, dim=1)).sum(dim=1).mean()


@torch.no_grad()
def nearest_neighbour_mask(similarities: Sequence[torch.Tensor], topk: int = 1) -> torch.Tensor:
    """Positive mask (B, 1 + K) of nearest-neighbour mining.

    Args:
        similarities: one or more (B, K) query-to-queue similarities (the reference uses the raw cosine
            similarities of q, q_e and q_ed; scaling by 1/T does not change the top-k).
        topk: neighbours taken from each.

    Returns:
        float mask: column 0 (the key) is 1; column 1 + i is 1 when queue entry i is among the top-k of
        any of the similarities.
    """
    first = similarities[0]
    mask = torch.zeros_like(first)
    for sim in similarities:
        mask.scatter_(1, sim.topk(topk, dim=1).indices, 1.0)
    return torch.cat([torch.ones_like(first[:, :1]), mask], dim=1)


def multi_positive_nce(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``-mean_b (sum_j mask_j log softmax(logits)_j) / sum_j mask_j`` for (B, 1 + K) logits and mask."""
    log_prob = torch.log_softmax(logits, dim=1)
    return (-(log_prob * mask).sum(dim=1) / mask.sum(dim=1)).mean()


__all__ = ["contrastive_logits", "info_nce", "d3m_loss", "nearest_neighbour_mask", "multi_positive_nce"]
