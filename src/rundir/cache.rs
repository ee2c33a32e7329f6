//! The stage cache: every finished unit of a stage (the teacher, one block's distillation, one
//! block's ratings, the search, one retrained net) stored under a content key, so a run whose
//! unit has the key of one already computed takes it instead of computing it again.
//!
//! ```text
//! CACHE/<stage>/<key>/        the unit's files (hard links to the run's), origin.json
//! RUN_DIR/stages/<unit>.json  the unit's key and, when it was taken from the cache, from where
//! ```
//!
//! A key is a SHA-256 of dnarun's version, the stage's name and exactly the values the stage
//! reads, declared next to each stage (`stages::*::key`). Files are shared by hard link (a copy
//! only where the cache is on another file system); every file of a run directory is written by
//! temp file + rename, so a run never changes a file the cache holds. An entry is made in a temp
//! folder and renamed into place, so two runs publishing the same key at once leave one whole
//! entry and a reader never sees half of one.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{RunDir, RunDirError, read_json, write_json};

/// A content key being built: the stage's name and every value it reads.
pub struct KeyBuilder {
    hash: Sha256,
}

impl KeyBuilder {
    /// The key of `stage`, in this dnarun version.
    pub fn new(stage: &str) -> KeyBuilder {
        let mut hash = Sha256::new();
        hash.update(env!("CARGO_PKG_VERSION").as_bytes());
        hash.update([0]);
        hash.update(stage.as_bytes());
        KeyBuilder { hash }
    }

    /// Adds a named value (its `Debug` text, which is deterministic for the plan's types).
    pub fn with<T: Debug + ?Sized>(mut self, name: &str, value: &T) -> KeyBuilder {
        self.hash.update([0]);
        self.hash.update(name.as_bytes());
        self.hash.update([1]);
        self.hash.update(format!("{value:?}").as_bytes());
        self
    }

    /// Adds a file's contents (a teacher's weights: the same path may hold other weights later);
    /// a file that cannot be read adds its error, so the key differs from any readable file's.
    pub fn file(mut self, name: &str, path: &Path) -> KeyBuilder {
        self.hash.update([0]);
        self.hash.update(name.as_bytes());
        match std::fs::read(path) {
            Ok(bytes) => self.hash.update(Sha256::digest(&bytes)),
            Err(e) => self.hash.update(e.to_string().as_bytes()),
        }
        self
    }

    /// The key.
    pub fn finish(self) -> Key {
        Key(format!("{:x}", self.hash.finalize()))
    }
}

/// A unit's content key (hex SHA-256).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Key(pub String);

impl Key {
    /// The first 12 hex digits.
    pub fn short(&self) -> &str {
        &self.0[..12.min(self.0.len())]
    }
}

/// A unit of a stage: its name in the run (`distill/block1`) and its files: every file in
/// `dir` whose name starts with `prefix` and is not in `skip`.
#[derive(Debug, Clone)]
pub struct Unit {
    /// `teacher`, `distill/block1`, `rate/block0`, `search`, `retrain/top1`.
    pub name: String,
    dir: PathBuf,
    prefix: String,
    skip: &'static [&'static str],
}

impl Unit {
    fn files_in(&self, dir: &Path) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .map(|e| e.path())
            .filter(|p| {
                let n = p.file_name().unwrap_or_default().to_string_lossy();
                n.starts_with(&self.prefix)
                    && !n.ends_with(".tmp~")
                    && !n.starts_with('.')
                    && n != ORIGIN
                    && !self.skip.contains(&n.as_ref())
            })
            .collect();
        out.sort();
        out
    }

    /// The stage the unit belongs to (the cache's folder).
    fn stage(&self) -> &str {
        self.name.split('/').next().unwrap_or(&self.name)
    }
}

const ORIGIN: &str = "origin.json";

/// Where a cache entry came from (`origin.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Origin {
    run_dir: String,
    unit: String,
}

/// What a run recorded about a unit (`RUN_DIR/stages/<unit>.json`, and the lock file's
/// `[stages]` table once the run ends).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnitRecord {
    /// The unit's content key.
    pub key: String,
    /// The run directory it was computed in, when this run took it from the cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reused_from: Option<String>,
}

/// The stage cache at a folder, or none (`--no-cache`).
#[derive(Debug, Clone)]
pub struct Cache {
    root: Option<PathBuf>,
}

impl Cache {
    /// The cache in `root`; `None` turns it off.
    pub fn new(root: Option<PathBuf>) -> Cache {
        Cache { root }
    }

    /// Whether it is on.
    pub fn is_on(&self) -> bool {
        self.root.is_some()
    }

    fn entry(&self, unit: &Unit, key: &Key) -> Option<PathBuf> {
        self.root
            .as_ref()
            .map(|r| r.join(unit.stage()).join(&key.0))
    }

    /// Takes the unit from the cache into the run directory when an entry has its key: links
    /// its files in and returns the run directory it was computed in. Nothing is changed
    /// when there is no entry.
    pub fn adopt(
        &self,
        dir: &RunDir,
        unit: &Unit,
        key: &Key,
    ) -> Result<Option<String>, RunDirError> {
        let Some(entry) = self.entry(unit, key) else {
            return Ok(None);
        };
        let Some(origin) = read_json::<Origin>(&entry.join(ORIGIN)).ok().flatten() else {
            return Ok(None);
        };
        std::fs::create_dir_all(&unit.dir).map_err(|e| RunDirError::write(&unit.dir, e))?;
        for file in unit.files_in(&entry) {
            let to = unit.dir.join(file.file_name().unwrap_or_default());
            link_over(&file, &to)?;
        }
        dir.record_unit(
            &unit.name,
            &UnitRecord {
                key: key.0.clone(),
                reused_from: Some(origin.run_dir.clone()),
            },
        )?;
        Ok(Some(origin.run_dir))
    }

    /// Stores a finished unit's files under its key (nothing when an entry is there already),
    /// and records the key in the run directory.
    pub fn publish(&self, dir: &RunDir, unit: &Unit, key: &Key) -> Result<(), RunDirError> {
        let recorded = dir.unit_record(&unit.name)?;
        if recorded.as_ref().is_none_or(|r| r.key != key.0) {
            dir.record_unit(
                &unit.name,
                &UnitRecord {
                    key: key.0.clone(),
                    reused_from: None,
                },
            )?;
        }
        let Some(entry) = self.entry(unit, key) else {
            return Ok(());
        };
        if entry.join(ORIGIN).exists() {
            return Ok(());
        }
        let parent = entry.parent().expect("an entry has a stage folder");
        std::fs::create_dir_all(parent).map_err(|e| RunDirError::write(parent, e))?;
        let tmp = parent.join(format!(".{}.{}.tmp~", key.0, std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir(&tmp).map_err(|e| RunDirError::write(&tmp, e))?;
        for file in unit.files_in(&unit.dir) {
            link_over(&file, &tmp.join(file.file_name().unwrap_or_default()))?;
        }
        let origin = Origin {
            run_dir: dir.canonical().root().display().to_string(),
            unit: unit.name.clone(),
        };
        write_json(&tmp.join(ORIGIN), &origin)?;
        if std::fs::rename(&tmp, &entry).is_err() {
            // Another run published the same key first: its entry is as good as ours.
            let _ = std::fs::remove_dir_all(&tmp);
        }
        Ok(())
    }
}

/// Hard-links `from` at `to` (replacing `to`), copying where a link cannot be made.
fn link_over(from: &Path, to: &Path) -> Result<(), RunDirError> {
    let tmp = to.with_file_name(format!(
        "{}.{}.link.tmp~",
        to.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    let _ = std::fs::remove_file(&tmp);
    if std::fs::hard_link(from, &tmp).is_err() {
        std::fs::copy(from, &tmp).map_err(|e| RunDirError::write(&tmp, e))?;
    }
    std::fs::rename(&tmp, to).map_err(|e| RunDirError::write(to, e))
}

impl RunDir {
    /// The teacher's unit.
    pub fn teacher_unit(&self) -> Unit {
        self.unit("teacher", self.root.join("teacher"), "", &[])
    }

    /// Block `i`'s distillation unit.
    pub fn distill_unit(&self, i: usize) -> Unit {
        self.unit(&format!("distill/block{i}"), self.distill_dir(i), "", &[])
    }

    /// Block `i`'s rating unit.
    pub fn rate_unit(&self, i: usize) -> Unit {
        self.unit(
            &format!("rate/block{i}"),
            self.root.join("rate"),
            &format!("block{i}."),
            &[],
        )
    }

    /// The search's unit.
    pub fn search_unit(&self) -> Unit {
        self.unit("search", self.root.join("search"), "", &[])
    }

    /// A retrained net's unit: its trained weights and state (its `arch.toml` names the run).
    pub fn retrain_unit(&self, name: &str) -> Unit {
        self.unit(
            &format!("retrain/{name}"),
            self.retrain_dir(name),
            "",
            &["arch.toml"],
        )
    }

    /// Seed `k` of a study net.
    pub fn study_net_unit(&self, name: &str, k: usize) -> Unit {
        self.unit(
            &format!("study/{name}/s{k}"),
            self.study_net(name, k).dir().to_path_buf(),
            "",
            &[],
        )
    }

    fn unit(&self, name: &str, dir: PathBuf, prefix: &str, skip: &'static [&'static str]) -> Unit {
        Unit {
            name: name.into(),
            dir,
            prefix: prefix.into(),
            skip,
        }
    }

    fn unit_file(&self, unit: &str) -> PathBuf {
        self.root
            .join("stages")
            .join(format!("{}.json", unit.replace('/', "__")))
    }

    /// What the run recorded about a unit.
    pub fn unit_record(&self, unit: &str) -> Result<Option<UnitRecord>, RunDirError> {
        read_json(&self.unit_file(unit))
    }

    fn record_unit(&self, unit: &str, record: &UnitRecord) -> Result<(), RunDirError> {
        write_json(&self.unit_file(unit), record)
    }

    /// Every unit the run recorded, by name.
    pub fn unit_records(&self) -> BTreeMap<String, UnitRecord> {
        let mut out = BTreeMap::new();
        if let Ok(rd) = std::fs::read_dir(self.root.join("stages")) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(stem) = name.strip_suffix(".json")
                    && let Ok(Some(r)) = read_json::<UnitRecord>(&e.path())
                {
                    out.insert(stem.replace("__", "/"), r);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_differ_by_every_part() {
        let k = |a: u32, b: &str| KeyBuilder::new("s").with("a", &a).with("b", &b).finish();
        assert_eq!(k(1, "x"), k(1, "x"));
        assert_ne!(k(1, "x"), k(2, "x"));
        assert_ne!(k(1, "x"), k(1, "y"));
        assert_ne!(
            KeyBuilder::new("s").with("a", &1).finish(),
            KeyBuilder::new("t").with("a", &1).finish()
        );
    }
}
