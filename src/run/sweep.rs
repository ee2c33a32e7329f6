//! `dnarun sweep`: every variant of a recipe its `[sweep]` section declares, each a full run
//! with its own run directory under one sweep directory, sharing every stage two variants have
//! in common through the stage cache.
//!
//! ```text
//! OUTPUT_DIR/NAME-sweep/sweep.json     per member: overrides, run directory, status, reused
//!                                      stages, outcome (the command's state, read on resume)
//! OUTPUT_DIR/NAME-sweep/sweep.md       the same as a table, best outcome first
//! OUTPUT_DIR/NAME-sweep/NAME-NNN/      each member's run directory
//! ```
//!
//! The same command again (or `dnarun resume SWEEP_DIR`) resumes: finished members are kept,
//! unfinished ones continue in their run directories. A member that fails is recorded with its
//! message and the others go on.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Request, Resume, RunError};
use crate::plan::Plan;
use crate::rundir::{RunDir, read_json, write_atomic, write_json};
use crate::track::{self, RunStatus};

/// What `dnarun sweep` was asked.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SweepRequest {
    /// The recipe (absolute).
    pub recipe: PathBuf,
    /// Its `--set` overrides.
    pub sets: Vec<String>,
    /// Every member is a ranking study (`--study`).
    pub study: bool,
    /// Compute every stage of every member (`--no-cache`).
    pub no_cache: bool,
}

/// `sweep.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SweepState {
    /// What was asked (`dnarun resume SWEEP_DIR` asks it again).
    pub request: SweepRequest,
    /// The sweep's MLflow run, whose children are the members' runs.
    #[serde(default)]
    pub mlflow_run: Option<String>,
    /// The members, in the order they run.
    pub members: Vec<MemberState>,
}

/// One member of a sweep.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MemberState {
    /// Its overrides of the recipe: dotted key -> value.
    pub overrides: BTreeMap<String, Value>,
    /// Its run directory, once made.
    pub run_dir: Option<PathBuf>,
    /// `pending`, `running`, `finished`, `failed` or `stopped`.
    pub status: String,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The units it took from the stage cache: unit -> the run directory that computed it.
    #[serde(default)]
    pub reused: BTreeMap<String, String>,
    /// What it found: `top1_rating`, `top1_mflops`, `top1_mparams`, `top1_accuracy`, and for a
    /// study `kendall_tau_rating`, `kendall_tau_flops`.
    #[serde(default)]
    pub outcome: BTreeMap<String, f64>,
}

impl MemberState {
    /// `key=value, key=value`.
    pub fn label(&self) -> String {
        let parts: Vec<String> = self
            .overrides
            .iter()
            .map(|(k, v)| format!("{k}={}", toml_literal(v)))
            .collect();
        if parts.is_empty() {
            "(the recipe as written)".into()
        } else {
            parts.join(", ")
        }
    }
}

/// The members a `[sweep]` section declares: the grid's cartesian product, then `members`.
pub fn expand(sweep: &crate::recipe::Sweep) -> Vec<BTreeMap<String, Value>> {
    let mut out: Vec<BTreeMap<String, Value>> = vec![BTreeMap::new()];
    for (key, values) in &sweep.grid {
        out = out
            .iter()
            .flat_map(|m| {
                values.iter().map(move |v| {
                    let mut m = m.clone();
                    m.insert(key.clone(), v.clone());
                    m
                })
            })
            .collect();
    }
    if sweep.grid.is_empty() {
        out.clear();
    }
    out.extend(sweep.members.iter().cloned());
    out
}

/// A JSON value as a TOML literal for `--set`.
fn toml_literal(v: &Value) -> String {
    match v {
        Value::Object(m) => format!(
            "{{ {} }}",
            m.iter()
                .map(|(k, v)| format!(
                    "{} = {}",
                    serde_json::to_string(k).unwrap_or_default(),
                    toml_literal(v)
                ))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Value::Array(a) => format!(
            "[{}]",
            a.iter().map(toml_literal).collect::<Vec<_>>().join(", ")
        ),
        Value::Null => "\"\"".into(),
        other => other.to_string(),
    }
}

/// The sweep directory of a recipe's plan.
pub fn sweep_dir(plan: &Plan) -> PathBuf {
    plan.experiment
        .output_dir
        .join(format!("{}-sweep", plan.experiment.name))
}

/// Whether a recipe declares a sweep (`submit` then submits its members).
pub fn declares_sweep(plan: &Plan) -> bool {
    section_of(plan).is_ok_and(|s| !expand(&s).is_empty())
}

/// The file that marks a sweep directory.
pub fn state_file(dir: &Path) -> PathBuf {
    dir.join("sweep.json")
}

/// The `--set`s of a member: the sweep's, then its overrides.
fn member_sets(sets: &[String], overrides: &BTreeMap<String, Value>) -> Vec<String> {
    let mut out = sets.to_vec();
    for (key, v) in overrides {
        out.push(format!("{key}={}", toml_literal(v)));
    }
    out
}

/// `validate` of a recipe with a `[sweep]`: resolves every member (without reading data);
/// returns how many there are, or `None` without a sweep. A member's problem is reported as a
/// recipe problem at its override.
pub fn check(recipe: &Path, sets: &[String]) -> Result<Option<usize>, RunError> {
    let base = super::commands::load_plan(recipe, sets)?;
    let members = expand(&section_of(&base)?);
    if members.is_empty() {
        return Ok(None);
    }
    for m in &members {
        super::commands::load_plan(recipe, &member_sets(sets, m))?;
    }
    Ok(Some(members.len()))
}

fn section_of(base: &Plan) -> Result<crate::recipe::Sweep, RunError> {
    Ok(base
        .source
        .value
        .get("sweep")
        .cloned()
        .map(serde_json::from_value)
        .transpose()
        .map_err(|e| RunError::BadOption {
            option: "set",
            problem: format!("`sweep` is not a sweep section: {e}"),
        })?
        .unwrap_or_default())
}

/// A sweep directory opened for this process: its plan, directory, hold, state and MLflow run.
struct Opened {
    base: Plan,
    dir: PathBuf,
    _hold: crate::rundir::RunLock,
    state: SweepState,
    tracker: Option<Box<dyn track::Tracker>>,
    sweep_run: Option<String>,
}

/// Opens (or makes) the sweep directory of `req`, with its members in order (a member already
/// run keeps its record), and with `tracking` the sweep's MLflow run.
fn open(req: &SweepRequest, tracking: bool) -> Result<Opened, RunError> {
    let base = super::commands::load_plan(&req.recipe, &req.sets)?;
    let wanted = expand(&section_of(&base)?);
    if wanted.is_empty() {
        return Err(RunError::NoSweep(req.recipe.clone()));
    }
    let dir = sweep_dir(&base);
    std::fs::create_dir_all(&dir).map_err(|e| crate::rundir::RunDirError::write(&dir, e))?;
    let hold = RunDir::open(&base, &dir).lock(None)?;
    let mut state: SweepState = read_json(&state_file(&dir))?.unwrap_or_default();
    state.request = req.clone();
    let old = std::mem::take(&mut state.members);
    state.members = wanted
        .into_iter()
        .map(|o| {
            old.iter()
                .find(|m| m.overrides == o)
                .cloned()
                .unwrap_or(MemberState {
                    overrides: o,
                    status: "pending".into(),
                    ..Default::default()
                })
        })
        .collect();
    let (mut tracker, mut sweep_run) = (None, None);
    if tracking {
        let mut t = track::open(
            &base.tracking,
            &dir.join(format!("tracking-spool-{}.jsonl", std::process::id())),
        )?;
        let id = match state.mlflow_run.clone() {
            Some(id) => id,
            None => {
                let id = t.start_run(
                    &format!("{}-sweep", base.experiment.name),
                    None,
                    &[
                        ("dnarun.version".into(), env!("CARGO_PKG_VERSION").into()),
                        ("dnarun.sweep_dir".into(), dir.display().to_string()),
                    ],
                )?;
                let keys: Vec<String> = state
                    .members
                    .iter()
                    .flat_map(|m| m.overrides.keys().cloned())
                    .collect::<std::collections::BTreeSet<_>>()
                    .into_iter()
                    .collect();
                t.log_params(
                    &id,
                    &[
                        ("sweep.members".into(), state.members.len().to_string()),
                        ("sweep.keys".into(), keys.join(", ")),
                    ],
                )?;
                id
            }
        };
        state.mlflow_run = Some(id.clone());
        (tracker, sweep_run) = (Some(t), Some(id));
    }
    write_json(&state_file(&dir), &state)?;
    write_atomic(&dir.join("sweep.md"), markdown(&state).as_bytes())?;
    Ok(Opened {
        base,
        dir,
        _hold: hold,
        state,
        tracker,
        sweep_run,
    })
}

/// Runs (or resumes) a sweep; returns its directory and how many members failed.
pub fn sweep(req: &SweepRequest, stop: Arc<AtomicBool>) -> Result<(PathBuf, usize), RunError> {
    let Opened {
        base,
        dir,
        _hold,
        mut state,
        tracker,
        sweep_run,
    } = open(req, true)?;
    let mut tracker = tracker.expect("tracking asked for");
    let sweep_run = sweep_run.expect("tracking asked for");
    let mut stopped = false;
    for k in 0..state.members.len() {
        if state.members[k].status == "finished" {
            continue;
        }
        eprintln!(
            "sweep member {} of {}: {}",
            k + 1,
            state.members.len(),
            state.members[k].label()
        );
        let result = run_member(req, &base, &dir, &mut state, k, &sweep_run, stop.clone());
        let m = &mut state.members[k];
        match result {
            Ok(()) => {
                m.status = "finished".into();
                m.error = None;
            }
            Err(e) if e.is_stop() => {
                m.status = "stopped".into();
                stopped = true;
            }
            Err(e) => {
                m.status = "failed".into();
                m.error = Some(message(&e));
                eprintln!(
                    "sweep member {} failed: {}",
                    k + 1,
                    m.error.as_deref().unwrap_or("")
                );
            }
        }
        if let Some(run_dir) = m.run_dir.clone() {
            m.outcome = outcome(&run_dir);
            m.reused = RunDir::open(&base, &run_dir)
                .unit_records()
                .into_iter()
                .filter_map(|(u, r)| r.reused_from.map(|f| (u, f)))
                .collect();
        }
        write_json(&state_file(&dir), &state)?;
        write_atomic(&dir.join("sweep.md"), markdown(&state).as_bytes())?;
        if stopped {
            break;
        }
    }
    write_atomic(&dir.join("sweep.md"), markdown(&state).as_bytes())?;
    let failed = state
        .members
        .iter()
        .filter(|m| m.status == "failed")
        .count();
    let _ = tracker.log_artifact(&sweep_run, &dir.join("sweep.md"), "");
    let _ = tracker.log_artifact(&sweep_run, &state_file(&dir), "");
    let status = match (stopped, failed) {
        (true, _) => RunStatus::Killed,
        (false, 0) => RunStatus::Finished,
        _ => RunStatus::Failed,
    };
    let _ = tracker.end_run(&sweep_run, status);
    tracker.flush();
    if stopped {
        // Resuming the sweep resumes the stopped member in its run directory.
        return Err(crate::stages::StageError::Stopped(dir).into());
    }
    Ok((dir, failed))
}

/// `dnarun resume SWEEP_DIR`: the sweep again, as its `sweep.json` asked it.
pub fn resume(dir: &Path, stop: Arc<AtomicBool>) -> Result<(PathBuf, usize), RunError> {
    let state: SweepState = read_json(&state_file(dir))?.unwrap_or_default();
    sweep(&state.request, stop)
}

/// A member's plan (its run directories under the sweep's, the recipe's stage cache) and run
/// directory (its recorded one, else a new one; a recorded one that a failed attempt left
/// without a lock file is taken again rather than left behind empty).
fn member_plan(
    req: &SweepRequest,
    base: &Plan,
    dir: &Path,
    m: &MemberState,
) -> Result<(Plan, PathBuf), RunError> {
    let mut sets = member_sets(&req.sets, &m.overrides);
    let quoted = |p: &Path| toml_literal(&Value::String(p.display().to_string()));
    sets.push(format!("experiment.output_dir={}", quoted(dir)));
    sets.push(format!(
        "experiment.cache_dir={}",
        quoted(&base.experiment.cache_dir)
    ));
    let plan = super::commands::load_plan(&req.recipe, &sets)?;
    let run_dir = match &m.run_dir {
        Some(d) if d.is_dir() => d.clone(),
        _ => RunDir::create(&plan)?.root().to_path_buf(),
    };
    Ok((plan, run_dir))
}

/// A failed member's one-paragraph message.
fn message(e: &RunError) -> String {
    match e {
        RunError::Recipe(d) => d.render(),
        e => e.to_string(),
    }
}

/// `dnarun submit SWEEP_RECIPE --slurm`: every unfinished member made ready (run directory,
/// lock file, MLflow run under the sweep's) and submitted, in order; a member's step whose
/// units an earlier member's job computes waits for that job (`afterok`) and takes them from
/// the stage cache, so each shared stage is computed once. Returns each member's submission.
/// When the jobs are done, `dnarun sweep` with the same recipe writes `sweep.json` and
/// `sweep.md` from the members' run directories.
pub fn submit(
    req: &SweepRequest,
    opts: &crate::slurm::SlurmOptions,
) -> Result<Vec<(String, crate::slurm::Submitted)>, RunError> {
    let mut o = open(req, !opts.dry_run)?;
    // Unit key -> the job that computes it.
    let mut computing: BTreeMap<String, String> = BTreeMap::new();
    let mut out = Vec::new();
    for k in 0..o.state.members.len() {
        if o.state.members[k].status == "finished" {
            continue;
        }
        let (plan, run_dir) = match member_plan(req, &o.base, &o.dir, &o.state.members[k]) {
            Ok(p) => p,
            Err(e) => {
                let m = &mut o.state.members[k];
                m.status = "failed".into();
                m.error = Some(message(&e));
                eprintln!("sweep member {} failed: {}", k + 1, message(&e));
                continue;
            }
        };
        for w in crate::slurm::check(&plan, opts, true)? {
            eprintln!("warning: {w}");
        }
        let (dir, lock, data, _) = super::make_ready(
            &plan,
            Some(&run_dir),
            0,
            Some("submit"),
            req.study,
            !opts.dry_run,
            o.sweep_run.as_deref(),
        )?;
        drop(lock);
        let keys = crate::stages::StageKeys::of(&plan, &data);
        let units: [(&str, Vec<&crate::rundir::Key>); 3] = [
            ("teacher", vec![&keys.teacher]),
            ("distill", keys.distill.iter().collect()),
            ("rate", keys.rate.iter().collect()),
        ];
        let mut after: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (step, ks) in &units {
            let mut jobs: Vec<String> = ks
                .iter()
                .filter_map(|k| computing.get(&k.0).cloned())
                .collect();
            jobs.sort();
            jobs.dedup();
            after.insert(step.to_string(), jobs);
        }
        let submitted = crate::slurm::submit_after(&plan, opts, &dir, &after)?;
        for (step, ks) in &units {
            if let Some(job) = submitted.jobs.jobs.get(*step) {
                for key in ks {
                    computing.entry(key.0.clone()).or_insert(job.clone());
                }
            }
        }
        let m = &mut o.state.members[k];
        m.run_dir = Some(dir.root().to_path_buf());
        m.status = if opts.dry_run { "pending" } else { "submitted" }.into();
        out.push((m.label(), submitted));
        write_json(&state_file(&o.dir), &o.state)?;
    }
    write_json(&state_file(&o.dir), &o.state)?;
    if let Some(t) = o.tracker.as_mut() {
        t.flush();
    }
    Ok(out)
}

/// Runs member `k` (in its recorded run directory when it has one).
fn run_member(
    req: &SweepRequest,
    base: &Plan,
    dir: &Path,
    state: &mut SweepState,
    k: usize,
    sweep_run: &str,
    stop: Arc<AtomicBool>,
) -> Result<(), RunError> {
    let (plan, run_dir) = member_plan(req, base, dir, &state.members[k])?;
    state.members[k].run_dir = Some(run_dir.clone());
    state.members[k].status = "running".into();
    write_json(&state_file(dir), state)?;
    write_atomic(&dir.join("sweep.md"), markdown(state).as_bytes())?;
    let request = Request {
        resume: Resume::Dir(run_dir),
        stop,
        study: req.study,
        no_cache: req.no_cache,
        sweep_run: Some(sweep_run.to_string()),
        ..Default::default()
    };
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| super::run(&plan, &request))) {
        Ok(r) => r.map(|_| ()),
        Err(p) => Err(RunError::Process {
            what: "finish the member".into(),
            reason: format!(
                "it panicked: {}",
                p.downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default()
            ),
        }),
    }
}

/// A member's outcome, from its run directory's files.
fn outcome(run_dir: &Path) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    let read = |p: PathBuf| -> Option<Value> {
        serde_json::from_str(&std::fs::read_to_string(p).ok()?).ok()
    };
    if let Some(r) = read(run_dir.join("search").join("result.json"))
        && let Some(top) = r.pointer("/top/0")
    {
        let f = |k: &str| top.get(k).and_then(Value::as_f64);
        if let Some(v) = f("rating") {
            out.insert("top1_rating".into(), v);
        }
        if let Some(v) = f("flops_dna") {
            out.insert("top1_mflops".into(), v / 1e6);
        }
        if let Some(v) = f("params") {
            out.insert("top1_mparams".into(), v / 1e6);
        }
    }
    if let Some(r) = read(run_dir.join("report.json"))
        && let Some(a) = r
            .pointer("/architectures/0/accuracy")
            .and_then(Value::as_f64)
    {
        out.insert("top1_accuracy".into(), a);
    }
    if let Some(s) = read(run_dir.join("study.json")) {
        for p in ["rating", "flops"] {
            if let Some(t) = s
                .pointer(&format!("/predictors/{p}/kendall_tau"))
                .and_then(Value::as_f64)
            {
                out.insert(format!("kendall_tau_{p}"), t);
            }
        }
    }
    out
}

/// `sweep.md`: one row per member, best first (the study's rating tau, else the top-1's
/// accuracy, else its rating, lowest best); members without an outcome last.
pub fn markdown(state: &SweepState) -> String {
    let mut order: Vec<&MemberState> = state.members.iter().collect();
    let score = |m: &MemberState| -> Option<f64> {
        m.outcome
            .get("kendall_tau_rating")
            .or(m.outcome.get("top1_accuracy"))
            .copied()
            .or(m.outcome.get("top1_rating").map(|r| -r))
    };
    order.sort_by(|a, b| match (score(a), score(b)) {
        (Some(x), Some(y)) => y.total_cmp(&x),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => std::cmp::Ordering::Equal,
    });
    let study = state.request.study;
    let mut s = format!(
        "# Sweep of `{}`\n\n{} members: {} finished, {} failed. The stage cache shared {} stage units between them.\n\n",
        state.request.recipe.display(),
        state.members.len(),
        state
            .members
            .iter()
            .filter(|m| m.status == "finished")
            .count(),
        state
            .members
            .iter()
            .filter(|m| m.status == "failed")
            .count(),
        state.members.iter().map(|m| m.reused.len()).sum::<usize>(),
    );
    s += if study {
        "| member | status | tau (rating) | tau (FLOPs) | top-1 rating | reused | run |\n|---|---|---|---|---|---|---|\n"
    } else {
        "| member | status | top-1 accuracy | top-1 rating | MFLOPs | M params | reused | run |\n|---|---|---|---|---|---|---|---|\n"
    };
    let f = |m: &MemberState, k: &str, scale: f64, prec: usize| {
        m.outcome
            .get(k)
            .map(|v| format!("{:.prec$}", v * scale))
            .unwrap_or_else(|| "-".into())
    };
    for m in order {
        let status = match &m.error {
            Some(e) => format!(
                "failed: {}",
                e.lines().next().unwrap_or("").replace('|', "\\|")
            ),
            None => m.status.clone(),
        };
        let reused = if m.reused.is_empty() {
            "-".to_string()
        } else {
            m.reused.keys().cloned().collect::<Vec<_>>().join(", ")
        };
        let run = m
            .run_dir
            .as_ref()
            .and_then(|d| d.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "-".into());
        let label = m.label().replace('|', "\\|");
        s += &if study {
            format!(
                "| {label} | {status} | {} | {} | {} | {reused} | {run} |\n",
                f(m, "kendall_tau_rating", 1.0, 3),
                f(m, "kendall_tau_flops", 1.0, 3),
                f(m, "top1_rating", 1.0, 4),
            )
        } else {
            format!(
                "| {label} | {status} | {} | {} | {} | {} | {reused} | {run} |\n",
                f(m, "top1_accuracy", 100.0, 2),
                f(m, "top1_rating", 1.0, 4),
                f(m, "top1_mflops", 1.0, 3),
                f(m, "top1_mparams", 1.0, 4),
            )
        };
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grid_expands_to_its_product_then_the_members() {
        let mut grid = BTreeMap::new();
        grid.insert("a".to_string(), vec![Value::from(1), Value::from(2)]);
        grid.insert("b".to_string(), vec![Value::from("x"), Value::from("y")]);
        let mut extra = BTreeMap::new();
        extra.insert("c".to_string(), Value::from(true));
        let all = expand(&crate::recipe::Sweep {
            grid,
            members: vec![extra.clone()],
        });
        assert_eq!(all.len(), 5);
        assert_eq!(all[4], extra);
        let labels: Vec<String> = all
            .iter()
            .map(|o| {
                MemberState {
                    overrides: o.clone(),
                    ..Default::default()
                }
                .label()
            })
            .collect();
        assert_eq!(labels[0], "a=1, b=\"x\"");
        assert_eq!(labels[3], "a=2, b=\"y\"");
        assert!(expand(&crate::recipe::Sweep::default()).is_empty());
    }

    #[test]
    fn values_become_toml_literals() {
        let v: Value = serde_json::json!({"a.b": [1, 2.5], "s": "q\"x"});
        assert_eq!(
            toml_literal(&v),
            "{ \"a.b\" = [1, 2.5], \"s\" = \"q\\\"x\" }"
        );
    }
}
