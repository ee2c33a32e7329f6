//! The report: a table of the retrained architectures (FLOPs, params, rating, accuracy) in the
//! terminal and as Markdown, CSV and JSON, with Kendall's tau between rating and accuracy.

use serde::{Deserialize, Serialize};

use super::Ctx;
use super::StageError;
use super::retrain::Retrained;
use crate::rundir::{read_json, write_atomic, write_json};
use crate::stats::kendall_tau;

/// The run's final numbers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
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
}

impl Report {
    /// The table as Markdown.
    pub fn markdown(&self) -> String {
        let mut s = String::from(
            "| architecture | paths | MFLOPs (DNA) | M params | rating | accuracy |\n|---|---|---:|---:|---:|---:|\n",
        );
        for r in &self.architectures {
            s += &format!(
                "| {} | `{}` | {:.2} | {:.3} | {:.4} | {:.2}% |\n",
                r.chosen.name,
                r.chosen.paths.join(" | ").replace('|', "\\|"),
                r.chosen.flops_dna as f64 / 1e6,
                r.chosen.params as f64 / 1e6,
                r.chosen.rating,
                r.accuracy * 100.0
            );
        }
        if let Some(t) = self.teacher_accuracy {
            s += &format!("\nteacher accuracy: {:.2}%\n", t * 100.0);
        }
        s += &format!("{}\n", self.tau_line());
        s += "\n| block | device | distill s | rate s | paths |\n|---:|---|---:|---:|---:|\n";
        for b in &self.blocks {
            s += &format!(
                "| {} | {} | {:.1} | {:.1} | {} |\n",
                b.block, b.device, b.distill_seconds, b.rate_seconds, b.paths
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
            (Some(t), Some([lo, hi])) if n >= 5 => format!(
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
    let report = Report {
        teacher_accuracy,
        architectures,
        kendall_tau: tau,
        kendall_tau_ci: est.map(|e| e.ci),
        blocks,
        peak_rss_bytes: ctx.dir.resources()?.peak_rss_bytes,
        skipped_images,
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
    if let Some(t) = tau {
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
