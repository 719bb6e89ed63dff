"""`msclr demo`: the reduced demo (synthetic cache -> real train_run -> baseline -> prediction) learns well above
chance; the full-size demo is run by hand (`msclr demo`, timing in the report)."""

from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from msclr.cli import cli


def test_quick_demo_beats_chance(tmp_path: Path) -> None:
    from rich.console import Console

    from msclr.console import print_demo
    from msclr.pipeline.datasets.synthetic import ACTIONS
    from msclr.pipeline.demo import CONVENTIONS, QUICK, run_demo
    from msclr.pipeline.predict import predict_skeletons

    events: list[str] = []
    result = run_demo(tmp_path / "demo", size=QUICK, seed=0, threads=1,
                      progress=lambda event, info: events.append(event))
    assert result.out == tmp_path / "demo" and result.run == tmp_path / "demo" / "run"
    assert result.chance == pytest.approx(100 / 6)
    ens = result.top1("ensemble")
    assert ens > 3 * result.chance, result.metrics["streams"]
    assert ens > result.baseline["ensemble"]  # pretraining beats the random-init encoder (97 vs 71 % at seed 0)
    for conv in CONVENTIONS:
        assert result.top1(conv) > 2 * result.chance
    assert set(result.baseline) == {*CONVENTIONS, "ensemble"}
    assert all(0 <= v <= 100 for v in result.baseline.values())
    assert "stage" in events and "step" in events  # train_run's progress events came through
    # a finished, self-contained run that evaluate and predict can use
    info = json.loads((result.run / "run.json").read_text())
    assert info["status"] == "complete" and info["conventions"] == list(CONVENTIONS)
    assert info["classes"] == list(ACTIONS)
    assert CliRunner().invoke(cli, ["evaluate", str(result.run)]).exit_code == 0
    pred = result.prediction
    assert len(pred.top) == 3 and result.true_class == ACTIONS[result.true_label]
    assert result.sample.startswith("synth_") and pred.run == str(result.run)
    from msclr.pipeline.cache import Cache

    again = predict_skeletons(result.run, Cache(result.cache).clip(result.sample).poses, top_k=3)
    assert again.top == pred.top
    # the printed report says the data are synthetic and where the run is
    buffer = io.StringIO()
    print_demo(result, Console(file=buffer, width=200))
    text = buffer.getvalue()
    assert "synthetic" in text.lower() and str(result.run) in text and "chance = 16.7 %" in text


def test_demo_refuses_a_non_empty_out(tmp_path: Path) -> None:
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "file.txt").write_text("x")
    result = CliRunner().invoke(cli, ["demo", "--out", str(tmp_path / "busy")])
    assert result.exit_code == 1 and "not an empty folder" in result.output


def test_demo_recipe_and_threads() -> None:
    from msclr.pipeline.config import load_recipe
    from msclr.pipeline.demo import CONVENTIONS, QUICK, demo_config
    from msclr.pipeline.training.cpu_tuning import pick_threads

    recipe = load_recipe("demo")
    assert tuple(recipe.data.skeletons) == CONVENTIONS and recipe.data.split == "xsub"
    quick = demo_config(QUICK, seed=3)
    assert quick.pretrain.epochs == QUICK.epochs < recipe.pretrain.epochs
    assert quick.pretrain.lr_steps[0] < QUICK.epochs and quick.linear == replace(recipe.linear, seed=3)
    assert quick.pretrain.seed == 3 and quick.linear.seed == 3
    assert pick_threads(3)[0] == 3 and pick_threads(None)[0] >= 1
