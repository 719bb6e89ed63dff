"""Joint / motion / bone streams, bones from the batch's own skeleton (docs/method.md, "Streams" and "Each convention uses its own bones")."""

from __future__ import annotations

import pytest
import torch

from msclr.models.streams import to_stream
from msclr.skeletons import SKELETONS

# The reference's NTU bone pairs (child, parent), 1-based in AimCLR's feeder, here 0-based, plus the centre.
NTU_REFERENCE_BONES = [
    (0, 1), (1, 20), (2, 20), (3, 2), (4, 20), (5, 4), (6, 5), (7, 6), (8, 20), (9, 8), (10, 9), (11, 10),
    (12, 0), (13, 12), (14, 13), (15, 14), (16, 0), (17, 16), (18, 17), (19, 18), (21, 22), (22, 7),
    (23, 24), (24, 11), (20, 20),
]


def batch(v: int, *, n: int = 3, t: int = 7, m: int = 2, dtype=torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(v)
    return torch.randn((n, 3, t, v, m), generator=g, dtype=dtype)


def test_joint_is_identity() -> None:
    x = batch(25)
    assert to_stream(x, "joint", "ntu_kinect_25") is x


def test_motion_is_forward_difference_with_zero_last_frame() -> None:
    x = batch(42)
    out = to_stream(x, "motion", "smplx_42")
    assert out.shape == x.shape and out.dtype == x.dtype
    torch.testing.assert_close(out[:, :, :-1], x[:, :, 1:] - x[:, :, :-1], rtol=0, atol=0)
    assert torch.all(out[:, :, -1] == 0)


@pytest.mark.parametrize("name", list(SKELETONS))
def test_bone_uses_the_skeletons_parents(name: str) -> None:
    skeleton = SKELETONS[name]
    x = batch(skeleton.num_joints, dtype=torch.float64)
    out = to_stream(x, "bone", skeleton)
    zero = {skeleton.centre, *skeleton.isolated}
    for child, parent in skeleton.bones:
        torch.testing.assert_close(out[:, :, :, child], x[:, :, :, child] - x[:, :, :, parent], rtol=0, atol=0)
        if child in zero:
            assert torch.all(out[:, :, :, child] == 0)
        else:
            assert torch.all(out[:, :, :, child] != 0), f"{name}: joint {child} got no bone"


def test_smplx_bones_zero_at_centre_and_eye_points() -> None:
    x = batch(42)
    out = to_stream(x, "bone", "smplx_42")
    zero_joints = [v for v in range(42) if torch.all(out[:, :, :, v] == 0)]
    assert zero_joints == [9, 23, 24]


def test_ntu_bones_equal_the_reference_pairs() -> None:
    x = batch(25, dtype=torch.float64)
    expected = torch.zeros_like(x)
    for child, parent in NTU_REFERENCE_BONES:
        expected[:, :, :, child] = x[:, :, :, child] - x[:, :, :, parent]
    torch.testing.assert_close(to_stream(x, "bone", "ntu_kinect_25"), expected, rtol=0, atol=0)


def test_bones_come_from_the_batch_skeleton_not_ntu() -> None:
    # Same V, different hand edges: kinectv2_25 hangs the thumbs on the wrists, NTU on the hand tips.
    x = batch(25)
    ntu = to_stream(x, "bone", "ntu_kinect_25")
    kinect = to_stream(x, "bone", "kinectv2_25")
    torch.testing.assert_close(kinect[:, :, :, 22], x[:, :, :, 22] - x[:, :, :, 6])
    assert not torch.allclose(ntu[:, :, :, 22], kinect[:, :, :, 22])
    torch.testing.assert_close(ntu[:, :, :, :21], kinect[:, :, :, :21])
    # The reference's NTU bone pairs on SMPL-X joints (docs/method.md) are impossible: the joint counts must match.
    with pytest.raises(ValueError, match="smplx_42|25"):
        to_stream(batch(42), "bone", "ntu_kinect_25")


def test_padded_batches() -> None:
    x = torch.zeros(2, 3, 5, 42, 2)
    x[:, :, :, :25] = batch(25, n=2, t=5)
    bone = to_stream(x, "bone", "ntu_kinect_25", padded=True)
    torch.testing.assert_close(bone[:, :, :, :25], to_stream(x[:, :, :, :25].contiguous(), "bone", "ntu_kinect_25"))
    assert torch.all(bone[:, :, :, 25:] == 0)
    assert torch.all(to_stream(x, "motion", "ntu_kinect_25", padded=True)[:, :, :, 25:] == 0)
    with pytest.raises(ValueError):
        to_stream(x[:, :, :, :20], "bone", "ntu_kinect_25", padded=True)  # fewer joints than the skeleton


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown stream"):
        to_stream(batch(25), "velocity", "ntu_kinect_25")
    with pytest.raises(ValueError, match=r"\(N, C, T, V, M\)"):
        to_stream(torch.zeros(3, 5, 25, 2), "bone", "ntu_kinect_25")


@pytest.mark.parametrize("device", ["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
def test_device_and_dtype_preserved(device: str) -> None:
    x = batch(42, dtype=torch.float64).to(device)
    for stream in ("joint", "motion", "bone"):
        out = to_stream(x, stream, SKELETONS["smplx_42"])
        assert out.device == x.device and out.dtype == x.dtype and out.shape == x.shape
