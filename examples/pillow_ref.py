"""The Pillow reference for `examples/data_bench.rs`: the same images, the same work (decode,
resize the shorter side to 256, then a random resized crop to 224 + flip for the training view,
a centre crop for the evaluation view, then normalise to float32 CHW), one process per core, as
a PyTorch DataLoader with Pillow transforms does it. Prints `train <images/s>`, `eval <images/s>`,
`processes <n>`."""
import math
import os
import random
import sys
import time
from multiprocessing import Pool

import numpy as np
from PIL import Image

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def base(path):
    img = Image.open(path).convert("RGB")
    w, h = img.size
    s = 256 / min(w, h)
    return img.resize((max(256, round(w * s)), max(256, round(h * s))), Image.BILINEAR)


def train_view(path, rng):
    img = base(path)
    w, h = img.size
    area = w * h
    box = None
    for _ in range(10):
        target = area * rng.uniform(0.08, 1.0)
        ratio = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        cw, ch = round(math.sqrt(target * ratio)), round(math.sqrt(target / ratio))
        if 0 < cw <= w and 0 < ch <= h:
            x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
            box = (x, y, x + cw, y + ch)
            break
    if box is None:
        box = (0, 0, w, h)
    img = img.resize((224, 224), Image.BILINEAR, box=box)
    if rng.random() < 0.5:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
    return normalise(img)


def eval_view(path, rng):
    img = base(path)
    w, h = img.size
    x, y = (w - 224) // 2, (h - 224) // 2
    return normalise(img.crop((x, y, x + 224, y + 224)))


def normalise(img):
    a = np.asarray(img, dtype=np.float32) / 255.0
    return ((a - MEAN) / STD).transpose(2, 0, 1)


def work(args):
    files, train, seed = args
    rng = random.Random(seed)
    f = train_view if train else eval_view
    for p in files:
        f(p, rng)
    return len(files)


def main():
    root = sys.argv[1]
    files = sorted(
        os.path.join(root, c, f)
        for c in os.listdir(root)
        if os.path.isdir(os.path.join(root, c))
        for f in os.listdir(os.path.join(root, c))
    )
    procs = os.cpu_count() or 1
    chunks = [files[i::procs] for i in range(procs)]
    with Pool(procs) as pool:
        for name, train in (("train", True), ("eval", False)):
            t = time.perf_counter()
            n = sum(pool.map(work, [(c, train, i) for i, c in enumerate(chunks)]))
            print(f"{name} {n / (time.perf_counter() - t):.1f} images/s (Pillow {Image.__version__})")
    print(f"processes {procs}")


if __name__ == "__main__":
    main()
