"""`msclr predict` and :func:`msclr.pipeline.predict.predict_skeletons` on a tiny run trained with the real
``train_run`` on synthetic ntu_kinect_25 + smpl_24 clips; video path through the real MeTRAbs loader with the
stand-in SavedModel (tests/metrabs_standin.py), which serves ntu_kinect_25 with kinectv2_25."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from msclr.cli import cli
from msclr.errors import CheckpointError, MsclrError

CONVS = ("ntu_kinect_25", "smpl_24")
TINY = {
    "data": {"skeletons": list(CONVS), "length": 16, "split": "xsub"},
    "model": {"hidden_channels": 4, "hidden_dim": 16, "feature_dim": 8, "queue_size": 32},
    "pretrain": {"epochs": 1, "batch_size": 16, "checkpoint_every": 1},
    "linear": {"epochs": 3, "batch_size": 32, "lr": 1.0},
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(run folder, cache folder, held-out clips in memory: name -> (label, poses)). M = 2 person slots."""
    from msclr.pipeline.cache import CacheWriter, Clip
    from msclr.pipeline.config import config_from_dict
    from msclr.pipeline.datasets.synthetic import ACTIONS, make_dataset, subject_splits
    from msclr.pipeline.train import train_run

    root = tmp_path_factory.mktemp("predict")
    samples = make_dataset(CONVS, samples_per_class=6, subjects=4, seed=0)
    splits = subject_splits(samples)
    with CacheWriter(root / "cache", list(CONVS), max_persons=2, classes=list(ACTIONS)) as writer:
        for s in samples:
            poses = {c: np.concatenate([p, np.zeros_like(p)], axis=1) for c, p in s.poses.items()}
            writer.add(Clip(s.name, poses=poses, label=s.label, subject=s.subject, extractor="synthetic"))
        writer.set_splits(splits)
    config = config_from_dict(TINY).validate()
    train_run(root / "cache", root / "run", config, tensorboard=False, handle_sigint=False)
    held = {s.name: (s.label, s.poses) for s in samples if s.name in set(splits["xsub_val"])}
    return root / "run", root / "cache", held


def _video(path: Path, n: int, *, dark: bool = False) -> Path:
    from msclr.extractors.video import write_video

    frames = []
    for i in range(n):
        frame = np.zeros((48, 64, 3), np.uint8)
        if not dark:
            frame[:, :32] = 40 + 5 * i
            frame[:, 32:] = 150 - 3 * i
        frames.append(frame)
    write_video(path, frames, fps=25.0, codec="MJPG")
    return path


def _first(held):
    name = sorted(held)[0]
    return name, held[name]


# ----------------------------------------------------------------------------- predict_skeletons
def test_predict_skeletons_matches_trained_run(trained) -> None:
    from msclr.pipeline.datasets.synthetic import ACTIONS
    from msclr.pipeline.predict import predict_skeletons
    from msclr.pipeline.preprocess import preprocess_clip
    from msclr.pipeline.trained import open_run

    run, _, held = trained
    name, (label, poses) = _first(held)
    pred = predict_skeletons(run, poses, top_k=3)
    assert len(pred.top) == 3 and pred.classes == list(ACTIONS)
    probs = [r["probability"] for r in pred.top]
    assert probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-6
    assert len({r["label"] for r in pred.top}) == 3
    assert pred.probabilities.sum() == pytest.approx(1.0, abs=1e-6)
    assert [r["class"] for r in pred.top] == [ACTIONS[r["label"]] for r in pred.top]
    assert pred.conventions == {"ntu_kinect_25": "ntu_kinect_25", "smpl_24": "smpl_24"}
    assert pred.streams == ["joint"] and pred.frames == poses["smpl_24"].shape[0] and pred.persons == 1
    assert pred.max_persons == 2  # the cache's M (the poses given have one slot: padded)
    # The expected probabilities, computed here without TrainedRun.logits / scores or msclr's fusion code: the
    # frozen joint-stream encoder's pooled features (the joint stream is the preprocessed clip itself), each
    # convention's linear classifier applied in numpy, a numpy softmax per classifier, and their mean (the run's
    # skeleton ensemble in softmax mode, one stream).
    model = open_run(run)
    assert model.info.ensemble_mode == "softmax" and list(model.encoders) == ["joint"]
    prep = {k: model.info["preprocessing"][k] for k in ("length", "centre", "y_rotation", "valid")}
    feats = {}
    for c in CONVS:
        x = preprocess_clip(np.concatenate([poses[c], np.zeros_like(poses[c])], axis=1), model.skeletons[c], **prep)
        with torch.no_grad():
            feats[c] = model.encoders["joint"].features(torch.from_numpy(x[None]).float(), c)[0].double().numpy()

    def expected(heads: dict) -> tuple[np.ndarray, list[np.ndarray]]:
        probs = []
        for c in CONVS:
            weight, bias = heads[c]
            z = weight @ feats[c] + bias
            e = np.exp(z - z.max())
            probs.append(e / e.sum())
        return np.mean(probs, axis=0), probs

    def head(c: str) -> tuple[np.ndarray, np.ndarray]:
        fc = model.classifiers["joint"][c]
        return fc.weight.detach().double().numpy(), fc.bias.detach().double().numpy()

    # 1. the trained classifiers
    want, _ = expected({c: head(c) for c in CONVS})
    np.testing.assert_allclose(pred.probabilities, want, rtol=0, atol=1e-9)  # near-uniform: tight tolerance
    assert [r["label"] for r in pred.top] == np.argsort(-want, kind="stable")[:3].tolist()

    # 2. This tiny run's two classifiers are near-uniform and almost equal, which a wrong ensemble (one classifier
    # only, averaged logits) would pass: give the loaded run distinct, confident classifiers (seeded) and compare
    # again, now where the ensemble matters.
    rng = np.random.default_rng(0)
    heads = {}
    for c in CONVS:
        fc = model.classifiers["joint"][c]
        weight = rng.normal(0.0, 3.0 / np.linalg.norm(feats[c]), tuple(fc.weight.shape))
        bias = rng.normal(0.0, 1.0, tuple(fc.bias.shape))
        with torch.no_grad():
            fc.weight.copy_(torch.from_numpy(weight))
            fc.bias.copy_(torch.from_numpy(bias))
        heads[c] = head(c)  # as stored in float32
    want, probs = expected(heads)
    assert np.abs(probs[0] - probs[1]).max() > 0.1 and np.ptp(want) > 0.1  # the case really is discriminating
    strong = predict_skeletons(model, poses, top_k=3)
    np.testing.assert_allclose(strong.probabilities, want, rtol=0, atol=1e-6)
    assert [r["label"] for r in strong.top] == np.argsort(-want, kind="stable")[:3].tolist()


def test_kinectv2_serves_ntu_model_index_for_index(trained) -> None:
    from msclr.extractors.registry import SERVED_BY, substitute_compatible
    from msclr.pipeline.predict import predict_skeletons
    from msclr.skeletons import get_skeleton

    run, _, held = trained
    _, (_, poses) = _first(held)
    direct = predict_skeletons(run, poses, top_k=6)
    served = predict_skeletons(run, {"kinectv2_25": poses["ntu_kinect_25"], "smpl_24": poses["smpl_24"]}, top_k=6)
    assert served.conventions == {"ntu_kinect_25": "kinectv2_25", "smpl_24": "smpl_24"}
    np.testing.assert_array_equal(served.probabilities, direct.probabilities)
    assert any("served by kinectv2_25" in n for n in served.notes)
    assert SERVED_BY == {"ntu_kinect_25": "kinectv2_25"}
    assert substitute_compatible(get_skeleton("ntu_kinect_25"), get_skeleton("kinectv2_25"))
    assert not substitute_compatible(get_skeleton("ntu_kinect_25"), get_skeleton("smpl_24"))
    # only one convention given: a one-classifier prediction, noted
    single = predict_skeletons(run, {"smpl_24": poses["smpl_24"]}, top_k=2)
    assert single.conventions == {"smpl_24": "smpl_24"} and any("without ntu_kinect_25" in n for n in single.notes)


def test_logits_mode_is_softmaxed_for_display(trained, tmp_path: Path) -> None:
    from msclr.models.fusion import softmax
    from msclr.pipeline.predict import predict_skeletons
    from msclr.pipeline.trained import open_run

    run, _, held = trained
    _, (_, poses) = _first(held)
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    info = json.loads((copy / "run.json").read_text())
    info["ensemble_mode"] = "logits"
    (copy / "run.json").write_text(json.dumps(info))
    model = open_run(copy)
    pred = predict_skeletons(model, poses, top_k=6)
    assert "softmax, for display" in pred.score and "logits" in pred.score
    padded = {c: np.concatenate([p, np.zeros_like(p)], axis=1) for c, p in poses.items()}
    from msclr.pipeline.preprocess import preprocess_clip

    prep = {k: model.info["preprocessing"][k] for k in ("length", "centre", "y_rotation", "valid")}
    raw = model.logits({c: preprocess_clip(padded[c], model.skeletons[c], **prep)[None] for c in CONVS})["joint"]
    expected = softmax((raw["ntu_kinect_25"][0] + raw["smpl_24"][0]) / 2)
    np.testing.assert_allclose(pred.probabilities, expected, atol=1e-6)
    assert pred.probabilities.sum() == pytest.approx(1.0)


def test_stream_fusion_probabilities_are_a_weighted_mean(trained) -> None:
    """Three streams in softmax mode: the fused 0.6/0.6/0.4 score is normalised to sum to 1."""
    from msclr.pipeline.predict import predict_skeletons
    from msclr.pipeline.trained import TrainedRun, open_run

    run, _, held = trained
    _, (_, poses) = _first(held)
    model = open_run(run)
    enc, fcs = model.encoders["joint"], model.classifiers["joint"]
    info = dict(model.info, streams=["joint", "bone", "motion"])
    three = TrainedRun(info, model.skeletons, {s: enc for s in info["streams"]}, {s: fcs for s in info["streams"]})
    pred = predict_skeletons(three, poses, top_k=4)
    assert pred.streams == ["joint", "bone", "motion"]
    assert pred.probabilities.sum() == pytest.approx(1.0, abs=1e-6)
    scores = three.scores({c: _prep(model, c, poses[c]) for c in CONVS})
    w = info["fusion"]["weights"]
    manual = sum(w[s] * scores["streams"][s][0] for s in info["streams"]) / sum(w[s] for s in info["streams"])
    np.testing.assert_allclose(pred.probabilities, manual, atol=1e-9)


def _prep(model, conv, poses):
    from msclr.pipeline.preprocess import preprocess_clip

    prep = {k: model.info["preprocessing"][k] for k in ("length", "centre", "y_rotation", "valid")}
    return preprocess_clip(np.concatenate([poses, np.zeros_like(poses)], axis=1), model.skeletons[conv], **prep)[None]


def test_nobody_and_bad_inputs(trained) -> None:
    from msclr.pipeline.predict import NoPersonError, predict_skeletons

    run, _, held = trained
    _, (_, poses) = _first(held)
    with pytest.raises(NoPersonError, match="nobody in the clip"):
        predict_skeletons(run, {c: np.zeros_like(p) for c, p in poses.items()})
    with pytest.raises(MsclrError, match="none of the run's conventions"):
        predict_skeletons(run, {"smplx_42": np.ones((5, 1, 42, 3), np.float32)})
    with pytest.raises(MsclrError, match="joints"):
        predict_skeletons(run, {"smpl_24": np.ones((5, 1, 25, 3), np.float32)})


def test_serving_plan_says_which_extractor_produces_what() -> None:
    from msclr.extractors.registry import serving_plan

    assert serving_plan(["ntu_kinect_25", "smplx_42"], "metrabs") == {"ntu_kinect_25": "kinectv2_25",
                                                                      "smplx_42": "smplx_42"}
    assert serving_plan(["blazepose_33"], "mediapipe") == {"blazepose_33": "blazepose_33"}
    with pytest.raises(MsclrError) as err:
        serving_plan(["smplx_42"], "mediapipe")
    text = str(err.value)
    assert "cannot produce smplx_42" in text and "mediapipe: blazepose_33" in text and "--extractor metrabs" in text
    with pytest.raises(MsclrError, match="--extractor mediapipe"):
        serving_plan(["blazepose_33"], "metrabs")
    with pytest.raises(MsclrError, match="no extractor produces"):
        serving_plan(["kinect_v1_20"], "metrabs")


# ----------------------------------------------------------------------------- the RUN folder
def test_copied_run_predicts_without_its_cache(trained, tmp_path: Path) -> None:
    from msclr.pipeline.predict import predict_skeletons

    run, cache, held = trained
    _, (_, poses) = _first(held)
    before = predict_skeletons(run, poses, top_k=6)
    moved = tmp_path / "elsewhere" / "my-model"
    shutil.copytree(run, moved)
    shutil.rmtree(cache)  # the cache it was trained on is gone
    after = predict_skeletons(moved, poses, top_k=6)
    np.testing.assert_allclose(after.probabilities, before.probabilities, atol=1e-7)
    assert after.top == before.top and after.run == str(moved)


def test_run_folder_errors(trained, tmp_path: Path) -> None:
    from msclr.pipeline.trained import open_run

    run, _, _ = trained
    with pytest.raises(CheckpointError, match="does not exist"):
        open_run(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="not an msclr run folder"):
        open_run(tmp_path / "empty")
    unfinished = tmp_path / "unfinished"
    shutil.copytree(run, unfinished)
    info = json.loads((unfinished / "run.json").read_text())
    (unfinished / "run.json").write_text(json.dumps(dict(info, status="running")))
    with pytest.raises(CheckpointError, match=r"not a finished run .*--resume"):
        open_run(unfinished)
    no_model = tmp_path / "no_model"
    shutil.copytree(run, no_model)
    (no_model / "model.pt").unlink()
    with pytest.raises(CheckpointError, match="model.pt is missing"):
        open_run(no_model)


class _Payload:
    """Unpickling this calls os.system(command): what a hostile model.pt would do."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def test_pickle_payload_in_model_pt_is_refused(trained, tmp_path: Path) -> None:
    run, _, held = trained
    hostile = tmp_path / "hostile"
    shutil.copytree(run, hostile)
    marker = tmp_path / "PWNED"
    payload = {"format": "msclr-checkpoint", "version": 1, "kind": "model", "x": _Payload(f"touch '{marker}'")}
    torch.save(payload, hostile / "model.pt")
    assert b"system" in (hostile / "model.pt").read_bytes()  # the payload is really in there
    video = tmp_path / "clip.avi"
    _video(video, 4)
    result = CliRunner().invoke(cli, ["predict", str(video), "--model", str(hostile), "--json"])
    assert result.exit_code == 1, result.output
    assert "refusing to load" in result.output and "pickled Python objects" in result.output
    assert not marker.exists()
    from msclr.pipeline.predict import predict_skeletons

    with pytest.raises(CheckpointError, match="refusing"):
        predict_skeletons(hostile, held[sorted(held)[0]][1])
    assert not marker.exists()


# ----------------------------------------------------------------------------- the video path (CLI)
def test_cli_json_and_render_with_metrabs_standin(trained, pixel_standin, tmp_path: Path) -> None:
    from msclr.pipeline.render import count_frames

    run, _, _ = trained
    video = _video(tmp_path / "clip.avi", 20)
    out = tmp_path / "rendered" / "pred.mp4"
    result = CliRunner().invoke(cli, ["predict", str(video), "--model", str(run), "--pose-model", str(pixel_standin.path),
                                      "--top-k", "3", "--json", "--render", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    data = json.loads(result.stdout)
    assert len(data["top_k"]) == 3
    probs = [r["probability"] for r in data["top_k"]]
    assert probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-6
    assert {"rank", "label", "class", "probability"} <= set(data["top_k"][0])
    assert data["conventions"] == {"ntu_kinect_25": "kinectv2_25", "smpl_24": "smpl_24"}
    assert data["extractor"] == "metrabs" and data["pose_model"] == str(pixel_standin.path)
    assert data["frames"] == 20 and data["persons"] == 2 and data["max_persons"] == 2 and data["fps"] == 25.0
    assert data["streams"] == ["joint"] and data["render"] == str(out)
    # the render: every input frame, decodable, same fps, something drawn on it
    import cv2

    assert count_frames(out) == 20
    cap = cv2.VideoCapture(str(out))
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(25.0)
    ok, first = cap.read()
    cap.release()
    assert ok and first.shape == (48, 64, 3)
    assert not list(out.parent.glob(".*partial*"))
    # the table form
    table = CliRunner().invoke(cli, ["predict", str(video), "--model", str(run), "--pose-model", str(pixel_standin.path),
                                     "--top-k", "2"])
    assert table.exit_code == 0, table.output
    assert data["top_k"][0]["class"] in table.stdout and "ntu_kinect_25 <- kinectv2_25" in table.stdout


def test_cli_failure_paths(trained, pixel_standin, tmp_path: Path) -> None:
    run, _, _ = trained
    video = _video(tmp_path / "clip.avi", 6)
    runner = CliRunner()

    def predict(*args: str):
        return runner.invoke(cli, ["predict", *args])

    r = predict(str(video), "--model", str(tmp_path / "nope"))
    assert r.exit_code == 1 and "does not exist" in r.output
    r = predict(str(tmp_path / "missing.mp4"), "--model", str(run))
    assert r.exit_code == 1 and "missing.mp4 does not exist" in r.output
    r = predict(str(video), "--model", str(run), "--extractor", "mediapipe")
    assert r.exit_code == 1 and "cannot produce ntu_kinect_25, smpl_24" in r.output and "metrabs:" in r.output
    r = predict(str(video), "--model", str(run), "--render", str(tmp_path / "out.txt"))
    assert r.exit_code == 1 and ".mp4" in r.output
    dark = _video(tmp_path / "dark.avi", 6, dark=True)
    r = predict(str(dark), "--model", str(run), "--pose-model", str(pixel_standin.path))
    assert r.exit_code == 1 and "nobody in the clip" in r.output, r.output


def test_project_kinect_inverts_the_metrabs_axes() -> None:
    from msclr.extractors.axes import intrinsics_from_fov, metrabs_to_kinect
    from msclr.pipeline.render import project_kinect

    k = intrinsics_from_fov(55.0, 640, 480)
    p_mm = np.array([[[120.0, -300.0, 3000.0], [-50.0, 400.0, 2500.0]]])
    uv = project_kinect(metrabs_to_kinect(p_mm), k)
    expected = np.stack([k[0, 0] * p_mm[..., 0] / p_mm[..., 2] + k[0, 2],
                         k[1, 1] * p_mm[..., 1] / p_mm[..., 2] + k[1, 2]], axis=-1)
    np.testing.assert_allclose(uv, expected, rtol=1e-5)
    assert np.isnan(project_kinect(np.zeros((1, 3)), k)).all()
