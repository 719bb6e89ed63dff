"""Load reference (AimCLR / MS-CLR) checkpoints into msclr's encoder and MS-AimCLR model.

Two reference formats are understood:

- **AimCLR** ``net.st_gcn.Model`` (Levigty/AimCLR), one skeleton: ``A``, ``data_bn.*``,
  ``edge_importance.{i}``, shared blocks, ``fc.*``;
- **MS-CLR** ``net.st_gcn_flex.FlexModel`` (the co-author fork), several skeletons: ``A_<skel>`` buffers,
  ``data_bn.<skel>.*``, ``edge_importance.<skel>.{i}``; adjacency and edge-importance masks are zero-padded
  to V_max (the largest V of the run), msclr keeps them at native V and slices ``[:, :V, :V]``.

Both may sit inside an AimCLR wrapper checkpoint (``encoder_q.*``, ``encoder_k.*``, ``queue``,
``queue_ptr``) and behind a DataParallel ``module.`` prefix.  Key mapping (``<s>`` = msclr's module key
of the convention, ``{i}`` = block 0..9, ``{j}`` = index inside the Sequential):

=============================================  ==============================================
reference key                                  msclr key
=============================================  ==============================================
``module.`` prefix                             stripped
``encoder_q.`` / ``encoder_k.``                selected by ``which`` (the other is ignored)
``queue``, ``queue_ptr``                       :func:`convert_aimclr_state_dict` only
``A`` / ``A_<ref skel>``                       ``conventions.<s>.A`` (checked against msclr's graph)
``data_bn.*`` / ``data_bn.<ref skel>.*``       ``conventions.<s>.data_bn.*``
``edge_importance.{i}``                        ``conventions.<s>.edge_importance.{i}``
``edge_importance.<ref skel>.{i}``             ``conventions.<s>.edge_importance.{i}`` (sliced)
``st_gcn_networks.{i}.gcn.conv.{weight,bias}`` ``blocks.{i}.gcn.{weight,bias}``
``st_gcn_networks.{i}.tcn.{j}.*``              ``blocks.{i}.tcn.{j}.*`` (j = 0, 2, 3; 1 ReLU, 4 Dropout)
``st_gcn_networks.{i}.residual.{j}.*``         ``blocks.{i}.residual.{j}.*``
``fc.0.*``, ``fc.2.*`` (MLP head) / ``fc.*``   ``fc.0.*``, ``fc.2.*`` / ``fc.*``
``dropout.<ref skel>`` (EADM)                  (no parameters)
=============================================  ==============================================

Reference skeleton names map through the registry's aliases: ``ntu-rgb+d`` -> ``ntu_kinect_25``;
``smpl_24``, ``smplx_42`` and ``berkeley_mhad_43`` keep their names.  A single-skeleton AimCLR checkpoint
is NTU (V = 25) unless ``skeleton`` says otherwise.

The reference graph must equal msclr's: each checkpoint adjacency is compared with
:func:`msclr.models.graph.skeleton_partition` (msclr's ``berkeley_mhad_43`` is a different, connected
graph, so fork checkpoints trained on the fork's Berkeley graph are refused).  Because msclr runs every
batch at its native V, BatchNorm statistics learned by the reference (which counted the zero-padded joints
of every batch padded to V_max) are loaded as they are; evaluation in ``eval()`` mode then reproduces the reference's
outputs on the real joints exactly.

This module converts tensors only; :func:`msclr.files.load_state_file` reads a checkpoint file with
``torch.load(..., weights_only=True)`` (no pickled code is ever executed) and
:func:`msclr.files.load_reference_encoder` does both steps.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from torch import nn

from msclr.errors import CheckpointError, SkeletonError
from msclr.skeletons import get_skeleton

_BLOCK = re.compile(r"^st_gcn_networks\.(\d+)\.(.+)$")


def _strip_module(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module.") :]: v for k, v in state.items()}
    return dict(state)


def select_encoder(state: Mapping[str, torch.Tensor], which: str = "encoder_q") -> dict[str, torch.Tensor]:
    """The keys of one encoder: those under ``which.`` when the state is an AimCLR wrapper's, else all."""
    state = _strip_module(state)
    prefix = which + "."
    if any(k.startswith(("encoder_q.", "encoder_k.")) for k in state):
        picked = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        if not picked:
            raise CheckpointError(f"the checkpoint has no {which!r} weights; choose which='encoder_q' or 'encoder_k'")
        return picked
    return state


def _canonical(ref_name: str) -> str:
    try:
        return get_skeleton(ref_name).name
    except SkeletonError:
        return ref_name


def convert_encoder_state_dict(state: Mapping[str, torch.Tensor], encoder: nn.Module, *, which: str = "encoder_q",
                               skeleton: str | None = None, head: bool = True, check_adjacency: bool = True,
                               ignore_extra_skeletons: bool = False) -> dict[str, torch.Tensor]:  # fmt: skip
    """Rename (and slice) a reference state dict into ``encoder``'s (:class:`MultiSkeletonSTGCN`) names.

    Args:
        state: reference state dict (AimCLR ``Model`` or MS-CLR ``FlexModel``, bare or wrapped).
        encoder: the msclr encoder the result is for (names, shapes and conventions come from it).
        which: ``encoder_q`` or ``encoder_k`` inside an AimCLR wrapper checkpoint.
        skeleton: convention of a single-skeleton AimCLR checkpoint (default: NTU when V = 25).
        head: convert ``fc.*`` too; with False the reference head is dropped and the encoder keeps its own.
        check_adjacency: refuse checkpoints whose adjacency differs from msclr's graph.
        ignore_extra_skeletons: drop conventions the checkpoint has but the encoder lacks (else an error).

    Returns:
        A state dict for ``encoder.load_state_dict``.

    Raises:
        CheckpointError: unexpected or missing keys, shape mismatches, foreign graphs; the message lists them.
    """
    src = select_encoder(state, which)
    expected = encoder.state_dict()
    conventions = {name: module_key for module_key, name in _encoder_conventions(encoder).items()}
    single = "data_bn.weight" in src or "data_bn.running_mean" in src
    single_name = _single_skeleton_name(src, skeleton) if single else None
    out, unexpected, problems, extra_skeletons = _rename_keys(src, expected, conventions, single_name, head=head,
                                                              check_adjacency=check_adjacency)
    if extra_skeletons and not ignore_extra_skeletons:
        problems.append(f"the checkpoint has conventions {sorted(extra_skeletons)} that the encoder lacks "
                        f"(encoder: {sorted(conventions)}); build the encoder with them or pass "
                        "ignore_extra_skeletons=True")
    _check_against_encoder(out, expected, unexpected, problems, head=head)
    for key, value in expected.items():  # keep the encoder's own values where the reference has none
        out.setdefault(key, value)
    return {k: v.detach().clone().to(expected[k].dtype) for k, v in out.items()}


def _single_skeleton_name(src: Mapping[str, torch.Tensor], skeleton: str | None) -> str:
    """Convention of a single-skeleton AimCLR checkpoint: ``skeleton``, else NTU when V = 25."""
    if skeleton is not None:
        return skeleton
    v = src["data_bn.running_mean"].numel() // 3 if "data_bn.running_mean" in src else 0
    if v != 25:
        raise CheckpointError(f"single-skeleton checkpoint with V = {v} joints: pass skeleton=<its "
                              "convention> (AimCLR checkpoints are NTU, V = 25)")
    return "ntu_kinect_25"


def _rename_keys(src: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], conventions: Mapping[str, str],
                 single_name: str | None, *, head: bool, check_adjacency: bool,
                 ) -> tuple[dict[str, torch.Tensor], list[str], list[str], set[str]]:  # fmt: skip
    """Reference keys renamed (and sliced) to msclr's; also the unexpected keys, the problems found and the
    reference skeletons the encoder lacks.  ``single_name`` is None for a multi-skeleton checkpoint."""
    single = single_name is not None
    out: dict[str, torch.Tensor] = {}
    unexpected: list[str] = []
    problems: list[str] = []
    extra_skeletons: set[str] = set()
    for key, value in src.items():
        if key.startswith(("queue", "dropout.")):
            continue
        m = _BLOCK.match(key)
        if m:
            rest = m.group(2).replace("gcn.conv.", "gcn.", 1)
            out[f"blocks.{m.group(1)}.{rest}"] = value
            continue
        if key.startswith("fc."):
            if head:
                out[key] = value
            continue
        ref_skel, sub = _split_convention_key(key, single)
        if sub is None:
            unexpected.append(key)
            continue
        conv_key = conventions.get(_canonical(single_name if ref_skel is None else ref_skel))
        if conv_key is None:
            extra_skeletons.add(ref_skel or str(single_name))
            continue
        ours = expected[f"conventions.{conv_key}.A"]
        if sub == "A" or sub.startswith("edge_importance."):
            value = _slice_square(value, ours.shape[-1], key, problems)
        if sub == "A" and value is not None and check_adjacency:
            if value.shape != ours.shape or not torch.allclose(value.float(), ours.float(), atol=1e-6):
                problems.append(f"{key}: the checkpoint's graph differs from msclr's {conv_key} graph "
                                "(trained on another joint layout or edge list)")
        if value is not None:
            out[f"conventions.{conv_key}.{sub}"] = value
    return out, unexpected, problems, extra_skeletons


def _check_against_encoder(out: dict[str, torch.Tensor], expected: Mapping[str, torch.Tensor], unexpected: list[str],
                           problems: list[str], *, head: bool) -> None:
    """Drop keys the encoder lacks from ``out`` and raise CheckpointError listing every unexpected, missing or
    mis-shaped key and ``problems``."""
    for key in list(out):
        if key not in expected:
            unexpected.append(key)
            del out[key]
        elif out[key].shape != expected[key].shape:
            hint = ("the reference's data_bn has one channel per joint and axis: build the encoder with "
                    "input_norm='joint'" if ".data_bn." in key else
                    "different widths? set hidden_channels / hidden_dim / out_dim to match")
            problems.append(f"{key}: shape {tuple(out[key].shape)} in the checkpoint, {tuple(expected[key].shape)} "
                            f"in the encoder ({hint})")
    optional = re.compile(r".*num_batches_tracked$" + ("" if head else r"|^fc\."))
    missing = [k for k in expected if k not in out and not optional.match(k)]
    if unexpected or missing or problems:
        lines = []
        if unexpected:
            lines.append(f"unexpected keys: {', '.join(sorted(unexpected))}")
        if missing:
            lines.append(f"missing keys: {', '.join(missing)}")
        lines.extend(problems)
        raise CheckpointError("cannot load the reference checkpoint into this encoder:\n  " + "\n  ".join(lines))


def _encoder_conventions(encoder: nn.Module) -> dict[str, str]:
    conventions = getattr(encoder, "conventions", None)
    if not isinstance(conventions, nn.ModuleDict):
        raise CheckpointError("the target is not an msclr MultiSkeletonSTGCN encoder (no per-skeleton conventions)")
    return {key: module.skeleton.name for key, module in conventions.items()}


def _split_convention_key(key: str, single: bool) -> tuple[str | None, str | None]:
    """(reference skeleton or None, msclr sub-key) of a per-convention key; (None, None) if not one."""
    if single:
        if key == "A" or key.startswith("data_bn."):
            return None, key
        m = re.fullmatch(r"edge_importance\.(\d+)", key)
        return (None, key) if m else (None, None)
    if key.startswith("A_"):
        return key[2:], "A"
    m = re.fullmatch(r"data_bn\.(.+)\.(weight|bias|running_mean|running_var|num_batches_tracked)", key)
    if m:
        return m.group(1), f"data_bn.{m.group(2)}"
    m = re.fullmatch(r"edge_importance\.(.+)\.(\d+)", key)
    if m:
        return m.group(1), f"edge_importance.{m.group(2)}"
    return None, None


def _slice_square(value: torch.Tensor, v: int, key: str, problems: list[str]) -> torch.Tensor | None:
    """``value[:, :v, :v]`` of a (3, V_max, V_max) tensor padded with zeros beyond v."""
    if value.dim() != 3 or value.shape[1] != value.shape[2] or value.shape[1] < v:
        problems.append(f"{key}: shape {tuple(value.shape)} is not (3, V_max, V_max) with V_max >= {v}")
        return None
    if value.shape[1] > v and key.startswith("A") and value[:, v:, :].abs().sum() + value[:, :, v:].abs().sum() > 0:
        problems.append(f"{key}: non-zero entries beyond joint {v - 1}; the checkpoint is not padded as expected")
        return None
    return value[:, :v, :v]


def convert_aimclr_state_dict(state: Mapping[str, torch.Tensor], model: nn.Module, *,
                              skeleton: str | None = None, check_adjacency: bool = True,
                              ignore_extra_skeletons: bool = False) -> dict[str, torch.Tensor]:  # fmt: skip
    """A whole reference AimCLR / MS-AimCLR pretraining state (both encoders, queue, pointer) as a state
    dict for :class:`msclr.models.aimclr.MSAimCLR` ``model`` (e.g. to continue a reference run)."""
    state = _strip_module(state)
    if "queue" not in state or not any(k.startswith("encoder_k.") for k in state):
        raise CheckpointError("not an AimCLR pretraining checkpoint (needs encoder_q.*, encoder_k.* and queue); "
                              "use convert_encoder_state_dict for a single encoder")
    out: dict[str, torch.Tensor] = {}
    for which in ("encoder_q", "encoder_k"):
        converted = convert_encoder_state_dict(state, getattr(model, which), which=which, skeleton=skeleton,
                                               check_adjacency=check_adjacency,
                                               ignore_extra_skeletons=ignore_extra_skeletons)
        out.update({f"{which}.{k}": v for k, v in converted.items()})
    queue = state["queue"]
    if queue.shape != model.queue.shape:
        raise CheckpointError(f"queue shape {tuple(queue.shape)} in the checkpoint, {tuple(model.queue.shape)} in "
                              "the model: build MSAimCLR with the same dim and queue_size")
    out["queue"] = queue.detach().clone().to(model.queue.dtype)
    ptr = state.get("queue_ptr", torch.zeros(1, dtype=torch.long))
    out["queue_ptr"] = ptr.detach().clone().to(torch.long).reshape(1)
    return out


__all__ = ["select_encoder", "convert_encoder_state_dict", "convert_aimclr_state_dict"]
