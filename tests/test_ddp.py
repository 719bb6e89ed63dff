"""Distributed pretraining: 2 CPU processes (gloo) started like torchrun (environment variables)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from msclr.pipeline.config import DataConfig, ModelConfig, PretrainConfig, TrainConfig

CONVS = ("kinectv2_25", "smpl_24")
BATCH, QUEUE, CLIPS = 8, 32, 12  # 24 items -> 3 global steps per epoch


def _config() -> TrainConfig:
    return TrainConfig(
        data=DataConfig(skeletons=CONVS, length=16),
        model=ModelConfig(hidden_channels=4, hidden_dim=16, feature_dim=8, queue_size=QUEUE),
        pretrain=PretrainConfig(epochs=2, batch_size=BATCH, lr_steps=(2,), mining_epoch=1, checkpoint_every=1,
                                seed=3),
    ).validate()


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from msclr.pipeline.training.distributed import init_distributed
    from msclr.pipeline.training.pretrain import pretrain
    from msclr.skeletons import get_skeleton

    info = init_distributed("cpu")  # detects torchrun's variables, gloo on CPU
    assert (info.rank, info.world_size) == (rank, world) and dist.is_initialized()
    rng = np.random.default_rng(0)
    base = rng.normal(scale=0.2, size=(CLIPS, 3, 16, 25, 1)).astype(np.float32)
    arrays = {"kinectv2_25": base, "smpl_24": base[:, :, :, :24]}
    seen: list[tuple[str, str, int]] = []

    def progress(event: str, data: dict) -> None:
        if event == "step":
            seen.append((*data["pair"], data["step"]))

    result = pretrain(arrays, {c: get_skeleton(c) for c in CONVS}, "joint", _config(), Path(out) / "run",
                      dist_info=info, progress=progress)
    model = result.model
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    torch.save({"params": params, "queue": model.queue.clone(), "ptr": model.queue_ptr.clone(), "pairs": seen,
                "checkpoint": None if result.checkpoint is None else str(result.checkpoint)},
               Path(out) / f"rank{rank}.pt")
    dist.barrier()
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not available")
def test_two_process_gloo_pretraining(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    # every step trained the same (q, k) on both ranks
    assert r0["pairs"] == r1["pairs"] and len(r0["pairs"]) == 2 * (2 * CLIPS // BATCH)
    # gradients averaged: identical query encoders (and momentum key encoders) on both ranks
    assert r0["params"].keys() == r1["params"].keys()
    for name in r0["params"]:
        assert torch.allclose(r0["params"][name], r1["params"][name], atol=1e-6), name
    # keys of both ranks all-gathered into one shared queue: the pointer advanced by the GLOBAL batch per step
    steps = len(r0["pairs"])
    assert int(r0["ptr"]) == int(r1["ptr"]) == (steps * BATCH) % QUEUE
    assert torch.allclose(r0["queue"], r1["queue"], atol=1e-6)
    # only rank 0 writes checkpoints
    assert r0["checkpoint"] and r1["checkpoint"] is None
    assert (tmp_path / "run" / "checkpoints" / "last.pt").is_file()
