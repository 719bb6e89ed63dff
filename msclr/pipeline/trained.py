"""A finished training run loaded for inference: :class:`TrainedRun`, :func:`load_run`, :func:`open_run`.

``model.pt`` holds a network per evaluation protocol of the run (:class:`msclr.pipeline.rundir.ModelFile`):
the frozen pretrained encoder with linear classifiers (``linear``), the fine-tuned encoder with its heads
(``finetune``, ``semi:P``), the network trained from random weights (``scratch``).  Prediction uses one of
them: the one asked for, else the first of :data:`PREFERENCE` the run has: the fine-tuned model when there is
one (it adapted every weight to all the labels), then linear evaluation (all labels, frozen encoder), then the
fine-tuned models of fewer labels, then the supervised baseline.  No choice is made from test accuracy.

Only the run folder, :mod:`msclr.models` (through :mod:`msclr.models.build`) and the configuration's
dataclasses are used; nothing of the training code (``msclr.pipeline.training``) is imported.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from msclr.errors import CheckpointError, MsclrError
from msclr.pipeline.rundir import DEFAULT_PROTOCOL, RunFolder, RunInfo
from msclr.skeletons import Skeleton

PREFERENCE = ("finetune", "linear", "semi", "scratch")
"""Protocol kinds in the order prediction prefers them when ``--protocol`` is not given."""


@dataclass
class TrainedRun:
    """A finished run loaded for inference.

    Attributes:
        info: the run's description (:class:`msclr.pipeline.rundir.RunInfo`; a ``run.json`` mapping given
            here is validated and typed).
        skeletons: convention -> definition (from the run, so user skeletons work without the registry).
        encoders: stream -> frozen :class:`msclr.models.stgcn.MultiSkeletonSTGCN` in eval mode.
        classifiers: stream -> convention -> ``torch.nn.Linear``.
        protocol: the evaluation protocol whose weights these are (``linear``, ``finetune``, ...).
        protocols: every protocol ``model.pt`` holds.
    """

    info: RunInfo
    skeletons: dict[str, Skeleton]
    encoders: dict[str, Any]
    classifiers: dict[str, dict[str, Any]]
    protocol: str = DEFAULT_PROTOCOL
    protocols: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.info = RunInfo.from_dict(self.info)

    @property
    def classes(self) -> list[str]:
        return list(self.info.classes)

    def logits(self, inputs: Mapping[str, Any]) -> dict[str, dict[str, np.ndarray]]:
        """Per-stream, per-convention logits of preprocessed clips.

        Args:
            inputs: convention -> (N, 3, T, V, M) float32 array/tensor, preprocessed like the training data
                (:func:`msclr.pipeline.preprocess.preprocess_clip` with ``info.preprocessing``).
                Conventions the run does not know are ignored; at least one must be known.

        Returns:
            stream -> convention -> (N, C) float32 logits.
        """
        import torch

        from msclr.models.build import encoder_features

        known = [c for c in inputs if c in self.skeletons]
        if not known:
            raise MsclrError(f"none of the conventions {list(inputs)} was trained in this run "
                             f"({', '.join(self.skeletons)}).")
        out: dict[str, dict[str, np.ndarray]] = {}
        for stream, encoder in self.encoders.items():
            device = next(encoder.parameters()).device
            out[stream] = {}
            for conv in known:
                x = torch.as_tensor(np.asarray(inputs[conv], dtype=np.float32)).to(device)
                with torch.no_grad():
                    feats = encoder_features(encoder, x, self.skeletons[conv], stream)
                    out[stream][conv] = self.classifiers[stream][conv](feats).float().cpu().numpy()
        return out

    def scores(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """Logits, per-stream skeleton-ensemble scores and the fused score (all streams) for prediction.

        Returns:
            ``{"logits": stream -> conv -> (N, C), "streams": stream -> (N, C) ensemble score,
            "final": (N, C)}``; scores are probabilities in softmax mode (the run's ``ensemble_mode`` /
            ``fusion.mode``), averaged logits in logits mode.
        """
        from msclr.models.fusion import ensemble_scores, fuse_streams

        logits = self.logits(inputs)
        streams = {s: ensemble_scores(v, self.info.ensemble_mode) for s, v in logits.items()}
        if len(streams) > 1:
            fusion = self.info.fusion
            final = fuse_streams({s: ensemble_scores(logits[s], fusion.mode) for s in streams},
                                 fusion.weights, already=fusion.mode)
        else:
            final = next(iter(streams.values()))
        return {"logits": logits, "streams": streams, "final": final}


def choose_protocol(available: list[str], requested: str | None = None) -> str:
    """The protocol to predict with: ``requested`` (checked), else the first of :data:`PREFERENCE` the run has
    (``semi:P`` by larger P first).

    Raises:
        MsclrError: ``requested`` is not a protocol of the run (the message lists the run's).
    """
    from msclr.errors import closest
    from msclr.pipeline.config import parse_protocol

    if requested is not None:
        name = parse_protocol(requested).name
        if name not in available:
            raise MsclrError(f"the run has no {name} model{closest(name, available)}; its protocols: "
                             f"{', '.join(available)} (--protocol).")
        return name
    if not available:
        raise CheckpointError("model.pt holds no trained model; retrain the run.")

    def rank(name: str) -> tuple[int, float]:
        kind = name.split(":", 1)[0]
        order = PREFERENCE.index(kind) if kind in PREFERENCE else len(PREFERENCE)
        return order, -float(name.split(":", 1)[1]) if kind == "semi" else 0.0

    return min(available, key=rank)


def load_run(run: str | Path, *, device: str = "cpu", protocol: str | None = None) -> TrainedRun:
    """Load a run folder's ``run.json`` and ``model.pt`` (``weights_only=True``) and rebuild the frozen
    encoders and classifiers of ``protocol`` (default: :func:`choose_protocol`; see :func:`open_run` for the
    checks made before)."""
    folder = RunFolder(run)
    return _load(folder, folder.read_info(), device, protocol)


def _load(folder: RunFolder, info: RunInfo, device: str, protocol: str | None) -> TrainedRun:
    """:func:`load_run` given the run's ``run.json`` already read."""
    import torch

    from msclr.models.build import build_encoder
    from msclr.pipeline.config import config_from_dict

    model = folder.read_model()
    chosen = choose_protocol(list(model.protocols), protocol)
    skeletons = {name: Skeleton.from_dict(d, origin=str(folder.model)) for name, d in model.skeletons.items()}
    model_cfg = config_from_dict({"model": model.model_config}).model
    encoders, classifiers = {}, {}
    for stream, weights in model.protocols[chosen].items():
        enc = build_encoder([skeletons[c] for c in model.conventions], model_cfg, head="mlp")
        enc.load_state_dict(weights.encoder)
        encoders[stream] = enc.to(device).eval()
        classifiers[stream] = {}
        for conv, wb in weights.classifiers.items():
            fc = torch.nn.Linear(wb["weight"].shape[1], wb["weight"].shape[0])
            fc.load_state_dict({"weight": wb["weight"], "bias": wb["bias"]})
            classifiers[stream][conv] = fc.to(device).eval()
    return TrainedRun(info, skeletons, encoders, classifiers, chosen, list(model.protocols))


def open_run(run: str | Path, *, device: str = "cpu", protocol: str | None = None) -> TrainedRun:
    """Load a FINISHED run for prediction (:func:`load_run` of ``protocol`` after checks).

    Raises:
        CheckpointError: the folder is missing, is not an msclr run, is not finished (status
            "running" / "interrupted"), has no ``model.pt``, or ``model.pt`` is not a
            pickle-free msclr checkpoint (refused before anything in it is executed).
    """
    folder = RunFolder(run)
    return _load(folder, folder.read_finished("--model"), device, protocol)


__all__ = ["PREFERENCE", "TrainedRun", "choose_protocol", "load_run", "open_run"]
