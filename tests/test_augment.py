"""Batched augmentations == per-sample NumPy implementations of the reference (docs/method.md, "Augmentations")."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from msclr.models.augment import (
    ExtremeParams,
    NormalParams,
    apply_extreme,
    apply_normal,
    blur_kernels,
    crop_indices,
    draw_extreme_params,
    draw_normal_params,
    extreme_augment,
    normal_augment,
    rotation_matrices,
    temporal_blur,
)
from msclr.skeletons import SKELETONS

SMPLX = SKELETONS["smplx_42"]
NTU = SKELETONS["ntu_kinect_25"]
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def batch(n: int = 6, t: int = 50, v: int = 42, m: int = 2, *, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((n, 3, t, v, m), generator=g, dtype=dtype)
    if n > 1:
        x[1, :, :, :, 1] = 0.0  # an absent second person
    if n > 3:
        x[3, :, 40:, :, 1] = 0.0  # a second person who leaves
    return x


# ------------------------------------------------ per-sample NumPy references
def ref_crop(x: np.ndarray, start: int, ratio: int = 6) -> np.ndarray:
    """tools.py temperal_crop on one (C, T, V, M) sample with a given start."""
    _, t, _, _ = x.shape
    p = t // ratio
    if p == 0:
        return x[:, start : start + t]
    padded = np.concatenate((x[:, :p][:, ::-1], x, x[:, -p:][:, ::-1]), axis=1)
    return padded[:, start : start + t]


def ref_linear(x: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """tools.py shear/rotate: np.dot((T, V, M, C), R.T) == p' = R p."""
    return np.dot(x.transpose(1, 2, 3, 0), matrix.T).transpose(3, 0, 1, 2)


def ref_rotation(angles: np.ndarray) -> np.ndarray:
    """tools.py random_rotate: x, then y, then z, with the reference's matrices."""
    out = np.eye(3)
    for axis, a in enumerate(angles):
        c, s = np.cos(a), np.sin(a)
        if axis == 0:
            r = np.array([[1, 0, 0], [0, c, s], [0, -s, c]])
        elif axis == 1:
            r = np.array([[c, 0, -s], [0, 1, 0], [s, 0, c]])
        else:
            r = np.array([[c, s, 0], [-s, c, 0], [0, 0, 1]])
        out = r @ out
    return out


def ref_blur(x: np.ndarray, sigma: float, normalize: bool) -> np.ndarray:
    """tools.py GaussianBlurConv: conv2d over (M, C, V, T), kernel (3, 1, 1, 15), padding (0, 7)."""
    k = np.arange(-7, 8)
    w = np.exp(-(k**2) / (2.0 * sigma**2))
    if normalize:
        w = w / w.sum()
    weight = torch.from_numpy(w).double().view(1, 1, 1, 15).repeat(3, 1, 1, 1)
    y = torch.from_numpy(np.ascontiguousarray(x)).double().permute(3, 0, 2, 1)  # M, C, V, T
    y = torch.nn.functional.conv2d(y, weight, padding=(0, 7), groups=3)
    return y.permute(1, 3, 2, 0).numpy()  # C, T, V, M


def ref_extreme(x: np.ndarray, i: int, p: ExtremeParams, flip: tuple[int, ...], *, normalize_blur=False,
                mirror_flip=False, noise_absent=True) -> np.ndarray:
    y = ref_crop(x, int(p.normal.start[i]))
    y = ref_linear(y, p.normal.shear[i].numpy())
    if p.flip[i]:
        y = y[:, :, list(flip)]
        if mirror_flip:
            y = y * np.array([-1.0, 1.0, 1.0])[:, None, None, None]
    y = ref_linear(y, ref_rotation(p.angles[i].numpy()))
    if p.noise_on[i]:
        noise = p.noise[i].numpy()
        if not noise_absent:
            present = np.any(y != 0, axis=(0, 2))  # (T, M)
            noise = noise * present[None, :, None, :]
        y = y + noise
    if p.blur_on[i]:
        y = ref_blur(y, float(p.sigma[i]), normalize_blur)
    if p.mask_on[i]:
        y = y.copy()
        y[int(p.mask_axis[i])] = 0.0
    return y


def fixed_extreme_params(x: torch.Tensor, seed: int = 1) -> ExtremeParams:
    """Random continuous parameters, but every on/off flag pattern represented."""
    n = x.shape[0]
    p = draw_extreme_params(x, torch.Generator().manual_seed(seed))
    pattern = torch.arange(n)
    p.flip = pattern % 2 == 0
    p.noise_on = (pattern // 2) % 2 == 0
    p.blur_on = (pattern % 3) != 1
    p.mask_on = (pattern % 4) < 2
    p.mask_axis = pattern % 3
    p.normal.start = torch.tensor([0, 16, 3, 8, 11, 16][:n])
    return p


# ------------------------------------------------------------------- normal
def test_crop_indices_mirror_the_edge_frames() -> None:
    idx = crop_indices(torch.tensor([0, 8, 16]), 50)
    assert idx[0].tolist() == [7, 6, 5, 4, 3, 2, 1, 0, 0, 1] + list(range(2, 42))
    assert idx[1].tolist() == list(range(50))
    assert idx[2].tolist()[-10:] == [48, 49, 49, 48, 47, 46, 45, 44, 43, 42]
    assert crop_indices(torch.tensor([0]), 5).tolist() == [[0, 1, 2, 3, 4]]  # T < 6: no padding


@pytest.mark.parametrize("frames", [50, 13, 5])
def test_normal_equals_per_sample_reference(frames: int) -> None:
    x = batch(t=frames)
    params = draw_normal_params(x, torch.Generator().manual_seed(3))
    out = apply_normal(x, params)
    for i in range(x.shape[0]):
        expected = ref_linear(ref_crop(x[i].numpy(), int(params.start[i])), params.shear[i].numpy())
        np.testing.assert_allclose(out[i].numpy(), expected, rtol=0, atol=1e-12)


def test_normal_parameter_distribution() -> None:
    x = torch.zeros(4000, 3, 50, 2, 1)
    p = draw_normal_params(x, torch.Generator().manual_seed(0))
    assert set(p.start.tolist()) == set(range(17))
    off = p.shear[:, [0, 0, 1, 1, 2, 2], [1, 2, 0, 2, 0, 1]]
    assert off.abs().max() < 0.5 and off.abs().max() > 0.49
    assert torch.all(p.shear[:, [0, 1, 2], [0, 1, 2]] == 1.0)
    assert abs(off.mean().item()) < 0.01
    assert len(torch.unique(off[:, 0])) == 4000  # every sample has its own parameters


# ------------------------------------------------------------------ extreme
@pytest.mark.parametrize("options", [
    {},
    {"normalize_blur": True, "mirror_flip": True, "noise_absent": False},
])
def test_extreme_equals_per_sample_reference(options: dict) -> None:
    x = batch()
    params = fixed_extreme_params(x)
    out = apply_extreme(x, SMPLX, params, **options)
    for i in range(x.shape[0]):
        expected = ref_extreme(x[i].numpy(), i, params, SMPLX.flip, **options)
        np.testing.assert_allclose(out[i].numpy(), expected, rtol=0, atol=1e-10, err_msg=f"sample {i}")


def test_flip_alone_permutes_joints_with_the_skeletons_flip() -> None:
    for skeleton in (SMPLX, NTU, SKELETONS["berkeley_mhad_43"]):
        x = batch(n=2, v=skeleton.num_joints)
        p = identity_params(x)
        p.flip = torch.tensor([True, False])
        out = apply_extreme(x, skeleton, p)
        torch.testing.assert_close(out[0], x[0][:, :, list(skeleton.flip)], rtol=0, atol=1e-12)
        torch.testing.assert_close(out[1], x[1], rtol=0, atol=1e-12)
        mirrored = apply_extreme(x, skeleton, p, mirror_flip=True)
        torch.testing.assert_close(mirrored[0, 0], -out[0, 0], rtol=0, atol=1e-12)
        torch.testing.assert_close(mirrored[0, 1:], out[0, 1:], rtol=0, atol=1e-12)


def identity_params(x: torch.Tensor) -> ExtremeParams:
    n, t = x.shape[0], x.shape[2]
    off = torch.zeros(n, dtype=torch.bool)
    return ExtremeParams(
        normal=NormalParams(start=torch.full((n,), t // 6), shear=torch.eye(3, dtype=x.dtype).repeat(n, 1, 1)),
        flip=off, angles=torch.zeros(n, 3, dtype=x.dtype), noise_on=off, noise=torch.zeros_like(x), blur_on=off,
        sigma=torch.ones(n, dtype=x.dtype), mask_on=off, mask_axis=torch.zeros(n, dtype=torch.long),
    )


def test_noise_absent_option_keeps_absent_persons_zero() -> None:
    x = batch(n=2)
    p = identity_params(x)
    p.noise_on = torch.tensor([True, True])
    p.noise = 0.01 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0), dtype=x.dtype)
    reference = apply_extreme(x, SMPLX, p)
    assert torch.all(reference[1, :, :, :, 1] != 0)  # the reference jitters the absent person
    clean = apply_extreme(x, SMPLX, p, noise_absent=False)
    assert torch.all(clean[1, :, :, :, 1] == 0)
    torch.testing.assert_close(clean[0], reference[0])


def test_blur_kernel_gain_and_normalisation() -> None:
    sigma = torch.tensor([0.1, 1.0, 2.0], dtype=torch.float64)
    raw = blur_kernels(sigma)
    assert raw.shape == (3, 15) and torch.all(raw[:, 7] == 1.0)
    np.testing.assert_allclose(raw.sum(1).numpy()[1:], (sigma * np.sqrt(2 * np.pi)).numpy()[1:], rtol=1e-3)
    norm = blur_kernels(sigma, normalize=True)
    np.testing.assert_allclose(norm.sum(1).numpy(), 1.0)
    const = torch.ones(3, 3, 30, 1, 1, dtype=torch.float64)
    out = temporal_blur(const, norm)
    np.testing.assert_allclose(out[:, :, 7:-7].numpy(), 1.0)  # interior: constant preserved
    # Zero padding: the first frame loses the kernel's left half (sigma 0.1 is nearly a delta).
    np.testing.assert_allclose(out[:, 0, 0, 0, 0].numpy(), norm[:, 7:].sum(1).numpy())
    assert out[0, 0, 0, 0, 0] > 0.999 and out[2, 0, 0, 0, 0] < 0.6


def test_rotation_matrices_are_rotations_in_reference_order() -> None:
    angles = torch.deg2rad(torch.tensor([[30.0, 0.5, 0.2], [0.3, 25.0, 0.9], [0.0, 0.0, 90.0]], dtype=torch.float64))
    r = rotation_matrices(angles)
    for i in range(3):
        np.testing.assert_allclose(r[i].numpy(), ref_rotation(angles[i].numpy()), atol=1e-12)
    np.testing.assert_allclose((r @ r.transpose(1, 2)).numpy(), np.eye(3)[None].repeat(3, 0), atol=1e-12)
    np.testing.assert_allclose(torch.linalg.det(r).numpy(), 1.0)
    # R_z(90 deg) with the reference's sign convention sends x to -y.
    np.testing.assert_allclose(r[2].numpy() @ np.array([1.0, 0, 0]), [0.0, -1.0, 0.0], atol=1e-12)


def test_extreme_parameter_distribution() -> None:
    x = torch.zeros(4000, 3, 50, 2, 2)
    p = draw_extreme_params(x, torch.Generator().manual_seed(1))
    for flag in (p.flip, p.noise_on, p.blur_on, p.mask_on):
        assert 0.45 < flag.float().mean().item() < 0.55
    degrees = torch.rad2deg(p.angles)
    assert degrees.min() >= 0 and degrees.max() <= 30
    assert torch.all((degrees > 1).sum(1) <= 1)  # only the main axis may exceed one degree
    counts = torch.bincount(degrees.argmax(1), minlength=3)
    assert torch.all(counts > 1100)
    assert 0.1 <= p.sigma.min() and p.sigma.max() <= 2.0
    assert set(p.mask_axis.tolist()) == {0, 1, 2}
    assert abs(p.noise.std().item() - 0.01) < 2e-4


# ----------------------------------------------- shapes, devices, generators
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shapes_dtype_device_and_generator_reproducibility(device: str, dtype: torch.dtype) -> None:
    x = batch(n=5, v=25, dtype=dtype).to(device)
    for augment in (normal_augment, lambda x, g: extreme_augment(x, "ntu_kinect_25", g)):
        a = augment(x, torch.Generator().manual_seed(7))
        b = augment(x, torch.Generator().manual_seed(7))
        c = augment(x, torch.Generator().manual_seed(8))
        assert a.shape == x.shape and a.dtype == dtype and a.device == x.device
        torch.testing.assert_close(a, b, rtol=0, atol=0)
        assert not torch.allclose(a, c)
        # Same CPU generator -> same augmentation whatever the batch's device.
        cpu = augment(x.cpu(), torch.Generator().manual_seed(7))
        torch.testing.assert_close(a.cpu(), cpu, rtol=1e-5, atol=1e-5)
    no_generator = extreme_augment(x, NTU)
    assert no_generator.device == x.device and no_generator.shape == x.shape


def test_samples_get_independent_parameters() -> None:
    x = batch(n=4, v=25)[:1].repeat(4, 1, 1, 1, 1)  # the same clip four times
    out = normal_augment(x, torch.Generator().manual_seed(0))
    assert not torch.allclose(out[0], out[1]) and not torch.allclose(out[2], out[3])


def test_bad_batches_are_rejected() -> None:
    with pytest.raises(ValueError, match="native"):
        extreme_augment(batch(n=2, v=42), NTU)
    with pytest.raises(ValueError, match=r"\(N, C, T, V, M\)"):
        normal_augment(torch.zeros(3, 50, 25, 2))
    with pytest.raises(ValueError, match="C = 3"):
        normal_augment(torch.zeros(2, 2, 50, 25, 2))
