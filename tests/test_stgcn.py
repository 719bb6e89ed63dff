"""Multi-skeleton ST-GCN encoder, EADM and the fast dropout (msclr.models.stgcn, msclr.models.eadm)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from msclr.errors import SkeletonError
from msclr.models.eadm import eadm, simam_attention
from msclr.models.layers import Dropout, batch_norm, graph_conv
from msclr.models.stgcn import MultiSkeletonSTGCN, block_table

SKELETONS = ["ntu_kinect_25", "smplx_42", "smpl_24"]


@pytest.fixture(scope="module")
def encoder() -> MultiSkeletonSTGCN:
    torch.manual_seed(0)
    return MultiSkeletonSTGCN(SKELETONS)


def _x(v, n=2, t=12, m=2, seed=0):
    return torch.randn(n, 3, t, v, m, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------- shapes and structure
@pytest.mark.parametrize("name, v", [("ntu_kinect_25", 25), ("smplx_42", 42), ("smpl_24", 24)])
def test_output_shapes_per_skeleton(encoder, name, v):
    x = _x(v)
    assert encoder(x, name).shape == (2, 128)
    assert encoder.features(x, name).shape == (2, 256)
    z, z_drop = encoder(x, name, drop=True)
    assert z.shape == z_drop.shape == (2, 128)
    assert encoder.feature_map(x, name).shape == (4, 256, 3, v)  # T 12 -> 6 -> 3


def test_heads_and_alias():
    torch.manual_seed(0)
    linear = MultiSkeletonSTGCN(["ntu-rgb+d"], head="linear", out_dim=60)
    assert linear.skeleton_names == ["ntu_kinect_25"]
    assert linear(_x(25), "ntu-rgb+d").shape == (2, 60)
    bare = MultiSkeletonSTGCN(["ntu_kinect_25"], head=None)
    assert bare(_x(25), "ntu_kinect_25").shape == (2, 256)
    with pytest.raises(ValueError, match="head"):
        MultiSkeletonSTGCN(["ntu_kinect_25"], head="conv")


def test_block_table_and_reference_parameter_counts(encoder):
    table = block_table(3, 16, 256)
    assert [(c_in, c_out, s) for c_in, c_out, s, _ in table] == [
        (3, 16, 1), (16, 16, 1), (16, 16, 1), (16, 16, 1), (16, 32, 2), (32, 32, 1), (32, 32, 1), (32, 64, 2),
        (64, 64, 1), (64, 256, 1)]  # fmt: skip
    assert [kind for *_, kind in table] == ["none"] + ["identity"] * 3 + ["conv"] + ["identity"] * 2 + [
        "conv", "identity", "conv"]  # fmt: skip
    # docs/method.md, "Encoder": blocks 802,480 parameters, MLP head 98,688, data_bn 150 (NTU) / 252 (SMPL-X)
    assert sum(p.numel() for p in encoder.blocks.parameters()) == 802_480
    assert sum(p.numel() for p in encoder.fc.parameters()) == 98_688
    ntu = encoder.conventions["ntu_kinect_25"]
    assert sum(p.numel() for p in ntu.data_bn.parameters()) == 150
    # native-size edge importance: 10 masks (3, V, V) per convention, ones at init
    assert len(ntu.edge_importance) == 10 and ntu.edge_importance[4].shape == (3, 25, 25)
    assert all(torch.equal(p, torch.ones_like(p)) for p in ntu.edge_importance)
    two = MultiSkeletonSTGCN(["ntu_kinect_25", "smplx_42"])
    # reference encoder_q 1,007,410 with edge importance padded to 42 (2 x 52,920) -> 25^2 and 42^2 here
    assert sum(p.numel() for p in two.parameters()) == 1_007_410 - 2 * 52_920 + 18_750 + 52_920


def test_initialisation_follows_the_reference():
    torch.manual_seed(1)
    enc = MultiSkeletonSTGCN(["ntu_kinect_25"]).requires_grad_(False)
    w = enc.blocks[9].tcn[2].weight
    assert abs(float(w.std()) - 0.02) < 0.002 and abs(float(w.mean())) < 0.002
    assert torch.count_nonzero(enc.blocks[9].tcn[2].bias) == 0
    bn = enc.blocks[9].tcn[3]
    assert abs(float(bn.weight.mean()) - 1.0) < 0.01 and 0.01 < float(bn.weight.std()) < 0.03
    assert abs(float(enc.fc[0].weight.std()) - 0.02) < 0.002


def test_unknown_skeleton_and_padded_input_are_rejected(encoder):
    with pytest.raises(SkeletonError, match="built for skeletons"):
        encoder(_x(20), "kinect_v1_20")
    with pytest.raises(ValueError, match="native V"):
        encoder(_x(42), "ntu_kinect_25")  # an NTU batch zero-padded to 42 joints


# ----------------------------------------------------------------------------- maths
@pytest.mark.parametrize("cin, cout, diagonal_root", [(4, 6, True), (4, 6, False), (6, 4, False), (5, 5, True)])
def test_graph_conv_matches_reference_einsum(cin, cout, diagonal_root):
    g = torch.Generator().manual_seed(cin * 10 + cout)
    n, t, v, k = 3, 5, 7, 3
    x = torch.randn(n, cin, t, v, generator=g, dtype=torch.float64)
    a = torch.rand(k, v, v, generator=g, dtype=torch.float64)
    if diagonal_root:
        a[0] = torch.diag(torch.diagonal(a[0]))
    w = torch.randn(k * cout, cin, 1, 1, generator=g, dtype=torch.float64)
    b = torch.randn(k * cout, generator=g, dtype=torch.float64)
    y = torch.einsum("oc,nctv->notv", w[:, :, 0, 0], x) + b.view(1, -1, 1, 1)
    expected = torch.einsum("nkctv,kvw->nctw", y.view(n, k, cout, t, v), a)
    torch.testing.assert_close(graph_conv(x, a, w, b, diagonal_root=diagonal_root), expected)
    # gradients w.r.t. x, A and the weights equal those of the reference formula
    xs, ws, bs, as_ = (z.clone().requires_grad_() for z in (x, w, b, a))
    graph_conv(xs, as_, ws, bs, diagonal_root=diagonal_root).square().sum().backward()
    xr, wr, br, ar = (z.clone().requires_grad_() for z in (x, w, b, a))
    yr = torch.einsum("oc,nctv->notv", wr[:, :, 0, 0], xr) + br.view(1, -1, 1, 1)
    torch.einsum("nkctv,kvw->nctw", yr.view(n, k, cout, t, v), ar).square().sum().backward()
    for got, want in ((xs, xr), (ws, wr), (bs, br)):
        torch.testing.assert_close(got.grad, want.grad)
    mask = (a != 0) if diagonal_root else torch.ones_like(a, dtype=torch.bool)
    torch.testing.assert_close(as_.grad[mask], ar.grad[mask])


def test_spatial_partition_root_is_diagonal(encoder):
    assert all(c.diagonal_root for c in encoder.conventions.values())


def test_batchnorm_sees_only_native_joints():
    """docs/method.md, "BatchNorm never sees padded joints": an NTU batch must not put padded joints into any BatchNorm statistics."""
    torch.manual_seed(0)
    enc = MultiSkeletonSTGCN(["ntu_kinect_25", "smplx_42"], dropout=0.0).train()
    seen: list[tuple[str, tuple[int, ...]]] = []
    expected_means: dict[str, torch.Tensor] = {}

    def hook(name):
        def fn(module, inputs, output):
            x = inputs[0]
            seen.append((name, tuple(x.shape)))
            dims = (0, 2) if x.dim() == 3 else (0, 2, 3)
            expected_means[name] = 0.1 * x.detach().mean(dim=dims)  # momentum 0.1 from running mean 0
        return fn

    for name, module in enc.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.register_forward_hook(hook(name))
    x = _x(25, n=4, t=16)
    smplx_bn = enc.conventions["smplx_42"].data_bn
    before = smplx_bn.running_mean.clone()
    enc(x, "ntu_kinect_25")
    names = [n for n, _ in seen]
    assert "conventions.ntu_kinect_25.data_bn" in names and not any("smplx" in n for n in names)
    for name, shape in seen:
        if name.startswith("blocks."):
            assert shape[-1] == 25, (name, shape)  # V = 25 in every block BatchNorm
        else:
            assert shape == (8, 75, 16)  # data_bn: (N*M, V*C, T) with V = 25
    modules = dict(enc.named_modules())
    for name, mean in expected_means.items():
        bn = modules[name]
        # running_mean is exactly the statistic of the V = 25 activations (tcn.3 folds the dropout scale
        # into its affine parameters, which does not change its input statistics)
        torch.testing.assert_close(bn.running_mean, mean, atol=1e-6, rtol=1e-5)
    assert torch.equal(smplx_bn.running_mean, before)


def test_data_bn_channel_order_is_joint_major():
    """data_bn channel v*C + c: scaling joint 3's y coordinate must move exactly running_mean[3*3 + 1]."""
    torch.manual_seed(0)
    enc = MultiSkeletonSTGCN(["ntu_kinect_25"]).train()
    x = torch.zeros(2, 3, 8, 25, 2)
    x[:, 1, :, 3, :] = 5.0
    enc(x, "ntu_kinect_25")
    rm = enc.conventions["ntu_kinect_25"].data_bn.running_mean
    assert float(rm[3 * 3 + 1]) == pytest.approx(0.5)
    assert torch.count_nonzero(rm) == 1


def test_axis_input_norm_matches_formula():
    """input_norm="axis": each coordinate axis standardised over (N*M, V, T), one (weight, bias) per axis."""
    torch.manual_seed(0)
    enc = MultiSkeletonSTGCN(["kinect_v1_20"], input_norm="axis").train()
    bn = enc.conventions["kinect_v1_20"].data_bn
    assert bn.weight.shape == bn.running_mean.shape == (3,)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([0.5, 2.0, 1.5]))
        bn.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 3, 6, 20, 2, generator=g, dtype=torch.float64) * torch.tensor([1.0, 3.0, 0.2]).view(1, 3, 1, 1, 1).double()
    h = x.permute(0, 4, 3, 1, 2).reshape(8, 20 * 3, 6)  # the data_bn layout (N*M, V*C, T)
    out = bn.double()(h).view(8, 20, 3, 6)
    per_axis = x.permute(1, 0, 2, 3, 4).reshape(3, -1)  # (C, N*T*V*M)
    mean, var = per_axis.mean(1), per_axis.var(1, unbiased=False)
    expected = (x - mean.view(1, 3, 1, 1, 1)) / torch.sqrt(var.view(1, 3, 1, 1, 1) + bn.eps)
    expected = expected * bn.weight.view(1, 3, 1, 1, 1) + bn.bias.view(1, 3, 1, 1, 1)
    torch.testing.assert_close(out, expected.permute(0, 4, 3, 1, 2).reshape(8, 20, 3, 6))
    torch.testing.assert_close(bn.running_mean, 0.1 * mean)
    # eval mode uses the running statistics, per axis, and the encoder runs end to end
    bn.eval()
    out_eval = bn(h).view(8, 20, 3, 6)
    ref = (h.view(8, 20, 3, 6) - bn.running_mean.view(1, 1, 3, 1)) / torch.sqrt(bn.running_var.view(1, 1, 3, 1) + bn.eps)
    torch.testing.assert_close(out_eval, ref * bn.weight.view(1, 1, 3, 1) + bn.bias.view(1, 1, 3, 1))
    assert enc.float().eval()(x.float(), "kinect_v1_20").shape == (4, 128)


def test_joint_input_norm_is_the_reference_and_unknown_is_rejected():
    from msclr.models.stgcn import INPUT_NORMS
    from msclr.pipeline import config

    assert INPUT_NORMS == config.INPUT_NORMS
    enc = MultiSkeletonSTGCN(["kinect_v1_20"])
    assert type(enc.conventions["kinect_v1_20"].data_bn) is nn.BatchNorm1d
    assert enc.conventions["kinect_v1_20"].data_bn.num_features == 60
    with pytest.raises(ValueError, match="input_norm"):
        MultiSkeletonSTGCN(["kinect_v1_20"], input_norm="joints")


# ----------------------------------------------------------------------------- EADM
def _eadm_manual(x, threshold=0.7, e_lambda=1e-4):
    """Literal transcription of docs/method.md, "EADM", with explicit loops over samples (float64)."""
    nm, c, t, v = x.shape
    att = torch.empty_like(x)
    for i in range(nm):
        for ch in range(c):
            f = x[i, ch]
            d = (f - f.mean()) ** 2
            y = d / (4 * (d.sum() / (t * v - 1) + e_lambda)) + 0.5
            att[i, ch] = 1 / (1 + torch.exp(-y))
    s = att.mean(dim=(1, 2))  # (NM, V)
    joint = (s < threshold).double()
    out = x * joint[:, None, None, :] * joint.numel() / joint.sum()
    element = (att < threshold).double()
    return out * element * element.numel() / element.sum()


def test_eadm_matches_formula():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, 5, 6, generator=g, dtype=torch.float64)
    x[:, :, :, 2] *= 6  # salient joint
    x[0, 1, 2, 3] = 9.0  # salient element
    expected = _eadm_manual(x)
    got = eadm(x)
    torch.testing.assert_close(got, expected)
    assert torch.all(got[:, :, :, 2] == 0)  # the salient joint is dropped
    assert float(simam_attention(x).min()) >= 1 / (1 + torch.exp(torch.tensor(-0.5))).item() - 1e-12


def test_eadm_guard_when_everything_is_dropped():
    x = torch.randn(2, 3, 4, 5)
    out = eadm(x, threshold=0.0)  # every attention value >= 0 -> everything dropped
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, x)  # an empty keep-mask leaves the input unchanged


def test_eadm_gradient_flows_through_kept_elements():
    x = torch.randn(2, 3, 4, 5, requires_grad=True)
    eadm(x).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


# ----------------------------------------------------------------------------- dropout
def test_byte_dropout_statistics_and_scale():
    torch.manual_seed(0)
    drop = Dropout(0.5).train()
    x = torch.ones(200_000)
    y = drop(x.clone())
    assert set(torch.unique(y).tolist()) == {0.0, 2.0}
    assert abs(float((y == 0).float().mean()) - 0.5) < 0.005
    quarter = Dropout(0.25).train()(torch.ones(200_000))
    assert abs(float((quarter == 0).float().mean()) - 0.25) < 0.005
    odd = Dropout(0.3).train()(torch.ones(50_000))  # not a multiple of 1/256: F.dropout
    assert abs(float((odd == 0).float().mean()) - 0.3) < 0.01
    assert torch.equal(Dropout(0.5).eval()(x), x)


@pytest.mark.parametrize("p", [0.5, 0.25])
def test_byte_dropout_keep_mask_is_the_complement_of_the_drop_rule(p):
    """The float keep-mask (what forward multiplies by) drops exactly the elements whose random byte is
    below 256 p (the top-bit shortcut for p = 0.5 included)."""
    drop = Dropout(p).train()
    x = torch.empty(3, 5, 7, 11)
    torch.manual_seed(3)
    dropped = drop._random_bytes(x) < int(256 * p)
    torch.manual_seed(3)
    keep = drop._keep_mask(x)
    assert keep.dtype == x.dtype
    assert torch.equal(keep, (~dropped).to(x.dtype))
    # forward and backward: y = x * keep / (1 - p), dy/dx = keep / (1 - p)
    xs = torch.randn(3, 5, 7, 11, requires_grad=True)
    torch.manual_seed(3)
    y = drop(xs.clone())
    y.sum().backward()
    torch.testing.assert_close(y, xs.detach() * keep / (1 - p))
    torch.testing.assert_close(xs.grad, keep / (1 - p))


def test_dropout_after_batch_norm_equals_dropout_of_batch_norm():
    torch.manual_seed(0)
    bn_a, bn_b = nn.BatchNorm2d(4), nn.BatchNorm2d(4)
    nn.init.normal_(bn_a.weight, 1.0, 0.3)
    nn.init.normal_(bn_a.bias, 0.0, 0.3)
    bn_b.load_state_dict(bn_a.state_dict())
    x = torch.randn(8, 4, 5, 6) * 3 + 1
    y = Dropout(0.5).train().after_batch_norm(bn_a, x)
    ref = bn_b(x)
    kept = y != 0
    assert 0.4 < float(kept.float().mean()) < 0.6
    torch.testing.assert_close(y[kept], 2 * ref[kept])
    torch.testing.assert_close(bn_a.running_mean, bn_b.running_mean)
    torch.testing.assert_close(bn_a.running_var, bn_b.running_var)
    assert int(bn_a.num_batches_tracked) == int(bn_b.num_batches_tracked) == 1
    bn_a.eval()
    bn_b.eval()
    torch.testing.assert_close(batch_norm(bn_a, x, 2.0), 2 * bn_b(x))


def test_all_parameters_receive_gradients():
    torch.manual_seed(0)
    enc = MultiSkeletonSTGCN(["ntu_kinect_25", "smplx_42"])
    z, zd = enc(_x(42), "smplx_42", drop=True)
    (z.sum() + zd.sum()).backward()
    used = [p for n, p in enc.named_parameters() if "ntu_kinect_25" not in n]
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in used)
    assert all(p.grad is None for n, p in enc.named_parameters() if "ntu_kinect_25" in n)
    assert float(enc.conventions["smplx_42"].edge_importance[5].grad.abs().sum()) > 0
