//! Where a run stands, read off its directory (and Slurm's queue for a submitted run): per stage
//! and block, done, queued or running (with the job id), failed (with the log), or not started.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use crate::plan::Plan;
use crate::slurm::Jobs;
use crate::stages::{RunError, read_json};

/// What is finished in a run directory.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    /// The teacher is trained or loaded and rated.
    pub teacher: bool,
    /// Per block: distilled for every epoch.
    pub distilled: Vec<bool>,
    /// Per block: epochs distilled so far.
    pub epochs: Vec<usize>,
    /// Per block: every path rated.
    pub rated: Vec<bool>,
    /// The search is done.
    pub searched: bool,
    /// The report is written.
    pub reported: bool,
}

/// Reads the run directory.
pub fn read(plan: &Plan, dir: &Path) -> Result<Status, RunError> {
    let n = plan.space.blocks.len();
    let teacher: Option<serde_json::Value> = read_json(&dir.join("teacher").join("state.json"))?;
    let mut epochs = Vec::new();
    for i in 0..n {
        let s: Option<serde_json::Value> = read_json(
            &dir.join("distill")
                .join(format!("block{i}"))
                .join("state.json"),
        )?;
        epochs.push(s.and_then(|s| s["epochs_done"].as_u64()).unwrap_or(0) as usize);
    }
    Ok(Status {
        teacher: teacher.is_some_and(|t| t.get("accuracy").is_some_and(|a| !a.is_null())),
        distilled: epochs
            .iter()
            .map(|&e| e >= plan.recipe.distill.epochs)
            .collect(),
        epochs,
        rated: (0..n)
            .map(|i| dir.join("rate").join(format!("block{i}.json")).exists())
            .collect(),
        searched: dir.join("search").join("result.json").exists(),
        reported: dir.join("report.json").exists(),
    })
}

/// Active Slurm jobs: job id (`12`, `12_3`) -> state (`RUNNING`, `PENDING`).
fn queue(ids: &[&String]) -> BTreeMap<String, String> {
    if ids.is_empty() {
        return BTreeMap::new();
    }
    let list = ids.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(",");
    let Ok(out) = Command::new("squeue")
        .args(["-h", "-r", "-o", "%i %T", "-j", &list])
        .output()
    else {
        return BTreeMap::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            l.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
        })
        .collect()
}

/// A table of the run's progress.
pub fn render(plan: &Plan, dir: &Path) -> Result<String, RunError> {
    let s = read(plan, dir)?;
    let jobs: Jobs = read_json(&dir.join("slurm").join("jobs.json"))?.unwrap_or_default();
    let q = queue(&jobs.jobs.values().collect::<Vec<_>>());
    let logs = dir.join("slurm").join("logs");
    let state = |done: bool, stage: &str, task: Option<usize>| -> String {
        if done {
            return "done".into();
        }
        let Some(id) = jobs.jobs.get(stage) else {
            return "not started".into();
        };
        let key = match task {
            Some(t) => format!("{id}_{t}"),
            None => id.clone(),
        };
        if let Some(st) = q.get(&key).or_else(|| q.get(id)) {
            return format!("{} (job {key})", st.to_lowercase());
        }
        let log = match task {
            Some(t) => logs.join(format!("{stage}-{t}.out")),
            None => logs.join(format!("{stage}.out")),
        };
        format!("failed or cancelled (job {key}; log `{}`)", log.display())
    };
    let mut out = String::new();
    let _ = writeln!(out, "run `{}`", dir.display());
    let _ = writeln!(out, "  teacher      {}", state(s.teacher, "teacher", None));
    for i in 0..plan.space.blocks.len() {
        let d = state(s.distilled[i], "distill", Some(i));
        let d = if s.distilled[i] {
            d
        } else {
            format!("{d}, {}/{} epochs", s.epochs[i], plan.recipe.distill.epochs)
        };
        let _ = writeln!(
            out,
            "  block {i}      distill {d}; rate {}",
            state(s.rated[i], "rate", Some(i))
        );
    }
    let _ = writeln!(out, "  search       {}", state(s.searched, "finish", None));
    let _ = writeln!(out, "  report       {}", state(s.reported, "finish", None));
    Ok(out)
}
