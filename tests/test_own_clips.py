"""A practitioner's path end to end, reduced: real clips in class folders -> MediaPipe extraction -> training
with the linear and fine-tuned protocols and no split given -> evaluation -> prediction of a clip.

Four real clips from the shared data, two per class folder, cut to their first frames; a tiny recipe keeps
training to seconds.  What is checked is the path and what each command reports (class names from the
folders, an automatic split, a row group per protocol, the protocol used by predict), not accuracy.
Skips without the shared data (without mediapipe it fails under CI=true).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import require_file, require_module

from msclr.cli import cli

pytestmark = pytest.mark.mediapipe

CLASSES = {
    "tai_chi": ("ta_chi.mp4", "exercise_three_people.avi"),
    "walk_in": ("S001C001P001R001A001_rgb.avi", "ntu_sample_two_people.avi"),
}
TINY_RECIPE = """
[data]
length = 16
[model]
hidden_channels = 4
hidden_dim = 16
feature_dim = 8
queue_size = 8
[pretrain]
epochs = 2
batch_size = 2
checkpoint_every = 2
[linear]
epochs = 5
batch_size = 8
[finetune]
epochs = 3
batch_size = 2
"""


def _invoke(*args: str):  # noqa: ANN202
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, (args, result.output, result.exception)
    return result


def test_class_folders_to_a_fine_tuned_prediction(shared_data: Path, tmp_path: Path) -> None:
    require_module("mediapipe")
    clips = tmp_path / "my_clips"
    for label, names in CLASSES.items():
        (clips / label).mkdir(parents=True)
        for name in names:
            shutil.copy(require_file(shared_data, f"videos/{name}"), clips / label / name)
    cache, run = tmp_path / "cache", tmp_path / "run"
    _invoke("extract", str(clips), "--out", str(cache), "--extractor", "mediapipe", "--max-people", "1",
            "--limit-frames", "40")

    info = json.loads(_invoke("info", str(cache), "--json").stdout)
    assert info["classes"]["names"] == sorted(CLASSES)  # class names from the folders, sorted
    assert info["clips"] == 4 and not info["splits"]

    recipe = tmp_path / "tiny.toml"
    recipe.write_text(TINY_RECIPE)
    trained = _invoke("train", str(cache), "--out", str(run), "--config", str(recipe), "--skeletons", "blazepose_33",
                      "--protocol", "linear,finetune", "--device", "cpu", "--no-tensorboard", "-q", "--threads", "1")
    text = " ".join(trained.output.split())  # progress lines may wrap
    assert "the cache has no split: made a stratified 80/20 split" in text  # the automatic split is announced
    run_info = json.loads((run / "run.json").read_text())
    assert run_info["split"]["automatic"] and run_info["status"] == "complete"
    train_names, test_names = ((run / "split" / f"{side}.txt").read_text().split() for side in ("train", "test"))
    assert train_names and test_names and not set(train_names) & set(test_names)  # the split is recorded
    assert len(train_names) + len(test_names) <= info["clips"]

    metrics = json.loads(_invoke("evaluate", str(run), "--json").stdout)
    assert "streams" in metrics and "finetune" in metrics["protocols"]  # linear at the top, finetune beside it
    table = _invoke("evaluate", str(run)).output
    assert "finetune" in table

    clip = clips / "tai_chi" / "ta_chi.mp4"
    prediction = json.loads(_invoke("predict", str(clip), "--model", str(run), "--extractor", "mediapipe",
                                    "--json", "--device", "cpu").stdout)
    assert prediction["protocol"] == "finetune"  # the fine-tuned model when the run has one
    assert prediction["top_k"][0]["class"] in CLASSES
