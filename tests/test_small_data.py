"""The opt-in small-data pieces: mean-pose removal, bone scaling, speed crops, the NNCLR objective, the recipe."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from msclr.models.build import build_model
from msclr.models.nnclr import MSNNCLR, batch_nce, nearest_neighbours
from msclr.models.subject_augment import path_matrix, resample_crop, scale_bones
from msclr.pipeline.config import ConfigError, ModelConfig, PretrainConfig, TrainConfig, resolve_config
from msclr.pipeline.preprocess import preprocess_clip, subtract_mean_pose
from msclr.pipeline.rundir import Preprocessing
from msclr.skeletons import get_skeleton

KINECT = get_skeleton("kinectv2_25")


# ------------------------------------------------------------------ mean pose
def test_subtract_mean_pose_uses_present_frames_only() -> None:
    x = np.zeros((4, 2, 3, 3))
    x[:, 0] = np.arange(4)[:, None, None] + np.array([1.0, 2.0, 3.0])[None, :, None]  # person 0: all frames
    x[1:3, 1] = 5.0  # person 1: frames 1-2 only
    out = subtract_mean_pose(x)
    np.testing.assert_allclose(out[:, 0, :, 0], np.arange(4)[:, None] - 1.5 + np.zeros(3))  # mean 1.5 + joint
    np.testing.assert_allclose(out[1:3, 1], 0.0)
    assert np.all(out[[0, 3], 1] == 0.0)  # absent frames stay exactly zero


def test_preprocess_clip_mean_pose_removes_the_body_not_the_motion() -> None:
    rng = np.random.default_rng(0)
    poses = rng.normal(0, 0.3, (30, 1, KINECT.num_joints, 3)) + 1.0
    plain = preprocess_clip(poses, KINECT, length=20)
    moving = preprocess_clip(poses, KINECT, length=20, mean_pose=True)
    np.testing.assert_allclose(moving.mean(axis=1), 0.0, atol=1e-6)  # (3, V, M): every joint's mean is 0
    np.testing.assert_allclose(moving, plain - plain.mean(axis=1, keepdims=True), atol=1e-6)
    assert Preprocessing(20, True, False, "located", 1, mean_pose=True).clip_options()["mean_pose"] is True


# ------------------------------------------------------------------ subject augmentations
def _batch(n: int = 3, t: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, t, KINECT.num_joints, 1, generator=torch.Generator().manual_seed(seed))


def test_path_matrix_reaches_every_joint_from_the_centre() -> None:
    paths, attached = path_matrix(KINECT)
    assert attached.all() and paths[KINECT.centre].sum() == 0
    hand = KINECT.index("lhan")  # its path holds every bone from it up to the centre, and nothing else
    on_path, w = set(), hand
    while KINECT.parents[w] != w:
        on_path.add(w)
        w = KINECT.parents[w]
    assert w == KINECT.centre and len(on_path) >= 4
    assert {int(b) for b in paths[hand].nonzero()} == on_path


def test_scale_bones_scales_lengths_keeps_directions_and_centre() -> None:
    x = _batch()
    out = scale_bones(x, KINECT, 0.3, torch.Generator().manual_seed(1))
    parents = list(KINECT.parents)
    before, after = x - x[:, :, :, parents], out - out[:, :, :, parents]
    ratio = after.norm(dim=1) / before.norm(dim=1).clamp_min(1e-9)  # (N, T, V, M)
    bones = [v for v in range(KINECT.num_joints) if parents[v] != v]
    r = ratio[:, :, bones]
    assert float(r.min()) >= 0.7 - 1e-5 and float(r.max()) <= 1.3 + 1e-5
    torch.testing.assert_close(r, r[:, :1].expand_as(r))  # one factor per clip and bone, the same in every frame
    assert float(r.std()) > 0.05  # and they differ between bones
    cosine = F.cosine_similarity(after[:, :, :, bones], before[:, :, :, bones], dim=1)
    assert float(cosine.min()) > 1 - 1e-5
    torch.testing.assert_close(out[:, :, :, KINECT.centre], x[:, :, :, KINECT.centre])
    assert scale_bones(x, KINECT, 0.0) is x


def test_resample_crop_keeps_straight_lines_straight() -> None:
    t = 10
    ramp = torch.arange(t, dtype=torch.float32).view(1, 1, t, 1, 1).expand(4, 3, t, 2, 1).contiguous()
    out = resample_crop(ramp, 0.5, torch.Generator().manual_seed(0))
    steps = out[:, 0, 1:, 0, 0] - out[:, 0, :-1, 0, 0]  # (N, T-1): a sub-segment of a line, evenly resampled
    torch.testing.assert_close(steps, steps[:, :1].expand_as(steps))
    span = out[:, 0, -1, 0, 0] - out[:, 0, 0, 0, 0]
    assert float(span.min()) >= 0.5 * (t - 1) - 1e-4 and float(span.max()) <= t - 1 + 1e-4
    assert float(out.min()) >= 0 and float(out.max()) <= t - 1
    assert resample_crop(ramp, 1.0) is ramp


# ------------------------------------------------------------------ NNCLR objective
def test_batch_nce_is_the_in_batch_cross_entropy() -> None:
    gen = torch.Generator().manual_seed(0)
    a = F.normalize(torch.randn(5, 8, generator=gen), dim=1)
    b = F.normalize(torch.randn(5, 8, generator=gen), dim=1)
    logits = a @ b.T / 0.2
    manual = -sum(float(logits[i, i] - torch.logsumexp(logits[i], 0)) for i in range(5)) / 5
    assert float(batch_nce(a, b, 0.2)) == pytest.approx(manual, rel=1e-6)


def test_nearest_neighbours_pick_the_most_similar_support_column() -> None:
    support = torch.eye(4)  # (D, K): column j is the unit vector e_j
    z = F.normalize(torch.tensor([[0.1, 0.9, 0.0, 0.2], [0.0, 0.0, -1.0, 0.3]]), dim=1)
    torch.testing.assert_close(nearest_neighbours(z, support), torch.eye(4)[[1, 3]])


class _Linear(torch.nn.Module):
    """A stand-in encoder with the real call signature: f(x (N, C, T, V, M), skeleton) -> (N, D)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(6, 4)

    def forward(self, x: torch.Tensor, skeleton: str) -> torch.Tensor:
        return self.fc(x.flatten(1))


def test_nnclr_loss_terms_and_support_set_updates() -> None:
    torch.manual_seed(0)
    model = MSNNCLR(_Linear, dim=4, support_size=6, temperature=0.5, nn_weight=0.25)
    x1, x2 = torch.randn(3, 3, 2, 1, 1), torch.randn(3, 3, 2, 1, 1)
    before = model.queue.clone()
    out = model(x1, x2, "a", "b")
    z1 = F.normalize(model.encoder_q(x1, "a"), dim=1)
    z2 = F.normalize(model.encoder_q(x2, "b"), dim=1)
    simclr = (batch_nce(z1, z2, 0.5) + batch_nce(z2, z1, 0.5)) / 2
    assert float(out["loss"].detach()) == pytest.approx(float(simclr.detach()), rel=1e-6) and "loss_nn" not in out
    torch.testing.assert_close(out["negatives"], before)
    torch.testing.assert_close(model.queue, torch.cat([before[:, 3:], z2.detach().T], 1))  # oldest 3 replaced
    support = model.queue.clone()
    mined = model(x1, x2, "a", "b", mine=True)
    n1, n2 = nearest_neighbours(z1, support), nearest_neighbours(z2, support)
    nn_term = (batch_nce(n1, z2, 0.5) + batch_nce(n2, z1, 0.5)) / 2
    assert float(mined["loss"].detach()) == pytest.approx(float((0.75 * simclr + 0.25 * nn_term).detach()), rel=1e-5)
    model.eval()
    frozen = model.queue.clone()
    model(x1, x2, "a", "b")
    torch.testing.assert_close(model.queue, frozen)  # no side effect in eval mode


def test_nnclr_trains_the_encoder_it_saves() -> None:
    model = build_model([KINECT], ModelConfig(hidden_dim=16, feature_dim=8, objective="nnclr", head_norm=True,
                                              queue_size=8, dropout=0.0))
    assert isinstance(model, MSNNCLR) and not model.uses_extreme_view
    x = torch.randn(4, 3, 10, KINECT.num_joints, 1)
    out = model(x, x + 0.01 * torch.randn_like(x), KINECT.name, KINECT.name, mine=True)
    out["loss"].backward()
    assert math.isfinite(float(out["loss"].detach()))
    assert all(p.grad is not None for p in model.encoder_q.blocks.parameters() if p.requires_grad)
    assert isinstance(model.encoder_q.fc[-1], torch.nn.BatchNorm1d) and not model.encoder_q.fc[-1].affine


# ------------------------------------------------------------------ recipe and validation
def test_small_data_recipe_is_opt_in_and_the_defaults_stay_the_papers() -> None:
    config, _ = resolve_config("small_data")
    assert config.model.objective == "nnclr" and config.model.head_norm and config.data.mean_pose
    default = TrainConfig()
    assert default.model.objective == "aimclr" and not default.model.head_norm and not default.data.mean_pose
    assert default.pretrain.bone_scale == 0.0 and default.pretrain.crop_min == 1.0
    for name in ("cpu_small", "ntu60_xsub"):
        paper, _ = resolve_config(name)
        assert paper.model.objective == "aimclr" and not paper.model.head_norm


@pytest.mark.parametrize("change, message", [
    ({"model": ModelConfig(objective="nnclrr")}, "did you mean nnclr?"),
    ({"model": ModelConfig(nn_weight=1.5)}, "model.nn_weight must be in [0, 1]"),
    ({"pretrain": PretrainConfig(crop_min=0.0)}, "pretrain.crop_min in (0, 1]"),
    ({"pretrain": PretrainConfig(bone_scale=1.0)}, "pretrain.bone_scale must be in [0, 1)"),
])
def test_bad_small_data_settings_say_what_to_use(change: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        TrainConfig(**change).validate()
    assert message in str(err.value)
