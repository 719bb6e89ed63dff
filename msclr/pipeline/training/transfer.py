"""``msclr train TARGET_CACHE --out RUN --init SOURCE_RUN``: start from another run's pretrained encoders.

The source must be a finished run (``run.json`` status complete) whose ``model.pt`` holds pretrained encoders
(:attr:`msclr.pipeline.rundir.ModelFile.pretrained`; a ``scratch``-only run has none).  The new run skips
pretraining and takes, per stream, the source encoder's shared blocks and the per-convention parts (adjacency,
``data_bn``, edge importance) of every convention it trains on, by name
(:func:`msclr.models.build.convention_state`); the encoder keeps the source's sizes.  Every convention and
stream of the new run must be in the source, with the same joints: anything else is an error naming both lists.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from msclr.errors import CheckpointError
from msclr.pipeline.rundir import RunFolder
from msclr.skeletons import Skeleton

ENCODER_KEYS = ("hidden_channels", "hidden_dim", "feature_dim", "dropout", "edge_importance", "input_norm")
"""``[model]`` keys that shape the encoder: a run started from another takes them from it."""


def read_source(source: str | Path) -> tuple[RunFolder, Any]:
    """The source run folder and its ``model.pt`` (read once, for :func:`source_model` and :func:`init_encoders`);
    :class:`CheckpointError` unless it is a finished run."""
    folder = RunFolder(source)
    folder.read_finished("--init")
    return folder, folder.read_model()


def source_model(stored: Any, model: Any) -> tuple[Any, list[str]]:
    """``model`` (a :class:`~msclr.pipeline.config.ModelConfig`) with the encoder sizes of the source run's
    ``model.pt`` ``stored`` (:func:`read_source`), and the ``key old -> new`` changes made."""
    known = {f.name for f in fields(model)}
    updates = {k: stored.model_config[k] for k in ENCODER_KEYS if k in stored.model_config and k in known}
    changed = [f"{k} {getattr(model, k)!r} -> {v!r}" for k, v in updates.items() if getattr(model, k) != v]
    return replace(model, **updates), changed


def init_encoders(folder: RunFolder, stored: Any, skeletons: Mapping[str, Skeleton],
                  streams: list[str]) -> dict[str, dict[str, Any]]:
    """Stream -> the source's pretrained encoder state for the conventions of ``skeletons`` (``folder`` and
    ``stored``: :func:`read_source`).

    Raises:
        CheckpointError: the source lacks a convention or a stream (both lists named), defines a convention
            with other joints, or holds no pretrained encoder.
    """
    from msclr.models.build import convention_state

    conventions = list(skeletons)
    missing = [c for c in conventions if c not in stored.conventions]
    if missing:
        raise CheckpointError(f"--init {folder.root} has no {', '.join(missing)}: it was trained on "
                              f"{', '.join(stored.conventions)}, this run trains on {', '.join(conventions)}. "
                              f"Train on conventions the source has (--skeletons), or start from another run.")
    for name in conventions:
        if list(stored.skeletons[name].get("joints", [])) != list(skeletons[name].joints):
            raise CheckpointError(f"--init {folder.root} defines {name} with other joints than this cache; "
                                  "the encoders cannot be shared.")
    if not stored.pretrained:
        raise CheckpointError(f"--init {folder.root} holds no pretrained encoder (it trained from scratch only); "
                              "start from a run that pretrained.")
    lacking = [s for s in streams if s not in stored.pretrained]
    if lacking:
        raise CheckpointError(f"--init {folder.root} has no {', '.join(lacking)} stream: it pretrained "
                              f"{', '.join(stored.pretrained)}, this run needs {', '.join(streams)} (--stream).")
    return {s: convention_state(stored.pretrained[s], conventions) for s in streams}


__all__ = ["ENCODER_KEYS", "init_encoders", "read_source", "source_model"]
