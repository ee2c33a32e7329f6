//! The run directory: the one owner of its layout. Every path of a run is a method here; every
//! write goes through [`write_atomic`] (temp file + rename); the lock file, the stage state files,
//! the tagged checkpoints and the tracking ids have one format each, defined here; and
//! [`RunDir::progress`] says what is finished, for `status`, `resume`, `submit --slurm` and the
//! stages alike.
//!
//! ```text
//! RUN_DIR/dnarun.lock                 the resolved recipe and what else the run used
//! RUN_DIR/teacher/                    state.json, model*.bpk, teacher.safetensors
//! RUN_DIR/distill/blockI/             state.json, supernet-<tag>.bpk, optim-<tag>.bpk
//! RUN_DIR/rate/blockI.{json,csv}      every path's rating
//! RUN_DIR/search/                     result.json, pareto.svg
//! RUN_DIR/retrain/NAME/               arch.toml, state.json, model.bpk, model.safetensors
//! RUN_DIR/report.{md,csv,json}
//! RUN_DIR/study/NAME/sK/              a study net's seed K; study.{json,md,svg}, predictor.json
//! RUN_DIR/resources.json              peak resident memory and seconds per stage
//! RUN_DIR/stages/UNIT.json           each unit's cache key, and where it was reused from
//! RUN_DIR/tracking/NAME.id            MLflow run ids; tracking-spool-PID.jsonl unsent calls
//! RUN_DIR/workers/STAGE-K.log         logs of per-device workers
//! RUN_DIR/slurm/                      NAME.sbatch, jobs.json, logs/
//! ```

mod cache;
mod error;
pub mod files;
mod lock;
mod state;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use crate::recipe::differing_keys;
pub use cache::{Cache, Key, KeyBuilder, Unit, UnitRecord};
pub use error::RunDirError;
pub use files::{
    Checkpoints, load_module, read_json, save_module, save_optim, write_atomic, write_json,
};
pub use lock::{Lock, LockInfo};
pub use state::{DistillState, StabilityPoint, TrainState};

use crate::plan::Plan;

/// A run directory of a plan.
#[derive(Debug, Clone)]
pub struct RunDir {
    root: PathBuf,
    blocks: usize,
    distill_epochs: usize,
}

/// A process's hold on a run directory (see [`RunDir::lock`]); released when dropped.
#[derive(Debug)]
pub struct RunLock {
    _files: Vec<std::fs::File>,
}

/// What is finished in a run directory.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    /// The teacher is trained (or loaded) and evaluated.
    pub teacher: bool,
    /// Per block: epochs distilled so far.
    pub epochs: Vec<usize>,
    /// Per block: distilled for every epoch.
    pub distilled: Vec<bool>,
    /// Per block: every path rated.
    pub rated: Vec<bool>,
    /// The search is done.
    pub searched: bool,
    /// The report is written.
    pub reported: bool,
}

/// What each stage of a run cost (`resources.json`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Resources {
    /// Peak resident memory of each stage, in bytes (the largest over the processes that ran it).
    pub peak_rss_bytes: BTreeMap<String, u64>,
    /// Wall-clock seconds of each stage (summed over the processes that ran it).
    pub seconds: BTreeMap<String, f64>,
}

/// The Slurm jobs of a submitted run (`slurm/jobs.json`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Jobs {
    /// Stage name -> Slurm job id.
    pub jobs: BTreeMap<String, String>,
}

impl RunDir {
    /// The run directory at `root` of a run of `plan`.
    pub fn open(plan: &Plan, root: &Path) -> RunDir {
        RunDir {
            root: root.to_path_buf(),
            blocks: plan.space.blocks.len(),
            distill_epochs: plan.distill.epochs,
        }
    }

    /// Makes a new, numbered run directory (`<output_dir>/<name>-NNN`).
    pub fn create(plan: &Plan) -> Result<RunDir, RunDirError> {
        let out = &plan.experiment.output_dir;
        std::fs::create_dir_all(out).map_err(|e| RunDirError::write(out, e))?;
        for n in 1.. {
            let dir = out.join(format!("{}-{n:03}", plan.experiment.name));
            match std::fs::create_dir(&dir) {
                Ok(()) => return Ok(RunDir::open(plan, &dir)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(RunDirError::write(&dir, e)),
            }
        }
        unreachable!("some run number is free")
    }

    /// The newest run directory of the plan's experiment, if any.
    pub fn latest(plan: &Plan) -> Option<RunDir> {
        let prefix = format!("{}-", plan.experiment.name);
        let mut runs: Vec<PathBuf> = std::fs::read_dir(&plan.experiment.output_dir)
            .ok()?
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.join(LOCK).exists()
                    && p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
            })
            .collect();
        runs.sort();
        runs.pop().map(|p| RunDir::open(plan, &p))
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Its folder name (the run's name in tracking).
    pub fn name(&self) -> String {
        self.root
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned()
    }

    /// The same directory with an absolute path.
    pub fn canonical(&self) -> RunDir {
        RunDir {
            root: self.root.canonicalize().unwrap_or(self.root.clone()),
            ..self.clone()
        }
    }

    /// `dnarun.lock`.
    pub fn lock_file(&self) -> PathBuf {
        lock_file(&self.root)
    }

    /// Writes the lock file of a new run, or checks a resumed run's against `now`.
    pub fn write_or_check_lock(
        &self,
        recipe: &serde_json::Value,
        now: &LockInfo,
    ) -> Result<(), RunDirError> {
        let path = self.lock_file();
        if path.exists() {
            Lock::read(&path)?.check_resume(&self.root, recipe, now)
        } else {
            let lock = Lock {
                lock: now.clone(),
                recipe: recipe.clone(),
                stages: BTreeMap::new(),
            };
            write_atomic(&path, lock.text().as_bytes())
        }
    }

    /// Copies the units' records (`stages/`) into the lock file's `[stages]` table.
    pub fn record_units_in_lock(&self) -> Result<(), RunDirError> {
        let path = self.lock_file();
        let mut lock = Lock::read(&path)?;
        let units = self.unit_records();
        if lock.stages != units {
            lock.stages = units;
            write_atomic(&path, lock.text().as_bytes())?;
        }
        Ok(())
    }

    /// Takes the run directory for this process: exclusively, or with `part` (a block:
    /// `block3`) shared with the processes that run other blocks at once and exclusively for
    /// that block, or as a worker of the process that holds it (`worker1`: that part only). A second writer is refused with a clear message; the lock goes
    /// with the returned value (and with the process).
    pub fn lock(&self, part: Option<&str>) -> Result<RunLock, RunDirError> {
        let open = |name: &str| -> Result<(std::fs::File, PathBuf), RunDirError> {
            let path = self.root.join(name);
            let f = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .read(true)
                .write(true)
                .open(&path)
                .map_err(|e| RunDirError::write(&path, e))?;
            Ok((f, path))
        };
        let busy = |path: &Path, part: &str| RunDirError::Busy {
            path: self.root.clone(),
            part: part.to_string(),
            holder: std::fs::read_to_string(path)
                .ok()
                .and_then(|h| h.trim().parse().ok()),
        };
        let (whole, whole_path) = open(".lock")?;
        let mut files = Vec::new();
        match part {
            None => {
                whole
                    .try_lock()
                    .map_err(|_| busy(&whole_path, "the whole run"))?;
                let _ = std::fs::write(&whole_path, std::process::id().to_string());
            }
            Some(part) => {
                // A worker runs under its parent's exclusive hold.
                if !part.starts_with("worker") {
                    whole
                        .try_lock_shared()
                        .map_err(|_| busy(&whole_path, "the whole run"))?;
                }
                let (own, own_path) = open(&format!(".lock-{part}"))?;
                own.try_lock().map_err(|_| busy(&own_path, part))?;
                let _ = std::fs::write(&own_path, std::process::id().to_string());
                files.push(own);
            }
        }
        files.push(whole);
        Ok(RunLock { _files: files })
    }

    /// The teacher's files.
    pub fn teacher(&self) -> Checkpoints {
        Checkpoints::new(self.root.join("teacher"), "model", "optim")
    }

    /// The teacher's weights exported as safetensors.
    pub fn teacher_export(&self) -> PathBuf {
        self.root.join("teacher").join("teacher.safetensors")
    }

    /// Block `i`'s distillation files.
    pub fn distill(&self, i: usize) -> Checkpoints {
        Checkpoints::new(self.distill_dir(i), "supernet", "optim")
    }

    /// Block `i`'s distillation folder.
    pub fn distill_dir(&self, i: usize) -> PathBuf {
        self.root.join("distill").join(format!("block{i}"))
    }

    /// Block `i`'s distillation state (default when it has not started).
    pub fn distill_state(&self, i: usize) -> Result<DistillState, RunDirError> {
        Ok(read_json(&self.distill(i).state())?.unwrap_or_default())
    }

    /// Block `i`'s ratings as JSON.
    pub fn ratings(&self, i: usize) -> PathBuf {
        self.root.join("rate").join(format!("block{i}.json"))
    }

    /// Block `i`'s ratings as CSV.
    pub fn ratings_csv(&self, i: usize) -> PathBuf {
        self.root.join("rate").join(format!("block{i}.csv"))
    }

    /// The search result.
    pub fn search_result(&self) -> PathBuf {
        self.root.join("search").join("result.json")
    }

    /// The Pareto plot.
    pub fn pareto_svg(&self) -> PathBuf {
        self.root.join("search").join("pareto.svg")
    }

    /// The Pareto plot against predicted latency (with a latency table).
    pub fn pareto_latency_svg(&self) -> PathBuf {
        self.root.join("search").join("pareto-latency.svg")
    }

    /// A retrained architecture's folder.
    pub fn retrain_dir(&self, name: &str) -> PathBuf {
        self.root.join("retrain").join(name)
    }

    /// A retrained architecture's files.
    pub fn retrain(&self, name: &str) -> Checkpoints {
        Checkpoints::new(self.retrain_dir(name), "model", "optim")
    }

    /// A study net's files for its `k`-th seed.
    pub fn study_net(&self, name: &str, k: usize) -> Checkpoints {
        Checkpoints::new(
            self.root.join("study").join(name).join(format!("s{k}")),
            "model",
            "optim",
        )
    }

    /// The study's results in a format: `json`, `md`, `svg`; `partial.json` while it runs.
    pub fn study(&self, ext: &str) -> PathBuf {
        self.root.join(format!("study.{ext}"))
    }

    /// The learned predictor a study fits.
    pub fn predictor(&self) -> PathBuf {
        self.root.join("predictor.json")
    }

    /// The report in a format: `md`, `csv` or `json`.
    pub fn report(&self, ext: &str) -> PathBuf {
        self.root.join(format!("report.{ext}"))
    }

    /// A worker's log.
    pub fn worker_log(&self, stage: &str, k: usize) -> PathBuf {
        self.root.join("workers").join(format!("{stage}-{k}.log"))
    }

    /// The Slurm folder.
    pub fn slurm_dir(&self) -> PathBuf {
        self.root.join("slurm")
    }

    /// A Slurm batch script.
    pub fn slurm_script(&self, name: &str) -> PathBuf {
        self.slurm_dir().join(format!("{name}.sbatch"))
    }

    /// Slurm's log folder.
    pub fn slurm_logs(&self) -> PathBuf {
        self.slurm_dir().join("logs")
    }

    /// The log of a Slurm job (or of one array task).
    pub fn slurm_log(&self, stage: &str, task: Option<usize>) -> PathBuf {
        self.slurm_logs().join(match task {
            Some(t) => format!("{stage}-{t}.out"),
            None => format!("{stage}.out"),
        })
    }

    /// The Slurm jobs of the run (empty when it was never submitted).
    pub fn jobs(&self) -> Result<Jobs, RunDirError> {
        Ok(read_json(&self.slurm_dir().join("jobs.json"))?.unwrap_or_default())
    }

    /// Records the Slurm jobs of the run.
    pub fn write_jobs(&self, jobs: &Jobs) -> Result<(), RunDirError> {
        write_json(&self.slurm_dir().join("jobs.json"), jobs)
    }

    /// This process's spool of unsent tracking calls.
    pub fn spool(&self) -> PathBuf {
        self.root
            .join(format!("tracking-spool-{}.jsonl", std::process::id()))
    }

    /// Every process's spool, sorted.
    pub fn spools(&self) -> Result<Vec<PathBuf>, RunDirError> {
        let mut spools: Vec<PathBuf> = std::fs::read_dir(&self.root)
            .map_err(|e| RunDirError::read(&self.root, e))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("tracking-spool-"))
            })
            .collect();
        spools.sort();
        Ok(spools)
    }

    /// The ids of the run's tracked runs: one file per run under `tracking/` (`parent.id`,
    /// `distill__block0.id`, ...), so that processes working on different blocks at once (a
    /// Slurm array) never overwrite each other's.
    pub fn tracking_ids(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        if let Ok(rd) = std::fs::read_dir(self.root.join("tracking")) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let (Some(stem), Ok(id)) =
                    (name.strip_suffix(".id"), std::fs::read_to_string(e.path()))
                {
                    out.insert(stem.replace("__", "/"), id.trim().to_string());
                }
            }
        }
        out
    }

    /// Records the id of a tracked run.
    pub fn write_tracking_id(&self, name: &str, id: &str) -> Result<(), RunDirError> {
        write_atomic(
            &self
                .root
                .join("tracking")
                .join(format!("{}.id", name.replace('/', "__"))),
            id.as_bytes(),
        )
    }

    /// The teacher's test accuracy, once known.
    pub fn teacher_accuracy(&self) -> Result<Option<f64>, RunDirError> {
        Ok(read_json::<TrainState>(&self.teacher().state())?.and_then(|s| s.accuracy))
    }

    /// What each stage cost: peak resident memory and seconds.
    pub fn resources(&self) -> Result<Resources, RunDirError> {
        Ok(read_json(&self.root.join("resources.json"))?.unwrap_or_default())
    }

    /// Records what a stage cost this process: the larger peak of the recorded and the new, and
    /// the seconds added; returns the recorded peak.
    pub fn record_stage(
        &self,
        stage: &str,
        peak_rss: u64,
        seconds: f64,
    ) -> Result<u64, RunDirError> {
        let mut all = self.resources()?;
        let v = all.peak_rss_bytes.entry(stage.to_string()).or_insert(0);
        *v = (*v).max(peak_rss);
        let peak = *v;
        *all.seconds.entry(stage.to_string()).or_insert(0.0) += seconds;
        write_json(&self.root.join("resources.json"), &all)?;
        Ok(peak)
    }

    /// The blocks' rank-stability evaluations, as one file (`distill/stability.json`).
    pub fn stability(&self) -> PathBuf {
        self.root.join("distill").join("stability.json")
    }

    /// What is finished.
    pub fn progress(&self) -> Result<Progress, RunDirError> {
        let states = (0..self.blocks)
            .map(|i| self.distill_state(i))
            .collect::<Result<Vec<DistillState>, RunDirError>>()?;
        Ok(Progress {
            teacher: read_json::<TrainState>(&self.teacher().state())?
                .is_some_and(|s| s.accuracy.is_some() || s.features_only),
            distilled: states
                .iter()
                .map(|s| s.stable || s.epochs_done >= self.distill_epochs)
                .collect(),
            epochs: states.iter().map(|s| s.epochs_done).collect(),
            rated: (0..self.blocks).map(|i| self.ratings(i).exists()).collect(),
            searched: self.search_result().exists(),
            reported: self.report("json").exists(),
        })
    }
}

const LOCK: &str = "dnarun.lock";

/// The lock file of the run directory at `root` (before a plan is at hand: it is read to make one).
pub fn lock_file(root: &Path) -> PathBuf {
    root.join(LOCK)
}
