"""UTD-MHAD evaluation protocols over several seeds (``python bench/utd_mhad.py --protocol-rows``).

Per seed, through ``msclr train``'s library path (:func:`msclr.pipeline.train.train_run`) on the two-convention
UTD-MHAD cache that ``bench/utd_mhad.py`` builds (``kinect_v1_20`` + the derived ``utd_mid_16``, cross-subject
split, 27 classes):

1. one run with the protocols ``scratch``, ``linear``, ``finetune``, ``scratch:0.1`` and ``semi:0.1``: MS-AimCLR
   pretraining once, then each protocol per convention, with the skeleton ensemble;
2. transfer: a second run on ``kinect_v1_20`` alone started from run 1's pretrained encoder (``--init``),
   fine-tuned (pretrained on one convention set, fine-tuned on another).

Prints top-1 % per convention and ensemble (mean, standard deviation, min-max over the seeds) and, with
``--json``, one object ``{"rows": {row: {convention or "ensemble": {"mean": %, "values": [per seed]}}}}``.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

ROWS = {  # row name -> protocol in run 1 ("transfer" comes from run 2)
    "scratch": "scratch",
    "MS-AimCLR + linear": "linear",
    "MS-AimCLR + finetune": "finetune",
    "scratch, 10 % labels": "scratch:0.1",
    "MS-AimCLR + semi 10 %": "semi:0.1",
}
PROTOCOLS = "linear,finetune,semi:0.1,scratch,scratch:0.1"


def _top1(section: dict[str, Any]) -> dict[str, float]:
    joint = section["streams"]["joint"]
    row = {c: v["top1"] for c, v in joint["conventions"].items()}
    if "ensemble" in joint:
        row["ensemble"] = joint["ensemble"]["top1"]
    return row


def _section(metrics: dict[str, Any], protocol: str) -> dict[str, Any]:
    return metrics if protocol == "linear" else metrics["protocols"][protocol]


def one_seed(cache_root: Path, work: Path, seed: int, epochs: int, finetune_epochs: int,
             linear_epochs: int | None) -> dict[str, dict[str, float]]:
    """Every row's top-1 for one seed (pretraining, the protocols, then transfer)."""
    from msclr.pipeline.config import resolve_config
    from msclr.pipeline.train import train_run

    common = {"stream": "joint", "split": "xsub", "epochs": epochs, "seed": seed, "linear_epochs": linear_epochs,
              "finetune_epochs": finetune_epochs}
    config, _ = resolve_config("cpu_small", skeletons="kinect_v1_20,utd_mid_16", protocols=PROTOCOLS, **common)
    run = work / f"seed{seed}"
    t0 = time.perf_counter()
    metrics = train_run(cache_root, run, config, device="cpu", resume=(run / "run.json").exists(), tensorboard=False)
    rows = {name: _top1(_section(metrics, protocol)) for name, protocol in ROWS.items()}
    print(f"seed {seed}: protocols {time.perf_counter() - t0:.0f} s", flush=True)
    t1 = time.perf_counter()
    target, _ = resolve_config("cpu_small", skeletons="kinect_v1_20", protocols="finetune", init=str(run), **common)
    transfer = work / f"seed{seed}_transfer"
    moved = train_run(cache_root, transfer, target, device="cpu", resume=(transfer / "run.json").exists(),
                      tensorboard=False)
    rows["transfer: 2-convention pretraining -> kinect_v1_20 finetune"] = _top1(_section(moved, "finetune"))
    print(f"seed {seed}: transfer {time.perf_counter() - t1:.0f} s", flush=True)
    return rows


def summarise(per_seed: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, dict[str, Any]]]:
    """row -> convention -> {"mean", "std", "values"} over the seeds."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for row in per_seed[0]:
        out[row] = {}
        for key in per_seed[0][row]:
            values = [seed[row][key] for seed in per_seed]
            out[row][key] = {"mean": statistics.fmean(values),
                             "std": statistics.stdev(values) if len(values) > 1 else 0.0, "values": values}
    return out


def print_rows(summary: dict[str, dict[str, dict[str, Any]]], seeds: int) -> None:
    keys = ("kinect_v1_20", "utd_mid_16", "ensemble")
    print(f"\nUTD-MHAD xsub, top-1 % (27 classes, last epoch), mean ± std (min-max) over {seeds} seeds")
    print(f"{'row':58s} " + " ".join(f"{k:>24s}" for k in keys))
    for row, cells in summary.items():
        text = []
        for k in keys:
            c = cells.get(k)
            text.append(f"{'-':>24s}" if c is None else
                        f"{c['mean']:6.1f} ± {c['std']:4.1f} ({min(c['values']):4.1f}-{max(c['values']):4.1f})")
        print(f"{row:58s} " + " ".join(f"{t:>24s}" for t in text))


def protocol_rows(cache_root: Path, work: Path, seeds: int, epochs: int, finetune_epochs: int,
                  linear_epochs: int | None, as_json: bool) -> None:
    per_seed = [one_seed(cache_root, work, seed, epochs, finetune_epochs, linear_epochs) for seed in range(seeds)]
    summary = summarise(per_seed)
    print_rows(summary, seeds)
    if as_json:
        print(json.dumps({"rows": summary, "settings": {"seeds": seeds, "pretrain_epochs": epochs,
                                                        "finetune_epochs": finetune_epochs,
                                                        "linear_epochs": linear_epochs}}, indent=2))
