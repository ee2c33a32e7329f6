//! The search stage: from the ratings and the cost model, the exact top-k architectures under
//! the budget, random controls of the same budget when asked, and the Pareto front.

use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::Ctx;
use super::StageError;
use super::rate::{BlockRatings, architecture_of, ratings_of};
use crate::plan::{Measure, Plan};
use crate::rundir::{read_json, write_atomic, write_json};
use crate::space::Architecture;
use crate::space::FlopsConvention;
use crate::space::search::{Candidate, Front, suffix_fronts, suffix_fronts_on, top_k};
use crate::track::RunStatus;

/// A chosen (or control) architecture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Chosen {
    /// Name in the run: `top1`, `top2`, ..., `random1`, ...
    pub name: String,
    /// Each block's path.
    pub paths: Vec<String>,
    /// Summed rating.
    pub rating: f64,
    /// Multiply-accumulates.
    pub macs: u64,
    /// FLOPs, DNA convention.
    pub flops_dna: u64,
    /// Parameters.
    pub params: u64,
    /// The learned predictor's accuracy (with `search.objective = "predicted"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predicted_accuracy: Option<f64>,
    /// Predicted milliseconds by `search.latency_table`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
}

/// What the search found.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SearchResult {
    /// The best architectures under the budget, best first.
    pub top: Vec<Chosen>,
    /// Random architectures under the same budget.
    pub controls: Vec<Chosen>,
    /// The Pareto front `(cost, rating)` of the primary measure, fixed cost included.
    pub front: Vec<(f64, f64)>,
    /// With a latency table: the Pareto front `(predicted ms, rating)`, stem and head included.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub latency_front: Vec<(f64, f64)>,
    /// What the front's cost is.
    pub measure: String,
    /// Seconds the search took.
    pub seconds: f64,
}

fn measure_name(m: Measure) -> String {
    match m {
        Measure::Params => "params".into(),
        Measure::Flops(FlopsConvention::Dna) => "flops_dna".into(),
        Measure::Flops(FlopsConvention::Macs) => "macs".into(),
    }
}

impl Chosen {
    /// The architecture in a plan's space.
    pub fn architecture(&self, plan: &Plan) -> Result<Architecture, StageError> {
        parse_paths(plan, &self.paths)
    }
}

/// Each block's path in its textual form, as an architecture of the plan's space.
pub fn parse_paths(plan: &Plan, blocks: &[String]) -> Result<Architecture, StageError> {
    if blocks.len() != plan.space.blocks.len() {
        return Err(StageError::Architecture(format!(
            "the architecture names {} block paths but the recipe has {} blocks",
            blocks.len(),
            plan.space.blocks.len()
        )));
    }
    let paths = blocks
        .iter()
        .zip(&plan.space.blocks)
        .map(|(p, b)| b.parse_path(p))
        .collect::<Result<Vec<_>, _>>()
        .map_err(StageError::Architecture)?;
    Ok(Architecture { paths })
}

/// Describes an architecture.
pub fn describe(plan: &Plan, name: &str, arch: &Architecture, rating: f64) -> Chosen {
    let c = plan.space.cost(arch);
    Chosen {
        name: name.into(),
        paths: plan
            .space
            .blocks
            .iter()
            .zip(&arch.paths)
            .map(|(b, p)| b.path_name(p))
            .collect(),
        rating,
        macs: c.macs,
        flops_dna: c.flops(FlopsConvention::Dna),
        params: c.params,
        predicted_accuracy: None,
        latency_ms: plan.search.latency_ms(&plan.space, arch),
    }
}

/// Searches with the given ratings.
pub fn search(plan: &Plan, ratings: &[BlockRatings]) -> Result<SearchResult, StageError> {
    let started = Instant::now();
    let blocks: Vec<Vec<Candidate>> = ratings
        .iter()
        .zip(&plan.space.blocks)
        .enumerate()
        .map(|(bi, (r, b))| {
            r.ratings
                .iter()
                .enumerate()
                .map(|(k, x)| Candidate {
                    rating: plan.search.score(bi, x.rating),
                    cost: plan.search.path_costs(b, &r.path(k)),
                })
                .collect()
        })
        .collect();
    let fixed = plan.search.fixed_costs(&plan.space);
    let limits = plan.search.all_limits();
    let k = plan.search.top_k;
    let found = top_k(&blocks, fixed, limits, k);
    if found.is_empty() {
        return Err(StageError::NothingFits);
    }
    let arch_of = |choice: &[usize]| architecture_of(ratings, choice);
    // The ratings of a choice (what the report shows whatever the objective).
    let raw = |choice: &[usize]| ratings_of(ratings, choice);
    let top = found
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let block_ratings = raw(&f.choice);
            let mut c = describe(
                plan,
                &format!("top{}", i + 1),
                &arch_of(&f.choice),
                block_ratings.iter().sum(),
            );
            c.predicted_accuracy = plan
                .search
                .predictor
                .as_ref()
                .map(|p| p.predict(&block_ratings));
            c
        })
        .collect();
    let mut controls = Vec::new();
    let mut rng = ChaCha8Rng::seed_from_u64(plan.seeds.controls());
    let mut tries = 0;
    while controls.len() < plan.retrain.random_controls && tries < 1_000_000 {
        tries += 1;
        let choice: Vec<usize> = blocks
            .iter()
            .map(|b| rng.random_range(0..b.len()))
            .collect();
        let cost = choice.iter().enumerate().fold(fixed, |a, (i, &c)| {
            std::array::from_fn(|j| a[j] + blocks[i][c].cost[j])
        });
        if (0..cost.len()).all(|j| cost[j] <= limits[j]) {
            let rating = raw(&choice).iter().sum();
            controls.push(describe(
                plan,
                &format!("random{}", controls.len() + 1),
                &arch_of(&choice),
                rating,
            ));
        }
    }
    let front: Front = suffix_fronts(&blocks).swap_remove(0);
    Ok(SearchResult {
        top,
        controls,
        front: front.0.iter().map(|&(c, r)| (c + fixed[0], r)).collect(),
        latency_front: match &plan.search.latency {
            Some(_) => suffix_fronts_on(&blocks, 2)
                .swap_remove(0)
                .0
                .iter()
                .map(|&(c, r)| (c + fixed[2], r))
                .collect(),
            None => Vec::new(),
        },
        measure: measure_name(plan.search.measures[0]),
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// A plain SVG plot of the front and the chosen architectures.
pub fn pareto_svg(result: &SearchResult, limit: f64) -> String {
    let (w, h, m) = (640.0, 420.0, 60.0);
    let mut pts: Vec<(f64, f64)> = result.front.clone();
    let chosen: Vec<(f64, f64, &str)> = result
        .top
        .iter()
        .chain(&result.controls)
        .map(|c| {
            let x = match result.measure.as_str() {
                "params" => c.params as f64,
                "macs" => c.macs as f64,
                "latency_ms" => c.latency_ms.unwrap_or(f64::NAN),
                _ => c.flops_dna as f64,
            };
            (x, c.rating, c.name.as_str())
        })
        .collect();
    pts.extend(chosen.iter().map(|c| (c.0, c.1)));
    let (x0, x1) = pts.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |a, p| {
        (a.0.min(p.0), a.1.max(p.0))
    });
    let (y0, y1) = pts.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |a, p| {
        (a.0.min(p.1), a.1.max(p.1))
    });
    let sx = |x: f64| m + (x - x0) / (x1 - x0).max(1e-9) * (w - 2.0 * m);
    let sy = |y: f64| h - m - (y - y0) / (y1 - y0).max(1e-9) * (h - 2.0 * m);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    s += &format!(
        "<line x1=\"{m}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/><line x1=\"{m}\" y1=\"{m}\" x2=\"{m}\" y2=\"{}\" stroke=\"black\"/>\n",
        h - m,
        w - m,
        h - m,
        h - m
    );
    s += &format!(
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{} ({:.3e} .. {:.3e})</text>\n",
        w / 2.0,
        h - 20.0,
        result.measure,
        x0,
        x1
    );
    s += &format!(
        "<text x=\"15\" y=\"{}\" transform=\"rotate(-90 15 {})\" text-anchor=\"middle\">summed rating ({y0:.3} .. {y1:.3})</text>\n",
        h / 2.0,
        h / 2.0
    );
    let line: Vec<String> = result
        .front
        .iter()
        .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
        .collect();
    s += &format!(
        "<polyline points=\"{}\" fill=\"none\" stroke=\"steelblue\" stroke-width=\"1.5\"/>\n",
        line.join(" ")
    );
    if limit.is_finite() && limit >= x0 && limit <= x1 {
        s += &format!(
            "<line x1=\"{0:.1}\" y1=\"{m}\" x2=\"{0:.1}\" y2=\"{1}\" stroke=\"grey\" stroke-dasharray=\"4\"/>\n",
            sx(limit),
            h - m
        );
    }
    for (x, y, name) in chosen {
        let color = if name.starts_with("top") {
            "crimson"
        } else {
            "darkorange"
        };
        s += &format!(
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"4\" fill=\"{color}\"><title>{name}</title></circle>\n",
            sx(x),
            sy(y)
        );
    }
    s + "</svg>\n"
}

/// Runs the search stage (skipped when its result exists).
pub fn run(ctx: &mut Ctx) -> Result<SearchResult, StageError> {
    let path = ctx.dir.search_result();
    if let Some(r) = read_json(&path)? {
        return Ok(r);
    }
    let ratings = super::rate::load_all(ctx)?;
    let result = search(ctx.plan, &ratings)?;
    let svg = ctx.dir.pareto_svg();
    write_atomic(
        &svg,
        pareto_svg(&result, ctx.plan.search.limits[0]).as_bytes(),
    )?;
    let latency_svg = (!result.latency_front.is_empty()).then(|| {
        let by_latency = SearchResult {
            front: result.latency_front.clone(),
            measure: "latency_ms".into(),
            ..result.clone()
        };
        let limit = ctx.plan.search.all_limits()[2];
        (ctx.dir.pareto_latency_svg(), pareto_svg(&by_latency, limit))
    });
    if let Some((p, svg)) = &latency_svg {
        write_atomic(p, svg.as_bytes())?;
    }
    write_json(&path, &result)?;
    let run = ctx.track.child("search", &[])?;
    ctx.track.metrics(
        &run,
        0,
        &[
            ("best_rating", result.top[0].rating),
            ("front_points", result.front.len() as f64),
            ("seconds", result.seconds),
        ],
    )?;
    ctx.track.artifact(&run, &path, "")?;
    ctx.track.artifact(&run, &svg, "")?;
    if let Some((p, _)) = &latency_svg {
        ctx.track.artifact(&run, p, "")?;
    }
    ctx.track.end("search", RunStatus::Finished)?;
    // The top-1's cost on the parent run, so runs can be plotted against cost in MLflow.
    let parent = ctx.track.parent.clone();
    let top = &result.top[0];
    ctx.track.metrics(
        &parent,
        0,
        &[
            ("top1_rating", top.rating),
            ("top1_mflops", top.flops_dna as f64 / 1e6),
            ("top1_mmacs", top.macs as f64 / 1e6),
            ("top1_mparams", top.params as f64 / 1e6),
        ],
    )?;
    tracing::info!(
        "search: best rating {:.4} ({} front points, {:.3}s)",
        result.top[0].rating,
        result.front.len(),
        result.seconds
    );
    Ok(result)
}
