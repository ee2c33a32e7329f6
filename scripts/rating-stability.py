#!/usr/bin/env python3
"""How far two runs' path ratings agree, block by block (docs/study.md's experiments 2 and 4):
Kendall tau-b between the ratings of every path, the best 5 paths they share, and the mean
rating by cell. Standard library only.

    python3 scripts/rating-stability.py runs/study-space-001 runs/study-space-rate200-001
"""
import json
import sys
from pathlib import Path


def tau_b(x, y):
    n = len(x)
    concordant = discordant = ties_x = ties_y = 0
    for i in range(n):
        for j in range(i + 1, n):
            dx, dy = x[i] - x[j], y[i] - y[j]
            if dx == 0 and dy == 0:
                continue
            if dx == 0:
                ties_x += 1
            elif dy == 0:
                ties_y += 1
            elif (dx > 0) == (dy > 0):
                concordant += 1
            else:
                discordant += 1
    denom = ((concordant + discordant + ties_x) * (concordant + discordant + ties_y)) ** 0.5
    return (concordant - discordant) / denom if denom else float("nan")


def ratings(run, block):
    d = json.loads((Path(run) / "rate" / f"block{block}.json").read_text())
    return {r["path"]: (r["cell"], r["rating"]) for r in d["ratings"]}


def main():
    a, b = sys.argv[1], sys.argv[2]
    print(f"| block | Kendall tau | best 5 in common | mean rating by cell, {Path(a).name} | the same, {Path(b).name} |")
    print("|---|---:|---:|---|---|")
    block = 0
    while (Path(a) / "rate" / f"block{block}.json").exists():
        ra, rb = ratings(a, block), ratings(b, block)
        paths = sorted(ra)
        x = [ra[p][1] for p in paths]
        y = [rb[p][1] for p in paths]
        best = lambda r: set(sorted(r, key=lambda p: r[p][1])[:5])
        cells = sorted({c for c, _ in ra.values()})
        mean = lambda r, c: sum(v for k, v in r.values() if k == c) / sum(1 for k, _ in r.values() if k == c)
        fmt = lambda r: " / ".join(f"{mean(r, c):.3f}" for c in cells)
        print(f"| {block} | {tau_b(x, y):.2f} | {len(best(ra) & best(rb))} of 5 | {fmt(ra)} | {fmt(rb)} |")
        block += 1


if __name__ == "__main__":
    main()
