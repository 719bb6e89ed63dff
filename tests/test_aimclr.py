"""MS-AimCLR wrapper and its losses (msclr.models.aimclr, msclr.models.losses), against plain manual
references written with loops (lightly-style)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from msclr.models.aimclr import MSAimCLR, concat_all_gather, update_momentum
from msclr.models.losses import d3m_loss, info_nce, multi_positive_nce, nearest_neighbour_mask
from msclr.models.stgcn import MultiSkeletonSTGCN


# ----------------------------------------------------------------------------- manual references
def _log_softmax_row(row):
    mx = max(row)
    lse = mx + math.log(sum(math.exp(v - mx) for v in row))
    return [v - lse for v in row]


def _manual_ce0(logits):
    rows = logits.tolist()
    return sum(-_log_softmax_row(r)[0] for r in rows) / len(rows)


def _manual_d3m(logits, target):
    total = 0.0
    for r, tr in zip(logits.tolist(), target.tolist(), strict=True):
        p = [math.exp(v) for v in _log_softmax_row(tr)]
        total += -sum(pj * lj for pj, lj in zip(p, _log_softmax_row(r), strict=True))
    return total / logits.shape[0]


def _manual_multi_positive(logits, mask):
    total = 0.0
    for r, m in zip(logits.tolist(), mask.tolist(), strict=True):
        lp = _log_softmax_row(r)
        total += -sum(mj * lj for mj, lj in zip(m, lp, strict=True)) / sum(m)
    return total / logits.shape[0]


@pytest.mark.parametrize("batch, k, temperature", [(1, 4, 0.07), (3, 16, 0.2), (5, 33, 1.0)])
def test_losses_match_manual(batch, k, temperature):
    g = torch.Generator().manual_seed(batch * 100 + k)
    logits = torch.randn(batch, 1 + k, generator=g, dtype=torch.float64) / temperature
    target = torch.randn(batch, 1 + k, generator=g, dtype=torch.float64) / temperature
    mask = (torch.rand(batch, 1 + k, generator=g) < 0.2).double()
    mask[:, 0] = 1
    assert float(info_nce(logits)) == pytest.approx(_manual_ce0(logits), rel=1e-10)
    assert float(d3m_loss(logits, target)) == pytest.approx(_manual_d3m(logits, target), rel=1e-10)
    assert float(multi_positive_nce(logits, mask)) == pytest.approx(_manual_multi_positive(logits, mask), rel=1e-10)


def test_d3m_target_is_detached():
    logits = torch.randn(2, 5, requires_grad=True)
    target = torch.randn(2, 5, requires_grad=True)
    d3m_loss(logits, target).backward()
    assert logits.grad is not None and target.grad is None


def test_nearest_neighbour_mask():
    sim_a = torch.tensor([[0.1, 0.9, 0.2, 0.0], [0.5, 0.1, 0.1, 0.1]])
    sim_b = torch.tensor([[0.1, 0.9, 0.2, 0.0], [0.0, 0.1, 0.1, 0.7]])
    sim_c = torch.tensor([[0.8, 0.1, 0.2, 0.0], [0.0, 0.1, 0.1, 0.7]])
    mask = nearest_neighbour_mask([sim_a, sim_b, sim_c], topk=1)
    assert mask.tolist() == [[1, 1, 1, 0, 0], [1, 1, 0, 0, 1]]  # column 0 = the key, then the queue
    top2 = nearest_neighbour_mask([sim_a], topk=2)
    assert top2.tolist() == [[1, 0, 1, 1, 0], [1, 1, 1, 0, 0]] or top2.tolist() == [[1, 0, 1, 1, 0], [1, 1, 0, 1, 0]]


# ----------------------------------------------------------------------------- a tiny deterministic encoder
class TinyEncoder(nn.Module):
    """f(x) = W mean(x) + b; the 'EADM' branch halves the input (deterministic, no BatchNorm)."""

    def __init__(self, dim: int = 8) -> None:
        super().__init__()
        self.proj = nn.Linear(3, dim)
        self.register_buffer("calls", torch.zeros(1))

    def forward(self, x, skeleton, drop=False):
        f = x.mean(dim=(2, 3, 4))
        z = self.proj(f)
        return (z, self.proj(0.5 * f)) if drop else z


def _views(b=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, 3, 6, v, 2, generator=g) for v in (25, 25, 42)]


@pytest.mark.parametrize("mine", [False, True])
def test_forward_loss_matches_manual(mine):
    torch.manual_seed(0)
    model = MSAimCLR(lambda: TinyEncoder(8), dim=8, queue_size=12, temperature=0.1).train()
    x_e, x_q, x_k = _views()
    queue = model.queue.clone()
    with torch.no_grad():
        enc = model.encoder_q
        q = F.normalize(enc(x_q, "a"), dim=1).double()
        q_e, q_ed = (F.normalize(z, dim=1).double() for z in enc(x_e, "a", drop=True))
        k = F.normalize(enc(x_k, "b"), dim=1).double()  # k == q's weights at step 0
    qd = queue.double()

    def logits_of(v):
        rows = []
        for b in range(v.shape[0]):
            rows.append([float(v[b] @ k[b]) / 0.1] + [float(v[b] @ qd[:, j]) / 0.1 for j in range(12)])
        return torch.tensor(rows, dtype=torch.float64)

    lq, le, led = logits_of(q), logits_of(q_e), logits_of(q_ed)
    d3m = (_manual_d3m(le, lq) + _manual_d3m(led, lq)) / 2
    if mine:
        mask = torch.zeros(4, 13, dtype=torch.float64)
        mask[:, 0] = 1
        for v in (q, q_e, q_ed):
            for b in range(4):
                mask[b, 1 + int(torch.argmax(v[b] @ qd))] = 1
        main = _manual_multi_positive(lq, mask)
    else:
        main = _manual_ce0(lq)
    with torch.no_grad():
        out = model(x_e, x_q, x_k, "a", "b", mine=mine)
    assert float(out["loss"]) == pytest.approx(main + d3m, rel=1e-5)
    assert float(out["loss_d3m"]) == pytest.approx(d3m, rel=1e-5)
    assert float(out["loss_nn" if mine else "loss_ce"]) == pytest.approx(main, rel=1e-5)
    torch.testing.assert_close(out["logits"].double(), lq, atol=1e-4, rtol=1e-5)
    if mine:
        assert torch.equal(out["mask"].double(), mask)
    # the keys went into the queue at columns [0, 4)
    torch.testing.assert_close(model.queue[:, :4].T.double(), k, atol=1e-6, rtol=0)
    assert int(model.queue_ptr) == 4


# ----------------------------------------------------------------------------- state handling
def _tiny_stgcn(dropout=0.5):
    return MultiSkeletonSTGCN(["ntu_kinect_25", "smplx_42"], hidden_channels=4, hidden_dim=8, out_dim=4,
                              dropout=dropout)


def test_key_encoder_equals_query_at_step_zero_and_is_frozen():
    torch.manual_seed(0)
    model = MSAimCLR(_tiny_stgcn, dim=4, queue_size=8)
    sq, sk = model.encoder_q.state_dict(), model.encoder_k.state_dict()
    assert sq.keys() == sk.keys() and all(torch.equal(sq[n], sk[n]) for n in sq)
    assert all(not p.requires_grad for p in model.encoder_k.parameters())
    assert all(p.requires_grad for p in model.encoder_q.parameters())
    # queue: (dim, K), unit columns
    assert model.queue.shape == (4, 8)
    torch.testing.assert_close(model.queue.norm(dim=0), torch.ones(8))


def test_momentum_update_math_parameters_only():
    torch.manual_seed(0)
    model = MSAimCLR(_tiny_stgcn, dim=4, queue_size=8, momentum=0.9)
    with torch.no_grad():
        for p in model.encoder_q.parameters():
            p.add_(torch.randn_like(p))
        model.encoder_k.conventions["smplx_42"].data_bn.running_mean.fill_(3.0)
    k_before = [p.detach().clone() for p in model.encoder_k.parameters()]
    q_now = [p.detach().clone() for p in model.encoder_q.parameters()]
    model._momentum_update_key_encoder()
    for pk, k0, q0 in zip(model.encoder_k.parameters(), k_before, q_now, strict=True):
        torch.testing.assert_close(pk, 0.9 * k0 + 0.1 * q0)
    # buffers are not averaged (reference behaviour)
    assert torch.all(model.encoder_k.conventions["smplx_42"].data_bn.running_mean == 3.0)
    with pytest.raises(ValueError, match="different parameter lists"):
        update_momentum(nn.Linear(2, 2), nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2)), 0.5)


def test_enqueue_wraps_and_checks_divisibility():
    model = MSAimCLR(lambda: TinyEncoder(4), dim=4, queue_size=8)
    keys = [F.normalize(torch.randn(4, 4), dim=1) for _ in range(3)]
    model._dequeue_and_enqueue(keys[0])
    assert int(model.queue_ptr) == 4
    model._dequeue_and_enqueue(keys[1])
    assert int(model.queue_ptr) == 0
    model._dequeue_and_enqueue(keys[2])  # wraps: overwrites the oldest keys
    assert torch.equal(model.queue[:, :4], keys[2].T) and torch.equal(model.queue[:, 4:], keys[1].T)
    with pytest.raises(ValueError, match="multiple of the"):
        model._dequeue_and_enqueue(torch.randn(3, 4))


def test_no_gradient_into_key_encoder_and_eval_has_no_side_effects():
    torch.manual_seed(0)
    model = MSAimCLR(_tiny_stgcn, dim=4, queue_size=16).train()
    x_e, x_q = _views(b=4)[:2]
    x_k = torch.randn(4, 3, 6, 42, 2)
    out = model(x_e, x_q, x_k, "ntu_kinect_25", "smplx_42")
    out["loss"].backward()
    assert all(p.grad is None for p in model.encoder_k.parameters())
    assert all(p.grad is not None for n, p in model.encoder_q.named_parameters() if "smplx_42" not in n)
    assert not model.queue.requires_grad
    model.eval()
    state = copy.deepcopy(model.state_dict())
    model(x_e, x_q, x_k, "ntu_kinect_25", "smplx_42")
    after = model.state_dict()
    assert all(torch.equal(state[n], after[n]) for n in state)


def test_a_few_steps_reduce_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    def factory():
        return MultiSkeletonSTGCN(["ntu_kinect_25", "smplx_42"], hidden_channels=4, hidden_dim=32, out_dim=16,
                                  dropout=0.0)

    # momentum 1: the key encoder stays put, so the objective is a fixed function of encoder_q
    model = MSAimCLR(factory, dim=16, queue_size=32, momentum=1.0).train()
    g = torch.Generator().manual_seed(1)
    x_q = torch.randn(8, 3, 12, 25, 2, generator=g)
    x_e = x_q + 0.3 * torch.randn(x_q.shape, generator=g)
    x_k = torch.randn(8, 3, 12, 42, 2, generator=g)
    frozen_queue = model.queue.clone()

    def loss_now():
        state = copy.deepcopy(model.state_dict())
        with torch.no_grad():
            value = float(model(x_e, x_q, x_k, "ntu_kinect_25", "smplx_42")["loss"])
        model.load_state_dict(state)
        return value

    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    before = loss_now()
    for _ in range(6):
        loss = model(x_e, x_q, x_k, "ntu_kinect_25", "smplx_42")["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():  # same negatives throughout: only encoder_q changes
            model.queue.copy_(frozen_queue)
            model.queue_ptr.zero_()
    after = loss_now()
    assert after < 0.6 * before, (before, after)


def test_shuffle_bn_on_a_single_rank_group(tmp_path):
    dist = torch.distributed
    if not dist.is_available() or dist.is_initialized():
        pytest.skip("torch.distributed unavailable or already initialised")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        plain = MSAimCLR(lambda: _tiny_stgcn(dropout=0.0), dim=4, queue_size=16).train()
        shuffled = copy.deepcopy(plain)
        shuffled.shuffle_bn = True
        x_e, x_q = _views(b=4)[:2]
        x_k = torch.randn(4, 3, 6, 42, 2)
        assert torch.equal(concat_all_gather(x_k), x_k)
        a = plain(x_e, x_q, x_k, "ntu_kinect_25", "smplx_42")
        b = shuffled(x_e, x_q, x_k, "ntu_kinect_25", "smplx_42")
        # BatchNorm statistics do not depend on the order, so the un-shuffled keys are the same keys
        torch.testing.assert_close(b["logits"], a["logits"], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(shuffled.queue, plain.queue, atol=1e-6, rtol=1e-5)
    finally:
        dist.destroy_process_group()
