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
    }
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
