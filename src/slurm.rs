//! Running the blocks on a Slurm cluster: the run directory and lock file are written on the
//! shared filesystem, then the stages are handed to Slurm as batch scripts with `afterok`
//! dependencies: the teacher, a job array with one task per block for distillation, another for
//! rating, and one job for search, retraining and the report. Plain `sbatch`/`squeue`/`scancel`
//! on the PATH; no Slurm library. The scripts stay in `RUN_DIR/slurm/` to read, edit, resubmit.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::plan::Plan;
use crate::rundir::{Jobs, RunDir, RunDirError, write_atomic};

/// Why a submission failed.
#[derive(Debug, thiserror::Error)]
pub enum SlurmError {
    /// An `sbatch` option value that could change the script.
    #[error(
        "`--{flag}` is {value:?}, which is not a Slurm {flag}: write it like `{example}` ({} only)",
        match flag.as_str() {
            "partition" => "letters, digits and `-_.,`",
            "time" => "digits and `:-`",
            _ => "letters and digits",
        }
    )]
    Option {
        /// The option.
        flag: String,
        /// Its value.
        value: String,
        /// A valid value.
        example: &'static str,
    },
    /// A run directory path `sbatch --output` would misread.
    #[error(
        "the run directory path `{path}` holds {bad:?}, which `sbatch --output` cannot take; choose an `experiment.output_dir` without whitespace, `%`, quotes or backslashes"
    )]
    Path {
        /// The path.
        path: String,
        /// The character it cannot take.
        bad: char,
    },
    /// `sbatch` is not there.
    #[error("`sbatch` cannot be run ({0}); is Slurm installed and on the PATH?")]
    NoSbatch(String),
    /// `sbatch` refused a script.
    #[error("`sbatch {}` failed: {stderr}", script.display())]
    Refused {
        /// The script.
        script: PathBuf,
        /// What `sbatch` said.
        stderr: String,
    },
    /// The executable the scripts must call cannot be found.
    #[error("cannot find the dnarun executable: {0}")]
    NoExecutable(String),
    /// A file of the run cannot be read or written.
    #[error(transparent)]
    RunDir(#[from] RunDirError),
}

impl SlurmError {
    /// Whether the submission itself failed rather than its input.
    pub fn is_failure(&self) -> bool {
        match self {
            SlurmError::NoExecutable(_) => true,
            SlurmError::RunDir(e) => e.is_failure(),
            _ => false,
        }
    }
}

/// `sbatch` settings for every job (also `dnarun submit`'s options).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SlurmOptions {
    /// `sbatch --partition`.
    #[arg(long)]
    pub partition: Option<String>,
    /// `sbatch --gpus-per-task`.
    #[arg(long)]
    pub gpus_per_task: Option<u32>,
    /// `sbatch --cpus-per-task`.
    #[arg(long)]
    pub cpus_per_task: Option<u32>,
    /// `sbatch --time`.
    #[arg(long)]
    pub time: Option<String>,
    /// `sbatch --mem`.
    #[arg(long)]
    pub mem: Option<String>,
    /// Write the batch scripts into the run directory without submitting them.
    #[arg(long)]
    pub dry_run: bool,
    /// Run the ranking study (`dnarun study`) instead of retraining and reporting: after
    /// the search, one array task per retrained net (`study --net K`), then the analysis.
    #[arg(long)]
    pub study: bool,
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

/// Refuses an `sbatch` option value that could change the script: only the characters Slurm's
/// own syntax for that option uses.
fn check_option(
    flag: &str,
    value: &str,
    allowed: fn(char) -> bool,
    example: &'static str,
) -> Result<(), SlurmError> {
    if value.is_empty() || !value.chars().all(allowed) {
        return Err(SlurmError::Option {
            flag: flag.to_string(),
            value: value.to_string(),
            example,
        });
    }
    Ok(())
}

impl SlurmOptions {
    /// Checks every value that goes into an `#SBATCH` line.
    pub fn check(&self) -> Result<(), SlurmError> {
        if let Some(p) = &self.partition {
            check_option(
                "partition",
                p,
                |c| c.is_ascii_alphanumeric() || "-_.,".contains(c),
                "gpu",
            )?;
        }
        if let Some(t) = &self.time {
            check_option(
                "time",
                t,
                |c| c.is_ascii_digit() || ":-".contains(c),
                "1-12:00:00",
            )?;
        }
        if let Some(m) = &self.mem {
            check_option("mem", m, |c| c.is_ascii_alphanumeric(), "64G")?;
        }
        Ok(())
    }
}

/// Refuses a run directory whose path `sbatch` would misread in `--output` (whitespace, `%`
/// patterns, quotes, control characters).
fn check_path(dir: &Path) -> Result<(), SlurmError> {
    let text = dir.display().to_string();
    if let Some(c) = text
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || "%\"'\\".contains(*c))
    {
        return Err(SlurmError::Path { path: text, bad: c });
    }
    Ok(())
}

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn script(
    dir: &RunDir,
    name: &str,
    opts: &SlurmOptions,
    array: Option<&str>,
    command: &str,
) -> String {
    let logs = dir.slurm_logs();
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
    // Slurm sends SIGTERM two minutes before the time limit: dnarun saves and stops (resubmit
    // to continue).
    s += "#SBATCH --signal=B:TERM@120\n";
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
) -> Result<String, SlurmError> {
    let mut cmd = Command::new("sbatch");
    cmd.arg("--parsable");
    if let Some(d) = dependency {
        cmd.arg(format!("--dependency=afterok:{d}"));
    }
    if let Some(a) = array {
        cmd.arg(format!("--array={a}"));
    }
    cmd.arg(script);
    let out = cmd
        .output()
        .map_err(|e| SlurmError::NoSbatch(e.to_string()))?;
    if !out.status.success() {
        return Err(SlurmError::Refused {
            script: script.to_path_buf(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .trim()
        .split(';')
        .next()
        .unwrap_or_default()
        .to_string())
}

/// One job of a submission: a single job, or an array over the blocks with the ones to run.
struct Step {
    name: &'static str,
    /// The command; an array task appends its index.
    command: String,
    /// An array: its size and the indices not done yet.
    todo: Option<(usize, Vec<usize>)>,
    needed: bool,
}

impl Step {
    fn single(name: &'static str, command: String, needed: bool) -> Step {
        Step {
            name,
            command,
            todo: None,
            needed,
        }
    }

    fn array(name: &'static str, command: String, n: usize, todo: Vec<usize>) -> Step {
        Step {
            name,
            command,
            needed: !todo.is_empty(),
            todo: Some((n, todo)),
        }
    }
}

/// Whether study net `k` (`net01`, ..., the top-1 last) is retrained with every seed.
fn study_net_done(dir: &RunDir, plan: &Plan, k: usize) -> bool {
    let name = if k < plan.study.architectures {
        format!("net{:02}", k + 1)
    } else {
        "top1".to_string()
    };
    (0..plan.study.seeds).all(|s| {
        crate::rundir::read_json::<crate::rundir::TrainState>(&dir.study_net(&name, s).state())
            .ok()
            .flatten()
            .is_some_and(|st| st.accuracy.is_some())
    })
}

/// Indices `0..n` not yet done, as a Slurm array spec (`0,2,3`).
fn array_spec(todo: &[usize]) -> String {
    todo.iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

impl Submitted {
    /// What `dnarun submit` prints: the run directory, the scripts, and the jobs or how to submit.
    pub fn describe(&self, recipe: &Path, dry_run: bool) -> String {
        let mut s = format!("run directory `{}`\n", self.dir.display());
        for p in &self.scripts {
            s += &format!("  script `{}`\n", p.display());
        }
        if dry_run {
            s += &format!(
                "dry run: nothing submitted; submit with `dnarun submit {} --slurm --run-dir {}`\n",
                recipe.display(),
                self.dir.display()
            );
        } else {
            for (stage, id) in &self.jobs.jobs {
                s += &format!("  {stage:<8} job {id}\n");
            }
            let ids: Vec<&str> = self.jobs.jobs.values().map(String::as_str).collect();
            s += &format!(
                "follow: `squeue -j {}` or `dnarun status {}`\n",
                ids.join(","),
                self.dir.display()
            );
        }
        s
    }
}

/// Checks what can be checked before a run directory is made: the `sbatch` option values and,
/// for a new run, that `experiment.output_dir` is a path `sbatch --output` can take. Returns
/// warnings: jobs that hold GPUs but compute on the CPU, or compute on GPUs they do not ask for.
/// (No device is opened: the submitting machine need not have the compute nodes' devices.)
pub fn check(plan: &Plan, opts: &SlurmOptions, resubmit: bool) -> Result<Vec<String>, SlurmError> {
    opts.check()?;
    if !resubmit {
        check_path(&plan.experiment.output_dir)?;
    }
    Ok(device_warnings(&plan.devices.list, opts.gpus_per_task))
}

/// Jobs that hold GPUs and compute on the CPU, or that compute on a GPU they did not ask for.
pub fn device_warnings(
    devices: &[crate::plan::DeviceSpec],
    gpus_per_task: Option<u32>,
) -> Vec<String> {
    use crate::plan::DeviceSpec;
    let gpus = gpus_per_task.unwrap_or(0);
    let on_gpu: Vec<String> = devices
        .iter()
        .filter(|d| **d != DeviceSpec::Cpu)
        .map(ToString::to_string)
        .collect();
    let listed = devices
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    if gpus > 0 && on_gpu.is_empty() {
        vec![format!(
            "`--gpus-per-task {gpus}` holds GPUs, but `runtime.devices` is [{listed}]: the jobs would compute on the CPU; set `runtime.devices` to the GPUs (e.g. `--set 'runtime.devices=[\"cuda:0\"]'`) or leave out `--gpus-per-task`"
        )]
    } else if gpus == 0 && !on_gpu.is_empty() {
        vec![format!(
            "`runtime.devices` computes on {}, but the jobs ask for no GPU; add `--gpus-per-task N` (unless the partition gives every job its GPUs)",
            on_gpu.join(", ")
        )]
    } else {
        Vec::new()
    }
}

/// Writes the batch scripts for the run in `dir` (made ready, lock file written) and submits what
/// is not done yet. Jobs still queued from an earlier submission are cancelled first, and only
/// unfinished blocks go into the arrays.
pub fn submit(plan: &Plan, opts: &SlurmOptions, dir: &RunDir) -> Result<Submitted, SlurmError> {
    submit_after(plan, opts, dir, &BTreeMap::new())
}

/// [`submit`], each step also waiting (`afterok`) for the jobs `after` lists under its name
/// (`teacher`, `distill`, `rate`): a sweep member's step whose units another member's job
/// computes runs after it, and takes them from the stage cache.
pub fn submit_after(
    plan: &Plan,
    opts: &SlurmOptions,
    dir: &RunDir,
    after: &BTreeMap<String, Vec<String>>,
) -> Result<Submitted, SlurmError> {
    let dir = dir.canonical();
    check_path(dir.root())?;
    if !opts.dry_run {
        let old = dir.jobs()?;
        if !old.jobs.is_empty() {
            let _ = Command::new("scancel")
                .args(old.jobs.values().map(String::as_str))
                .status();
        }
    }
    let exe = std::env::current_exe().map_err(|e| SlurmError::NoExecutable(e.to_string()))?;
    let base = |command: &str| {
        format!(
            "exec {} {command} {} --run-dir {}",
            sh_quote(&exe.display().to_string()),
            sh_quote(&dir.lock_file().display().to_string()),
            sh_quote(&dir.root().display().to_string())
        )
    };
    let logs = dir.slurm_logs();
    std::fs::create_dir_all(&logs).map_err(|e| RunDirError::write(&logs, e))?;
    let n = plan.space.blocks.len();
    let progress = dir.progress()?;
    let distill_todo: Vec<usize> = (0..n).filter(|&i| !progress.distilled[i]).collect();
    let rate_todo: Vec<usize> = (0..n).filter(|&i| !progress.rated[i]).collect();
    let run = base("run");
    let mut steps = vec![
        Step::single(
            "teacher",
            format!("{run} --stage teacher"),
            !progress.teacher,
        ),
        Step::array(
            "distill",
            format!("{run} --stage distill --block"),
            n,
            distill_todo,
        ),
        Step::array("rate", format!("{run} --stage rate --block"), n, rate_todo),
    ];
    if opts.study {
        let study = base("study");
        let nets = plan.study.architectures + 1;
        let todo = (0..nets)
            .filter(|&k| !study_net_done(&dir, plan, k))
            .collect();
        let done = dir.study("json").exists();
        steps.extend([
            Step::single(
                "search",
                format!("{run} --stage search"),
                !progress.searched,
            ),
            Step::array("nets", format!("{study} --net"), nets, todo),
            Step::single("study", study, !done),
        ]);
    } else {
        steps.push(Step::single("finish", run, !progress.reported));
    }
    let mut scripts = Vec::new();
    let mut jobs = Jobs::default();
    let mut last: Option<String> = None;
    for step in steps {
        let name = step.name;
        let all = step.todo.as_ref().map(|(n, _)| format!("0-{}", n - 1));
        let command = match &all {
            Some(_) => format!("{} \"$SLURM_ARRAY_TASK_ID\"", step.command),
            None => step.command.clone(),
        };
        let path = dir.slurm_script(name);
        write_atomic(
            &path,
            script(&dir, name, opts, all.as_deref(), &command).as_bytes(),
        )?;
        scripts.push(path.clone());
        if opts.dry_run || !step.needed {
            continue;
        }
        let todo = step.todo.as_ref().map(|(_, t)| array_spec(t));
        let mut deps: Vec<String> = last.iter().cloned().collect();
        deps.extend(after.get(name).into_iter().flatten().cloned());
        deps.dedup();
        let deps = (!deps.is_empty()).then(|| deps.join(":"));
        let id = sbatch(&path, deps.as_deref(), todo.as_deref())?;
        jobs.jobs.insert(name.to_string(), id.clone());
        last = Some(id);
    }
    if !opts.dry_run {
        dir.write_jobs(&jobs)?;
    }
    Ok(Submitted {
        dir: dir.root().to_path_buf(),
        scripts,
        jobs,
    })
}
