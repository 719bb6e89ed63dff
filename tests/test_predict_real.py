"""Acceptance: `msclr predict` on a real video with MediaPipe, from a small model trained on BlazePose skeletons
extracted (`msclr extract --extractor mediapipe`) from the shared real clips.

Each shared clip is its own class (ta_chi, S001C001P001R001A001_rgb, exercise_three_people); its extracted
skeletons are cut into 20-frame windows, alternately train and test, and a tiny run is trained with the real
``train_run``.  Then ``msclr predict ta_chi.mp4 --extractor mediapipe --model RUN --json --render OUT.mp4``
must print JSON with k classes and probabilities summing to <= 1, and render all 300 frames of ta_chi.mp4.
Skips without the shared data or mediapipe.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import require_file

from msclr.cli import cli

pytestmark = pytest.mark.mediapipe

VIDEOS = {"ta_chi.mp4": 150, "S001C001P001R001A001_rgb.avi": 103, "exercise_three_people.avi": 150}
"""Shared clip -> frames extracted (--limit-frames) for training."""
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
            poses = clip.poses["blazepose_33"]
            for w, start in enumerate(range(0, poses.shape[0] - WINDOW + 1, WINDOW)):
                piece = f"{name}_w{w:02d}"
                writer.add(Clip(piece, poses={"blazepose_33": np.ascontiguousarray(poses[start:start + WINDOW])},
                                label=label, fps=clip.fps, source=clip.source, extractor=clip.extractor))
                splits["clips_train" if w % 2 == 0 else "clips_val"].append(piece)
        writer.set_splits(splits)
    return classes


def test_predict_real_clip_with_mediapipe(shared_data: Path, tmp_path: Path) -> None:
    pytest.importorskip("mediapipe")
    import torch

    from msclr.pipeline.config import config_from_dict
    from msclr.pipeline.render import count_frames
    from msclr.pipeline.train import train_run

    videos = [require_file(shared_data, f"videos/{name}") for name in VIDEOS]
    runner = CliRunner()
    extracted = tmp_path / "extracted"
    for video, limit in zip(videos, VIDEOS.values(), strict=True):
        result = runner.invoke(cli, ["extract", str(video), "--out", str(extracted), "--extractor", "mediapipe",
                                     "--max-people", "1", "--limit-frames", str(limit)])
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
