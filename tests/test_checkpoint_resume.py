"""Checkpoints: weights_only-safe, atomic; a killed and resumed pretraining ends with the same weights."""

from __future__ import annotations

import os
import random
import signal
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from msclr.errors import CheckpointError
from msclr.files import load_checkpoint, save_checkpoint
from msclr.pipeline.config import DataConfig, ModelConfig, PretrainConfig, TrainConfig
from msclr.pipeline.training.checkpoint import capture_rng, restore_rng
from msclr.pipeline.training.pretrain import load_pretrained_encoder, pretrain
from msclr.skeletons import get_skeleton

CONVS = ("kinectv2_25", "smpl_24")


class Payload:
    """Stands for any pickled object; its __reduce__ would run a command if unpickled unrestricted."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


# ------------------------------------------------------------------ file format
def test_roundtrip_plain_types_and_tensors(tmp_path: Path) -> None:
    state = {"a": torch.arange(5), "nested": {"x": [1, 2.5, "s", None, True], "t": (torch.ones(2), 3)}}
    path = save_checkpoint(tmp_path / "c.pt", state, kind="test")
    loaded = load_checkpoint(path, kind="test")
    assert torch.equal(loaded["a"], state["a"]) and loaded["nested"]["x"] == [1, 2.5, "s", None, True]
    assert loaded["format"] == "msclr-checkpoint" and loaded["kind"] == "test"
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temp file left behind


def test_pickle_payload_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"format": "msclr-checkpoint", "version": 1, "kind": "pretrain", "x": Payload(str(marker))}, path)
    with pytest.raises(CheckpointError, match="refusing to load"):
        load_checkpoint(path)
    assert not marker.exists()


def test_foreign_truncated_and_wrong_kind(tmp_path: Path) -> None:
    torch.save({"weights": torch.ones(1)}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not an msclr checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    good = save_checkpoint(tmp_path / "good.pt", {"w": torch.ones(3)}, kind="model")
    with pytest.raises(CheckpointError, match="expected 'pretrain'"):
        load_checkpoint(good, kind="pretrain")
    (tmp_path / "trunc.pt").write_bytes(good.read_bytes()[:40])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(tmp_path / "trunc.pt")
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "none.pt")


def test_rng_states_roundtrip_through_weights_only(tmp_path: Path) -> None:
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    np.random.normal()  # has_gauss / cached gaussian
    random.gauss(0, 1)
    save_checkpoint(tmp_path / "rng.pt", {"rng": capture_rng()}, kind="rng")
    first = (torch.rand(3), np.random.rand(3), np.random.normal(), random.random(), random.gauss(0, 1))
    restore_rng(load_checkpoint(tmp_path / "rng.pt")["rng"])
    second = (torch.rand(3), np.random.rand(3), np.random.normal(), random.random(), random.gauss(0, 1))
    assert torch.equal(first[0], second[0]) and np.array_equal(first[1], second[1])
    assert first[2:] == second[2:]


# ------------------------------------------------------------------ resume
def _setup(epochs: int = 4) -> tuple[dict, dict, TrainConfig]:
    rng = np.random.default_rng(0)
    n = 24
    base = rng.normal(scale=0.2, size=(n, 3, 16, 25, 1)).astype(np.float32)
    arrays = {"kinectv2_25": base, "smpl_24": base[:, :, :, :24] + 0.01}
    skeletons = {c: get_skeleton(c) for c in CONVS}
    config = TrainConfig(
        data=DataConfig(skeletons=CONVS, length=16),
        model=ModelConfig(hidden_channels=4, hidden_dim=16, feature_dim=8, queue_size=16),
        pretrain=PretrainConfig(epochs=epochs, batch_size=8, lr_steps=(3,), mining_epoch=2, checkpoint_every=1,
                                seed=7),
    ).validate()
    return arrays, skeletons, config


def _same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key].float(), b[key].float(), atol=1e-6, rtol=0), key


class _Events:
    """A progress sink that records every pretraining event (event name, info)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict]] = []

    def __call__(self, event: str, info: dict) -> None:
        self.events.append((event, dict(info)))

    def of(self, name: str) -> list[dict]:
        return [info for event, info in self.events if event == name]

    def steps(self) -> list[tuple[int, int]]:
        """(epoch, 1-based step) of every optimiser step, in order."""
        return [(info["epoch"], info["step"]) for info in self.of("step")]


def _assert_resumed_from(events: _Events, epoch: int, next_batch: int, total_epochs: int) -> None:
    """The run resumed at checkpoint position (``epoch``, ``next_batch`` steps already done in it): its start
    event says so, its first step is the next one, no earlier step ran again and every later step ran once."""
    (start,) = events.of("start")
    assert start["start_epoch"] == epoch, start
    spe = start["steps_per_epoch"]
    expected = [(e, s) for e in range(epoch, total_epochs + 1) for s in range(1, spe + 1) if (e, s) > (epoch, next_batch)]
    steps = events.steps()
    assert all(step > (epoch, next_batch) for step in steps), f"steps before the checkpoint ran again: {steps}"
    assert steps == expected, steps


def test_killed_and_resumed_run_ends_with_the_same_weights(tmp_path: Path) -> None:
    arrays, skeletons, config = _setup()
    full = pretrain(arrays, skeletons, "bone", config, tmp_path / "full")
    assert [h["epoch"] for h in full.history] == [1, 2, 3, 4]
    assert [h["mining"] for h in full.history] == [False, False, True, True]

    class Killed(Exception):
        pass

    def kill_after_epoch_2(event: str, info: dict) -> None:
        if event == "epoch" and info["epoch"] == 2:
            raise Killed

    with pytest.raises(Killed):
        pretrain(arrays, skeletons, "bone", config, tmp_path / "resumed", progress=kill_after_epoch_2)
    ckpt = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt", kind="pretrain")
    assert ckpt["epoch"] == 3 and not ckpt["complete"]
    with pytest.raises(CheckpointError, match="--resume"):
        pretrain(arrays, skeletons, "bone", config, tmp_path / "resumed")
    other = replace(config, pretrain=replace(config.pretrain, lr=0.05))
    with pytest.raises(CheckpointError, match="pretrain.lr"):
        pretrain(arrays, skeletons, "bone", other, tmp_path / "resumed", resume=True)
    events = _Events()
    resumed = pretrain(arrays, skeletons, "bone", config, tmp_path / "resumed", resume=True, progress=events)
    # it continued from last.pt (epoch 3, step 1), not from epoch 1: epochs 1-2 were not trained again
    _assert_resumed_from(events, 3, 0, 4)
    assert [info["epoch"] for info in events.of("epoch")] == [3, 4]
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3, 4]
    _same_state(full.encoder_state, resumed.encoder_state)
    a = load_checkpoint(tmp_path / "full" / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")["model"]
    _same_state(a, b)  # both encoders, the queue and its pointer
    _same_state(load_pretrained_encoder(tmp_path / "full" / "checkpoints" / "last.pt"), full.encoder_state)
    # training changed the weights (the comparison is not trivially true)
    _, _, fresh_cfg = _setup(epochs=1)
    one = pretrain(arrays, skeletons, "bone", fresh_cfg, tmp_path / "one")
    assert any(not torch.allclose(one.encoder_state[k].float(), full.encoder_state[k].float(), atol=1e-4)
               for k in full.encoder_state)
    # a complete run resumes to a no-op: it starts after the last epoch and runs no step
    events = _Events()
    again = pretrain(arrays, skeletons, "bone", config, tmp_path / "full", resume=True, progress=events)
    _same_state(full.encoder_state, again.encoder_state)
    assert events.of("start")[0]["start_epoch"] == 5 and events.steps() == [] and events.of("epoch") == []


def test_ctrl_c_mid_epoch_saves_and_resumes_exactly(tmp_path: Path) -> None:
    arrays, skeletons, config = _setup(epochs=2)
    config = replace(config, pretrain=replace(config.pretrain, checkpoint_every=5))
    full = pretrain(arrays, skeletons, "joint", config, tmp_path / "full")

    def interrupt_at_step(event: str, info: dict) -> None:
        if event == "step" and info["epoch"] == 1 and info["step"] == 3:
            os.kill(os.getpid(), signal.SIGINT)  # as if the user pressed Ctrl-C during step 3

    with pytest.raises(KeyboardInterrupt):
        pretrain(arrays, skeletons, "joint", config, tmp_path / "cut", progress=interrupt_at_step)
    ckpt = load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.pt")
    assert (ckpt["epoch"], ckpt["start_batch"]) == (1, 3)
    events = _Events()
    resumed = pretrain(arrays, skeletons, "joint", config, tmp_path / "cut", resume=True, progress=events)
    # mid-epoch resume: the first step is step 4 of epoch 1; steps 1-3 of epoch 1 did not run again
    _assert_resumed_from(events, 1, 3, 2)
    assert events.steps()[0] == (1, 4)
    _same_state(full.encoder_state, resumed.encoder_state)
