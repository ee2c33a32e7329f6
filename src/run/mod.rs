//! The interpreter: makes (or reopens) the run directory, writes the lock file, opens tracking,
//! and runs the stages in order, skipping what is already done, so a killed run resumes. With
//! several devices, distillation and rating run as one worker process per device (`workers`).

pub mod commands;
mod error;
pub mod init;
pub mod latency;
pub mod measure;
pub mod resources;
pub mod sweep;
mod workers;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::data;
use crate::nn::device::{check_devices, open_device};
use crate::plan::Plan;
use crate::rundir::{LockInfo, RunDir, RunDirError};
use crate::stages::{self, Ctx, StageError, Track};
use crate::track::{self, RunStatus, flatten_params};
pub use error::RunError;

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

impl Stage {
    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Teacher => "teacher",
            Stage::Distill => "distill",
            Stage::Rate => "rate",
            Stage::Search => "search",
            Stage::Retrain => "retrain",
            Stage::Report => "report",
        }
    }
}

/// Which run directory a run writes into.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Resume {
    /// A new one.
    #[default]
    New,
    /// The newest run of the recipe (`--resume`).
    Latest,
    /// This one (`--run-dir`, `dnarun resume`).
    Dir(PathBuf),
}

/// What a command asks the interpreter to run: built by the command line, read by [`run`].
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// Only this stage.
    pub stage: Option<Stage>,
    /// Only this block (distill, rate).
    pub block: Option<usize>,
    /// This process is the worker for `runtime.devices[K]`: it distills or rates the blocks
    /// assigned to that device, on it (started by a run with several devices).
    pub worker: Option<usize>,
    /// Which run directory.
    pub resume: Resume,
    /// Set by Ctrl-C.
    pub stop: Arc<AtomicBool>,
    /// Run the ranking study after the search instead of retraining and reporting.
    pub study: bool,
    /// With `study`: retrain only this net (a Slurm array task) and stop.
    pub net: Option<usize>,
    /// Compute every stage, neither taking nor storing units in the stage cache (`--no-cache`).
    pub no_cache: bool,
    /// The MLflow run the run's parent run belongs to (a sweep's).
    pub sweep_run: Option<String>,
}

impl Request {
    /// The stage cache this request uses.
    fn cache(&self, plan: &Plan) -> crate::rundir::Cache {
        crate::rundir::Cache::new((!self.no_cache).then(|| plan.experiment.cache_dir.clone()))
    }

    /// Checks the request against the plan and resolves `--resume` to a run directory.
    fn resolve(&self, plan: &Plan) -> Result<Option<PathBuf>, RunError> {
        if self.study && self.stage.is_some() {
            // The study runs after the search: it needs every stage before it.
            return Err(RunError::BadOption {
                option: "stage",
                problem: "a study runs every stage up to the search and then its own nets; leave out `--stage` (use `--net K` for one net)".into(),
            });
        }
        if let Some(k) = self.worker
            && k >= plan.devices.len()
        {
            return Err(RunError::NoSuchWorker {
                worker: k,
                devices: plan.devices.len(),
            });
        }
        if let Some(b) = self.block
            && b >= plan.space.blocks.len()
        {
            return Err(RunError::NoSuchBlock {
                block: b,
                last: plan.space.blocks.len() - 1,
            });
        }
        Ok(match &self.resume {
            Resume::New => None,
            Resume::Dir(d) => Some(d.clone()),
            Resume::Latest => Some(
                RunDir::latest(plan)
                    .ok_or_else(|| RunError::NothingToResume {
                        experiment: plan.experiment.name.clone(),
                        output_dir: plan.experiment.output_dir.clone(),
                    })?
                    .root()
                    .to_path_buf(),
            ),
        })
    }
}

/// A run directory made ready: lock file written or checked, data loaded, tracking open.
pub struct Prepared {
    /// The run directory.
    pub dir: RunDir,
    /// This process's hold on it.
    pub lock: crate::rundir::RunLock,
    /// The data.
    pub data: data::Dataset,
    /// The device.
    pub device: Device,
    /// Tracking, with the parent run started.
    pub track: Track,
}

/// [`prepare`] for a process that computes on `runtime.devices[device]`: makes a new run
/// directory (or reopens `resume`), writes or checks the lock file, loads the data and opens
/// tracking. Every listed device is opened first, so a missing one is reported before any work.
pub fn prepare(
    plan: &Plan,
    resume: Option<&Path>,
    device: usize,
    part: Option<&str>,
    study: bool,
    sweep_run: Option<&str>,
) -> Result<Prepared, RunError> {
    check_devices(&plan.devices.list)?;
    let opened = open_device(&plan.devices.list[device])?;
    let (dir, lock, data, track) = make_ready(plan, resume, device, part, study, true, sweep_run)?;
    let track = track.expect("tracking asked for");
    Ok(Prepared {
        dir,
        lock,
        data,
        device: opened,
        track,
    })
}

/// The part of [`prepare`] that opens no device (`submit` makes a run directory ready on a
/// machine that need not have the run's devices): the data read and sampled, the teacher's
/// weights checked (for a new run), the run directory made or reopened and held, the lock file
/// written or checked, and with `tracking` (not for `submit --dry-run`, which must leave no
/// MLflow run behind) tracking opened with the parent run started.
fn make_ready(
    plan: &Plan,
    resume: Option<&Path>,
    device: usize,
    part: Option<&str>,
    study: bool,
    tracking: bool,
    sweep_run: Option<&str>,
) -> Result<(RunDir, crate::rundir::RunLock, data::Dataset, Option<Track>), RunError> {
    let device_spec = &plan.devices.list[device];
    let data = data::load(plan)?;
    if resume.is_none() {
        check_weights(plan)?;
        for n in &plan.notes {
            eprintln!("note: {n}");
        }
    }
    let dir = match resume {
        Some(d) => RunDir::open(plan, d),
        None => RunDir::create(plan)?,
    };
    if !dir.root().is_dir() {
        return Err(RunDirError::NotARunDir {
            path: dir.root().to_path_buf(),
            why: "it does not exist",
        }
        .into());
    }
    let lock = dir.lock(part)?;
    let info = LockInfo::current(plan, device_spec, &data.fingerprint, study);
    dir.write_or_check_lock(&plan.source.value, &info)?;
    if !tracking {
        eprintln!("run directory `{}`", dir.root().display());
        return Ok((dir, lock, data, None));
    }
    let mut tracker = track::open(&plan.tracking, &dir.spool())?;
    let parent = match dir.tracking_ids().remove("parent") {
        Some(p) => p,
        None => {
            let tags = vec![
                ("dnarun.version".to_string(), info.dnarun_version.clone()),
                ("dnarun.git_commit".into(), info.commit_label()),
                ("dnarun.recipe_sha256".into(), info.recipe_sha256.clone()),
                ("dnarun.backend".into(), info.backend.clone()),
                ("dnarun.device".into(), info.device.clone()),
                ("dnarun.run_dir".into(), dir.root().display().to_string()),
            ];
            let id = tracker.start_run(&dir.name(), sweep_run, &tags)?;
            tracker.log_params(&id, &flatten_params(&plan.source.value))?;
            tracker.log_inputs(&id, &dataset_inputs(plan, &data))?;
            tracker.log_artifact(&id, &dir.lock_file(), "")?;
            tracker.log_artifact(&id, &plan.source.path, "")?;
            if let Some(l) = &plan.search.latency {
                tracker.log_artifact(&id, &l.file, "latency")?;
                if let Some(v) = &l.table.validation {
                    let m = |key: &str, value: f64| track::Metric {
                        key: key.into(),
                        value,
                        step: 0,
                        timestamp: track::now_ms(),
                    };
                    tracker.log_metrics(
                        &id,
                        &[
                            m("latency_table_kendall_tau", v.kendall_tau),
                            m("latency_table_mean_rel_error", v.mean_rel_error),
                            m("latency_table_max_rel_error", v.max_rel_error),
                        ],
                    )?;
                }
            }
            dir.write_tracking_id("parent", &id)?;
            id
        }
    };
    let mut track = Track::new(tracker, parent, dir.clone());
    if let Some(every) = plan.tracking.system_metrics {
        track = track.with_system_metrics(every);
    }
    eprintln!(
        "run directory `{}`; tracking to {}",
        dir.root().display(),
        track.tracker.describe()
    );
    Ok((dir, lock, data, Some(track)))
}

/// Reads the teacher's weights file, if the recipe names one, as the teacher stage will.
fn check_weights(plan: &Plan) -> Result<(), RunError> {
    if let Some((path, format)) = &plan.teacher.weights {
        crate::nn::weights::check_teacher(
            path,
            *format,
            &plan.teacher,
            plan.data.channels,
            plan.data.classes,
        )?;
    }
    Ok(())
}

/// The datasets of a run as MLflow dataset inputs: the training split, the distillation and
/// rating subsets drawn from it, and the test split, with the run's data fingerprint as digest.
fn dataset_inputs(plan: &Plan, data: &data::Dataset) -> Vec<track::DatasetInput> {
    let source = |s: &crate::plan::SplitSpec| match s {
        crate::plan::SplitSpec::Idx { images, .. } => images.display().to_string(),
        crate::plan::SplitSpec::Cifar { files } => files
            .first()
            .map(|f| f.display().to_string())
            .unwrap_or_default(),
        crate::plan::SplitSpec::Folder { dir } => dir.display().to_string(),
    };
    let digest = data.fingerprint.chars().take(12).collect::<String>();
    [
        ("train", &plan.data.train, data.train_idx.len()),
        ("distill", &plan.data.train, data.search.len()),
        ("rate", &plan.data.train, data.rate.len()),
        ("test", &plan.data.test, data.test_idx.len()),
    ]
    .into_iter()
    .map(|(role, split, rows)| track::DatasetInput {
        name: format!("{}-{role}", plan.experiment.name),
        digest: digest.clone(),
        source: source(split),
        context: role.into(),
        rows,
    })
    .collect()
}

/// Runs the plan as asked; returns the run directory.
pub fn run(plan: &Plan, opts: &Request) -> Result<PathBuf, RunError> {
    let resume = opts.resolve(plan)?;
    let part = match (opts.block, opts.worker, opts.net) {
        (Some(b), _, _) => Some(format!("block{b}")),
        (None, Some(k), _) => Some(format!("worker{k}")),
        (None, None, Some(k)) => Some(format!("net{k}")),
        _ => None,
    };
    let Prepared {
        dir,
        lock: _lock,
        data,
        device,
        mut track,
    } = prepare(
        plan,
        resume.as_deref(),
        process_device(plan, opts),
        part.as_deref(),
        opts.study,
        opts.sweep_run.as_deref(),
    )?;
    let parent = track.parent.clone();
    let result = run_stages(plan, opts, &data, device, &dir, &mut track);
    if part.is_none() {
        dir.record_units_in_lock()?;
    }
    let status = match &result {
        Ok(()) if opts.stage.is_none() || opts.stage == Some(Stage::Report) => {
            Some(RunStatus::Finished)
        }
        Ok(()) => None,
        Err(e) if e.is_stop() => Some(RunStatus::Killed),
        Err(_) => Some(RunStatus::Failed),
    };
    let _ = track.log_system();
    if let Some(s) = status {
        let _ = track.tracker.end_run(&parent, s);
    }
    let unsent = track.tracker.flush();
    if unsent > 0 {
        eprintln!(
            "warning: {unsent} tracking calls could not be sent; they are kept in `{}`. Send them with `dnarun track replay {}` once the server is back",
            dir.spool().display(),
            dir.root().display()
        );
    }
    result.map(|()| dir.root().to_path_buf())
}

/// The device this process computes on: a worker's own, a single block's, else the first.
fn process_device(plan: &Plan, opts: &Request) -> usize {
    match (opts.worker, opts.block) {
        (Some(k), _) => k.min(plan.devices.len() - 1),
        (None, Some(b)) => plan.devices.device_of_block(b),
        _ => 0,
    }
}

fn run_stages(
    plan: &Plan,
    opts: &Request,
    data: &data::Dataset,
    device: Device,
    dir: &RunDir,
    track: &mut Track,
) -> Result<(), RunError> {
    let mut ctx = Ctx {
        plan,
        data,
        device,
        dir: dir.clone(),
        track,
        stop: opts.stop.clone(),
        cache: opts.cache(plan),
    };
    let keys = stages::StageKeys::of(plan, data);
    let want = |s: Stage| opts.stage.is_none_or(|o| o == s);
    let needs_teacher = want(Stage::Teacher) || want(Stage::Distill) || want(Stage::Rate);
    let teacher = if needs_teacher {
        let unit = dir.teacher_unit();
        ctx.adopt(&unit, &keys.teacher, dir.progress()?.teacher)?;
        let t = measured(&mut ctx, Stage::Teacher, stages::teacher::run)?;
        ctx.publish(&unit, &keys.teacher)?;
        Some(t)
    } else {
        None
    };
    let nblocks = plan.space.blocks.len();
    let only: Option<Vec<usize>> = match (opts.block, opts.worker) {
        (Some(b), _) => Some(vec![b]),
        (None, Some(k)) => Some(plan.devices.blocks_of(k, nblocks)),
        (None, None) => None,
    };
    let mine: Vec<usize> = only.clone().unwrap_or_else(|| (0..nblocks).collect());
    let spread_out = plan.devices.len() > 1 && only.is_none();
    for stage in [Stage::Distill, Stage::Rate] {
        if !want(stage) {
            continue;
        }
        let block_unit = |i: usize| match stage {
            Stage::Distill => (dir.distill_unit(i), &keys.distill[i]),
            _ => (dir.rate_unit(i), &keys.rate[i]),
        };
        let done = |p: &crate::rundir::Progress, i: usize| match stage {
            Stage::Distill => p.distilled[i],
            _ => p.rated[i],
        };
        let progress = dir.progress()?;
        for &i in &mine {
            let (unit, key) = block_unit(i);
            ctx.adopt(&unit, key, done(&progress, i))?;
        }
        let teacher = teacher.as_ref().expect("teacher");
        let only = only.as_deref();
        match (spread_out, stage) {
            (true, _) => workers::spread(&ctx, stage)?,
            (false, Stage::Distill) => {
                measured(&mut ctx, stage, |c| stages::distill::run(c, teacher, only))?
            }
            (false, _) => measured(&mut ctx, stage, |c| stages::rate::run(c, teacher, only))?,
        }
        let progress = dir.progress()?;
        for &i in &mine {
            let (unit, key) = block_unit(i);
            if done(&progress, i) {
                ctx.publish(&unit, key)?;
            }
        }
    }
    if only.is_some() {
        return Ok(());
    }
    let result = if want(Stage::Search) || want(Stage::Retrain) || want(Stage::Report) {
        Some(measured(&mut ctx, Stage::Search, stages::search::run)?)
    } else {
        None
    };
    if opts.study {
        let found = result.as_ref().expect("search");
        let ratings = stages::rate::load_all(&ctx)?;
        match measured_study(&mut ctx, &ratings, found, opts.net)? {
            Some(report) => {
                say(&format!(
                    "{}\nstudy: {}",
                    report.markdown(),
                    dir.study("md").display()
                ));
            }
            None => say(&format!(
                "study net {} retrained",
                opts.net.unwrap_or_default()
            )),
        }
        return Ok(());
    }
    if want(Stage::Retrain) || want(Stage::Report) {
        let found = result.as_ref().expect("search");
        let retrained = measured(&mut ctx, Stage::Retrain, |c| stages::retrain::run(c, found))?;
        if want(Stage::Report) {
            let teacher_acc = dir.teacher_accuracy()?;
            let report = stages::report::run(&mut ctx, teacher_acc, retrained)?;
            say(&format!(
                "{}\nreport: {}",
                report.table(),
                dir.report("md").display()
            ));
        }
    }
    Ok(())
}

/// Prints a line of a run's result; a closed stdout (`dnarun r.toml | head`) loses the line, not
/// the run, whose results are in its directory.
fn say(text: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout(), "{text}");
}

/// Runs a stage, recording the process's peak resident memory while it ran (in
/// `RUN_DIR/resources.json`, the maximum over the processes that ran it, and as the parent run's
/// metric `peak_rss_bytes_<stage>`).
fn measured<T>(
    ctx: &mut Ctx,
    stage: Stage,
    f: impl FnOnce(&mut Ctx) -> Result<T, StageError>,
) -> Result<T, RunError> {
    resources::reset_peak_rss();
    let started = std::time::Instant::now();
    let out = f(ctx)?;
    let seconds = started.elapsed().as_secs_f64();
    if let Some(peak) = resources::peak_rss_bytes() {
        let recorded = ctx.dir.record_stage(stage.name(), peak, seconds)?;
        let parent = ctx.track.parent.clone();
        let key = format!("peak_rss_bytes_{}", stage.name());
        ctx.track
            .metrics(&parent, 0, &[(key.as_str(), recorded as f64)])?;
        tracing::info!(
            "{}: peak memory {:.1} MiB",
            stage.name(),
            peak as f64 / 1048576.0
        );
    }
    Ok(out)
}

fn measured_study(
    ctx: &mut Ctx,
    ratings: &[stages::rate::BlockRatings],
    found: &stages::search::SearchResult,
    only: Option<usize>,
) -> Result<Option<stages::study::StudyReport>, RunError> {
    resources::reset_peak_rss();
    let started = std::time::Instant::now();
    let out = stages::study::run(ctx, ratings, found, only)?;
    if let Some(peak) = resources::peak_rss_bytes() {
        ctx.dir
            .record_stage("study", peak, started.elapsed().as_secs_f64())?;
    }
    Ok(out)
}

/// Retrains one architecture from scratch in a new run directory; returns its test accuracy and
/// the run directory.
pub fn retrain_arch(
    plan: &Plan,
    chosen: &stages::search::Chosen,
    stop: Arc<AtomicBool>,
) -> Result<(f64, PathBuf), RunError> {
    let device = open_device(&plan.devices.list[0])?;
    let data = data::load(plan)?;
    let dir = RunDir::create(plan)?;
    eprintln!(
        "retraining `{}` for {} epoch{} in the new run directory `{}`",
        chosen.name,
        plan.retrain.train.epochs,
        if plan.retrain.train.epochs == 1 {
            ""
        } else {
            "s"
        },
        dir.root().display()
    );
    let mut tracker = track::open(&plan.tracking, &dir.spool())?;
    let name = format!("{}-retrain-{}", dir.name(), chosen.name);
    let parent = tracker.start_run(
        &name,
        None,
        &[("dnarun.version".into(), env!("CARGO_PKG_VERSION").into())],
    )?;
    tracker.log_params(&parent, &flatten_params(&plan.source.value))?;
    let mut track = Track::new(tracker, parent.clone(), dir.clone());
    let result = {
        let mut ctx = Ctx {
            plan,
            data: &data,
            device,
            dir: dir.clone(),
            track: &mut track,
            stop,
            cache: crate::rundir::Cache::new(Some(plan.experiment.cache_dir.clone())),
        };
        let recipe = plan
            .source
            .path
            .canonicalize()
            .unwrap_or(plan.source.path.clone());
        stages::retrain::retrain_one(&mut ctx, chosen, &recipe.display().to_string())
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
    Ok((result?, dir.root().to_path_buf()))
}
