"""Linear evaluation on cached features equals the reference's per-epoch-forward protocol."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from msclr.models.build import build_encoder, extract_features
from msclr.pipeline.config import LinearConfig, ModelConfig
from msclr.pipeline.training.linear_eval import (
    calibrate_batchnorm,
    evaluate_stream,
    linear_eval_cached,
    linear_eval_forward,
)
from msclr.skeletons import get_skeleton

TINY = ModelConfig(hidden_channels=4, hidden_dim=16, feature_dim=8)


def _data(n: int, v: int, seed: int, classes: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Clips = a class template pose (fixed across splits) moving with class-specific speed, plus noise."""
    templates = np.random.default_rng(123).normal(scale=0.3, size=(classes, 3, 1, v, 1))
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, size=n)
    t = np.linspace(0, 1, 16)
    wave = np.sin(2 * np.pi * (1 + y)[:, None] * t[None])[:, None, :, None, None]  # (n, 1, T, 1, 1)
    x = templates[y] * (1 + 0.3 * wave) + rng.normal(scale=0.05, size=(n, 3, 16, v, 1))
    return x.astype(np.float32), y.astype(np.int64)


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    skels = {"kinectv2_25": get_skeleton("kinectv2_25"), "smpl_24": get_skeleton("smpl_24")}
    enc = build_encoder(list(skels.values()), TINY)
    x, _ = _data(64, 25, 0)
    return calibrate_batchnorm(enc, {"kinectv2_25": x, "smpl_24": x[:, :, :, :24]}, skels, "joint")


def test_calibrate_batchnorm_ignores_dropout() -> None:
    """Calibrated statistics are those of eval-mode (dropout-free) features: an encoder with dropout 0.5
    calibrates exactly like the same weights with dropout 0, and its modules are all in eval mode after."""
    skels = {"kinectv2_25": get_skeleton("kinectv2_25"), "smpl_24": get_skeleton("smpl_24")}
    x, _ = _data(40, 25, 5)
    arrays = {"kinectv2_25": x, "smpl_24": x[:, :, :, :24]}
    torch.manual_seed(0)
    with_dropout = build_encoder(list(skels.values()), replace(TINY, dropout=0.5))
    without = build_encoder(list(skels.values()), replace(TINY, dropout=0.0))
    without.load_state_dict(with_dropout.state_dict())
    calibrate_batchnorm(with_dropout, arrays, skels, "joint", batch_size=16)
    calibrate_batchnorm(without, arrays, skels, "joint", batch_size=16)
    a, b = with_dropout.state_dict(), without.state_dict()
    assert any("running_var" in k for k in a)
    for k in a:
        torch.testing.assert_close(a[k], b[k], msg=k)
    assert not any(m.training for m in with_dropout.modules())
    # and the statistics are not the (0, 1) of a fresh encoder
    assert float(a["blocks.9.tcn.0.running_var"].mean()) != 1.0


def test_cached_features_equal_per_epoch_forward(encoder) -> None:
    skel = get_skeleton("kinectv2_25")
    x_tr, y_tr = _data(96, 25, 1)
    x_te, y_te = _data(64, 25, 2)
    cfg = LinearConfig(epochs=12, lr_steps=(9,), batch_size=32, seed=3, lr=1.0)
    for stream in ("joint", "bone"):
        tr = extract_features(encoder, x_tr, skel, stream, batch_size=50)
        te = extract_features(encoder, x_te, skel, stream, batch_size=50)
        assert tr.shape == (96, 16)
        cached = linear_eval_cached(tr, y_tr, te, y_te, 4, cfg, eval_every=4)
        forward = linear_eval_forward(encoder, x_tr, y_tr, x_te, y_te, skel, stream, 4, cfg, eval_every=4)
        assert abs(cached.top1 - forward.top1) <= 0.1
        assert abs(cached.top5 - forward.top5) <= 0.1
        assert np.allclose(cached.test_logits, forward.test_logits, atol=1e-3)
        assert [h["epoch"] for h in cached.history] == list(range(1, 13))
        assert np.allclose([h["loss"] for h in cached.history], [h["loss"] for h in forward.history], atol=1e-4)
        assert cached.best_epoch is not None and [h.get("top1") is not None for h in cached.history].count(True) == 3
    # the classifier actually learns (far above chance 25 %)
    assert cached.top1 > 50, cached.top1


def test_schedule_and_frozen_encoder(encoder) -> None:
    skel = get_skeleton("kinectv2_25")
    x_tr, y_tr = _data(40, 25, 4)
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    feats = extract_features(encoder, x_tr, skel, "motion")
    cfg = LinearConfig(epochs=5, lr_steps=(4,), batch_size=128, lr=3.0)  # batch > N: one batch, no drop
    res = linear_eval_cached(feats, y_tr, feats, y_tr, 4, cfg, eval_every=None)
    assert [h["lr"] for h in res.history] == pytest.approx([3.0, 3.0, 3.0, 3.0, 0.3])
    assert res.best_top1 is None
    after = encoder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # eval mode: BN statistics untouched
    assert res.weight.shape == (4, 16) and res.bias.shape == (4,)


def test_standardised_classifier_folds_into_raw_weights(encoder) -> None:
    from dataclasses import replace

    skel = get_skeleton("kinectv2_25")
    x_tr, y_tr = _data(64, 25, 7)
    x_te, y_te = _data(32, 25, 8)
    cfg = LinearConfig(epochs=8, lr_steps=(6,), batch_size=16, lr=0.3, standardize=True)
    tr, te = (extract_features(encoder, x, skel, "joint") for x in (x_tr, x_te))
    res = linear_eval_cached(tr, y_tr, te, y_te, 4, cfg, eval_every=None)
    raw_logits = (te @ res.weight.T + res.bias).numpy()
    assert np.allclose(raw_logits, res.test_logits, atol=1e-4)  # saved weights apply to raw features
    forward = linear_eval_forward(encoder, x_tr, y_tr, x_te, y_te, skel, "joint", 4, cfg, eval_every=None)
    assert abs(forward.top1 - res.top1) <= 0.1
    plain = linear_eval_cached(tr, y_tr, te, y_te, 4, replace(cfg, standardize=False), eval_every=None)
    assert not np.allclose(plain.test_logits, res.test_logits)


def test_linear_config_scaling() -> None:
    cfg = LinearConfig().with_epochs(10)
    assert cfg.lr_steps == (8,) and cfg.lr_at(8) == 3.0 and cfg.lr_at(9) == pytest.approx(0.3)


def test_evaluate_stream_ensemble(encoder) -> None:
    skels = {"kinectv2_25": get_skeleton("kinectv2_25"), "smpl_24": get_skeleton("smpl_24")}
    x25, y_tr = _data(64, 25, 5)
    x24 = x25[:, :, :, :24]
    t25, y_te = _data(32, 25, 6)
    cfg = LinearConfig(epochs=6, lr_steps=(5,), batch_size=16, lr=1.0)
    ev = evaluate_stream(encoder, {"kinectv2_25": x25, "smpl_24": x24}, y_tr,
                         {"kinectv2_25": t25, "smpl_24": t25[:, :, :, :24]}, y_te, skels, "joint", 4, cfg)
    m = ev.metrics()
    assert set(m["conventions"]) == {"kinectv2_25", "smpl_24"}
    assert m["ensemble"]["mode"] == "softmax"
    from msclr.models.fusion import softmax, topk_accuracy

    probs = (softmax(ev.results["kinectv2_25"].test_logits) + softmax(ev.results["smpl_24"].test_logits)) / 2
    assert m["ensemble"]["top1"] == pytest.approx(topk_accuracy(probs, y_te, 1))


def _peak_then_fall_features() -> tuple[torch.Tensor, np.ndarray, torch.Tensor, np.ndarray]:
    """Two classes, two feature dimensions, built so that test accuracy peaks in the first epochs, then falls.

    Dimension A (= ±1 with the class sign) agrees with the label on 3/4 of the training clips and on every test
    clip; dimension B (= ±0.5) agrees with it on every training clip but is reversed (and of growing size) on
    the test clips.  SGD first follows A (test accuracy up); to fit the last quarter of the training set it then
    has to weigh B over A, which flips the test clips one after the other (test accuracy down).
    """
    n_train, n_test = 40, 20
    y_tr, y_te = np.arange(n_train) % 2, np.arange(n_test) % 2
    s_tr, s_te = 2.0 * y_tr - 1, 2.0 * y_te - 1
    a_tr = s_tr.copy()
    a_tr[: n_train // 4] *= -1
    tr = np.stack([a_tr, 0.5 * s_tr], 1)
    te = np.stack([s_te, -s_te * np.linspace(0.1, 1.0, n_test)], 1)
    return (torch.from_numpy(tr.astype(np.float32)), y_tr.astype(np.int64),
            torch.from_numpy(te.astype(np.float32)), y_te.astype(np.int64))


def test_reported_top1_is_the_last_epoch_not_the_best(monkeypatch: pytest.MonkeyPatch) -> None:
    tr, y_tr, te, y_te = _peak_then_fall_features()
    cfg = LinearConfig(epochs=20, lr_steps=(16,), batch_size=8, lr=0.03, seed=0)
    res = linear_eval_cached(tr, y_tr, te, y_te, 2, cfg, eval_every=1)
    curve = [h["top1"] for h in res.history]
    # the case is what it claims: an early peak, well above the last epoch
    assert len(curve) == 20 and max(curve) >= 70 and curve[-1] <= 30, curve
    assert res.best_epoch == int(np.argmax(curve)) + 1 < cfg.epochs and res.best_top1 == max(curve)
    # reported: the last epoch's accuracy (its logits), not the best
    assert res.top1 == curve[-1] != res.best_top1
    assert res.top1 == pytest.approx(100.0 * float(np.mean(res.test_logits.argmax(1) == y_te)))

    # the same through evaluate_stream's metrics (what msclr train writes), with and without report_best
    import msclr.pipeline.training.linear_eval as linear_eval

    features = {"train": tr, "test": te}
    skels = {"kinectv2_25": get_skeleton("kinectv2_25")}
    x_tr, x_te = np.zeros((40, 3, 16, 25, 1), np.float32), np.zeros((20, 3, 16, 25, 1), np.float32)

    def crafted(encoder, x, skel, stream, **kwargs):
        return features["train" if x is x_tr else "test"]

    monkeypatch.setattr(linear_eval, "extract_features", crafted)
    for report_best in (False, True):
        ev = evaluate_stream(None, {"kinectv2_25": x_tr}, y_tr, {"kinectv2_25": x_te}, y_te, skels, "joint", 2,
                             replace(cfg, report_best=report_best))
        m = ev.metrics(report_best=report_best)["conventions"]["kinectv2_25"]
        assert m["top1"] == ev.results["kinectv2_25"].top1 == res.top1
        if report_best:  # evaluated every 5 epochs: the best of 5, 10, 15, 20 is an early one, kept apart
            assert m["best_epoch"] < cfg.epochs and m["best_top1"] > m["top1"], m
        else:
            assert "best_top1" not in m
