"""50-frame preprocessing: valid frames, centring, half-pixel resampling (== torch), y-rotation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import require_file

from msclr.errors import SkeletonError
from msclr.pipeline.preprocess import (
    EmptyClipError,
    linear_resample_weights,
    preprocess_cache,
    preprocess_clip,
    resample_linear,
    valid_frames,
    y_rotation_angles,
)
from msclr.skeletons import SKELETONS, Skeleton

NTU = SKELETONS["ntu_kinect_25"]
SMPLX = SKELETONS["smplx_42"]


def random_poses(rng: np.random.Generator, frames: int, persons: int, joints: int, scale: float = 1.0) -> np.ndarray:
    """(T, M, V, 3) float32 poses with every person present in every frame."""
    base = rng.normal(0.0, 0.3, (1, persons, joints, 3)) + np.array([0.0, 0.0, 3.0])
    walk = np.cumsum(rng.normal(0.0, 0.02 * scale, (frames, persons, joints, 3)), axis=0)
    return (base + walk).astype(np.float32)


def torch_resize(x: np.ndarray, length: int) -> np.ndarray:
    """Reference: torch linear interpolation (align_corners=False) along axis 0 of (T, ...)."""
    flat = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).reshape(x.shape[0], -1).T[None]
    out = torch.nn.functional.interpolate(flat, size=length, mode="linear", align_corners=False)
    return out[0].T.reshape((length,) + x.shape[1:]).numpy()


# ------------------------------------------------------------------ resampling
@pytest.mark.parametrize("frames", [1, 2, 3, 7, 20, 49, 50, 51, 103, 300])
@pytest.mark.parametrize("length", [1, 2, 7, 20, 49, 50, 51, 64, 300])
def test_resample_equals_torch_interpolate(frames: int, length: int) -> None:
    rng = np.random.default_rng(frames * 1000 + length)
    x = rng.uniform(-5.0, 5.0, (frames, 2, 4, 3)).astype(np.float32)  # jumpy data: worst case for rounding
    np.testing.assert_allclose(resample_linear(x, length, axis=0), torch_resize(x, length), rtol=0, atol=1e-6)


@pytest.mark.parametrize("frames,length", [(1, 50), (5, 50), (37, 50), (50, 50), (103, 50), (300, 50), (80, 13)])
def test_preprocess_clip_resize_equals_torch(frames: int, length: int) -> None:
    rng = np.random.default_rng(frames)
    poses = random_poses(rng, frames, 2, NTU.num_joints)
    out = preprocess_clip(poses, NTU, length=length, centre=False)
    assert out.shape == (3, length, 25, 2) and out.dtype == np.float32
    expected = torch_resize(poses, length).transpose(3, 0, 2, 1)  # (T, M, V, C) -> (C, T, V, M)
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-6)


def test_resample_identity_and_constant() -> None:
    x = np.random.default_rng(0).normal(size=(30, 5))
    np.testing.assert_array_equal(resample_linear(x, 30), x)  # same length: exact copy
    np.testing.assert_allclose(resample_linear(np.full((7, 2), 1.5), 50), 1.5, rtol=0, atol=1e-12)
    i0, i1, w0, w1 = linear_resample_weights(4, 8)
    assert i0[0] == 0 and w1[0] == 0.0  # clamped at the first frame
    assert i1[-1] == 3 and i0[-1] == 3  # clamped at the last frame
    np.testing.assert_allclose(w0 + w1, 1.0)
    with pytest.raises(ValueError):
        linear_resample_weights(0, 50)


# ---------------------------------------------------------- valid frames, centring
def test_centring_on_the_skeletons_centre_and_absent_person_stays_zero() -> None:
    rng = np.random.default_rng(1)
    poses = random_poses(rng, 40, 2, SMPLX.num_joints)
    poses[:, 1] = 0.0  # second person absent throughout
    out = preprocess_clip(poses, SMPLX, length=50)
    assert np.all(out[:, :, SMPLX.centre, 0] == 0.0)  # thorax (9), not NTU's index 20 (the left wrist here)
    assert np.all(out[:, :, 20, 0] != 0.0)
    assert np.all(out[..., 1] == 0.0)
    # Centring is a translation per frame: relative positions are unchanged (checked without resampling).
    same = preprocess_clip(poses, SMPLX, length=40)
    np.testing.assert_allclose(
        same[:, :, 16, 0] - same[:, :, 17, 0], (poses[:, 0, 16] - poses[:, 0, 17]).T, atol=1e-6
    )


def test_partially_present_person_is_centred_only_where_present() -> None:
    rng = np.random.default_rng(2)
    poses = random_poses(rng, 10, 2, NTU.num_joints)
    poses[3:6, 1] = 0.0
    out = preprocess_clip(poses, NTU, length=10)  # 10 valid frames -> no resampling
    assert np.all(out[:, 3:6, :, 1] == 0.0)
    assert np.all(out[:, :, 20, :] == 0.0)
    np.testing.assert_allclose(out[:, 0, :, 1], (poses[0, 1] - poses[0, 1, 20]).T, atol=1e-6)


def test_located_drops_empty_frames_anywhere_counted_reproduces_reference() -> None:
    rng = np.random.default_rng(3)
    clip = random_poses(rng, 3, 2, NTU.num_joints)
    poses = np.zeros((6, 2, 25, 3), np.float32)
    poses[[1, 2, 4]] = clip  # frames 0, 3, 5 empty (detector misses)
    np.testing.assert_array_equal(valid_frames(poses, "located"), [1, 2, 4])
    np.testing.assert_array_equal(valid_frames(poses, "counted"), [0, 1, 2])  # count = 3, assumed first
    located = preprocess_clip(poses, NTU, length=3, centre=False)
    np.testing.assert_array_equal(located, clip.transpose(3, 0, 2, 1))
    counted = preprocess_clip(poses, NTU, length=3, centre=False, valid="counted")
    np.testing.assert_array_equal(counted[:, 0], 0.0)
    np.testing.assert_array_equal(counted[:, 1:], clip[:2].transpose(3, 0, 2, 1))


def test_counted_uses_person_zero_joint_zero_and_agrees_on_reference_layout() -> None:
    rng = np.random.default_rng(4)
    poses = np.zeros((300, 2, 25, 3), np.float32)  # the reference's zero-padded 300-frame tensor
    poses[:71] = random_poses(rng, 71, 2, 25)
    np.testing.assert_array_equal(
        preprocess_clip(poses, NTU, valid="counted"), preprocess_clip(poses, NTU, valid="located")
    )
    # Person 0 missing while person 1 is there: the count ignores person 1's frames.
    poses[60:71, 0] = 0.0
    assert len(valid_frames(poses, "counted")) == 60
    assert len(valid_frames(poses, "located")) == 71


def test_empty_clip_raises_or_returns_zeros() -> None:
    poses = np.zeros((12, 2, 25, 3), np.float32)
    with pytest.raises(EmptyClipError, match="allow_empty"):
        preprocess_clip(poses, NTU)
    with pytest.raises(EmptyClipError):
        preprocess_clip(np.zeros((0, 2, 25, 3), np.float32), NTU)
    out = preprocess_clip(poses, NTU, allow_empty=True, length=20)
    assert out.shape == (3, 20, 25, 2) and not out.any()
    poses[:, 1, 3] = 1.0  # person 0 never there: counted finds nothing, located finds person 1
    with pytest.raises(EmptyClipError):
        preprocess_clip(poses, NTU, valid="counted")
    assert preprocess_clip(poses, NTU).any()


def test_bad_inputs() -> None:
    poses = random_poses(np.random.default_rng(5), 10, 2, 25)
    with pytest.raises(ValueError, match="42"):
        preprocess_clip(poses, SMPLX)
    with pytest.raises(ValueError, match=r"\(T, M, V, 3\)"):
        preprocess_clip(poses[..., :2], NTU)
    bad = poses.copy()
    bad[3, 0, 4, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        preprocess_clip(bad, NTU)
    with pytest.raises(ValueError, match="located"):
        preprocess_clip(poses, NTU, valid="first")
    with pytest.raises(ValueError, match="y_rotation"):
        preprocess_clip(poses, NTU, y_rotation="yes")
    no_shoulders = Skeleton.from_dict({"name": "stick", "joints": ["a", "b", "c"], "edges": [["a", "b"], ["b", "c"]],
                                       "centre": "b"})
    with pytest.raises(SkeletonError, match="shoulders"):
        preprocess_clip(np.ones((4, 1, 3, 3), np.float32), no_shoulders, y_rotation=True)
    assert preprocess_clip(np.ones((4, 1, 3, 3), np.float32), no_shoulders, length=5).shape == (3, 5, 3, 1)


# ------------------------------------------------------------------ y-rotation
def reference_parallel_skeleton(x: np.ndarray, left: int, right: int) -> np.ndarray:
    """The reference's per-frame y-rotation of one person, written as plainly as possible.

    x: (T, V, 3).  Sequence-wide sign from the sum of v_z, per-frame arccos angle.
    """
    out = x.copy()
    v = x[:, right] - x[:, left]
    v[:, 1] = 0.0
    negate = v[:, 2].sum() >= 0
    for t in range(x.shape[0]):
        theta = np.arccos(v[t, 0] / (np.linalg.norm(v[t]) + 1e-4))
        if negate:
            theta = -theta
        c, s = np.cos(theta), np.sin(theta)
        rot = np.array([[c, 0.0, -s], [0.0, 1.0, 0.0], [s, 0.0, c]])
        for j in range(x.shape[1]):
            out[t, j] = rot @ x[t, j]
    return out


def turning_person(frames: int = 40, persons: int = 2) -> np.ndarray:
    """Two people whose shoulder lines turn through +-60 degrees of yaw (v_z changes sign)."""
    rng = np.random.default_rng(6)
    poses = random_poses(rng, frames, persons, 25, scale=0.2)
    yaw = np.deg2rad(np.linspace(-60, 60, frames))
    for m in range(persons):
        centre = poses[:, m, 20:21].copy()
        poses[:, m, 4] = centre[:, 0] + 0.2 * np.stack([-np.cos(yaw), np.zeros_like(yaw), np.sin(yaw)], -1)
        poses[:, m, 8] = centre[:, 0] + 0.2 * np.stack([np.cos(yaw), np.zeros_like(yaw), -np.sin(yaw)], -1)
    return poses.astype(np.float32)


def test_frame_rotation_puts_every_frames_shoulders_on_plus_x() -> None:
    poses = turning_person()
    out = preprocess_clip(poses, NTU, length=40, y_rotation="frame").transpose(1, 3, 2, 0)  # (T, M, V, 3)
    shoulder = out[:, :, 8] - out[:, :, 4]
    np.testing.assert_allclose(shoulder[..., 2], 0.0, atol=1e-6)
    assert np.all(shoulder[..., 0] > 0.3)
    # A rotation about y: y unchanged, distances to the (zero) centre unchanged.
    plain = preprocess_clip(poses, NTU, length=40).transpose(1, 3, 2, 0)
    np.testing.assert_allclose(out[..., 1], plain[..., 1], atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(out, axis=-1), np.linalg.norm(plain, axis=-1), atol=1e-5)
    np.testing.assert_array_equal(preprocess_clip(poses, NTU, y_rotation=True),
                                  preprocess_clip(poses, NTU, y_rotation="frame"))


def test_sequence_rotation_reproduces_reference_quirk() -> None:
    poses = turning_person()
    out = preprocess_clip(poses, NTU, length=40, y_rotation="sequence").transpose(1, 3, 2, 0)
    plain = preprocess_clip(poses, NTU, length=40).transpose(1, 3, 2, 0).astype(np.float64)
    for m in range(2):
        expected = reference_parallel_skeleton(plain[:, m], left=4, right=8)
        np.testing.assert_allclose(out[:, m], expected, atol=2e-6)
    # The quirk: frames whose v_z disagrees with the sequence sign end up off the x axis.
    shoulder = out[:, 0, 8] - out[:, 0, 4]
    assert np.abs(shoulder[:, 2]).max() > 0.1
    assert np.abs(shoulder[:, 2]).min() < 1e-4


def test_rotation_angles_zero_vector_and_absent_person() -> None:
    poses = turning_person(10, 2)
    poses[:, 1] = 0.0
    theta = y_rotation_angles(poses.astype(np.float64), (4, 8), "frame")
    assert np.all(theta[:, 1] == 0.0)
    out = preprocess_clip(poses, NTU, length=10, y_rotation="sequence")
    assert np.all(out[..., 1] == 0.0)


# -------------------------------------------------------------- preprocess_cache
class FakeCache:
    """Exposes what preprocess_cache uses: skeletons, names, max_persons and poses()."""

    def __init__(self, clips: dict[str, np.ndarray], skeleton: Skeleton) -> None:
        self.clips = clips
        self.skeletons = {skeleton.name: skeleton}
        self.names = sorted(clips)
        self.max_persons = 2
        self.requests: list[list[str]] = []

    def poses(self, convention: str, names=None) -> list[np.ndarray]:
        names = self.names if names is None else list(names)
        self.requests.append(names)
        return [self.clips[n] for n in names]


def test_preprocess_cache_stacks_clips_in_order_and_chunks() -> None:
    rng = np.random.default_rng(7)
    clips = {f"clip{i:02d}": random_poses(rng, int(rng.integers(5, 120)), 2, 42) for i in range(7)}
    clips["clip03"][:, 1] = 0.0
    cache = FakeCache(clips, SMPLX)
    done: list[int] = []
    order = ["clip05", "clip00", "clip03", "clip06"]
    out = preprocess_cache(cache, "smplx_42", order, chunk_size=3, y_rotation=True, progress=done.append)
    assert out.shape == (4, 3, 50, 42, 2) and out.dtype == np.float32
    for i, name in enumerate(order):
        np.testing.assert_array_equal(out[i], preprocess_clip(clips[name], SMPLX, y_rotation=True))
    assert cache.requests == [order[:3], order[3:]] and sum(done) == 4
    everything = preprocess_cache(cache, "smplx_42", length=20)
    assert everything.shape == (7, 3, 20, 42, 2)
    np.testing.assert_array_equal(everything[2], preprocess_clip(clips["clip02"], SMPLX, length=20))
    assert preprocess_cache(cache, "smplx_42", []).shape == (0, 3, 50, 42, 2)


def test_preprocess_cache_errors_name_the_clip_and_convention() -> None:
    clips = {"good": random_poses(np.random.default_rng(8), 9, 2, 42), "blank": np.zeros((9, 2, 42, 3), np.float32)}
    cache = FakeCache(clips, SMPLX)
    with pytest.raises(EmptyClipError, match="'blank'"):
        preprocess_cache(cache, "smplx_42")
    out = preprocess_cache(cache, "smplx_42", allow_empty=True)
    assert not out[0].any() and out[1].any()
    with pytest.raises(SkeletonError, match="smplx_42"):
        preprocess_cache(cache, "ntu_kinect_25")


def test_preprocess_cache_with_the_real_cache(tmp_path) -> None:
    cache_mod = pytest.importorskip("msclr.pipeline.cache")
    rng = np.random.default_rng(9)
    clips = {f"v{i}": random_poses(rng, 30 + 7 * i, 2, 25) for i in range(3)}
    with cache_mod.CacheWriter(tmp_path / "c", [NTU], max_persons=2) as writer:
        for name, poses in clips.items():
            writer.add(cache_mod.Clip(name=name, poses={NTU.name: poses}, persons=2))
    cache = cache_mod.Cache(tmp_path / "c")
    out = preprocess_cache(cache, NTU.name)
    for i, name in enumerate(sorted(clips)):
        np.testing.assert_array_equal(out[i], preprocess_clip(clips[name], NTU))


# ------------------------------------------------------------------ real data
def test_real_utd_mhad_kinect_v1(shared_data) -> None:
    from msclr.pipeline.datasets.safe_pickle import safe_load

    data = safe_load(require_file(shared_data, "utd_mhad/utd_mhad_3d.pkl"))
    skeleton = SKELETONS["kinect_v1_20"]
    left, right = skeleton.shoulders
    for ann in data["annotations"][::97]:  # 9 sequences across classes and subjects
        poses = np.asarray(ann["keypoint"], np.float32).transpose(1, 0, 2, 3)  # (1, T, V, 3) -> (T, M=1, V, 3)
        plain = preprocess_clip(poses, skeleton, centre=False)
        np.testing.assert_allclose(plain, torch_resize(poses, 50).transpose(3, 0, 2, 1), atol=1e-6)
        out = preprocess_clip(poses, skeleton, y_rotation=True)
        assert np.all(out[:, :, skeleton.centre] == 0.0)
        shoulder = out[:, :, right, 0] - out[:, :, left, 0]  # (3, 50)
        np.testing.assert_allclose(shoulder[2], 0.0, atol=1e-6)
        assert np.all(shoulder[0] > 0.1)  # shoulder width (Kinect: 0.18-0.37 m), on +x
        # Subjects face the sensor: the rotation is small, y stays up (head above the feet).
        theta = y_rotation_angles(plain.transpose(1, 3, 2, 0).astype(np.float64), (left, right))
        assert np.median(np.abs(theta)) < np.deg2rad(30)
        assert np.all(out[1, :, skeleton.index("head"), 0] > out[1, :, skeleton.index("left_foot"), 0])
