"""Distributed data parallel set-up for pretraining (``torchrun --nproc-per-node N -m msclr train ...``).

The process group is detected from torchrun's ``WORLD_SIZE`` / ``RANK`` / ``LOCAL_RANK`` environment variables
(NCCL on CUDA, gloo on CPU).  Pretraining averages gradients itself (:func:`all_reduce_grads`) instead of
wrapping ``encoder_q`` in DDP, because the encoder is called twice per step (normal and extreme views) and a
convention's own parameters are unused in steps of other conventions.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from msclr.errors import MsclrError


@dataclass(frozen=True)
class DistInfo:
    """Process-group facts of this process (world_size 1 when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str = "cpu") -> DistInfo:
    """Join the process group described by torchrun's environment variables (no-op without them).

    Uses NCCL for CUDA devices and gloo otherwise; an already initialised group is reused.
    """
    import torch
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 and not (dist.is_available() and dist.is_initialized()):
        return DistInfo()
    if not dist.is_available():
        raise MsclrError("WORLD_SIZE > 1 but this PyTorch build has no torch.distributed; run a single process.")
    if not dist.is_initialized():
        backend = "nccl" if str(device).startswith("cuda") else "gloo"
        dist.init_process_group(backend=backend)
    rank, world = dist.get_rank(), dist.get_world_size()
    local = int(os.environ.get("LOCAL_RANK", rank))
    if str(device).startswith("cuda"):
        torch.cuda.set_device(local)
    return DistInfo(rank, world, local)


def all_reduce_grads(params: Sequence[Any], world_size: int) -> None:
    """Average gradients over ranks (what DDP does, without DDP's hooks on a twice-called encoder).

    A parameter a rank did not use in this step (e.g. another convention's ``data_bn``) gets a zero gradient
    so every rank joins every all-reduce; since all ranks train the same (q, k), the same parameters are
    used everywhere and the zeros never dilute a real gradient.
    """
    import torch
    import torch.distributed as dist

    grads = []
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        grads.append(p.grad)
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world_size
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset:offset + n].view_as(g))
        offset += n


def broadcast_state(module: Any) -> None:
    """Make every rank start from rank 0's parameters and buffers."""
    import torch.distributed as dist

    for tensor in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(tensor.data, src=0)


__all__ = ["DistInfo", "init_distributed", "all_reduce_grads", "broadcast_state"]
