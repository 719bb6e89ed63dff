"""``msclr train``: pretrain every stream, then evaluate with each protocol (linear evaluation by default),
with the skeleton ensemble and the stream fusion.

The steps, each a function below: open the cache, choose the conventions and the split (:func:`_open_data`;
the cache's own conventions when it lacks the default pair, an automatic stratified split when it has none),
describe and create the run folder (:func:`_run_info`, :class:`msclr.pipeline.rundir.RunFolder`), MS-AimCLR
pretraining per stream (:func:`msclr.pipeline.training.pretrain.pretrain`) or the encoders of another run
(``--init``, :mod:`msclr.pipeline.training.transfer`), every evaluation protocol
(:mod:`msclr.pipeline.training.protocols`), then the reports, the test scores and ``model.pt``
(:func:`_finish`).  What the run folder holds is described in :mod:`msclr.pipeline.rundir`.
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from msclr.console import EventProgress
from msclr.errors import CheckpointError
from msclr.pipeline.config import Protocol, TrainConfig, to_toml
from msclr.pipeline.rundir import Fusion, ModelFile, Preprocessing, RunFolder, RunInfo, SplitInfo
from msclr.skeletons import Skeleton


class ResumableRunError(CheckpointError):
    """``--out`` already holds an msclr run: ``--resume`` continues it (the CLI adds the exact command)."""


# --------------------------------------------------------------------- TensorBoard
@dataclass
class _Tensorboard:
    """TensorBoard scalars when the ``tensorboard`` package is installed, else nothing."""

    writer: Any = None

    @classmethod
    def open(cls, folder: Path, enabled: bool) -> _Tensorboard:
        if not enabled:
            return cls()
        # tensorboard imports TensorFlow when it is installed (slow, and noisy on stderr) unless the module
        # ``tensorboard.compat.notf`` exists; it only writes event files here, so declare "no TensorFlow".
        sys.modules.setdefault("tensorboard.compat.notf", type(sys)("tensorboard.compat.notf"))
        try:
            from torch.utils.tensorboard import SummaryWriter
        except Exception:  # tensorboard not installed: skip silently
            return cls()
        return cls(SummaryWriter(log_dir=str(folder)))

    def scalar(self, tag: str, value: float, step: int) -> None:
        if self.writer is not None:
            self.writer.add_scalar(tag, value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


# --------------------------------------------------------------------- data and run folder
@dataclass
class _Split:
    """The split a run uses: the split names, the clip names of both sides (the cache's lists, or an automatic
    split's), and whether it was made here (``automatic``)."""

    train: str
    test: str
    train_names: list[str]
    test_names: list[str]
    automatic: bool = False


@dataclass
class _Data:
    """The cache's train / test split, preprocessed, with everything the run records about it."""

    skeletons: dict[str, Skeleton]
    train: Any
    test: Any
    split: _Split
    classes: list[str]
    max_persons: int


def _conventions(cache: Any, config: TrainConfig, cache_conventions: bool, say: Any) -> list[str]:
    """The conventions to train on: the configured ones, or (``cache_conventions`` and some of them missing from
    the cache) every convention of the cache, said in one line."""
    from msclr.pipeline.training.dataset import check_conventions

    wanted = list(config.data.skeletons)
    missing = [c for c in wanted if c not in cache.skeletons]
    if missing and cache_conventions and cache.skeletons:
        wanted = list(cache.skeletons)
        say(f"the cache holds no {', '.join(missing)}: training on its conventions {', '.join(wanted)} "
            "(choose with --skeletons)")
    check_conventions(cache.skeletons, wanted)
    if len(wanted) == 1:
        say(f"one convention ({wanted[0]}): plain AimCLR, no cross-skeleton pairs and no skeleton ensemble")
    return wanted


def _choose_split(cache: Any, config: TrainConfig, conventions: list[str], folder: RunFolder, say: Any) -> _Split:
    """The cache's split (``--split`` or its only pair), else an automatic stratified 80/20 split seeded with the
    run's seed (on ``--resume``, the one recorded in the run folder)."""
    from msclr.pipeline.training.dataset import (
        AUTO_FAMILY,
        automatic_split,
        resolve_split,
        split_families,
        usable_names,
    )

    family = config.data.split
    if family not in ("", AUTO_FAMILY) or split_families(cache.splits):
        train, test = resolve_split(cache.splits, family)
        return _Split(train, test, cache.splits[train], cache.splits[test])
    train_names, test_names = folder.read_names(folder.split_names("train")), folder.read_names(folder.split_names("test"))
    if train_names is None or test_names is None:
        train_names, test_names = automatic_split(cache, usable_names(cache, conventions), seed=config.pretrain.seed)
        say(f"the cache has no split: made a stratified 80/20 split (seed {config.pretrain.seed}), "
            f"{len(train_names)} train / {len(test_names)} test clips, recorded in {folder.split_names('train').parent}")
    return _Split(f"{AUTO_FAMILY}_train", f"{AUTO_FAMILY}_test", train_names, test_names, automatic=True)


def _load_data(cache: Any, config: TrainConfig, skeletons: dict[str, Skeleton], split: _Split, say: Any) -> _Data:
    """Load and preprocess both sides of the split (:func:`msclr.pipeline.training.dataset.load_split`)."""
    from msclr.pipeline.training.dataset import class_names, load_split

    conventions = list(skeletons)
    say(f"loading {split.train} / {split.test} ({', '.join(conventions)})")
    prep = config.data.preprocessing()
    train = load_split(cache, split.train_names, conventions, **prep)
    test = load_split(cache, split.test_names, conventions, **prep)
    classes = class_names(cache.classes, train.labels, test.labels)
    return _Data(skeletons, train, test, split, classes, cache.max_persons)


def _run_info(cache_path: str | Path, config: TrainConfig, data: _Data) -> RunInfo:
    return RunInfo(
        conventions=list(data.skeletons), streams=list(config.data.streams),
        preprocessing=Preprocessing(**config.data.preprocessing(), valid="located", max_persons=data.max_persons),
        classes=data.classes,
        split=SplitInfo(data.split.train, data.split.test, len(data.train), len(data.test), data.split.automatic),
        model={**config.to_dict()["model"], "head": "mlp", "in_channels": 3},
        ensemble_mode=config.linear.score_mode,
        fusion=Fusion(weights=config.fusion.weights(), mode=config.fusion.mode),
        skeletons={n: s.to_dict() for n, s in data.skeletons.items()},
        config=config.to_dict(), cache=str(Path(cache_path).resolve()),
        protocols=list(config.evaluation.protocols),
    )


def check_run_folder(folder: RunFolder, config: TrainConfig, resume: bool) -> None:
    """Refuse to overwrite a folder, or to resume a run with different data / model / pretraining settings."""
    if not folder.run_json.exists():
        if folder.root.exists() and any(folder.root.iterdir()) and not resume:
            raise CheckpointError(f"{folder.root} exists and is not empty: choose a new --out folder "
                                  "(or --resume an msclr run).")
        return
    if not resume:
        status = folder.read_info().status
        raise ResumableRunError(f"{folder.root} already holds an msclr run (status {status}): add --resume to "
                                "continue it, or choose a new --out folder.")
    saved = folder.read_info().config
    for section in ("data", "model", "pretrain"):
        for key, value in config.to_dict()[section].items():
            if key == "workers":
                continue
            if saved.get(section, {}).get(key) != value:
                raise CheckpointError(f"cannot resume {folder.root}: {section}.{key} was "
                                      f"{saved.get(section, {}).get(key)!r}, now {value!r}. Use the same options "
                                      "(see RUN/config.toml) or a new --out folder.")


def _open_data(cache_path: str | Path, config: TrainConfig, folder: RunFolder, cache_conventions: bool,
               say: Any) -> tuple[Any, TrainConfig, dict[str, Skeleton], _Split, dict[str, Any] | None]:
    """Open the cache, choose the conventions and the split, read the source run's encoders and sizes
    (``--init``); returns the cache, the configuration as the run records it, the skeletons, the split and the
    ``--init`` encoders (None without ``--init``).  Nothing is written."""
    from msclr.pipeline.cache import Cache
    from msclr.pipeline.training.transfer import init_encoders, read_source, source_model

    cache = Cache(cache_path)
    conventions = _conventions(cache, config, cache_conventions, say)
    skeletons = {c: cache.skeletons[c] for c in conventions}
    split = _choose_split(cache, config, conventions, folder, say)
    data = replace(config.data, skeletons=tuple(conventions), split=split.train[: -len("_train")])
    config = replace(config, data=data)
    initial = None
    if config.pretrain.init:
        source, stored = read_source(config.pretrain.init)
        initial = init_encoders(source, stored, skeletons, list(config.data.streams))
        model, changed = source_model(stored, config.model)
        if changed:
            say(f"--init: the encoder keeps the sizes of {config.pretrain.init} ({', '.join(changed)})")
        config = replace(config, model=model)
    return cache, config.validate(), skeletons, split, initial


# --------------------------------------------------------------------- the run
def train_run(cache_path: str | Path, out: str | Path, config: TrainConfig, *, device: str = "cpu",
              resume: bool = False, progress: EventProgress | None = None, tensorboard: bool = True,
              handle_sigint: bool = True, cache_conventions: bool = True) -> dict[str, Any]:
    """``msclr train``: pretrain every stream (or start from ``config.pretrain.init``'s encoders), then every
    evaluation protocol of ``config.evaluation.protocols``, skeleton ensemble and fusion.

    Args:
        cache_path: cache folder (:class:`msclr.pipeline.cache.Cache`).
        out: run folder (created; must be new unless ``resume``).
        config: resolved, validated configuration.
        device: ``cpu``, ``cuda`` or ``cuda:N``.
        resume: continue an interrupted run in ``out``.
        progress: optional ``(event, info)`` callback (pretraining, linear-evaluation and fine-tuning events
            plus ``stage`` events with a ``message``).
        tensorboard: write TensorBoard logs when the package is importable.
        handle_sigint: save a checkpoint on Ctrl-C before stopping.
        cache_conventions: when the cache lacks some of ``config.data.skeletons``, train on the cache's own
            conventions (said in one line) instead of refusing; ``msclr train`` passes False when
            ``--skeletons`` was given.

    Returns:
        The metrics dict (also written to ``RUN/metrics.json``); ranks other than 0 return ``{}``.

    Raises:
        KeyboardInterrupt: Ctrl-C; the pretraining checkpoint is saved and ``run.json`` says "interrupted".
    """
    import torch.distributed as torch_dist

    from msclr.pipeline.training.distributed import init_distributed

    config = config.validate()
    owns_group = torch_dist.is_available() and not torch_dist.is_initialized()
    dist = init_distributed(device)
    try:
        return _train_run(cache_path, RunFolder(out), config, dist, device=device, resume=resume,
                          progress=progress if dist.is_main else None,  # one progress display (rank 0's)
                          tensorboard=tensorboard, handle_sigint=handle_sigint, cache_conventions=cache_conventions)
    finally:
        if owns_group and dist.enabled and torch_dist.is_initialized():
            torch_dist.destroy_process_group()


def _train_run(cache_path: str | Path, folder: RunFolder, config: TrainConfig, dist: Any, *, device: str,
               resume: bool, progress: EventProgress | None, tensorboard: bool, handle_sigint: bool,
               cache_conventions: bool) -> dict[str, Any]:
    say = (lambda msg: progress("stage", {"message": msg})) if progress else (lambda msg: None)
    cache, config, skeletons, split, initial = _open_data(cache_path, config, folder, cache_conventions, say)
    check_run_folder(folder, config, resume)  # every rank, before anything is written
    if dist.enabled:
        import torch.distributed

        torch.distributed.barrier()
    data = _load_data(cache, config, skeletons, split, say)
    info = _run_info(cache_path, config, data)
    if dist.is_main:
        folder.write_start(info, to_toml(config), data.skeletons)
        if split.automatic:
            folder.write_names(folder.split_names("train"), split.train_names)
            folder.write_names(folder.split_names("test"), split.test_names)
    tb = _Tensorboard.open(folder.tensorboard, tensorboard and dist.is_main)
    try:
        encoders, pre_metrics = _encoders(data, config, folder, dist, initial, device=device, resume=resume,
                                          progress=progress, tb=tb, handle_sigint=handle_sigint, say=say)
        if not dist.is_main:
            return {}
        metrics = _finish(encoders, data, config, folder, device, progress, tb)
        metrics["pretrain"] = pre_metrics
        folder.write_metrics(metrics)
        folder.write_info(info.completed())
        say(f"run complete: {folder.root}")
        return metrics
    except KeyboardInterrupt:
        if dist.is_main:
            folder.write_info(info.interrupted())
        raise
    finally:
        tb.close()


def _encoders(data: _Data, config: TrainConfig, folder: RunFolder, dist: Any, initial: dict[str, Any] | None, *,
              device: str, resume: bool, progress: EventProgress | None, tb: _Tensorboard, handle_sigint: bool,
              say: Any) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Stream -> pretrained encoder state (pretrained here, or ``initial``: ``--init``'s), and what to record
    about it.  Nothing is pretrained when every protocol is ``scratch``."""
    from msclr.pipeline.training.collapse import COLLAPSE_KEYS
    from msclr.pipeline.training.pretrain import pretrain

    if not any(Protocol(p).pretrained for p in config.evaluation.protocols):
        return {}, {}
    if initial is not None:
        say(f"starting from the pretrained encoders of {config.pretrain.init} (no pretraining)")
        return initial, {s: {"init": config.pretrain.init} for s in initial}
    encoders: dict[str, dict[str, Any]] = {}
    records: dict[str, Any] = {}
    for stream in config.data.streams:
        say(f"pretraining the {stream} stream")
        result = pretrain(data.train.arrays, data.skeletons, stream, config, folder.stream_dir(stream),
                          device=device, resume=resume, progress=progress, log_scalar=tb.scalar, dist_info=dist,
                          handle_sigint=handle_sigint)
        encoders[stream] = result.encoder_state
        last = result.history[-1] if result.history else {}
        records[stream] = {"epochs": result.epochs, "final_loss": last.get("loss"),
                           "seconds": float(sum(h.get("seconds", 0.0) for h in result.history)),
                           # the last epoch's collapse signals and the warning (None when pretraining did not collapse)
                           **{k: last[k] for k in COLLAPSE_KEYS if k in last},
                           "collapse_warning": next((h["collapse_warning"] for h in result.history
                                                     if h.get("collapse_warning")), None)}
    return encoders, records


def _finish(encoders: dict[str, dict[str, Any]], data: _Data, config: TrainConfig, folder: RunFolder, device: str,
            progress: EventProgress | None, tb: _Tensorboard) -> dict[str, Any]:
    """Every protocol, the reports, the test scores and ``model.pt``; returns the metrics (``linear`` at the
    top level as it always was, the other protocols under ``"protocols"``)."""
    from msclr.pipeline.training.protocols import EvalSet, evaluate_protocol, write_reports

    ev = EvalSet(data.skeletons, data.train.labelled(), data.test.labelled(), data.classes, data.split.train,
                 data.split.test)
    results = [evaluate_protocol(Protocol(p), encoders, ev, config, device=device, progress=progress,
                                 log_scalar=tb.scalar) for p in config.evaluation.protocols]
    write_reports(folder, results, ev.test, data.classes)
    folder.write_model(ModelFile(conventions=list(data.skeletons),
                                 skeletons={n: s.to_dict() for n, s in data.skeletons.items()},
                                 model_config=config.to_dict()["model"],
                                 protocols={r.protocol.name: r.weights for r in results}, pretrained=encoders))
    metrics: dict[str, Any] = {}
    for result in results:
        if result.protocol.kind == "linear":
            metrics.update({"protocol": result.metrics["protocol"], "classes": data.classes,
                            **{k: v for k, v in result.metrics.items() if k != "protocol"}})
        else:
            metrics.setdefault("protocols", {})[result.protocol.name] = result.metrics
    metrics.setdefault("classes", data.classes)
    return metrics


def resume_command(argv: list[str]) -> str:
    """The command line ``argv`` (``msclr train ...``) with ``--resume`` added once, shell-quoted."""
    args = [a for a in argv if a != "--resume"]
    return shlex.join([*args, "--resume"])


__all__ = ["ResumableRunError", "check_run_folder", "resume_command", "train_run"]
