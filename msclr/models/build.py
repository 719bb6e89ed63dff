"""Build the encoder and the MS-AimCLR model from a model configuration, and compute frozen features.

Used by training (pretraining, linear evaluation) and by inference (loading a trained run, prediction) alike,
so a run is always rebuilt with the shapes it was trained with and a clip always becomes features the same
way: the stream (joint / motion / bone, bones from the clip's own convention) is computed per batch with
:func:`msclr.models.streams.to_stream`, then ``encoder.features`` gives the pooled (B, hidden_dim) vector
without gradient.

The configuration argument is any object with the attributes of ``msclr.pipeline.config.ModelConfig``
(typed by the :class:`EncoderSizes` and :class:`ContrastiveSizes` protocols, so models never import the
pipeline).  Nothing here reads or writes files.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np
import torch

from msclr.models.aimclr import MSAimCLR
from msclr.models.nnclr import MSNNCLR
from msclr.models.stgcn import MultiSkeletonSTGCN, module_key
from msclr.models.streams import to_stream
from msclr.skeletons import Skeleton

FEATURE_BATCH = 256
"""Clips per forward pass when features of a whole array are computed."""


class EncoderSizes(Protocol):
    """What :func:`build_encoder` reads from a model configuration (read-only, so frozen dataclasses fit)."""

    @property
    def hidden_channels(self) -> int: ...
    @property
    def hidden_dim(self) -> int: ...
    @property
    def feature_dim(self) -> int: ...
    @property
    def dropout(self) -> float: ...
    @property
    def edge_importance(self) -> bool: ...
    @property
    def input_norm(self) -> str: ...
    @property
    def head_norm(self) -> bool: ...


class ContrastiveSizes(EncoderSizes, Protocol):
    """What :func:`build_model` reads in addition: the objective, the MoCo queue (or NNCLR support set), key
    momentum, temperature, shuffle-BN and the nearest-neighbour weight."""

    @property
    def objective(self) -> str: ...
    @property
    def nn_weight(self) -> float: ...

    @property
    def queue_size(self) -> int: ...
    @property
    def key_momentum(self) -> float: ...
    @property
    def temperature(self) -> float: ...
    @property
    def shuffle_bn(self) -> bool: ...


def build_encoder(skeletons: Sequence[Skeleton], model: EncoderSizes, *,
                  head: str | None = "mlp") -> MultiSkeletonSTGCN:
    """A :class:`~msclr.models.stgcn.MultiSkeletonSTGCN` for ``skeletons`` sized by ``model``.

    Input of the encoder: (N, 3, T, V_s, M) clips of one convention; ``head="mlp"`` outputs
    (N, ``model.feature_dim``), ``features`` gives (N, ``model.hidden_dim``).
    """
    return MultiSkeletonSTGCN(list(skeletons), in_channels=3, hidden_channels=model.hidden_channels,
                              hidden_dim=model.hidden_dim, out_dim=model.feature_dim, dropout=model.dropout,
                              edge_importance=model.edge_importance, head=head,
                              input_norm=model.input_norm, head_norm=model.head_norm)


def build_model(skeletons: Sequence[Skeleton], model: ContrastiveSizes, *, topk: int = 1) -> MSAimCLR | MSNNCLR:
    """The pretraining model of ``model.objective`` for ``skeletons``: ``"aimclr"``, the MS-AimCLR wrapper (query
    + key encoders with MLP heads, queue); ``"nnclr"``, :class:`~msclr.models.nnclr.MSNNCLR` (one encoder, in-batch
    negatives, a support set of ``queue_size`` embeddings)."""
    if model.objective == "nnclr":
        return MSNNCLR(lambda: build_encoder(skeletons, model, head="mlp"), dim=model.feature_dim,
                       support_size=model.queue_size, temperature=model.temperature, nn_weight=model.nn_weight)
    if model.objective != "aimclr":
        raise ValueError(f"unknown objective {model.objective!r}: use 'aimclr' or 'nnclr'")
    return MSAimCLR(lambda: build_encoder(skeletons, model, head="mlp"), dim=model.feature_dim,
                    queue_size=model.queue_size, momentum=model.key_momentum, temperature=model.temperature,
                    topk=topk, shuffle_bn=model.shuffle_bn)


def convention_state(state: dict[str, Any], names: Sequence[str]) -> dict[str, Any]:
    """The part of a :class:`~msclr.models.stgcn.MultiSkeletonSTGCN` ``state_dict`` that an encoder built for
    the conventions ``names`` (a subset of the state's) loads: the shared blocks and head, and the per-convention
    adjacency, ``data_bn`` and edge importance of ``names`` only."""
    keep = {module_key(n) for n in names}
    return {k: v for k, v in state.items() if not k.startswith("conventions.") or k.split(".")[1] in keep}


def encoder_features(encoder: Any, x: torch.Tensor, skeleton: Skeleton, stream: str) -> torch.Tensor:
    """Features ``(B, D)`` of one batch ``x (B, 3, T, V, M)`` (tensor on the encoder's device), frozen."""
    with torch.no_grad():
        return encoder.features(to_stream(x, stream, skeleton), skeleton.name)


def extract_features(encoder: Any, x: np.ndarray | torch.Tensor, skeleton: Skeleton, stream: str, *,
                     device: Any = None, batch_size: int = FEATURE_BATCH,
                     progress: Callable[[int], None] | None = None) -> torch.Tensor:
    """Frozen features of a whole array, computed once.

    Args:
        encoder: a :class:`msclr.models.stgcn.MultiSkeletonSTGCN`; put in ``eval()`` mode here.
        x: (N, 3, T, V, M) float32 array or tensor of convention ``skeleton``, un-augmented.
        stream: ``joint``, ``motion`` or ``bone`` (computed per batch with ``skeleton``'s own bones).
        device: where the encoder runs (default: the encoder's parameters' device).
        batch_size: clips per forward pass.
        progress: optional callback, called with the number of clips of each finished batch.

    Returns:
        (N, D) float32 tensor on ``device``.
    """
    encoder.eval()
    device = torch.device(device) if device is not None else next(encoder.parameters()).device
    x = torch.as_tensor(x)
    out = []
    for start in range(0, x.shape[0], batch_size):
        batch = x[start:start + batch_size].to(device, non_blocking=True)
        out.append(encoder_features(encoder, batch, skeleton, stream))
        if progress is not None:
            progress(int(batch.shape[0]))
    if not out:
        dim = encoder.features(torch.zeros((1,) + tuple(x.shape[1:]), device=device), skeleton.name).shape[1]
        return torch.zeros((0, dim), device=device)
    return torch.cat(out)


__all__ = ["EncoderSizes", "ContrastiveSizes", "build_encoder", "build_model", "convention_state", "FEATURE_BATCH",
           "encoder_features", "extract_features"]
