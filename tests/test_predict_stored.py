"""`msclr predict --from-cache / --from-pyskl`: classify stored skeletons without a video; runs on conventions no
extractor produces (a user-defined skeleton, kinect_v1_20) point there instead of to another extractor."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import require_file
from tiny_runs import recipe_for, train

from msclr.cli import cli

RECIPE = recipe_for("stick_24")


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """(run, cache, pyskl pickle, samples): a user-defined convention ``stick_24`` (smpl_24's joints under
    another name, from a skeleton file), cached with splits and written as a pyskl pickle too; a run on it."""
    from msclr.pipeline.cache import CacheWriter, Clip
    from msclr.pipeline.datasets.synthetic import ACTIONS, make_dataset, subject_splits
    from msclr.skeletons import Skeleton, get_skeleton

    root = tmp_path_factory.mktemp("stored")
    stick = Skeleton.from_dict({**get_skeleton("smpl_24").to_dict(), "name": "stick_24"})
    samples = make_dataset(["smpl_24"], samples_per_class=6, subjects=4, seed=0)
    splits = subject_splits(samples)
    with CacheWriter(root / "cache", [stick], max_persons=1, classes=list(ACTIONS)) as writer:
        for s in samples:
            writer.add(Clip(s.name, poses={"stick_24": s.poses["smpl_24"]}, label=s.label, subject=s.subject,
                            extractor="synthetic"))
        writer.set_splits(splits)
    annotations = [{"frame_dir": s.name, "label": s.label, "total_frames": s.poses["smpl_24"].shape[0],
                    "keypoint": s.poses["smpl_24"].transpose(1, 0, 2, 3).astype(np.float32)} for s in samples]
    with open(root / "clips.pkl", "wb") as handle:
        pickle.dump({"split": splits, "annotations": annotations}, handle)
    definition = root / "stick.json"
    definition.write_text(json.dumps(stick.to_dict()))
    (root / "recipe.toml").write_text(RECIPE)
    result = train(root / "cache", root / "run", root / "recipe.toml", "--split", "xsub")
    assert result.exit_code == 0, result.output
    return root / "run", root / "cache", root / "clips.pkl", definition, samples


def test_from_cache_and_from_pyskl_match_predict_skeletons(stored) -> None:
    from msclr.pipeline.predict import predict_skeletons, predict_stored

    run, cache, pkl, definition, samples = stored
    sample = samples[-1]
    direct = predict_skeletons(run, {"stick_24": sample.poses["smpl_24"]}, top_k=6)
    from_cache = predict_stored(run, sample.name, cache=cache, top_k=6)
    from_pyskl = predict_stored(run, sample.name, pyskl=pkl, top_k=6)
    named = predict_stored(run, sample.name, pyskl=pkl, skeleton=str(definition), top_k=6)
    for pred in (from_cache, from_pyskl, named):
        np.testing.assert_allclose(pred.probabilities, direct.probabilities, atol=1e-6)
        assert pred.source == sample.name and pred.protocol == "linear"
    assert any("skeletons read from cache" in n for n in from_cache.notes)
    assert any(n.startswith("stored label:") for n in from_pyskl.notes)
    runner = CliRunner()
    result = runner.invoke(cli, ["predict", "--model", str(run), "--from-pyskl", str(pkl), "--clip", sample.name,
                                 "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["clip"] == sample.name and data["protocol"] == "linear" and data["conventions"] == {"stick_24": "stick_24"}
    table = runner.invoke(cli, ["predict", "--model", str(run), "--from-cache", str(cache), "--clip", sample.name])
    assert table.exit_code == 0 and sample.name in table.stdout and "linear protocol" in table.stdout


def test_unknown_clip_names_suggest_the_closest(stored) -> None:
    run, cache, pkl, _, samples = stored
    name = samples[0].name
    for source in (["--from-cache", str(cache)], ["--from-pyskl", str(pkl)]):
        result = CliRunner().invoke(cli, ["predict", "--model", str(run), *source, "--clip", name + "x"])
        errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
        assert result.exit_code == 1 and len(errors) == 1 and f"did you mean {name}?" in errors[0], result.output


@pytest.mark.parametrize("args, needle", [
    (["clip.avi", "--from-cache", "__CACHE__", "--clip", "x"], "not both"),
    (["--from-cache", "__CACHE__"], "needs --clip NAME"),
    (["--from-cache", "__CACHE__", "--from-pyskl", "__PKL__", "--clip", "x"], "not both"),
    (["clip.avi", "--clip", "x"], "use it with --from-cache"),
    ([], "give a video CLIP"),
    (["--from-cache", "__CACHE__", "--clip", "x", "--render", "out.mp4"], "--render applies to a video"),
    (["--from-cache", "__CACHE__", "--clip", "x", "--skeleton", "smpl_24"], "--from-pyskl only"),
    (["--from-cache", "__CACHE__", "--clip", "x", "--protocol", "fintune"], "did you mean finetune?"),
    (["--from-cache", "__MISSING__", "--clip", "x"], "does not exist"),
])
def test_predict_usage_errors_exit_2(stored, tmp_path: Path, args: list[str], needle: str) -> None:
    run, cache, pkl, _, _ = stored
    swap = {"__CACHE__": str(cache), "__PKL__": str(pkl), "__MISSING__": str(tmp_path / "nope")}
    result = CliRunner().invoke(cli, ["predict", "--model", str(run), *[swap.get(a, a) for a in args]])
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert result.exit_code == 2 and len(errors) == 1 and needle in errors[0], result.output


def test_video_of_a_user_convention_points_to_stored_skeletons(stored, tmp_path: Path) -> None:
    from msclr.errors import MsclrError
    from msclr.extractors.registry import serving_plan

    run, _, _, _, _ = stored
    video = tmp_path / "clip.avi"
    video.write_bytes(b"not decoded: the plan fails first")
    result = CliRunner().invoke(cli, ["predict", str(video), "--model", str(run), "--extractor", "mediapipe"])
    assert result.exit_code == 1 and "--from-cache" in result.output and "use --extractor metrabs" not in result.output
    for conventions in (["kinect_v1_20"], ["stick_24"], ["kinect_v1_20", "smpl_24"]):
        for kind in ("metrabs", "mediapipe"):
            if kind == "metrabs" and conventions == ["stick_24"]:
                continue  # MeTRAbs may hold a skeleton of that name: decided when its model loads
            with pytest.raises(MsclrError) as err:
                serving_plan(conventions, kind)
            fix = str(err.value).split("Fix:")[1]
            assert "--extractor" not in fix and "--from-cache" in fix, conventions


def test_utd_mhad_kinect_v1_run_predicts_from_the_pickle(shared_data: Path, tmp_path: Path) -> None:
    """A run on real UTD-MHAD Kinect v1 skeletons (kinect_v1_20: no extractor produces it) classifies a sample of
    the pyskl file itself; a video is refused with a pointer to --from-cache / --from-pyskl."""
    source = require_file(shared_data, "utd_mhad/utd_mhad_3d.pkl")
    runner = CliRunner()
    imported = runner.invoke(cli, ["import", "pyskl", str(source), "--skeleton", "kinect_v1_20", "--out",
                                   str(tmp_path / "utd")])
    assert imported.exit_code == 0, imported.output
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(RECIPE.replace('["stick_24"]', '["kinect_v1_20"]'))
    result = train(tmp_path / "utd", tmp_path / "run", recipe, "--split", "xsub", "--epochs", "1")
    assert result.exit_code == 0, result.output
    pred = runner.invoke(cli, ["predict", "--model", str(tmp_path / "run"), "--from-pyskl", str(source), "--clip",
                               "a10_s2_t1", "--json"])
    assert pred.exit_code == 0, pred.output
    data = json.loads(pred.stdout)
    assert data["conventions"] == {"kinect_v1_20": "kinect_v1_20"} and len(data["top_k"]) == 5
    assert "stored label: " in " ".join(data["notes"])
    video = tmp_path / "clip.avi"
    video.write_bytes(b"x")
    refused = runner.invoke(cli, ["predict", str(video), "--model", str(tmp_path / "run")])
    assert refused.exit_code == 1 and "no extractor produces kinect_v1_20" in refused.output
    assert "--from-cache" in refused.output and "use --extractor" not in refused.output
