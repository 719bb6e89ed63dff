"""MeTRAbs extractor against a stand-in SavedModel with the real interface (tests/metrabs_standin.py).

Checks: one model call per frame batch for four conventions (skeleton=''), slicing with
per_skeleton_indices, mm -> m and camera -> Kinect axes, identities across detection-order swaps,
empty frames, joint-name mismatch and loader errors.  Skips without TensorFlow (fails under CI=true).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import require_module

require_module("tensorflow")

from metrabs_standin import CONVENTIONS, StandinInfo, build_standin, frame_with_index  # noqa: E402

from msclr.errors import ExtractionError  # noqa: E402
from msclr.extractors.axes import metrabs_to_kinect  # noqa: E402
from msclr.extractors.jobs import VideoJob  # noqa: E402
from msclr.extractors.metrabs import MetrabsExtractor, MetrabsOptions, load_pose_model  # noqa: E402
from msclr.extractors.tracking import track_people  # noqa: E402
from msclr.extractors.video import iter_frame_batches, write_video  # noqa: E402
from msclr.pipeline.extract import ExtractOptions, extract_video  # noqa: E402
from msclr.skeletons import get_skeleton  # noqa: E402

pytestmark = pytest.mark.tensorflow

A_BOX, B_BOX = [2.0, 4.0, 20.0, 40.0, 0.95], [40.0, 4.0, 20.0, 40.0, 0.7]


def _a(t: int) -> tuple[list[float], list[float]]:
    return A_BOX, [-300.0 + 5 * t, 200.0, 2500.0]


def _b(t: int) -> tuple[list[float], list[float]]:
    return B_BOX, [350.0 - 5 * t, 150.0, 3500.0]


# frame t: two people, order swapped on odd frames; frames 4 and 5 empty; frame 7 only B
SCRIPT = []
for _t in range(10):
    if _t in (4, 5):
        SCRIPT.append([])
    elif _t == 7:
        SCRIPT.append([_b(_t)])
    else:
        SCRIPT.append([_a(_t), _b(_t)] if _t % 2 == 0 else [_b(_t), _a(_t)])


@pytest.fixture(scope="module")
def scripted(tmp_path_factory: pytest.TempPathFactory) -> StandinInfo:
    return build_standin(tmp_path_factory.mktemp("standin") / "model", script=SCRIPT)


@pytest.fixture(scope="module")
def extractor(scripted: StandinInfo) -> MetrabsExtractor:
    # through msclr's real loader, from the local SavedModel directory
    return MetrabsExtractor(str(scripted.path), CONVENTIONS,
                            MetrabsOptions(fov=60.0, num_aug=2, max_detections=3, detector_threshold=0.25))


def _frames(ts: range | list[int]) -> np.ndarray:
    return np.stack([frame_with_index(t) for t in ts])


def test_one_call_per_batch_for_four_conventions(extractor: MetrabsExtractor) -> None:
    model = extractor.model
    calls0, seen0 = int(model.calls.numpy()), int(model.frames_seen.numpy())
    extractor.start_video(64, 48)
    out = extractor.process(_frames(range(6)))
    assert len(out) == 6
    assert int(model.calls.numpy()) == calls0 + 1  # not one per skeleton
    assert int(model.frames_seen.numpy()) == seen0 + 6
    assert model.last_skeleton.numpy() == b""
    for det in out:
        assert set(det.poses) == set(CONVENTIONS)
    extractor.process(_frames(range(6, 10)))
    assert int(model.calls.numpy()) == calls0 + 2


def test_camera_and_options_are_passed(extractor: MetrabsExtractor) -> None:
    extractor.start_video(64, 48)
    extractor.process(_frames([0]))
    model = extractor.model
    # pinhole camera written out here, not derived with the code under test: f = (max(W, H) / 2) / tan(fov / 2)
    # = 32 / tan(30 deg) = 32 sqrt(3) px for the 64 x 48 frame, principal point at the image centre (W/2, H/2)
    f = 32.0 * np.sqrt(3.0)
    want = [[f, 0.0, 32.0], [0.0, f, 24.0], [0.0, 0.0, 1.0]]
    np.testing.assert_allclose(model.last_intrinsics.numpy(), want, rtol=1e-6)
    assert model.last_num_aug.numpy() == 2
    assert model.last_max_detections.numpy() == 3
    assert model.last_threshold.numpy() == pytest.approx(0.25)


def test_slicing_units_and_axes(extractor: MetrabsExtractor, scripted: StandinInfo) -> None:
    extractor.start_video(64, 48)
    det = extractor.process(_frames([0]))[0]
    assert len(det) == 2
    np.testing.assert_allclose(det.boxes, [A_BOX[:4], B_BOX[:4]])
    np.testing.assert_allclose(det.scores, [A_BOX[4], B_BOX[4]])
    for conv in CONVENTIONS:
        v = get_skeleton(conv).num_joints
        assert det.poses[conv].shape == (2, v, 3) and det.poses[conv].dtype == np.float32
        for p, (_, base) in enumerate(SCRIPT[0]):
            mm = scripted.expected_mm(base, conv)
            want = np.stack([-mm[:, 0], -mm[:, 1], mm[:, 2]], axis=-1) / 1000.0
            np.testing.assert_allclose(det.poses[conv][p], want, rtol=1e-6, atol=1e-6)
    # explicit numbers for one joint: smpl_24 joint 0 ('pelv'), person A at frame 0
    j = scripted.all_names.index("pelv_smpl")
    x, y, z = np.array([-300.0, 200.0, 2500.0]) + scripted.pattern[j]
    np.testing.assert_allclose(det.poses["smpl_24"][0, 0], [-x / 1000, -y / 1000, z / 1000], rtol=1e-6)
    # the root used for tracking is the first convention's centre joint
    np.testing.assert_allclose(det.roots[0], det.poses["smpl_24"][0, get_skeleton("smpl_24").centre])


def test_empty_frames_and_all_empty_batch(extractor: MetrabsExtractor) -> None:
    extractor.start_video(64, 48)
    out = extractor.process(_frames([3, 4, 5, 7]))
    assert [len(d) for d in out] == [2, 0, 0, 1]
    assert out[1].poses["smplx_42"].shape == (0, 42, 3) and out[1].boxes.shape == (0, 4)
    out = extractor.process(_frames([4, 5]))
    assert [len(d) for d in out] == [0, 0]
    assert out[0].poses["kinectv2_25"].shape == (0, 25, 3)


def test_empty_batch_gather_error_is_an_empty_batch(tmp_path: Path) -> None:
    info = build_standin(tmp_path / "cpu", script=[[_a(0)], [], []], empty_batch_error=True)
    ex = MetrabsExtractor(str(info.path), ("smpl_24", "kinectv2_25"))
    ex.start_video(64, 48)
    out = ex.process(_frames([1, 2]))  # nobody in the whole batch: the model raises, msclr copes
    assert [len(d) for d in out] == [0, 0] and ex.empty_batches == 1
    assert out[0].poses["kinectv2_25"].shape == (0, 25, 3)
    out = ex.process(_frames([0, 1]))
    assert [len(d) for d in out] == [1, 0] and ex.empty_batches == 1


def test_identities_kept_when_detection_order_swaps(extractor: MetrabsExtractor, scripted: StandinInfo) -> None:
    extractor.start_video(64, 48)
    dets = extractor.process(_frames(range(5))) + extractor.process(_frames(range(5, 10)))
    sizes = {c: get_skeleton(c).num_joints for c in CONVENTIONS}
    tracked = track_people(dets, sizes, max_persons=2)
    assert tracked.persons == 2
    for t in range(10):
        for slot, maker in ((0, _a), (1, _b)):
            present = any(p[0] is (A_BOX if slot == 0 else B_BOX) for p in SCRIPT[t])
            if not present:
                assert tracked.scores[t, slot] == 0 and not tracked.poses["smplx_42"][t, slot].any()
                continue
            want = metrabs_to_kinect(scripted.expected_mm(maker(t)[1], "smplx_42"))
            np.testing.assert_allclose(tracked.poses["smplx_42"][t, slot], want, rtol=1e-6, atol=1e-6)
            assert tracked.scores[t, slot] == pytest.approx((A_BOX if slot == 0 else B_BOX)[4])


def test_extract_video_pixel_mode_calls_once_per_batch(tmp_path: Path) -> None:
    info = build_standin(tmp_path / "pix")
    ex = MetrabsExtractor(str(info.path), ("smpl_24", "kinectv2_25"))
    rng = np.random.default_rng(1)
    frames = [np.clip(rng.normal(120, 30, (48, 64, 3)), 0, 255).astype(np.uint8) for _ in range(10)]
    frames[3][:] = 0  # a black frame: nobody
    video = tmp_path / "v.avi"
    write_video(video, frames)
    clip = extract_video(VideoJob(video, "v", None), ex, ExtractOptions(batch_size=4))
    assert int(ex.model.calls.numpy()) == 3  # ceil(10 / 4) batches, whatever the conventions
    assert clip.status == "ok" and clip.frames == 10 and clip.persons == 2
    np.testing.assert_array_equal(clip.frame_indices, np.arange(10))
    assert clip.scores[3].tolist() == [0.0, 0.0]
    assert clip.poses["smpl_24"].shape == (10, 2, 24, 3)
    # The image-left person (camera x < 0 -> larger Kinect x) stays in one slot although the
    # stand-in lists the two in swapped order on some frames.
    xs = clip.poses["smpl_24"][:, :, 0, 0]
    ok = np.arange(10) != 3
    diff = np.sign(xs[ok, 0] - xs[ok, 1])
    assert (diff == diff[0]).all()
    decoded = np.concatenate([b.frames for b in iter_frame_batches(video)])
    means = decoded[:, :, :32].reshape(10, -1).mean(axis=1)[ok]
    assert len(set((np.floor(means) % 2).tolist())) == 2  # both orders occurred


def test_joint_name_mismatch_and_missing_convention(tmp_path: Path) -> None:
    info = build_standin(tmp_path / "bad", conventions=("smpl_24", "smplx_42"),
                         rename={"smplx_42": {27: "nose_tip", 30: "right_ear"}})
    model = load_pose_model(str(info.path))
    with pytest.raises(ExtractionError) as err:
        MetrabsExtractor(str(info.path), ("smpl_24", "smplx_42"), model=model)
    text = str(err.value)
    assert "smplx_42" in text and "'nose_tip'" in text and "'nose'" in text and "'right_ear'" in text
    assert "27:" in text and "30:" in text and "'rear'" in text
    with pytest.raises(ExtractionError, match="no skeleton 'kinectv2_25'.*smpl_24"):
        MetrabsExtractor(str(info.path), ("smpl_24", "kinectv2_25"), model=model)
    ok = MetrabsExtractor(str(info.path), ("smpl_24",), model=model)
    assert ok.conventions == ("smpl_24",)


def test_loader_errors(tmp_path: Path) -> None:
    with pytest.raises(ExtractionError, match="neither a URL nor an existing directory"):
        load_pose_model(str(tmp_path / "missing"))
    archive = tmp_path / "model.tar.gz"
    archive.write_bytes(b"x")
    with pytest.raises(ExtractionError, match="unpack it"):
        load_pose_model(str(archive))
    with pytest.raises(ExtractionError, match="saved_model.pb"):
        load_pose_model(str(tmp_path))
