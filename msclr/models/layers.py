"""Low-level layers of the ST-GCN blocks: the spatial graph convolution, a scaled BatchNorm and a fast dropout.

Implementation notes (CPU, one thread, process CPU time of a fwd+bwd+no-grad fwd at batch 16, V = 42;
see ``bench/train_step.py`` for the whole step):

- The graph convolution runs "graph first" when ``in <= out`` (always, with the reference widths):
  the K = 3 adjacency products act on the ``in`` input channels (``x.matmul(A_k)`` on the contiguous
  (n*in*T, V) view, one GEMM each), then one 1x1 convolution over the K*in channels with the reordered
  weight; the conv bias becomes an (out, V) map ``sum_k b_k * colsum(Â_k)``.  The 'spatial' partition's
  root subset holds only self-loops, so its product is an element-wise scaling.  Same linear map,
  fewer operations and smaller saved activations than the reference's conv to 3*out channels + einsum
  (-3 % for graph first, -6 % more for the diagonal root).
- Dropout draws 8 keep/drop decisions per 64-bit random number and folds its 1/(1-p) rescaling into
  the preceding BatchNorm (:class:`Dropout`): -12 % at V = 42 (``bernoulli_`` was ~7 % of a step).
- Tried without gain: channels-last tensors for the temporal convolutions (+-3 %, noise), and
  ``torch.compile`` (285 s to compile one shape on 2 shared cores, no measurable speed-up).  oneDNN
  (``torch.backends.mkldnn``, on by default) matters: without it 1x1 convolutions are ~4x slower.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def graph_conv(x: torch.Tensor, adjacency: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
               *, diagonal_root: bool = False) -> torch.Tensor:  # fmt: skip
    """ST-GCN spatial graph convolution.

    Args:
        x: (n, in, T, V) features.
        adjacency: (K, V, V) effective adjacency ``A_s * importance``; ``adjacency[k, v, w]``
            weighs the message from joint v to joint w.
        weight: (K*out, in, 1, 1) 1x1 convolution weight (output channel ``k*out + c``).
        bias: (K*out,) or None.
        diagonal_root: ``adjacency[0]`` is diagonal (the 'spatial' partition's root subset holds only
            the self-loops), so its product is an element-wise scaling.

    Returns:
        (n, out, T, V): ``sum_k sum_v conv1x1(x)[:, k*out + c, :, v] * adjacency[k, v, w]``.
    """
    n, cin, t, v = x.shape
    k = adjacency.shape[0]
    cout = weight.shape[0] // k
    if cin <= cout:
        # Graph first: z[n, k, i, t, w] = sum_v x[n, i, t, v] A[k, v, w] (x is contiguous, so each is one
        # GEMM over (n*in*T, V) rows), then a 1x1 conv over the K*in channels with the reordered weight.
        parts = [x * torch.diagonal(adjacency[0]) if diagonal_root and i == 0 else x.matmul(adjacency[i])
                 for i in range(k)]  # fmt: skip
        z = torch.stack(parts, dim=1).view(n, k * cin, t, v)  # channel k*in + i
        w = weight.view(k, cout, cin).transpose(0, 1).reshape(cout, k * cin, 1, 1)
        y = F.conv2d(z, w)
        if bias is not None:
            # sum_v b[k, c] A[k, v, w] = b[k, c] * colsum_k[w]: a (out, V) bias map
            y = y.add_(torch.einsum("kc,kw->cw", bias.view(k, cout), adjacency.sum(dim=1))[None, :, None, :])
        return y
    # Conv first (the reference's order, cheaper when in > out): y[n, k, c, t, v], contract (k, v).
    y = F.conv2d(x, weight, bias).view(n, k, cout * t, v)
    y = y.permute(0, 2, 1, 3).reshape(n * cout * t, k * v)
    return y.matmul(adjacency.reshape(k * v, v)).view(n, cout, t, v)


def batch_norm(bn: nn.modules.batchnorm._BatchNorm, x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """``scale * bn(x)`` in one pass: ``bn``'s forward with its affine weight and bias multiplied by
    ``scale`` (same running-statistics update as calling ``bn``)."""
    if scale == 1.0:
        return bn(x)
    momentum = 0.0 if bn.momentum is None else bn.momentum
    if bn.training and bn.track_running_stats and bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
        if bn.momentum is None:
            momentum = 1.0 / float(bn.num_batches_tracked)
    use_batch = bn.training or bn.running_mean is None
    weight = bn.weight * scale if bn.weight is not None else torch.full((x.shape[1],), scale, dtype=x.dtype,
                                                                        device=x.device)
    bias = bn.bias * scale if bn.bias is not None else None
    return F.batch_norm(x, bn.running_mean if not bn.training or bn.track_running_stats else None,
                        bn.running_var if not bn.training or bn.track_running_stats else None,
                        weight, bias, use_batch, momentum, bn.eps)


class Dropout(nn.Module):
    """In-place inverted dropout, equal in distribution to ``nn.Dropout(p, inplace=True)``.

    :meth:`after_batch_norm` is what the blocks call: on CPU, when ``p`` is a multiple of 1/256 (the
    reference's 0.5 is), the 1 / (1 - p) rescaling is folded into the preceding BatchNorm's affine
    parameters and the drop mask comes from random bytes (8 per 64-bit draw of torch's CPU generator;
    drop iff byte < 256 p, so P(drop) = p exactly).  The mask is applied as a multiplication by a
    0/1 float keep-mask (for p = 0.5 the keep bit is simply the byte's top bit): on CPU, forward and
    backward of ``mul_`` by a float tensor are about 7x faster than ``masked_fill_`` with a boolean
    mask (1.9 vs 22 ms for 5 M elements, one thread), at the price of a 4-byte instead of a 1-byte mask
    saved for backward.  The random draw is the boolean-mask version's: swapping one for the other left
    4 MS-AimCLR training steps bit-identical (all 382 state tensors equal).  Elsewhere (CUDA, other p) it is ``F.dropout``.
    """

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p
        threshold = p * 256
        self._threshold = int(threshold) if threshold == int(threshold) else None

    def _fast(self, x: torch.Tensor) -> bool:
        return self.training and self.p > 0.0 and x.device.type == "cpu" and self._threshold is not None

    def _random_bytes(self, x: torch.Tensor) -> torch.Tensor:
        """Uniform random uint8 tensor of x's shape."""
        n = x.numel()
        # random_() on int64 leaves the top bit 0; the full range gives 8 uniform bytes per draw.
        words = torch.empty((n + 7) // 8, dtype=torch.int64).random_(-(2**63), 2**63 - 1)
        return words.view(torch.uint8)[:n].view(x.shape)

    def _keep_mask(self, x: torch.Tensor) -> torch.Tensor:
        """0/1 mask of the kept elements in x's dtype: 1 iff the element's random byte is >= 256 p, so
        P(1) = 1 - p exactly (for p = 0.5 that is the byte's top bit)."""
        data = self._random_bytes(x)
        keep = data >> 7 if self._threshold == 128 else data >= self._threshold
        return keep.to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if not self._fast(x):
            return F.dropout(x, self.p, training=True, inplace=True)
        return x.mul_(self._keep_mask(x)).mul_(1.0 / (1.0 - self.p))

    def after_batch_norm(self, bn: nn.modules.batchnorm._BatchNorm, x: torch.Tensor) -> torch.Tensor:
        """``dropout(bn(x))`` with the rescaling folded into ``bn`` on the fast path."""
        if not self._fast(x):
            return self(bn(x))
        y = batch_norm(bn, x, 1.0 / (1.0 - self.p))
        return y.mul_(self._keep_mask(y))

    def extra_repr(self) -> str:
        return f"p={self.p}, inplace=True"


__all__ = ["graph_conv", "batch_norm", "Dropout"]
