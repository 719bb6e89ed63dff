"""MS-AimCLR: AimCLR's momentum contrast with extreme views, EADM and D3M, for several skeletons
in the shape of MoCo's builder (``facebookresearch/moco:moco/builder.py``).

One step, for a batch whose query views use convention ``q_s`` and whose key view uses ``k_s``:

1. ``q = normalize(f_q(x_query; q_s))``; ``(q_e, q_ed) = normalize(f_q(x_extreme; q_s, drop=True))`` (a
   second pass through ``encoder_q`` with its own BatchNorm batch statistics; ``q_ed`` is the EADM branch).
2. Without gradient: momentum update of ``encoder_k`` (parameters only), then
   ``k = normalize(f_k(x_key; k_s))``.  ``encoder_k`` runs in train mode (batch statistics).
3. ``l = [q·k, q·Q] / T``, ``l_e``, ``l_ed`` likewise, each (B, 1 + K).
4. Loss: ``CE(l, 0) + (D3M(l_e) + D3M(l_ed)) / 2`` with the detached target ``softmax(l)``; with ``mine=True``
   (epochs after ``mining_epoch``) the first term becomes the multi-positive loss whose positives are the
   key and the top-``topk`` queue entries of each of ``q·Q``, ``q_e·Q``, ``q_ed·Q``.
5. Enqueue ``k`` (all ranks' keys under DDP) at ``queue_ptr``; ``queue_ptr += B mod K``.

The queue mixes keys of whichever key convention each batch used, as in the reference.

Differences from the reference, on purpose:

- **k equals q at step 0**: the encoders are built (and initialised) by the
  factory first, then ``encoder_q``'s state is copied into ``encoder_k``.  The reference copied q -> k and
  then re-initialised the whole model, so its k started independent of q.
- The momentum update averages **parameters only** (as the reference and MoCo do): buffers (adjacency,
  BatchNorm running statistics) are not averaged; ``encoder_k``'s running statistics come from its own
  train-mode forward passes on the key views.
- The forward has no side effects in ``eval()`` mode (no momentum update, no enqueue), so a held-out loss
  can be computed without touching the state.
- Shuffle-BN: the reference has none (its key encoder normalises with the statistics of its own, unshuffled
  batch, on one GPU); that is the default here too.  Under DDP, ``shuffle_bn=True`` enables MoCo v2's
  batch shuffle across ranks for the key encoder (gather all key inputs, permute with a permutation
  broadcast from rank 0, each rank encodes its share, un-shuffle), which prevents the query and its key
  from sharing BatchNorm statistics.  It needs equal per-rank batches.  Without it each rank uses
  per-rank BN, which is what the reference's single-GPU setting amounts to.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from msclr.models.losses import (
    contrastive_logits,
    d3m_loss,
    info_nce,
    multi_positive_nce,
    nearest_neighbour_mask,
)


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


@torch.no_grad()
def concat_all_gather(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` (B, ...) of every rank along dim 0 (rank order); itself when not distributed.

    No gradient flows through ``all_gather``.
    """
    if not _distributed():
        return tensor
    world = torch.distributed.get_world_size()
    parts = [torch.empty_like(tensor) for _ in range(world)]
    torch.distributed.all_gather(parts, tensor.contiguous())
    return torch.cat(parts, dim=0)


@torch.no_grad()
def update_momentum(model: nn.Module, model_ema: nn.Module, m: float) -> None:
    """``θ_ema <- m θ_ema + (1 - m) θ`` for every parameter pair (buffers are left alone)."""
    ema = [p.data for p in model_ema.parameters()]
    src = [p.data for p in model.parameters()]
    if len(ema) != len(src):
        raise ValueError("update_momentum: the two models have different parameter lists")
    torch._foreach_lerp_(ema, src, 1.0 - m)


class MSAimCLR(nn.Module):
    """Multi-skeleton AimCLR: query / key encoders and a queue of negative keys.

    Args:
        encoder_factory: called twice with no arguments; returns an encoder
            ``f(x (N, C, T, V_s, M), skeleton, drop=False) -> (N, dim)`` (or a pair with ``drop``), e.g. a
            :class:`msclr.models.stgcn.MultiSkeletonSTGCN` with an MLP head.  It must return identically
            structured, initialised modules.
        dim: embedding size D (128).
        queue_size: K, number of negative keys (32768); must be a multiple of the global batch size.
        momentum: m of the key encoder's momentum update (0.999).
        temperature: T of the softmax (0.07).
        topk: neighbours per query view in nearest-neighbour mining (1).
        shuffle_bn: MoCo v2 batch shuffle across DDP ranks for the key encoder (off, as the reference).
    """

    uses_extreme_view = True
    """The training loop makes an extreme view of the query clips (the first forward argument) per batch."""

    def __init__(self, encoder_factory: Callable[[], nn.Module], *, dim: int = 128, queue_size: int = 32768,
                 momentum: float = 0.999, temperature: float = 0.07, topk: int = 1,
                 shuffle_bn: bool = False) -> None:  # fmt: skip
        super().__init__()
        if queue_size <= 0 or topk <= 0:
            raise ValueError(f"queue_size and topk must be positive, got {queue_size} and {topk}")
        self.dim, self.queue_size, self.momentum, self.temperature = dim, queue_size, momentum, temperature
        self.topk, self.shuffle_bn = topk, shuffle_bn
        self.encoder_q = encoder_factory()
        self.encoder_k = encoder_factory()
        # Copy AFTER both encoders are initialised (the reference re-initialised k after its copy, so k != q).
        self.encoder_k.load_state_dict(self.encoder_q.state_dict())
        for p in self.encoder_k.parameters():
            p.requires_grad_(False)
        self.register_buffer("queue", F.normalize(torch.randn(dim, queue_size), dim=0))  # (D, K)
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))

    # ------------------------------------------------------------------ state updates
    @torch.no_grad()
    def _momentum_update_key_encoder(self) -> None:
        """θ_k <- m θ_k + (1 - m) θ_q for every parameter (not buffers), as MoCo / the reference."""
        update_momentum(self.encoder_q, self.encoder_k, self.momentum)

    @torch.no_grad()
    def _dequeue_and_enqueue(self, keys: torch.Tensor) -> None:
        """Write ``keys`` (B, D) of this rank (all ranks' keys under DDP) into the queue at ``queue_ptr``."""
        keys = concat_all_gather(keys)
        batch = keys.shape[0]
        if self.queue_size % batch:
            raise ValueError(
                f"queue size {self.queue_size} is not a multiple of the (global) batch size {batch}: choose a "
                f"queue size such as {max(1, self.queue_size // batch) * batch} or a batch size that divides it"
            )
        ptr = int(self.queue_ptr)
        self.queue[:, ptr : ptr + batch] = keys.T.to(self.queue.dtype)
        self.queue_ptr[0] = (ptr + batch) % self.queue_size

    @torch.no_grad()
    def _batch_shuffle_ddp(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """MoCo v2 shuffle-BN: this rank's share of the globally permuted batch, and the inverse permutation."""
        batch = x.shape[0]
        x_all = concat_all_gather(x)
        world = x_all.shape[0] // batch
        idx_shuffle = torch.randperm(x_all.shape[0], device=x.device)
        torch.distributed.broadcast(idx_shuffle, src=0)
        idx_unshuffle = torch.argsort(idx_shuffle)
        rank = torch.distributed.get_rank()
        mine = idx_shuffle.view(world, -1)[rank]
        return x_all[mine], idx_unshuffle

    @torch.no_grad()
    def _batch_unshuffle_ddp(self, x: torch.Tensor, idx_unshuffle: torch.Tensor) -> torch.Tensor:
        """Undo :meth:`_batch_shuffle_ddp` for the encoded keys (B, D) of this rank."""
        batch = x.shape[0]
        x_all = concat_all_gather(x)
        world = x_all.shape[0] // batch
        rank = torch.distributed.get_rank()
        return x_all[idx_unshuffle.view(world, -1)[rank]]

    @torch.no_grad()
    def _keys(self, x_key: torch.Tensor, key_skeleton: str) -> torch.Tensor:
        if self.shuffle_bn and _distributed():
            x_key, idx_unshuffle = self._batch_shuffle_ddp(x_key)
            k = F.normalize(self.encoder_k(x_key, key_skeleton), dim=1)
            return self._batch_unshuffle_ddp(k, idx_unshuffle)
        return F.normalize(self.encoder_k(x_key, key_skeleton), dim=1)

    # ------------------------------------------------------------------ forward
    def forward(self, x_extreme: torch.Tensor, x_query: torch.Tensor, x_key: torch.Tensor, query_skeleton: str,
                key_skeleton: str, *, mine: bool = False) -> dict[str, Any]:  # fmt: skip
        """One MS-AimCLR step's loss.

        Args:
            x_extreme: (B, C, T, V_q, M) extreme view of the query convention.
            x_query: (B, C, T, V_q, M) normal view of the query convention.
            x_key: (B, C, T, V_k, M) normal view of the key convention.
            query_skeleton, key_skeleton: convention names.
            mine: nearest-neighbour mining (epochs after ``mining_epoch``).

        Returns:
            dict with ``loss`` (scalar, differentiable w.r.t. ``encoder_q``), ``loss_ce`` (or ``loss_nn`` when
            mining), ``loss_d3m`` = (D3M_e + D3M_ed) / 2, ``loss_d3m_e``, ``loss_d3m_ed`` (detached), ``logits``
            (B, 1 + K) of the normal view (detached; the positive is index 0, for accuracy), ``mask`` (the
            positive mask, when mining), ``embedding`` (B, D), the L2-normalised query embedding ``q`` of the
            normal view (detached), and ``negatives`` (D, K), the queue snapshot the logits used (detached;
            for collapse signals).
        """
        q = F.normalize(self.encoder_q(x_query, query_skeleton), dim=1)  # (B, D)
        q_e, q_ed = self.encoder_q(x_extreme, query_skeleton, drop=True)
        q_e, q_ed = F.normalize(q_e, dim=1), F.normalize(q_ed, dim=1)
        with torch.no_grad():
            if self.training:
                self._momentum_update_key_encoder()
            k = self._keys(x_key, key_skeleton)  # (B, D)
        # Snapshot: the queue is updated in place below, but autograd needs this value for backward.
        queue = self.queue.clone()
        logits = contrastive_logits(q, k, queue, self.temperature)  # (B, 1 + K)
        logits_e = contrastive_logits(q_e, k, queue, self.temperature)
        logits_ed = contrastive_logits(q_ed, k, queue, self.temperature)
        d3m_e = d3m_loss(logits_e, logits)
        d3m_ed = d3m_loss(logits_ed, logits)
        loss_d3m = (d3m_e + d3m_ed) / 2
        out: dict[str, Any] = {}
        if mine:
            k_pos = 1  # columns 1.. are the queue
            mask = nearest_neighbour_mask(
                [logits[:, k_pos:].detach(), logits_e[:, k_pos:].detach(), logits_ed[:, k_pos:].detach()], self.topk
            )
            main = multi_positive_nce(logits, mask)
            out["loss_nn"] = main.detach()
            out["mask"] = mask
        else:
            main = info_nce(logits)
            out["loss_ce"] = main.detach()
        if self.training:
            self._dequeue_and_enqueue(k)
        out.update(loss=main + loss_d3m, loss_d3m=loss_d3m.detach(), loss_d3m_e=d3m_e.detach(),
                   loss_d3m_ed=d3m_ed.detach(), logits=logits.detach(), embedding=q.detach(),
                   negatives=queue.detach())
        return out


__all__ = ["MSAimCLR", "concat_all_gather", "update_momentum"]
