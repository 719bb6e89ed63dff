"""`msclr train` + `msclr evaluate` end to end on a tiny synthetic two-convention cache (CPU, reduced sizes)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from msclr.cli import cli

CONVS = ("kinectv2_25", "smpl_24")
TINY_RECIPE = """
[data]
skeletons = ["kinectv2_25", "smpl_24"]
length = 24
[model]
hidden_channels = 4
hidden_dim = 16
feature_dim = 8
queue_size = 32
[pretrain]
batch_size = 16
checkpoint_every = 1
[linear]
batch_size = 32
lr = 1.0
"""


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory) -> Path:
    """A cache written through CacheWriter: synthetic clips in two conventions, xsub splits, class names."""
    from tiny_runs import write_cache

    return write_cache(tmp_path_factory.mktemp("cache") / "cache", CONVS)


def _train(cache: Path, out: Path, recipe: Path, *extra: str):
    return CliRunner().invoke(cli, ["train", str(cache), "--out", str(out), "--config", str(recipe), "--epochs", "2",
                                    "--linear-epochs", "5", "--device", "cpu", "--no-tensorboard", "-q", *extra])


def _record_progress(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict]]:
    """Make ``msclr train``'s progress display also record every (event, info) it receives; returns the list."""
    import msclr.console

    events: list[tuple[str, dict]] = []

    class Recording(msclr.console.TrainProgress):
        def __call__(self, event: str, info: dict) -> None:
            events.append((event, dict(info)))
            super().__call__(event, info)

    monkeypatch.setattr(msclr.console, "TrainProgress", Recording)
    return events


def test_train_evaluate_predict_files(tiny_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from msclr.files import load_checkpoint
    from msclr.models.fusion import topk_accuracy
    from msclr.pipeline.cache import Cache
    from msclr.pipeline.preprocess import preprocess_cache
    from msclr.pipeline.trained import load_run

    recipe = tmp_path / "tiny.toml"
    recipe.write_text(TINY_RECIPE)
    run = tmp_path / "run"
    result = _train(tiny_cache, run, recipe, "--stream", "all", "--split", "xsub")
    assert result.exit_code == 0, result.output + repr(result.exception)
    for name in ("run.json", "config.toml", "config.json", "classes.txt", "model.pt", "metrics.json",
                 "test_scores.npz", "report/per_class.json", "report/confusion_fusion_ensemble.png",
                 "skeletons/kinectv2_25.json", "streams/bone/checkpoints/last.pt"):
        assert (run / name).is_file(), name
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "complete" and info["conventions"] == list(CONVS)
    from msclr.pipeline.datasets.synthetic import ACTIONS

    assert info["streams"] == ["joint", "motion", "bone"] and info["classes"] == list(ACTIONS)
    assert info["preprocessing"]["length"] == 24 and info["split"]["test"] == "xsub_val"
    assert info["config"]["pretrain"]["epochs"] == 2 and info["config"]["pretrain"]["lr_steps"] == [2]
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["streams"]) == {"joint", "motion", "bone"}
    assert set(metrics["fusion"]["results"]) == {"kinectv2_25", "smpl_24", "ensemble"}
    assert metrics["fusion"]["weights"] == {"joint": 0.6, "bone": 0.6, "motion": 0.4}
    for stream in metrics["streams"].values():
        assert 0 <= stream["ensemble"]["top1"] <= stream["ensemble"]["top5"] <= 100
    load_checkpoint(run / "model.pt", kind="model")  # weights_only=True inside

    # evaluate prints the table / the JSON
    table = CliRunner().invoke(cli, ["evaluate", str(run)])
    assert table.exit_code == 0 and "skeleton ensemble" in table.output and "3-stream fusion" in table.output
    as_json = CliRunner().invoke(cli, ["evaluate", str(run), "--json"])
    assert as_json.exit_code == 0 and json.loads(as_json.output) == metrics

    # everything predict needs: rebuilding the model from RUN alone reproduces the reported accuracy
    trained = load_run(run)
    cache = Cache(tiny_cache)
    names = [n for n in cache.splits["xsub_val"] if n in set(cache.names)]
    inputs = {c: preprocess_cache(cache, c, names, **{k: v for k, v in info["preprocessing"].items()
                                                      if k in ("length", "centre", "y_rotation")})
              for c in CONVS}
    labels = np.asarray(cache.metadata(names)["label"])
    scores = trained.scores(inputs)
    for stream in ("joint", "bone"):
        got = topk_accuracy(scores["logits"][stream]["smpl_24"], labels, 1)
        assert got == pytest.approx(metrics["streams"][stream]["conventions"]["smpl_24"]["top1"], abs=1e-6)
        got = topk_accuracy(scores["streams"][stream], labels, 1)
        assert got == pytest.approx(metrics["streams"][stream]["ensemble"]["top1"], abs=1e-6)
    assert topk_accuracy(scores["final"], labels, 1) == pytest.approx(metrics["fusion"]["results"]["ensemble"]["top1"])

    # a second train into the same folder must not overwrite it; --resume of a finished run is a no-op
    again = _train(tiny_cache, run, recipe, "--stream", "all", "--split", "xsub")
    assert again.exit_code == 1 and "--resume" in again.output
    events = _record_progress(monkeypatch)
    resumed = _train(tiny_cache, run, recipe, "--stream", "all", "--split", "xsub", "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert json.loads((run / "metrics.json").read_text())["streams"] == metrics["streams"]
    # ... and it really resumed from every stream's last.pt (epoch 3 of 2: done), retraining nothing
    starts = [info for event, info in events if event == "start"]
    assert [(s["stream"], s["start_epoch"]) for s in starts] == [("joint", 3), ("motion", 3), ("bone", 3)]
    assert [info for event, info in events if event in ("step", "epoch", "checkpoint")] == []


def test_axis_input_norm_run_round_trips(tiny_cache: Path, tmp_path: Path) -> None:
    """model.input_norm = "axis" trains, is saved in the run, and predict's rebuilt encoder reproduces the metrics."""
    from msclr.models.fusion import topk_accuracy
    from msclr.models.stgcn import AxisBatchNorm
    from msclr.pipeline.cache import Cache
    from msclr.pipeline.preprocess import preprocess_cache
    from msclr.pipeline.trained import load_run

    recipe = tmp_path / "axis.toml"
    recipe.write_text(TINY_RECIPE.replace("[model]\n", '[model]\ninput_norm = "axis"\n'))
    run = tmp_path / "run"
    result = _train(tiny_cache, run, recipe, "--split", "xsub")
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert json.loads((run / "run.json").read_text())["config"]["model"]["input_norm"] == "axis"
    trained = load_run(run)
    bn = trained.encoders["joint"].conventions["kinectv2_25"].data_bn
    assert isinstance(bn, AxisBatchNorm) and bn.running_var.shape == (3,)
    assert not torch.allclose(bn.running_var, torch.ones(3))  # statistics were learnt, not left at init
    cache = Cache(tiny_cache)
    names = [n for n in cache.splits["xsub_val"] if n in set(cache.names)]
    inputs = {c: preprocess_cache(cache, c, names, length=24) for c in CONVS}
    scores = trained.scores(inputs)
    metrics = json.loads((run / "metrics.json").read_text())
    got = topk_accuracy(scores["streams"]["joint"], np.asarray(cache.metadata(names)["label"]), 1)
    assert got == pytest.approx(metrics["streams"]["joint"]["ensemble"]["top1"], abs=1e-6)
    bad = tmp_path / "bad.toml"
    bad.write_text(TINY_RECIPE.replace("[model]\n", '[model]\ninput_norm = "per_joint"\n'))
    refused = _train(tiny_cache, tmp_path / "r", bad)
    assert refused.exit_code == 1 and "model.input_norm 'per_joint' invalid" in refused.output


def test_bad_split_and_skeleton_errors(tiny_cache: Path, tmp_path: Path) -> None:
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(TINY_RECIPE)
    bad = _train(tiny_cache, tmp_path / "r1", recipe, "--split", "xview")
    assert bad.exit_code == 1 and "xsub_train" in bad.output and "available splits" in bad.output
    bad = _train(tiny_cache, tmp_path / "r2", recipe, "--skeletons", "smplx_42")
    assert bad.exit_code == 1 and "kinectv2_25" in bad.output and "smplx_42" in bad.output
    bad = CliRunner().invoke(cli, ["train", str(tiny_cache), "--out", str(tmp_path / "r3"), "--config", "nope"])
    assert bad.exit_code == 2 and "ntu60_xsub" in bad.output  # an unknown recipe name is a usage error
    bad = CliRunner().invoke(cli, ["train", str(tiny_cache), "--out", str(tmp_path / "r3"), "--config", "cpu_smal"])
    assert bad.exit_code == 2 and "did you mean cpu_small?" in bad.output and not (tmp_path / "r3").exists()
    recipe.write_text("[pretrain]\nlearning_rate = 0.1\n")
    bad = _train(tiny_cache, tmp_path / "r4", recipe)
    assert bad.exit_code == 1 and "unknown key [pretrain].learning_rate" in bad.output
    bad = CliRunner().invoke(cli, ["evaluate", str(tmp_path)])
    assert bad.exit_code == 1 and "not an msclr run" in bad.output


def test_packaged_recipes_load() -> None:
    from msclr.pipeline.config import TrainConfig, load_recipe, recipe_names, to_toml

    assert {"ntu60_xsub", "ntu60_xview", "ntu120_xsub", "ntu120_xset", "cpu_small"} <= set(recipe_names())
    paper = load_recipe("ntu60_xsub")
    assert paper.data.skeletons == ("kinectv2_25", "smplx_42") and paper.data.split == "xsub"
    assert paper.pretrain == TrainConfig().pretrain.__class__(workers=4)
    assert load_recipe("ntu120_xset").data.split == "xset"
    # the resolved config round-trips through TOML
    import tomllib

    from msclr.pipeline.config import config_from_dict

    small = load_recipe("cpu_small")
    assert config_from_dict(tomllib.loads(to_toml(small))) == small
    assert TrainConfig().pretrain.with_epochs(30).lr_steps == (25,)
    assert TrainConfig().pretrain.with_epochs(30).mining_epoch == 15


# The paper's MS-AimCLR settings (arXiv 2508.14889; the authors' released NTU-60 pretext and linear-evaluation
# configs), written out literally: the defaults must not be checked against themselves.
PAPER_PRETRAIN = {"epochs": 300, "lr": 0.1, "lr_steps": (250,), "lr_gamma": 0.1, "batch_size": 128,
                  "weight_decay": 1e-4, "momentum": 0.9, "nesterov": False,
                  "mining_epoch": 150}  # 1-based, mining on for epoch > 150, i.e. from epoch 151
PAPER_MODEL = {"queue_size": 32768, "key_momentum": 0.999, "temperature": 0.07, "feature_dim": 128}
PAPER_LINEAR = {"epochs": 100, "lr": 3.0, "lr_steps": (80,), "lr_gamma": 0.1, "weight_decay": 0.0,
                "momentum": 0.9, "nesterov": False, "batch_size": 128, "report_best": False}
PAPER_FUSION = {"joint": 0.6, "bone": 0.6, "motion": 0.4}


def _check_paper_settings(config, origin: str) -> None:
    for section, expected in (("pretrain", PAPER_PRETRAIN), ("model", PAPER_MODEL), ("linear", PAPER_LINEAR),
                              ("fusion", PAPER_FUSION)):
        got = {key: getattr(getattr(config, section), key) for key in expected}
        assert got == expected, f"{origin} [{section}]"
    pre, lin = config.pretrain, config.linear
    # pretraining lr 0.1 for epochs 1-250, 0.01 for 251-300
    assert [pre.lr_at(e) for e in (1, 250)] == [0.1, 0.1], origin
    assert [pre.lr_at(e) for e in (251, 300)] == pytest.approx([0.01, 0.01], rel=1e-12), origin
    # linear lr 3.0 for epochs 1-80, 0.3 for 81-100
    assert [lin.lr_at(e) for e in (1, 80)] == [3.0, 3.0], origin
    assert [lin.lr_at(e) for e in (81, 100)] == pytest.approx([0.3, 0.3], rel=1e-12), origin


def test_defaults_and_ntu_recipes_are_the_papers_settings() -> None:
    from msclr.pipeline.config import TrainConfig, load_recipe

    _check_paper_settings(TrainConfig(), "TrainConfig()")
    for name in ("ntu60_xsub", "ntu60_xview", "ntu120_xsub", "ntu120_xset"):
        _check_paper_settings(load_recipe(name), f"recipe {name}")
