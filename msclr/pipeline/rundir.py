"""The run folder of ``msclr train``: one typed description, written and read in this module only.

Layout of ``RUN/``::

    run.json               RunInfo: conventions, streams, protocols, preprocessing, classes, model sizes,
                           ensemble / fusion modes, split, cache, status ("running" -> "complete", or
                           "interrupted" after Ctrl-C)
    config.toml            the resolved configuration (reusable: msclr train ... --config RUN/config.toml)
    config.json            the same as JSON
    classes.txt            class names, one per line, label order
    skeletons/NAME.json    each convention's full definition (user-defined ones included)
    streams/STREAM/checkpoints/last.pt   pretraining state (resume)
    split/train.txt, split/test.txt   clip names of an automatic split (made when the cache had none)
    protocols/TAG/train_clips.txt     the labelled clips a ``semi:P`` protocol used (TAG = semi_0.1)
    model.pt               ModelFile: the network (conventions, skeleton definitions, model sizes) and its
                           weights: per protocol and stream, the encoder and one linear classifier per
                           convention; per stream the pretrained encoder (``--init`` of another run)
    metrics.json           accuracy per stream x convention, skeleton ensemble, 3-stream fusion; per class.
                           The linear protocol at the top level, other protocols under "protocols"
    test_scores.npz        test logits per stream/convention + labels + clip names (re-fusion offline);
                           other protocols as TAG__STREAM__CONVENTION
    report/*.png           confusion matrices (OpenCV; other protocols' names start with their TAG)
    tensorboard/           TensorBoard event files (when the ``tensorboard`` package is installed)

``run.json`` says *how* to use the network (preprocessing, class names, ensemble and fusion modes);
``model.pt`` holds only what rebuilds the network, so nothing is stored twice.  Every file is written
atomically; ``run.json`` is written first with status "running" and rewritten as "complete" at the end
("interrupted" when Ctrl-C stopped it), so a crashed run is recognisable and ``--resume`` continues it.  ``model.pt`` loads with
``torch.load(weights_only=True)``: a file carrying pickled objects is refused before anything in it runs.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np

from msclr import __version__
from msclr.errors import CheckpointError
from msclr.files import atomic_write_bytes, atomic_write_text, load_checkpoint, save_checkpoint

RUN_FORMAT = "msclr-run"
RUN_VERSION = 1
MODEL_KIND = "model"


class RunStatus(StrEnum):
    """Life cycle of a run folder (the ``status`` of ``run.json``)."""

    RUNNING = "running"
    COMPLETE = "complete"
    INTERRUPTED = "interrupted"


def _json(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=False, allow_nan=True) + "\n"


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


# --------------------------------------------------------------------- run.json
@dataclass(frozen=True)
class Preprocessing:
    """How clips are turned into network input (training and prediction alike).

    Attributes:
        length: frames T after temporal resizing.
        centre: the centre joint is subtracted per frame.
        y_rotation: the shoulder line is rotated onto the x axis per frame.
        mean_pose: each clip's time-averaged pose is subtracted (``False`` in runs written before it existed).
        valid: which frames count as valid before resizing (``"located"``: frames with a person).
        max_persons: person slots M of the network input (empty slots are zeros).
    """

    length: int
    centre: bool
    y_rotation: bool
    valid: str
    max_persons: int
    mean_pose: bool = False

    def clip_options(self) -> dict[str, Any]:
        """Keyword arguments of :func:`msclr.pipeline.preprocess.preprocess_clip`."""
        return {"length": self.length, "centre": self.centre, "y_rotation": self.y_rotation, "valid": self.valid,
                "mean_pose": self.mean_pose}


@dataclass(frozen=True)
class Fusion:
    """Stream fusion: ``weights`` per stream and ``mode`` (``softmax`` or ``logits`` averaging)."""

    weights: dict[str, float]
    mode: str


@dataclass(frozen=True)
class SplitInfo:
    """The cache split a run was trained (``train``) and evaluated (``test``) on, with clip counts.

    ``automatic``: the cache had no split and training made a stratified one (names in ``RUN/split/``).
    """

    train: str
    test: str
    train_clips: int
    test_clips: int
    automatic: bool = False


RUN_FILES = {"model": "model.pt", "metrics": "metrics.json", "config": "config.toml",
             "classes": "classes.txt", "scores": "test_scores.npz"}


@dataclass(frozen=True)
class RunInfo(Mapping[str, Any]):
    """``run.json``: what a run is and how its network is used.

    Typed fields for code; it also reads as the JSON mapping it is stored as (``info["classes"]``), so
    scripts that treat ``run.json`` as a dict keep working.

    Attributes:
        conventions: skeleton conventions of the network, in ensemble order.
        streams: input streams (``joint``, ``motion``, ``bone``), each with its own encoder.
        preprocessing: see :class:`Preprocessing`.
        classes: class names in label order.
        split: see :class:`SplitInfo`.
        model: the encoder's sizes (the ``[model]`` configuration plus ``head`` and ``in_channels``).
        ensemble_mode: how the skeleton ensemble averages classifiers (``softmax`` / ``logits``).
        fusion: see :class:`Fusion`.
        skeletons: convention -> definition (``Skeleton.to_dict()``).
        config: the resolved configuration as a dict.
        cache: absolute path of the cache trained on.
        protocols: evaluation protocols of the run (``linear``, ``finetune``, ``semi:P``, ``scratch``).
        status: ``running``, ``complete`` or ``interrupted``.
    """

    conventions: list[str]
    streams: list[str]
    preprocessing: Preprocessing
    classes: list[str]
    split: SplitInfo
    model: dict[str, Any]
    ensemble_mode: str
    fusion: Fusion
    skeletons: dict[str, dict[str, Any]]
    config: dict[str, Any]
    cache: str
    protocols: list[str] = field(default_factory=lambda: ["linear"])
    status: str = RunStatus.RUNNING.value
    created: str = field(default_factory=_now)
    finished: str | None = None
    msclr_version: str = __version__

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of ``run.json`` (key order as written)."""
        out: dict[str, Any] = {
            "format": RUN_FORMAT, "version": RUN_VERSION, "msclr_version": self.msclr_version,
            "status": self.status, "created": self.created, "cache": self.cache,
            "conventions": list(self.conventions), "streams": list(self.streams),
            "protocols": list(self.protocols),
            "preprocessing": asdict(self.preprocessing), "classes": list(self.classes),
            "num_classes": len(self.classes), "split": asdict(self.split), "model": dict(self.model),
            "ensemble_mode": self.ensemble_mode, "fusion": asdict(self.fusion), "skeletons": dict(self.skeletons),
            "files": dict(RUN_FILES), "config": self.config,
        }
        if self.finished is not None:
            out["finished"] = self.finished
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, origin: str = "run.json") -> RunInfo:
        """Validate and type a ``run.json`` object.

        Raises:
            CheckpointError: not an msclr run description, another format version, or a missing /
                malformed field (named in the message).
        """
        if isinstance(data, RunInfo):
            return data
        if data.get("format") != RUN_FORMAT:
            raise CheckpointError(f"{origin} is not an msclr run description.")
        if data.get("version") != RUN_VERSION:
            raise CheckpointError(f"{origin} is run format version {data.get('version')!r}; this msclr reads "
                                  f"version {RUN_VERSION}. Retrain with this msclr, or use the msclr that wrote it.")
        try:
            return cls(
                conventions=list(data["conventions"]), streams=list(data["streams"]),
                preprocessing=Preprocessing(**data["preprocessing"]), classes=list(data["classes"]),
                split=SplitInfo(**data["split"]), model=dict(data["model"]),
                ensemble_mode=str(data["ensemble_mode"]), fusion=Fusion(**data["fusion"]),
                skeletons=dict(data["skeletons"]), config=dict(data["config"]), cache=str(data["cache"]),
                protocols=list(data["protocols"]), status=str(data["status"]), created=str(data["created"]),
                finished=data.get("finished"),
                msclr_version=str(data["msclr_version"]),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise CheckpointError(f"{origin} is damaged or incomplete ({type(err).__name__}: {err}); "
                                  "retrain, or restore the run folder from a copy.") from None

    def completed(self) -> RunInfo:
        """This description with status ``complete`` and the finishing time."""
        from dataclasses import replace

        return replace(self, status=RunStatus.COMPLETE.value, finished=_now())

    def interrupted(self) -> RunInfo:
        """This description with status ``interrupted`` (Ctrl-C; ``--resume`` continues it)."""
        from dataclasses import replace

        return replace(self, status=RunStatus.INTERRUPTED.value)

    # read-only mapping view of the JSON object
    def __getitem__(self, key: str) -> Any:
        return self.to_dict()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_dict())

    def __len__(self) -> int:
        return len(self.to_dict())


# --------------------------------------------------------------------- model.pt
@dataclass
class StreamWeights:
    """One stream's weights: the encoder's ``state_dict`` and, per convention, the linear classifier's
    ``{"weight": (C, F), "bias": (C,)}`` tensors."""

    encoder: dict[str, Any]
    classifiers: dict[str, dict[str, Any]]


DEFAULT_PROTOCOL = "linear"
"""The protocol of model files written before protocols existed (their weights are linear evaluation's)."""


@dataclass
class ModelFile:
    """``model.pt``: what rebuilds the trained network, for every evaluation protocol of the run.

    Attributes:
        conventions: skeleton conventions, in the encoder's order.
        skeletons: convention -> definition (``Skeleton.to_dict()``), so user skeletons need no registry.
        model_config: the ``[model]`` configuration as a dict (channel widths, dropout, input norm, ...).
        protocols: protocol (``linear``, ``finetune``, ``semi:0.1``, ``scratch``) -> stream ->
            :class:`StreamWeights`.  ``linear``'s encoders are the pretrained ones (frozen).
        pretrained: stream -> the pretrained encoder's ``state_dict`` (what ``--init`` starts another run from;
            empty when nothing was pretrained, e.g. a ``scratch``-only run).  Tensors it shares with
            ``linear``'s encoders are stored once.
    """

    conventions: list[str]
    skeletons: dict[str, dict[str, Any]]
    model_config: dict[str, Any]
    protocols: dict[str, dict[str, StreamWeights]]
    pretrained: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_state(self) -> dict[str, Any]:
        """The checkpoint payload (plain types and tensors only)."""
        return {"conventions": list(self.conventions), "skeletons": dict(self.skeletons),
                "model_config": dict(self.model_config),
                "protocols": {p: {s: {"encoder": w.encoder, "classifiers": w.classifiers} for s, w in streams.items()}
                              for p, streams in self.protocols.items()},
                "pretrained": dict(self.pretrained)}

    @classmethod
    def from_state(cls, state: Mapping[str, Any], *, origin: str = "model.pt") -> ModelFile:
        """Type a loaded checkpoint payload; :class:`CheckpointError` names a missing part."""
        try:
            protocols = {p: {s: StreamWeights(dict(w["encoder"]), dict(w["classifiers"])) for s, w in streams.items()}
                         for p, streams in state["protocols"].items()}
            pretrained = {s: dict(e) for s, e in state["pretrained"].items()}
            return cls(conventions=list(state["conventions"]), skeletons=dict(state["skeletons"]),
                       model_config=dict(state["model_config"]), protocols=protocols, pretrained=pretrained)
        except (KeyError, TypeError, AttributeError) as err:
            raise CheckpointError(f"{origin} is incomplete ({type(err).__name__}: {err}); retrain the run.") from None


# --------------------------------------------------------------------- the folder
@dataclass(frozen=True)
class RunFolder:
    """A run folder: its file names, and the one place that reads and writes them."""

    root: Path

    def __init__(self, root: str | Path) -> None:
        object.__setattr__(self, "root", Path(root))

    # file names
    @property
    def run_json(self) -> Path:
        return self.root / "run.json"

    @property
    def config_toml(self) -> Path:
        return self.root / "config.toml"

    @property
    def config_json(self) -> Path:
        return self.root / "config.json"

    @property
    def classes(self) -> Path:
        return self.root / "classes.txt"

    @property
    def model(self) -> Path:
        return self.root / RUN_FILES["model"]

    @property
    def metrics(self) -> Path:
        return self.root / RUN_FILES["metrics"]

    @property
    def scores(self) -> Path:
        return self.root / RUN_FILES["scores"]

    @property
    def report(self) -> Path:
        return self.root / "report"

    @property
    def tensorboard(self) -> Path:
        return self.root / "tensorboard"

    def skeleton(self, name: str) -> Path:
        return self.root / "skeletons" / f"{name}.json"

    def stream_dir(self, stream: str) -> Path:
        return self.root / "streams" / stream

    def split_names(self, side: str) -> Path:
        """``split/train.txt`` or ``split/test.txt``: the clip names of an automatic split."""
        return self.root / "split" / f"{side}.txt"

    def protocol_clips(self, tag: str) -> Path:
        """``protocols/TAG/train_clips.txt``: the labelled clips a protocol trained on (``semi:P``)."""
        return self.root / "protocols" / tag / "train_clips.txt"

    # reading
    def read_info(self) -> RunInfo:
        """``run.json``; :class:`CheckpointError` if this is not a run folder."""
        if not self.run_json.is_file():
            raise CheckpointError(f"{self.root} is not an msclr run folder (no run.json); give the --out folder "
                                  "of `msclr train`.")
        try:
            data = json.loads(self.run_json.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
            raise CheckpointError(f"cannot read {self.run_json}: {err}") from None
        if not isinstance(data, dict):
            raise CheckpointError(f"{self.run_json} is not an msclr run description.")
        return RunInfo.from_dict(data, origin=str(self.run_json))

    def read_finished(self, option: str = "--model") -> RunInfo:
        """``run.json`` of a FINISHED run, the folder checked first; :class:`CheckpointError` naming ``option``
        when the folder is missing, a file, not a run, unfinished (status running / interrupted: the message gives
        the command that finishes it) or without ``model.pt``."""
        if not self.root.exists():
            raise CheckpointError(f"{option} {self.root} does not exist; pass the --out folder of `msclr train` "
                                  f"(e.g. {option} run/).")
        if not self.root.is_dir():
            raise CheckpointError(f"{option} {self.root} is a file; pass the run FOLDER written by `msclr train` "
                                  "(the one holding run.json and model.pt).")
        info = self.read_info()
        if info.status != RunStatus.COMPLETE:
            raise CheckpointError(f"{self.root} is not a finished run (status {info.status!r}): training stopped "
                                  f"before it wrote model.pt. Finish it with `msclr train {info.cache} --out "
                                  f"{self.root} --resume`.")
        if not self.model.is_file():
            raise CheckpointError(f"{self.root}/model.pt is missing although run.json says the run is complete; "
                                  "copy the whole run folder, or retrain.")
        return info

    def read_model(self, map_location: Any = "cpu") -> ModelFile:
        """``model.pt`` (``torch.load(weights_only=True)``)."""
        state = load_checkpoint(self.model, kind=MODEL_KIND, map_location=map_location)
        return ModelFile.from_state(state, origin=str(self.model))

    def read_metrics(self) -> dict[str, Any]:
        """``metrics.json`` of a finished run; :class:`CheckpointError` naming what is missing."""
        info = self.read_info()
        if not self.metrics.is_file():
            raise CheckpointError(f"{self.root} has no metrics.json (run status: {info.status}); finish it with "
                                  "`msclr train ... --out RUN --resume`.")
        return json.loads(self.metrics.read_text(encoding="utf-8"))

    # writing
    def write_start(self, info: RunInfo, config_toml: str, skeletons: Mapping[str, Any]) -> None:
        """Create the folder with its description (status running), configuration, classes and skeletons."""
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.config_toml, config_toml)
        atomic_write_text(self.config_json, _json(info.config))
        atomic_write_text(self.classes, "\n".join(info.classes) + "\n")
        for name, skel in skeletons.items():
            atomic_write_text(self.skeleton(name), _json(skel.to_dict()))
        self.write_info(info)

    def write_info(self, info: RunInfo) -> None:
        atomic_write_text(self.run_json, _json(info.to_dict()))

    def write_model(self, model: ModelFile) -> None:
        save_checkpoint(self.model, model.to_state(), kind=MODEL_KIND)

    def write_metrics(self, metrics: Mapping[str, Any]) -> None:
        atomic_write_text(self.metrics, _json(metrics))

    def write_names(self, path: Path, names: list[str]) -> None:
        """A list of clip names, one per line (:meth:`split_names`, :meth:`protocol_clips`)."""
        atomic_write_text(path, "".join(f"{n}\n" for n in names))

    def read_names(self, path: Path) -> list[str] | None:
        """The names written by :meth:`write_names`, or None when the file does not exist."""
        if not path.is_file():
            return None
        return [line for line in path.read_text(encoding="utf-8").splitlines() if line]

    def write_report_json(self, name: str, data: Any) -> None:
        atomic_write_text(self.report / name, _json(data))

    def write_scores(self, labels: np.ndarray, names: list[str], logits: Mapping[str, Mapping[str, np.ndarray]]) -> None:
        """``test_scores.npz``: ``labels``, ``names`` and one (N, C) logits array per ``KEY__CONVENTION``, KEY
        being the stream (linear protocol) or ``TAG__STREAM`` (other protocols)."""
        buffer = io.BytesIO()
        arrays = {f"{s}__{c}": v for s, d in logits.items() for c, v in d.items()}
        np.savez(buffer, labels=labels, names=np.asarray(names), **arrays)
        atomic_write_bytes(self.scores, buffer.getvalue())


def read_run_info(run: str | Path) -> RunInfo:
    """``run.json`` of a run folder (see :meth:`RunFolder.read_info`)."""
    return RunFolder(run).read_info()


def read_metrics(run: str | Path) -> dict[str, Any]:
    """``metrics.json`` of a finished run (see :meth:`RunFolder.read_metrics`)."""
    return RunFolder(run).read_metrics()


__all__ = ["RUN_FORMAT", "RUN_VERSION", "DEFAULT_PROTOCOL", "RunStatus", "Preprocessing", "Fusion", "SplitInfo", "RunInfo",
           "StreamWeights", "ModelFile", "RunFolder", "read_run_info", "read_metrics"]
