"""``msclr demo``: the whole pipeline on a SYNTHETIC action set, on a CPU, with no download and no data.

Steps (each through the real code path, nothing demo-specific inside):

1. :func:`msclr.pipeline.datasets.synthetic.make_dataset`: procedural motions of 6 action classes
   (:data:`~msclr.pipeline.datasets.synthetic.ACTIONS`) by a stick body, rendered in two conventions
   (``ntu_kinect_25`` + ``smpl_24``), split by subject (odd subjects train, even subjects test);
   written to ``OUT/cache`` with :class:`~msclr.pipeline.cache.CacheWriter`.
2. :func:`msclr.pipeline.train.train_run` with the packaged ``demo`` recipe (``msclr/recipes/demo.toml``):
   MS-AimCLR pretraining of the multi-skeleton encoder, frozen-encoder linear evaluation per convention,
   skeleton ensemble -> ``OUT/run``.
3. A random-initialisation baseline: the same linear evaluation on an untrained encoder of the same
   shape (features once, so it costs seconds), to show what pretraining adds.
4. :func:`msclr.pipeline.predict.predict_skeletons` on one held-out test clip, from its skeletons.

``OUT`` defaults to a NEW temporary folder (``msclr-demo-XXXX`` under the system temp dir), printed at
the end so that ``msclr evaluate OUT/run`` and ``msclr predict VIDEO --model OUT/run`` can follow: a
fresh folder never collides with an earlier demo (``train_run`` refuses a non-empty folder) and nothing
is written into the working directory, which may be read-only (containers).  ``--out DIR`` keeps it
where you want (DIR must be new or empty).

Measured on the 2-core development machine while other jobs loaded it (load average 3-4), one torch
thread: 73 s wall, 49 s CPU (so about 50 s on an idle machine); ensemble top-1 88-94 % over seeds 0-3
against 68-79 % for the random-init encoder and 16.7 % chance.  Threads:
:func:`msclr.pipeline.training.cpu_tuning.pick_threads` (the idle cores), as ``msclr train``.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from msclr.errors import MsclrError

CONVENTIONS = ("ntu_kinect_25", "smpl_24")
"""The demo's pair: NTU's Kinect layout + SMPL (a MeTRAbs video can serve both: see msclr.pipeline.predict)."""

Progress = Callable[[str, dict[str, Any]], None]


@dataclass(frozen=True)
class DemoSize:
    """How big the demo is: synthetic clips, training epochs and pretraining batch (None: the recipe's).

    Keep >= ~20 pretraining steps: the encoder's BatchNorm running statistics (momentum 0.1) need them to
    leave their (0, 1) initialisation, else the frozen features are tiny and linear evaluation stays at chance.
    """

    samples_per_class: int = 36
    subjects: int = 6
    epochs: int | None = None
    linear_epochs: int | None = None
    batch_size: int | None = None


FULL = DemoSize()
"""``msclr demo``: 216 clips (108 train / 108 test), the demo recipe's epochs."""

QUICK = DemoSize(samples_per_class=24, subjects=4, epochs=12)
"""A reduced demo for tests (tens of seconds): 72 train clips, 12 epochs x 2 steps of 32."""


@dataclass
class DemoResult:
    """What the demo did.

    Attributes:
        out: the demo folder; cache / run: its cache and run folders.
        metrics: the run's ``metrics.json``.
        baseline: top-1 % of the random-init encoder: convention -> value, plus ``"ensemble"``.
        prediction: the held-out clip's :class:`~msclr.pipeline.predict.Prediction`.
        sample: that clip's name; true_label / true_class: its ground truth.
        seconds: wall time of the whole demo; stages: seconds per stage.
        clips: (train, test) clip counts.
    """

    out: Path
    cache: Path
    run: Path
    metrics: dict[str, Any]
    baseline: dict[str, float]
    prediction: Any
    sample: str
    true_label: int
    true_class: str
    seconds: float
    stages: dict[str, float]
    clips: tuple[int, int]

    @property
    def chance(self) -> float:
        """Chance top-1 accuracy in percent."""
        return 100.0 / len(self.metrics["classes"])

    def top1(self, model: str = "ensemble", stream: str = "joint") -> float:
        """Top-1 % of a convention's classifier or of the skeleton ensemble."""
        entry = self.metrics["streams"][stream]
        return float(entry["ensemble"]["top1"] if model == "ensemble" else entry["conventions"][model]["top1"])


def _prepare_out(out: str | Path | None) -> Path:
    if out is None:
        return Path(tempfile.mkdtemp(prefix="msclr-demo-"))
    path = Path(out)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise MsclrError(f"--out {path} exists and is not an empty folder; give a new folder (or leave --out "
                         "out for a fresh temporary one).")
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_synthetic_cache(root: Path, size: DemoSize, seed: int) -> tuple[list[Any], dict[str, list[str]]]:
    """The synthetic set in a cache at ``root`` (M = 1 person slot); returns the samples and splits."""
    from msclr.pipeline.cache import CacheWriter, Clip
    from msclr.pipeline.datasets.synthetic import ACTIONS, make_dataset, subject_splits

    samples = make_dataset(CONVENTIONS, samples_per_class=size.samples_per_class, subjects=size.subjects, seed=seed)
    splits = subject_splits(samples)
    with CacheWriter(root, list(CONVENTIONS), max_persons=1, classes=list(ACTIONS), writer_id="demo") as writer:
        for s in samples:
            writer.add(Clip(s.name, poses=s.poses, label=s.label, subject=s.subject, fps=30.0,
                            source="synthetic", extractor="synthetic", model_id="msclr.pipeline.datasets.synthetic"))
        writer.set_splits(splits)
    return samples, splits


def demo_config(size: DemoSize, seed: int) -> Any:
    """The ``demo`` recipe with ``size``'s epochs and ``seed``."""
    from msclr.pipeline.config import load_recipe

    config = load_recipe("demo")
    pre, lin = replace(config.pretrain, seed=seed), replace(config.linear, seed=seed)
    if size.epochs is not None:
        pre = pre.with_epochs(size.epochs)
    if size.batch_size is not None:
        pre = replace(pre, batch_size=size.batch_size)
    if size.linear_epochs is not None:
        lin = lin.with_epochs(size.linear_epochs)
    return replace(config, pretrain=pre, linear=lin).validate()


def random_init_baseline(cache: Path, config: Any, device: str, seed: int) -> dict[str, float]:
    """Top-1 % of linear evaluation on an UNTRAINED encoder (same shape, same protocol as the run).

    The encoder's BatchNorm statistics are computed on the training clips first
    (:func:`msclr.pipeline.training.linear_eval.calibrate_batchnorm`); no weight is trained.
    """
    import torch

    from msclr.models.build import build_encoder
    from msclr.pipeline.cache import Cache
    from msclr.pipeline.training.dataset import check_conventions, load_split
    from msclr.pipeline.training.linear_eval import calibrate_batchnorm, evaluate_stream

    c = Cache(cache)
    convs = list(config.data.skeletons)
    skeletons = dict(zip(convs, check_conventions(c.skeletons, convs), strict=True))
    prep = config.data.preprocessing()
    train = load_split(c, c.splits["xsub_train"], convs, **prep).labelled()
    test = load_split(c, c.splits["xsub_val"], convs, **prep).labelled()
    torch.manual_seed(seed)
    encoder = build_encoder(list(skeletons.values()), config.model, head="mlp").to(device)
    stream = config.data.streams[0]
    # running BN statistics of the training clips: an untouched (0, 1) init shrinks the features to ~1e-6
    calibrate_batchnorm(encoder, train.arrays, skeletons, stream, device=device)
    ev = evaluate_stream(encoder, train.arrays, train.labels, test.arrays, test.labels, skeletons, stream,
                         len(c.classes or []), config.linear, device=device)
    out = {name: float(r.top1) for name, r in ev.results.items()}
    metrics = ev.metrics()
    if "ensemble" in metrics:
        out["ensemble"] = float(metrics["ensemble"]["top1"])
    return out


def run_demo(out: str | Path | None = None, *, device: str = "cpu", seed: int = 0, size: DemoSize = FULL,
             progress: Progress | None = None, baseline: bool = True, threads: int | None = None) -> DemoResult:
    """Run the demo (see the module docstring); silent unless ``progress`` is given.

    Args:
        out: demo folder (new or empty); None: a new temporary folder.
        device: ``cpu`` or ``cuda``.
        seed: synthetic data, training and baseline seed.
        size: :data:`FULL` or a smaller :class:`DemoSize`.
        progress: :func:`msclr.pipeline.train.train_run`'s ``(event, info)`` callback; also gets ``stage``
            events with a ``message`` for the demo's own steps.
        baseline: also evaluate a random-init encoder.
        threads: torch intra-op threads during the demo (restored afterwards); default: the idle cores
            (:func:`msclr.pipeline.training.cpu_tuning.pick_threads`).
    """
    import torch

    from msclr.pipeline.training.cpu_tuning import pick_threads

    previous = torch.get_num_threads()
    count, reason = pick_threads(threads)
    torch.set_num_threads(count)
    if progress is not None:
        progress("stage", {"message": f"{count} CPU thread{'s' if count > 1 else ''} ({reason}; --threads N to choose)"})
    try:
        return _run_demo(out, device, seed, size, progress, baseline)
    finally:
        torch.set_num_threads(previous)


def _run_demo(out: str | Path | None, device: str, seed: int, size: DemoSize, progress: Progress | None,
              baseline: bool) -> DemoResult:
    from msclr.pipeline.cache import Cache
    from msclr.pipeline.predict import predict_skeletons
    from msclr.pipeline.train import train_run

    t0 = time.perf_counter()
    say = (lambda msg: progress("stage", {"message": msg})) if progress else (lambda msg: None)
    config = demo_config(size, seed)  # every option is checked before anything is written
    root = _prepare_out(out)
    cache_dir, run_dir = root / "cache", root / "run"
    stages: dict[str, float] = {}
    say(f"generating the SYNTHETIC action set ({size.samples_per_class} clips x 6 classes, "
        f"{' + '.join(CONVENTIONS)}) -> {cache_dir}")
    samples, splits = write_synthetic_cache(cache_dir, size, seed)
    stages["data"] = time.perf_counter() - t0
    t = time.perf_counter()
    metrics = train_run(cache_dir, run_dir, config, device=device, progress=progress, tensorboard=False,
                        handle_sigint=False)
    stages["train"] = time.perf_counter() - t
    base: dict[str, float] = {}
    if baseline:
        t = time.perf_counter()
        say("baseline: linear evaluation of a randomly initialised encoder")
        base = random_init_baseline(cache_dir, config, device, seed)
        stages["baseline"] = time.perf_counter() - t
    t = time.perf_counter()
    cache = Cache(cache_dir)
    held_out = splits["xsub_val"][len(splits["xsub_val"]) // 2]
    clip = cache.clip(held_out)
    say(f"predicting held-out test clip {held_out} from its skeletons")
    prediction = predict_skeletons(run_dir, clip.poses, top_k=3, device=device)
    stages["predict"] = time.perf_counter() - t
    classes = metrics["classes"]
    return DemoResult(out=root, cache=cache_dir, run=run_dir, metrics=metrics, baseline=base, prediction=prediction,
                      sample=held_out, true_label=int(clip.label), true_class=classes[clip.label],
                      seconds=time.perf_counter() - t0, stages=stages,
                      clips=(len(splits["xsub_train"]), len(splits["xsub_val"])))


__all__ = ["CONVENTIONS", "DemoSize", "FULL", "QUICK", "DemoResult", "write_synthetic_cache", "demo_config",
           "random_init_baseline", "run_demo"]
