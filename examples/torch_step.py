"""The PyTorch (eager, CPU) reference for `examples/step.rs`: the identical train steps, timed the
same way (median of 12 steps after 3 warm-up steps, forward / backward / optimizer split).

Reads the JSON line `step --json` printed (stdin) for the supernet paths and dnarun's times, and
prints PyTorch's times and dnarun / PyTorch ratios. Run through `scripts/bench-torch`.
"""

import json
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

STEPS, WARMUP = 12, 3


class MbConv(nn.Module):
    """Expand 1x1 + BN + act, depthwise kxk + BN + act, project 1x1 + BN, residual if shapes allow
    (as dnarun's MbConv; no squeeze-excitation, TensorFlow "same" padding)."""

    def __init__(self, cin, cout, k, e, stride, act):
        super().__init__()
        mid = cin * e
        self.expand = None if e == 1 else nn.Sequential(nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid, eps=1e-3))
        self.dw = nn.Conv2d(mid, mid, k, stride, groups=mid, bias=False)
        self.dw_bn = nn.BatchNorm2d(mid, eps=1e-3)
        self.project = nn.Sequential(nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout, eps=1e-3))
        self.k, self.stride, self.act = k, stride, act
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        h = x if self.expand is None else self.act(self.expand(x))
        size = h.shape[-1]
        out = -(-size // self.stride)
        total = max((out - 1) * self.stride + self.k - size, 0)
        h = F.pad(h, (total // 2, total - total // 2, total // 2, total - total // 2))
        h = self.act(self.dw_bn(self.dw(h)))
        h = self.project(h)
        return h + x if self.residual else h


def median(v):
    return sorted(v)[len(v) // 2]


def steps(net, forward, x, y):
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    f, b, o = [], [], []
    for step in range(WARMUP + STEPS):
        t = time.perf_counter()
        loss = F.mse_loss(forward(net, step, x), y)
        t1 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        t2 = time.perf_counter()
        opt.step()
        t3 = time.perf_counter()
        if step >= WARMUP:
            f.append((t1 - t) * 1e3)
            b.append((t2 - t1) * 1e3)
            o.append((t3 - t2) * 1e3)
    return {"fwd": median(f), "bwd": median(b), "opt": median(o)}


def total(s):
    return s["fwd"] + s["bwd"] + s["opt"]


def show(name, s, gflop):
    print(
        f"  {name:<22} step {total(s):7.1f} ms  (forward {s['fwd']:6.1f}, backward {s['bwd']:6.1f}, "
        f"optimizer {s['opt']:5.1f})  {gflop / (total(s) / 1e3):5.1f} GFLOP/s"
    )


def main():
    ours = json.loads(sys.stdin.read().strip().splitlines()[-1])
    torch.manual_seed(0)
    print(f"PyTorch {torch.__version__}, {torch.get_num_threads()} threads, eager CPU")

    x = torch.randn(32, 16, 32, 32)
    y = torch.randn(32, 16, 32, 32)
    net = MbConv(16, 16, 3, 6, 1, F.relu6)
    mb = steps(net, lambda n, _, x: n(x), x, y)
    print("(1) MBConv 16->96->16, k3, ReLU6, batch 32 at 32x32, MSE + Adam:")
    show("PyTorch", mb, ours["mbconv"]["gflop"])
    m = ours["mbconv"]
    print(f"  dnarun / PyTorch: {total(m) / total(mb):.2f}x the step time "
          f"(forward {m['fwd'] / mb['fwd']:.2f}x, backward {m['bwd'] / mb['bwd']:.2f}x); "
          f"Burn's own ops: {m['burn_ops_step'] / total(mb):.2f}x")

    # The supernet cell: quickstart block 1 with 4 layers; ops k{3,5}e{3,6}, swish.
    c = ours["cell"]
    (cin, size, _), (cout, _, _) = c["in"], c["out"]
    ops = {f"k{k}e{e}": (k, e) for k in (3, 5) for e in (3, 6)}
    layers = []
    for i in range(4):
        a, b, s = (cin if i == 0 else cout), cout, (2 if i == 0 and size != c["out"][1] else 1)
        layers.append(nn.ModuleDict({name: MbConv(a, b, k, e, s, F.silu) for name, (k, e) in ops.items()}))
    cell = nn.ModuleList(layers)
    paths = [p.split(":")[1].split("-") for p in c["paths"]]
    paths = paths[:WARMUP] + paths  # warm-up steps reuse the first paths

    def run_path(n, step, x):
        for layer, op in zip(n, paths[step]):
            x = layer[op](x)
        return x

    x = torch.randn(32, cin, size, size)
    y = torch.randn(32, cout, c["out"][1], c["out"][2])
    cs = steps(cell, run_path, x, y)
    print(f"(2) 4-layer supernet cell {cin}->{cout} ch at {size} px, the same random paths, batch 32:")
    show("PyTorch", cs, c["gflop"])
    print(f"  dnarun / PyTorch: {total(c) / total(cs):.2f}x the step time "
          f"(forward {c['fwd'] / cs['fwd']:.2f}x, backward {c['bwd'] / cs['bwd']:.2f}x); "
          f"Burn's own ops: {c['burn_ops_step'] / total(cs):.2f}x")


if __name__ == "__main__":
    main()
