"""UTD-MHAD benchmark: MS-AimCLR pretraining + linear evaluation on real Kinect v1 skeletons, CPU.

What it does (all through msclr's library, no shortcuts):

1. Reads ``utd_mhad/utd_mhad_3d.pkl`` (pyskl format, 861 clips, 27 classes, ``kinect_v1_20``) with msclr's
   validated pyskl reader, and writes a temporary cache with TWO conventions of the same real clips:
   ``kinect_v1_20`` and ``utd_mid_16``, a user-defined 16-joint skeleton derived by a fixed linear joint map
   (the wrist/hand and ankle/foot pairs merged into their mid-points), registered through the cache's
   skeleton definitions.  Splits: the file's cross-subject ``xsub_train`` (odd subjects, 431 clips) /
   ``xsub_val`` (even subjects, 430).
2. Baselines: the same linear classifier on the raw centred coordinates (no encoder: what the input alone
   makes linearly separable), and a random-init frozen encoder + linear classifier per convention and their
   skeleton ensemble.
   A fresh encoder's BatchNorm running statistics are (0, 1), which makes its eval-mode features ~1e-6;
   the baseline therefore recalibrates them on the training clips (no labels, no gradient; see
   :func:`msclr.pipeline.training.linear_eval.calibrate_batchnorm`); the raw number is printed too.
   With ``--supervised-epochs N``, also the upper reference: the same encoder trained with labels, then
   frozen and probed the same way (:func:`supervised_ceiling`).
3. ``msclr train`` on the cache (:func:`msclr.pipeline.train.train_run`, the CLI's code path) with the
   recipe of ``--config`` / ``--recipe`` (default ``cpu_small``): multi-skeleton MS-AimCLR pretraining on both
   conventions, then linear evaluation of each convention and the skeleton ensemble (last epoch, test split).

Modes: the default run (1-3, one seed); ``--baselines-only`` (1-2); ``--protocol-rows`` (the evaluation
protocols over seeds, ``bench/utd_protocols.py``); ``--seeds N`` without ``--protocol-rows``: the seeded
frozen-encoder linear protocol of one recipe over seeds 0..N-1 (``bench/utd_recipe.py``: rows ``raw``,
``raw_centred``, ``random``, ``pretrained`` and ``single``, the last pretrained on ``kinect_v1_20`` alone with
the same budget).  Measured figures and their discussion: docs/utd_mhad.md.

Usage::

    python bench/utd_mhad.py                 # full run (~30 min on 2 CPU cores)
    python bench/utd_mhad.py --quick         # 2-3 min smoke run (few epochs; numbers not meaningful)
    python bench/utd_mhad.py --baselines-only   # the no-pretraining rows only (under a minute)
    python bench/utd_mhad.py --baselines-only --supervised-epochs 100   # + the supervised reference (~11 min)
    python bench/utd_mhad.py --epochs 60 --threads 2 --keep /tmp/utd_run
    python bench/utd_mhad.py --protocol-rows --seeds 3 --epochs 20 --finetune-epochs 30 --json   # protocols
    python bench/utd_mhad.py --recipe small_data --seeds 3 --json --threads 2 --keep /tmp/utd_small
        # seeded linear protocol of a recipe (2 pretraining runs per seed); last stdout line = JSON
    python bench/utd_mhad.py --recipe cpu_small --quick --seeds 2 --json --threads 1   # its smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

# utd_mid_16: index -> (source joints of kinect_v1_20 averaged); names in the registry's kinect_v1_20 order
MID_JOINTS = (
    ("head", ("head",)),
    ("neck", ("shoulder_center",)),
    ("spine", ("spine",)),
    ("pelvis", ("hip_center",)),
    ("left_shoulder", ("left_shoulder",)),
    ("left_elbow", ("left_elbow",)),
    ("left_hand_mid", ("left_wrist", "left_hand")),
    ("right_shoulder", ("right_shoulder",)),
    ("right_elbow", ("right_elbow",)),
    ("right_hand_mid", ("right_wrist", "right_hand")),
    ("left_hip", ("left_hip",)),
    ("left_knee", ("left_knee",)),
    ("left_foot_mid", ("left_ankle", "left_foot")),
    ("right_hip", ("right_hip",)),
    ("right_knee", ("right_knee",)),
    ("right_foot_mid", ("right_ankle", "right_foot")),
)
MID_EDGES = ((0, 1), (2, 1), (3, 2), (4, 1), (5, 4), (6, 5), (7, 1), (8, 7), (9, 8),
             (10, 3), (11, 10), (12, 11), (13, 3), (14, 13), (15, 14))


def derived_skeleton():
    """The user-defined ``utd_mid_16`` convention and its (16, 20) joint map from ``kinect_v1_20``."""
    from msclr.skeletons import Skeleton, derive_flip, get_skeleton

    src = get_skeleton("kinect_v1_20")
    names = tuple(n for n, _ in MID_JOINTS)
    matrix = np.zeros((len(MID_JOINTS), src.num_joints), dtype=np.float64)
    for i, (_, parts) in enumerate(MID_JOINTS):
        for p in parts:
            matrix[i, src.index(p)] = 1.0 / len(parts)
    skel = Skeleton("utd_mid_16", names, MID_EDGES, 1, derive_flip(names), (4, 7),
                    source="bench/utd_mhad.py: kinect_v1_20 with wrist/hand and ankle/foot merged",
                    description="derived 16-joint Kinect v1 skeleton (bench only)").validate()
    return skel, matrix


def build_cache(pkl: Path, root: Path, limit: int | None = None) -> None:
    """Write the two-convention cache from the UTD-MHAD pickle (msclr's validated reader + CacheWriter)."""
    from msclr.pipeline.cache import CacheWriter, Clip
    from msclr.pipeline.datasets.pyskl import read_annotations
    from msclr.skeletons import get_skeleton

    src = get_skeleton("kinect_v1_20")
    mid, matrix = derived_skeleton()
    parsed = read_annotations(pkl, src)
    anns = parsed.annotations
    splits = {k: v for k, v in parsed.splits.items() if k in ("xsub_train", "xsub_val")}
    if limit:  # every k-th clip: the split files are ordered by class, so this keeps all classes
        keep = {n for k in splits for n in splits[k][:: max(1, len(splits[k]) // limit)][:limit]}
        anns = [a for a in anns if a.frame_dir in keep]
        splits = {k: [n for n in v if n in keep] for k, v in splits.items()}
    with CacheWriter(root, [src, mid], max_persons=1, classes=CLASSES) as writer:
        for ann in anns:
            joints = ann.keypoint[0].astype(np.float64)  # (T, 20, 3) metres, one person
            derived = np.einsum("wv,tvc->twc", matrix, joints)
            writer.add(Clip(ann.frame_dir, poses={src.name: joints[:, None].astype(np.float32),
                                                  mid.name: derived[:, None].astype(np.float32)},
                            label=ann.label, extractor="import-pyskl", source=str(pkl)))
        writer.set_splits(splits)


CLASSES = [
    "right arm swipe to the left", "right arm swipe to the right", "right hand wave", "two hand front clap",
    "right arm throw", "cross arms in the chest", "basketball shooting", "draw x", "draw circle (clockwise)",
    "draw circle (counter clockwise)", "draw triangle", "bowling (right hand)", "front boxing",
    "baseball swing from right", "tennis forehand swing", "arm curl (two arms)", "tennis serve",
    "two hand push", "knock on door", "hand catch", "pick up and throw", "jogging", "walking", "sit to stand",
    "stand to sit", "forward lunge (left foot forward)", "squat",
]


def raw_coordinate_probe(train, test, convs, config) -> dict[str, float]:
    """No encoder: the same linear classifier (standardised inputs) on the flattened (3 x length x V)
    coordinates of each convention (as ``train`` / ``test`` were preprocessed), and their softmax ensemble: what the input alone makes linearly separable."""
    import torch

    from msclr.models.fusion import ensemble_scores, topk_accuracy
    from msclr.pipeline.training.linear_eval import linear_eval_cached

    out, logits = {}, []
    linear = replace(config.linear, standardize=True)
    for c in convs:
        tr = torch.as_tensor(train.arrays[c]).flatten(1)
        te = torch.as_tensor(test.arrays[c]).flatten(1)
        res = linear_eval_cached(tr, train.labels, te, test.labels, len(CLASSES), linear)
        out[c] = float(res.top1)
        logits.append(np.asarray(res.test_logits))
    out["ensemble"] = topk_accuracy(ensemble_scores(logits, config.linear.score_mode), test.labels, 1)
    return out


def load_xsub(cache_root: Path, config, prep: dict[str, Any] | None = None):
    """The conventions, their skeletons and the labelled cross-subject splits.

    ``prep``: ``load_split`` keywords; default ``config.data.preprocessing()`` (as the recipe's ``[data]`` says).
    Returns ``(conventions, {convention: Skeleton}, train SplitData, test SplitData)``.
    """
    from msclr.pipeline.cache import Cache
    from msclr.pipeline.training.dataset import load_split

    cache = Cache(cache_root)
    convs = list(config.data.skeletons)
    skels = {c: cache.skeletons[c] for c in convs}
    prep = config.data.preprocessing() if prep is None else prep
    train = load_split(cache, cache.splits["xsub_train"], convs, **prep).labelled()
    test = load_split(cache, cache.splits["xsub_val"], convs, **prep).labelled()
    return convs, skels, train, test


def top1_row(metrics: dict) -> dict[str, float]:
    """Top-1 per convention and of the skeleton ensemble, from a stream's ``metrics()``."""
    return {**{c: v["top1"] for c, v in metrics["conventions"].items()}, "ensemble": metrics["ensemble"]["top1"]}


def random_baseline(data, config, seed: int) -> dict[str, dict[str, float]]:
    """Random-init frozen encoder + linear per convention + ensemble (raw and BN-calibrated).

    ``data``: what :func:`load_xsub` returns.
    """
    import torch

    from msclr.models.build import build_encoder
    from msclr.pipeline.training.linear_eval import calibrate_batchnorm, evaluate_stream

    convs, skels, tr, te = data
    out = {"linear on raw coordinates": raw_coordinate_probe(tr, te, convs, config)}
    for label, calibrate in (("random init (raw BN stats)", False), ("random init (BN calibrated)", True)):
        torch.manual_seed(seed)
        enc = build_encoder([skels[c] for c in convs], config.model).eval()
        if calibrate:
            calibrate_batchnorm(enc, tr.arrays, skels, "joint")
        ev = evaluate_stream(enc, tr.arrays, tr.labels, te.arrays, te.labels, skels, "joint", len(CLASSES),
                             config.linear)
        out[label] = top1_row(ev.metrics())
    return out


def supervised_ceiling(data, config, seed: int, epochs: int, lr: float = 0.05) -> dict[str, float]:
    """Upper reference: the same encoder (same width, same ``data_bn``) trained WITH labels, then frozen + linear.

    ``data``: what :func:`load_xsub` returns.  Cross-entropy through a linear head on ``encoder.features``; SGD
    (momentum 0.9, weight decay 1e-4, the recipe's pretraining batch size (32 in ``cpu_small``), constant ``lr``); an epoch visits every training clip once in each convention, each batch one
    convention, augmented with the pretraining's normal augmentation (temporal crop + shear, batched torch op).
    The trained encoder is then evaluated exactly like the other rows (eval mode, features once, linear
    classifier per convention, softmax ensemble).  What label-free pretraining could at best hope to match
    with this encoder, data and a comparable CPU budget (100 epochs take about 11 minutes on 2 cores).
    """
    import torch
    import torch.nn.functional as F

    from msclr.models.augment import normal_augment
    from msclr.models.build import build_encoder
    from msclr.pipeline.training.linear_eval import evaluate_stream

    convs, skels, tr, te = data
    batch = config.pretrain.batch_size
    torch.manual_seed(seed)
    encoder = build_encoder([skels[c] for c in convs], config.model)
    head = torch.nn.Linear(config.model.hidden_dim, len(CLASSES))
    opt = torch.optim.SGD([*encoder.parameters(), *head.parameters()], lr=lr, momentum=0.9, weight_decay=1e-4)
    arrays = {c: torch.as_tensor(tr.arrays[c]) for c in convs}
    labels = torch.as_tensor(np.asarray(tr.labels))
    gen = torch.Generator().manual_seed(seed + 1)
    t0 = time.perf_counter()
    for epoch in range(1, epochs + 1):
        encoder.train()
        total, count = 0.0, 0
        for c in convs:
            order = torch.randperm(len(labels), generator=gen)
            for i in range(0, len(order), batch):
                idx = order[i:i + batch]
                loss = F.cross_entropy(head(encoder.features(normal_augment(arrays[c][idx], gen), c)), labels[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                total, count = total + float(loss.detach()) * len(idx), count + len(idx)
        if epoch % 10 == 0 or epoch == epochs:
            print(f"  supervised epoch {epoch}/{epochs}: cross-entropy {total / count:.3f} "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
    encoder.eval()
    ev = evaluate_stream(encoder, tr.arrays, tr.labels, te.arrays, te.labels, skels, "joint", len(CLASSES),
                         config.linear)
    return top1_row(ev.metrics())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command-line options (see the module docstring for the modes)."""
    from msclr.pipeline.config import INPUT_NORMS

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=None, help="utd_mhad_3d.pkl (default: shared data folder)")
    ap.add_argument("--quick", action="store_true", help="2-3 minute smoke run (few epochs, subset)")
    ap.add_argument("--epochs", type=int, default=None, help="pretraining epochs (default: the recipe's)")
    ap.add_argument("--linear-epochs", type=int, default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0, help="the seed of the default run and --baselines-only")
    ap.add_argument("--keep", type=Path, default=None, help="keep the cache and run in this folder")
    ap.add_argument("--config", "--recipe", dest="config", default="cpu_small",
                    help="recipe name or TOML file (default: cpu_small); --recipe is an alias")
    ap.add_argument("--temperature", type=float, default=None, help="override the recipe's contrastive temperature")
    ap.add_argument("--lr", type=float, default=None, help="override the recipe's pretraining learning rate")
    ap.add_argument("--input-norm", choices=INPUT_NORMS, default=None,
                    help="override the recipe's model.input_norm (input BatchNorm per joint and axis, or per axis)")
    ap.add_argument("--baselines-only", action="store_true",
                    help="only the no-pretraining rows (raw coordinates, random init): about a minute")
    ap.add_argument("--protocol-rows", action="store_true",
                    help="the evaluation-protocol rows (scratch, linear, finetune, 10 %% labels, transfer) over --seeds")
    ap.add_argument("--seeds", type=int, default=None,
                    help="seeds 0..N-1: with --protocol-rows (default 3) its rows; without it, the seeded linear "
                         "protocol of the recipe (raw, raw_centred, random, pretrained, single rows)")
    ap.add_argument("--finetune-epochs", type=int, default=None, help="with --protocol-rows (default: the recipe's)")
    ap.add_argument("--json", action="store_true",
                    help="with --protocol-rows or --seeds: also print the rows as JSON (--seeds: one line, at the end)")
    ap.add_argument("--supervised-epochs", type=int, default=0,
                    help="also train the same encoder WITH labels for this many epochs and probe it frozen: the "
                         "upper reference for the pretrained row (100 epochs: about 11 min on 2 cores; 0 = skip)")
    args = ap.parse_args(argv)
    if args.seeds is not None and args.baselines_only:
        ap.error("--seeds goes with --protocol-rows or alone (the seeded recipe mode), not with --baselines-only")
    if args.seeds is not None and args.seeds < 1:
        ap.error("--seeds must be at least 1")
    return args


def make_config(args: argparse.Namespace, skeletons: str, seed: int):
    """The recipe ``args.config`` resolved for ``skeletons`` (comma-separated), joint stream, xsub, ``seed``,
    with this command's overrides (``--epochs``, ``--linear-epochs``, ``--quick``, ``--lr``, ``--input-norm``,
    ``--temperature``).  Returns ``(TrainConfig, notes)``."""
    from msclr.pipeline.config import resolve_config

    epochs = args.epochs or (2 if args.quick else None)
    linear_epochs = args.linear_epochs or (10 if args.quick else None)
    config, notes = resolve_config(args.config, skeletons=skeletons, stream="joint", split="xsub", epochs=epochs,
                                   linear_epochs=linear_epochs, seed=seed)
    if args.quick:  # a short queue (a multiple of the batch size) for the small subset
        batch = config.pretrain.batch_size
        config = replace(config, model=replace(config.model, queue_size=max(batch, 128 // batch * batch)))
    if args.lr is not None:
        config = replace(config, pretrain=replace(config.pretrain, lr=args.lr))
    if args.input_norm is not None:
        config = replace(config, model=replace(config.model, input_norm=args.input_norm))
    if args.temperature is not None:
        config = replace(config, model=replace(config.model, temperature=args.temperature))
    return config, notes


def main() -> None:
    """Parse the options, build (or reuse) the cache, and dispatch to the selected mode."""
    args = parse_args()
    import torch

    torch.set_num_threads(args.threads)
    data = args.data or Path(os.environ.get("MSCLR_TEST_DATA", REPO.parent / "shared" / "data")) / "utd_mhad" / "utd_mhad_3d.pkl"
    if not data.is_file():
        sys.exit(f"UTD-MHAD pickle not found at {data}; pass --data PATH")
    config, notes = make_config(args, "kinect_v1_20,utd_mid_16", args.seed)
    work = args.keep or Path(tempfile.mkdtemp(prefix="msclr_utd_"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    cache_root = work / "cache"
    if not (cache_root / "msclr-cache.json").exists():
        build_cache(data, cache_root, limit=120 if args.quick else None)
    t_cache = time.perf_counter() - t0
    print(f"cache: {cache_root} ({t_cache:.1f} s); config {args.config}: pretrain {config.pretrain.epochs} epochs, "
          f"batch {config.pretrain.batch_size}, queue {config.model.queue_size}, hidden_dim {config.model.hidden_dim}, "
          f"input_norm {config.model.input_norm}, "
          f"linear {config.linear.epochs} epochs; threads {args.threads}")
    for note in notes:
        print("note:", note)
    if args.protocol_rows:
        from utd_protocols import protocol_rows

        protocol_rows(cache_root, work, args.seeds or 3, config.pretrain.epochs,
                      args.finetune_epochs or config.finetune.epochs, args.linear_epochs or (10 if args.quick else None),
                      args.json)
    elif args.seeds is not None:
        from utd_recipe import recipe_rows

        result = recipe_rows(cache_root, work, args.config, args.seeds, lambda skel, s: make_config(args, skel, s)[0])
        print(f"total {time.perf_counter() - t0:.0f} s; runs in {work}")
        if args.json:  # the last line of stdout
            print(json.dumps(result))
        return
    else:
        default_run(args, config, cache_root, work, t_cache)
    print(f"total {time.perf_counter() - t0:.0f} s; runs in {work}")


def default_run(args: argparse.Namespace, config, cache_root: Path, work: Path, t_cache: float) -> None:
    """The single-seed table: baselines (+ supervised reference), then ``msclr train`` unless --baselines-only."""
    from msclr.console import TrainProgress as ConsoleProgress
    from msclr.pipeline.train import train_run

    t1 = time.perf_counter()
    data = load_xsub(cache_root, config)
    baseline = random_baseline(data, config, args.seed)
    if args.supervised_epochs:
        print(f"supervised reference: {args.supervised_epochs} epochs with labels ...", flush=True)
        baseline["supervised, then frozen + linear"] = supervised_ceiling(data, config, args.seed,
                                                                           args.supervised_epochs)
    t_base = time.perf_counter() - t1

    if args.baselines_only:
        print_table(baseline, None)
        print(f"time: cache {t_cache:.0f} s, baselines {t_base:.0f} s")
        return
    t2 = time.perf_counter()
    run = work / "run"
    with ConsoleProgress(quiet=False) as progress:
        metrics = train_run(cache_root, run, config, device="cpu", resume=(run / "run.json").exists(),
                            progress=progress, tensorboard=False)
    t_train = time.perf_counter() - t2
    joint = metrics["streams"]["joint"]
    pre = top1_row(joint)

    print(f"\nUTD-MHAD xsub ({metrics['protocol']['train_clips']} train / {metrics['protocol']['test_clips']} "
          "test clips)")
    print_table(baseline, pre)
    print(f"time: cache {t_cache:.0f} s, baselines {t_base:.0f} s, pretrain + linear eval {t_train:.0f} s "
          f"(pretraining {metrics['pretrain']['joint']['seconds']:.0f} s)")
    print(f"run folder: {run}")


def print_table(baseline: dict[str, dict[str, float]], pretrained: dict[str, float] | None) -> None:
    """The accuracy table (top-1 %, last linear epoch, 27 classes, test split xsub_val)."""
    print("linear evaluation top-1 % (27 classes, last epoch, test split):")
    header = f"{'model':34s} {'kinect_v1_20':>13s} {'utd_mid_16':>11s} {'ensemble':>9s}"
    print(header)
    print("-" * len(header))
    rows = [*baseline.items()] + ([("MS-AimCLR pretrained", pretrained)] if pretrained else [])
    for name, r in rows:
        print(f"{name:34s} {r['kinect_v1_20']:13.2f} {r['utd_mid_16']:11.2f} {r['ensemble']:9.2f}")
    if pretrained:
        ref = baseline["random init (BN calibrated)"]
        print(f"gain over random init (BN calibrated): kinect_v1_20 {pretrained['kinect_v1_20'] - ref['kinect_v1_20']:+.2f}, "
              f"ensemble {pretrained['ensemble'] - ref['ensemble']:+.2f} points")
        sup = baseline.get("supervised, then frozen + linear")
        if sup:
            print(f"gap to the supervised reference: ensemble {pretrained['ensemble'] - sup['ensemble']:+.2f} points")


if __name__ == "__main__":
    main()
