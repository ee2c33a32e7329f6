//! The interpreter: makes (or reopens) the run directory, writes the lock file, opens tracking,
//! and runs the stages in order, skipping what is already done, so a killed run resumes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use burn::tensor::Device;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::data;
use crate::plan::{DeviceSpec, Plan};
use crate::stages::{self, Ctx, RunError, Track, read_json, write_atomic};
use crate::track::{LocalStore, MlflowServer, RunStatus, Tracker, flatten_params};

/// A stage of the pipeline.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum, Serialize, Deserialize,
)]
pub enum Stage {
    /// Load or train the teacher.
    Teacher,
    /// Distill every block of the supernet.
    Distill,
    /// Rate every path.
    Rate,
    /// Search the best architectures under the budget.
    Search,
    /// Retrain the chosen architectures from scratch.
    Retrain,
    /// Write the report.
    Report,
}

/// How to run.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Only this stage.
    pub stage: Option<Stage>,
    /// Only this block (distill, rate).
    pub block: Option<usize>,
    /// This process is the worker for `runtime.devices[K]`: it distills or rates the blocks
    /// assigned to that device, on it (started by a run with several devices).
    pub worker: Option<usize>,
    /// Continue this run directory instead of making a new one.
    pub resume: Option<PathBuf>,
    /// Set by Ctrl-C.
    pub stop: Arc<AtomicBool>,
}

/// The `[lock]` table of `dnarun.lock`: what the run used besides the recipe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LockInfo {
    /// dnarun version.
    pub dnarun_version: String,
    /// Git commit of the recipe's repository, if any.
    pub git_commit: String,
    /// Whether that repository had uncommitted changes.
    pub git_dirty: bool,
    /// Burn version.
    pub burn_version: String,
    /// Backend.
    pub backend: String,
    /// Device.
    pub device: String,
    /// Seed.
    pub seed: u64,
    /// SHA-256 of the data files and the chosen sample indices.
    pub data_fingerprint: String,
    /// SHA-256 of the resolved recipe.
    pub recipe_sha256: String,
    /// Directory the recipe's relative paths are resolved against.
    pub recipe_dir: String,
}

/// The lock file: the resolved recipe and what else the run used.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Lock {
    /// What else the run used.
    pub lock: LockInfo,
    /// The fully resolved recipe.
    pub recipe: serde_json::Value,
}

/// The lock file's text.
pub fn lock_text(lock: &Lock) -> String {
    let value = toml::Value::try_from(lock).expect("a lock is TOML");
    format!(
        "# dnarun lock file: everything this run used. Re-run it exactly with `dnarun <this file>`.\n{}",
        toml::to_string_pretty(&value).expect("a lock is TOML")
    )
}

/// Opens a device, failing with a clear message (not a panic) when it cannot be used.
pub fn open_device(spec: &DeviceSpec) -> Result<Device, RunError> {
    match spec {
        DeviceSpec::Cpu => Ok(Device::flex()),
        #[cfg(feature = "cuda")]
        DeviceSpec::Cuda(i) => probe(spec, || Device::cuda(*i)),
        #[cfg(feature = "wgpu")]
        DeviceSpec::Wgpu(i) => probe(spec, || {
            Device::wgpu(burn::tensor::DeviceKind::DiscreteGpu(*i))
        }),
        #[allow(unreachable_patterns)]
        other => Err(RunError::Device(format!(
            "`runtime.devices` asks for `{other}`, but this dnarun was built without {}; rebuild with `cargo build --release --features {}` or use `cpu`",
            if matches!(other, DeviceSpec::Cuda(_)) {
                "CUDA"
            } else {
                "wgpu"
            },
            if matches!(other, DeviceSpec::Cuda(_)) {
                "cuda"
            } else {
                "wgpu"
            },
        ))),
    }
}

#[cfg(any(feature = "cuda", feature = "wgpu"))]
fn probe(
    spec: &DeviceSpec,
    make: impl Fn() -> Device + std::panic::UnwindSafe,
) -> Result<Device, RunError> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let r = std::panic::catch_unwind(move || {
        let d = make();
        let t = burn::tensor::Tensor::<1>::ones([4], &d);
        let _ = t.sum().into_data();
        d
    });
    std::panic::set_hook(hook);
    r.map_err(|e| {
        let msg = e.downcast_ref::<String>().cloned().or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default();
        RunError::Device(format!("the device `{spec}` in `runtime.devices` cannot be used ({msg}); check the driver, or use `cpu`"))
    })
}

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Keys whose values differ between two resolved recipes.
pub fn differing_keys(a: &serde_json::Value, b: &serde_json::Value) -> Vec<String> {
    let fa: BTreeMap<String, String> = flatten_params(a).into_iter().collect();
    let fb: BTreeMap<String, String> = flatten_params(b).into_iter().collect();
    let mut keys: Vec<String> = fa
        .keys()
        .chain(fb.keys())
        .filter(|k| fa.get(*k) != fb.get(*k))
        .cloned()
        .collect();
    keys.dedup();
    keys
}

fn recipe_hash(v: &serde_json::Value) -> String {
    format!(
        "{:x}",
        Sha256::digest(serde_json::to_string(v).unwrap_or_default().as_bytes())
    )
}

/// The newest run directory of this experiment, if any.
pub fn latest_run(plan: &Plan) -> Option<PathBuf> {
    let prefix = format!("{}-", plan.recipe.experiment.name);
    let mut runs: Vec<PathBuf> = std::fs::read_dir(plan.output_dir())
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.join("dnarun.lock").exists()
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
        })
        .collect();
    runs.sort();
    runs.pop()
}

fn new_run_dir(plan: &Plan) -> Result<PathBuf, RunError> {
    let out = plan.output_dir();
    std::fs::create_dir_all(&out).map_err(|e| RunError::file(&out, e))?;
    for n in 1.. {
        let dir = out.join(format!("{}-{n:03}", plan.recipe.experiment.name));
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(RunError::file(&dir, e)),
        }
    }
    unreachable!()
}

fn open_tracker(plan: &Plan, dir: &Path) -> Result<Box<dyn Tracker>, RunError> {
    let t = &plan.recipe.tracking;
    let experiment = t
        .experiment
        .clone()
        .unwrap_or_else(|| plan.recipe.experiment.name.clone());
    let local = |uri: &str| -> Result<Box<dyn Tracker>, RunError> {
        let rel = uri
            .strip_prefix("file://")
            .or_else(|| uri.strip_prefix("file:"))
            .unwrap_or(uri);
        Ok(Box::new(LocalStore::open(&plan.path(rel), &experiment)?))
    };
    if t.uri.starts_with("http://") || t.uri.starts_with("https://") {
        match MlflowServer::connect(
            &t.uri,
            &experiment,
            &dir.join(format!("tracking-spool-{}.jsonl", std::process::id())),
        ) {
            Ok(s) => Ok(Box::new(s)),
            Err(e) if t.fallback_to_local => {
                tracing::warn!(
                    "{e}; writing to the local store `mlruns` instead (`tracking.fallback_to_local`)"
                );
                local("file:./mlruns")
            }
            Err(e) => Err(e.into()),
        }
    } else {
        local(&t.uri)
    }
}

/// A run directory made ready: lock file written or checked, data loaded, tracking open.
pub struct Prepared {
    /// The run directory.
    pub dir: PathBuf,
    /// The data.
    pub data: data::Dataset,
    /// The device.
    pub device: Device,
    /// Tracking, with the parent run started.
    pub track: Track,
}

/// Makes a new run directory (or reopens `resume`), writes or checks the lock file, loads the
/// data and opens tracking.
pub fn prepare(plan: &Plan, resume: Option<&Path>) -> Result<Prepared, RunError> {
    prepare_on(plan, resume, 0)
}

/// The device of block `i`: blocks go round-robin over `runtime.devices`.
pub fn block_device(plan: &Plan, i: usize) -> usize {
    i % plan.devices.len()
}

/// [`prepare`] for a process that computes on `runtime.devices[device]`. Every listed device is
/// opened first, so a missing one is reported before any work.
pub fn prepare_on(plan: &Plan, resume: Option<&Path>, device: usize) -> Result<Prepared, RunError> {
    let device_spec = &plan.devices[device];
    for (i, d) in plan.devices.iter().enumerate() {
        if i != device && !plan.devices[..i].contains(d) {
            open_device(d)?;
        }
    }
    let device = open_device(device_spec)?;
    let data = data::load(plan)?;
    let dir = match resume {
        Some(d) => d.to_path_buf(),
        None => new_run_dir(plan)?,
    };
    let lock_path = dir.join("dnarun.lock");
    let info = LockInfo {
        dnarun_version: env!("CARGO_PKG_VERSION").into(),
        git_commit: git(&plan.base_dir, &["rev-parse", "HEAD"]).unwrap_or_default(),
        git_dirty: git(&plan.base_dir, &["status", "--porcelain"]).is_some_and(|s| !s.is_empty()),
        burn_version: "0.22.1".into(),
        backend: match device_spec {
            DeviceSpec::Cpu => "flex".into(),
            DeviceSpec::Cuda(_) => "cuda".into(),
            DeviceSpec::Wgpu(_) => "wgpu".into(),
        },
        device: plan
            .devices
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(","),
        seed: plan.recipe.experiment.seed,
        data_fingerprint: data.fingerprint.clone(),
        recipe_sha256: recipe_hash(&plan.recipe_value),
        recipe_dir: plan
            .base_dir
            .canonicalize()
            .unwrap_or(plan.base_dir.clone())
            .display()
            .to_string(),
    };
    if lock_path.exists() {
        let text =
            std::fs::read_to_string(&lock_path).map_err(|e| RunError::file(&lock_path, e))?;
        let old: Lock = toml::from_str(&text)
            .map_err(|e| RunError::file(&lock_path, format!("is not a valid lock file: {e}")))?;
        let diff = differing_keys(&old.recipe, &plan.recipe_value);
        if !diff.is_empty() {
            return Err(RunError::Usage(format!(
                "the recipe changed since the run in `{}` started, so it cannot be resumed; keys that differ: {}. Start a new run instead (drop `--resume`)",
                dir.display(),
                diff.iter()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        if old.lock.data_fingerprint != info.data_fingerprint {
            return Err(RunError::Usage(format!(
                "the dataset changed since the run in `{}` started (fingerprint {} -> {}), so it cannot be resumed; start a new run",
                dir.display(),
                &old.lock.data_fingerprint[..12.min(old.lock.data_fingerprint.len())],
                &info.data_fingerprint[..12]
            )));
        }
    } else {
        write_atomic(
            &lock_path,
            lock_text(&Lock {
                lock: info.clone(),
                recipe: plan.recipe_value.clone(),
            })
            .as_bytes(),
        )?;
    }

    let tracker = open_tracker(plan, &dir)?;
    let mut tracker = tracker;
    let parent = match stages::read_ids(&dir).remove("parent") {
        Some(p) => p,
        None => {
            let name = dir
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            let tags = vec![
                ("dnarun.version".to_string(), info.dnarun_version.clone()),
                (
                    "dnarun.git_commit".into(),
                    format!(
                        "{}{}",
                        info.git_commit,
                        if info.git_dirty { "-dirty" } else { "" }
                    ),
                ),
                ("dnarun.recipe_sha256".into(), info.recipe_sha256.clone()),
                ("dnarun.backend".into(), info.backend.clone()),
                ("dnarun.device".into(), info.device.clone()),
                ("dnarun.run_dir".into(), dir.display().to_string()),
            ];
            let id = tracker.start_run(&name, None, &tags)?;
            tracker.log_params(&id, &flatten_params(&plan.recipe_value))?;
            tracker.log_artifact(&id, &lock_path, "")?;
            tracker.log_artifact(&id, &plan.recipe_path, "")?;
            stages::write_id(&dir, "parent", &id)?;
            id
        }
    };
    let track = Track::new(tracker, parent, dir.clone());
    eprintln!(
        "run directory `{}`; tracking to {}",
        dir.display(),
        track.tracker.describe()
    );
    Ok(Prepared {
        dir,
        data,
        device,
        track,
    })
}

/// Runs the plan; returns the run directory.
pub fn run(plan: &Plan, opts: &Options) -> Result<PathBuf, RunError> {
    let Prepared {
        dir,
        data,
        device,
        mut track,
    } = prepare_on(plan, opts.resume.as_deref(), process_device(plan, opts))?;
    let parent = track.parent.clone();
    let result = run_stages(plan, opts, &data, device, &dir, &mut track);
    let status = match &result {
        Ok(()) if opts.stage.is_none() || opts.stage == Some(Stage::Report) => {
            Some(RunStatus::Finished)
        }
        Ok(()) => None,
        Err(RunError::Stopped(_)) => Some(RunStatus::Killed),
        Err(_) => Some(RunStatus::Failed),
    };
    if let Some(s) = status {
        let _ = track.tracker.end_run(&parent, s);
    }
    let unsent = track.tracker.flush();
    if unsent > 0 {
        eprintln!(
            "warning: {unsent} tracking calls could not be sent; they are kept in `{}`. Send them with `dnarun track replay {}` once the server is back",
            dir.join(format!("tracking-spool-{}.jsonl", std::process::id()))
                .display(),
            dir.display()
        );
    }
    result.map(|()| dir)
}

/// The device this process computes on: a worker's own, a single block's, else the first.
fn process_device(plan: &Plan, opts: &Options) -> usize {
    match (opts.worker, opts.block) {
        (Some(k), _) => k.min(plan.devices.len() - 1),
        (None, Some(b)) => block_device(plan, b),
        _ => 0,
    }
}

/// Runs `stage` (distill or rate) with one worker process per device, each on the blocks
/// assigned to its device, and waits for all of them. Their logs go to `RUN_DIR/workers/`.
fn spread(ctx: &Ctx, stage: Stage) -> Result<(), RunError> {
    let plan = ctx.plan;
    let dir = &ctx.dir;
    let name = match stage {
        Stage::Distill => "distill",
        _ => "rate",
    };
    let done = |i: usize| -> Result<bool, RunError> {
        Ok(match stage {
            Stage::Distill => stages::distill::is_done(ctx, i)?,
            _ => stages::rate::ratings_path(ctx, i).exists(),
        })
    };
    let exe = std::env::current_exe().map_err(|e| {
        RunError::Usage(format!(
            "cannot find the dnarun executable to start workers: {e}"
        ))
    })?;
    let logs = dir.join("workers");
    std::fs::create_dir_all(&logs).map_err(|e| RunError::file(&logs, e))?;
    let mut children = Vec::new();
    for k in 0..plan.devices.len() {
        let mut blocks = Vec::new();
        for i in (0..plan.space.blocks.len()).filter(|&i| block_device(plan, i) == k) {
            if !done(i)? {
                blocks.push(i);
            }
        }
        if blocks.is_empty() {
            continue;
        }
        let log = logs.join(format!("{name}-{k}.log"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(|e| RunError::file(&log, e))?;
        let err = file.try_clone().map_err(|e| RunError::file(&log, e))?;
        let child = std::process::Command::new(&exe)
            .arg("run")
            .arg(dir.join("dnarun.lock"))
            .arg("--run-dir")
            .arg(dir)
            .args(["--stage", name, "--worker", &k.to_string()])
            .stdout(file)
            .stderr(err)
            .spawn()
            .map_err(|e| RunError::Usage(format!("cannot start a {name} worker: {e}")))?;
        tracing::info!(
            "{name}: blocks {blocks:?} on {} (worker {k}, log `{}`)",
            plan.devices[k],
            log.display()
        );
        children.push((k, child, log));
    }
    // Wait for every worker; on Ctrl-C pass the stop on (a terminal's Ctrl-C reaches them
    // anyway; a `kill -INT` of this process alone does not).
    let mut statuses = vec![None; children.len()];
    let mut forwarded = false;
    while statuses.iter().any(Option::is_none) {
        for (j, (_, child, log)) in children.iter_mut().enumerate() {
            if statuses[j].is_none() {
                statuses[j] = child.try_wait().map_err(|e| RunError::file(log, e))?;
            }
        }
        if ctx.stopping() && !forwarded {
            forwarded = true;
            for (j, (_, child, _)) in children.iter().enumerate() {
                if statuses[j].is_none() {
                    let _ = std::process::Command::new("kill")
                        .args(["-INT", &child.id().to_string()])
                        .status();
                }
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let mut stopped = false;
    let mut failed: Vec<String> = Vec::new();
    for ((k, _, log), status) in children.into_iter().zip(statuses) {
        let status = status.expect("every worker finished");
        match status.code() {
            Some(0) => {}
            Some(130) => stopped = true,
            _ => {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(3).collect();
                failed.push(format!(
                    "the {name} worker for `{}` (device {k}) failed ({status}); its log `{}` ends with: {}",
                    plan.devices[k],
                    log.display(),
                    tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
                ));
            }
        }
    }
    if !failed.is_empty() {
        return Err(RunError::Usage(failed.join("; ")));
    }
    if stopped || ctx.stopping() {
        return Err(ctx.stopped());
    }
    Ok(())
}

fn run_stages(
    plan: &Plan,
    opts: &Options,
    data: &data::Dataset,
    device: Device,
    dir: &Path,
    track: &mut Track,
) -> Result<(), RunError> {
    let mut ctx = Ctx {
        plan,
        data,
        device,
        dir: dir.to_path_buf(),
        track,
        stop: opts.stop.clone(),
    };
    let want = |s: Stage| opts.stage.is_none_or(|o| o == s);
    let needs_teacher = want(Stage::Teacher) || want(Stage::Distill) || want(Stage::Rate);
    let teacher = if needs_teacher {
        Some(stages::teacher::run(&mut ctx)?)
    } else {
        None
    };
    let nblocks = plan.space.blocks.len();
    let only: Option<Vec<usize>> = match (opts.block, opts.worker) {
        (Some(b), _) => Some(vec![b]),
        (None, Some(k)) => Some(
            (0..nblocks)
                .filter(|&i| block_device(plan, i) == k)
                .collect(),
        ),
        (None, None) => None,
    };
    let spread_out = plan.devices.len() > 1 && only.is_none();
    for stage in [Stage::Distill, Stage::Rate] {
        if !want(stage) {
            continue;
        }
        let teacher = teacher.as_ref().expect("teacher");
        match (spread_out, stage) {
            (true, _) => spread(&ctx, stage)?,
            (false, Stage::Distill) => stages::distill::run(&mut ctx, teacher, only.as_deref())?,
            (false, _) => stages::rate::run(&mut ctx, teacher, only.as_deref())?,
        }
    }
    if only.is_some() {
        return Ok(());
    }
    let result = if want(Stage::Search) || want(Stage::Retrain) || want(Stage::Report) {
        Some(stages::search::run(&mut ctx)?)
    } else {
        None
    };
    if want(Stage::Retrain) || want(Stage::Report) {
        let retrained = stages::retrain::run(&mut ctx, result.as_ref().expect("search"))?;
        if want(Stage::Report) {
            let teacher_acc = teacher_accuracy(dir);
            let report = stages::report::run(&mut ctx, teacher_acc, retrained)?;
            println!("{}", report.table());
            println!("report: {}", dir.join("report.md").display());
        }
    }
    Ok(())
}

fn teacher_accuracy(dir: &Path) -> Option<f64> {
    let v: serde_json::Value = read_json(&dir.join("teacher").join("state.json")).ok()??;
    v.get("accuracy")?.as_f64()
}

/// Retrains one architecture from scratch in a new run directory; returns its test accuracy.
pub fn retrain_arch(
    plan: &Plan,
    chosen: &stages::search::Chosen,
    stop: Arc<AtomicBool>,
) -> Result<f64, RunError> {
    let device = open_device(&plan.devices[0])?;
    let data = data::load(plan)?;
    let dir = new_run_dir(plan)?;
    let mut tracker = open_tracker(plan, &dir)?;
    let name = format!(
        "{}-retrain-{}",
        dir.file_name().unwrap_or_default().to_string_lossy(),
        chosen.name
    );
    let parent = tracker.start_run(
        &name,
        None,
        &[("dnarun.version".into(), env!("CARGO_PKG_VERSION").into())],
    )?;
    tracker.log_params(&parent, &flatten_params(&plan.recipe_value))?;
    let mut track = Track::new(tracker, parent.clone(), dir.clone());
    let result = {
        let mut ctx = Ctx {
            plan,
            data: &data,
            device,
            dir: dir.clone(),
            track: &mut track,
            stop,
        };
        let recipe = plan
            .recipe_path
            .canonicalize()
            .unwrap_or(plan.recipe_path.clone());
        stages::retrain::retrain_one(
            &mut ctx,
            chosen,
            &dir.join("retrain").join(&chosen.name),
            &recipe.display().to_string(),
        )
    };
    let _ = track.tracker.end_run(
        &parent,
        if result.is_ok() {
            RunStatus::Finished
        } else {
            RunStatus::Failed
        },
    );
    track.tracker.flush();
    result
}
