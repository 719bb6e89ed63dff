"""Opt-in augmentations that vary what differs between *people* rather than between actions.

On a small dataset with few subjects, instance discrimination can tell clips apart by the performer's body
(bone lengths survive every augmentation of the reference: a shear keeps length ratios along a direction)
and by their tempo.  These two batched ops make a positive pair differ in exactly those, so the encoder has
to match the clips by their motion (``pretrain.bone_scale`` and ``pretrain.crop_min``; off in the reference):

- :func:`scale_bones`: every bone of a clip (child joint minus parent joint, the tree rooted at the
  skeleton's centre) scaled by its own factor from U(1 - a, 1 + a), the same in every frame; the skeleton is
  rebuilt outwards from the centre joint, so bone directions and the centre's trajectory are kept.
- :func:`resample_crop`: a random contiguous part of at least ``min_fraction`` of the frames, linearly
  resampled to the full length (a faster or slower, shifted performance).

Input ``x``: (N, 3, T, V, M) of one convention at its native V, any units (metres in msclr).  Random draws
come from ``generator`` (its device) as in :mod:`msclr.models.augment`; nothing loops over samples.
"""

from __future__ import annotations

from functools import lru_cache

import torch

from msclr.skeletons import Skeleton


@lru_cache(maxsize=64)
def path_matrix(skeleton: Skeleton) -> tuple[torch.Tensor, torch.Tensor]:
    """Bone paths of the skeleton's tree (computed once per skeleton, then cached: do not modify the tensors).

    Returns:
        ``paths`` (V, V) float: ``paths[v, b] = 1`` when bone b (joint b minus its parent) lies on the path
        from the centre to joint v; and ``attached`` (V,) bool: joint v is connected to the centre (other
        joints, e.g. isolated ones, are left where they are).
    """
    parents = skeleton.parents
    count = skeleton.num_joints
    paths = torch.zeros(count, count)
    attached = torch.zeros(count, dtype=torch.bool)
    for v in range(count):
        w = v
        while parents[w] != w:
            paths[v, w] = 1.0
            w = parents[w]
        attached[v] = w == skeleton.centre
    return paths, attached


def scale_bones(x: torch.Tensor, skeleton: Skeleton, amplitude: float,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Each bone of each clip scaled by its own factor from U(1 - amplitude, 1 + amplitude).

    ``x`` (N, 3, T, V, M) -> same shape.  ``amplitude`` 0 returns ``x`` unchanged.  Joint v becomes
    ``x[centre] + sum_b paths[v, b] * s_b * (x[b] - x[parent(b)])``; joints not attached to the centre keep
    their coordinates.  Absent persons (all zeros) stay zero.
    """
    if amplitude <= 0:
        return x
    n, v = x.shape[0], x.shape[3]
    if v != skeleton.num_joints:
        raise ValueError(f"scale_bones: x has {v} joints, skeleton {skeleton.name!r} has {skeleton.num_joints}")
    paths, attached = (t.to(x.device) for t in path_matrix(skeleton))
    device = generator.device if generator is not None else x.device
    factor = 1 + amplitude * (2 * torch.rand((n, 1, 1, v, 1), generator=generator, device=device) - 1)
    bones = x - x[:, :, :, list(skeleton.parents)]
    centre = x[:, :, :, skeleton.centre : skeleton.centre + 1]
    rebuilt = centre + torch.einsum("nctbm,vb->nctvm", bones * factor.to(x.device, x.dtype), paths.to(x.dtype))
    return torch.where(attached.view(1, 1, 1, v, 1), rebuilt, x)


def resample_crop(x: torch.Tensor, min_fraction: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """A random sub-clip of ``f ~ U(min_fraction, 1)`` of the duration, starting uniformly in [0, 1 - f],
    linearly resampled to all T frames: (N, 3, T, V, M) -> same shape.  ``min_fraction`` >= 1 returns ``x``."""
    if min_fraction >= 1:
        return x
    n, c, t, v, m = x.shape
    device = generator.device if generator is not None else x.device
    fraction = min_fraction + (1 - min_fraction) * torch.rand(n, generator=generator, device=device)
    start = torch.rand(n, generator=generator, device=device) * (1 - fraction)
    ramp = torch.linspace(0, 1, t, device=device)
    pos = ((start[:, None] + fraction[:, None] * ramp[None]) * (t - 1)).to(x.device)  # (N, T) source frame
    low = pos.floor().long().clamp(0, t - 1)
    high = (low + 1).clamp(max=t - 1)
    weight = (pos - low).to(x.dtype).view(n, 1, t, 1, 1)

    def frames(index: torch.Tensor) -> torch.Tensor:
        return x.gather(2, index.view(n, 1, t, 1, 1).expand(n, c, t, v, m))

    return frames(low) * (1 - weight) + frames(high) * weight


__all__ = ["path_matrix", "resample_crop", "scale_bones"]
