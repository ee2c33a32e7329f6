//! The run's files, written atomically ([`crate::atomic`]): bytes, JSON state, Burn records and
//! optimizer state, and tagged checkpoints.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::store::ModuleRecord;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::RunDirError;
use crate::atomic;

/// Writes bytes atomically.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), RunDirError> {
    atomic::write(path, bytes).map_err(|e| RunDirError::write(path, e))
}

/// Writes pretty JSON atomically.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), RunDirError> {
    let mut text = serde_json::to_string_pretty(value).map_err(|e| RunDirError::write(path, e))?;
    text.push('\n');
    write_atomic(path, text.as_bytes())
}

/// Reads JSON, `None` when the file does not exist.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, RunDirError> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| RunDirError::invalid(path, format!("is not valid: {e}"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(RunDirError::read(path, e)),
    }
}

/// Saves a module's weights (Burn record) atomically.
pub fn save_module<M: Module>(module: &M, path: &Path) -> Result<(), RunDirError> {
    // `valid` folds pending BatchNorm running-stat updates in; a plain record would miss the last.
    let record = module.valid().into_record();
    atomic::write_with(path, |tmp| record.save(tmp).map_err(std::io::Error::other))
        .map_err(|e| RunDirError::write(path, e))
}

/// Loads weights saved by [`save_module`] into a module of the same shape.
pub fn load_module<M: Module>(module: M, path: &Path) -> Result<M, RunDirError> {
    let record = ModuleRecord::load(path)
        .map_err(|e| RunDirError::invalid(path, format!("is not a readable Burn record: {e}")))?;
    module.try_load_record(record).map_err(|e| {
        RunDirError::invalid(
            path,
            format!("does not fit the model the recipe describes: {e}"),
        )
    })
}

/// Saves an optimizer's state atomically.
pub fn save_optim(optim: &burn::optim::ModuleOptimizer, path: &Path) -> Result<(), RunDirError> {
    atomic::write_with(path, |tmp| optim.save(tmp).map_err(std::io::Error::other))
        .map_err(|e| RunDirError::write(path, e))
}

/// A model and its optimizer saved together under a tag (`<model>-<tag>.bpk`,
/// `<optim>-<tag>.bpk`; the empty tag is the final `<model>.bpk`), with a state file that names
/// the tag and is written last, so a kill between the writes never pairs a model with another
/// step's optimizer or state.
#[derive(Debug, Clone)]
pub struct Checkpoints {
    dir: PathBuf,
    model: &'static str,
    optim: &'static str,
}

impl Checkpoints {
    /// Checkpoints in `dir` with these file stems.
    pub fn new(dir: PathBuf, model: &'static str, optim: &'static str) -> Checkpoints {
        Checkpoints { dir, model, optim }
    }

    fn tagged(&self, stem: &str, tag: &str) -> PathBuf {
        self.dir.join(if tag.is_empty() {
            format!("{stem}.bpk")
        } else {
            format!("{stem}-{tag}.bpk")
        })
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The model file of a tag.
    pub fn model(&self, tag: &str) -> PathBuf {
        self.tagged(self.model, tag)
    }

    /// The optimizer file of a tag.
    pub fn optim(&self, tag: &str) -> PathBuf {
        self.tagged(self.optim, tag)
    }

    /// The state file.
    pub fn state(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    /// Loads the model and optimizer of a tag.
    pub fn load<M: Module>(
        &self,
        model: M,
        optim: burn::optim::ModuleOptimizer,
        tag: &str,
    ) -> Result<(M, burn::optim::ModuleOptimizer), RunDirError> {
        let model = load_module(model, &self.model(tag))?;
        let p = self.optim(tag);
        let optim = optim.load(&p).map_err(|e| RunDirError::read(&p, e))?;
        Ok((model, optim))
    }

    /// Saves model and optimizer under `tag`, then `state` (which names `tag`), then removes the
    /// files of `old`.
    pub fn save<M: Module, S: Serialize>(
        &self,
        model: &M,
        optim: &burn::optim::ModuleOptimizer,
        tag: &str,
        old: &str,
        state: &S,
    ) -> Result<(), RunDirError> {
        save_module(model, &self.model(tag))?;
        save_optim(optim, &self.optim(tag))?;
        write_json(&self.state(), state)?;
        if old != tag {
            let _ = std::fs::remove_file(self.model(old));
            let _ = std::fs::remove_file(self.optim(old));
        }
        Ok(())
    }
}
