//! Exact search under a budget. Per block, its candidates' Pareto front (cost vs rating); suffix
//! fronts `S_i` (best rating reachable by blocks i..n for every cost) by min-plus merges. `S_0`
//! is the whole rating-vs-cost curve. The top-k is a depth-first branch and bound over blocks,
//! candidates sorted by rating, pruned with `S_{i+1}(remaining budget)`.
//!
//! Three budgets at once (FLOPs, params, latency): the fronts are over the first (primary) cost;
//! the others are enforced exactly at every step with cheapest-completion bounds. Every bound is
//! a lower bound, so the search stays exact. An unused budget is infinite.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// How many costs a candidate has (primary, secondary, tertiary).
pub const COSTS: usize = 3;

fn add(a: [f64; COSTS], b: [f64; COSTS]) -> [f64; COSTS] {
    std::array::from_fn(|j| a[j] + b[j])
}

fn sub(a: [f64; COSTS], b: [f64; COSTS]) -> [f64; COSTS] {
    std::array::from_fn(|j| a[j] - b[j])
}

/// A block's candidate: its rating (lower is better) and its costs (primary, secondary).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// Rating (summed over blocks).
    pub rating: f64,
    /// Primary and secondary costs.
    pub cost: [f64; COSTS],
}

/// A whole architecture found by the search.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    /// Index of the chosen candidate in each block.
    pub choice: Vec<usize>,
    /// Summed rating.
    pub rating: f64,
    /// Summed costs, fixed part included.
    pub cost: [f64; COSTS],
}

/// Points `(cost, rating)` sorted by cost with strictly falling rating: nothing in it is beaten
/// on both.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Front(pub Vec<(f64, f64)>);

impl Front {
    /// The front of a set of points.
    pub fn of(mut points: Vec<(f64, f64)>) -> Front {
        points.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
        let mut out: Vec<(f64, f64)> = Vec::new();
        for p in points {
            if out.last().is_none_or(|l| p.1 < l.1) {
                out.push(p);
            }
        }
        Front(out)
    }

    /// Min-plus merge: the front of every sum of a point of `self` and one of `other`.
    pub fn merge(&self, other: &Front) -> Front {
        let mut sums = Vec::with_capacity(self.0.len() * other.0.len());
        for a in &self.0 {
            for b in &other.0 {
                sums.push((a.0 + b.0, a.1 + b.1));
            }
        }
        Front::of(sums)
    }

    /// The best rating with cost at most `budget` (infinity when nothing fits).
    pub fn best_within(&self, budget: f64) -> f64 {
        let n = self.0.partition_point(|p| p.0 <= budget);
        if n == 0 {
            f64::INFINITY
        } else {
            self.0[n - 1].1
        }
    }

    /// The best rating at any cost.
    pub fn best(&self) -> f64 {
        self.0.last().map_or(f64::INFINITY, |p| p.1)
    }
}

/// Suffix fronts: `S[i]` for blocks i..n, `S[n]` = the empty completion.
pub fn suffix_fronts(blocks: &[Vec<Candidate>]) -> Vec<Front> {
    suffix_fronts_on(blocks, 0)
}

/// [`suffix_fronts`] over cost `j` (the front against latency, cost 2, for the plot).
pub fn suffix_fronts_on(blocks: &[Vec<Candidate>], j: usize) -> Vec<Front> {
    let n = blocks.len();
    let mut s = vec![Front(vec![(0.0, 0.0)]); n + 1];
    for i in (0..n).rev() {
        let own = Front::of(blocks[i].iter().map(|c| (c.cost[j], c.rating)).collect());
        s[i] = own.merge(&s[i + 1]);
    }
    s
}

#[derive(PartialEq)]
struct Entry(f64, Vec<usize>, [f64; COSTS]);
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Entry {
    fn cmp(&self, o: &Self) -> Ordering {
        self.0.total_cmp(&o.0).then_with(|| self.1.cmp(&o.1))
    }
}

/// The exact top-k architectures whose costs (plus `fixed`) fit `limits`, best first.
pub fn top_k(
    blocks: &[Vec<Candidate>],
    fixed: [f64; COSTS],
    limits: [f64; COSTS],
    k: usize,
) -> Vec<Found> {
    let n = blocks.len();
    if n == 0 || k == 0 {
        return Vec::new();
    }
    let fronts = suffix_fronts(blocks);
    // Cheapest cost of blocks i..n, per cost.
    let mut min_sec = vec![[0.0; COSTS]; n + 1];
    for i in (0..n).rev() {
        let own: [f64; COSTS] = std::array::from_fn(|j| {
            blocks[i]
                .iter()
                .map(|c| c.cost[j])
                .fold(f64::INFINITY, f64::min)
        });
        min_sec[i] = add(min_sec[i + 1], own);
    }
    let order: Vec<Vec<usize>> = blocks
        .iter()
        .map(|cands| {
            let mut idx: Vec<usize> = (0..cands.len()).collect();
            idx.sort_by(|&a, &b| cands[a].rating.total_cmp(&cands[b].rating).then(a.cmp(&b)));
            idx
        })
        .collect();
    let mut heap: BinaryHeap<Entry> = BinaryHeap::new();
    let mut choice = Vec::with_capacity(n);
    let remaining = sub(limits, fixed);
    let ctx = Ctx {
        blocks,
        fronts: &fronts,
        min_sec: &min_sec,
        order: &order,
        k,
    };
    dfs(&ctx, 0, 0.0, remaining, &mut choice, &mut heap);
    let mut found: Vec<Found> = heap
        .into_vec()
        .into_iter()
        .map(|Entry(rating, choice, cost)| Found {
            cost: add(cost, fixed),
            choice,
            rating,
        })
        .collect();
    found.sort_by(|a, b| {
        a.rating
            .total_cmp(&b.rating)
            .then_with(|| a.choice.cmp(&b.choice))
    });
    found
}

struct Ctx<'a> {
    blocks: &'a [Vec<Candidate>],
    fronts: &'a [Front],
    min_sec: &'a [[f64; COSTS]],
    order: &'a [Vec<usize>],
    k: usize,
}

fn dfs(
    ctx: &Ctx,
    i: usize,
    so_far: f64,
    remaining: [f64; COSTS],
    choice: &mut Vec<usize>,
    heap: &mut BinaryHeap<Entry>,
) {
    let n = ctx.blocks.len();
    if i == n {
        let used = choice
            .iter()
            .enumerate()
            .fold([0.0; COSTS], |acc, (b, &c)| add(acc, ctx.blocks[b][c].cost));
        heap.push(Entry(so_far, choice.clone(), used));
        if heap.len() > ctx.k {
            heap.pop();
        }
        return;
    }
    let kth = |heap: &BinaryHeap<Entry>| {
        if heap.len() < ctx.k {
            f64::INFINITY
        } else {
            heap.peek().unwrap().0
        }
    };
    let next = &ctx.fronts[i + 1];
    for &c in &ctx.order[i] {
        let cand = ctx.blocks[i][c];
        if so_far + cand.rating + next.best() >= kth(heap) {
            break; // candidates are sorted by rating: none after this can do better
        }
        if cand.cost[0] > remaining[0]
            || (1..COSTS).any(|j| cand.cost[j] + ctx.min_sec[i + 1][j] > remaining[j])
        {
            continue;
        }
        let rest = next.best_within(remaining[0] - cand.cost[0]);
        if so_far + cand.rating + rest >= kth(heap) {
            continue;
        }
        choice.push(c);
        dfs(
            ctx,
            i + 1,
            so_far + cand.rating,
            sub(remaining, cand.cost),
            choice,
            heap,
        );
        choice.pop();
    }
}

/// Every architecture, for testing: the exact top-k by enumeration.
pub fn brute_force(
    blocks: &[Vec<Candidate>],
    fixed: [f64; COSTS],
    limits: [f64; COSTS],
    k: usize,
) -> Vec<Found> {
    let mut all = Vec::new();
    let mut idx = vec![0usize; blocks.len()];
    loop {
        let rating: f64 = idx
            .iter()
            .enumerate()
            .map(|(b, &c)| blocks[b][c].rating)
            .sum();
        let cost = idx
            .iter()
            .enumerate()
            .fold(fixed, |acc, (b, &c)| add(acc, blocks[b][c].cost));
        if (0..COSTS).all(|j| cost[j] <= limits[j]) {
            all.push(Found {
                choice: idx.clone(),
                rating,
                cost,
            });
        }
        let mut b = blocks.len();
        loop {
            if b == 0 {
                all.sort_by(|a, b| {
                    a.rating
                        .total_cmp(&b.rating)
                        .then_with(|| a.choice.cmp(&b.choice))
                });
                all.truncate(k);
                return all;
            }
            b -= 1;
            idx[b] += 1;
            if idx[b] < blocks[b].len() {
                break;
            }
            idx[b] = 0;
        }
    }
}
