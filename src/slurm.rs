//! Running the blocks on a Slurm cluster: the run directory and lock file are written on the
//! shared filesystem, then the stages are handed to Slurm as batch scripts with `afterok`
//! dependencies: the teacher, a job array with one task per block for distillation, another for
//! rating, and one job for search, retraining and the report. Plain `sbatch`/`squeue`/`scancel`
//! on the PATH; no Slurm library. The scripts stay in `RUN_DIR/slurm/` to read, edit, resubmit.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::plan::Plan;
use crate::stages::{RunError, read_json, write_atomic, write_json};

/// `sbatch` settings for every job.
#[derive(Debug, Clone, Default)]
pub struct SlurmOptions {
    /// `--partition`.
    pub partition: Option<String>,
    /// `--gpus-per-task`.
    pub gpus_per_task: Option<u32>,
    /// `--cpus-per-task`.
    pub cpus_per_task: Option<u32>,
    /// `--time`.
    pub time: Option<String>,
    /// `--mem`.
    pub mem: Option<String>,
    /// Write the scripts without submitting them.
    pub dry_run: bool,
}

/// The jobs of a submitted run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Jobs {
    /// Stage name -> Slurm job id.
    pub jobs: BTreeMap<String, String>,
}

/// What `submit` did.
#[derive(Debug, Clone)]
pub struct Submitted {
    /// The run directory.
    pub dir: PathBuf,
    /// The scripts written, in order.
    pub scripts: Vec<PathBuf>,
    /// The job ids (empty for a dry run).
    pub jobs: Jobs,
}

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn script(
    dir: &Path,
    name: &str,
    opts: &SlurmOptions,
    array: Option<&str>,
    command: &str,
) -> String {
    let logs = dir.join("slurm").join("logs");
    let mut s = String::from("#!/bin/bash\n");
    s += &format!("#SBATCH --job-name=dnarun-{name}\n");
    match array {
        Some(a) => {
            s += &format!("#SBATCH --array={a}\n");
            s += &format!("#SBATCH --output={}/{name}-%a.out\n", logs.display());
        }
        None => s += &format!("#SBATCH --output={}/{name}.out\n", logs.display()),
    }
    if let Some(p) = &opts.partition {
        s += &format!("#SBATCH --partition={p}\n");
    }
    if let Some(g) = opts.gpus_per_task {
        s += &format!("#SBATCH --gpus-per-task={g}\n");
    }
    if let Some(c) = opts.cpus_per_task {
        s += &format!("#SBATCH --cpus-per-task={c}\n");
    }
    if let Some(t) = &opts.time {
        s += &format!("#SBATCH --time={t}\n");
    }
    if let Some(m) = &opts.mem {
        s += &format!("#SBATCH --mem={m}\n");
    }
    s += "# Written by `dnarun submit`. Edit and resubmit freely: every stage resumes from its\n";
    s += "# checkpoints. One task of an array alone: `sbatch --array=I THIS_FILE`.\n";
    s += "set -euo pipefail\n";
    s += command;
    s += "\n";
    s
}

fn sbatch(
    script: &Path,
    dependency: Option<&str>,
    array: Option<&str>,
) -> Result<String, RunError> {
    let mut cmd = Command::new("sbatch");
    cmd.arg("--parsable");
    if let Some(d) = dependency {
        cmd.arg(format!("--dependency=afterok:{d}"));
    }
    if let Some(a) = array {
        cmd.arg(format!("--array={a}"));
    }
    cmd.arg(script);
    let out = cmd.output().map_err(|e| {
        RunError::Usage(format!(
            "`sbatch` cannot be run ({e}); is Slurm installed and on the PATH?"
        ))
    })?;
    if !out.status.success() {
        return Err(RunError::Usage(format!(
            "`sbatch {}` failed: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .trim()
        .split(';')
        .next()
        .unwrap_or_default()
        .to_string())
}

/// Indices `0..n` not yet done, as a Slurm array spec (`0,2,3`).
fn array_spec(todo: &[usize]) -> String {
    todo.iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Writes the batch scripts for a run and submits what is not done yet. With `resubmit` the run
/// directory exists: jobs still queued from an earlier submission are cancelled first, and only
/// unfinished blocks go into the arrays.
pub fn submit(
    plan: &Plan,
    opts: &SlurmOptions,
    resubmit: Option<&Path>,
) -> Result<Submitted, RunError> {
    let prepared = crate::run::prepare(plan, resubmit)?;
    let dir = prepared.dir.canonicalize().unwrap_or(prepared.dir.clone());
    let jobs_path = dir.join("slurm").join("jobs.json");
    if let Some(old) = read_json::<Jobs>(&jobs_path)?
        && !opts.dry_run
    {
        let ids: Vec<&String> = old.jobs.values().collect();
        let _ = Command::new("scancel")
            .args(ids.iter().map(|s| s.as_str()))
            .status();
    }
    drop(prepared);
    let exe = std::env::current_exe()
        .map_err(|e| RunError::Usage(format!("cannot find the dnarun executable: {e}")))?;
    let base = format!(
        "{} run {} --run-dir {}",
        sh_quote(&exe.display().to_string()),
        sh_quote(&dir.join("dnarun.lock").display().to_string()),
        sh_quote(&dir.display().to_string())
    );
    std::fs::create_dir_all(dir.join("slurm").join("logs")).map_err(|e| RunError::file(&dir, e))?;
    let n = plan.space.blocks.len();
    let status = crate::status::read(plan, &dir)?;
    let distill_todo: Vec<usize> = (0..n).filter(|&i| !status.distilled[i]).collect();
    let rate_todo: Vec<usize> = (0..n).filter(|&i| !status.rated[i]).collect();
    let all = format!("0-{}", n - 1);
    let stages: Vec<(&str, Option<String>, String, bool)> = vec![
        (
            "teacher",
            None,
            format!("exec {base} --stage teacher"),
            !status.teacher,
        ),
        (
            "distill",
            Some(all.clone()),
            format!("exec {base} --stage distill --block \"$SLURM_ARRAY_TASK_ID\""),
            !distill_todo.is_empty(),
        ),
        (
            "rate",
            Some(all.clone()),
            format!("exec {base} --stage rate --block \"$SLURM_ARRAY_TASK_ID\""),
            !rate_todo.is_empty(),
        ),
        ("finish", None, format!("exec {base}"), !status.reported),
    ];
    let mut scripts = Vec::new();
    let mut jobs = Jobs::default();
    let mut last: Option<String> = None;
    for (name, array, command, needed) in stages {
        let path = dir.join("slurm").join(format!("{name}.sbatch"));
        write_atomic(
            &path,
            script(&dir, name, opts, array.as_deref(), &command).as_bytes(),
        )?;
        scripts.push(path.clone());
        if opts.dry_run || !needed {
            continue;
        }
        let todo = match name {
            "distill" => Some(array_spec(&distill_todo)),
            "rate" => Some(array_spec(&rate_todo)),
            _ => None,
        };
        let id = sbatch(&path, last.as_deref(), todo.as_deref())?;
        jobs.jobs.insert(name.to_string(), id.clone());
        last = Some(id);
    }
    if !opts.dry_run {
        write_json(&jobs_path, &jobs)?;
    }
    Ok(Submitted { dir, scripts, jobs })
}
