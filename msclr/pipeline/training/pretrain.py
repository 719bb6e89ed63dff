"""The MS-AimCLR pretraining loop (one stream).

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

Distributed data parallel (``torchrun --nproc-per-node N -m msclr train ...``; set-up in
:mod:`msclr.pipeline.training.distributed`): the global
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
import random
import signal
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from msclr.errors import CheckpointError, MsclrError
from msclr.files import load_checkpoint, pause_point, save_checkpoint
from msclr.pipeline.config import TrainConfig
from msclr.pipeline.training.checkpoint import capture_rng, restore_rng
from msclr.pipeline.training.collapse import COLLAPSE_KEYS, CollapseMonitor, collapse_signals
from msclr.pipeline.training.distributed import DistInfo, all_reduce_grads, broadcast_state, init_distributed
from msclr.pipeline.training.sampler import PairBatchDataset, PairBatchSampler
from msclr.skeletons import Skeleton

Progress = Callable[[str, dict[str, Any]], None]
ScalarLog = Callable[[str, float, int], None]
CHECKPOINT_NAME = "last.pt"


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
        history: per-epoch dicts (epoch, loss, lr, seconds, mining, and the epoch means of the collapse signals
            ``batch_cosine``, ``effective_rank``, ``negative_cosine``; ``collapse_warning``, the message, in the
            record of the epoch that raised it).
        checkpoint: path of the last checkpoint (None on ranks other than 0).
        model: the trained :class:`~msclr.models.aimclr.MSAimCLR` (both encoders, queue), on its device.
    """

    encoder_state: dict[str, Any]
    epochs: int
    history: list[dict[str, float]] = field(default_factory=list)
    checkpoint: Path | None = None
    model: Any = None


# ------------------------------------------------------------------ state of one run
@dataclass
class _Run:
    """Everything one pretraining run works on: model, optimiser, sampler, generators and the sinks."""

    stream: str
    config: TrainConfig
    skeletons: Mapping[str, Skeleton]
    names: list[str]
    device: Any
    dist_info: DistInfo
    model: Any
    params: list[Any]
    optimizer: Any
    sampler: PairBatchSampler
    aug_gen: Any
    ckpt_path: Path
    monitor: CollapseMonitor  # collapse signals per epoch and the once-per-stream warning
    progress: Progress | None = None
    log_scalar: ScalarLog | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    rate: float | None = None  # smoothed samples per second

    @property
    def steps_per_epoch(self) -> int:
        return len(self.sampler)


def _clip_count(arrays: Mapping[str, np.ndarray]) -> int:
    """N, the clips of every convention's array (they must agree)."""
    n_clips = int(next(iter(arrays.values())).shape[0])
    if any(int(a.shape[0]) != n_clips for a in arrays.values()):
        raise MsclrError("training arrays of the conventions have different clip counts; rebuild them from one split.")
    return n_clips


def _training_device(device: str, dist_info: DistInfo) -> Any:
    """``device`` as a torch device; under DDP on CUDA, this rank's GPU."""
    import torch

    dev = torch.device(device)
    if dev.type == "cuda" and dist_info.enabled:
        dev = torch.device("cuda", dist_info.local_rank)
    return dev


def _aug_seed(seed: int, rank: int, epoch: int = 0) -> int:
    """Seed of the augmentation generator of ``rank`` (``epoch`` > 0: a fresh stream for a resumed rank)."""
    return seed * 7919 + 17 + 104729 * rank + 1_000 * epoch


def _monitor(stream: str, config: TrainConfig, dist_info: DistInfo,
             history: list[dict[str, Any]] | None = None) -> CollapseMonitor:
    """The collapse monitor of a run (B = this rank's share of the batch), continuing after ``history`` (a
    resumed run's records: it does not warn again when one of them warned)."""
    return CollapseMonitor.after(stream, config.pretrain.batch_size // dist_info.world_size,
                                 config.model.feature_dim, history or [])


def _build_run(skeletons: Mapping[str, Skeleton], stream: str, config: TrainConfig, n_clips: int, dev: Any,
               dist_info: DistInfo, ckpt_path: Path) -> _Run:
    """Seeded construction: model, SGD optimiser over ``encoder_q``, pair sampler and augmentation generator."""
    import torch

    from msclr.models.build import build_model

    cfg = config.pretrain
    names = list(config.data.skeletons)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)
    random.seed(cfg.seed)
    model = build_model([skeletons[n] for n in names], config.model, topk=cfg.topk).to(dev)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                                weight_decay=cfg.weight_decay)
    sampler = PairBatchSampler(n_clips, names, cfg.batch_size, mode=cfg.pair_mode, seed=cfg.seed,
                               rank=dist_info.rank, world_size=dist_info.world_size)
    aug_gen = torch.Generator(device=dev)
    aug_gen.manual_seed(_aug_seed(cfg.seed, dist_info.rank))
    if dist_info.enabled:
        broadcast_state(model)
    return _Run(stream, config, skeletons, names, dev, dist_info, model, params, optimizer, sampler, aug_gen,
                ckpt_path, _monitor(stream, config, dist_info))


# ------------------------------------------------------------------ checkpoints
def _config_mismatch(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """``section.key: checkpoint X, now Y`` for every setting that changes training (workers, linear, fusion
    and the stream list may differ)."""
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


def _resume(run: _Run, resume: bool) -> tuple[int, int]:
    """Load ``run.ckpt_path`` into ``run`` if it exists; returns the (1-based epoch, batch) to start from.

    Raises:
        CheckpointError: the checkpoint exists but ``resume`` is False, or it belongs to a different setup.
    """
    import torch

    if not run.ckpt_path.exists():
        return 1, 0
    if not resume:
        raise CheckpointError(f"{run.ckpt_path} already exists: pass --resume to continue that run, "
                              "or choose a new --out folder.")
    state = load_checkpoint(run.ckpt_path, kind="pretrain", map_location="cpu")
    diff = _config_mismatch(state.get("config", {}), run.config.to_dict())
    if state.get("stream") != run.stream or diff:
        raise CheckpointError(f"cannot resume {run.ckpt_path}: it was trained with different settings "
                              f"(stream {state.get('stream')!r} vs {run.stream!r}; {'; '.join(diff) or 'same config'}). "
                              "Use the same options, or a new --out folder.")
    run.model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.sampler.load_state_dict(state["sampler"])
    run.history = list(state.get("history", []))
    # Warned once per stream: a resumed run that warned before does not warn again.
    run.monitor = _monitor(run.stream, run.config, run.dist_info, run.history)
    start_epoch, start_batch = int(state["epoch"]), int(state["start_batch"])
    rank, seed = run.dist_info.rank, run.config.pretrain.seed
    if state.get("rng_rank") == rank:
        restore_rng(state["rng"])
        run.aug_gen.set_state(state["aug_generator"].to(torch.uint8))
    else:  # only rank 0's RNG is saved: other ranks derive fresh streams (DDP resume is not bitwise)
        torch.manual_seed(seed + 1_000 * start_epoch + rank)
        run.aug_gen.manual_seed(_aug_seed(seed, rank, start_epoch))
    return start_epoch, start_batch


def _save(run: _Run, epoch: int, next_batch: int, complete: bool) -> None:
    """Write the full training state to ``run.ckpt_path`` (rank 0 only); training continues at
    (``epoch``, ``next_batch``)."""
    if not run.dist_info.is_main:
        return
    save_checkpoint(run.ckpt_path, {
        "stream": run.stream, "conventions": run.names, "epoch": epoch, "start_batch": next_batch,
        "complete": complete, "model": run.model.state_dict(), "optimizer": run.optimizer.state_dict(),
        "sampler": {**run.sampler.state_dict(), "epoch": epoch, "start_batch": next_batch},
        "rng": capture_rng(cuda=run.device.type == "cuda"), "rng_rank": run.dist_info.rank,
        "aug_generator": run.aug_gen.get_state(), "config": run.config.to_dict(), "history": run.history,
    }, kind="pretrain")
    if run.progress is not None:
        run.progress("checkpoint", {"path": str(run.ckpt_path), "epoch": epoch, "start_batch": next_batch})


# ------------------------------------------------------------------ training
def _make_loader(arrays: Mapping[str, np.ndarray], run: _Run) -> Any:
    """DataLoader of (x_q, x_k, q, k) batches drawn by ``run.sampler``."""
    import torch
    from torch.utils.data import DataLoader

    cfg = run.config.pretrain
    # A private generator: the loader's per-iterator base seed must not consume the global torch RNG
    # (otherwise a run resumed mid-epoch would draw one extra number and its dropout masks would shift).
    return DataLoader(PairBatchDataset(arrays), sampler=run.sampler, batch_size=None, num_workers=cfg.workers,
                      pin_memory=run.device.type == "cuda", persistent_workers=False,
                      generator=torch.Generator().manual_seed(cfg.seed))


def _normal_view(run: _Run, x: Any, skeleton: Skeleton) -> Any:
    """Normal augmentation of (B, 3, T, V, M) raw clips, after the opt-in speed change and bone scaling
    (``pretrain.crop_min`` / ``bone_scale``; both off by default, and then no random number is drawn)."""
    from msclr.models.augment import normal_augment
    from msclr.models.subject_augment import resample_crop, scale_bones

    cfg = run.config.pretrain
    x = resample_crop(x, cfg.crop_min, run.aug_gen)
    x = scale_bones(x, skeleton, cfg.bone_scale, run.aug_gen)
    return normal_augment(x, run.aug_gen)


def _train_step(run: _Run, x_q: Any, x_k: Any, q: str, k: str, mine: bool) -> tuple[float, dict[str, float]]:
    """One optimiser step on a batch of raw clips x_q (B, 3, T, V_q, M), x_k (B, 3, T, V_k, M); returns the loss
    and the step's collapse signals (:func:`~msclr.pipeline.training.collapse.collapse_signals`).

    The views are made on the device, turned into the stream and fed to the model: for MS-AimCLR three
    (extreme and normal augmentation of q, normal augmentation of k), for models without an extreme view
    (``uses_extreme_view = False``, :class:`~msclr.models.nnclr.MSNNCLR`) the two normal ones.  Gradients are
    averaged over ranks under DDP.
    """
    from msclr.models.augment import extreme_augment
    from msclr.models.streams import to_stream

    cfg, dev, stream = run.config.pretrain, run.device, run.stream
    x_q = x_q.to(dev, non_blocking=True)
    x_k = x_k.to(dev, non_blocking=True)
    sq, sk = run.skeletons[q], run.skeletons[k]
    if run.model.uses_extreme_view:
        view_e = extreme_augment(x_q, sq, run.aug_gen, normalize_blur=cfg.normalize_blur,
                                 mirror_flip=cfg.mirror_flip)
        views = [to_stream(view_e, stream, sq)]
    else:
        views = []
    views += [to_stream(_normal_view(run, x_q, sq), stream, sq), to_stream(_normal_view(run, x_k, sk), stream, sk)]
    out = run.model(*views, q, k, mine=mine)
    loss = out["loss"]
    signals = collapse_signals(out["embedding"], out.get("negatives"))
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if run.dist_info.enabled:
        all_reduce_grads(run.params, run.dist_info.world_size)
    run.optimizer.step()
    return float(loss.detach()), signals


def _log_step(run: _Run, epoch: int, step: int, loss: float, lr: float, seconds: float, pair: tuple[str, str],
              signals: Mapping[str, float]) -> None:
    """Throughput (smoothed samples/s), ETA, loss and collapse signals of the step that ended ``step`` (1-based)
    of ``epoch``."""
    cfg, steps = run.config.pretrain, run.steps_per_epoch
    inst = cfg.batch_size / max(seconds, 1e-9)
    run.rate = inst if run.rate is None else 0.9 * run.rate + 0.1 * inst
    remaining = (steps - step) + (cfg.epochs - epoch) * steps
    if run.progress is not None:
        run.progress("step", {"epoch": epoch, "epochs": cfg.epochs, "step": step, "steps": steps, "loss": loss,
                              "lr": lr, "samples_per_s": run.rate, "eta_s": remaining * cfg.batch_size / run.rate,
                              "pair": pair, **signals})
    if run.log_scalar is not None and run.dist_info.is_main:
        global_step = (epoch - 1) * steps + step
        run.log_scalar(f"pretrain/{run.stream}/loss", loss, global_step)
        for key, value in signals.items():
            run.log_scalar(f"pretrain/{run.stream}/{key}", value, global_step)


def _train_epoch(run: _Run, loader: Any, epoch: int, start_batch: int, interrupt: _Interrupt) -> dict[str, Any]:
    """Train 1-based ``epoch`` from batch ``start_batch``; returns its history record.

    A requested interrupt saves a checkpoint after the current step and raises KeyboardInterrupt.
    """
    cfg = run.config.pretrain
    run.sampler.set_epoch(epoch, start_batch)
    lr = cfg.lr_at(epoch)
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    mine = epoch > cfg.mining_epoch
    t_epoch = time.perf_counter()
    losses: list[float] = []
    step = start_batch
    for x_q, x_k, q, k in loader:
        t0 = time.perf_counter()
        value, signals = _train_step(run, x_q, x_k, q, k, mine)
        if not math.isfinite(value):
            raise MsclrError(f"pretraining diverged (loss {value}) at epoch {epoch}, step {step}: lower "
                             "the learning rate or check the cache for corrupt clips.")
        losses.append(value)
        run.monitor.add(signals)
        step += 1
        _log_step(run, epoch, step, value, lr, time.perf_counter() - t0, (q, k), signals)
        pause_point(f"step:{epoch}:{step}")  # test hook (tests/test_train_kill.py), inert unless $MSCLR_TEST_PAUSE
        if interrupt.requested:
            _save(run, epoch, step, False)
            raise KeyboardInterrupt
    return {"epoch": epoch, "loss": float(np.mean(losses)) if losses else float("nan"), "lr": lr,
            "seconds": time.perf_counter() - t_epoch, "mining": mine, **run.monitor.epoch_summary()}


def _end_epoch(run: _Run, record: dict[str, Any]) -> None:
    """Record, log and (every ``checkpoint_every`` epochs and at the end) checkpoint a finished epoch; warn once
    when the epoch's collapse signals show collapse (a ``warning`` event, ``collapse_warning`` in the record)."""
    cfg, epoch = run.config.pretrain, int(record["epoch"])
    warning = run.monitor.check(epoch, record)
    if warning:
        record["collapse_warning"] = warning
    run.history.append(record)
    if run.log_scalar is not None and run.dist_info.is_main:
        run.log_scalar(f"pretrain/{run.stream}/epoch_loss", record["loss"], epoch)
        run.log_scalar(f"pretrain/{run.stream}/lr", record["lr"], epoch)
        for key in COLLAPSE_KEYS:
            if key in record:
                run.log_scalar(f"pretrain/{run.stream}/epoch_{key}", record[key], epoch)
    complete = epoch == cfg.epochs
    if epoch % cfg.checkpoint_every == 0 or complete:
        _save(run, epoch + 1, 0, complete)
    if run.progress is not None:
        run.progress("epoch", dict(record, epochs=cfg.epochs))
        if warning:
            run.progress("warning", {"message": warning, "stream": run.stream, "epoch": epoch})


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
            eta_s, batch_cosine, effective_rank, negative_cosine), ``epoch``, ``checkpoint``, ``warning``
            (message, stream, epoch: pretraining collapsed; at most once per stream).
        log_scalar: optional ``(tag, value, global_step)`` sink (TensorBoard).
        dist_info: process-group facts (default:
            :func:`~msclr.pipeline.training.distributed.init_distributed`).
        handle_sigint: save a checkpoint on the first Ctrl-C (main thread, single process only).

    Returns:
        :class:`PretrainResult`.

    Raises:
        CheckpointError: a checkpoint exists but ``resume`` is False, or it belongs to a different setup.
    """
    names = list(config.data.skeletons)
    missing = [n for n in names if n not in arrays or n not in skeletons]
    if missing:
        raise MsclrError(f"no training arrays / definitions for {missing}.")
    dist_info = dist_info or init_distributed(device)
    dev = _training_device(device, dist_info)
    ckpt_path = Path(out_dir) / "checkpoints" / CHECKPOINT_NAME
    n_clips = _clip_count(arrays)
    run = _build_run(skeletons, stream, config, n_clips, dev, dist_info, ckpt_path)
    resumed = ckpt_path.exists()
    start_epoch, start_batch = _resume(run, resume)
    run.progress, run.log_scalar = progress, log_scalar
    total_epochs = config.pretrain.epochs
    if progress is not None and resumed:
        progress("stage", {"message": f"resuming from epoch {start_epoch}, step {start_batch} ({stream} stream)"
                           if start_epoch <= total_epochs else
                           f"the {stream} stream's pretraining is complete ({total_epochs} epochs): resuming after it"})
    if progress is not None:
        progress("start", {"stream": stream, "epochs": total_epochs, "start_epoch": start_epoch,
                           "steps_per_epoch": run.steps_per_epoch, "clips": n_clips, "conventions": names,
                           "world_size": dist_info.world_size})
    loader = _make_loader(arrays, run)
    interrupt = _Interrupt()
    run.model.train()
    with interrupt.installed(handle_sigint and not dist_info.enabled):
        for epoch in range(start_epoch, total_epochs + 1):
            _end_epoch(run, _train_epoch(run, loader, epoch, start_batch, interrupt))
            start_batch = 0
    state = {k: v.detach().cpu().clone() for k, v in run.model.encoder_q.state_dict().items()}
    return PretrainResult(state, total_epochs, run.history, ckpt_path if dist_info.is_main else None, run.model)


def load_pretrained_encoder(checkpoint: str | Path) -> dict[str, Any]:
    """``encoder_q`` state dict from a pretraining checkpoint (for linear evaluation of a resumed run)."""
    state = load_checkpoint(checkpoint, kind="pretrain")
    prefix = "encoder_q."
    return {k[len(prefix):]: v for k, v in state["model"].items() if k.startswith(prefix)}


__all__ = ["PretrainResult", "pretrain", "load_pretrained_encoder", "CHECKPOINT_NAME"]
