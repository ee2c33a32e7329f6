//! Writing files so that a kill never leaves half of one: every write goes to a temp file beside
//! the target and is renamed over it. JSON state, Burn records and optimizer state go the same way.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::store::ModuleRecord;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::RunError;

/// A temp name beside `path`, unique to this process and call (block tasks may run at once).
pub fn tmp_beside(path: &Path) -> PathBuf {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{}.{n}.tmp~", std::process::id()));
    path.with_file_name(name)
}

/// Writes through a temp file and a rename, making the parent folders first. The one atomic
/// write of the crate: the run directory, the local MLflow store and weight exports use it.
pub fn write_atomic_io(
    path: &Path,
    write: impl FnOnce(&Path) -> std::io::Result<()>,
) -> std::io::Result<()> {
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = tmp_beside(path);
    if let Err(e) = write(&tmp) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, path)
}

/// Writes bytes atomically.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), RunError> {
    write_atomic_io(path, |tmp| std::fs::write(tmp, bytes)).map_err(|e| RunError::write(path, e))
}

/// Writes pretty JSON atomically.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), RunError> {
    let mut text = serde_json::to_string_pretty(value).map_err(|e| RunError::write(path, e))?;
    text.push('\n');
    write_atomic(path, text.as_bytes())
}

/// Reads JSON, `None` when the file does not exist.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, RunError> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| RunError::file(path, format!("is not valid: {e}"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(RunError::file(path, e)),
    }
}

/// Saves a module's weights (Burn record) atomically.
pub fn save_module<M: Module>(module: &M, path: &Path) -> Result<(), RunError> {
    // `valid` folds pending BatchNorm running-stat updates in; a plain record would miss the last.
    let record = module.valid().into_record();
    write_atomic_io(path, |tmp| record.save(tmp).map_err(std::io::Error::other))
        .map_err(|e| RunError::write(path, e))
}

/// Loads weights saved by [`save_module`] into a module of the same shape.
pub fn load_module<M: Module>(module: M, path: &Path) -> Result<M, RunError> {
    let record = ModuleRecord::load(path)
        .map_err(|e| RunError::file(path, format!("is not a readable Burn record: {e}")))?;
    module.try_load_record(record).map_err(|e| {
        RunError::file(
            path,
            format!("does not fit the model the recipe describes: {e}"),
        )
    })
}

/// Saves an optimizer's state atomically.
pub fn save_optim(optim: &burn::optim::ModuleOptimizer, path: &Path) -> Result<(), RunError> {
    write_atomic_io(path, |tmp| optim.save(tmp).map_err(std::io::Error::other))
        .map_err(|e| RunError::write(path, e))
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
    ) -> Result<(M, burn::optim::ModuleOptimizer), RunError> {
        let model = load_module(model, &self.model(tag))?;
        let p = self.optim(tag);
        let optim = optim.load(&p).map_err(|e| RunError::file(&p, e))?;
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
    ) -> Result<(), RunError> {
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
