"""``msclr extract --extractor mediapipe`` on the real shared clips (skips without the data or the extra;
without the extra it fails under CI=true).

Default (reduced) form: the NTU A001 clip, ta_chi.mp4 (first 120 frames) and a generated plain
gradient, about 220 frames of MediaPipe.  The full folder run is marked ``slow``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import require_file, require_module

require_module("mediapipe")

from msclr.cli import cli  # noqa: E402
from msclr.extractors.video import write_video  # noqa: E402
from msclr.pipeline.cache import Cache  # noqa: E402
from msclr.skeletons import get_skeleton  # noqa: E402

pytestmark = pytest.mark.mediapipe
A001 = "videos/S001C001P001R001A001_rgb.avi"
BP = get_skeleton("blazepose_33")
NOSE, L_SHO, R_SHO, L_WRIST, L_HIP, R_HIP = (BP.index(n) for n in (
    "NOSE", "LEFT_SHOULDER", "RIGHT_SHOULDER", "LEFT_WRIST", "LEFT_HIP", "RIGHT_HIP"))


def _gradient_video(path: Path, frames: int = 24) -> Path:
    """A static horizontal grey gradient: nobody in it."""
    ramp = np.linspace(0, 255, 320, dtype=np.float32)
    frame = np.repeat(np.repeat(ramp[None, :, None], 240, axis=0), 3, axis=2).astype(np.uint8)
    write_video(path, [frame] * frames)
    return path


def _check_a001(cache: Cache) -> None:
    clip = cache.clip("S001C001P001R001A001")
    assert clip.status == "ok"
    assert clip.frames == 103 and clip.label == 0 and clip.subject == 1 and clip.camera == 1
    assert clip.fps == pytest.approx(30.0) and clip.extractor == "mediapipe" and clip.persons == 1
    poses = clip.poses["blazepose_33"]
    assert poses.shape == (103, cache.max_persons, 33, 3)
    assert not poses[:, 1:].any() and not clip.scores[:, 1:].any()  # one person, slot 0
    assert (clip.scores[:, 0] > 0.65).all()
    p = poses[:, 0]
    # "drink water": the left wrist rises towards the head (Kinect axes, y up).
    rel = p[:, L_WRIST, 1] - p[:, NOSE, 1]
    assert rel[:10].mean() < -0.35
    assert rel.max() - rel[:10].mean() > 0.2
    # Kinect camera space, subject facing the camera: their left shoulder is on the camera's right
    # (smaller x), the nose is above the hips and nearer the camera (smaller z).
    assert (p[:, L_SHO, 0] < p[:, R_SHO, 0]).all()
    hips = (p[:, L_HIP] + p[:, R_HIP]) / 2
    assert (p[:, NOSE, 1] > hips[:, 1] + 0.4).all()
    assert (p[:, NOSE, 2] < hips[:, 2]).all()
    np.testing.assert_array_equal(clip.frame_indices, np.arange(103))


def test_real_clips_reduced(shared_data: Path, tmp_path: Path) -> None:
    vids = tmp_path / "videos"
    vids.mkdir()
    for rel in (A001, "videos/ta_chi.mp4"):
        src = require_file(shared_data, rel)
        (vids / src.name).symlink_to(src)  # never copy research data
    _gradient_video(vids / "gradient.avi")
    out = tmp_path / "cache"
    result = CliRunner().invoke(cli, ["extract", str(vids), "--extractor", "mediapipe", "--out", str(out),
                                      "--limit-frames", "120"], catch_exceptions=False)
    assert result.exit_code == 1, result.output  # the gradient shows nobody
    cache = Cache(out)
    statuses = cache.statuses()
    assert statuses["gradient"][0] == "no_person" and "0 of 24 frames" in statuses["gradient"][1]
    assert statuses["ta_chi"][0] == "ok" and cache.clip("ta_chi").frames == 120
    assert list(cache.skeletons) == ["blazepose_33"]
    _check_a001(cache)
    assert "no_person" in result.output


@pytest.mark.slow
def test_real_clips_full_folder(shared_data: Path, tmp_path: Path) -> None:
    require_file(shared_data, A001)
    out = tmp_path / "cache"
    result = CliRunner().invoke(cli, ["extract", str(shared_data / "videos"), "--extractor", "mediapipe",
                                      "--out", str(out)], catch_exceptions=False)
    cache = Cache(out)
    statuses = {n: s for n, (s, _) in cache.statuses().items()}
    # every video with a (whole) person gives a clip; the partial bodies are flagged, not crashes
    assert statuses == {
        "S001C001P001R001A001": "ok", "ntu_sample_two_people": "ok", "ta_chi": "ok",
        "exercise_three_people": "ok", "face_closeup": "no_person", "pool_partial_body": "no_person",
    }
    assert result.exit_code == 1
    _check_a001(cache)
    assert cache.clip("exercise_three_people").frames == 393
