"""Acceptance: `msclr predict` on a real video with MediaPipe, from a small model trained on BlazePose skeletons
extracted (`msclr extract --extractor mediapipe`) from the shared real clips.

Each shared clip is its own class (ta_chi, S001C001P001R001A001_rgb, exercise_three_people); its extracted
skeletons are cut into 20-frame windows, alternately train and test, and a tiny run is trained with the real
``train_run``.  Then ``msclr predict ta_chi.mp4 --extractor mediapipe --model RUN --json --render OUT.mp4``
must print JSON with k classes and probabilities summing to <= 1, and render all 300 frames of ta_chi.mp4.
The printed ranking and probabilities must equal a computation written in the test from the skeletons
``msclr extract`` stored for the whole of ta_chi.mp4 (the run's encoder and classifier applied directly, softmax
in numpy).  (Which class wins is not determinable: this tiny run ranks ta_chi and the NTU clip nearly equal.)
Skips without the shared data or mediapipe (without mediapipe it fails under CI=true).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import require_file, require_module

from msclr.cli import cli

pytestmark = pytest.mark.mediapipe

VIDEOS = {"ta_chi.mp4": None, "S001C001P001R001A001_rgb.avi": 103, "exercise_three_people.avi": 150}
"""Shared clip -> frames extracted (--limit-frames; ta_chi.mp4 whole: it is also the clip predicted)."""
TRAIN_FRAMES = 150
"""Frames of each extracted clip cut into training / test windows."""
WINDOW = 20
TINY = {
    "data": {"skeletons": ["blazepose_33"], "length": 16, "split": "clips"},
    "model": {"hidden_channels": 4, "hidden_dim": 16, "feature_dim": 8, "queue_size": 16},
    "pretrain": {"epochs": 2, "batch_size": 8, "checkpoint_every": 2},
    "linear": {"epochs": 10, "batch_size": 8, "lr": 1.0},
}


def _windowed_cache(source: Path, out: Path) -> list[str]:
    """Cut every clip of ``source`` into WINDOW-frame windows labelled by clip; alternate train / test."""
    from msclr.pipeline.cache import Cache, CacheWriter, Clip

    cache = Cache(source)
    classes = sorted(cache.names)
    splits: dict[str, list[str]] = {"clips_train": [], "clips_val": []}
    with CacheWriter(out, ["blazepose_33"], max_persons=1, classes=classes) as writer:
        for label, name in enumerate(classes):
            clip = cache.clip(name)
            poses = clip.poses["blazepose_33"][:TRAIN_FRAMES]
            for w, start in enumerate(range(0, poses.shape[0] - WINDOW + 1, WINDOW)):
                piece = f"{name}_w{w:02d}"
                writer.add(Clip(piece, poses={"blazepose_33": np.ascontiguousarray(poses[start:start + WINDOW])},
                                label=label, fps=clip.fps, source=clip.source, extractor=clip.extractor))
                splits["clips_train" if w % 2 == 0 else "clips_val"].append(piece)
        writer.set_splits(splits)
    return classes


def test_predict_real_clip_with_mediapipe(shared_data: Path, tmp_path: Path) -> None:
    require_module("mediapipe")
    import torch

    from msclr.pipeline.config import config_from_dict
    from msclr.pipeline.render import count_frames
    from msclr.pipeline.train import train_run

    videos = [require_file(shared_data, f"videos/{name}") for name in VIDEOS]
    runner = CliRunner()
    extracted = tmp_path / "extracted"
    for video, limit in zip(videos, VIDEOS.values(), strict=True):
        result = runner.invoke(cli, ["extract", str(video), "--out", str(extracted), "--extractor", "mediapipe",
                                     "--max-people", "1", *(["--limit-frames", str(limit)] if limit else [])])
        assert result.exit_code == 0, result.output
    classes = _windowed_cache(extracted, tmp_path / "windows")
    assert len(classes) == 3
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train_run(tmp_path / "windows", tmp_path / "run", config_from_dict(TINY).validate(), tensorboard=False,
                  handle_sigint=False)
    finally:
        torch.set_num_threads(previous)

    ta_chi = videos[0]
    out = tmp_path / "ta_chi_pred.mp4"
    result = runner.invoke(cli, ["predict", str(ta_chi), "--extractor", "mediapipe", "--model", str(tmp_path / "run"),
                                 "--json", "--top-k", "3", "--render", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    data = json.loads(result.stdout)
    assert len(data["top_k"]) == 3 and {r["class"] for r in data["top_k"]} == set(classes)
    probs = [r["probability"] for r in data["top_k"]]
    assert probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-6 and min(probs) >= 0
    # The same numbers computed here: ta_chi's skeletons as `msclr extract` stored them (all 300 frames, M = 1),
    # training's preprocessing, the run's frozen encoder and linear classifier applied directly, numpy softmax
    # (one convention and one stream: no ensemble, no fusion).
    from msclr.pipeline.cache import Cache
    from msclr.pipeline.preprocess import preprocess_clip
    from msclr.pipeline.trained import open_run

    stored = Cache(extracted).clip("ta_chi")
    assert stored.frames == 300
    model = open_run(tmp_path / "run", protocol=data["protocol"])
    assert list(model.encoders) == ["joint"] and list(model.classifiers["joint"]) == ["blazepose_33"]
    x = preprocess_clip(np.nan_to_num(stored.poses["blazepose_33"]), model.skeletons["blazepose_33"],
                        **model.info.preprocessing.clip_options())
    with torch.no_grad():
        feats = model.encoders["joint"].features(torch.from_numpy(x[None]).float(), "blazepose_33")[0]
    fc = model.classifiers["joint"]["blazepose_33"]
    z = fc.weight.detach().double().numpy() @ feats.double().numpy() + fc.bias.detach().double().numpy()
    want = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    order = np.argsort(-want, kind="stable")
    assert [(r["label"], r["class"]) for r in data["top_k"]] == [(int(i), classes[i]) for i in order]
    np.testing.assert_allclose(probs, want[order], rtol=0, atol=1e-6)
    assert data["extractor"] == "mediapipe" and data["conventions"] == {"blazepose_33": "blazepose_33"}
    assert data["frames"] == 300 and data["persons"] == 1 and data["render"] == str(out)
    # the render: playable, every frame of the input, something drawn outside the label box
    import cv2

    assert count_frames(out) == 300
    src, dst = cv2.VideoCapture(str(ta_chi)), cv2.VideoCapture(str(out))
    assert dst.get(cv2.CAP_PROP_FPS) == pytest.approx(src.get(cv2.CAP_PROP_FPS), rel=1e-3)
    for _ in range(150):
        ok_a, a = src.read()
        ok_b, b = dst.read()
    src.release()
    dst.release()
    assert ok_a and ok_b and a.shape == b.shape == (256, 340, 3)
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16)).max(axis=2)
    diff[:60, :] = 0  # the label box
    assert (diff > 60).mean() > 0.001  # skeleton lines (compression noise alone stays far below 60 levels)
