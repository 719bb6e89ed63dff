"""`msclr train` options and defaults: the cache's own conventions, skeleton files, the automatic split, threads,
recipe names next to folders of the same name, Ctrl-C and --resume, usage errors (exit 2) and closest-name
suggestions.  Tiny synthetic caches, CPU, a few seconds each."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from tiny_runs import recipe_file, train, write_cache

from msclr.cli import cli

CONVS = ("kinectv2_25", "smpl_24")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Path]:
    """(the tiny recipe, a kinectv2_25 + smpl_24 cache with xsub splits)."""
    root = tmp_path_factory.mktemp("tiny")
    return recipe_file(root), write_cache(root / "cache", CONVS)


@pytest.fixture(scope="module")
def recipe(tiny: tuple[Path, Path]) -> Path:
    return tiny[0]


@pytest.fixture(scope="module")
def cache(tiny: tuple[Path, Path]) -> Path:
    return tiny[1]


@pytest.fixture(scope="module")
def bare(tmp_path_factory) -> Path:
    """smpl_24 only, no splits: neither the recipe's pair nor a split."""
    return write_cache(tmp_path_factory.mktemp("bare") / "cache", ("smpl_24",), splits=False, per_class=5)


def _errors(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("Error:")]


def test_cache_conventions_and_automatic_split(bare: Path, recipe: Path, tmp_path: Path) -> None:
    from msclr.pipeline.cache import Cache

    out = tmp_path / "run"
    result = train(bare, out, recipe)
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())  # progress lines may wrap
    assert "the cache holds no kinectv2_25: training on its conventions smpl_24" in text
    assert "one convention (smpl_24): plain AimCLR" in text
    assert "the cache has no split: made a stratified 80/20 split (seed 0), 24 train / 6 test clips" in text
    info = json.loads((out / "run.json").read_text())
    assert info["conventions"] == ["smpl_24"] and info["config"]["data"]["skeletons"] == ["smpl_24"]
    assert info["split"] == {"train": "auto_train", "test": "auto_test", "train_clips": 24, "test_clips": 6,
                             "automatic": True}
    train_names = (out / "split" / "train.txt").read_text().split()
    test_names = (out / "split" / "test.txt").read_text().split()
    c = Cache(bare)
    assert sorted(train_names + test_names) == sorted(c.names) and not set(train_names) & set(test_names)
    assert sorted(c.metadata(test_names)["label"].tolist()) == list(range(6))  # stratified: 1 of 5 per class
    # --resume reuses the recorded split (not a new draw)
    (out / "split" / "test.txt").write_text("".join(f"{n}\n" for n in test_names[::-1]))
    again = train(bare, out, recipe, "--resume")
    assert again.exit_code == 0, again.output
    assert "made a stratified" not in again.output
    # --skeletons given: no fallback, the missing convention is an error (with the closest name)
    refused = train(bare, tmp_path / "r2", recipe, "--skeletons", "smpl24")
    assert refused.exit_code == 1 and "did you mean smpl_24?" in _errors(refused.output)[0]


def test_skeletons_accepts_a_skeleton_file(cache: Path, recipe: Path, tmp_path: Path) -> None:
    from msclr.skeletons import get_skeleton

    definition = tmp_path / "mine.json"
    definition.write_text(json.dumps(get_skeleton("smpl_24").to_dict()))
    out = tmp_path / "run"
    result = train(cache, out, recipe, "--split", "xsub", "--skeletons", f"{definition},kinectv2_25")
    assert result.exit_code == 0, result.output
    assert json.loads((out / "run.json").read_text())["conventions"] == ["smpl_24", "kinectv2_25"]
    bad = train(cache, tmp_path / "bad", recipe, "--skeletons", str(tmp_path / "missing.toml"))
    assert bad.exit_code == 2 and len(_errors(bad.output)) == 1 and "missing.toml" in bad.output
    assert not (tmp_path / "bad").exists()


def test_threads_follow_the_idle_cores(monkeypatch: pytest.MonkeyPatch, cache: Path, recipe: Path,
                                       tmp_path: Path) -> None:
    import os

    import torch

    from msclr.pipeline.training import cpu_tuning

    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    monkeypatch.setattr(os, "getloadavg", lambda: (5.4, 0.0, 0.0))
    monkeypatch.setattr(torch, "get_num_threads", lambda: 8)
    assert cpu_tuning.pick_threads() == (3, "8 cores, load average 5.4")
    monkeypatch.setattr(os, "getloadavg", lambda: (12.0, 0.0, 0.0))
    assert cpu_tuning.pick_threads()[0] == 1  # overloaded: one thread, never zero
    assert cpu_tuning.pick_threads(4) == (4, "--threads")
    monkeypatch.undo()
    seen: list[int] = []
    monkeypatch.setattr("msclr.pipeline.train._open_data", _spy_threads(seen))
    previous = torch.get_num_threads()
    result = train(cache, tmp_path / "run", recipe, "--split", "xsub", "--threads", "2")
    assert result.exit_code == 0, result.output
    assert "2 CPU threads (--threads)" in result.output and seen == [2]  # while training
    assert torch.get_num_threads() == previous  # given back afterwards
    monkeypatch.undo()
    refused = CliRunner().invoke(cli, ["train", str(cache), "--out", str(tmp_path / "r"), "--threads", "0"])
    assert refused.exit_code == 2


def _spy_threads(seen: list[int]):
    """``train._open_data`` that records torch's thread count when training starts."""
    import torch

    import msclr.pipeline.train as train_module

    real = train_module._open_data

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return real(*args, **kwargs)

    return spy


def test_packaged_recipe_names_win_over_folders(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from msclr.pipeline.config import OptionError, load_recipe

    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo").mkdir()
    (tmp_path / "cpu_small").mkdir()
    assert load_recipe("demo").data.skeletons == ("ntu_kinect_25", "smpl_24")
    assert load_recipe("cpu_small").model.hidden_dim == 64
    (tmp_path / "mine").write_text("[model]\nhidden_dim = 32\n")  # not a packaged name: the file
    assert load_recipe("mine").model.hidden_dim == 32
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "demo.toml").write_text("[model]\nhidden_dim = 24\n")
    assert load_recipe("sub/demo.toml").model.hidden_dim == 24  # a path: the file
    with pytest.raises(OptionError, match=r"recipe file sub/nothing.toml not found"):
        load_recipe("sub/nothing.toml")
    with pytest.raises(OptionError, match=r"did you mean ntu60_xsub\?"):
        load_recipe("ntu60_xsb")


def test_demo_out_demo_writes_after_the_options_are_checked(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """`msclr demo --out demo` in a folder where ./demo is the output: the packaged recipe is used, and the demo
    reaches training with its cache written (the stand-in stops it there)."""
    import msclr.pipeline.train as train_module

    class Reached(Exception):
        pass

    def stop(cache_path, out, config, **kwargs):
        assert config.data.skeletons == ("ntu_kinect_25", "smpl_24") and Path(cache_path).is_dir()
        raise Reached

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(train_module, "train_run", stop)
    from msclr.pipeline.demo import QUICK, run_demo

    with pytest.raises(Reached):
        run_demo("demo", size=QUICK, threads=1)
    assert (tmp_path / "demo" / "cache" / "msclr-cache.json").is_file()
    # a bad recipe inside the demo fails before anything is written
    import msclr.pipeline.demo as demo_module

    def broken(size, seed):
        raise demo_module.MsclrError("recipe broken")

    monkeypatch.setattr(demo_module, "demo_config", broken)
    with pytest.raises(demo_module.MsclrError):
        run_demo(tmp_path / "fresh", size=QUICK, threads=1)
    assert not (tmp_path / "fresh").exists()


def test_ctrl_c_records_interrupted_and_says_add_resume(cache: Path, recipe: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import msclr.console

    class CtrlC(msclr.console.TrainProgress):
        """Presses Ctrl-C (a real SIGINT) during step 2 of pretraining epoch 2."""

        def __call__(self, event: str, info: dict) -> None:
            if event == "step" and (info["epoch"], info["step"]) == (2, 2):
                signal.raise_signal(signal.SIGINT)
            super().__call__(event, info)

    monkeypatch.setattr(msclr.console, "TrainProgress", CtrlC)
    out = tmp_path / "run"
    args = ("--split", "xsub", "--epochs", "3")
    result = train(cache, out, recipe, *args)
    assert result.exit_code == 130
    assert "add --resume to continue it" in result.output
    command = f"msclr train {cache} --out {out} --config {recipe}"
    assert f"{command} --split xsub --epochs 3 --linear-epochs 5" in result.output
    assert result.output.rstrip().endswith("--resume")
    assert json.loads((out / "run.json").read_text())["status"] == "interrupted"
    monkeypatch.undo()
    again = train(cache, out, recipe, *args)  # without --resume: refused, with the command to rerun
    errors = _errors(again.output)
    assert again.exit_code == 1 and len(errors) == 1
    assert "status interrupted" in errors[0] and "add --resume" in errors[0] and errors[0].endswith("--resume")
    resumed = CliRunner().invoke(cli, ["train", str(cache), "--out", str(out), "--config", str(recipe), "--epochs",
                                       "3", "--linear-epochs", "5", "--device", "cpu", "--no-tensorboard",
                                       "--threads", "1", *args, "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert "resuming from epoch 2, step 2 (joint stream)" in resumed.output
    assert json.loads((out / "run.json").read_text())["status"] == "complete"


@pytest.mark.parametrize("extra, needle", [
    (["--protocol", "finetun"], "did you mean finetune?"),
    (["--protocol", "semi"], "semi:0.1"),
    (["--protocol", "semi:1.5"], "between 0 and 1"),
    (["--protocol", "linear,linear"], "twice"),
    (["--stream", "joints"], "did you mean joint?"),
    (["--config", "cpu_smal"], "did you mean cpu_small?"),
    (["--finetune-epochs", "0"], "0"),
])
def test_usage_errors_exit_2_and_write_nothing(cache: Path, tmp_path: Path, extra: list[str], needle: str) -> None:
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["train", str(cache), "--out", str(out), *extra])
    assert result.exit_code == 2, result.output
    errors = _errors(result.output)
    assert len(errors) == 1 and needle in errors[0]
    assert not out.exists()


def test_unknown_split_and_convention_suggest_the_closest(cache: Path, recipe: Path, tmp_path: Path) -> None:
    bad = train(cache, tmp_path / "r1", recipe, "--split", "xsbu")
    assert bad.exit_code == 1 and "did you mean xsub?" in _errors(bad.output)[0]
    bad = train(cache, tmp_path / "r2", recipe, "--skeletons", "kinectv2_26,smpl_24")
    assert bad.exit_code == 1 and "did you mean kinectv2_25?" in _errors(bad.output)[0]
    from msclr.errors import SkeletonError
    from msclr.skeletons import get_skeleton

    with pytest.raises(SkeletonError, match=r"did you mean blazepose_33\?"):
        get_skeleton("blazepose33")


def test_run_folder_records_status_and_refuses_files_of_other_layouts(tmp_path: Path) -> None:
    import torch

    from msclr.errors import CheckpointError
    from msclr.pipeline.rundir import ModelFile, RunInfo, RunStatus

    assert RunStatus.INTERRUPTED == "interrupted"
    older = {"conventions": ["smpl_24"], "skeletons": {}, "model_config": {},
             "streams": {"joint": {"encoder": {"w": torch.ones(2)}, "classifiers": {}}}}
    with pytest.raises(CheckpointError, match="incomplete"):
        ModelFile.from_state(older)  # a layout that never shipped (before protocols): refused, not guessed
    from test_rundir import _info

    data = _info().to_dict()
    assert RunInfo.from_dict(data).interrupted().status == "interrupted"
    data.pop("protocols")
    with pytest.raises(CheckpointError, match="damaged or incomplete"):
        RunInfo.from_dict(data)


def test_evaluation_protocols_in_recipes() -> None:
    from msclr.pipeline.config import ConfigError, FinetuneConfig, config_from_dict, load_recipe

    assert FinetuneConfig() == load_recipe("ntu60_xsub").finetune  # every key listed in the recipe = the defaults
    ft = FinetuneConfig()
    assert (ft.lr, ft.momentum, ft.nesterov, ft.weight_decay, ft.lr_steps, ft.epochs) == (0.01, 0.9, True, 1e-4, (), 100)
    assert load_recipe("ntu60_xsub").evaluation.protocols == ("linear",)
    small = load_recipe("cpu_small").finetune
    assert (small.batch_size, small.lr, small.epochs) == (32, 0.05, 100)  # measured on UTD-MHAD (the recipe says)
    config = config_from_dict({"evaluation": {"protocols": ["linear", "semi:.010"]}}).validate()
    assert config.evaluation.protocols == ("linear", "semi:0.01")  # canonical names
    with pytest.raises(ConfigError, match="evaluation.protocols"):
        config_from_dict({"evaluation": {"protocols": ["fine"]}}).validate()
    assert np.isclose(FinetuneConfig(lr_steps=(80,)).with_epochs(20).lr_at(17), 0.001)
