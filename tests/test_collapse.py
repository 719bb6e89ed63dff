"""Collapse signals of pretraining (batch cosine, effective rank, negative cosine), the once-per-stream collapse
warning, and a tiny `cpu_small` run that collapses and says so (progress event, history, metrics.json, console)."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from tiny_runs import write_cache

from msclr.pipeline.training.collapse import (
    COSINE_THRESHOLD,
    FIRST_EPOCH,
    CollapseMonitor,
    collapse_signals,
    rank_threshold,
)


# ------------------------------------------------------------------ collapse_signals
def test_identical_embeddings_are_fully_collapsed() -> None:
    e = torch.nn.functional.normalize(torch.ones(8, 16), dim=1)
    s = collapse_signals(e)
    assert s["batch_cosine"] == pytest.approx(1.0)
    assert s["effective_rank"] == pytest.approx(1.0)
    assert "negative_cosine" not in s


def test_orthonormal_embeddings_span_the_batch() -> None:
    e = torch.eye(6, 10)  # 6 orthonormal rows in 10 dimensions
    s = collapse_signals(e, negatives=torch.eye(10)[:, 6:])  # negatives orthogonal to every embedding
    assert s["batch_cosine"] == pytest.approx(0.0, abs=1e-12)
    assert s["effective_rank"] == pytest.approx(6.0)
    assert s["negative_cosine"] == pytest.approx(0.0, abs=1e-12)


def test_hand_computed_case() -> None:
    r = 1 / math.sqrt(2)
    e = torch.tensor([[1.0, 0.0], [0.0, 1.0], [r, r]])
    s = collapse_signals(e, negatives=torch.eye(2))
    # off-diagonal cosines: 0, r, r (each twice) -> mean 2r / 3
    assert s["batch_cosine"] == pytest.approx(2 * r / 3)
    # E^T E = [[1.5, 0.5], [0.5, 1.5]] has eigenvalues 2 and 1: singular values sqrt(2) and 1
    p = torch.tensor([math.sqrt(2), 1.0]) / (1 + math.sqrt(2))
    assert s["effective_rank"] == pytest.approx(math.exp(-float((p * p.log()).sum())))
    assert s["effective_rank"] == pytest.approx(1.9707, abs=1e-4)
    # E @ I = E: mean of its entries
    assert s["negative_cosine"] == pytest.approx((2 + 2 * r) / 6)


def test_signals_take_no_gradient_and_accept_a_single_row() -> None:
    e = torch.nn.functional.normalize(torch.randn(1, 4, requires_grad=True), dim=1)
    s = collapse_signals(e)
    assert s == {"batch_cosine": 1.0, "effective_rank": pytest.approx(1.0)}
    assert all(isinstance(v, float) for v in s.values())


# ------------------------------------------------------------------ CollapseMonitor
COLLAPSED = {"batch_cosine": 0.97, "effective_rank": 1.3, "negative_cosine": 0.95}
HEALTHY = {"batch_cosine": 0.05, "effective_rank": 20.0, "negative_cosine": 0.01}


def test_monitor_averages_each_epoch_and_resets() -> None:
    monitor = CollapseMonitor("joint", batch=32, dim=64)
    assert monitor.epoch_summary() == {}
    monitor.add({"batch_cosine": 0.5, "effective_rank": 2.0})
    monitor.add({"batch_cosine": 0.7, "effective_rank": 4.0})
    assert monitor.epoch_summary() == pytest.approx({"batch_cosine": 0.6, "effective_rank": 3.0})
    assert monitor.epoch_summary() == {}


def test_monitor_warns_once_from_the_second_epoch_with_a_message_for_users() -> None:
    monitor = CollapseMonitor("joint", batch=64, dim=64)
    assert FIRST_EPOCH == 2
    assert monitor.check(1, COLLAPSED) is None  # the first epoch mostly measures the initial cone
    message = monitor.check(3, COLLAPSED)
    assert message is not None
    for part in ("joint stream collapsed", "mean cosine 0.970", "effective rank 1.3 of 64", "at epoch 3",
                 "random encoder", "--config small_data", "lower the learning rate", "raise the temperature"):
        assert part in message, (part, message)
    assert monitor.check(4, COLLAPSED) is None and monitor.check(5, COLLAPSED) is None  # once per stream


def test_monitor_is_silent_below_the_thresholds() -> None:
    monitor = CollapseMonitor("bone", batch=32, dim=64)
    for epoch in range(1, 10):
        assert monitor.check(epoch, HEALTHY) is None
    assert monitor.check(10, {**HEALTHY, "batch_cosine": COSINE_THRESHOLD - 0.01}) is None
    assert monitor.check(11, {**HEALTHY, "effective_rank": rank_threshold(32, 64) + 0.1}) is None
    assert monitor.check(12, {}) is None  # an epoch without steps (resumed at its end)


def test_monitor_lets_a_run_leave_the_initial_cone() -> None:
    """High but falling cosine (0.97 -> 0.95 -> 0.93) is a run leaving the reference head's initial cone."""
    monitor = CollapseMonitor("joint", batch=128, dim=128)
    for epoch, cosine in enumerate((0.97, 0.95, 0.93, 0.91), 1):
        assert monitor.check(epoch, {"batch_cosine": cosine, "effective_rank": 15.0}) is None
    assert monitor.check(5, {"batch_cosine": 0.92, "effective_rank": 15.0}) is not None  # back up: stuck


def test_monitor_rank_threshold_catches_dimensional_collapse() -> None:
    assert rank_threshold(32, 64) == pytest.approx(1.6) and rank_threshold(4, 8) == 1.5
    assert rank_threshold(128, 128) == pytest.approx(6.4)
    monitor = CollapseMonitor("motion", batch=128, dim=128)
    monitor.check(1, {"batch_cosine": 0.2, "effective_rank": 30.0})
    message = monitor.check(2, {"batch_cosine": 0.2, "effective_rank": 5.0})  # opposite directions: low cosine
    assert message is not None and "effective rank 5.0 of 128" in message


def test_monitor_after_a_resumed_history() -> None:
    warned = [{"epoch": 1, "batch_cosine": 0.99}, {"epoch": 2, "batch_cosine": 1.0, "collapse_warning": "..."}]
    assert CollapseMonitor.after("joint", 32, 64, warned).check(3, COLLAPSED) is None
    silent = [{"epoch": 1, "batch_cosine": 0.99}, {"epoch": 2, "batch_cosine": 0.98}]
    assert CollapseMonitor.after("joint", 32, 64, silent).check(3, COLLAPSED) is not None
    leaving = [{"epoch": 1, "batch_cosine": 0.99}]  # the previous cosine comes from the history
    assert CollapseMonitor.after("joint", 32, 64, leaving).check(2, {**COLLAPSED, "effective_rank": 9.0}) is None


# ------------------------------------------------------------------ console
def test_train_progress_shows_signals_and_each_warning_once() -> None:
    from rich.console import Console

    from msclr.console import TrainProgress

    buffer = io.StringIO()
    out = Console(file=buffer, width=200, force_terminal=False)
    with TrainProgress(out, quiet=True) as progress:
        progress("start", {"stream": "joint", "epochs": 2, "steps_per_epoch": 1, "start_epoch": 1, "clips": 40,
                           "conventions": ["a", "b"]})
        progress("step", {"epoch": 1, "epochs": 2, "step": 1, "steps": 1, "loss": 9.0, "lr": 0.1,
                          "samples_per_s": 10.0, "eta_s": 1.0, "batch_cosine": 0.974, "effective_rank": 1.31,
                          "negative_cosine": 0.9})
        assert "cos 0.97 rank 1.3" in progress.bar.tasks[0].fields["info"]
        for _ in range(2):
            progress("warning", {"message": "pretraining of the joint stream collapsed", "stream": "joint",
                                 "epoch": 2})
    assert buffer.getvalue().count("warning: pretraining of the joint stream collapsed") == 1


# ------------------------------------------------------------------ a tiny run
@dataclass
class TinyPretrain:
    """What :func:`run_tiny_pretrain` saw: the progress events, the pretraining history of the joint stream
    (per-epoch records, read from its checkpoint), ``metrics.json`` and the run folder."""

    events: list[tuple[str, dict[str, Any]]]
    history: list[dict[str, Any]]
    metrics: dict[str, Any]
    run: Path

    def warnings(self) -> list[dict[str, Any]]:
        """The ``warning`` events' infos."""
        return [info for event, info in self.events if event == "warning"]


def run_tiny_pretrain(recipe: str, root: Path, *, epochs: int = 2) -> TinyPretrain:
    """``recipe`` (a packaged recipe's name, e.g. ``cpu_small``) on a tiny synthetic cache (kinectv2_25 + smpl_24,
    4 subjects, enough training clips for two batches), ``epochs`` pretraining epochs of the joint stream, one
    linear epoch, through :func:`msclr.pipeline.train.train_run` (a few seconds on one thread).

    The helper for "the recipe collapses / stays healthy on tiny data" tests: ``run_tiny_pretrain("small_data",
    tmp_path).warnings() == []``.
    """
    from msclr.files import load_checkpoint
    from msclr.pipeline.config import load_recipe, resolve_config
    from msclr.pipeline.train import train_run

    batch = load_recipe(recipe).pretrain.batch_size
    per_class = max(12, -(-(batch + 4) // 3))  # training clips: subjects 1 and 3 of 4, 6 classes = 3 * per_class
    cache = write_cache(root / "cache", ("kinectv2_25", "smpl_24"), per_class=per_class)
    config, _ = resolve_config(recipe, stream="joint", epochs=epochs, linear_epochs=1, protocols="linear")
    events: list[tuple[str, dict[str, Any]]] = []
    run = root / "run"
    metrics = train_run(cache, run, config, tensorboard=False, handle_sigint=False,
                        progress=lambda event, info: events.append((event, dict(info))))
    history = load_checkpoint(run / "streams" / "joint" / "checkpoints" / "last.pt", kind="pretrain")["history"]
    return TinyPretrain(events, history, metrics, run)


def test_cpu_small_on_tiny_data_collapses_and_says_so(tmp_path: Path) -> None:
    """Measured (seed 0, 2 steps per epoch): batch cosine 0.992 / 0.999, effective rank 3.5 / 1.9 (of 32) in
    epochs 1 / 2: the embeddings of different clips end on one direction; the warning fires at epoch 2."""
    from click.testing import CliRunner

    from msclr.cli import cli

    tiny = run_tiny_pretrain("cpu_small", tmp_path)
    steps = [info for event, info in tiny.events if event == "step"]
    assert steps and all({"batch_cosine", "effective_rank", "negative_cosine"} <= set(s) for s in steps)
    assert [h["epoch"] for h in tiny.history] == [1, 2]
    assert all(h["batch_cosine"] >= COSINE_THRESHOLD for h in tiny.history), tiny.history
    (warning,) = tiny.warnings()
    assert warning["stream"] == "joint" and warning["epoch"] == 2
    assert "joint stream collapsed" in warning["message"] and "small_data" in warning["message"]
    assert "collapse_warning" not in tiny.history[0]
    assert tiny.history[1]["collapse_warning"] == warning["message"]
    # the epoch event precedes the warning, and the warning comes once
    names = [event for event, _ in tiny.events]
    assert names.index("warning") > [i for i, n in enumerate(names) if n == "epoch"][1]
    record = tiny.metrics["pretrain"]["joint"]
    assert record["collapse_warning"] == warning["message"]
    assert record["batch_cosine"] == pytest.approx(tiny.history[-1]["batch_cosine"])
    shown = CliRunner().invoke(cli, ["evaluate", str(tiny.run)])  # msclr evaluate repeats it under the table
    assert shown.exit_code == 0 and "warning: pretraining of the joint stream collapsed" in shown.output

def test_small_data_on_the_same_tiny_data_stays_silent(tmp_path: Path) -> None:
    """The opt-in small_data recipe (BatchNorm head, in-batch negatives) keeps different clips apart on the same
    tiny data: no warning, and every epoch's batch cosine far below the threshold."""
    tiny = run_tiny_pretrain("small_data", tmp_path)
    assert tiny.warnings() == []
    assert [h["epoch"] for h in tiny.history] == [1, 2]
    assert all(h["batch_cosine"] < 0.5 and "collapse_warning" not in h for h in tiny.history), tiny.history
    assert tiny.metrics["pretrain"]["joint"]["collapse_warning"] is None
