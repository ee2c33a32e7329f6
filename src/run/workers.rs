//! One worker process per device for distillation and rating: each runs the blocks assigned to
//! its device (`dnarun run LOCK --run-dir DIR --stage S --worker K`), logging to
//! `RUN_DIR/workers/`; the run waits for all of them and passes a stop on.

use std::process::{Child, ExitStatus};

use super::RunError;
use super::Stage;
use crate::rundir::RunDirError;
use crate::stages::{self, Ctx};

/// A started worker: its device, process and log.
struct Worker {
    device: usize,
    child: Child,
    log: std::path::PathBuf,
}

/// Runs `stage` (distill or rate) with one worker process per device, each on the unfinished
/// blocks assigned to its device, and waits for all of them.
pub(super) fn spread(ctx: &Ctx, stage: Stage) -> Result<(), RunError> {
    let workers = start(ctx, stage)?;
    let statuses = wait(ctx, workers.iter().map(|w| w.device).collect(), workers)?;
    let mut stopped = false;
    let mut failed: Vec<String> = Vec::new();
    for (device, status, log) in statuses {
        match status.code() {
            Some(0) => {}
            Some(130) => stopped = true,
            _ => {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(3).collect();
                failed.push(format!(
                    "the {} worker for `{}` (device {device}) failed ({status}); its log `{}` ends with: {}",
                    stage.name(),
                    ctx.plan.devices.list[device],
                    log.display(),
                    tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
                ));
            }
        }
    }
    if !failed.is_empty() {
        return Err(RunError::WorkersFailed(failed));
    }
    if stopped || ctx.stopping() {
        return Err(ctx.stopped().into());
    }
    Ok(())
}

fn start(ctx: &Ctx, stage: Stage) -> Result<Vec<Worker>, RunError> {
    let plan = ctx.plan;
    let name = stage.name();
    let exe = std::env::current_exe().map_err(|e| RunError::Process {
        what: "find the dnarun executable to start workers".into(),
        reason: e.to_string(),
    })?;
    let mut workers = Vec::new();
    for k in 0..plan.devices.len() {
        let mut blocks = Vec::new();
        for i in plan.devices.blocks_of(k, plan.space.blocks.len()) {
            let done = match stage {
                Stage::Distill => stages::distill::is_done(ctx, i)?,
                _ => ctx.dir.ratings(i).exists(),
            };
            if !done {
                blocks.push(i);
            }
        }
        if blocks.is_empty() {
            continue;
        }
        let log = ctx.dir.worker_log(name, k);
        if let Some(parent) = log.parent() {
            std::fs::create_dir_all(parent).map_err(|e| RunDirError::write(parent, e))?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(|e| RunDirError::write(&log, e))?;
        let err = file.try_clone().map_err(|e| RunDirError::write(&log, e))?;
        let child = std::process::Command::new(&exe)
            .arg("run")
            .arg(ctx.dir.lock_file())
            .arg("--run-dir")
            .arg(ctx.dir.root())
            .args(["--stage", name, "--worker", &k.to_string()])
            .args((!ctx.cache.is_on()).then_some("--no-cache"))
            .stdout(file)
            .stderr(err)
            .spawn()
            .map_err(|e| RunError::Process {
                what: format!("start a {name} worker"),
                reason: e.to_string(),
            })?;
        tracing::info!(
            "{name}: blocks {blocks:?} on {} (worker {k}, log `{}`)",
            plan.devices.list[k],
            log.display()
        );
        workers.push(Worker {
            device: k,
            child,
            log,
        });
    }
    Ok(workers)
}

/// Waits for every worker; on Ctrl-C passes the stop on (a terminal's Ctrl-C reaches them
/// anyway; a `kill -INT` of this process alone does not).
fn wait(
    ctx: &Ctx,
    devices: Vec<usize>,
    mut workers: Vec<Worker>,
) -> Result<Vec<(usize, ExitStatus, std::path::PathBuf)>, RunError> {
    let mut statuses: Vec<Option<ExitStatus>> = vec![None; workers.len()];
    let mut forwarded = false;
    while statuses.iter().any(Option::is_none) {
        for (j, w) in workers.iter_mut().enumerate() {
            if statuses[j].is_none() {
                statuses[j] = w.child.try_wait().map_err(|e| RunError::Process {
                    what: format!("wait for the worker logging to `{}`", w.log.display()),
                    reason: e.to_string(),
                })?;
            }
        }
        if ctx.stopping() && !forwarded {
            forwarded = true;
            for (j, w) in workers.iter().enumerate() {
                if statuses[j].is_none() {
                    let _ = std::process::Command::new("kill")
                        .args(["-INT", &w.child.id().to_string()])
                        .status();
                }
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    Ok(devices
        .into_iter()
        .zip(statuses)
        .zip(workers)
        .map(|((d, s), w)| (d, s.expect("every worker finished"), w.log))
        .collect())
}
