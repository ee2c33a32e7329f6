//! `study.reuse`: the retrained nets of earlier studies, taken instead of retraining them again.
//! A net's accuracy depends only on its architecture, the data it is retrained and tested on,
//! the retraining settings and the seed, so a study that changes only how blocks are distilled,
//! rated or searched (one experiment per hypothesis) re-rates the same nets without retraining
//! them. An earlier study qualifies when its recipe differs from this one only in keys that
//! cannot change a retrained net; any other difference is reported with the keys.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::problems::Problems;

/// Accuracies of retrained nets from earlier studies, by the nets' block paths.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Reused {
    nets: BTreeMap<Vec<String>, (PathBuf, Vec<f64>)>,
}

impl Reused {
    /// The accuracy of seed `k` of the net with these paths, and the run it comes from.
    pub fn accuracy(&self, paths: &[String], k: usize) -> Option<(&Path, f64)> {
        let (dir, acc) = self.nets.get(paths)?;
        acc.get(k).map(|a| (dir.as_path(), *a))
    }

    /// Nets known.
    pub fn len(&self) -> usize {
        self.nets.len()
    }

    /// Whether no net is known.
    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }
}

/// The part of an earlier study's `study.json` read here.
#[derive(Deserialize)]
struct Earlier {
    nets: Vec<EarlierNet>,
    top1: Option<EarlierNet>,
}

#[derive(Deserialize)]
struct EarlierNet {
    paths: Vec<String>,
    accuracies: Vec<f64>,
}

/// Recipe keys that cannot change a retrained net: how blocks are distilled, rated and
/// searched, what the study samples, where things go, and the distillation and rating subsets
/// (the retraining subset is drawn independently of them).
fn cannot_change_a_net(key: &str) -> bool {
    const FREE: [&str; 16] = [
        "distill.",
        "rate.",
        "search.",
        "study.",
        "tracking.",
        "runtime.",
        "teacher.train.",
        "teacher.weights",
        "experiment.name",
        "experiment.output_dir",
        "data.samples_per_class",
        "data.rate_per_class",
        "data.cache",
        "data.workers",
        "retrain.random_controls",
        "extends",
    ];
    FREE.iter()
        .any(|f| key == f.trim_end_matches('.') || key.starts_with(f))
        || (key.starts_with("blocks.") && key.ends_with(".lr"))
}

/// Reads the studies `study.reuse` names (run directories, relative to the recipe) and checks
/// that their nets are this recipe's nets.
pub(super) fn resolve(
    dirs: &[String],
    base: &Path,
    recipe: &serde_json::Value,
    p: &mut Problems,
) -> Reused {
    let mut reused = Reused::default();
    for (i, d) in dirs.iter().enumerate() {
        let dir = base.join(d);
        let ptr = format!("/study/reuse/{i}");
        match read(&dir, recipe) {
            Ok(nets) => {
                for n in nets {
                    reused
                        .nets
                        .entry(n.paths)
                        .or_insert((dir.clone(), n.accuracies));
                }
            }
            Err((msg, help)) => p.err(
                &ptr,
                format!("`study.reuse[{i}]` `{}` {msg}", dir.display()),
                Some(help),
            ),
        }
    }
    reused
}

/// The recipe an earlier run used: the `[recipe]` table of its `dnarun.lock`.
fn earlier_recipe(dir: &Path) -> Result<serde_json::Value, String> {
    let path = dir.join("dnarun.lock");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("has no readable `dnarun.lock` ({e})"))?;
    let lock: toml::Table = toml::from_str(&text)
        .map_err(|e| format!("has a `dnarun.lock` that cannot be read ({e})"))?;
    let recipe = lock
        .get("recipe")
        .ok_or("has a `dnarun.lock` without its recipe")?;
    serde_json::to_value(recipe).map_err(|e| e.to_string())
}

fn read(dir: &Path, recipe: &serde_json::Value) -> Result<Vec<EarlierNet>, (String, String)> {
    let earlier = earlier_recipe(dir).map_err(|e| {
        (
            format!("is not a run directory: it {e}"),
            "name the run directory of an earlier `dnarun study`, relative to the recipe".into(),
        )
    })?;
    let differ: Vec<String> = crate::recipe::differing_keys(&earlier, recipe)
        .into_iter()
        .filter(|k| !cannot_change_a_net(k))
        .collect();
    if !differ.is_empty() {
        return Err((
            format!(
                "retrained its nets differently: keys that differ: {}",
                differ
                    .iter()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            "reuse only studies whose data, teacher shape, blocks, student, retraining and seed equal this recipe's (distillation, rating, search and study keys may differ)".into(),
        ));
    }
    let path = dir.join("study.json");
    let text = std::fs::read_to_string(&path).map_err(|e| {
        (
            format!("has no readable `study.json` ({e})"),
            format!("finish that study first: `dnarun resume {}`", dir.display()),
        )
    })?;
    let earlier: Earlier = serde_json::from_str(&text).map_err(|e| {
        (
            format!("has a `study.json` that cannot be read ({e})"),
            "re-run that study's last stage, or drop it from `study.reuse`".into(),
        )
    })?;
    Ok(earlier.nets.into_iter().chain(earlier.top1).collect())
}

#[cfg(test)]
mod tests {
    use super::cannot_change_a_net;

    #[test]
    fn only_keys_outside_retraining_are_free() {
        for k in [
            "distill.epochs",
            "rate.calibration_batches",
            "data.rate_per_class",
            "blocks.1.lr",
            "study.sample",
            "teacher.train.epochs",
        ] {
            assert!(cannot_change_a_net(k), "{k}");
        }
        for k in [
            "retrain.epochs",
            "data.train_per_class",
            "data.batch_size",
            "experiment.seed",
            "blocks.1.cells.0.hidden",
            "student.stem",
            "teacher.cnn.stages.0.channels",
            "rate_per_class",
            "distiller",
        ] {
            assert!(!cannot_change_a_net(k), "{k}");
        }
    }
}
