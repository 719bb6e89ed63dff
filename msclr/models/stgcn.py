"""Multi-skeleton ST-GCN encoder (the reference's ``FlexModel``, from the MS-CLR co-author fork).

One set of 10 ST-GCN blocks is shared by every skeleton convention; each convention has its own
adjacency ``A_s`` (3, V_s, V_s) (:func:`msclr.models.graph.skeleton_partition`), its own input
``data_bn`` (BatchNorm1d over 3·V_s channels, channel index ``v*C + c``; or one channel per axis with
``input_norm="axis"``, :class:`AxisBatchNorm`) and its own 10 learnable
edge-importance masks (3, V_s, V_s).  A batch holds a single convention.

Blocks (temporal kernel 9, spatial kernel K = 3, widths scaled from ``hidden_channels`` = 16)::

    block  in -> out      stride  residual              T (from 50)
    1      3 -> 16        1       none, dropout 0       50
    2-4    16 -> 16       1       identity              50
    5      16 -> 32       2       1x1 conv s2 + BN      25
    6-7    32 -> 32       1       identity              25
    8      32 -> 64       2       1x1 conv s2 + BN      13
    9      64 -> 64       1       identity              13
    10     64 -> 256      1       1x1 conv + BN         13   (256 = hidden_dim)

Each block computes ``ReLU(tcn(gcn(x, A_s * W_{s,l})) + res(x))`` with
``gcn(x)[n, c, t, w] = sum_k sum_v (conv1x1(x)[n, k*out + c, t, v]) * Â[k, v, w]`` and
``tcn = BN -> ReLU -> Conv2d(out, out, (9, 1), stride (s, 1), padding (4, 0)) -> BN -> Dropout``.
Features are globally average-pooled over (T, V), averaged over the M persons, then go through
the head (``"mlp"``: Linear(256, 256) -> ReLU -> Linear(256, 128), MoCo v2 style, or with ``head_norm``
Linear -> BatchNorm -> ReLU -> Linear -> BatchNorm (no affine), SimCLR / MoCo v3 style; ``"linear"``;
or ``None`` for features only).

Deviation from the reference: the reference zero-pads every batch to
V_max (42 for {NTU, SMPL-X}) after ``data_bn``, so every BatchNorm2d of the blocks counts the
padded joints (about 40 % of an NTU batch's population, and they are not zero after the first
BN) in its batch and running statistics.  Here every batch runs at its convention's native V_s:
no padded joint exists anywhere.  This is valid because no weight of the shared blocks depends
on V (1x1 and (9, 1) convolutions, per-channel BatchNorm); only ``A_s``, the edge-importance
masks and ``data_bn`` do, and they are stored per convention at their native size.  Message
passing is unchanged (the reference's padded rows/columns of ``A_s`` are zero); only the BN
statistics differ, and they are the same in pretraining, evaluation and prediction.

Native V is also cheaper: an NTU batch costs about 25/42 of a padded one.

The graph convolution and the dropout are implemented for speed in :mod:`msclr.models.layers`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from msclr.errors import SkeletonError
from msclr.models.eadm import eadm
from msclr.models.graph import skeleton_partition
from msclr.models.layers import Dropout, graph_conv
from msclr.skeletons import Skeleton, get_skeleton

TEMPORAL_KERNEL = 9
"""Temporal kernel size of every block (reference)."""
SPATIAL_KERNEL = 3
"""Number of spatial partition subsets (root, close, further)."""
NUM_BLOCKS = 10


def block_table(in_channels: int, hidden_channels: int, hidden_dim: int) -> list[tuple[int, int, int, str]]:
    """``(in, out, stride, residual)`` of the 10 blocks; residual is ``none``, ``identity`` or ``conv``."""
    h = hidden_channels
    widths = [(in_channels, h, 1), (h, h, 1), (h, h, 1), (h, h, 1), (h, 2 * h, 2), (2 * h, 2 * h, 1),
              (2 * h, 2 * h, 1), (2 * h, 4 * h, 2), (4 * h, 4 * h, 1), (4 * h, hidden_dim, 1)]  # fmt: skip
    table = []
    for i, (cin, cout, stride) in enumerate(widths):
        if i == 0:
            kind = "none"
        elif cin == cout and stride == 1:
            kind = "identity"
        else:
            kind = "conv"
        table.append((cin, cout, stride, kind))
    return table


class STGCNBlock(nn.Module):
    """One ST-GCN block (shared by all conventions): ``ReLU(tcn(gcn(x, A)) + res(x))``.

    Parameter names follow the reference (``gcn`` = the 1x1 conv of ``gcn.conv``, ``tcn.{0,2,3}``,
    ``residual.{0,1}``) so that checkpoints convert by renaming (:mod:`msclr.models.convert`).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, residual: str, dropout: float,
                 *, kernel_size: int = TEMPORAL_KERNEL, spatial_kernel: int = SPATIAL_KERNEL) -> None:  # fmt: skip
        super().__init__()
        self.in_channels, self.out_channels, self.stride, self.residual_kind = in_channels, out_channels, stride, residual
        self.gcn = nn.Conv2d(in_channels, spatial_kernel * out_channels, kernel_size=1)
        pad = (kernel_size - 1) // 2
        self.tcn = nn.Sequential(
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, (kernel_size, 1), (stride, 1), (pad, 0)),
            nn.BatchNorm2d(out_channels),
            Dropout(dropout),
        )
        if residual == "conv":
            self.residual = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=(stride, 1)),
                nn.BatchNorm2d(out_channels),
            )
        elif residual in ("none", "identity"):
            self.residual = None
        else:
            raise ValueError(f"residual must be 'none', 'identity' or 'conv', got {residual!r}")

    def forward(self, x: torch.Tensor, adjacency: torch.Tensor, *, diagonal_root: bool = False) -> torch.Tensor:
        """x (n, in, T, V), adjacency (K, V, V) -> (n, out, ceil(T / stride), V)."""
        bn1, _, conv, bn2, drop = self.tcn
        y = graph_conv(x, adjacency, self.gcn.weight, self.gcn.bias, diagonal_root=diagonal_root)
        y = conv(F.relu(bn1(y), inplace=True))
        y = drop.after_batch_norm(bn2, y)  # fresh tensor: the in-place ops below are safe
        if self.residual_kind == "identity":
            y = y.add_(x)
        elif self.residual is not None:
            y = y.add_(self.residual(x))
        return F.relu(y, inplace=True)


INPUT_NORMS = ("joint", "axis")


class AxisBatchNorm(nn.BatchNorm1d):
    """Input BatchNorm with one channel per coordinate axis, shared by all V joints (``input_norm="axis"``).

    Takes and returns the ``data_bn`` layout (N*M, V*C, T), channel index ``v*C + c``, and standardises each
    axis c over (N*M, V, T): relative joint amplitudes survive, whereas the reference's per-(joint, axis)
    BatchNorm scales every joint to unit variance, amplifying the near-still torso joints of per-frame-centred
    data as much as the hands (docs/utd_mhad.md, findings 3 and 8).  Parameters and statistics have shape (C,).
    """

    def __init__(self, in_channels: int, num_joints: int) -> None:
        super().__init__(in_channels)
        self.num_joints = num_joints

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nm, vc, t = x.shape
        v, c = self.num_joints, vc // self.num_joints
        y = x.view(nm, v, c, t).transpose(1, 2).reshape(nm, c, v * t)
        return super().forward(y).view(nm, c, v, t).transpose(1, 2).reshape(nm, vc, t)


class Convention(nn.Module):
    """Per-skeleton parts of the encoder: adjacency buffer ``A`` (3, V, V), ``data_bn`` and the
    10 edge-importance masks (3, V, V), all at the convention's native V.

    ``input_norm``: ``"joint"`` (reference) gives ``data_bn`` = BatchNorm1d(C*V), one channel per (joint, axis);
    ``"axis"`` gives :class:`AxisBatchNorm`, one channel per axis shared by the joints.
    """

    def __init__(self, skeleton: Skeleton, in_channels: int, num_blocks: int, edge_importance: bool,
                 input_norm: str = "joint") -> None:
        super().__init__()
        self.skeleton = skeleton
        adjacency = torch.from_numpy(skeleton_partition(skeleton))
        self.register_buffer("A", adjacency)
        # The 'spatial' partition's root subset (hop 0) holds only self-loops.
        self.diagonal_root = bool(torch.equal(adjacency[0], torch.diag(torch.diagonal(adjacency[0]))))
        if input_norm == "joint":
            self.data_bn: nn.BatchNorm1d = nn.BatchNorm1d(in_channels * skeleton.num_joints)
        elif input_norm == "axis":
            self.data_bn = AxisBatchNorm(in_channels, skeleton.num_joints)
        else:
            raise ValueError(f"input_norm must be one of {list(INPUT_NORMS)}, got {input_norm!r}")
        if edge_importance:
            self.edge_importance = nn.ParameterList(
                [nn.Parameter(torch.ones_like(adjacency)) for _ in range(num_blocks)]
            )
        else:
            self.edge_importance = None

    @property
    def num_joints(self) -> int:
        return self.skeleton.num_joints

    def adjacency(self, block: int) -> torch.Tensor:
        """Effective adjacency ``A * edge_importance[block]`` (3, V, V)."""
        if self.edge_importance is None:
            return self.A
        return self.A * self.edge_importance[block]


def module_key(name: str) -> str:
    """Key of a convention inside ``nn.ModuleDict`` (which forbids dots in names)."""
    return name.replace(".", "_")


class MultiSkeletonSTGCN(nn.Module):
    """ST-GCN encoder shared by several skeleton conventions.

    Args:
        skeletons: conventions (registry names, aliases such as ``ntu-rgb+d``, or Skeleton objects).
        in_channels: C of the input (3 coordinates).
        hidden_channels: width of blocks 1-4 (blocks 5-7 use 2x, 8-9 use 4x).
        hidden_dim: width of block 10 = pooled feature size (256).
        out_dim: output size of the head (128 for MS-AimCLR; number of classes for a classifier).
        dropout: dropout of the tcn of blocks 2-10 (block 1 has none).
        edge_importance: learn the per-convention edge-importance masks.
        input_norm: ``"joint"`` (reference ``data_bn``, one BatchNorm channel per joint and axis) or
            ``"axis"`` (one per axis, shared by the joints; :class:`AxisBatchNorm`).
        head_norm: with ``head="mlp"``, a BatchNorm after each Linear (the last without affine parameters),
            which centres every batch's embeddings (an opt-in for small datasets; the reference has none).
        head: ``"mlp"`` (Linear-ReLU-Linear, pretraining), ``"linear"`` or ``None`` (identity,
            the forward then returns the (N, hidden_dim) features).

    Input ``x``: (N, C, T, V_s, M) float, V_s the joints of the batch's convention, M persons.
    """

    def __init__(self, skeletons: Sequence[Skeleton | str], *, in_channels: int = 3, hidden_channels: int = 16,
                 hidden_dim: int = 256, out_dim: int = 128, dropout: float = 0.5, edge_importance: bool = True,
                 head: str | None = "mlp", input_norm: str = "joint", head_norm: bool = False) -> None:  # fmt: skip
        super().__init__()
        if isinstance(skeletons, (str, Skeleton)):
            skeletons = [skeletons]
        resolved: dict[str, Skeleton] = {}
        for s in skeletons:
            sk = get_skeleton(s)
            resolved.setdefault(sk.name, sk)
        if not resolved:
            raise SkeletonError("MultiSkeletonSTGCN needs at least one skeleton convention")
        keys = [module_key(n) for n in resolved]
        if len(set(keys)) != len(keys):
            raise SkeletonError(f"skeleton names {list(resolved)} collide once dots are replaced; rename one")
        self.in_channels, self.hidden_dim = in_channels, hidden_dim
        self.out_dim = hidden_dim if head is None else out_dim
        self.head_kind = head
        self.conventions = nn.ModuleDict(
            {module_key(n): Convention(sk, in_channels, NUM_BLOCKS, edge_importance, input_norm)
             for n, sk in resolved.items()}
        )
        table = block_table(in_channels, hidden_channels, hidden_dim)
        self.blocks = nn.ModuleList(
            STGCNBlock(cin, cout, stride, kind, 0.0 if i == 0 else dropout)
            for i, (cin, cout, stride, kind) in enumerate(table)
        )
        if head == "mlp" and head_norm:
            self.fc: nn.Module = nn.Sequential(
                nn.Linear(hidden_dim, hidden_dim), nn.BatchNorm1d(hidden_dim), nn.ReLU(inplace=True),
                nn.Linear(hidden_dim, out_dim), nn.BatchNorm1d(out_dim, affine=False),
            )
        elif head == "mlp":
            self.fc = nn.Sequential(
                nn.Linear(hidden_dim, hidden_dim), nn.ReLU(inplace=True), nn.Linear(hidden_dim, out_dim)
            )
        elif head == "linear":
            self.fc = nn.Linear(hidden_dim, out_dim)
        elif head is None:
            self.fc = nn.Identity()
        else:
            raise ValueError(f"head must be 'mlp', 'linear' or None, got {head!r}")
        self.reset_parameters()

    # ------------------------------------------------------------------ set-up
    @property
    def skeleton_names(self) -> list[str]:
        """Registry names of the conventions this encoder knows, in construction order."""
        return [c.skeleton.name for c in self.conventions.values()]

    def reset_parameters(self) -> None:
        """Reference initialisation (its ``weights_init``): conv and linear weights N(0, 0.02), biases 0;
        BatchNorm weights N(1, 0.02), biases 0; edge importance 1."""
        for m in self.modules():
            if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)):
                nn.init.normal_(m.weight, 0.0, 0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.modules.batchnorm._BatchNorm):
                if m.affine:
                    nn.init.normal_(m.weight, 1.0, 0.02)
                    nn.init.zeros_(m.bias)
                m.reset_running_stats()
        for conv in self.conventions.values():
            if conv.edge_importance is not None:
                for p in conv.edge_importance:
                    nn.init.ones_(p)

    def convention(self, skeleton: str | Skeleton) -> Convention:
        """The per-convention module of ``skeleton`` (names and aliases accepted)."""
        name = skeleton.name if isinstance(skeleton, Skeleton) else skeleton
        conv = self.conventions[module_key(name)] if module_key(name) in self.conventions else None
        if conv is None:
            try:
                canonical = get_skeleton(name).name
            except SkeletonError:
                canonical = name
            if module_key(canonical) in self.conventions:
                conv = self.conventions[module_key(canonical)]
        if conv is None:
            raise SkeletonError(
                f"this encoder was built for skeletons {self.skeleton_names}, not {name!r}; "
                "use data in one of those conventions or build/pretrain a model that includes it"
            )
        return conv

    # ----------------------------------------------------------------- forward
    def feature_map(self, x: torch.Tensor, skeleton: str | Skeleton) -> torch.Tensor:
        """Final feature map (N*M, hidden_dim, T', V_s) of a single-convention batch x (N, C, T, V_s, M)."""
        conv = self.convention(skeleton)
        if x.dim() != 5:
            raise ValueError(f"expected x of shape (N, C, T, V, M), got {tuple(x.shape)}")
        n, c, t, v, m = x.shape
        if v != conv.num_joints or c != self.in_channels:
            raise ValueError(
                f"skeleton {conv.skeleton.name!r} needs x of shape (N, {self.in_channels}, T, "
                f"{conv.num_joints}, M), got {tuple(x.shape)} (do not pad joints: batches run at native V)"
            )
        # data_bn over channel v*C + c, per person: (N, C, T, V, M) -> (N*M, V*C, T)
        h = x.permute(0, 4, 3, 1, 2).reshape(n * m, v * c, t)
        h = conv.data_bn(h)
        h = h.view(n * m, v, c, t).permute(0, 2, 3, 1).contiguous()  # (N*M, C, T, V)
        for i, block in enumerate(self.blocks):
            h = block(h, conv.adjacency(i), diagonal_root=conv.diagonal_root)
        return h

    @staticmethod
    def pool(h: torch.Tensor, n: int, m: int) -> torch.Tensor:
        """Global average over (T, V), then mean over the M persons: (N*M, C, T, V) -> (N, C)."""
        return h.mean(dim=(2, 3)).view(n, m, -1).mean(dim=1)

    def features(self, x: torch.Tensor, skeleton: str | Skeleton) -> torch.Tensor:
        """Pooled features (N, hidden_dim) before the head."""
        return self.pool(self.feature_map(x, skeleton), x.shape[0], x.shape[4])

    def forward(
        self, x: torch.Tensor, skeleton: str | Skeleton, drop: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Embed a single-convention batch.

        Args:
            x: (N, C, T, V_s, M).
            skeleton: the batch's convention.
            drop: also return the EADM branch (query extreme view of AimCLR).

        Returns:
            (N, out_dim), or the pair ``(z, z_drop)`` when ``drop``.
        """
        n, m = x.shape[0], x.shape[4]
        h = self.feature_map(x, skeleton)
        z = self.fc(self.pool(h, n, m))
        if not drop:
            return z
        return z, self.fc(self.pool(eadm(h), n, m))
