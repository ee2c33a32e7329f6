//! The lock file `dnarun.lock`: the fully resolved recipe under `[recipe]` and what else the run
//! used under `[lock]` (versions, git commit, device, data fingerprint). Written once when a run
//! starts; a resume compares it with the recipe and data at hand. (`recipe::load` reads the same
//! file back as a recipe: `[recipe]`, with relative paths against `lock.recipe_dir`.)

use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::RunDirError;
use crate::plan::{DeviceSpec, Plan};
use crate::recipe::differing_keys;

/// The `[lock]` table: what the run used besides the recipe.
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
    /// Whether the run is a ranking study (`dnarun study`): `dnarun resume` then finishes the
    /// study instead of retraining and reporting.
    #[serde(default)]
    pub study: bool,
}

impl LockInfo {
    /// What this process uses for `plan`, computing on `device`, with data of `fingerprint`.
    pub fn current(plan: &Plan, device: &DeviceSpec, fingerprint: &str, study: bool) -> LockInfo {
        let base = &absolute(&plan.source.base_dir);
        LockInfo {
            dnarun_version: env!("CARGO_PKG_VERSION").into(),
            git_commit: git(base, &["rev-parse", "HEAD"]).unwrap_or_default(),
            git_dirty: git(base, &["status", "--porcelain"]).is_some_and(|s| !s.is_empty()),
            burn_version: "0.22.1".into(),
            backend: match device {
                DeviceSpec::Cpu => "flex".into(),
                DeviceSpec::Cuda(_) => "cuda".into(),
                DeviceSpec::Wgpu(_) => "wgpu".into(),
            },
            device: plan
                .devices
                .list
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(","),
            seed: plan.seeds.base,
            data_fingerprint: fingerprint.to_string(),
            recipe_sha256: recipe_hash(&plan.source.value),
            recipe_dir: base.display().to_string(),
            study,
        }
    }

    /// The commit with `-dirty` when the tree had changes.
    pub fn commit_label(&self) -> String {
        format!(
            "{}{}",
            self.git_commit,
            if self.git_dirty { "-dirty" } else { "" }
        )
    }
}

/// The lock file: the resolved recipe and what else the run used.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Lock {
    /// What else the run used.
    pub lock: LockInfo,
    /// The fully resolved recipe.
    pub recipe: serde_json::Value,
    /// Every unit of the run (`teacher`, `distill/block0`, ...): its stage-cache key and, when
    /// it was taken from the cache, the run that computed it. Written when the run ends.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub stages: std::collections::BTreeMap<String, super::UnitRecord>,
}

impl Lock {
    /// The file's text.
    pub fn text(&self) -> String {
        let value = toml::Value::try_from(self).expect("a lock is TOML");
        format!(
            "# dnarun lock file: everything this run used. Re-run it exactly with `dnarun <this file>`.\n{}",
            toml::to_string_pretty(&value).expect("a lock is TOML")
        )
    }

    /// Reads a lock file.
    pub fn read(path: &Path) -> Result<Lock, RunDirError> {
        let text = std::fs::read_to_string(path).map_err(|e| RunDirError::read(path, e))?;
        toml::from_str(&text)
            .map_err(|e| RunDirError::invalid(path, format!("is not a valid lock file: {e}")))
    }

    /// Refuses to resume the run in `dir` when its recipe or data differ from `now`'s.
    pub fn check_resume(
        &self,
        dir: &Path,
        recipe: &serde_json::Value,
        now: &LockInfo,
    ) -> Result<(), RunDirError> {
        let diff = differing_keys(&self.recipe, recipe);
        if !diff.is_empty() {
            return Err(RunDirError::RecipeChanged {
                path: dir.to_path_buf(),
                keys: diff,
            });
        }
        let (old, new) = (&self.lock.data_fingerprint, &now.data_fingerprint);
        if old != new {
            return Err(RunDirError::DataChanged {
                path: dir.to_path_buf(),
                old: old.clone(),
                new: new.clone(),
            });
        }
        Ok(())
    }
}

/// A directory as an absolute path: a recipe given as a bare file name has the empty path as its
/// directory, which must be recorded as the working directory, not as `""` (a lock file read from
/// elsewhere would then resolve the recipe's paths against its own folder).
fn absolute(dir: &Path) -> std::path::PathBuf {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    dir.canonicalize()
        .or_else(|_| std::path::absolute(dir))
        .unwrap_or_else(|_| dir.to_path_buf())
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

fn recipe_hash(v: &serde_json::Value) -> String {
    format!(
        "{:x}",
        Sha256::digest(serde_json::to_string(v).unwrap_or_default().as_bytes())
    )
}
