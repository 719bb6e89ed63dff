"""Training configuration: one dataclass per stage, with the paper's defaults, plus TOML recipes.

Defaults are MS-AimCLR's published NTU-60 settings (the authors' released pretext and linear-evaluation
configs):

- pretraining: SGD momentum 0.9, **Nesterov off**, weight decay 1e-4, lr 0.1 -> 0.01 after epoch 250 of 300,
  batch 128, nearest-neighbour mining from epoch 151 (``mining_epoch`` 150, 1-based epochs), queue 32768,
  key momentum 0.999, temperature 0.07, feature dim 128, skeleton pairs drawn ``full_random`` per batch;
- linear evaluation: SGD momentum 0.9, Nesterov off, **weight decay 0**, lr 3.0 -> 0.3 after epoch 80 of 100,
  batch 128, last epoch reported;
- 3-stream fusion weights 0.6 joint, 0.6 bone, 0.4 motion.

A *recipe* is a TOML file with the sections ``[data]``, ``[model]``, ``[pretrain]``, ``[linear]``,
``[fusion]``; keys it does not set keep these defaults; an unknown section or key is an error that lists the
valid ones.  Packaged recipes live in ``msclr/recipes/`` and are addressed by name (``ntu60_xsub``).

Scaling with ``--epochs``: :meth:`PretrainConfig.with_epochs` keeps the *fractions* of the paper's schedule
(lr step at 250/300, mining from 151/300), so a 30-epoch run steps at 25 and mines from 16.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from importlib import resources
from pathlib import Path
from typing import Any

from msclr.errors import MsclrError

STREAMS = ("joint", "motion", "bone")
"""The three input streams, each a separately pretrained model (no cross-stream loss)."""

PAIR_MODES = ("full_random", "half_random")
INPUT_NORMS = ("joint", "axis")  # = msclr.models.stgcn.INPUT_NORMS (config stays importable without torch)
SCORE_MODES = ("softmax", "logits")


class ConfigError(MsclrError):
    """A recipe or option value that is invalid."""


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
    """

    skeletons: tuple[str, ...] = ("kinectv2_25", "smplx_42")
    split: str = ""
    streams: tuple[str, ...] = ("joint",)
    length: int = 50
    centre: bool = True
    y_rotation: bool = False


@dataclass(frozen=True)
class ModelConfig:
    """Encoder (multi-skeleton ST-GCN) and MS-AimCLR sizes; the defaults are the reference's."""

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
    (nearest-neighbour positives) is on for ``epoch > mining_epoch``.
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


@dataclass(frozen=True)
class LinearConfig:
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

    def with_epochs(self, epochs: int) -> LinearConfig:
        """The same schedule stretched to ``epochs``."""
        if epochs < 1:
            raise ConfigError(f"--linear-epochs must be >= 1, got {epochs}.")
        return replace(self, epochs=epochs, lr_steps=_stretch_steps(self.lr_steps, self.epochs, epochs))

    def lr_at(self, epoch: int) -> float:
        """Learning rate of 1-based ``epoch``."""
        return _step_lr(self.lr, self.lr_gamma, self.lr_steps, epoch)


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

    def validate(self) -> TrainConfig:
        """Check values; raises :class:`ConfigError` naming the key and the fix."""
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
        if m.hidden_channels < 1 or m.hidden_dim < 1 or m.feature_dim < 1:
            raise ConfigError("model.hidden_channels, hidden_dim and feature_dim must be positive.")
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (tuples become lists), suitable for JSON/TOML."""
        return json.loads(json.dumps(asdict(self)))


_SECTIONS: dict[str, type] = {
    "data": DataConfig, "model": ModelConfig, "pretrain": PretrainConfig,
    "linear": LinearConfig, "fusion": FusionConfig,
}


def _coerce(cls: type, section: str, values: Mapping[str, Any], base: Any) -> Any:
    known = {f.name: f for f in fields(cls)}
    updates: dict[str, Any] = {}
    for key, value in values.items():
        if key not in known:
            raise ConfigError(f"unknown key [{section}].{key}; valid keys: {', '.join(known)}.")
        default = getattr(base, key)
        if isinstance(default, tuple):
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, list | tuple):
                raise ConfigError(f"[{section}].{key} must be a list, got {value!r}.")
            value = tuple(value)
        elif isinstance(default, bool):
            if not isinstance(value, bool):
                raise ConfigError(f"[{section}].{key} must be true or false, got {value!r}.")
        elif isinstance(default, int):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"[{section}].{key} must be an integer, got {value!r}.")
        elif isinstance(default, float):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"[{section}].{key} must be a number, got {value!r}.")
            value = float(value)
        elif isinstance(default, str) and not isinstance(value, str):
            raise ConfigError(f"[{section}].{key} must be a string, got {value!r}.")
        updates[key] = value
    return replace(base, **updates)


def config_from_dict(data: Mapping[str, Any], base: TrainConfig | None = None) -> TrainConfig:
    """Apply a nested mapping (a parsed recipe) on top of ``base`` (defaults if None); validates keys/types."""
    config = base or TrainConfig()
    parts = {name: getattr(config, name) for name in _SECTIONS}
    for section, values in data.items():
        if section not in _SECTIONS:
            raise ConfigError(f"unknown recipe section [{section}]; valid sections: {', '.join(_SECTIONS)}.")
        if not isinstance(values, Mapping):
            raise ConfigError(f"recipe section [{section}] must be a table of keys.")
        parts[section] = _coerce(_SECTIONS[section], section, values, parts[section])
    return TrainConfig(**parts)


def recipe_names() -> list[str]:
    """Names of the packaged recipes (``msclr/recipes/*.toml``)."""
    root = resources.files("msclr") / "recipes"
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".toml"))


def load_recipe(name_or_path: str | Path, base: TrainConfig | None = None) -> TrainConfig:
    """A recipe by packaged name (``ntu60_xsub``) or file path, applied on top of ``base``, validated."""
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise ConfigError(f"recipe file {path} not found; give a .toml path or one of: "
                              f"{', '.join(recipe_names())}.")
        text, origin = path.read_text(encoding="utf-8"), str(path)
    else:
        resource = resources.files("msclr") / "recipes" / f"{name_or_path}.toml"
        if not resource.is_file():
            raise ConfigError(f"unknown recipe {name_or_path!r}; packaged recipes: {', '.join(recipe_names())} "
                              "(or give the path of a .toml file).")
        text, origin = resource.read_text(encoding="utf-8"), f"recipe {name_or_path}"
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{origin} is not valid TOML: {err}.") from None
    return config_from_dict(data, base).validate()


def resolve_config(recipe: str | Path | None = None, *, skeletons: str | None = None, stream: str | None = None,
                   split: str | None = None, epochs: int | None = None, batch_size: int | None = None,
                   seed: int | None = None, linear_epochs: int | None = None,
                   workers: int | None = None) -> tuple[TrainConfig, list[str]]:
    """Defaults < recipe < command-line overrides, validated.  Returns the config and notes for the user.

    ``epochs`` / ``linear_epochs`` stretch the schedules (:meth:`PretrainConfig.with_epochs`); a batch size that
    does not divide the queue rounds the queue down to a multiple (noted).
    """
    notes: list[str] = []
    config = load_recipe(recipe) if recipe else TrainConfig()
    data, model, pre, lin = config.data, config.model, config.pretrain, config.linear
    if skeletons:
        names = tuple(s.strip() for s in skeletons.split(",") if s.strip())
        data = replace(data, skeletons=names)
    if stream:
        data = replace(data, streams=STREAMS if stream == "all" else tuple(s.strip() for s in stream.split(",")))
    if split is not None:
        data = replace(data, split=split)
    if epochs is not None:
        pre = pre.with_epochs(epochs)
        notes.append(f"pretraining {pre.epochs} epochs: lr steps at {list(pre.lr_steps)}, mining from epoch "
                     f"{pre.mining_epoch + 1}")
    if batch_size is not None:
        pre = replace(pre, batch_size=batch_size)
    if seed is not None:
        pre = replace(pre, seed=seed)
        lin = replace(lin, seed=seed)
    if workers is not None:
        pre = replace(pre, workers=workers)
    if linear_epochs is not None:
        lin = lin.with_epochs(linear_epochs)
    if pre.batch_size > 0 and model.queue_size % pre.batch_size:
        queue = max(pre.batch_size, model.queue_size // pre.batch_size * pre.batch_size)
        notes.append(f"queue size {model.queue_size} -> {queue} (a multiple of the batch size {pre.batch_size})")
        model = replace(model, queue_size=queue)
    config = TrainConfig(data, model, pre, lin, config.fusion).validate()
    return config, notes


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def to_toml(config: TrainConfig) -> str:
    """The resolved configuration as a TOML recipe (round-trips through :func:`config_from_dict`)."""
    lines = ["# Resolved msclr training configuration (reusable as --config).", ""]
    for section, values in config.to_dict().items():
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {_toml_value(value)}" for key, value in values.items())
        lines.append("")
    return "\n".join(lines)


def from_json_dict(data: Mapping[str, Any]) -> TrainConfig:
    """Inverse of :meth:`TrainConfig.to_dict`."""
    return config_from_dict(data)


__all__ = [
    "STREAMS", "PAIR_MODES", "SCORE_MODES", "ConfigError", "DataConfig", "ModelConfig", "PretrainConfig",
    "LinearConfig", "FusionConfig", "TrainConfig", "config_from_dict", "load_recipe", "recipe_names", "to_toml",
    "resolve_config",
    "from_json_dict",
]
