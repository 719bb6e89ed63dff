"""Reference checkpoint conversion (msclr.models.convert).

The acceptance test builds state dicts with the reference's names and shapes (AimCLR ``st_gcn.Model`` and the
MS-CLR fork's ``FlexModel``, padded to V_max, inside an AimCLR wrapper), converts and loads them, and checks the
encoder's output against a plain re-implementation of the reference forward written here from the formulas
(docs/method.md, "Encoder" and "Reference checkpoints": padding to V_max after data_bn, einsum gcn, explicit temporal-conv loop), in float64.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from msclr.errors import CheckpointError
from msclr.files import load_reference_encoder, load_state_file
from msclr.models.aimclr import MSAimCLR
from msclr.models.convert import convert_aimclr_state_dict, convert_encoder_state_dict
from msclr.models.graph import skeleton_partition
from msclr.models.stgcn import MultiSkeletonSTGCN

# (in, out, stride, residual) of the reference blocks with hidden_channels 16, hidden_dim 256
WIDTHS = [(3, 16, 1, "none"), (16, 16, 1, "id"), (16, 16, 1, "id"), (16, 16, 1, "id"), (16, 32, 2, "conv"),
          (32, 32, 1, "id"), (32, 32, 1, "id"), (32, 64, 2, "conv"), (64, 64, 1, "id"), (64, 256, 1, "conv")]  # fmt: skip
EPS = 1e-5


def _conv(g, cout, cin, kt=1):
    return torch.randn(cout, cin, kt, 1, generator=g) / math.sqrt(cin * kt), 0.1 * torch.randn(cout, generator=g)


def _bn(g, c, prefix, sd):
    sd[prefix + "weight"] = 0.5 + torch.rand(c, generator=g)
    sd[prefix + "bias"] = 0.1 * torch.randn(c, generator=g)
    sd[prefix + "running_mean"] = 0.1 * torch.randn(c, generator=g)
    sd[prefix + "running_var"] = 0.5 + torch.rand(c, generator=g)
    sd[prefix + "num_batches_tracked"] = torch.tensor(7)


def shared_reference_params(g, sd, out_dim=128, mlp=True):
    """Blocks and head with the reference names."""
    for i, (cin, cout, _stride, res) in enumerate(WIDTHS):
        p = f"st_gcn_networks.{i}."
        sd[p + "gcn.conv.weight"], sd[p + "gcn.conv.bias"] = _conv(g, 3 * cout, cin)
        _bn(g, cout, p + "tcn.0.", sd)
        sd[p + "tcn.2.weight"], sd[p + "tcn.2.bias"] = _conv(g, cout, cout, 9)
        _bn(g, cout, p + "tcn.3.", sd)
        if res == "conv":
            sd[p + "residual.0.weight"], sd[p + "residual.0.bias"] = _conv(g, cout, cin)
            _bn(g, cout, p + "residual.1.", sd)
    if mlp:
        sd["fc.0.weight"] = torch.randn(256, 256, generator=g) / 16
        sd["fc.0.bias"] = 0.1 * torch.randn(256, generator=g)
        sd["fc.2.weight"] = torch.randn(out_dim, 256, generator=g) / 16
        sd["fc.2.bias"] = 0.1 * torch.randn(out_dim, generator=g)
    else:
        sd["fc.weight"] = torch.randn(out_dim, 256, generator=g) / 16
        sd["fc.bias"] = 0.1 * torch.randn(out_dim, generator=g)


def flex_state_dict(skeletons=("ntu-rgb+d", "smplx_42"), seed=0):
    """A FlexModel state dict: per-skeleton A / data_bn / edge importance padded to V_max."""
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = OrderedDict()
    parts = {s: torch.from_numpy(skeleton_partition(s)) for s in skeletons}
    v_max = max(a.shape[-1] for a in parts.values())
    for s, a in parts.items():
        v = a.shape[-1]
        sd[f"A_{s}"] = F.pad(a, (0, v_max - v, 0, v_max - v))
        _bn(g, 3 * v, f"data_bn.{s}.", sd)
        for i in range(10):
            imp = 0.5 + torch.rand(3, v_max, v_max, generator=g)  # padded part non-zero: must be ignored
            sd[f"edge_importance.{s}.{i}"] = imp
    shared_reference_params(g, sd)
    return sd


def aimclr_single_state_dict(seed=1, mlp=True, out_dim=128):
    """An AimCLR ``st_gcn.Model`` state dict (NTU, V = 25)."""
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = OrderedDict()
    sd["A"] = torch.from_numpy(skeleton_partition("ntu-rgb+d"))
    _bn(g, 75, "data_bn.", sd)
    for i in range(10):
        sd[f"edge_importance.{i}"] = 0.5 + torch.rand(3, 25, 25, generator=g)
    shared_reference_params(g, sd, out_dim=out_dim, mlp=mlp)
    return sd


# ----------------------------------------------------------------------------- plain reference forward
def reference_forward(sd, x, *, a_key, bn_prefix, imp_prefix, v_max, mlp=True):
    """The reference encoder in eval mode, float64, from the formulas (docs/method.md, "Encoder")."""
    sd = {k: v.double() for k, v in sd.items()}
    n, c, t, v, m = x.shape
    x = x.double()

    def bn(h, prefix):
        shape = [1, -1] + [1] * (h.dim() - 2)
        w, b = sd[prefix + "weight"].view(shape), sd[prefix + "bias"].view(shape)
        rm, rv = sd[prefix + "running_mean"].view(shape), sd[prefix + "running_var"].view(shape)
        return (h - rm) / torch.sqrt(rv + EPS) * w + b

    h = x.permute(0, 4, 3, 1, 2).reshape(n * m, v * c, t)  # channel v*C + c
    h = bn(h, bn_prefix).view(n * m, v, c, t).permute(0, 2, 3, 1)  # (NM, C, T, V)
    h = F.pad(h, (0, v_max - v))  # the reference pads after data_bn
    a = sd[a_key]
    for i, (_cin, cout, stride, res) in enumerate(WIDTHS):
        p = f"st_gcn_networks.{i}."
        adj = a * sd[f"{imp_prefix}{i}"]
        y = torch.einsum("oc,nctv->notv", sd[p + "gcn.conv.weight"][:, :, 0, 0], h)
        y = y + sd[p + "gcn.conv.bias"].view(1, -1, 1, 1)
        nm, _, tt, vv = y.shape
        y = torch.einsum("nkctv,kvw->nctw", y.view(nm, 3, cout, tt, vv), adj)
        y = torch.relu(bn(y, p + "tcn.0."))
        t_out = (tt + 8 - 9) // stride + 1
        z = torch.zeros(nm, cout, t_out, vv, dtype=torch.float64)
        w = sd[p + "tcn.2.weight"]
        for to in range(t_out):
            for j in range(9):
                ti = to * stride + j - 4
                if 0 <= ti < tt:
                    z[:, :, to] += torch.einsum("oc,ncv->nov", w[:, :, j, 0], y[:, :, ti])
        z = bn(z + sd[p + "tcn.2.bias"].view(1, -1, 1, 1), p + "tcn.3.")
        if res == "none":
            r = 0
        elif res == "id":
            r = h
        else:
            r = torch.einsum("oc,nctv->notv", sd[p + "residual.0.weight"][:, :, 0, 0], h[:, :, ::stride])
            r = bn(r + sd[p + "residual.0.bias"].view(1, -1, 1, 1), p + "residual.1.")
        h = torch.relu(z + r)
    h = h[..., :v]  # the reference removes the padding before pooling
    f = h.mean(dim=(2, 3)).view(n, m, -1).mean(dim=1)
    if mlp:
        f = torch.relu(f @ sd["fc.0.weight"].T + sd["fc.0.bias"])
        return f @ sd["fc.2.weight"].T + sd["fc.2.bias"]
    return f @ sd["fc.weight"].T + sd["fc.bias"]


def _input(v, n=2, t=12, m=2, seed=3):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, t, v, m, generator=g)
    x[0, ..., 1] = 0  # an absent second person
    return x


# ----------------------------------------------------------------------------- acceptance
def test_flexmodel_checkpoint_matches_reference_forward():
    flex = flex_state_dict()
    wrapped = OrderedDict()
    for k, val in flex.items():
        wrapped["encoder_q." + k] = val
        wrapped["encoder_k." + k] = val + 1.0  # must not be picked
    wrapped["queue"] = torch.randn(128, 64)
    wrapped["queue_ptr"] = torch.zeros(1, dtype=torch.long)

    enc = MultiSkeletonSTGCN(["ntu_kinect_25", "smplx_42"])
    enc.load_state_dict(convert_encoder_state_dict(wrapped, enc))
    enc.eval()
    for ref_name, ours, v in (("ntu-rgb+d", "ntu_kinect_25", 25), ("smplx_42", "smplx_42", 42)):
        x = _input(v)
        expected = reference_forward(flex, x, a_key=f"A_{ref_name}", bn_prefix=f"data_bn.{ref_name}.",
                                     imp_prefix=f"edge_importance.{ref_name}.", v_max=42)
        with torch.no_grad():
            got = enc(x, ours)
        assert got.shape == (2, 128)
        assert expected.abs().max() > 1e-2  # a non-trivial output
        torch.testing.assert_close(got.double(), expected, atol=1e-5, rtol=0)


def test_aimclr_single_skeleton_checkpoint_matches_reference_forward():
    sd = aimclr_single_state_dict()
    enc = MultiSkeletonSTGCN(["ntu_kinect_25"])
    enc.load_state_dict(convert_encoder_state_dict({"module." + k: v for k, v in sd.items()}, enc))
    enc.eval()
    x = _input(25, seed=5)
    expected = reference_forward(sd, x, a_key="A", bn_prefix="data_bn.", imp_prefix="edge_importance.", v_max=25)
    with torch.no_grad():
        got = enc(x, "ntu-rgb+d")
    torch.testing.assert_close(got.double(), expected, atol=1e-5, rtol=0)


def test_linear_head_and_head_dropped():
    sd = aimclr_single_state_dict(mlp=False, out_dim=60)
    enc = MultiSkeletonSTGCN(["ntu_kinect_25"], head="linear", out_dim=60)
    enc.load_state_dict(convert_encoder_state_dict(sd, enc))
    assert torch.equal(enc.fc.weight, sd["fc.weight"])
    # a features-only encoder takes everything but the head
    feats = MultiSkeletonSTGCN(["ntu_kinect_25"], head=None)
    feats.load_state_dict(convert_encoder_state_dict(sd, feats, head=False))
    enc.eval()
    feats.eval()
    x = _input(25)
    with torch.no_grad():
        torch.testing.assert_close(feats(x, "ntu_kinect_25"), enc.features(x, "ntu_kinect_25"))


def test_edge_importance_sliced_and_data_bn_renamed():
    flex = flex_state_dict()
    enc = MultiSkeletonSTGCN(["ntu_kinect_25", "smplx_42"])
    out = convert_encoder_state_dict(flex, enc)
    assert torch.equal(out["conventions.ntu_kinect_25.edge_importance.3"], flex["edge_importance.ntu-rgb+d.3"][:, :25, :25])
    assert torch.equal(out["conventions.smplx_42.data_bn.running_var"], flex["data_bn.smplx_42.running_var"])
    assert torch.equal(out["blocks.9.gcn.weight"], flex["st_gcn_networks.9.gcn.conv.weight"])
    assert torch.equal(out["blocks.4.residual.1.running_mean"], flex["st_gcn_networks.4.residual.1.running_mean"])


# ----------------------------------------------------------------------------- failure paths
def test_missing_and_unexpected_keys_are_listed():
    flex = flex_state_dict()
    del flex["st_gcn_networks.3.tcn.2.weight"]
    flex["st_gcn_networks.3.tcn.9.weight"] = torch.zeros(1)
    enc = MultiSkeletonSTGCN(["ntu_kinect_25", "smplx_42"])
    with pytest.raises(CheckpointError) as err:
        convert_encoder_state_dict(flex, enc)
    assert "blocks.3.tcn.2.weight" in str(err.value) and "missing" in str(err.value)
    assert "blocks.3.tcn.9.weight" in str(err.value) and "unexpected" in str(err.value)


def test_extra_skeleton_needs_opt_in():
    flex = flex_state_dict()
    enc = MultiSkeletonSTGCN(["ntu_kinect_25"])
    with pytest.raises(CheckpointError, match="smplx_42"):
        convert_encoder_state_dict(flex, enc)
    enc.load_state_dict(convert_encoder_state_dict(flex, enc, ignore_extra_skeletons=True))
    assert torch.equal(enc.conventions["ntu_kinect_25"].edge_importance[0], flex["edge_importance.ntu-rgb+d.0"][:, :25, :25])


def test_missing_skeleton_in_checkpoint_is_an_error():
    flex = flex_state_dict(skeletons=("ntu-rgb+d",))
    enc = MultiSkeletonSTGCN(["ntu_kinect_25", "smplx_42"])
    with pytest.raises(CheckpointError, match=r"conventions\.smplx_42\.data_bn\.weight"):
        convert_encoder_state_dict(flex, enc)


def test_foreign_graph_and_wrong_width_are_refused():
    flex = flex_state_dict()
    flex["A_smplx_42"] = flex["A_smplx_42"].clone()
    flex["A_smplx_42"][1, 0, 1] += 0.5
    enc = MultiSkeletonSTGCN(["ntu_kinect_25", "smplx_42"])
    with pytest.raises(CheckpointError, match="graph differs"):
        convert_encoder_state_dict(flex, enc)
    narrow = MultiSkeletonSTGCN(["ntu_kinect_25", "smplx_42"], hidden_channels=8)
    with pytest.raises(CheckpointError, match="shape"):
        convert_encoder_state_dict(flex_state_dict(), narrow)
    per_axis = MultiSkeletonSTGCN(["ntu_kinect_25", "smplx_42"], input_norm="axis")
    with pytest.raises(CheckpointError, match="input_norm='joint'"):
        convert_encoder_state_dict(flex_state_dict(), per_axis)


class _Evil:
    """A pickle payload with an observable side effect: unpickling it calls ``Path(marker).touch()``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_file_loading_is_weights_only(tmp_path):
    sd = aimclr_single_state_dict()
    good = tmp_path / "good.pt"
    torch.save({"state_dict": sd, "epoch": 300}, good)
    enc = load_reference_encoder(good, MultiSkeletonSTGCN(["ntu_kinect_25"]))
    assert torch.equal(enc.blocks[0].gcn.weight, sd["st_gcn_networks.0.gcn.conv.weight"])
    evil, marker = tmp_path / "evil.pt", tmp_path / "payload-ran"
    torch.save({"state_dict": sd, "payload": _Evil(marker)}, evil)
    with pytest.raises(CheckpointError, match="weights-only"):
        load_state_file(evil)
    assert not marker.exists(), "load_state_file ran the refused checkpoint's pickle payload"
    with pytest.raises(CheckpointError, match="weights-only"):
        load_reference_encoder(evil, MultiSkeletonSTGCN(["ntu_kinect_25"]))
    assert not marker.exists(), "load_reference_encoder ran the refused checkpoint's pickle payload"
    # control: the payload does run when the file is unpickled unsafely, so the checks above can fail
    torch.load(evil, weights_only=False)
    assert marker.exists()
    with pytest.raises(CheckpointError, match="does not exist"):
        load_state_file(tmp_path / "missing.pt")


def test_whole_aimclr_checkpoint_into_msaimclr():
    flex = flex_state_dict()
    state = OrderedDict()
    for k, val in flex.items():
        state["encoder_q." + k] = val
        state["encoder_k." + k] = val * 0.5 if k.startswith("st_gcn_networks.") and val.is_floating_point() else val
    state["queue"] = F.normalize(torch.randn(128, 256), dim=0)
    state["queue_ptr"] = torch.tensor([128])
    model = MSAimCLR(lambda: MultiSkeletonSTGCN(["ntu-rgb+d", "smplx_42"]), queue_size=256)
    model.load_state_dict(convert_aimclr_state_dict(state, model))
    assert torch.equal(model.queue, state["queue"])
    assert int(model.queue_ptr) == 128
    torch.testing.assert_close(model.encoder_k.blocks[2].gcn.weight, flex["st_gcn_networks.2.gcn.conv.weight"] * 0.5)
    torch.testing.assert_close(model.encoder_q.blocks[2].gcn.weight, flex["st_gcn_networks.2.gcn.conv.weight"])
