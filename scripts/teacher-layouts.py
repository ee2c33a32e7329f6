#!/usr/bin/env python3
"""Writes the reference checkpoint layouts dnarun's teacher loader is tested against.

Needs timm, torchvision and efficientnet_pytorch (no weights are downloaded: every model is built
with random initialisation). Run by hand, not in CI (torch is a multi-GB install):

    python3 -m venv /tmp/torchenv
    /tmp/torchenv/bin/pip install timm safetensors efficientnet_pytorch
    /tmp/torchenv/bin/python scripts/teacher-layouts.py tests/fixtures/teachers [--weights DIR]

For each (dnarun arch, layout, reference model) it writes `<arch>.<layout>.txt`: a header line
with the reference model and its trainable parameter count at 1000 classes, then one
`key shape` line per state-dict tensor (BatchNorm's `num_batches_tracked` left out). For some it
also writes `<arch>.<layout>.logits.json`: the reference model's eval-mode logits for a fixed
2x3x64x64 input, with every tensor set by `pattern` below (a formula of the key and the shape,
which the Rust test computes too), so the test checks dnarun's forward pass against timm's and
torchvision's without committing any weights. `--weights DIR` also saves those checkpoints as
DIR/<arch>.<layout>.{safetensors,pth} (torch's zip format) for checking the loaders by hand.
"""
import json
import sys

import timm
import torch
import torchvision
from safetensors.torch import save_file

# (dnarun arch, layout, constructor, reference model name, weights+logits written?)
MODELS = [
    ("efficientnet-b0", "timm", "timm", "efficientnet_b0", True),
    ("efficientnet-b0", "efficientnet-pytorch", "effnet", "efficientnet-b0", True),
    ("efficientnet-b4", "efficientnet-pytorch", "effnet", "efficientnet-b4", True),
    ("efficientnet-b3", "timm", "timm", "efficientnet_b3", False),
    ("efficientnet-b7", "timm", "timm", "efficientnet_b7", False),
    ("tf-efficientnet-b0", "timm", "timm", "tf_efficientnet_b0", True),
    ("tf-efficientnet-lite0", "timm", "timm", "tf_efficientnet_lite0", True),
    ("mobilenetv2-100", "timm", "timm", "mobilenetv2_100", True),
    ("mobilenetv2-140", "timm", "timm", "mobilenetv2_140", False),
    ("mobilenetv2-120d", "timm", "timm", "mobilenetv2_120d", False),
    ("mobilenetv2-100", "torchvision", "tv", "mobilenet_v2", True),
    ("resnet18", "torchvision", "tv", "resnet18", True),
    ("resnet50", "torchvision", "tv", "resnet50", True),
    ("resnet101", "timm", "timm", "resnet101", False),
]


def fnv1a(key):
    h = 0x811C9DC5
    for b in key.encode():
        h = ((h ^ b) * 0x01000193) % 2**32
    return h


def pattern(key, shape):
    """Deterministic values for a tensor: uniform in [-0.5, 0.5) from the key's FNV-1a hash,
    scaled by role (He-uniform kernels, BN scale near 1, variance in [0.75, 1.25))."""
    n = 1
    for d in shape:
        n *= d
    j = torch.arange(n, dtype=torch.int64)
    u = torch.remainder(fnv1a(key) + j * 2654435761, 2**32).to(torch.float64) / 2.0**32 - 0.5
    if key.endswith("running_var"):
        v = 1.0 + 0.5 * u
    elif key.endswith("running_mean") or key.endswith("bias"):
        v = 0.2 * u
    elif len(shape) == 1:
        v = 1.0 + 0.4 * u
    else:
        fan_in = n // shape[0]
        v = u * 2.0 * (6.0 / fan_in) ** 0.5
    return v.to(torch.float32).reshape(shape)


def build(kind, name):
    if kind == "timm":
        return timm.create_model(name, pretrained=False)
    if kind == "effnet":
        # lukemelas' efficientnet_pytorch (the PyPI Lite files' layout): its static "same"
        # padding computed for the test's 64 px input is TensorFlow's.
        from efficientnet_pytorch import EfficientNet

        return EfficientNet.from_name(name, image_size=64)
    return getattr(torchvision.models, name)()


def main():
    out = sys.argv[1]
    weights = sys.argv[sys.argv.index("--weights") + 1] if "--weights" in sys.argv else None
    torch.manual_seed(0)
    for arch, layout, kind, name, with_weights in MODELS:
        m = build(kind, name).eval()
        params = sum(p.numel() for p in m.parameters())
        sd = {k: v for k, v in m.state_dict().items() if not k.endswith("num_batches_tracked")}
        with open(f"{out}/{arch}.{layout}.txt", "w") as f:
            f.write(f"# {kind} {name} params {params}\n")
            for k, v in sd.items():
                f.write(f"{k} {list(v.shape)}\n")
        if with_weights:
            sd = {k: pattern(k, list(v.shape)) for k, v in sd.items()}
            m.load_state_dict(sd, strict=False)
            with torch.no_grad():
                x = pattern("input", [2, 3, 64, 64]) + 0.5
                logits = m(x)
            with open(f"{out}/{arch}.{layout}.logits.json", "w") as f:
                rows = [[float(f"{v:.6g}") for v in row] for row in logits.tolist()]
                json.dump({"model": name, "logits": rows}, f)
            if weights:
                save_file(dict(sd), f"{weights}/{arch}.{layout}.safetensors")
                torch.save(m.state_dict(), f"{weights}/{arch}.{layout}.pth")
        print(arch, layout, name, params)


if __name__ == "__main__":
    main()
