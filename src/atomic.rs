//! Writing files so that a kill never leaves half of one: every write goes to a temp file beside
//! the target and is renamed over it. The one implementation of the crate, a leaf that imports
//! nothing of it: the run directory, the local MLflow store, the spool and weight exports use it.

use std::path::{Path, PathBuf};

/// A temp name beside `path`, unique to this process and call (block tasks may run at once).
fn tmp_beside(path: &Path) -> PathBuf {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{}.{n}.tmp~", std::process::id()));
    path.with_file_name(name)
}

/// Writes through a temp file and a rename, making the parent folders first.
pub fn write_with(
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
pub fn write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_with(path, |tmp| std::fs::write(tmp, bytes))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_failed_write_leaves_neither_the_target_nor_a_temp_file() {
        let dir = std::env::temp_dir().join(format!("dnarun-atomic-{}", std::process::id()));
        let target = dir.join("sub/file.txt");
        super::write(&target, b"one").unwrap();
        let err = super::write_with(&target, |tmp| {
            std::fs::write(tmp, b"half")?;
            Err(std::io::Error::other("killed"))
        });
        assert!(err.is_err());
        assert_eq!(std::fs::read(&target).unwrap(), b"one");
        let left: Vec<_> = std::fs::read_dir(dir.join("sub")).unwrap().collect();
        assert_eq!(left.len(), 1, "the temp file is removed");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
