//! Where a run stands, read off its directory (and Slurm's queue for a submitted run): per stage
//! and block, done, queued or running (with the job id), failed (with the log), or not started.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
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
    let study = crate::rundir::Lock::read(&dir.lock_file()).is_ok_and(|l| l.lock.study);
    if study {
        let nets = (plan.study.architectures + 1) * plan.study.seeds;
        let _ = writeln!(
            out,
            "  study        {}",
            nets_line(&dir.root().join("study"), nets, "net seeds")?
        );
        let _ = writeln!(
            out,
            "  report       {}",
            if dir.study("json").exists() {
                "done".into()
            } else {
                state(false, "finish", None)
            }
        );
    } else {
        let nets = plan.search.top_k + plan.retrain.random_controls;
        let _ = writeln!(
            out,
            "  retrain      {}",
            nets_line(&dir.root().join("retrain"), nets, "nets")?
        );
        let _ = writeln!(out, "  report       {}", state(s.reported, "finish", None));
    }
    Ok(out)
}

/// The retrained nets (or the study's net seeds) under `root`: how many of `expected` are done,
/// the accuracies of those done and how far those in progress are.
fn nets_line(root: &Path, expected: usize, what: &str) -> Result<String, RunDirError> {
    let mut states = Vec::new();
    collect_states(root, root, &mut states)?;
    states.sort_by(|a, b| a.0.cmp(&b.0));
    let done: Vec<String> = states
        .iter()
        .filter_map(|(name, st)| st.accuracy.map(|a| format!("{name} {:.2}%", a * 100.0)))
        .collect();
    let running: Vec<String> = states
        .iter()
        .filter(|(_, st)| st.accuracy.is_none())
        .map(|(name, st)| format!("{name} at epoch {}", st.epochs_done))
        .collect();
    let mut line = format!("{} of {expected} {what} done", done.len());
    if !done.is_empty() && done.len() <= 6 {
        line += &format!(" ({})", done.join(", "));
    }
    if !running.is_empty() {
        line += &format!("; {}", running.join(", "));
    }
    Ok(line)
}

/// Every `state.json` under `dir` (a net's training state), named by its folder relative to
/// `root` (`top1`, `net03/s1`).
fn collect_states(
    root: &Path,
    dir: &Path,
    out: &mut Vec<(String, crate::rundir::TrainState)>,
) -> Result<(), RunDirError> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect_states(root, &p, out)?;
        } else if p.file_name().is_some_and(|n| n == "state.json")
            && let Some(st) = crate::rundir::read_json::<crate::rundir::TrainState>(&p)?
        {
            let name = dir.strip_prefix(root).unwrap_or(dir);
            out.push((name.display().to_string(), st));
        }
    }
    Ok(())
}
