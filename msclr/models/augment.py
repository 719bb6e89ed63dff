"""MS-CLR's augmentations as batched torch ops on the training device (the reference's settings).

Input is a batch ``x`` of shape (N, C = 3, T, V, M) of ONE skeleton convention at its native V
(augment before any joint padding).  Every sample draws its own random parameters; pass a
``torch.Generator`` for reproducible runs.  Random parameters are drawn on the generator's
device (CPU generator -> drawn on the CPU, then moved to ``x.device``), or on ``x.device``
from torch's global RNG when no generator is given.  Nothing here loops over samples.

Each augmentation is split into ``draw_*_params`` (randomness) and ``apply_*`` (pure
function of ``x`` and the parameters), so tests can inject parameters.

**Normal augmentation** (query and key views): temporal crop, then shear.

- Temporal crop with padding ratio 6: p = T // 6 frames mirrored at each end (the first p
  frames reversed in front, the last p reversed at the back, so the edge frame repeats:
  ``x[p-1] .. x[0], x[0] .. x[T-1], x[T-1] .. x[T-p]``), then T consecutive frames from a start
  drawn uniformly in {0, ..., 2p}.
- Shear: p' = S p with S = [[1, a, b], [c, 1, d], [e, f, 1]], a..f ~ U(-0.5, 0.5).

**Extreme augmentation** (``aug_method '12345'``): normal, then

1. flip with probability 0.5: joints permuted with ``skeleton.flip``.  The reference only
   permutes the joint labels and does NOT mirror the coordinates (so a flipped sample is a
   physically impossible pose with left and right labels swapped); ``mirror_flip=False``
   (default) reproduces that, ``mirror_flip=True`` also negates x (Kinect x is horizontal), a
   true mirror image;
2. rotation, always: a main axis uniform in {x, y, z} gets an angle U(0, 30) degrees, the
   other two U(0, 1) degrees; applied x, then y, then z, p' = R_z R_y R_x p with
   R_x = [[1,0,0],[0,c,s],[0,-s,c]], R_y = [[c,0,-s],[0,1,0],[s,0,c]], R_z = [[c,s,0],[-s,c,0],[0,0,1]];
3. Gaussian noise N(0, 0.01^2) with probability 0.5.  The reference adds it to every element,
   including absent (all-zero) persons, which makes an absent second person look like a jittery
   point cloud at the origin; ``noise_absent=True`` (default) reproduces that,
   ``noise_absent=False`` only perturbs (frame, person) slots that are present;
4. temporal Gaussian blur with probability 0.5: kernel length 15, sigma ~ U(0.1, 2), depth-wise
   along T with zero padding 7.  The reference kernel exp(-k^2 / 2 sigma^2) is NOT normalised
   (gain about sigma * sqrt(2 pi), up to ~5x), inherited from AimCLR; ``normalize_blur=False``
   (default) reproduces it, ``True`` divides the kernel by its sum;
5. axis mask with probability 0.5: one coordinate axis (uniform in {x, y, z}) set to zero.

Defaults reproduce the reference so published numbers can be matched; the corrected variants
are opt-in and recorded in a run's config by the caller.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from msclr.skeletons import Skeleton, get_skeleton

PADDING_RATIO = 6
SHEAR_AMPLITUDE = 0.5
MAIN_ANGLE_DEG = 30.0
MINOR_ANGLE_DEG = 1.0
NOISE_STD = 0.01
BLUR_KERNEL = 15
BLUR_SIGMA = (0.1, 2.0)
PROBABILITY = 0.5


# ---------------------------------------------------------------- parameters
@dataclass
class NormalParams:
    """Per-sample parameters of the normal augmentation.

    Attributes:
        start: (N,) int64 crop start in the padded sequence, in {0, ..., 2 * (T // 6)}.
        shear: (N, 3, 3) shear matrices S (p' = S p).
    """

    start: torch.Tensor
    shear: torch.Tensor


@dataclass
class ExtremeParams:
    """Per-sample parameters of the extreme augmentation (applied after ``normal``).

    Attributes:
        normal: the normal augmentation's parameters.
        flip: (N,) bool, permute joints with the skeleton's flip.
        angles: (N, 3) rotation angles in radians about x, y, z (applied in that order).
        noise_on: (N,) bool; noise: (N, C, T, V, M) already scaled by the standard deviation.
        blur_on: (N,) bool; sigma: (N,) blur standard deviation in frames.
        mask_on: (N,) bool; mask_axis: (N,) int64 coordinate axis to zero.
    """

    normal: NormalParams
    flip: torch.Tensor
    angles: torch.Tensor
    noise_on: torch.Tensor
    noise: torch.Tensor
    blur_on: torch.Tensor
    sigma: torch.Tensor
    mask_on: torch.Tensor
    mask_axis: torch.Tensor


def _rand_device(x: torch.Tensor, generator: torch.Generator | None) -> torch.device:
    return generator.device if generator is not None else x.device


def _uniform(shape: tuple[int, ...], low: float, high: float, *, device: torch.device,
             generator: torch.Generator | None) -> torch.Tensor:
    u = torch.rand(shape, generator=generator, device=device, dtype=torch.float64)
    return low + (high - low) * u


def _check_batch(x: torch.Tensor) -> None:
    if x.dim() != 5:
        raise ValueError(f"expected a batch (N, C, T, V, M), got shape {tuple(x.shape)}")
    if x.shape[1] != 3:
        raise ValueError(f"augmentations need C = 3 coordinates, got C = {x.shape[1]}")
    if not x.is_floating_point():
        raise ValueError(f"augmentations need a floating-point batch, got {x.dtype}")


def draw_normal_params(
    x: torch.Tensor,
    generator: torch.Generator | None = None,
    *,
    shear_amplitude: float = SHEAR_AMPLITUDE,
    padding_ratio: int = PADDING_RATIO,
) -> NormalParams:
    """Draw crop starts and shear matrices for the batch ``x`` (N, C, T, V, M); tensors on ``x.device``."""
    _check_batch(x)
    n, _, t = x.shape[:3]
    device = _rand_device(x, generator)
    pad = t // padding_ratio
    start = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=device)
    coeff = _uniform((n, 6), -shear_amplitude, shear_amplitude, device=device, generator=generator)
    shear = torch.eye(3, dtype=torch.float64, device=device).repeat(n, 1, 1)
    rows = torch.tensor([0, 0, 1, 1, 2, 2], device=device)
    cols = torch.tensor([1, 2, 0, 2, 0, 1], device=device)
    shear[:, rows, cols] = coeff
    return NormalParams(start=start.to(x.device), shear=shear.to(x.device, x.dtype))


def draw_extreme_params(
    x: torch.Tensor,
    generator: torch.Generator | None = None,
    *,
    probability: float = PROBABILITY,
    shear_amplitude: float = SHEAR_AMPLITUDE,
    padding_ratio: int = PADDING_RATIO,
) -> ExtremeParams:
    """Draw every parameter of the extreme augmentation for ``x`` (N, C, T, V, M)."""
    normal = draw_normal_params(x, generator, shear_amplitude=shear_amplitude, padding_ratio=padding_ratio)
    n = x.shape[0]
    device = _rand_device(x, generator)

    def coin() -> torch.Tensor:
        return torch.rand((n,), generator=generator, device=device) < probability

    flip = coin()
    main_axis = torch.randint(0, 3, (n,), generator=generator, device=device)
    main = _uniform((n, 3), 0.0, MAIN_ANGLE_DEG, device=device, generator=generator)
    minor = _uniform((n, 3), 0.0, MINOR_ANGLE_DEG, device=device, generator=generator)
    is_main = torch.nn.functional.one_hot(main_axis, 3).bool()
    angles = torch.deg2rad(torch.where(is_main, main, minor))
    noise_on = coin()
    noise = NOISE_STD * torch.randn(tuple(x.shape), generator=generator, device=device, dtype=torch.float32)
    blur_on = coin()
    sigma = _uniform((n,), BLUR_SIGMA[0], BLUR_SIGMA[1], device=device, generator=generator)
    mask_on = coin()
    mask_axis = torch.randint(0, 3, (n,), generator=generator, device=device)
    dev, dt = x.device, x.dtype
    return ExtremeParams(
        normal=normal, flip=flip.to(dev), angles=angles.to(dev, dt), noise_on=noise_on.to(dev),
        noise=noise.to(dev, dt), blur_on=blur_on.to(dev), sigma=sigma.to(dev, dt), mask_on=mask_on.to(dev),
        mask_axis=mask_axis.to(dev),
    )


# --------------------------------------------------------------- application
def crop_indices(start: torch.Tensor, frames: int, padding_ratio: int = PADDING_RATIO) -> torch.Tensor:
    """(N, T) source frame of every output frame of the mirrored-padding temporal crop."""
    pad = frames // padding_ratio
    j = start[:, None] + torch.arange(frames, device=start.device)[None, :]  # index in the padded sequence
    src = j - pad
    src = torch.where(src < 0, -src - 1, src)  # front: x[p-1] .. x[0]
    src = torch.where(src >= frames, 2 * frames - 1 - src, src)  # back: x[T-1] .. x[T-p]
    return src


def temporal_crop(x: torch.Tensor, start: torch.Tensor, padding_ratio: int = PADDING_RATIO) -> torch.Tensor:
    """Mirrored-padding crop of (N, C, T, V, M) with per-sample ``start`` (N,); same shape out."""
    n, c, t, v, m = x.shape
    src = crop_indices(start.to(x.device), t, padding_ratio)
    return x.gather(2, src.view(n, 1, t, 1, 1).expand(n, c, t, v, m))


def linear_transform(x: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """p' = A_n p for every joint of sample n: ``matrix`` (N, 3, 3), ``x`` (N, 3, T, V, M)."""
    return torch.einsum("nij,njtvm->nitvm", matrix.to(x.dtype), x)


def apply_normal(x: torch.Tensor, params: NormalParams, *, padding_ratio: int = PADDING_RATIO) -> torch.Tensor:
    """Temporal crop then shear, with given parameters."""
    _check_batch(x)
    return linear_transform(temporal_crop(x, params.start, padding_ratio), params.shear)


def rotation_matrices(angles: torch.Tensor) -> torch.Tensor:
    """(N, 3, 3) R = R_z R_y R_x from (N, 3) angles (radians) about x, y, z; matrices as in the
    reference (``R_x = [[1,0,0],[0,c,s],[0,-s,c]]`` etc., on column vectors)."""
    c, s = torch.cos(angles), torch.sin(angles)
    one, zero = torch.ones_like(c[:, 0]), torch.zeros_like(c[:, 0])
    rx = torch.stack([one, zero, zero, zero, c[:, 0], s[:, 0], zero, -s[:, 0], c[:, 0]], -1).view(-1, 3, 3)
    ry = torch.stack([c[:, 1], zero, -s[:, 1], zero, one, zero, s[:, 1], zero, c[:, 1]], -1).view(-1, 3, 3)
    rz = torch.stack([c[:, 2], s[:, 2], zero, -s[:, 2], c[:, 2], zero, zero, zero, one], -1).view(-1, 3, 3)
    return rz @ ry @ rx


def blur_kernels(sigma: torch.Tensor, *, size: int = BLUR_KERNEL, normalize: bool = False) -> torch.Tensor:
    """(N, size) Gaussian kernels exp(-k^2 / 2 sigma^2), k = -size//2 .. size//2 (unnormalised
    unless ``normalize``)."""
    radius = size // 2
    k = torch.arange(-radius, radius + 1, device=sigma.device, dtype=sigma.dtype)
    w = torch.exp(-(k[None, :] ** 2) / (2.0 * sigma[:, None] ** 2))
    return w / w.sum(dim=1, keepdim=True) if normalize else w


def temporal_blur(x: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Per-sample depth-wise correlation along T with zero padding: ``kernels`` (N, K), K odd.

    out[t] = sum_k kernels[k] * x[t + k - K // 2] (zeros outside 0..T-1), the reference's
    ``conv2d(..., padding=(0, K // 2), groups=C)``.  Implemented as one batched matrix product
    with a (N, T, T) banded matrix per sample (5x faster than K shifted adds on a CPU).
    """
    t = x.shape[2]
    size = kernels.shape[1]
    frames = torch.arange(t, device=x.device)
    offset = frames[None, :] - frames[:, None] + size // 2  # [s, t]: tap index of source t for output s
    band = (offset >= 0) & (offset < size)
    matrix = kernels.to(x.device, x.dtype)[:, offset.clamp(0, size - 1)] * band  # (N, T, T)
    return torch.einsum("nst,nctvm->ncsvm", matrix, x)


def present_mask(x: torch.Tensor) -> torch.Tensor:
    """(N, 1, T, 1, M) bool: (frame, person) slots with any non-zero coordinate."""
    return (x != 0).any(dim=1, keepdim=True).any(dim=3, keepdim=True)


def apply_extreme(
    x: torch.Tensor,
    skeleton: Skeleton | str,
    params: ExtremeParams,
    *,
    normalize_blur: bool = False,
    mirror_flip: bool = False,
    noise_absent: bool = True,
    padding_ratio: int = PADDING_RATIO,
) -> torch.Tensor:
    """Normal augmentation, flip, rotation, noise, blur and axis mask with given parameters."""
    skeleton = get_skeleton(skeleton)
    _check_batch(x)
    if x.shape[3] != skeleton.num_joints:
        raise ValueError(
            f"batch has V = {x.shape[3]} joints but skeleton {skeleton.name!r} has {skeleton.num_joints}; "
            "augment at the skeleton's native joint count, before padding"
        )
    n = x.shape[0]

    def per_sample(flag: torch.Tensor) -> torch.Tensor:
        return flag.to(x.device).view(n, 1, 1, 1, 1)

    x = apply_normal(x, params.normal, padding_ratio=padding_ratio)
    # 1. flip
    flipped = x[:, :, :, torch.tensor(skeleton.flip, device=x.device)]
    if mirror_flip:
        flipped = flipped * torch.tensor([-1.0, 1.0, 1.0], device=x.device, dtype=x.dtype).view(1, 3, 1, 1, 1)
    x = torch.where(per_sample(params.flip), flipped, x)
    # 2. rotation
    x = linear_transform(x, rotation_matrices(params.angles.to(x.device)))
    # 3. noise
    noise = params.noise.to(x.device, x.dtype)
    if not noise_absent:
        noise = noise * present_mask(x)
    x = torch.where(per_sample(params.noise_on), x + noise, x)
    # 4. blur
    blurred = temporal_blur(x, blur_kernels(params.sigma.to(x.device), normalize=normalize_blur))
    x = torch.where(per_sample(params.blur_on), blurred, x)
    # 5. axis mask
    keep = 1 - torch.nn.functional.one_hot(params.mask_axis.to(x.device), 3).to(x.dtype)  # (N, 3)
    keep = torch.where(params.mask_on.to(x.device)[:, None], keep, torch.ones_like(keep))
    return x * keep.view(n, 3, 1, 1, 1)


# ------------------------------------------------------------------ public
def normal_augment(
    x: torch.Tensor,
    generator: torch.Generator | None = None,
    *,
    shear_amplitude: float = SHEAR_AMPLITUDE,
    padding_ratio: int = PADDING_RATIO,
) -> torch.Tensor:
    """Normal augmentation of a batch (N, 3, T, V, M): mirrored-padding temporal crop + shear.

    Returns a new tensor of the same shape, dtype and device.
    """
    params = draw_normal_params(x, generator, shear_amplitude=shear_amplitude, padding_ratio=padding_ratio)
    return apply_normal(x, params, padding_ratio=padding_ratio)


def extreme_augment(
    x: torch.Tensor,
    skeleton: Skeleton | str,
    generator: torch.Generator | None = None,
    *,
    normalize_blur: bool = False,
    mirror_flip: bool = False,
    noise_absent: bool = True,
    probability: float = PROBABILITY,
) -> torch.Tensor:
    """Extreme augmentation (``'12345'``) of a batch (N, 3, T, V, M) of one skeleton.

    Args:
        x: batch at the skeleton's native V.
        skeleton: its convention (for the flip permutation).
        generator: optional RNG for reproducibility.
        normalize_blur: normalise the blur kernel (reference: False).
        mirror_flip: also negate x when flipping (reference: False).
        noise_absent: add noise to absent persons too (reference: True).
        probability: probability of each of flip, noise, blur and axis mask (0.5).
    """
    params = draw_extreme_params(x, generator, probability=probability)
    return apply_extreme(x, skeleton, params, normalize_blur=normalize_blur, mirror_flip=mirror_flip,
                         noise_absent=noise_absent)


__all__ = [
    "ExtremeParams",
    "NormalParams",
    "apply_extreme",
    "apply_normal",
    "blur_kernels",
    "crop_indices",
    "draw_extreme_params",
    "draw_normal_params",
    "extreme_augment",
    "normal_augment",
    "rotation_matrices",
    "temporal_blur",
    "temporal_crop",
]
