//! The report: a table of the retrained architectures (FLOPs, params, rating, accuracy) in the
//! terminal and as Markdown, CSV and JSON, with Kendall's tau between rating and accuracy.

use serde::{Deserialize, Serialize};

use super::Ctx;
use super::StageError;
use super::retrain::Retrained;
use crate::rundir::{read_json, write_atomic, write_json};
use crate::stats::kendall_tau;

/// Fewer retrained nets than this are too few for Kendall's tau to say anything.
const MIN_TAU_NETS: usize = 5;

/// The run's final numbers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// What the run was: experiment, recipe, budget, space (for a report read on its own).
    #[serde(default)]
    pub about: About,
    /// The teacher's test accuracy.
    pub teacher_accuracy: Option<f64>,
    /// Every retrained architecture.
    pub architectures: Vec<Retrained>,
    /// Kendall's tau between -rating and accuracy (3 or more architectures).
    pub kendall_tau: Option<f64>,
    /// Its 95 % bootstrap interval.
    #[serde(default)]
    pub kendall_tau_ci: Option<[f64; 2]>,
    /// Where each block ran and how long it took.
    pub blocks: Vec<BlockWork>,
    /// Peak resident memory of each stage, in bytes.
    #[serde(default)]
    pub peak_rss_bytes: std::collections::BTreeMap<String, u64>,
    /// Photos that could not be decoded and were skipped (`data.skip_bad`).
    #[serde(default)]
    pub skipped_images: Vec<String>,
    /// With `search.latency_table`: each found net's predicted latency and, when the run's
    /// device is the table's, its latency measured here the same way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<LatencyCheck>,
}

/// What a report is about, stated at its top.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct About {
    /// `experiment.name`.
    pub experiment: String,
    /// The run directory's name.
    pub run: String,
    /// The recipe file.
    pub recipe: String,
    /// The budget, as `dnarun plan` states it.
    pub budget: String,
    /// The space's size and paths per block.
    pub space: String,
    /// Test images each accuracy was measured on.
    pub test_images: usize,
}

/// Where a block was distilled and rated, and how long each took.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BlockWork {
    /// Block index.
    pub block: usize,
    /// Device.
    pub device: String,
    /// Seconds of distillation.
    pub distill_seconds: f64,
    /// Seconds of rating.
    pub rate_seconds: f64,
    /// Paths rated.
    pub paths: usize,
    /// Epochs distilled (fewer than `distill.epochs` when it stopped as stable).
    #[serde(default)]
    pub epochs: usize,
    /// The last rank-stability tau of its distillation.
    #[serde(default)]
    pub stability_tau: Option<f64>,
}

impl Report {
    /// The report as Markdown: what the run was, the nets, a legend, where the time went.
    pub fn markdown(&self) -> String {
        let a = &self.about;
        let mut s = format!(
            "# `{}`: {}\n\nrecipe `{}`; budget {}; space {}; accuracies on {} test images.\n\n",
            a.experiment, a.run, a.recipe, a.budget, a.space, a.test_images
        );
        s += "| architecture | paths | MFLOPs (DNA) | M params | rating | accuracy | 95 % interval |\n|---|---|---:|---:|---:|---:|---|\n";
        for r in &self.architectures {
            let [lo, hi] = crate::stats::wilson_interval(r.accuracy, a.test_images);
            s += &format!(
                "| {}{} | `{}` | {:.2} | {:.3} | {:.4} | {:.2}% | {:.1} to {:.1}% |\n",
                r.chosen.name,
                if r.control { " (random control)" } else { "" },
                r.chosen.paths.join(" | ").replace('|', "\\|"),
                r.chosen.flops_dna as f64 / 1e6,
                r.chosen.params as f64 / 1e6,
                r.chosen.rating,
                r.accuracy * 100.0,
                lo * 100.0,
                hi * 100.0
            );
        }
        if let Some(t) = self.teacher_accuracy {
            s += &format!("\nteacher accuracy: {:.2}%\n", t * 100.0);
        }
        if let Some(l) = &self.latency {
            s += &l.markdown();
        }
        s += &format!("{}\n", self.tau_line());
        s += "\n**Reading it.** `paths` gives each block's path, blocks separated by `|`: `c1:k5e6-k3e6` is the block's cell 1 (0-based, as `dnarun plan` lists the cells) with two layers, op `k5e6` then `k3e6`. `rating` is the path's summed distillation loss on the rating images: lower is better. The interval is the Wilson 95 % interval of an accuracy measured on that many test images: nets whose intervals overlap are not told apart by this test set.\n";
        s += "\n| block | device | paths | distilled epochs | stability tau | rate s |\n|---:|---|---:|---:|---:|---:|\n";
        for b in &self.blocks {
            s += &format!(
                "| {} | {} | {} | {} | {} | {:.1} |\n",
                b.block,
                b.device,
                b.paths,
                b.epochs,
                b.stability_tau
                    .map_or("-".to_string(), |t| format!("{t:.2}")),
                b.rate_seconds
            );
        }
        s += "\n`stability tau`: Kendall's tau of a fixed sample of the block's paths rated on held-out images after its last distillation epoch against the evaluation before (`distill/stability.json`); near 1, the ranking had stopped moving.\n";
        // Blocks on one device are distilled together, one teacher forward feeding them all.
        let mut devices: Vec<(&str, Vec<usize>, f64)> = Vec::new();
        for b in &self.blocks {
            match devices.iter_mut().find(|d| d.0 == b.device) {
                Some(d) => {
                    d.1.push(b.block);
                    d.2 = d.2.max(b.distill_seconds);
                }
                None => devices.push((&b.device, vec![b.block], b.distill_seconds)),
            }
        }
        for (device, blocks, seconds) in devices {
            let list = blocks
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ");
            s += &format!(
                "\ndistillation on {device}: {seconds:.1} s for block{} {list} together (one teacher forward feeds them all)\n",
                if blocks.len() == 1 { "" } else { "s" }
            );
        }
        s
    }

    /// The table for the terminal.
    pub fn table(&self) -> String {
        let mut s = format!(
            "{:<9} {:>10} {:>9} {:>8} {:>9}  paths\n",
            "arch", "MFLOPs", "Mparams", "rating", "accuracy"
        );
        for r in &self.architectures {
            s += &format!(
                "{:<9} {:>10.2} {:>9.3} {:>8.4} {:>8.2}%  {}\n",
                r.chosen.name,
                r.chosen.flops_dna as f64 / 1e6,
                r.chosen.params as f64 / 1e6,
                r.chosen.rating,
                r.accuracy * 100.0,
                r.chosen.paths.join(" | ")
            );
        }
        if let Some(t) = self.teacher_accuracy {
            s += &format!("teacher accuracy {:.2}%\n", t * 100.0);
        }
        s += &format!("{}\n", self.tau_line());
        s
    }

    /// Kendall's tau between rating and accuracy with n and its interval, or why there is none.
    pub fn tau_line(&self) -> String {
        let n = self.architectures.len();
        match (self.kendall_tau, self.kendall_tau_ci) {
            (Some(t), Some([lo, hi])) if n >= MIN_TAU_NETS => format!(
                "Kendall's tau (lower rating vs higher accuracy) {t:.3}, 95 % CI [{lo:.2}, {hi:.2}], n = {n} nets, one seed each (see `dnarun study` for a ranking study)"
            ),
            _ => format!(
                "Kendall's tau (rating vs accuracy): n = {n} nets, too few to judge (`dnarun study` measures the ranking)"
            ),
        }
    }
}

/// Writes the report files and logs the summary.
pub fn run(
    ctx: &mut Ctx,
    teacher_accuracy: Option<f64>,
    architectures: Vec<Retrained>,
) -> Result<Report, StageError> {
    let neg_rating: Vec<f64> = architectures.iter().map(|r| -r.chosen.rating).collect();
    let acc: Vec<f64> = architectures.iter().map(|r| r.accuracy).collect();
    let est = (architectures.len() >= 3).then(|| {
        crate::stats::bootstrap(&neg_rating, &acc, kendall_tau, 2000, ctx.plan.seeds.study())
    });
    let tau = est.map(|e| e.value);
    let mut blocks = Vec::new();
    for i in 0..ctx.plan.space.blocks.len() {
        let d = ctx.dir.distill_state(i)?;
        let r: Option<serde_json::Value> = read_json(&ctx.dir.ratings(i))?;
        let devices = &ctx.plan.devices;
        blocks.push(BlockWork {
            block: i,
            device: devices.list[devices.device_of_block(i)].to_string(),
            distill_seconds: d.seconds,
            rate_seconds: r
                .as_ref()
                .and_then(|r| r["seconds"].as_f64())
                .unwrap_or(0.0),
            paths: r
                .as_ref()
                .and_then(|r| r["ratings"].as_array().map(Vec::len))
                .unwrap_or(0),
            epochs: d.epochs_done,
            stability_tau: d.stability.iter().rev().find_map(|p| p.tau),
        });
    }
    let skipped_images = ctx
        .data
        .train
        .skipped()
        .into_iter()
        .chain(ctx.data.test.skipped())
        .map(|p| p.display().to_string())
        .collect();
    let about = about(ctx);
    let latency = latency_check(ctx, &architectures)?;
    let report = Report {
        about,
        teacher_accuracy,
        architectures,
        kendall_tau: tau,
        kendall_tau_ci: est.map(|e| e.ci),
        blocks,
        peak_rss_bytes: ctx.dir.resources()?.peak_rss_bytes,
        skipped_images,
        latency,
    };
    let md = ctx.dir.report("md");
    write_atomic(&md, report.markdown().as_bytes())?;
    let mut csv = String::from("name,paths,macs,flops_dna,params,rating,accuracy,control\n");
    for r in &report.architectures {
        csv += &format!(
            "{},{},{},{},{},{},{},{}\n",
            r.chosen.name,
            r.chosen.paths.join(" "),
            r.chosen.macs,
            r.chosen.flops_dna,
            r.chosen.params,
            r.chosen.rating,
            r.accuracy,
            r.control
        );
    }
    let csv_path = ctx.dir.report("csv");
    write_atomic(&csv_path, csv.as_bytes())?;
    let json = ctx.dir.report("json");
    write_json(&json, &report)?;
    let parent = ctx.track.parent.clone();
    let mut m: Vec<(String, f64)> = report
        .architectures
        .iter()
        .map(|r| (format!("accuracy_{}", r.chosen.name), r.accuracy))
        .collect();
    if let Some(best) = report.architectures.first() {
        m.push(("best_accuracy".into(), best.accuracy));
    }
    // Only what the report itself judges: with fewer than 5 nets it calls tau too few to judge.
    if let (Some(t), true) = (tau, report.architectures.len() >= MIN_TAU_NETS) {
        m.push(("kendall_tau".into(), t));
    }
    if let Some(t) = teacher_accuracy {
        m.push(("teacher_accuracy".into(), t));
    }
    let refs: Vec<(&str, f64)> = m.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    ctx.track.metrics(&parent, 0, &refs)?;
    for f in [&md, &csv_path, &json, &ctx.dir.pareto_svg()] {
        if f.exists() {
            ctx.track.artifact(&parent, f, "")?;
        }
    }
    Ok(report)
}

/// The found nets' latencies: predicted by the table, measured on the run's device when it is
/// the table's.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LatencyCheck {
    /// The table's file.
    pub table: String,
    /// The device it describes.
    pub device: String,
    /// Its batch size.
    pub batch: usize,
    /// Its validation's mean relative error, when it has one.
    pub validation_mean_rel_error: Option<f64>,
    /// Per net: name, predicted ms, measured ms (none on another device).
    pub nets: Vec<(String, f64, Option<f64>)>,
}

impl LatencyCheck {
    fn markdown(&self) -> String {
        let mut s = format!(
            "\nLatency by the table `{}` (device `{}`, batch {}{}):\n\n| architecture | predicted (ms) | measured here (ms) | error |\n|---|---:|---:|---:|\n",
            self.table,
            self.device,
            self.batch,
            self.validation_mean_rel_error
                .map(|e| format!("; its validation's mean error {:.1} %", e * 100.0))
                .unwrap_or_default()
        );
        for (name, p, m) in &self.nets {
            match m {
                Some(m) => {
                    s += &format!(
                        "| {name} | {p:.3} | {m:.3} | {:+.1} % |\n",
                        (p - m) / m * 100.0
                    )
                }
                None => s += &format!("| {name} | {p:.3} | - (another device) | - |\n"),
            }
        }
        s
    }
}

fn latency_check(ctx: &Ctx, nets: &[Retrained]) -> Result<Option<LatencyCheck>, StageError> {
    let plan = ctx.plan;
    let Some(l) = &plan.search.latency else {
        return Ok(None);
    };
    let here = l.table.device == plan.devices.list[0].to_string();
    let mut out = Vec::new();
    for r in nets {
        let Some(p) = r.chosen.latency_ms else {
            continue;
        };
        let measured = if here {
            let arch = r.chosen.architecture(plan)?;
            Some(
                crate::nn::timing::student_ms(
                    &plan.space,
                    &arch,
                    l.table.batch,
                    l.table.repeats,
                    &ctx.device,
                )
                .median_ms,
            )
        } else {
            None
        };
        out.push((r.chosen.name.clone(), p, measured));
    }
    Ok(Some(LatencyCheck {
        table: l.file.display().to_string(),
        device: l.table.device.clone(),
        batch: l.table.batch,
        validation_mean_rel_error: l.table.validation.as_ref().map(|v| v.mean_rel_error),
        nets: out,
    }))
}

/// What the run was, for a report read on its own.
fn about(ctx: &Ctx) -> About {
    let plan = ctx.plan;
    let paths: Vec<String> = plan
        .space
        .blocks
        .iter()
        .map(|b| crate::plan::count(b.num_paths()))
        .collect();
    About {
        experiment: plan.experiment.name.clone(),
        run: ctx.dir.name(),
        recipe: plan
            .source
            .path
            .canonicalize()
            .unwrap_or(plan.source.path.clone())
            .display()
            .to_string(),
        budget: plan.budget_text(),
        space: format!(
            "{} architectures ({} paths per block)",
            crate::plan::count(plan.space.size()),
            paths.join(", ")
        ),
        test_images: ctx.data.test_idx.len(),
    }
}
