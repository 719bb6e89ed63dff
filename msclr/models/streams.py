"""Input streams of MS-CLR: joint, motion and bone, batched torch ops.

Each stream is a separately pretrained model; this module only turns a batch of joint
positions (N, C, T, V, M) into the stream's input, on ``x.device``:

- ``joint``: the positions themselves;
- ``motion``: m[t] = x[t + 1] - x[t] for t < T - 1, m[T - 1] = 0;
- ``bone``: b[v] = x[v] - x[parents[v]] with the parents of **this batch's skeleton**
  (:attr:`msclr.skeletons.Skeleton.parents`, the bone tree rooted at the centre), so the bone is
  zero at the centre and at isolated joints (``smplx_42``'s eye points 23, 24).

The reference's evaluation code applied NTU's bone pairs to every skeleton (SMPL-X joints 0-24
got NTU "bones", 25-41 zeros, unlike its pretraining, which used SMPL-X's own bones).  Here the
bone list always comes from the skeleton passed in, and a batch whose V does not match that
skeleton is rejected unless the caller states that the extra joints are zero padding
(``padded=True``; padded joints then get zero bones and zero motion).
"""

from __future__ import annotations

import torch

from msclr.skeletons import Skeleton, get_skeleton

STREAMS = ("joint", "motion", "bone")


def motion(x: torch.Tensor) -> torch.Tensor:
    """Frame differences along T of (N, C, T, V, M); the last frame is zero."""
    out = torch.zeros_like(x)
    out[:, :, :-1] = x[:, :, 1:] - x[:, :, :-1]
    return out


def bone(x: torch.Tensor, parents: torch.Tensor) -> torch.Tensor:
    """b[v] = x[v] - x[parents[v]] for (N, C, T, V, M); ``parents`` (V,) int64."""
    return x - x.index_select(3, parents.to(x.device))


def to_stream(x: torch.Tensor, stream: str, skeleton: Skeleton | str, *, padded: bool = False) -> torch.Tensor:
    """The ``stream`` input of a batch of one skeleton.

    Args:
        x: (N, C, T, V, M) joint positions (metres) of ``skeleton``.
        stream: ``"joint"``, ``"motion"`` or ``"bone"``.
        skeleton: the batch's convention (name or :class:`Skeleton`); its ``parents`` define bones.
        padded: allow V > the skeleton's joint count, the extra joints being zero padding.

    Returns:
        Tensor of the same shape, dtype and device (``x`` itself for ``"joint"``).
    """
    if stream not in STREAMS:
        raise ValueError(f"unknown stream {stream!r}; choose one of {', '.join(STREAMS)}")
    if x.dim() != 5:
        raise ValueError(f"expected a batch (N, C, T, V, M), got shape {tuple(x.shape)}")
    skeleton = get_skeleton(skeleton)
    v_batch, v_skel = x.shape[3], skeleton.num_joints
    if v_batch != v_skel and not (padded and v_batch > v_skel):
        raise ValueError(
            f"batch has V = {v_batch} joints but skeleton {skeleton.name!r} has {v_skel}; pass the batch's own "
            "skeleton (bones of another convention are meaningless), or padded=True for zero-padded joints"
        )
    if stream == "joint":
        return x
    if stream == "motion":
        return motion(x)
    parents = list(skeleton.parents) + list(range(v_skel, v_batch))
    return bone(x, torch.tensor(parents, dtype=torch.long, device=x.device))


__all__ = ["STREAMS", "bone", "motion", "to_stream"]
