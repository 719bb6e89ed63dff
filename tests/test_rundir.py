"""The typed run folder (msclr/pipeline/rundir.py): run.json and model.pt round trips and refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from msclr.errors import CheckpointError
from msclr.pipeline.rundir import (
    RUN_FORMAT,
    Fusion,
    ModelFile,
    Preprocessing,
    RunFolder,
    RunInfo,
    RunStatus,
    SplitInfo,
    StreamWeights,
)


def _info() -> RunInfo:
    return RunInfo(conventions=["smpl_24"], streams=["joint"],
                   preprocessing=Preprocessing(length=50, centre=True, y_rotation=False, valid="located", max_persons=2),
                   classes=["drink", "eat"], split=SplitInfo("xsub_train", "xsub_val", 10, 4),
                   model={"width": 16}, ensemble_mode="softmax",
                   fusion=Fusion(weights={"joint": 0.6, "bone": 0.6, "motion": 0.4}, mode="softmax"),
                   skeletons={"smpl_24": {"name": "smpl_24"}}, config={"data": {}}, cache="/tmp/cache")


def test_run_json_round_trip_and_mapping_view(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path / "run")
    folder.root.mkdir()
    info = _info()
    folder.write_info(info)
    data = json.loads(folder.run_json.read_text())
    assert data["format"] == RUN_FORMAT and data["status"] == "running" and data["num_classes"] == 2
    assert data["preprocessing"] == {"length": 50, "centre": True, "y_rotation": False, "valid": "located",
                                     "max_persons": 2, "mean_pose": False}
    assert "finished" not in data
    back = folder.read_info()
    assert back == info and back["classes"] == ["drink", "eat"] and dict(back)["split"]["test"] == "xsub_val"
    done = back.completed()
    assert done.status == RunStatus.COMPLETE and done.finished is not None
    folder.write_info(done)
    assert json.loads(folder.run_json.read_text())["status"] == "complete"
    assert back.preprocessing.clip_options() == {"length": 50, "centre": True, "y_rotation": False, "valid": "located",
                                                 "mean_pose": False}


@pytest.mark.parametrize("damage, message", [
    (lambda d: d.pop("format"), "not an msclr run description"),
    (lambda d: d.update(version=2), "version 2"),
    (lambda d: d["preprocessing"].pop("max_persons"), "damaged or incomplete"),
    (lambda d: d.pop("classes"), "damaged or incomplete"),
])
def test_run_json_refusals_name_the_problem(tmp_path: Path, damage, message: str) -> None:
    folder = RunFolder(tmp_path)
    data = _info().to_dict()
    damage(data)
    folder.run_json.write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match=message):
        folder.read_info()


def test_not_a_run_folder(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no run.json"):
        RunFolder(tmp_path).read_info()
    (tmp_path / "run.json").write_text("[1, 2]")
    with pytest.raises(CheckpointError, match="not an msclr run description"):
        RunFolder(tmp_path).read_info()


def test_model_file_round_trip_holds_only_the_network(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path)
    weights = StreamWeights({"w": torch.arange(3.0)}, {"smpl_24": {"weight": torch.ones(2, 3), "bias": torch.zeros(2)}})
    folder.write_model(ModelFile(["smpl_24"], {"smpl_24": {"name": "smpl_24"}}, {"width": 16}, {"linear": {"joint": weights}},
                                 pretrained={"joint": weights.encoder}))
    back = folder.read_model()
    assert back.conventions == ["smpl_24"] and back.model_config == {"width": 16} and list(back.protocols) == ["linear"]
    torch.testing.assert_close(back.protocols["linear"]["joint"].encoder["w"], torch.arange(3.0))
    torch.testing.assert_close(back.protocols["linear"]["joint"].classifiers["smpl_24"]["weight"], torch.ones(2, 3))
    torch.testing.assert_close(back.pretrained["joint"]["w"], torch.arange(3.0))
    state = torch.load(folder.model, weights_only=True)
    assert not {"classes", "preprocessing", "fusion", "ensemble_mode"} & set(state)  # run.json's job, not repeated
