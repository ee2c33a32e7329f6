#!/usr/bin/env python3
"""Builds data/fashion-mnist-small/ (the quickstart's bundled data) from Debian's
`dataset-fashion-mnist` package: the first 500 training and 100 test images of each class, in
file order, written as gzipped IDX with a fixed gzip header so the bytes are reproducible.
Fashion-MNIST is MIT-licensed (Zalando Research). Run: python3 data/make_quickstart.py"""
import gzip, hashlib, os, struct, sys

SRC = "/usr/share/datasets/fashion-mnist"
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fashion-mnist-small")
PER_CLASS = {"train": 500, "t10k": 100}

def read(name):
    with gzip.open(os.path.join(SRC, name)) as f:
        return f.read()

def write(name, data):
    path = os.path.join(OUT, name)
    with open(path, "wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as f:
            f.write(data)
    return path

if not os.path.isdir(SRC):
    sys.exit(f"{SRC} is missing: run `apt-get install -y dataset-fashion-mnist` first")
os.makedirs(OUT, exist_ok=True)
sums = []
for split, per in PER_CLASS.items():
    images = read(f"{split}-images-idx3-ubyte.gz")
    labels = read(f"{split}-labels-idx1-ubyte.gz")
    n, h, w = struct.unpack(">III", images[4:16])
    counts, chosen = [0] * 10, []
    for i in range(n):
        c = labels[8 + i]
        if counts[c] < per:
            counts[c] += 1
            chosen.append(i)
    img = struct.pack(">IIII", 0x803, len(chosen), h, w) + b"".join(images[16 + i * h * w:16 + (i + 1) * h * w] for i in chosen)
    lab = struct.pack(">II", 0x801, len(chosen)) + bytes(labels[8 + i] for i in chosen)
    for name, data in [(f"{split}-images-idx3-ubyte.gz", img), (f"{split}-labels-idx1-ubyte.gz", lab)]:
        path = write(name, data)
        sums.append(f"{hashlib.sha256(open(path, 'rb').read()).hexdigest()}  {name}\n")
with open(os.path.join(OUT, "SHA256SUMS"), "w") as f:
    f.writelines(sums)
print(f"wrote {OUT}")
