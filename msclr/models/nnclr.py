"""Multi-skeleton contrast with in-batch negatives and nearest-neighbour positives (SimCLR / NNCLR style).

An opt-in alternative to :class:`msclr.models.aimclr.MSAimCLR` for small datasets (``model.objective =
"nnclr"``; the ``small_data`` recipe).  On a few hundred clips MoCo's queue holds every clip several times
over, so the "negatives" are mostly stale copies of the positives, and the reference projection head
(Linear-ReLU-Linear) starts with every embedding in one narrow cone; MS-AimCLR's loss then climbs to the
uniform-logits plateau ``ln(1 + K)`` and stays there.  This objective changes the three parts that fail:

- one encoder for both views (no key encoder, no momentum), so a step compares fresh embeddings;
- the negatives are the other clips of the batch, encoded by the same network in the same step;
- the projection head ends in BatchNorm (``head_norm``; SimCLR / MoCo v3), which centres the batch and
  removes the common direction the cone comes from.

One step, for a batch whose first view uses convention ``q_s`` and whose second view uses ``k_s`` (the same
clips, independently augmented)::

    z1 = normalize(f(x_query; q_s)),  z2 = normalize(f(x_key; k_s))            (B, D) each
    nce(a, b) = CE((a b^T) / T, arange(B))         row i's positive is column i, the other B-1 are negatives
    base = (nce(z1, z2) + nce(z2, z1)) / 2
    with mining:  n1, n2 = nearest neighbours of z1, z2 in the support set S (D, K) (cosine, no gradient)
                  loss = (1 - w) base + w (nce(n1, z2) + nce(n2, z1)) / 2
    without:      loss = base
    S <- S with its oldest B columns replaced by z2 (detached)

The nearest-neighbour term (NNCLR, Dwibedi et al. 2021) makes an earlier clip that the network already
finds similar a positive, which pulls clips of the same action together instead of separating every clip
from every other.  ``w = 0`` is plain SimCLR (NT-Xent over the B positives, B - 1 negatives per row).

Shapes: ``B`` batch, ``D`` embedding size, ``K`` support-set size.  No file I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from msclr.models.aimclr import concat_all_gather


def batch_nce(anchors: torch.Tensor, positives: torch.Tensor, temperature: float) -> torch.Tensor:
    """In-batch InfoNCE: ``CE((anchors positives^T) / T, arange(B))`` for L2-normalised (B, D) inputs."""
    target = torch.arange(anchors.shape[0], device=anchors.device)
    return F.cross_entropy(anchors @ positives.T / temperature, target)


def nearest_neighbours(z: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
    """Rows of ``support.T`` (K, D) most cosine-similar to each row of ``z`` (B, D): (B, D), no gradient."""
    with torch.no_grad():
        return support[:, (z @ support).argmax(dim=1)].T


class MSNNCLR(nn.Module):
    """Multi-skeleton SimCLR / NNCLR: one encoder, in-batch negatives, a support set of past embeddings.

    Args:
        encoder_factory: called once with no arguments; returns an encoder
            ``f(x (N, C, T, V_s, M), skeleton) -> (N, dim)`` (a :class:`msclr.models.stgcn.MultiSkeletonSTGCN`
            with an MLP head, best with ``head_norm``).
        dim: embedding size D.
        support_size: K, the support set of past second-view embeddings searched for nearest neighbours.
        temperature: T of the softmax.
        nn_weight: w, the weight of the nearest-neighbour term once mining is on (0 = SimCLR).
    """

    uses_extreme_view = False
    """The training loop makes two normal views per batch for this model (no extreme view)."""

    def __init__(self, encoder_factory: Callable[[], nn.Module], *, dim: int = 128, support_size: int = 256,
                 temperature: float = 0.2, nn_weight: float = 0.5) -> None:
        super().__init__()
        if support_size <= 0:
            raise ValueError(f"support_size must be positive, got {support_size}")
        if not 0.0 <= nn_weight <= 1.0:
            raise ValueError(f"nn_weight must be in [0, 1], got {nn_weight}")
        self.dim, self.temperature, self.nn_weight = dim, temperature, nn_weight
        self.encoder_q = encoder_factory()
        self.register_buffer("queue", F.normalize(torch.randn(dim, support_size), dim=0))  # (D, K)

    @torch.no_grad()
    def _push(self, z: torch.Tensor) -> None:
        """Append ``z`` (B, D) of every rank to the support set, dropping the oldest columns."""
        z = concat_all_gather(z)
        keep = self.queue.shape[1] - z.shape[0]
        if keep < 0:
            raise ValueError(f"support set of {self.queue.shape[1]} is smaller than the (global) batch {z.shape[0]}: "
                             "raise model.queue_size")
        self.queue.copy_(torch.cat([self.queue[:, z.shape[0]:], z.T.to(self.queue.dtype)], dim=1))

    def forward(self, x_query: torch.Tensor, x_key: torch.Tensor, query_skeleton: str, key_skeleton: str, *,
                mine: bool = False) -> dict[str, Any]:
        """One step's loss.

        Args:
            x_query: (B, C, T, V_q, M) first view, convention ``query_skeleton``.
            x_key: (B, C, T, V_k, M) second view of the same clips, convention ``key_skeleton``.
            mine: add the nearest-neighbour term (epochs after ``mining_epoch``).

        Returns:
            dict with ``loss`` (scalar, differentiable), ``loss_ce`` (the in-batch term, detached),
            ``loss_nn`` (the nearest-neighbour term, when mining), ``embedding`` (z1, (B, D), detached) and
            ``negatives`` (the support set before this step, (D, K): earlier clips' embeddings, the
            counterpart of MoCo's queue for the collapse signals).
        """
        z1 = F.normalize(self.encoder_q(x_query, query_skeleton), dim=1)
        z2 = F.normalize(self.encoder_q(x_key, key_skeleton), dim=1)
        base = (batch_nce(z1, z2, self.temperature) + batch_nce(z2, z1, self.temperature)) / 2
        out: dict[str, Any] = {"loss_ce": base.detach()}
        loss = base
        support = self.queue.clone()  # snapshot: the support set is updated in place below
        if mine and self.nn_weight > 0:
            n1, n2 = nearest_neighbours(z1.detach(), support), nearest_neighbours(z2.detach(), support)
            nn_term = (batch_nce(n1, z2, self.temperature) + batch_nce(n2, z1, self.temperature)) / 2
            loss = (1 - self.nn_weight) * base + self.nn_weight * nn_term
            out["loss_nn"] = nn_term.detach()
        if self.training:
            self._push(z2.detach())
        out.update(loss=loss, embedding=z1.detach(), negatives=support)
        return out


__all__ = ["MSNNCLR", "batch_nce", "nearest_neighbours"]
