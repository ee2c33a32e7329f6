//! MLflow's file-store layout, written directly: `mlflow ui --backend-store-uri ./mlruns` (with
//! `MLFLOW_ALLOW_FILE_STORE=true`) and `mlflow migrate-filestore` read it.

use crate::atomic;
use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::{Metric, RunStatus, TrackError, Tracker, new_run_id, now_ms};

/// A local `mlruns/` store.
#[derive(Debug)]
pub struct LocalStore {
    root: PathBuf,
    experiment_id: String,
    runs: HashMap<String, PathBuf>,
}

fn err(path: &Path, e: impl std::fmt::Display) -> TrackError {
    TrackError::Store {
        path: path.to_path_buf(),
        problem: e.to_string(),
    }
}

/// Writes a file through a temp file and a rename (processes running blocks at once, a Slurm
/// array, may write the same run's files).
fn write_atomic(path: &Path, text: &str) -> Result<(), TrackError> {
    atomic::write_with(path, |tmp| fs::write(tmp, text)).map_err(|e| err(path, e))
}

fn yaml_str(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn uri(path: &Path) -> String {
    format!("file://{}", path.display())
}

/// Keys become paths; keep them inside the run folder.
fn key_path(dir: &Path, key: &str) -> PathBuf {
    let clean: Vec<String> = key
        .split('/')
        .filter(|p| !p.is_empty() && *p != "." && *p != "..")
        .map(|p| p.replace(['\\', ':'], "_"))
        .collect();
    dir.join(clean.join("/"))
}

impl LocalStore {
    /// Opens (creating) the store at `root` and the experiment `name` in it.
    pub fn open(root: &Path, name: &str) -> Result<LocalStore, TrackError> {
        fs::create_dir_all(root).map_err(|e| err(root, e))?;
        let root = root.canonicalize().map_err(|e| err(root, e))?;
        let mut max_id = 0u64;
        let mut found = None;
        for entry in fs::read_dir(&root).map_err(|e| err(&root, e))?.flatten() {
            let meta = entry.path().join("meta.yaml");
            let Ok(text) = fs::read_to_string(&meta) else {
                continue;
            };
            let id = entry.file_name().to_string_lossy().into_owned();
            if let Ok(n) = id.parse::<u64>() {
                max_id = max_id.max(n);
            }
            if text.lines().any(|l| {
                l.trim() == format!("name: {}", yaml_str(name))
                    || l.trim() == format!("name: {name}")
            }) {
                found = Some(id);
            }
        }
        let experiment_id = match found {
            Some(id) => id,
            None => {
                let id = (max_id + 1).to_string();
                let dir = root.join(&id);
                let t = now_ms();
                write_atomic(
                    &dir.join("meta.yaml"),
                    &format!(
                        "artifact_location: {}\ncreation_time: {t}\nexperiment_id: '{id}'\nlast_update_time: {t}\nlifecycle_stage: active\nname: {}\n",
                        uri(&dir),
                        yaml_str(name)
                    ),
                )?;
                write_atomic(
                    &dir.join("tags").join("mlflow.experimentKind"),
                    "custom_model_development",
                )?;
                id
            }
        };
        Ok(LocalStore {
            root,
            experiment_id,
            runs: HashMap::new(),
        })
    }

    fn run_dir(&mut self, run: &str) -> PathBuf {
        self.runs
            .entry(run.to_string())
            .or_insert_with(|| self.root.join(&self.experiment_id).join(run))
            .clone()
    }

    fn write_meta(
        &self,
        dir: &Path,
        run: &str,
        name: &str,
        start: i64,
        end: Option<i64>,
        status: RunStatus,
    ) -> Result<(), TrackError> {
        let status = match status {
            RunStatus::Running => 1,
            RunStatus::Finished => 3,
            RunStatus::Failed => 4,
            RunStatus::Killed => 5,
        };
        write_atomic(
            &dir.join("meta.yaml"),
            &format!(
                "artifact_uri: {}\nend_time: {}\nentry_point_name: ''\nexperiment_id: '{}'\nlifecycle_stage: active\nrun_id: {run}\nrun_name: {}\nrun_uuid: {run}\nsource_name: ''\nsource_type: 4\nsource_version: ''\nstart_time: {start}\nstatus: {status}\ntags: []\nuser_id: {}\n",
                uri(&dir.join("artifacts")),
                end.map_or("null".into(), |e| e.to_string()),
                self.experiment_id,
                yaml_str(name),
                yaml_str(&user()),
            ),
        )
    }

    fn read_meta(dir: &Path) -> Option<(String, i64)> {
        let text = fs::read_to_string(dir.join("meta.yaml")).ok()?;
        let get = |k: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(k).map(|v| v.trim().to_string()))
        };
        let name = get("run_name:")?.trim_matches('\'').replace("''", "'");
        let start = get("start_time:")?.parse().ok()?;
        Some((name, start))
    }
}

fn user() -> String {
    std::env::var("USER").unwrap_or_else(|_| "dnarun".into())
}

fn format_value(v: f64) -> String {
    if v.is_nan() {
        "nan".into()
    } else if v == f64::INFINITY {
        "inf".into()
    } else if v == f64::NEG_INFINITY {
        "-inf".into()
    } else {
        format!("{v:?}")
    }
}

impl Tracker for LocalStore {
    fn start_run(
        &mut self,
        name: &str,
        parent: Option<&str>,
        tags: &[(String, String)],
    ) -> Result<String, TrackError> {
        let run = new_run_id();
        let dir = self.run_dir(&run);
        for sub in ["metrics", "params", "artifacts", "tags"] {
            fs::create_dir_all(dir.join(sub)).map_err(|e| err(&dir, e))?;
        }
        self.write_meta(&dir, &run, name, now_ms(), None, RunStatus::Running)?;
        let mut all: Vec<(String, String)> = vec![
            ("mlflow.runName".into(), name.into()),
            ("mlflow.user".into(), user()),
            ("mlflow.source.type".into(), "LOCAL".into()),
            ("mlflow.source.name".into(), "dnarun".into()),
        ];
        if let Some(p) = parent {
            all.push(("mlflow.parentRunId".into(), p.into()));
        }
        all.extend_from_slice(tags);
        self.set_tags(&run, &all)?;
        Ok(run)
    }

    fn log_params(&mut self, run: &str, params: &[(String, String)]) -> Result<(), TrackError> {
        let dir = self.run_dir(run).join("params");
        for (k, v) in params {
            let p = key_path(&dir, k);
            if !p.exists() {
                write_atomic(&p, v)?;
            }
        }
        Ok(())
    }

    fn log_metrics(&mut self, run: &str, metrics: &[Metric]) -> Result<(), TrackError> {
        let dir = self.run_dir(run).join("metrics");
        for m in metrics {
            let p = key_path(&dir, &m.key);
            if let Some(d) = p.parent() {
                fs::create_dir_all(d).map_err(|e| err(d, e))?;
            }
            let mut f = fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&p)
                .map_err(|e| err(&p, e))?;
            writeln!(f, "{} {} {}", m.timestamp, format_value(m.value), m.step)
                .map_err(|e| err(&p, e))?;
        }
        Ok(())
    }

    fn set_tags(&mut self, run: &str, tags: &[(String, String)]) -> Result<(), TrackError> {
        let dir = self.run_dir(run).join("tags");
        for (k, v) in tags {
            write_atomic(&key_path(&dir, k), v)?;
        }
        Ok(())
    }

    /// Dataset inputs in the file store's own layout (what MLflow's `FileStore.log_inputs`
    /// writes): the dataset once per experiment under `datasets/<id>/meta.yaml`, and per run an
    /// input under `inputs/<id>/meta.yaml` pointing at it with its context tag. MLflow's client
    /// and `mlflow ui` read them back as the run's dataset inputs.
    fn log_inputs(
        &mut self,
        run: &str,
        datasets: &[super::DatasetInput],
    ) -> Result<(), TrackError> {
        use md5::{Digest, Md5};
        let hex = |parts: &[&str]| {
            let mut h = Md5::new();
            for p in parts {
                h.update(p.as_bytes());
            }
            format!("{:x}", h.finalize())
        };
        let experiment = self.root.join(&self.experiment_id);
        let run_dir = self.run_dir(run);
        for d in datasets {
            // MLflow's ids: md5(name + digest), and md5(dataset id + run id).
            let dataset_id = hex(&[&d.name, &d.digest]);
            let dataset = experiment
                .join("datasets")
                .join(&dataset_id)
                .join("meta.yaml");
            if !dataset.exists() {
                let source = serde_json::json!({ "uri": d.source }).to_string();
                let profile = serde_json::json!({ "num_rows": d.rows }).to_string();
                write_atomic(
                    &dataset,
                    &format!(
                        "digest: {}\nname: {}\nprofile: {}\nschema: null\nsource: {}\nsource_type: local\n",
                        yaml_str(&d.digest),
                        yaml_str(&d.name),
                        yaml_str(&profile),
                        yaml_str(&source)
                    ),
                )?;
            }
            let input_id = hex(&[&dataset_id, run]);
            write_atomic(
                &run_dir.join("inputs").join(input_id).join("meta.yaml"),
                &format!(
                    "destination_id: {}\ndestination_type: RUN\nsource_id: {}\nsource_type: DATASET\ntags:\n  mlflow.data.context: {}\n",
                    yaml_str(run),
                    yaml_str(&dataset_id),
                    yaml_str(&d.context)
                ),
            )?;
        }
        Ok(())
    }

    fn log_artifact(&mut self, run: &str, file: &Path, dir: &str) -> Result<(), TrackError> {
        let target = key_path(&self.run_dir(run).join("artifacts"), dir);
        fs::create_dir_all(&target).map_err(|e| err(&target, e))?;
        let dest = target.join(file.file_name().unwrap_or_default());
        atomic::write_with(&dest, |tmp| fs::copy(file, tmp).map(|_| ())).map_err(|e| err(file, e))
    }

    fn end_run(&mut self, run: &str, status: RunStatus) -> Result<(), TrackError> {
        let dir = self.run_dir(run);
        let (name, start) = Self::read_meta(&dir).unwrap_or_else(|| (run.to_string(), now_ms()));
        self.write_meta(&dir, run, &name, start, Some(now_ms()), status)
    }

    fn describe(&self) -> String {
        format!(
            "local MLflow store `{}` (experiment {}); view it with `MLFLOW_ALLOW_FILE_STORE=true mlflow ui --backend-store-uri {}`",
            self.root.display(),
            self.experiment_id,
            uri(&self.root)
        )
    }
}
