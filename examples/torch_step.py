"""The PyTorch (eager, CPU) reference for `examples/step.rs`: the identical train steps, timed the
same way (median of 12 steps after 3 warm-up steps, forward / backward / optimizer split).

Reads the JSON line `step --json` printed (stdin) for the supernet paths and dnarun's times, and
prints PyTorch's times and dnarun / PyTorch ratios. Run through `scripts/bench-torch` (CPU) or
`scripts/gpu-check` (`--device cuda`: fp32 with TF32 off, then bf16 autocast + channels_last;
every phase ends with a CUDA synchronize). `--json` prints one JSON line at the end.
"""

import json
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

STEPS, WARMUP = 12, 3
DEVICE = sys.argv[sys.argv.index("--device") + 1] if "--device" in sys.argv else "cpu"
MODE = {"bf16": False}


def sync():
    if DEVICE.startswith("cuda"):
        torch.cuda.synchronize()


def same_padding(size, k, stride):
    """TensorFlow "same" padding of one axis: (before, after)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + k - size, 0)
    return total // 2, total - total // 2


class MbConv(nn.Module):
    """Expand 1x1 + BN + act, depthwise kxk + BN + act, project 1x1 + BN, residual if shapes allow
    (as dnarun's MbConv; no squeeze-excitation, TensorFlow "same" padding).

    Written as a PyTorch user would: where "same" padding is symmetric (stride 1, odd k) it is the
    convolution's own `padding=k//2`; where it is not (stride 2 on an even size), `exact=True` pads
    with `F.pad` before the convolution (the function dnarun computes) and `exact=False` uses
    `padding=k//2` (PyTorch's idiom: one more row/column at the start, a slightly different
    function)."""

    def __init__(self, cin, cout, k, e, stride, act, size, exact=True):
        super().__init__()
        mid = cin * e
        self.pad = same_padding(size, k, stride)
        symmetric = self.pad[0] == self.pad[1]
        self.explicit = exact and not symmetric
        self.expand = None if e == 1 else nn.Sequential(nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid, eps=1e-3))
        self.dw = nn.Conv2d(mid, mid, k, stride, padding=0 if self.explicit else k // 2, groups=mid, bias=False)
        self.dw_bn = nn.BatchNorm2d(mid, eps=1e-3)
        self.project = nn.Sequential(nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout, eps=1e-3))
        self.act = act
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        h = x if self.expand is None else self.act(self.expand(x))
        if self.explicit:
            a, b = self.pad
            h = F.pad(h, (a, b, a, b))
        h = self.act(self.dw_bn(self.dw(h)))
        h = self.project(h)
        return h + x if self.residual else h


def median(v):
    return sorted(v)[len(v) // 2]


def steps(net, forward, x, y):
    net = net.to(DEVICE)
    x, y = x.to(DEVICE), y.to(DEVICE)
    if MODE["bf16"]:
        net = net.to(memory_format=torch.channels_last)
        x, y = x.contiguous(memory_format=torch.channels_last), y.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    f, b, o = [], [], []
    first = 0.0
    for step in range(WARMUP + STEPS):
        sync()
        t = time.perf_counter()
        with torch.autocast(DEVICE.split(":")[0], dtype=torch.bfloat16, enabled=MODE["bf16"]):
            loss = F.mse_loss(forward(net, step, x).float(), y)
        sync()
        t1 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        sync()
        t2 = time.perf_counter()
        opt.step()
        sync()
        t3 = time.perf_counter()
        if step == 0:
            first = (t3 - t) * 1e3
        if step >= WARMUP:
            f.append((t1 - t) * 1e3)
            b.append((t2 - t1) * 1e3)
            o.append((t3 - t2) * 1e3)
    return {"fwd": median(f), "bwd": median(b), "opt": median(o), "first_step": first}


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
    if DEVICE.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        print(f"PyTorch {torch.__version__} on {torch.cuda.get_device_name()}, eager; dnarun on {ours.get('device')}")
        modes = [("fp32", False), ("bf16+channels_last", True)]
    else:
        print(f"PyTorch {torch.__version__}, {torch.get_num_threads()} threads, eager CPU")
        modes = [("fp32", False)]
    results = {}
    for mode, bf16 in modes:
        MODE["bf16"] = bf16
        results[mode] = run_mode(ours, mode)
    if "--json" in sys.argv:
        print(json.dumps({"torch": torch.__version__, "device": DEVICE, "results": results}))


def run_mode(ours, mode):
    out = {}
    x = torch.randn(32, 16, 32, 32)
    y = torch.randn(32, 16, 32, 32)
    net = MbConv(16, 16, 3, 6, 1, F.relu6, 32)
    mb = steps(net, lambda n, _, x: n(x), x, y)
    out["mbconv"] = mb
    print(f"(1) MBConv 16->96->16, k3, ReLU6, batch 32 at 32x32, MSE + Adam [{mode}]:")
    show(f"PyTorch {mode}", mb, ours["mbconv"]["gflop"])
    m = ours["mbconv"]
    print(f"  dnarun / PyTorch: {total(m) / total(mb):.2f}x the step time "
          f"(forward {m['fwd'] / mb['fwd']:.2f}x, backward {m['bwd'] / mb['bwd']:.2f}x); "
          f"Burn's own ops: {m['burn_ops_step'] / total(mb):.2f}x")

    # The supernet cell: quickstart block 1 with 4 layers; ops k{3,5}e{3,6}, swish.
    c = ours["cell"]
    (cin, size, _), (cout, _, _) = c["in"], c["out"]
    ops = {f"k{k}e{e}": (k, e) for k in (3, 5) for e in (3, 6)}
    strides = [2 if i == 0 and size != c["out"][1] else 1 for i in range(4)]
    sizes = [size] + [c["out"][1]] * 3
    paths = [p.split(":")[1].split("-") for p in c["paths"]]
    paths = paths[:WARMUP] + paths  # warm-up steps reuse the first paths

    def run_path(n, step, x):
        for layer, op in zip(n, paths[step]):
            x = layer[op](x)
        return x

    x = torch.randn(32, cin, size, size)
    y = torch.randn(32, cout, c["out"][1], c["out"][2])
    asymmetric = any(same_padding(sz, k, s)[0] != same_padding(sz, k, s)[1]
                     for sz, s in zip(sizes, strides) for k in (3, 5))
    variants = [("F.pad (TF same)", True), ("padding=k//2", False)] if asymmetric else [("padding=k//2", True)]
    print(f"(2) 4-layer supernet cell {cin}->{cout} ch at {size} px, the same random paths, batch 32:")
    for label, exact in variants:
        torch.manual_seed(0)
        cell = nn.ModuleList(
            nn.ModuleDict({name: MbConv(cin if i == 0 else cout, cout, k, e, strides[i], F.silu, sizes[i], exact)
                           for name, (k, e) in ops.items()})
            for i in range(4))
        cs = steps(cell, run_path, x, y)
        out[f"cell {label}"] = cs
        show(f"PyTorch {mode}, {label}", cs, c["gflop"])
        print(f"  dnarun / PyTorch ({label}): {total(c) / total(cs):.2f}x the step time "
              f"(forward {c['fwd'] / cs['fwd']:.2f}x, backward {c['bwd'] / cs['bwd']:.2f}x); "
              f"Burn's own ops: {c['burn_ops_step'] / total(cs):.2f}x")
    return out


if __name__ == "__main__":
    main()
