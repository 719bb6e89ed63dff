"""A real kill: ``msclr train`` in a subprocess, SIGKILLed at a seeded random pretraining step and, once resumed,
SIGKILLed again in the middle of a checkpoint write, then resumed to the end, equals an uninterrupted run.

The kill points are made exact with the test hook :func:`msclr.files.pause_point` (inert unless
``$MSCLR_TEST_PAUSE`` is set): the process creates a marker file and sleeps at the requested point, and the test
sends SIGKILL (no handler, no ``finally``, no atexit runs).  CPU, one thread, fixed seed: the resumed run ends
with bit-identical weights, test logits and accuracies.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_runs import TINY_RECIPE

from msclr.files import load_checkpoint

REPO = Path(__file__).resolve().parents[1]
CONVS = ("kinectv2_25", "smpl_24")
EPOCHS = 4  # --epochs 4 stretches the paper's schedule: lr step after epoch 3, mining from epoch 3
SEED = 6  # picks the kill points: step 2 (of 3) of epoch 2, then (resumed) the write of epoch 3's checkpoint
RECIPE = TINY_RECIPE.replace("batch_size = 16\ncheckpoint_every", "batch_size = 8\ncheckpoint_every")
"""tiny_runs' recipe with pretraining in batches of 8 (more steps per epoch to kill at)."""
WAIT_S = 120  # a stuck subprocess fails the test instead of hanging it


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tiny_runs import write_cache

    return write_cache(tmp_path_factory.mktemp("cache") / "cache", CONVS)


class _Runs:
    """``msclr train`` subprocesses (output to log files, so nothing blocks on a full pipe); any still alive at
    the end of the test is killed."""

    def __init__(self, cache: Path, recipe: Path, logs: Path) -> None:
        self.cache, self.recipe, self.logs = cache, recipe, logs
        self.procs: list[tuple[subprocess.Popen, Path]] = []

    def start(self, out: Path, *extra: str, pause: str | None = None, marker: Path | None = None) -> subprocess.Popen:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MSCLR_TEST_PAUSE")}
        env.update(PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", COLUMNS="200", NO_COLOR="1")
        if pause:
            env.update(MSCLR_TEST_PAUSE=pause, MSCLR_TEST_PAUSE_MARKER=str(marker))
        cmd = [sys.executable, "-m", "msclr", "train", str(self.cache), "--out", str(out), "--config",
               str(self.recipe), "--split", "xsub", "--epochs", str(EPOCHS), "--linear-epochs", "5", "--device",
               "cpu", "--no-tensorboard", *extra]
        log = self.logs / f"run{len(self.procs)}.log"
        with open(log, "w") as handle:
            proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT)
        self.procs.append((proc, log))
        return proc

    def log(self, proc: subprocess.Popen) -> str:
        return next(log for p, log in self.procs if p is proc).read_text()

    def finish(self, proc: subprocess.Popen) -> str:
        """Wait for a run that must succeed; returns its output (progress lines)."""
        try:
            proc.wait(timeout=WAIT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"msclr train did not finish in {WAIT_S} s:\n{self.log(proc)[-3000:]}")
        assert proc.returncode == 0, self.log(proc)[-3000:]
        return self.log(proc)

    def kill_at_marker(self, proc: subprocess.Popen, marker: Path) -> str:
        """Wait until the run reaches its pause point, SIGKILL it; returns its output."""
        deadline = time.monotonic() + WAIT_S
        while not marker.exists():
            if proc.poll() is not None:
                pytest.fail(f"the run ended (exit {proc.returncode}) before its kill point:\n{self.log(proc)[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"the run did not reach its kill point in {WAIT_S} s")
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=WAIT_S) == -signal.SIGKILL
        return self.log(proc)

    def close(self) -> None:
        for proc, _ in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.fixture
def runs(cache: Path, tmp_path: Path):
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(RECIPE)
    logs = tmp_path / "logs"
    logs.mkdir()
    runs = _Runs(cache, recipe, logs)
    yield runs
    runs.close()


def _steps_per_epoch(cache: Path) -> int:
    """Pretraining steps per epoch: the training clips of the cache in whole batches of 8."""
    from msclr.pipeline.cache import Cache

    steps = len(Cache(cache).splits["xsub_train"]) // 8
    assert steps >= 3  # a kill can land inside an epoch
    return steps


def _epochs_trained(stderr: str) -> list[int]:
    """The pretraining epochs a run finished, from its ``epoch E/N: loss ...`` progress lines."""
    return [int(e) for e in re.findall(rf"epoch (\d+)/{EPOCHS}: loss", stderr)]


def _same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_sigkilled_twice_and_resumed_equals_uninterrupted(runs: _Runs, cache: Path, tmp_path: Path) -> None:
    ref_dir, run = tmp_path / "ref", tmp_path / "run"
    ckpt = run / "streams" / "joint" / "checkpoints" / "last.pt"
    reference = runs.start(ref_dir)  # the uninterrupted run, alongside the interrupted one

    # kill 1: a seeded random step of epoch 2..EPOCHS-1 (last.pt then holds the end of the epoch before)
    rng = random.Random(SEED)
    kill_epoch = rng.randint(2, EPOCHS - 1)
    kill_step = rng.randint(1, _steps_per_epoch(cache))
    marker = tmp_path / "kill1"
    out = runs.kill_at_marker(runs.start(run, pause=f"step:{kill_epoch}:{kill_step}", marker=marker), marker)
    assert _epochs_trained(out) == list(range(1, kill_epoch))
    state = load_checkpoint(ckpt, kind="pretrain")
    assert (state["epoch"], state["start_batch"], state["complete"]) == (kill_epoch, 0, False)
    history_before = state["history"]
    assert [h["epoch"] for h in history_before] == list(range(1, kill_epoch))

    # kill 2: resumed, then killed inside its k-th write of last.pt (temporary file complete, not renamed yet)
    k = rng.randint(1, EPOCHS - kill_epoch + 1)
    cut = kill_epoch + k - 1  # the epoch whose checkpoint is being written
    marker = tmp_path / "kill2"
    second = runs.start(run, "--resume", pause=f"replace:last.pt#{k}", marker=marker)
    out = runs.kill_at_marker(second, marker)
    assert _epochs_trained(out) == list(range(kill_epoch, cut))  # (an epoch's line follows its checkpoint)
    partial = load_checkpoint(ckpt.with_name(f".last.pt.{second.pid}.partial"), kind="pretrain")
    assert partial["epoch"] == cut + 1  # the write of epoch cut's checkpoint really was cut short
    assert partial["history"][: kill_epoch - 1] == history_before  # resumed at kill_epoch, epochs before kept
    state = load_checkpoint(ckpt, kind="pretrain")  # last.pt is still the previous, intact checkpoint
    assert (state["epoch"], state["start_batch"]) == (cut, 0)

    # resumed to the end
    out = runs.finish(runs.start(run, "--resume"))
    assert _epochs_trained(out) == list(range(cut, EPOCHS + 1))  # from the last checkpoint, not from scratch
    runs.finish(reference)
    final = load_checkpoint(ckpt, kind="pretrain")
    ref_final = load_checkpoint(ref_dir / "streams" / "joint" / "checkpoints" / "last.pt", kind="pretrain")
    assert final["complete"] and [h["epoch"] for h in final["history"]] == list(range(1, EPOCHS + 1))
    # the epochs trained before the first kill were kept (their records, wall times included), not retrained
    assert final["history"][: kill_epoch - 1] == history_before
    assert [h["loss"] for h in final["history"]] == [h["loss"] for h in ref_final["history"]]

    # same weights (both encoders, queue, pointer) and same accuracies as the uninterrupted run, exactly
    _same(final["model"], ref_final["model"])
    assert json.loads((run / "metrics.json").read_text())["streams"] == \
        json.loads((ref_dir / "metrics.json").read_text())["streams"]
    scores, ref_scores = (np.load(d / "test_scores.npz") for d in (run, ref_dir))
    assert sorted(scores.files) == sorted(ref_scores.files)
    for key in scores.files:  # every test logit of every linear classifier
        assert np.array_equal(scores[key], ref_scores[key]), key
    model, ref_model = (load_checkpoint(d / "model.pt", kind="model") for d in (run, ref_dir))
    _same(model["protocols"]["linear"]["joint"]["encoder"], ref_model["protocols"]["linear"]["joint"]["encoder"])
    assert json.loads((run / "run.json").read_text())["status"] == "complete"
