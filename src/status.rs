//! Where a run stands, read off its directory (and Slurm's queue for a submitted run): per stage
//! and block, done, queued or running (with the job id), failed (with the log), or not started.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::Command;

use crate::plan::Plan;
use crate::rundir::RunDir;
use crate::rundir::RunDirError;

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
pub fn render(plan: &Plan, dir: &RunDir) -> Result<String, RunDirError> {
    let s = dir.progress()?;
    let jobs = dir.jobs()?;
    let q = queue(&jobs.jobs.values().collect::<Vec<_>>());
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
        let log = dir.slurm_log(stage, task);
        format!("failed or cancelled (job {key}; log `{}`)", log.display())
    };
    let mut out = String::new();
    let _ = writeln!(out, "run `{}`", dir.root().display());
    let _ = writeln!(out, "  teacher      {}", state(s.teacher, "teacher", None));
    for i in 0..plan.space.blocks.len() {
        let d = state(s.distilled[i], "distill", Some(i));
        let d = if s.distilled[i] {
            d
        } else {
            format!("{d}, {}/{} epochs", s.epochs[i], plan.distill.epochs)
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
