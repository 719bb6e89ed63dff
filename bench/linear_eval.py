"""Linear evaluation: features cached once vs the reference's per-epoch forward pass (speed and accuracy).

Both paths train the same linear classifier with the same seeded shuffles (msclr.pipeline.training.linear_eval): the
cached path runs the frozen encoder once over the train and test clips and then trains on the (N, D) features;
the reference path re-runs the frozen encoder on every batch of every epoch and on the test set at every
evaluation (every 5 epochs, as the reference does).  The encoder is frozen and in eval mode in both, so the
features and therefore the accuracies agree (to float rounding).

Data: UTD-MHAD (real Kinect v1 skeletons, xsub split) read through msclr's pyskl reader, or ``--synthetic``.
The encoder is a random-init encoder with BatchNorm statistics calibrated on the training clips (speed does not
depend on the weights).

Usage::

    python bench/linear_eval.py                      # 100 epochs, paper-size encoder (hidden_dim 256)
    python bench/linear_eval.py --hidden-dim 64 --epochs 100 --threads 2
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def load_utd(path: Path, length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from msclr.pipeline.datasets.pyskl import read_annotations
    from msclr.pipeline.preprocess import preprocess_clip
    from msclr.skeletons import get_skeleton

    skel = get_skeleton("kinect_v1_20")
    parsed = read_annotations(path, skel)
    by_name = {a.frame_dir: a for a in parsed.annotations}

    def arrays(split: str) -> tuple[np.ndarray, np.ndarray]:
        anns = [by_name[n] for n in parsed.splits[split]]
        x = np.stack([preprocess_clip(a.keypoint.transpose(1, 0, 2, 3), skel, length=length) for a in anns])
        return x, np.array([a.label for a in anns])

    return (*arrays("xsub_train"), *arrays("xsub_val"))


def load_synthetic(length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from msclr.pipeline.datasets.synthetic import make_dataset, subject_splits
    from msclr.pipeline.preprocess import preprocess_clip
    from msclr.skeletons import get_skeleton

    skel = get_skeleton("kinectv2_25")
    samples = make_dataset(("kinectv2_25",), samples_per_class=80, seed=0)
    splits = subject_splits(samples)
    by_name = {s.name: s for s in samples}

    def arrays(split: str) -> tuple[np.ndarray, np.ndarray]:
        ss = [by_name[n] for n in splits[split]]
        return (np.stack([preprocess_clip(s.poses["kinectv2_25"], skel, length=length) for s in ss]),
                np.array([s.label for s in ss]))

    return (*arrays("xsub_train"), *arrays("xsub_val"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=None, help="utd_mhad_3d.pkl (default: the shared data folder)")
    ap.add_argument("--synthetic", action="store_true", help="use msclr's synthetic clips instead of UTD-MHAD")
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--hidden-dim", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--eval-every", type=int, default=5, help="test evaluations during training (reference: 5)")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from msclr.models.build import build_encoder, extract_features
    from msclr.pipeline.config import LinearConfig, ModelConfig
    from msclr.pipeline.training.linear_eval import (
        calibrate_batchnorm,
        linear_eval_cached,
        linear_eval_forward,
    )
    from msclr.skeletons import get_skeleton

    if args.synthetic:
        skel = get_skeleton("kinectv2_25")
        x_tr, y_tr, x_te, y_te = load_synthetic(50)
        source = "synthetic"
    else:
        skel = get_skeleton("kinect_v1_20")
        data = args.data or Path(os.environ.get("MSCLR_TEST_DATA", REPO.parent / "shared" / "data")) / "utd_mhad" / "utd_mhad_3d.pkl"
        if not data.is_file():
            sys.exit(f"UTD-MHAD pickle not found at {data}; pass --data PATH or --synthetic")
        x_tr, y_tr, x_te, y_te = load_utd(data, 50)
        source = "UTD-MHAD xsub"
    classes = int(max(y_tr.max(), y_te.max()) + 1)
    torch.manual_seed(0)
    encoder = build_encoder([skel], ModelConfig(hidden_dim=args.hidden_dim))
    calibrate_batchnorm(encoder, {skel.name: x_tr}, {skel.name: skel}, "joint")
    cfg = LinearConfig().with_epochs(args.epochs)
    print(f"{source}: {len(x_tr)} train / {len(x_te)} test clips, {classes} classes, encoder hidden_dim "
          f"{args.hidden_dim}, {args.epochs} epochs (lr steps {list(cfg.lr_steps)}), batch {cfg.batch_size}, "
          f"test evaluation every {args.eval_every} epochs, {args.threads} threads")

    # warm-up (first-call library initialisation would otherwise be charged to the cached path)
    warm = extract_features(encoder, x_tr[:8], skel, "joint")
    linear_eval_cached(warm, y_tr[:8], warm, y_tr[:8], classes, LinearConfig(epochs=1), eval_every=None)

    t0 = time.perf_counter()
    f_tr = extract_features(encoder, x_tr, skel, "joint")
    f_te = extract_features(encoder, x_te, skel, "joint")
    t_feat = time.perf_counter() - t0
    cached = linear_eval_cached(f_tr, y_tr, f_te, y_te, classes, cfg, eval_every=args.eval_every)
    t_cached = time.perf_counter() - t0
    print(f"cached features : top-1 {cached.top1:6.2f}  top-5 {cached.top5:6.2f}  {t_cached:8.1f} s "
          f"(features {t_feat:.1f} s, classifier {t_cached - t_feat:.1f} s)")

    t1 = time.perf_counter()
    forward = linear_eval_forward(encoder, x_tr, y_tr, x_te, y_te, skel, "joint", classes, cfg,
                                  eval_every=args.eval_every)
    t_forward = time.perf_counter() - t1
    print(f"per-epoch forward: top-1 {forward.top1:6.2f}  top-5 {forward.top5:6.2f}  {t_forward:8.1f} s")
    same = np.mean(cached.test_logits.argmax(1) == forward.test_logits.argmax(1)) * 100
    print(f"speed-up {t_forward / t_cached:.1f}x; top-1 difference {abs(cached.top1 - forward.top1):.2f} points; "
          f"identical predictions on {same:.1f} % of test clips; max |logit difference| "
          f"{np.abs(cached.test_logits - forward.test_logits).max():.2e}")


if __name__ == "__main__":
    main()
