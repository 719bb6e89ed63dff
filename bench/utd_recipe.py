"""Seeded frozen-encoder linear protocol of one recipe on UTD-MHAD (``python bench/utd_mhad.py --recipe NAME
--seeds N``).

On the two-convention cache that ``bench/utd_mhad.py`` builds once (``kinect_v1_20`` + the derived
``utd_mid_16``, cross-subject split ``xsub_train`` / ``xsub_val``, 27 classes), for each seed s in 0..N-1:

- ``raw``: no encoder, the linear classifier on the flattened coordinates preprocessed exactly as the recipe's
  ``[data]`` says (``config.data.preprocessing()``);
- ``raw_centred``: the same probe on the fixed reference preprocessing, temporal resize to 50 frames and
  centre joint subtracted, everything else at ``load_split``'s defaults (documented at 72.6 % ensemble);
- ``random``: a random-init encoder of the recipe's model (``torch.manual_seed(s)``), BatchNorm statistics
  recalibrated on the training clips, frozen + linear (the "BN calibrated" row of the default run);
- ``pretrained``: ``msclr train`` (:func:`msclr.pipeline.train.train_run`) of the recipe on both conventions,
  seed s, linear protocol; per convention and the skeleton ensemble of both;
- ``single``: the same recipe and budget pretrained and evaluated on ``kinect_v1_20`` alone: compare with
  ``pretrained`` on the ``kinect_v1_20`` column.  The same budget means the same number of optimiser steps of
  the same batch size: an msclr epoch visits every clip once *per convention*, so the one-convention run gets
  twice the epochs (with the schedule stretched to the same fractions).

Accuracies are top-1 % on the test split (last linear epoch).  Runs go to ``WORK/seed<s>/multi`` and
``WORK/seed<s>/single`` (resumed when their ``run.json`` exists: re-running into the same ``--keep`` folder
reuses finished runs, and ``msclr train`` refuses one whose recipe settings differ; the seconds of a reused
run are not a training time).
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from utd_mhad import CLASSES, load_xsub, raw_coordinate_probe, top1_row  # noqa: E402
from utd_protocols import print_rows, summarise  # noqa: E402

MULTI = "kinect_v1_20,utd_mid_16"
SINGLE = "kinect_v1_20"
CENTRED = {"length": 50, "centre": True}  # the fixed reference preprocessing of raw_centred
ROWS = ("raw", "raw_centred", "random", "pretrained", "single")
COLUMNS = ("kinect_v1_20", "utd_mid_16", "ensemble")

Row = dict[str, float]  # column (convention or "ensemble") -> top-1 %
ConfigFactory = Callable[[str, int], Any]  # (comma-separated skeletons, seed) -> resolved TrainConfig


def _labels(recipe: str) -> dict[str, str]:
    """Table labels of the rows."""
    return {"raw": "raw coordinates, recipe's preprocessing",
            "raw_centred": "raw coordinates, length 50 + centre",
            "random": "random init (BN calibrated)",
            "pretrained": f"{recipe}, 2 conventions (ensemble: both)",
            "single": f"{recipe}, kinect_v1_20 alone"}


def raw_rows(recipe_data: tuple, centred_data: tuple, config: Any) -> dict[str, Row]:
    """``raw`` and ``raw_centred``: the raw-coordinate probe (seeded by ``config.linear.seed``) on the clips
    preprocessed as the recipe says and with length 50 + centring only.  ``*_data``: :func:`utd_mhad.load_xsub`."""
    out = {}
    for name, (convs, _, train, test) in (("raw", recipe_data), ("raw_centred", centred_data)):
        out[name] = raw_coordinate_probe(train, test, convs, config)
    return out


def random_row(data: tuple, config: Any, seed: int) -> Row:
    """``random``: random-init encoder of ``config.model`` (``torch.manual_seed(seed)``), BatchNorm running
    statistics recalibrated on the training clips (no labels), frozen + linear per convention + ensemble."""
    import torch

    from msclr.models.build import build_encoder
    from msclr.pipeline.training.linear_eval import calibrate_batchnorm, evaluate_stream

    convs, skels, tr, te = data
    torch.manual_seed(seed)
    enc = build_encoder([skels[c] for c in convs], config.model).eval()
    calibrate_batchnorm(enc, tr.arrays, skels, "joint")
    ev = evaluate_stream(enc, tr.arrays, tr.labels, te.arrays, te.labels, skels, "joint", len(CLASSES),
                         config.linear)
    return top1_row(ev.metrics())


def pretrained_row(cache_root: Path, run: Path, config: Any) -> Row:
    """``msclr train`` of ``config`` into ``run`` (resumed when it holds a run), linear protocol; top-1 % per
    convention of the joint stream, plus the skeleton ensemble when the run has one (two or more conventions)."""
    from msclr.pipeline.train import train_run

    metrics = train_run(cache_root, run, config, device="cpu", resume=(run / "run.json").exists(),
                        tensorboard=False)
    joint = metrics["streams"]["joint"]
    if "ensemble" in joint:
        return top1_row(joint)
    return {c: v["top1"] for c, v in joint["conventions"].items()}


def one_seed(cache_root: Path, work: Path, seed: int, tag: str, make_config: ConfigFactory,
             data: dict[str, tuple]) -> tuple[dict[str, Row], dict[str, float]]:
    """Every row for one seed.  ``data``: ``{"recipe": load_xsub(...), "centred": load_xsub(..., CENTRED)}``.

    Returns ``(rows, seconds per part)``; prints one progress line per part (``tag`` names the seed).
    """
    multi, single = make_config(MULTI, seed), make_config(SINGLE, seed)
    steps = len(multi.data.skeletons) // len(single.data.skeletons)  # epochs visit every clip once per convention
    single = replace(single, pretrain=single.pretrain.with_epochs(multi.pretrain.epochs * steps))
    if multi.pretrain.batch_size != single.pretrain.batch_size:
        raise RuntimeError("single- and multi-skeleton runs must share the batch size")
    rows: dict[str, Row] = {}
    seconds: dict[str, float] = {}

    def part(name: str, fn: Callable[[], Any], shown: tuple[str, ...]) -> None:
        t0 = time.perf_counter()
        got = fn()
        got = got if name == "raw" else {name: got}
        rows.update(got)
        seconds[name] = time.perf_counter() - t0
        text = ", ".join(f"{r} {k} {got[r][k]:.1f} %" for r in got for k in shown if k in got[r])
        print(f"{tag}: {text} ({seconds[name]:.0f} s)", flush=True)

    part("raw", lambda: raw_rows(data["recipe"], data["centred"], multi), ("ensemble",))
    part("random", lambda: random_row(data["recipe"], multi, seed), ("ensemble",))
    part("pretrained", lambda: pretrained_row(cache_root, work / f"seed{seed}" / "multi", multi),
         ("kinect_v1_20", "ensemble"))
    part("single", lambda: {SINGLE: pretrained_row(cache_root, work / f"seed{seed}" / "single", single)[SINGLE]},
         (SINGLE,))
    return rows, seconds


def recipe_rows(cache_root: Path, work: Path, recipe: str, seeds: int,
                make_config: ConfigFactory) -> dict[str, Any]:
    """Run seeds 0..``seeds``-1, print the progress lines and the summary table, and return the JSON object
    ``{"rows": {row: {column: {"mean": %, "values": [per seed]}}}, "seeds", "recipe", "epochs",
    "seconds_per_seed"}`` (top-1 %, rounded to 2 decimals; ``single`` has only ``kinect_v1_20``)."""
    base = make_config(MULTI, 0)
    t0 = time.perf_counter()
    data = {"recipe": load_xsub(cache_root, base), "centred": load_xsub(cache_root, base, dict(CENTRED))}
    print(f"clips loaded and preprocessed ({time.perf_counter() - t0:.0f} s; recipe's data section: "
          f"{_data_text(base)})", flush=True)
    per_seed, wall, parts = [], [], []
    for i in range(seeds):
        t1 = time.perf_counter()
        rows, seconds = one_seed(cache_root, work, i, f"seed {i} ({i + 1}/{seeds})", make_config, data)
        wall.append(time.perf_counter() - t1)
        per_seed.append({r: rows[r] for r in ROWS})
        parts.append(seconds)
        print(f"seed {i} ({i + 1}/{seeds}): done in {wall[-1]:.0f} s", flush=True)
    summary = summarise(per_seed)
    labels = _labels(recipe)
    print_rows({labels[r]: summary[r] for r in ROWS}, seeds)
    print_notes(wall, parts)
    return {"rows": {r: {k: {"mean": round(c["mean"], 2), "values": [round(v, 2) for v in c["values"]]}
                         for k, c in summary[r].items()} for r in ROWS},
            "seeds": list(range(seeds)), "recipe": recipe, "epochs": base.pretrain.epochs,
            "seconds_per_seed": [round(w, 1) for w in wall]}


def _data_text(config: Any) -> str:
    """The recipe's ``[data]`` fields other than skeletons / split / streams, as ``key=value``."""
    from dataclasses import asdict

    skip = {"skeletons", "split", "streams"}
    return ", ".join(f"{k}={v}" for k, v in asdict(config.data).items() if k not in skip)


def print_notes(wall: list[float], parts: list[dict[str, float]]) -> None:
    """How to read the table, and the wall time per seed (seconds) with its split over the rows."""
    print("std: sample standard deviation (n - 1) over the seeds (0 with one seed).  The pretrained row's ensemble "
          "combines both conventions; single is the same recipe and budget (as many optimiser steps: twice the "
          "epochs) pretrained on kinect_v1_20 alone: compare the two on the kinect_v1_20 column.")
    print("wall time per seed: " + ", ".join(f"{w:.0f} s" for w in wall))
    mean_parts = {k: statistics.fmean(p[k] for p in parts) for k in parts[0]}
    print("mean per part: " + ", ".join(f"{k} {v:.0f} s" for k, v in mean_parts.items())
          + " (raw: both raw rows)")
