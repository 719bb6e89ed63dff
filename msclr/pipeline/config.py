"""Training configuration: one dataclass per stage, with the paper's defaults, plus TOML recipes.

Defaults are MS-AimCLR's published NTU-60 settings (the authors' released pretext and linear-evaluation
configs):

- pretraining: SGD momentum 0.9, **Nesterov off**, weight decay 1e-4, lr 0.1 -> 0.01 after epoch 250 of 300,
  batch 128, nearest-neighbour mining from epoch 151 (``mining_epoch`` 150, 1-based epochs), queue 32768,
  key momentum 0.999, temperature 0.07, feature dim 128, skeleton pairs drawn ``full_random`` per batch;
- linear evaluation: SGD momentum 0.9, Nesterov off, **weight decay 0**, lr 3.0 -> 0.3 after epoch 80 of 100,
  batch 128, last epoch reported;
- 3-stream fusion weights 0.6 joint, 0.6 bone, 0.4 motion;
- evaluation protocol ``linear`` only; the fine-tuned protocols (``finetune``, ``semi:P``, ``scratch``) use
  AimCLR's fine-tuning code defaults (:class:`FinetuneConfig`, docs/method.md "Evaluation protocols").

A *recipe* is a TOML file with the sections ``[data]``, ``[model]``, ``[pretrain]``, ``[linear]``,
``[finetune]``, ``[evaluation]``, ``[fusion]``; keys it does not set keep these defaults; an unknown section
or key is an error that lists the valid ones.  Packaged recipes live in ``msclr/recipes/`` and are addressed by
name (``ntu60_xsub``): a packaged name wins over a file or folder of the same name unless the argument ends in
``.toml`` or contains a path separator.

Scaling with ``--epochs``: :meth:`PretrainConfig.with_epochs` keeps the *fractions* of the paper's schedule
(lr step at 250/300, mining from 151/300), so a 30-epoch run steps at 25 and mines from 16.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

from msclr.errors import MsclrError, closest

STREAMS = ("joint", "motion", "bone")
"""The three input streams, each a separately pretrained model (no cross-stream loss)."""

PAIR_MODES = ("full_random", "half_random")
OBJECTIVES = ("aimclr", "nnclr")  # = the models msclr.models.build.build_model builds
INPUT_NORMS = ("joint", "axis")  # = msclr.models.stgcn.INPUT_NORMS (config stays importable without torch)
SCORE_MODES = ("softmax", "logits")


class ConfigError(MsclrError):
    """A recipe or option value that is invalid."""


class OptionError(ConfigError):
    """A command-line option value that is malformed or names nothing msclr knows (a usage error: exit 2)."""


@dataclass(frozen=True)
class DataConfig:
    """What to train on.

    Attributes:
        skeletons: conventions of the cache to train on (the first is the ``half_random`` anchor).  Default
            ``kinectv2_25`` + ``smplx_42`` (both MeTRAbs estimates, so any video cache has them); the paper's
            exact pair is ``ntu_kinect_25`` (NTU's own Kinect ground truth) + ``smplx_42``.
        split: split *family* (``xsub`` -> ``xsub_train`` / ``xsub_val``) or ``""`` to pick the only
            ``*_train`` / ``*_val`` pair of the cache.
        streams: streams to pretrain; each is its own model; with all three the run adds 3-stream fusion.
        length: frames per clip after temporal resizing (50 in the paper).
        centre: subtract the centre joint per frame (the paper's NTU preprocessing).
        y_rotation: the paper's per-frame y-rotation of the shoulder line (off by default for estimated poses).
        mean_pose: after centring and resizing, subtract each clip's time-averaged pose (per person and joint),
            so the input is the motion around the clip's own mean pose; removes body size and proportions, a
            cue that tells subjects apart rather than actions (off in the paper; on in ``small_data``).
    """

    skeletons: tuple[str, ...] = ("kinectv2_25", "smplx_42")
    split: str = ""
    streams: tuple[str, ...] = ("joint",)
    length: int = 50
    centre: bool = True
    y_rotation: bool = False
    mean_pose: bool = False

    def preprocessing(self) -> dict[str, Any]:
        """The keyword arguments of :func:`msclr.pipeline.preprocess.preprocess_clip` this section sets."""
        return {"length": self.length, "centre": self.centre, "y_rotation": self.y_rotation,
                "mean_pose": self.mean_pose}


@dataclass(frozen=True)
class ModelConfig:
    """Encoder (multi-skeleton ST-GCN) and contrastive-model settings; the defaults are the reference's.

    ``objective``: ``"aimclr"`` (MS-AimCLR: momentum key encoder, queue of ``queue_size`` negatives, extreme
    view, D3M) or ``"nnclr"`` (opt-in for small datasets: one encoder, in-batch negatives, nearest-neighbour
    positives from a support set of ``queue_size`` past embeddings, weighted ``nn_weight``;
    :mod:`msclr.models.nnclr`).  ``head_norm``: BatchNorm in the projection head (not in the reference).
    """

    hidden_channels: int = 16
    hidden_dim: int = 256
    feature_dim: int = 128
    dropout: float = 0.5
    edge_importance: bool = True
    queue_size: int = 32768
    key_momentum: float = 0.999
    temperature: float = 0.07
    shuffle_bn: bool = False  # MoCo v2 shuffle-BN across DDP ranks (the reference has none)
    # input BatchNorm: "joint" = the reference's data_bn (one channel per joint and axis); "axis" = one per axis
    input_norm: str = "joint"
    objective: str = "aimclr"
    head_norm: bool = False
    nn_weight: float = 0.5


def _stretch_steps(steps: tuple[int, ...], old_epochs: int, new_epochs: int) -> tuple[int, ...]:
    """Step epochs of a schedule of ``old_epochs`` moved to the same fractions of ``new_epochs`` (in [1, new])."""
    ratio = new_epochs / old_epochs
    return tuple(max(1, min(new_epochs, round(s * ratio))) for s in steps)


def _step_lr(lr: float, gamma: float, steps: tuple[int, ...], epoch: int) -> float:
    """Step schedule: ``lr * gamma ** (number of steps < epoch)`` for 1-based ``epoch``."""
    return lr * gamma ** sum(1 for s in steps if epoch > s)


@dataclass(frozen=True)
class PretrainConfig:
    """MS-AimCLR pretraining schedule (the defaults are the reference's).

    ``lr_steps`` and ``mining_epoch`` are 1-based epoch counts: lr = lr * gamma^(#steps < epoch); mining
    (nearest-neighbour positives) is on for ``epoch > mining_epoch``.  ``bone_scale`` and ``crop_min`` are
    extra augmentations of every normal view (off in the reference): each bone of a clip scaled by its own
    factor from U(1 - bone_scale, 1 + bone_scale), and a random sub-clip of at least ``crop_min`` of the
    frames resampled to the full length (a speed change).  ``init`` (``--init RUN``): the folder of
    a finished run whose pretrained encoders this run starts from instead of pretraining ("" = pretrain).
    """

    epochs: int = 300
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    lr_steps: tuple[int, ...] = (250,)
    lr_gamma: float = 0.1
    mining_epoch: int = 150
    topk: int = 1
    pair_mode: str = "full_random"
    checkpoint_every: int = 5
    normalize_blur: bool = False
    mirror_flip: bool = False
    seed: int = 0
    workers: int = 0
    init: str = ""
    bone_scale: float = 0.0
    crop_min: float = 1.0

    def with_epochs(self, epochs: int) -> PretrainConfig:
        """The same schedule stretched to ``epochs`` (lr steps and mining epoch keep their fractions)."""
        if epochs < 1:
            raise ConfigError(f"--epochs must be >= 1, got {epochs}.")
        mining = max(0, min(epochs, round(self.mining_epoch * epochs / self.epochs)))
        return replace(self, epochs=epochs, lr_steps=_stretch_steps(self.lr_steps, self.epochs, epochs),
                       mining_epoch=mining)

    def lr_at(self, epoch: int) -> float:
        """Learning rate of 1-based ``epoch``."""
        return _step_lr(self.lr, self.lr_gamma, self.lr_steps, epoch)


class _StepSchedule:
    """``with_epochs`` / ``lr_at`` of a step schedule with the fields ``epochs``, ``lr``, ``lr_steps`` and
    ``lr_gamma``; ``OPTION`` names its ``--*-epochs`` option in messages."""

    OPTION: ClassVar[str] = "--epochs"
    epochs: int
    lr: float
    lr_steps: tuple[int, ...]
    lr_gamma: float

    def with_epochs(self, epochs: int) -> Any:
        """The same schedule stretched to ``epochs`` (the lr steps keep their fractions)."""
        if epochs < 1:
            raise OptionError(f"{self.OPTION} must be >= 1, got {epochs}.")
        return replace(self, epochs=epochs, lr_steps=_stretch_steps(self.lr_steps, self.epochs, epochs))  # type: ignore[type-var]

    def lr_at(self, epoch: int) -> float:
        """Learning rate of 1-based ``epoch``."""
        return _step_lr(self.lr, self.lr_gamma, self.lr_steps, epoch)


@dataclass(frozen=True)
class LinearConfig(_StepSchedule):
    """Frozen-encoder linear evaluation (defaults: the reference's, but the last epoch is reported).

    ``score_mode`` decides how the skeleton ensemble averages its classifiers: ``softmax`` (the paper's
    description, default) or ``logits`` (what the reference code does).  ``drop_last`` follows the reference's
    training loader; it is ignored when the training set is smaller than one batch.  ``standardize`` (not in
    the reference; off by default) trains the classifier on features standardised with the training set's
    per-dimension mean / std, folded back into the saved weights; it is still a linear classifier of the raw
    features, only better conditioned for SGD (features with a large common offset, e.g. small CPU runs).
    """

    epochs: int = 100
    batch_size: int = 128
    lr: float = 3.0
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    lr_steps: tuple[int, ...] = (80,)
    lr_gamma: float = 0.1
    drop_last: bool = True
    standardize: bool = False
    score_mode: str = "softmax"
    report_best: bool = False
    seed: int = 0
    OPTION: ClassVar[str] = "--linear-epochs"


@dataclass(frozen=True)
class FinetuneConfig(_StepSchedule):
    """Fine-tuned protocols (``finetune``, ``semi:P``, ``scratch``): encoder + one linear head per convention,
    every weight trained with labels (defaults: AimCLR's fine-tuning code, whose released configs set none).

    AimCLR's fine-tuning processor: SGD momentum 0.9, **Nesterov on**, weight decay 1e-4, lr 0.01, no lr step;
    epochs and batch are not set there: 100 epochs and batch 128 as linear evaluation.  ``augment``: the
    normal augmentation (shear + temporal crop) on training batches, as the reference's training feeder.
    ``eval_mode`` keeps the network in ``eval()`` while training (frozen BatchNorm statistics, no dropout), a
    quirk of the reference's loop; off by default (BatchNorm and dropout train as usual).
    """

    epochs: int = 100
    batch_size: int = 128
    lr: float = 0.01
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 1e-4
    lr_steps: tuple[int, ...] = ()
    lr_gamma: float = 0.1
    augment: bool = True
    eval_mode: bool = False
    seed: int = 0
    OPTION: ClassVar[str] = "--finetune-epochs"


PROTOCOL_KINDS = ("linear", "finetune", "semi", "scratch")
"""Evaluation protocols: frozen encoder + linear classifiers; fine-tuned encoder (all labels); fine-tuned on a
class-balanced fraction P of the labels (``semi:P``); the same network trained from random weights."""


@dataclass(frozen=True)
class Protocol:
    """One evaluation protocol by name (``linear``, ``finetune``, ``semi:0.1``, ``scratch``, ``scratch:0.1``)."""

    name: str

    @property
    def kind(self) -> str:
        return self.name.split(":", 1)[0]

    @property
    def fraction(self) -> float:
        """Fraction of the training labels used (1.0 except ``semi:P`` and ``scratch:P``)."""
        return float(self.name.split(":", 1)[1]) if ":" in self.name else 1.0

    @property
    def pretrained(self) -> bool:
        """Starts from the pretrained encoder (every protocol but ``scratch``)."""
        return self.kind != "scratch"

    @property
    def tag(self) -> str:
        """File-name form (``semi_0.1``)."""
        return self.name.replace(":", "_")


def parse_protocol(text: str) -> Protocol:
    """A protocol name checked and made canonical (``semi:.10`` -> ``semi:0.1``); :class:`OptionError` otherwise."""
    kind, _, value = str(text).strip().partition(":")
    if kind not in PROTOCOL_KINDS:
        raise OptionError(f"unknown protocol {text!r}{closest(kind, PROTOCOL_KINDS)}; use linear, finetune, "
                          "semi:P (P = fraction of the training labels, e.g. semi:0.1), scratch or scratch:P.")
    if kind not in ("semi", "scratch") or (kind == "scratch" and not value):
        if value:
            raise OptionError(f"protocol {kind} takes no value (got {text!r}); only semi:P and scratch:P do.")
        return Protocol(kind)
    try:
        fraction = float(value)
    except ValueError:
        raise OptionError(f"protocol {text!r} needs the label fraction: {kind}:0.1 (10 %) or {kind}:0.01 (1 %).") from None
    if not 0.0 < fraction < 1.0:
        raise OptionError(f"protocol {text!r}: the label fraction must be between 0 and 1 (exclusive), e.g. "
                          f"{kind}:0.1; the full label set is {'finetune' if kind == 'semi' else 'scratch'}.")
    return Protocol(f"{kind}:{fraction:g}")


def parse_protocols(items: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Comma-separated (or listed) protocols, canonical, each once, in the given order."""
    parts = [t for t in (items.split(",") if isinstance(items, str) else items) if str(t).strip()]
    names = [parse_protocol(t).name for t in parts]
    if not names:
        raise OptionError("--protocol is empty: give e.g. linear or linear,finetune.")
    if len(set(names)) != len(names):
        raise OptionError(f"--protocol lists a protocol twice: {', '.join(names)}.")
    return tuple(names)


@dataclass(frozen=True)
class EvaluationConfig:
    """Which protocols evaluate the run (``linear`` = the paper's; see :data:`PROTOCOL_KINDS`)."""

    protocols: tuple[str, ...] = ("linear",)


@dataclass(frozen=True)
class FusionConfig:
    """3-stream fusion: score = sum_s weight_s * score_s (the paper's weights); ``mode`` softmax or logits."""

    joint: float = 0.6
    bone: float = 0.6
    motion: float = 0.4
    mode: str = "softmax"

    def weights(self) -> dict[str, float]:
        return {"joint": self.joint, "bone": self.bone, "motion": self.motion}


@dataclass(frozen=True)
class TrainConfig:
    """Everything ``msclr train`` needs besides paths."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    linear: LinearConfig = field(default_factory=LinearConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)

    def validate(self) -> TrainConfig:
        """Check values; raises :class:`ConfigError` naming the key and the fix.  Returns the configuration with
        the protocol names made canonical (``semi:.10`` -> ``semi:0.1``)."""
        d, m, p, lin = self.data, self.model, self.pretrain, self.linear
        if not d.skeletons:
            raise ConfigError("data.skeletons is empty: name at least one convention (e.g. --skeletons smplx_42).")
        if len(set(d.skeletons)) != len(d.skeletons):
            raise ConfigError(f"data.skeletons lists a convention twice: {list(d.skeletons)}.")
        bad = [s for s in d.streams if s not in STREAMS]
        if bad or not d.streams:
            raise ConfigError(f"data.streams {list(d.streams)} invalid: use a subset of {list(STREAMS)} "
                              "(or --stream all).")
        if d.length < 2:
            raise ConfigError(f"data.length must be >= 2 frames, got {d.length}.")
        if p.pair_mode not in PAIR_MODES:
            raise ConfigError(f"pretrain.pair_mode {p.pair_mode!r} invalid: use one of {list(PAIR_MODES)}.")
        if p.batch_size < 2:
            raise ConfigError(f"pretrain.batch_size must be >= 2, got {p.batch_size}.")
        if m.queue_size % p.batch_size:
            raise ConfigError(f"model.queue_size ({m.queue_size}) must be a multiple of pretrain.batch_size "
                              f"({p.batch_size}): e.g. set queue_size = {max(1, m.queue_size // p.batch_size) * p.batch_size}.")
        if p.epochs < 1 or lin.epochs < 1:
            raise ConfigError("pretrain.epochs and linear.epochs must be >= 1.")
        if p.checkpoint_every < 1:
            raise ConfigError(f"pretrain.checkpoint_every must be >= 1, got {p.checkpoint_every}.")
        for mode, key in ((lin.score_mode, "linear.score_mode"), (self.fusion.mode, "fusion.mode")):
            if mode not in SCORE_MODES:
                raise ConfigError(f"{key} {mode!r} invalid: use one of {list(SCORE_MODES)}.")
        if m.input_norm not in INPUT_NORMS:
            raise ConfigError(f"model.input_norm {m.input_norm!r} invalid: use one of {list(INPUT_NORMS)} "
                              "('joint' = the reference's per-joint data_bn).")
        if m.objective not in OBJECTIVES:
            raise ConfigError(f"model.objective {m.objective!r} invalid: use one of {list(OBJECTIVES)}"
                              f"{closest(m.objective, OBJECTIVES)}.")
        if not 0.0 <= m.nn_weight <= 1.0:
            raise ConfigError(f"model.nn_weight must be in [0, 1] (0 = no nearest-neighbour term), got {m.nn_weight}.")
        if not 0.0 <= p.bone_scale < 1.0 or not 0.0 < p.crop_min <= 1.0:
            raise ConfigError(f"pretrain.bone_scale must be in [0, 1) and pretrain.crop_min in (0, 1] (1 = off), "
                              f"got {p.bone_scale} and {p.crop_min}.")
        if m.hidden_channels < 1 or m.hidden_dim < 1 or m.feature_dim < 1:
            raise ConfigError("model.hidden_channels, hidden_dim and feature_dim must be positive.")
        ft = self.finetune
        if ft.epochs < 1 or ft.batch_size < 1:
            raise ConfigError("finetune.epochs and finetune.batch_size must be >= 1.")
        try:
            protocols = parse_protocols(self.evaluation.protocols)
        except OptionError as err:
            raise ConfigError(f"evaluation.protocols {list(self.evaluation.protocols)}: {err}") from None
        return self if protocols == self.evaluation.protocols else replace(self, evaluation=EvaluationConfig(protocols))

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (tuples become lists), suitable for JSON/TOML."""
        return json.loads(json.dumps(asdict(self)))


SECTIONS: dict[str, type] = {
    "data": DataConfig, "model": ModelConfig, "pretrain": PretrainConfig,
    "linear": LinearConfig, "fusion": FusionConfig, "finetune": FinetuneConfig, "evaluation": EvaluationConfig,
}
"""Recipe section name -> its dataclass (the sections of :class:`TrainConfig`)."""


def skeleton_names(items: str) -> tuple[str, ...]:
    """``--skeletons a,b``: convention names, each a name (registry name, alias, or a convention defined in the
    cache) or the path of a skeleton file (``.toml`` / ``.json``, as ``msclr import`` takes), which stands for
    the convention it defines.  :class:`OptionError` for an unreadable file or a repeat."""
    from msclr.skeletons import ALIASES, load_skeleton_file

    names = []
    for item in (t.strip() for t in items.split(",")):
        if not item:
            continue
        if item.endswith((".toml", ".json")) or "/" in item or os.sep in item:
            try:
                names.append(load_skeleton_file(item).name)
            except MsclrError as err:
                raise OptionError(f"--skeletons {item}: {err}") from None
        else:
            names.append(ALIASES.get(item, item))
    if not names:
        raise OptionError("--skeletons is empty: name at least one convention (e.g. --skeletons smplx_42).")
    if len(set(names)) != len(names):
        raise OptionError(f"--skeletons lists a convention twice: {', '.join(names)}.")
    return tuple(names)


def _streams(stream: str) -> tuple[str, ...]:
    """``--stream joint|motion|bone|all`` (comma-separated allowed); :class:`OptionError` for other names."""
    names = STREAMS if stream.strip() == "all" else tuple(s.strip() for s in stream.split(",") if s.strip())
    bad = [s for s in names if s not in STREAMS]
    if bad or not names:
        raise OptionError(f"--stream {stream!r}: use joint, motion, bone, a comma-separated list of them, or all"
                          f"{closest(bad[0], STREAMS) if bad else ''}.")
    return names


def resolve_config(recipe: str | Path | None = None, *, skeletons: str | None = None, stream: str | None = None,
                   split: str | None = None, epochs: int | None = None, batch_size: int | None = None,
                   seed: int | None = None, linear_epochs: int | None = None, workers: int | None = None,
                   protocols: str | None = None, finetune_epochs: int | None = None,
                   init: str | None = None) -> tuple[TrainConfig, list[str]]:
    """Defaults < recipe < command-line overrides, validated.  Returns the config and notes for the user.

    ``epochs`` / ``linear_epochs`` / ``finetune_epochs`` stretch the schedules
    (:meth:`PretrainConfig.with_epochs`); a batch size that does not divide the queue rounds the queue down to
    a multiple (noted); ``seed`` seeds pretraining, linear evaluation and fine-tuning alike.

    Raises:
        OptionError: an option value that is malformed or names nothing (a usage error);
        ConfigError: the recipe or the resulting configuration is invalid.
    """
    notes: list[str] = []
    config = load_recipe(recipe) if recipe else TrainConfig()
    data, model, pre, lin, ft = config.data, config.model, config.pretrain, config.linear, config.finetune
    evaluation = config.evaluation
    if skeletons:
        data = replace(data, skeletons=skeleton_names(skeletons))
    if stream:
        data = replace(data, streams=_streams(stream))
    if split is not None:
        data = replace(data, split=split)
    if protocols is not None:
        evaluation = replace(evaluation, protocols=parse_protocols(protocols))
    if epochs is not None:
        pre = pre.with_epochs(epochs)
        notes.append(f"pretraining {pre.epochs} epochs: lr steps at {list(pre.lr_steps)}, mining from epoch "
                     f"{pre.mining_epoch + 1}")
    if batch_size is not None:
        pre = replace(pre, batch_size=batch_size)
    if seed is not None:
        pre, lin, ft = replace(pre, seed=seed), replace(lin, seed=seed), replace(ft, seed=seed)
    if workers is not None:
        pre = replace(pre, workers=workers)
    if init is not None:
        pre = replace(pre, init=str(Path(init).resolve()))
    if linear_epochs is not None:
        lin = lin.with_epochs(linear_epochs)
    if finetune_epochs is not None:
        ft = ft.with_epochs(finetune_epochs)
    if pre.batch_size > 0 and model.queue_size % pre.batch_size:
        queue = max(pre.batch_size, model.queue_size // pre.batch_size * pre.batch_size)
        notes.append(f"queue size {model.queue_size} -> {queue} (a multiple of the batch size {pre.batch_size})")
        model = replace(model, queue_size=queue)
    config = TrainConfig(data, model, pre, lin, config.fusion, ft, evaluation).validate()
    return config, notes


# The recipe file format (TOML <-> TrainConfig) lives with the packaged recipes; re-exported here.
from msclr.recipes import (  # noqa: E402
    config_from_dict,
    from_json_dict,
    load_recipe,
    recipe_names,
    to_toml,
)

__all__ = [
    "STREAMS", "PAIR_MODES", "SCORE_MODES", "PROTOCOL_KINDS", "ConfigError", "OptionError", "DataConfig",
    "ModelConfig", "PretrainConfig", "LinearConfig", "FinetuneConfig", "EvaluationConfig", "FusionConfig",
    "TrainConfig", "Protocol", "config_from_dict", "load_recipe", "parse_protocol", "parse_protocols",
    "recipe_names", "resolve_config", "skeleton_names", "to_toml", "from_json_dict",
]
