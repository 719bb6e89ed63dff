"""Throughput of one whole MS-AimCLR pretraining step (run by hand; prints figures, asserts nothing).

A step = the three views (extreme + normal augmentation of the query convention, normal of the key
convention, ``msclr.models.augment``), the stream (``msclr.models.streams``), the three encoder passes
(query, query extreme with EADM, key under no_grad with the momentum update), the loss, backward, the SGD
step (momentum 0.9, weight decay 1e-4) and the enqueue.  Inputs are random poses (metres; half of the
clips have an absent second person) of the two conventions at batch 128, T = 50, M = 2.  The (query, key)
pairs cycle with the cross pairs first: q -> k and k -> q together cost exactly the average of the four
uniformly random pairs of the reference (each convention once as query, once as key), so 2 steps suffice.

    python bench/train_step.py                      # msclr, CPU, 2 threads, 2 timed steps
    python bench/train_step.py --impl reference     # reference-like encoder on the same machine
    python bench/train_step.py --device cuda --amp bf16 [--compile]

``--impl reference`` swaps in an encoder that computes the way the reference's FlexModel does (every batch
zero-padded to V_max = 42 after ``data_bn``, padded adjacency / edge importance, the gcn as 1x1 conv to 3·out
channels then ``einsum('nkctv,kvw->nctw')``, ``nn.Dropout``) with the same widths; everything else
(augmentations, loss, optimiser) is shared, so the ratio isolates the encoder.  The reference's CPU figure
on a 2-core machine is 3.4 samples/s; the target is >= 2x that (6.8 samples/s).

Other processes on a shared machine make wall-clock figures noisy; the bench therefore also prints the
process CPU time and "samples per CPU-second" (stable under contention; with 1 thread it is the throughput
the same code would reach on an idle core).

On Linux the bench calls glibc's ``mallopt`` through :func:`msclr.pipeline.training.cpu_tuning.tune_malloc`, as
``msclr train`` does on CPU (``--no-malloc-tuning`` to skip), so that large blocks come from
the heap and the heap is never trimmed: by default every activation above glibc's 32 MiB mmap threshold is
freshly mmapped for each op, unmapped when freed, and faulted in again page by page (slow under
virtualisation: a 36 MB ``x * y`` took 43 ms instead of 12 ms).  Measured at batch 64, 1 thread: default
3.65 samples per CPU-second (system time 10.2 s, 4.0 M page faults), with these settings 4.52 (3.9 s,
1.4 M faults).  Transparent huge pages (``GLIBC_TUNABLES=glibc.malloc.hugetlb=1``) on top made it worse
(3.16, system time 16 s, page compaction).  ``msclr train`` and ``msclr demo`` make the same two calls for CPU runs.
"""

from __future__ import annotations

import argparse
import os
import time


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--frames", type=int, default=50)
    p.add_argument("--persons", type=int, default=2)
    p.add_argument("--skeletons", nargs="+", default=["ntu_kinect_25", "smplx_42"])
    p.add_argument("--stream", default="joint", choices=["joint", "motion", "bone"])
    p.add_argument("--steps", type=int, default=4,
                   help="timed steps; pairs cycle with the cross pairs first: 2 steps of 2 conventions "
                        "(q -> k and k -> q) average exactly like the 4 uniformly random pairs, 4 cover every pair")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--amp", default="none", choices=["none", "bf16", "fp16"])
    p.add_argument("--compile", action="store_true", help="torch.compile the encoders")
    p.add_argument("--impl", default="both", choices=["both", "msclr", "reference"],
                   help="encoder(s) to time; 'both' runs the reference-like one then msclr's in one process")
    p.add_argument("--quick-warmup", action="store_true", help="warm up at batch 8 instead of the full batch")
    p.add_argument("--mine", action="store_true", help="nearest-neighbour mining epoch (topk 1)")
    p.add_argument("--queue", type=int, default=32768)
    p.add_argument("--no-malloc-tuning", action="store_true", help="keep glibc's default malloc behaviour")
    p.add_argument("--profile", action="store_true", help="profile one extra step, print the top ops")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


# ----------------------------------------------------------------------------- reference-like encoder
def reference_encoder(skeletons, hidden_channels=16, hidden_dim=256, out_dim=128, dropout=0.5):
    """An encoder that computes like the reference's FlexModel (padding to V_max, einsum gcn, nn.Dropout)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    from msclr.models.graph import skeleton_partition
    from msclr.models.stgcn import block_table
    from msclr.skeletons import get_skeleton

    class Block(nn.Module):
        def __init__(self, cin, cout, stride, kind, p):
            super().__init__()
            self.k, self.kind = 3, kind
            self.gcn = nn.Conv2d(cin, 3 * cout, 1)
            self.tcn = nn.Sequential(nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                                     nn.Conv2d(cout, cout, (9, 1), (stride, 1), (4, 0)), nn.BatchNorm2d(cout),
                                     nn.Dropout(p, inplace=True))
            self.residual = (nn.Sequential(nn.Conv2d(cin, cout, 1, (stride, 1)), nn.BatchNorm2d(cout))
                             if kind == "conv" else None)

        def forward(self, x, a):
            res = 0 if self.kind == "none" else (x if self.kind == "identity" else self.residual(x))
            y = self.gcn(x)
            n, kc, t, v = y.shape
            y = torch.einsum("nkctv,kvw->nctw", y.view(n, self.k, kc // self.k, t, v), a).contiguous()
            return F.relu(self.tcn(y) + res, inplace=True)

    class FlexLike(nn.Module):
        def __init__(self):
            super().__init__()
            sks = [get_skeleton(s) for s in skeletons]
            self.v = {s.name: s.num_joints for s in sks}
            self.v_max = max(self.v.values())
            self.data_bn = nn.ModuleDict({s.name: nn.BatchNorm1d(3 * s.num_joints) for s in sks})
            self.importance = nn.ModuleDict()
            for s in sks:
                a = torch.from_numpy(skeleton_partition(s))
                pad = self.v_max - s.num_joints
                self.register_buffer(f"A_{s.name}", F.pad(a, (0, pad, 0, pad)))
                ones = F.pad(torch.ones_like(a), (0, pad, 0, pad))
                self.importance[s.name] = nn.ParameterList([nn.Parameter(ones.clone()) for _ in range(10)])
            self.blocks = nn.ModuleList(Block(ci, co, st, kd, 0.0 if i == 0 else dropout)
                                        for i, (ci, co, st, kd) in enumerate(block_table(3, hidden_channels, hidden_dim)))
            self.fc = nn.Sequential(nn.Linear(hidden_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, out_dim))

        def forward(self, x, skeleton, drop=False):
            from msclr.models.eadm import eadm

            n, c, t, v, m = x.shape
            h = x.permute(0, 4, 3, 1, 2).contiguous().view(n * m, v * c, t)
            h = self.data_bn[skeleton](h).view(n, m, v, c, t).permute(0, 1, 3, 4, 2).contiguous().view(n * m, c, t, v)
            h = F.pad(h, (0, self.v_max - v))
            a = getattr(self, f"A_{skeleton}")
            for block, imp in zip(self.blocks, self.importance[skeleton], strict=True):
                h = block(h, a * imp)
            h = h[..., :v]

            def head(f):
                return self.fc(F.avg_pool2d(f, f.shape[2:]).view(n, m, -1).mean(dim=1))

            return (head(h), head(eadm(h))) if drop else head(h)

    return FlexLike()


# ----------------------------------------------------------------------------- bench
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from msclr.pipeline.training.cpu_tuning import tune_malloc

    malloc = "unchanged" if args.no_malloc_tuning or args.device != "cpu" else tune_malloc()

    import torch

    from msclr.skeletons import get_skeleton

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    skeletons = [get_skeleton(s) for s in args.skeletons]
    names = [s.name for s in skeletons]

    load0 = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    impls = ["reference", "msclr"] if args.impl == "both" else [args.impl]
    print(f"msclr train-step bench: impl={'+'.join(impls)} device={device} threads={torch.get_num_threads()} "
          f"amp={args.amp} compile={args.compile} batch={args.batch} T={args.frames} M={args.persons} "
          f"skeletons={names} stream={args.stream} mine={args.mine} queue={args.queue} "
          f"malloc: {malloc}")
    print(f"started {time.strftime('%Y-%m-%d %H:%M:%S')}, load average {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f} "
          f"on {os.cpu_count()} CPUs (other processes share them: figures are noisy)")
    results = {impl: run_impl(impl, args, skeletons, device) for impl in impls}
    load1 = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3

    print(f"\nsummary (batch {args.batch}, {args.steps} timed steps each, load average at end {load1[0]:.2f}):")
    print(f"{'impl':<10} {'samples/s':>10} {'per CPU-s':>10} {'cores busy':>11} {'vs 3.4 (ref. figure)':>21}")
    for impl, r in results.items():
        print(f"{impl:<10} {r['rate']:>10.2f} {r['per_cpu_s']:>10.2f} {r['cores']:>11.2f} {r['rate'] / 3.4:>20.2f}x")
    if len(results) == 2:
        ref, ours = results["reference"], results["msclr"]
        print(f"msclr / reference-like, same run: {ours['rate'] / ref['rate']:.2f}x wall clock, "
              f"{ours['per_cpu_s'] / ref['per_cpu_s']:.2f}x per CPU-second")
    print("target: msclr >= 2x the reference's 3.4 samples/s = 6.8 samples/s (2-core CPU)")


def run_impl(impl: str, args: argparse.Namespace, skeletons: list, device) -> dict[str, float]:
    """Build MS-AimCLR with ``impl``'s encoder, warm up, time ``args.steps`` steps; returns the figures."""
    import torch

    from msclr.models.aimclr import MSAimCLR
    from msclr.models.augment import extreme_augment, normal_augment
    from msclr.models.stgcn import MultiSkeletonSTGCN
    from msclr.models.streams import to_stream

    torch.manual_seed(args.seed)
    names = [s.name for s in skeletons]
    if impl == "msclr":
        def factory():
            return MultiSkeletonSTGCN(skeletons)
    else:
        def factory():
            return reference_encoder(names)
    model = MSAimCLR(factory, queue_size=args.queue).to(device).train()
    if args.compile:
        model.encoder_q = torch.compile(model.encoder_q)
        model.encoder_k = torch.compile(model.encoder_k)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-4)
    gen = torch.Generator(device="cpu").manual_seed(args.seed)

    def clips(skeleton, batch):
        x = 0.3 * torch.randn(batch, 3, args.frames, skeleton.num_joints, args.persons, generator=gen)
        if args.persons > 1:
            x[: batch // 2, ..., 1:] = 0  # half the clips: second person absent
        return x.to(device)

    data = {s.name: clips(s, args.batch) for s in skeletons}
    by_name = {s.name: s for s in skeletons}
    # cross pairs first: their mean cost equals the mean over all pairs (each convention once as q, once as k)
    pairs = [(q, k) for q in names for k in names if q != k] + [(q, q) for q in names]
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.amp)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def step(q, k, batch=None, timings=None):
        t0 = time.perf_counter()
        x_q, x_k = data[q], data[k]
        if batch is not None:
            x_q, x_k = x_q[:batch], x_k[:batch]
        sq, sk = by_name[q], by_name[k]
        view_e = to_stream(extreme_augment(x_q, sq), args.stream, sq)
        view_q = to_stream(normal_augment(x_q), args.stream, sq)
        view_k = to_stream(normal_augment(x_k), args.stream, sk)
        sync()
        t1 = time.perf_counter()
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            out = model(view_e, view_q, view_k, q, k, mine=args.mine)
        loss = out["loss"]
        sync()
        t2 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        sync()
        t3 = time.perf_counter()
        optimizer.step()
        sync()
        t4 = time.perf_counter()
        if timings is not None:
            timings.append((t1 - t0, t2 - t1, t3 - t2, t4 - t3))
        return float(loss.detach())

    # Warm-up: one full-batch step per pair, so that primitives are created, compiled code exists and the
    # allocator's heap has reached its steady-state size (the first full-batch steps fault their pages in
    # and were up to 1.7x slower than later ones); --quick-warmup uses batch 8 instead.
    t = time.perf_counter()
    warm = min(args.batch, 8) if args.quick_warmup and not args.compile else args.batch
    for q, k in pairs:
        step(q, k, batch=warm)
    print(f"[{impl}] warm-up {time.perf_counter() - t:.1f} s ({len(pairs)} steps at batch {warm})")

    timings: list[tuple[float, float, float, float]] = []
    losses = []
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for i in range(args.steps):
        q, k = pairs[i % len(pairs)]
        t = time.perf_counter()
        losses.append(step(q, k, timings=timings))
        print(f"  [{impl}] step {i + 1}/{args.steps} ({q} -> {k}): {time.perf_counter() - t:.2f} s, loss {losses[-1]:.4f}",
              flush=True)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0

    samples = args.batch * args.steps
    rate = samples / wall
    aug, fwd, bwd, opt = (sum(col) / len(timings) for col in zip(*timings, strict=True))
    print(f"[{impl}] per step: augment+streams {aug:.2f} s, forward (3 passes, momentum, loss, enqueue) {fwd:.2f} s, "
          f"backward {bwd:.2f} s, SGD {opt:.3f} s")
    print(f"[{impl}] process CPU time {cpu:.1f} s over {wall:.1f} s wall ({cpu / wall:.2f} cores busy), "
          f"{rate:.2f} samples/s, {samples / cpu:.2f} samples per CPU-second")

    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with profile(activities=acts) as prof:
            step(*pairs[-1])
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))
    return {"rate": rate, "per_cpu_s": samples / cpu, "cores": cpu / wall}


if __name__ == "__main__":
    main()
