//! What `dnarun plan` prints: the space, its size and costs, the budget and the work.

use std::fmt::Write as _;

use super::{Measure, Plan, format_name};
use crate::space::FlopsConvention;

impl Plan {
    /// A human summary: the space, its size and costs, the budget, the work.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let conv = self.search.flops_convention;
        let conv_name = match conv {
            FlopsConvention::Dna => "DNA convention: MACs + 2 x BN outputs",
            FlopsConvention::Macs => "plain MACs",
        };
        let _ = writeln!(
            s,
            "experiment `{}` (seed {})",
            self.experiment.name, self.seeds.base
        );
        let _ = writeln!(
            s,
            "data: {}, {}x{} images, {} classes; {} per class to distill on, {} per class to rate on",
            format_name(self.data.format),
            self.data.image_size,
            self.data.image_size,
            self.data.classes,
            self.data.samples_per_class,
            self.data.rate_per_class
        );
        let t = &self.teacher;
        let _ = writeln!(
            s,
            "teacher: {} ({} stages, {}), {}",
            t.arch.name(),
            t.stages.len(),
            if t.eval_mode {
                "BN in eval mode"
            } else {
                "BN in train mode, as the public DNA code"
            },
            match &t.weights {
                Some((p, _)) => format!("weights `{}`", p.display()),
                None => format!("trained for {} epochs", t.train.epochs),
            }
        );
        let _ = writeln!(
            s,
            "taps: {}",
            self.taps
                .iter()
                .map(|t| format!(
                    "{} (stage {}) {}@{}x{}",
                    t.name, t.stage, t.shape[0], t.shape[1], t.shape[2]
                ))
                .collect::<Vec<_>>()
                .join(", ")
        );
        self.blocks_text(&mut s);
        let _ = writeln!(s, "space: {} architectures", count(self.space.size()));
        let (flo, fhi) = self.space.extremes(|c| c.flops(conv));
        let (plo, phi) = self.space.extremes(|c| c.params);
        let _ = writeln!(
            s,
            "students: {:.2}M to {:.2}M FLOPs ({conv_name}), {:.3}M to {:.3}M params",
            flo as f64 / 1e6,
            fhi as f64 / 1e6,
            plo as f64 / 1e6,
            phi as f64 / 1e6
        );
        let _ = writeln!(
            s,
            "budget: {}; top {}",
            self.budget_text(),
            self.search.top_k
        );
        self.latency_text(&mut s);
        if self.search.limits[0].is_finite() {
            let fit = self.fitting_fraction();
            let _ = writeln!(
                s,
                "fit the first budget: about {} architectures ({:.1} % of the space)",
                count((fit * self.space.size()).round()),
                fit * 100.0
            );
        }
        self.work_text(&mut s);
        s
    }
}

/// A count as people read it: `8,000` up to a million, then `1.96e17`.
pub fn count(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e6 {
        let digits = format!("{}", x.abs() as u64);
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        if x < 0.0 { format!("-{out}") } else { out }
    } else if x.abs() < 1e6 {
        format!("{x:.1}")
    } else {
        format!("{x:.2e}")
    }
}

/// `1 step`, `16 steps`.
fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{} {}", count(n as f64), if n == 1 { one } else { many })
}

impl Plan {
    /// The budget as the plan and the report state it: `<= 5.00M FLOPs, <= 0.100M params`, or
    /// `none`.
    pub fn budget_text(&self) -> String {
        let budget: Vec<String> = self
            .search
            .measures
            .iter()
            .zip(self.search.limits)
            .filter(|(_, l)| l.is_finite())
            .map(|(m, l)| match m {
                Measure::Params => format!("<= {:.3}M params", l / 1e6),
                Measure::Flops(_) => format!("<= {:.2}M FLOPs", l / 1e6),
            })
            .collect();
        let mut budget = budget;
        if let Some(l) = &self.search.latency
            && l.max_ms.is_finite()
        {
            budget.push(format!("<= {} ms on `{}`", l.max_ms, l.table.device));
        }
        if budget.is_empty() {
            "none".into()
        } else {
            budget.join(", ")
        }
    }

    /// The space's predicted latency range by the table, and which device and batch it
    /// describes.
    fn latency_text(&self, s: &mut String) {
        use std::fmt::Write;
        let Some(l) = &self.search.latency else {
            return;
        };
        let fixed = l.table.fixed_ms(&self.space).unwrap_or(f64::NAN);
        let (mut lo, mut hi) = (fixed, fixed);
        for b in &self.space.blocks {
            let ms: Vec<f64> = b
                .paths()
                .iter()
                .filter_map(|p| l.table.path_ms(b, p).ok())
                .collect();
            lo += ms.iter().copied().fold(f64::INFINITY, f64::min);
            hi += ms.iter().copied().fold(0.0, f64::max);
        }
        let _ = writeln!(
            s,
            "latency table `{}`: device `{}`{}, batch {}, {} threads; predicted students {lo:.3} to {hi:.3} ms{}",
            l.file.display(),
            l.table.device,
            if l.table.device_name.is_empty() {
                String::new()
            } else {
                format!(" ({})", l.table.device_name)
            },
            l.table.batch,
            l.table.threads,
            l.table
                .validation
                .as_ref()
                .map(|v| format!(
                    "; validated on {} students: tau {:.2}, mean error {:.1} %",
                    v.architectures,
                    v.kendall_tau,
                    v.mean_rel_error * 100.0
                ))
                .unwrap_or_default()
        );
        if l.table.device != self.devices.list[0].to_string() {
            let _ = writeln!(
                s,
                "  (the table describes `{}`, not this run's `{}`: the search predicts that device's latency)",
                l.table.device, self.devices.list[0]
            );
        }
    }

    /// The fraction of architectures whose first cost fits the first budget, from per-block cost
    /// histograms convolved block by block (an estimate: costs are binned).
    pub fn fitting_fraction(&self) -> f64 {
        const BINS: usize = 2048;
        let m = self.search.measures[0];
        let fixed = m.of(&self.space.fixed_cost()) as f64;
        let (_, hi) = self.space.extremes(|c| m.of(c));
        let width = (hi as f64 - fixed).max(1.0) / (BINS - 1) as f64;
        let mut dist = vec![0.0f64; BINS];
        dist[0] = 1.0;
        for b in &self.space.blocks {
            let paths = b.paths();
            let mut own = vec![0.0f64; BINS];
            for p in &paths {
                let bin = ((m.of(&b.path_cost(p)) as f64 / width).round() as usize).min(BINS - 1);
                own[bin] += 1.0 / paths.len() as f64;
            }
            let mut next = vec![0.0f64; BINS];
            for (i, &a) in dist.iter().enumerate().filter(|(_, a)| **a > 0.0) {
                for (j, &o) in own.iter().enumerate().filter(|(_, o)| **o > 0.0) {
                    next[(i + j).min(BINS - 1)] += a * o;
                }
            }
            dist = next;
        }
        let limit_bin = ((self.search.limits[0] - fixed) / width).floor();
        if limit_bin < 0.0 {
            return 0.0;
        }
        dist.iter()
            .take(limit_bin as usize + 1)
            .sum::<f64>()
            .min(1.0)
    }

    fn blocks_text(&self, s: &mut String) {
        let _ = writeln!(
            s,
            "blocks (cells as LxH: L layers of H hidden channels, /2: its first layer halves the size):"
        );
        for (i, b) in self.space.blocks.iter().enumerate() {
            let cells = b
                .cells
                .iter()
                .map(|c| {
                    format!(
                        "{}x{}{}",
                        c.layers,
                        c.hidden,
                        if c.stride == 2 { "/2" } else { "" }
                    )
                })
                .collect::<Vec<_>>()
                .join(", ");
            let device = self.devices.label_of_block(i);
            let _ = writeln!(
                s,
                "  {i}: -> {:<8} cells [{cells}] ops {} paths {}  lr {}  on {device}",
                b.target,
                b.ops.len(),
                count(b.num_paths()),
                self.distill.block_lr[i]
            );
        }
    }

    fn work_text(&self, s: &mut String) {
        let paths: f64 = self.space.blocks.iter().map(|b| b.num_paths()).sum();
        let layer_evals: f64 = self
            .space
            .blocks
            .iter()
            .map(|b| {
                b.cells
                    .iter()
                    .map(|c| {
                        (1..=c.layers)
                            .map(|l| (b.ops.len() as f64).powi(l as i32))
                            .sum::<f64>()
                    })
                    .sum::<f64>()
            })
            .sum();
        let batch = self.distill.batch_size;
        let steps = (self.data.samples_per_class * self.data.classes)
            .div_ceil(batch)
            .min(self.distill.max_steps.unwrap_or(usize::MAX))
            * self.distill.epochs;
        let _ = writeln!(
            s,
            "work: {} feeding {} ({} of {}, batch {batch}); {} to rate ({} with prefix sharing); retrain {} for {}",
            plural(steps, "teacher forward", "teacher forwards"),
            plural(self.space.blocks.len(), "block", "blocks"),
            plural(self.distill.epochs, "epoch", "epochs"),
            plural(steps / self.distill.epochs.max(1), "step", "steps"),
            if paths == 1.0 {
                "1 path".to_string()
            } else {
                format!("{} paths", count(paths))
            },
            format!("{} layer evaluations", count(layer_evals)),
            plural(
                self.search.top_k + self.retrain.random_controls,
                "net",
                "nets"
            ),
            plural(self.retrain.train.epochs, "epoch", "epochs"),
        );
    }
}
