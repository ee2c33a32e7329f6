//! The budget resolved: which measures it limits (FLOPs in a convention, parameters) in
//! absolute units, checked against the cheapest and dearest students of the space.

use serde::{Deserialize, Serialize};

use super::SearchSpec;
use super::problems::Problems;
use crate::recipe::{Objective, Search};
use crate::space::predictor::Predictor;
use crate::space::{Cost, FlopsConvention, Space};

/// What a budget limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Measure {
    /// FLOPs in a convention.
    Flops(FlopsConvention),
    /// Parameters.
    Params,
}

impl Measure {
    /// The measure of a cost.
    pub fn of(&self, c: &Cost) -> u64 {
        match self {
            Measure::Flops(conv) => c.flops(*conv),
            Measure::Params => c.params,
        }
    }
}

pub(super) fn resolve(
    s: &Search,
    space: &Space,
    p: &mut Problems,
    notes: &mut Vec<String>,
) -> SearchSpec {
    // Budgets.
    let mut measures = [Measure::Flops(s.flops_convention), Measure::Params];
    let mut limits = [f64::INFINITY, f64::INFINITY];
    match (s.max_mflops, s.max_mparams) {
        (Some(f), mp) => {
            limits[0] = f * 1e6;
            limits[1] = mp.map_or(f64::INFINITY, |mp| mp * 1e6);
        }
        (None, Some(mp)) => {
            measures = [Measure::Params, Measure::Flops(s.flops_convention)];
            limits[0] = mp * 1e6;
        }
        (None, None) => {}
    }
    let ok_space = p.is_empty()
        && space
            .blocks
            .iter()
            .all(|b| !b.cells.is_empty() && !b.ops.is_empty());
    if ok_space {
        for (m, limit) in measures.iter().zip(limits) {
            if limit.is_infinite() {
                continue;
            }
            let (lo, hi) = space.extremes(|c| m.of(c));
            let (key, unit) = match m {
                Measure::Params => ("max_mparams", "M params"),
                Measure::Flops(_) => ("max_mflops", "M FLOPs"),
            };
            if limit < lo as f64 {
                p.err(
                        &format!("/search/{key}"),
                        format!(
                            "`search.{key}` is {}, but the cheapest student in this space needs {:.2}{unit}: no architecture fits",
                            limit / 1e6,
                            lo as f64 / 1e6
                        ),
                        Some(format!(
                            "raise `search.{key}` to at least {:.2}, or add cheaper cells or ops",
                            lo as f64 / 1e6
                        )),
                    );
            } else if limit >= hi as f64 {
                // Not wrong, but worth knowing: every student fits.
                notes.push(format!(
                    "`search.{key}` is {}, but the most expensive student needs only {:.2}{unit}: the budget constrains nothing, the search ranks the whole space",
                    limit / 1e6,
                    hi as f64 / 1e6
                ));
            }
        }
    }

    SearchSpec {
        top_k: s.top_k,
        flops_convention: s.flops_convention,
        measures,
        limits,
        predictor: None,
        latency: None,
    }
}

/// The latency table `search.latency_table` names, read and checked against the space (every
/// layer its students are made of), and the budget `search.max_latency_ms` checked against the
/// fastest and slowest predicted students.
pub(super) fn latency(
    s: &Search,
    base: &std::path::Path,
    space: &Space,
    p: &mut Problems,
    notes: &mut Vec<String>,
) -> Option<super::LatencyBudget> {
    use crate::space::latency::LatencyTable;
    let Some(file) = &s.latency_table else {
        if s.max_latency_ms.is_some() {
            p.err(
                "/search/max_latency_ms",
                "`search.max_latency_ms` needs a latency table, but `search.latency_table` is missing".into(),
                Some("measure one with `dnarun latency RECIPE -o latency.json` on the target device and set `search.latency_table = \"latency.json\"`".into()),
            );
        }
        return None;
    };
    let path = base.join(file);
    let table = match std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot be read ({e})"))
        .and_then(|t| {
            serde_json::from_str::<LatencyTable>(&t)
                .map_err(|e| format!("is not a latency table ({e})"))
        }) {
        Ok(t) => t,
        Err(why) => {
            p.err(
                "/search/latency_table",
                format!("`search.latency_table` `{}` {why}", path.display()),
                Some("write it with `dnarun latency RECIPE -o FILE`".into()),
            );
            return None;
        }
    };
    if !p.is_empty() {
        return None;
    }
    // The fastest and slowest predicted students; a layer the table lacks is an error.
    let mut range = match table.fixed_ms(space) {
        Ok(ms) => (ms, ms),
        Err(key) => return missing(p, &path, &key),
    };
    for b in &space.blocks {
        let mut lo = f64::INFINITY;
        let mut hi: f64 = 0.0;
        for path_ in b.paths() {
            match table.path_ms(b, &path_) {
                Ok(ms) => (lo, hi) = (lo.min(ms), hi.max(ms)),
                Err(key) => return missing(p, &path, &key),
            }
        }
        range = (range.0 + lo, range.1 + hi);
    }
    let max_ms = s.max_latency_ms.unwrap_or(f64::INFINITY);
    if max_ms < range.0 {
        p.err(
            "/search/max_latency_ms",
            format!(
                "`search.max_latency_ms` is {max_ms}, but the fastest student in this space takes {:.3} ms on `{}` by the table: no architecture fits",
                range.0, table.device
            ),
            Some(format!(
                "raise `search.max_latency_ms` to at least {:.3}, or add faster cells or ops",
                range.0
            )),
        );
    } else if max_ms.is_finite() && max_ms >= range.1 {
        notes.push(format!(
            "`search.max_latency_ms` is {max_ms}, but the slowest student takes only {:.3} ms by the table: the latency budget constrains nothing",
            range.1
        ));
    }
    Some(super::LatencyBudget {
        file: path,
        table,
        max_ms,
    })
}

fn missing(p: &mut Problems, path: &std::path::Path, key: &str) -> Option<super::LatencyBudget> {
    p.err(
        "/search/latency_table",
        format!(
            "`search.latency_table` `{}` has no entry for the layer `{key}`: it was measured for another space",
            path.display()
        ),
        Some("measure it again for this recipe with `dnarun latency RECIPE -o FILE`".into()),
    );
    None
}

/// The learned predictor `search.objective = "predicted"` names, checked against the blocks.
pub(super) fn predictor(
    s: &Search,
    base: &std::path::Path,
    blocks: usize,
    p: &mut Problems,
) -> Option<Predictor> {
    match (s.objective, &s.predictor) {
        (Objective::Rating, _) => None,
        (Objective::Predicted, None) => {
            p.err(
                "/search/objective",
                "`search.objective` is `\"predicted\"`, but `search.predictor` is missing".into(),
                Some(
                    "point `search.predictor` at a `predictor.json` written by `dnarun study`"
                        .into(),
                ),
            );
            None
        }
        (Objective::Predicted, Some(file)) => {
            let path = base.join(file);
            let read = std::fs::read_to_string(&path)
                .map_err(|e| format!("cannot be read ({e})"))
                .and_then(|t| {
                    serde_json::from_str::<Predictor>(&t)
                        .map_err(|e| format!("is not a predictor file ({e})"))
                });
            match read {
                Ok(pred) if pred.weights.len() == blocks => Some(pred),
                Ok(pred) => {
                    p.err(
                        "/search/predictor",
                        format!(
                            "`search.predictor` `{}` has weights for {} blocks, but the recipe has {blocks}",
                            path.display(),
                            pred.weights.len()
                        ),
                        Some("fit it with `dnarun study` on a recipe with the same blocks".into()),
                    );
                    None
                }
                Err(m) => {
                    p.err(
                        "/search/predictor",
                        format!("`search.predictor` `{}` {m}", path.display()),
                        Some(
                            "write it with `dnarun study`; the path is relative to the recipe"
                                .into(),
                        ),
                    );
                    None
                }
            }
        }
    }
}
