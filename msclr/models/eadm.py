"""EADM: energy-based attention-guided drop module of AimCLR (the reference's ``Simam_Drop``).

Applied to the encoder's final feature map in the query *extreme* branch only.  A parameter-free
SimAM energy gives every element an attention value ``a = sigmoid(y) >= sigmoid(0.5) ~ 0.6225``;
the most salient joints and then the most salient elements are dropped (set to 0) and the rest
rescaled so that the mean magnitude is kept, which forces the encoder to use less obvious cues.

For a feature map ``x`` of shape ``(NM, C, T, V)``:

1. ``d = (x - mean_{T,V} x)^2``; ``y = d / (4 (sum_{T,V} d / (T V - 1) + lambda)) + 0.5``,
   ``lambda = 1e-4``; ``a = sigmoid(y)``.
2. Joint drop: ``s = mean_{C,T} a`` -> ``(NM, V)``; ``mask_v = [s < threshold]``;
   ``x <- x * mask_v * numel(mask_v) / sum(mask_v)``.
3. Element drop: ``mask = [a < threshold]`` (same shape as x); ``x <- x * mask * numel(mask) /
   sum(mask)``.

As in the reference, the rescaling is global over the whole batch tensor (not per sample) and
the masks carry no gradient (comparisons), so they are computed under ``no_grad``.  Deviation (a
guard the reference lacks): the reference divides by ``sum(mask)`` unguarded, which gives NaN when
every joint or element is dropped; here an all-zero mask leaves the input of that stage
unchanged instead (a no-op drop), so the output stays finite.
"""

from __future__ import annotations

import torch
from torch import nn

E_LAMBDA = 1e-4
"""SimAM regulariser lambda of the energy function (reference default)."""
THRESHOLD = 0.7
"""Attention value at and above which a joint / element is dropped (the reference's ``keep_prob``)."""


@torch.no_grad()
def simam_attention(x: torch.Tensor, e_lambda: float = E_LAMBDA) -> torch.Tensor:
    """SimAM attention ``sigmoid(y)`` of a feature map ``x (NM, C, T, V)``, same shape, no grad."""
    t, v = x.shape[-2:]
    d = (x - x.mean(dim=(2, 3), keepdim=True)).pow_(2)
    y = d / (4 * (d.sum(dim=(2, 3), keepdim=True) / (t * v - 1) + e_lambda)) + 0.5
    return y.sigmoid_()


def _scaled_mask(keep: torch.Tensor) -> torch.Tensor:
    """``keep * numel / sum(keep)`` as x's dtype; all ones when nothing is kept (guard)."""
    keep = keep.to(torch.float32)
    total = keep.sum()
    scaled = keep * (keep.numel() / total.clamp_min(1.0))
    # Every entry dropped: the reference would divide by zero.  torch.where avoids a device sync.
    return torch.where(total > 0, scaled, torch.ones_like(keep))


def eadm(x: torch.Tensor, *, threshold: float = THRESHOLD, e_lambda: float = E_LAMBDA) -> torch.Tensor:
    """Energy-based attention-guided drop of ``x (NM, C, T, V)``; returns a tensor of the same shape.

    Gradients flow through ``x`` (the masks are constants), exactly as in the reference.
    """
    if x.dim() != 4:
        raise ValueError(f"eadm expects a feature map (NM, C, T, V), got shape {tuple(x.shape)}")
    with torch.no_grad():
        att = simam_attention(x, e_lambda)
        joint = _scaled_mask(att.mean(dim=(1, 2)) < threshold)  # (NM, V)
        element = _scaled_mask(att < threshold)  # (NM, C, T, V)
        mask = (element * joint[:, None, None, :]).to(x.dtype)
    return x * mask


class EADM(nn.Module):
    """:func:`eadm` as a module (no parameters, no buffers)."""

    def __init__(self, threshold: float = THRESHOLD, e_lambda: float = E_LAMBDA) -> None:
        super().__init__()
        self.threshold = threshold
        self.e_lambda = e_lambda

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return eadm(x, threshold=self.threshold, e_lambda=self.e_lambda)

    def extra_repr(self) -> str:
        return f"threshold={self.threshold}, e_lambda={self.e_lambda}"
