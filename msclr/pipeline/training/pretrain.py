"""The MS-AimCLR pretraining loop (one stream; method.md §5, §6, §10, §11).

Per step: the :class:`~msclr.pipeline.training.sampler.PairBatchSampler` gives clip indices and ONE (query q, key k)
convention pair; the batch of raw clips of q and of k moves to the device, where three views are made with
batched torch augmentations (``extreme_augment`` of q, ``normal_augment`` of q, ``normal_augment`` of k, each
with independent draws from a seeded device generator; no per-sample numpy in workers), then turned into the
stream (joint / motion / bone with each convention's own bones) and fed to
:class:`msclr.models.aimclr.MSAimCLR` with nearest-neighbour mining on from epoch ``mining_epoch + 1``.

Optimisation: SGD momentum 0.9, Nesterov off, weight decay 1e-4, lr 0.1 stepped x0.1 after epoch 250 of 300,
global batch 128, ``drop_last`` (from :class:`msclr.pipeline.config.PretrainConfig`).  Only ``encoder_q`` is
optimised; ``encoder_k`` follows by momentum.

Checkpoints (``OUT/checkpoints/last.pt``, atomic, loadable with ``weights_only=True``) hold the full state:
the model (both encoders, queue and pointer), the optimiser, the epoch and the position inside it, the
resolved config, the RNG states (torch / numpy / python / CUDA and the augmentation generator) and the
sampler's state.  They are written every ``checkpoint_every`` epochs, at the end, and when Ctrl-C is pressed
(the step in progress finishes first; a second Ctrl-C aborts at once).  ``resume=True`` continues from it; on
CPU with a fixed seed a resumed run ends with the same weights as an uninterrupted one.

Distributed data parallel (``torchrun --nproc-per-node N -m msclr train ...``): detected from the
``WORLD_SIZE`` / ``RANK`` / ``LOCAL_RANK`` environment variables (NCCL on CUDA, gloo on CPU).  The global
batch (``batch_size``) is split evenly over the ranks; every rank iterates the same permutation and the same
(q, k) pairs, so a step trains one pair everywhere.  ``encoder_q`` is wrapped in DDP semantics by averaging
gradients (all-reduce) after backward; the keys of all ranks are all-gathered before they enter the queue
(MoCo v2), so every rank holds the same queue.  BatchNorm: each rank normalises with its own share of the
batch (no SyncBN; no shuffle-BN by default, as the reference; ``model.shuffle_bn = true`` turns on MoCo v2's
cross-rank batch shuffle for the key encoder); running statistics may differ slightly between ranks and rank
0's are saved.  Rank 0 alone writes checkpoints and logs.
"""

from __future__ import annotations

import math
import os
import random
import signal
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from msclr.errors import CheckpointError, MsclrError
from msclr.files import load_checkpoint, save_checkpoint
from msclr.pipeline.config import ModelConfig, TrainConfig
from msclr.pipeline.training.checkpoint import capture_rng, restore_rng
from msclr.pipeline.training.sampler import PairBatch, PairBatchSampler
from msclr.skeletons import Skeleton

Progress = Callable[[str, dict[str, Any]], None]
ScalarLog = Callable[[str, float, int], None]
CHECKPOINT_NAME = "last.pt"


# ------------------------------------------------------------------ distributed
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


def _all_reduce_grads(params: Sequence[Any], world_size: int) -> None:
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


def _broadcast_state(module: Any) -> None:
    """Make every rank start from rank 0's parameters and buffers."""
    import torch.distributed as dist

    for tensor in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(tensor.data, src=0)


# ------------------------------------------------------------------ model
def build_encoder(skeletons: Sequence[Skeleton], model: ModelConfig, *, head: str | None = "mlp") -> Any:
    """A :class:`~msclr.models.stgcn.MultiSkeletonSTGCN` for ``skeletons`` sized by ``model``."""
    from msclr.models.stgcn import MultiSkeletonSTGCN

    return MultiSkeletonSTGCN(list(skeletons), in_channels=3, hidden_channels=model.hidden_channels,
                              hidden_dim=model.hidden_dim, out_dim=model.feature_dim, dropout=model.dropout,
                              edge_importance=model.edge_importance, head=head,
                              input_norm=model.input_norm)


def build_model(skeletons: Sequence[Skeleton], model: ModelConfig, *, topk: int = 1) -> Any:
    """The MS-AimCLR wrapper (query + key encoders, queue) for ``skeletons``."""
    from msclr.models.aimclr import MSAimCLR

    return MSAimCLR(lambda: build_encoder(skeletons, model, head="mlp"), dim=model.feature_dim,
                    queue_size=model.queue_size, momentum=model.key_momentum, temperature=model.temperature,
                    topk=topk, shuffle_bn=model.shuffle_bn)


# ------------------------------------------------------------------ data
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


# ------------------------------------------------------------------ interrupt
class _Interrupt:
    """Turns the first SIGINT into a flag checked between steps; the second one interrupts at once."""

    def __init__(self) -> None:
        self.requested = False

    def _handler(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    @contextmanager
    def installed(self, enabled: bool) -> Iterator[_Interrupt]:
        import threading

        if not enabled or threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = signal.signal(signal.SIGINT, self._handler)
        try:
            yield self
        finally:
            signal.signal(signal.SIGINT, previous)


# ------------------------------------------------------------------ result
@dataclass
class PretrainResult:
    """Outcome of :func:`pretrain`.

    Attributes:
        encoder_state: ``encoder_q``'s state dict (CPU tensors): per-skeleton ``data_bn`` /
            ``edge_importance`` / adjacency, shared blocks and the MLP head.
        epochs: epochs completed.
        history: per-epoch dicts (epoch, loss, lr, seconds, samples_per_s).
        checkpoint: path of the last checkpoint (None on ranks other than 0).
        model: the trained :class:`~msclr.models.aimclr.MSAimCLR` (both encoders, queue), on its device.
    """

    encoder_state: dict[str, Any]
    epochs: int
    history: list[dict[str, float]] = field(default_factory=list)
    checkpoint: Path | None = None
    model: Any = None


def _config_mismatch(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    ignore = {("pretrain", "workers"), ("linear",), ("fusion",)}
    out = []
    for section, values in current.items():
        if (section,) in ignore:
            continue
        for key, value in values.items():
            if (section, key) in ignore:
                continue
            old = saved.get(section, {}).get(key)
            if section == "data" and key == "streams":
                continue
            if old != value:
                out.append(f"{section}.{key}: checkpoint {old!r}, now {value!r}")
    return out


def pretrain(arrays: Mapping[str, np.ndarray], skeletons: Mapping[str, Skeleton], stream: str,
             config: TrainConfig, out_dir: str | Path, *, device: str = "cpu", resume: bool = False,
             progress: Progress | None = None, log_scalar: ScalarLog | None = None,
             dist_info: DistInfo | None = None, handle_sigint: bool = True) -> PretrainResult:
    """Pretrain one stream's multi-skeleton encoder with MS-AimCLR.

    Args:
        arrays: convention -> (N, 3, T, V, M) float32 training clips, same row order in every convention.
        skeletons: convention -> definition (in the order of ``config.data.skeletons``).
        stream: ``joint``, ``motion`` or ``bone``.
        config: resolved training configuration (``pretrain`` and ``model`` sections are used).
        out_dir: folder for ``checkpoints/last.pt``.
        device: ``cpu``, ``cuda`` or ``cuda:N``.
        resume: continue from ``out_dir/checkpoints/last.pt`` if it exists.
        progress: optional callback ``(event, info)``; events ``start``, ``step`` (loss, lr, samples_per_s,
            eta_s), ``epoch``, ``checkpoint``.
        log_scalar: optional ``(tag, value, global_step)`` sink (TensorBoard).
        dist_info: process-group facts (default: :func:`init_distributed`).
        handle_sigint: save a checkpoint on the first Ctrl-C (main thread, single process only).

    Returns:
        :class:`PretrainResult`.

    Raises:
        CheckpointError: a checkpoint exists but ``resume`` is False, or it belongs to a different setup.
    """
    import torch

    cfg, mcfg = config.pretrain, config.model
    names = list(config.data.skeletons)
    missing = [n for n in names if n not in arrays or n not in skeletons]
    if missing:
        raise MsclrError(f"no training arrays / definitions for {missing}.")
    dist_info = dist_info or init_distributed(device)
    dev = torch.device(device)
    if dev.type == "cuda" and dist_info.enabled:
        dev = torch.device("cuda", dist_info.local_rank)
    out_dir = Path(out_dir)
    ckpt_path = out_dir / "checkpoints" / CHECKPOINT_NAME
    n_clips = int(next(iter(arrays.values())).shape[0])
    if any(int(a.shape[0]) != n_clips for a in arrays.values()):
        raise MsclrError("training arrays of the conventions have different clip counts; rebuild them from one split.")

    # -------- deterministic construction
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)
    random.seed(cfg.seed)
    skel_list = [skeletons[n] for n in names]
    model = build_model(skel_list, mcfg, topk=cfg.topk).to(dev)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                                weight_decay=cfg.weight_decay)
    sampler = PairBatchSampler(n_clips, names, cfg.batch_size, mode=cfg.pair_mode, seed=cfg.seed,
                               rank=dist_info.rank, world_size=dist_info.world_size)
    aug_gen = torch.Generator(device=dev)
    aug_gen.manual_seed(cfg.seed * 7919 + 17 + 104729 * dist_info.rank)
    if dist_info.enabled:
        _broadcast_state(model)

    start_epoch, start_batch, history = 1, 0, []
    if ckpt_path.exists():
        if not resume:
            raise CheckpointError(f"{ckpt_path} already exists: pass --resume to continue that run, "
                                  "or choose a new --out folder.")
        state = load_checkpoint(ckpt_path, kind="pretrain", map_location="cpu")
        diff = _config_mismatch(state.get("config", {}), config.to_dict())
        if state.get("stream") != stream or diff:
            raise CheckpointError(f"cannot resume {ckpt_path}: it was trained with different settings "
                                  f"(stream {state.get('stream')!r} vs {stream!r}; {'; '.join(diff) or 'same config'}). "
                                  "Use the same options, or a new --out folder.")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        sampler.load_state_dict(state["sampler"])
        history = list(state.get("history", []))
        start_epoch, start_batch = int(state["epoch"]), int(state["start_batch"])
        if state.get("rng_rank") == dist_info.rank:
            restore_rng(state["rng"])
            aug_gen.set_state(state["aug_generator"].to(torch.uint8))
        else:  # only rank 0's RNG is saved: other ranks derive fresh streams (DDP resume is not bitwise)
            torch.manual_seed(cfg.seed + 1_000 * start_epoch + dist_info.rank)
            aug_gen.manual_seed(cfg.seed * 7919 + 17 + 104729 * dist_info.rank + 1_000 * start_epoch)
    total_epochs = cfg.epochs

    def save(epoch: int, next_batch: int, complete: bool) -> None:
        if not dist_info.is_main:
            return
        save_checkpoint(ckpt_path, {
            "stream": stream, "conventions": names, "epoch": epoch, "start_batch": next_batch,
            "complete": complete, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "sampler": {**sampler.state_dict(), "epoch": epoch, "start_batch": next_batch},
            "rng": capture_rng(cuda=dev.type == "cuda"), "rng_rank": dist_info.rank,
            "aug_generator": aug_gen.get_state(), "config": config.to_dict(), "history": history,
        }, kind="pretrain")
        if progress is not None:
            progress("checkpoint", {"path": str(ckpt_path), "epoch": epoch, "start_batch": next_batch})

    steps_per_epoch = len(sampler)
    if progress is not None:
        progress("start", {"stream": stream, "epochs": total_epochs, "start_epoch": start_epoch,
                           "steps_per_epoch": steps_per_epoch, "clips": n_clips, "conventions": names,
                           "world_size": dist_info.world_size})
    from torch.utils.data import DataLoader

    dataset = PairBatchDataset(arrays)
    # A private generator: the loader's per-iterator base seed must not consume the global torch RNG
    # (otherwise a run resumed mid-epoch would draw one extra number and its dropout masks would shift).
    loader = DataLoader(dataset, sampler=sampler, batch_size=None, num_workers=cfg.workers,
                        pin_memory=dev.type == "cuda", persistent_workers=False,
                        generator=torch.Generator().manual_seed(cfg.seed))
    from msclr.models.augment import extreme_augment, normal_augment
    from msclr.models.streams import to_stream

    interrupt = _Interrupt()
    done_steps_total = 0
    rate: float | None = None
    model.train()
    with interrupt.installed(handle_sigint and not dist_info.enabled):
        epoch = start_epoch
        while epoch <= total_epochs:
            sampler.set_epoch(epoch, start_batch)
            lr = cfg.lr_at(epoch)
            for group in optimizer.param_groups:
                group["lr"] = lr
            mine = epoch > cfg.mining_epoch
            t_epoch = time.perf_counter()
            losses: list[float] = []
            step = start_batch
            for x_q, x_k, q, k in loader:
                t0 = time.perf_counter()
                x_q = x_q.to(dev, non_blocking=True)
                x_k = x_k.to(dev, non_blocking=True)
                sq, sk = skeletons[q], skeletons[k]
                view_e = extreme_augment(x_q, sq, aug_gen, normalize_blur=cfg.normalize_blur,
                                         mirror_flip=cfg.mirror_flip)
                view_q = normal_augment(x_q, aug_gen)
                view_k = normal_augment(x_k, aug_gen)
                out = model(to_stream(view_e, stream, sq), to_stream(view_q, stream, sq),
                            to_stream(view_k, stream, sk), q, k, mine=mine)
                loss = out["loss"]
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if dist_info.enabled:
                    _all_reduce_grads(params, dist_info.world_size)
                optimizer.step()
                value = float(loss.detach())
                if not math.isfinite(value):
                    raise MsclrError(f"pretraining diverged (loss {value}) at epoch {epoch}, step {step}: lower "
                                     "the learning rate or check the cache for corrupt clips.")
                losses.append(value)
                step += 1
                done_steps_total += 1
                dt = time.perf_counter() - t0
                inst = cfg.batch_size / max(dt, 1e-9)
                rate = inst if rate is None else 0.9 * rate + 0.1 * inst
                remaining = (steps_per_epoch - step) + (total_epochs - epoch) * steps_per_epoch
                global_step = (epoch - 1) * steps_per_epoch + step
                if progress is not None:
                    progress("step", {"epoch": epoch, "epochs": total_epochs, "step": step,
                                      "steps": steps_per_epoch, "loss": value, "lr": lr, "samples_per_s": rate,
                                      "eta_s": remaining * cfg.batch_size / rate, "pair": (q, k)})
                if log_scalar is not None and dist_info.is_main:
                    log_scalar(f"pretrain/{stream}/loss", value, global_step)
                if interrupt.requested:
                    save(epoch, step, False)
                    raise KeyboardInterrupt
            seconds = time.perf_counter() - t_epoch
            record = {"epoch": epoch, "loss": float(np.mean(losses)) if losses else float("nan"), "lr": lr,
                      "seconds": seconds, "mining": mine}
            history.append(record)
            if log_scalar is not None and dist_info.is_main:
                log_scalar(f"pretrain/{stream}/epoch_loss", record["loss"], epoch)
                log_scalar(f"pretrain/{stream}/lr", lr, epoch)
            start_batch = 0
            complete = epoch == total_epochs
            if epoch % cfg.checkpoint_every == 0 or complete:
                save(epoch + 1, 0, complete)
            if progress is not None:
                progress("epoch", dict(record, epochs=total_epochs))
            epoch += 1
    encoder = model.encoder_q
    state = {k: v.detach().cpu().clone() for k, v in encoder.state_dict().items()}
    return PretrainResult(state, total_epochs, history, ckpt_path if dist_info.is_main else None, model)


def load_pretrained_encoder(checkpoint: str | Path) -> dict[str, Any]:
    """``encoder_q`` state dict from a pretraining checkpoint (for linear evaluation of a resumed run)."""
    state = load_checkpoint(checkpoint, kind="pretrain")
    prefix = "encoder_q."
    return {k[len(prefix):]: v for k, v in state["model"].items() if k.startswith(prefix)}


__all__ = ["DistInfo", "init_distributed", "build_encoder", "build_model", "PairBatchDataset", "PretrainResult",
           "pretrain", "load_pretrained_encoder", "CHECKPOINT_NAME"]
