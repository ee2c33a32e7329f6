//! The ranking study (`dnarun study`): does the rating predict accuracy? Samples architectures
//! where the search decides (stratified by rating within the budget band) or across the space,
//! retrains each from scratch with several seeds, and reports for each predictor (summed rating,
//! a learned additive predictor cross-validated, FLOPs, params) Kendall's tau-b, Spearman's rho
//! and Pearson's r with bootstrap intervals, the seed noise and the tau it allows, and the
//! searched top-1's percentile among the sampled nets of its budget. Resumable: finished nets
//! are never retrained.

use std::collections::{BTreeMap, HashSet};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::StageError;
use super::rate::{BlockRatings, architecture_of, choice_of, ratings_of};
use super::retrain::ArchFile;
use super::search::SearchResult;
use super::{Ctx, train_classifier};
use crate::nn::Student;
use crate::plan::{Plan, Seeds, StudySample};
use crate::rundir::{write_atomic, write_json};
use crate::space::FlopsConvention;
use crate::space::predictor::Predictor;
use crate::stats::{
    Estimate, bootstrap, kendall_tau, mean_reliability, paired_tau_difference, pearson, pooled_std,
    spearman, tau_ceiling,
};
use crate::track::RunStatus;

/// One retrained net of a study.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StudyNet {
    /// Name in the study (`net01`, ..., `top1`).
    pub name: String,
    /// Each block's path.
    pub paths: Vec<String>,
    /// Each block's rating.
    pub block_ratings: Vec<f64>,
    /// Summed rating.
    pub rating: f64,
    /// FLOPs, DNA convention.
    pub flops_dna: u64,
    /// Parameters.
    pub params: u64,
    /// Test accuracy of each seed.
    pub accuracies: Vec<f64>,
    /// Their mean.
    pub mean_accuracy: f64,
}

/// How well one predictor ranks the nets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Figures {
    /// Kendall's tau-b.
    pub kendall_tau: f64,
    /// Its 95 % bootstrap interval.
    pub kendall_tau_ci: [f64; 2],
    /// Spearman's rho.
    pub spearman: f64,
    /// Its 95 % bootstrap interval.
    pub spearman_ci: [f64; 2],
    /// Pearson's r.
    pub pearson: f64,
    /// Its 95 % bootstrap interval.
    pub pearson_ci: [f64; 2],
}

/// The study's result (`study.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StudyReport {
    /// Nets correlated (the searched top-1 is not among them).
    pub n: usize,
    /// Seeds per net.
    pub seeds: usize,
    /// How the nets were chosen.
    pub sample: String,
    /// Pooled seed-to-seed standard deviation of accuracy.
    pub noise_std: f64,
    /// The reliability of the nets' mean accuracies (ICC(1,k), [`crate::stats::mean_reliability`]):
    /// the share of their variance that is between nets rather than seed noise. The headline
    /// figure: no predictor can be judged against means that are mostly noise.
    #[serde(default)]
    pub reliability: Option<f64>,
    /// The mean tau a perfect predictor reaches against these k-seed means, simulated from the
    /// de-noised means ([`crate::stats::tau_ceiling`]); `None` when the means vary no more than
    /// the noise (`ceiling_note` says so).
    #[serde(default, alias = "tau_ceiling")]
    pub ceiling: Option<f64>,
    /// Why there is no ceiling.
    #[serde(default)]
    pub ceiling_note: Option<String>,
    /// Kendall's tau between the nets' accuracies with the first seed and with the second: one
    /// retraining against one other (with 2 or more seeds). Kept for comparison; `reliability`
    /// measures the means the predictors are scored against.
    #[serde(default)]
    pub seed_tau: Option<f64>,
    /// tau(summed rating) - tau(FLOPs) against the mean accuracies, with the paired bootstrap's
    /// 95 % interval: whether the rating ranks better than FLOPs.
    #[serde(default)]
    pub rating_vs_flops_tau_diff: Option<crate::stats::Estimate>,
    /// Percentage of the sampled nets whose mean accuracy is below the searched top-1's.
    pub top1_percentile: Option<f64>,
    /// Per predictor: `rating` (lower is better, so negated), `predicted` (leave-one-out),
    /// `flops`, `params`.
    pub predictors: BTreeMap<String, Figures>,
    /// The sampled nets.
    pub nets: Vec<StudyNet>,
    /// The searched top-1, retrained the same way.
    pub top1: Option<StudyNet>,
}

/// Block candidates' costs in the plan's measures.
fn costs(plan: &Plan, ratings: &[BlockRatings]) -> Vec<Vec<[f64; 2]>> {
    ratings
        .iter()
        .zip(&plan.space.blocks)
        .map(|(r, b)| {
            (0..r.ratings.len())
                .map(|k| plan.search.costs(&b.path_cost(&r.path(k))))
                .collect()
        })
        .collect()
}

/// The sampled nets: per block, an index into its ratings.
fn choose(plan: &Plan, ratings: &[BlockRatings]) -> Result<Vec<Vec<usize>>, StageError> {
    let s = &plan.study;
    if s.sample == StudySample::Files {
        return s
            .files
            .iter()
            .map(|f| {
                let arch = ArchFile::read(f)?.architecture(plan)?;
                choice_of(&arch, ratings).ok_or_else(|| StageError::UnratedPath { path: f.clone() })
            })
            .collect();
    }
    let costs = costs(plan, ratings);
    let fixed = plan.search.costs(&plan.space.fixed_cost());
    let limits = plan.search.limits;
    let band = s.sample == StudySample::Band && limits[0].is_finite();
    let lo = if band {
        limits[0] * (1.0 - s.band)
    } else {
        f64::NEG_INFINITY
    };
    let mut rng = ChaCha8Rng::seed_from_u64(plan.seeds.study());
    let want = 50 * s.architectures;
    let mut seen = HashSet::new();
    let mut pool: Vec<(f64, Vec<usize>)> = Vec::new();
    for _ in 0..2_000_000 {
        if pool.len() >= want {
            break;
        }
        let c: Vec<usize> = costs.iter().map(|b| rng.random_range(0..b.len())).collect();
        let cost = c.iter().enumerate().fold(fixed, |a, (i, &k)| {
            [a[0] + costs[i][k][0], a[1] + costs[i][k][1]]
        });
        let fits = !band || (cost[0] >= lo && cost[0] <= limits[0] && cost[1] <= limits[1]);
        if fits && seen.insert(c.clone()) {
            let key = if band {
                c.iter()
                    .enumerate()
                    .map(|(i, &k)| ratings[i].ratings[k].rating)
                    .sum()
            } else {
                cost[0]
            };
            pool.push((key, c));
        }
    }
    if pool.len() < s.architectures {
        return Err(StageError::BandTooNarrow {
            asked: s.architectures,
            found: pool.len(),
            band: s.band,
        });
    }
    // Stratified: evenly spaced quantiles of the key (rating in the band, cost over the space).
    pool.sort_by(|a, b| a.0.total_cmp(&b.0));
    let n = s.architectures;
    Ok((0..n)
        .map(|q| {
            pool[((q as f64 + 0.5) / n as f64 * pool.len() as f64) as usize]
                .1
                .clone()
        })
        .collect())
}

/// The cache key of seed `k` of a study net: its name (its initialisation's seed), its
/// architecture in the space, the retraining settings, and the training and test images.
pub fn net_key(
    plan: &Plan,
    data: &crate::data::Dataset,
    name: &str,
    paths: &[String],
    k: usize,
) -> crate::rundir::Key {
    super::trained_net_key("study", plan, data, &(name, paths, k))
}

/// Retrains a net with every seed (resuming where it stopped; taking it from the stage cache).
fn retrain(
    ctx: &mut Ctx,
    name: &str,
    choice: &[usize],
    ratings: &[BlockRatings],
) -> Result<StudyNet, StageError> {
    let plan = ctx.plan;
    // Each net's training curves in its own MLflow child run.
    let child = format!("study__{name}");
    let run = ctx.track.child(&child, &[])?;
    let arch = architecture_of(ratings, choice);
    let paths: Vec<String> = plan
        .space
        .blocks
        .iter()
        .zip(&arch.paths)
        .map(|(b, p)| b.path_name(p))
        .collect();
    let mut accuracies = Vec::new();
    for k in 0..plan.study.seeds {
        if ctx.stopping() {
            return Err(ctx.stopped());
        }
        let (unit, key) = (
            ctx.dir.study_net_unit(name, k),
            net_key(plan, ctx.data, name, &paths, k),
        );
        ctx.adopt_trained(&unit, &key, &ctx.dir.study_net(name, k).state())?;
        let seeds = Seeds {
            base: plan.seeds.study_retrain(k),
        };
        let ck = ctx.dir.study_net(name, k);
        let init = seeds.student_init(name);
        let (_, acc) = train_classifier(ctx, &plan.retrain.train, seeds, init, ck, &run, |dev| {
            Student::new(&plan.space, &arch, dev)
        })?;
        ctx.publish(&unit, &key)?;
        tracing::info!("study {name} seed {k}: test accuracy {:.2}%", acc * 100.0);
        accuracies.push(acc);
    }
    ctx.track.end(&child, RunStatus::Finished)?;
    let block_ratings = ratings_of(ratings, choice);
    let cost = plan.space.cost(&arch);
    Ok(StudyNet {
        name: name.to_string(),
        paths,
        rating: block_ratings.iter().sum(),
        block_ratings,
        flops_dna: cost.flops(FlopsConvention::Dna),
        params: cost.params,
        mean_accuracy: accuracies.iter().sum::<f64>() / accuracies.len() as f64,
        accuracies,
    })
}

fn figures(pred: &[f64], acc: &[f64], seed: u64) -> Figures {
    let e = |f: fn(&[f64], &[f64]) -> f64, s: u64| -> Estimate {
        bootstrap(pred, acc, f, 2000, seed ^ s)
    };
    let (t, r, p) = (e(kendall_tau, 1), e(spearman, 2), e(pearson, 3));
    Figures {
        kendall_tau: t.value,
        kendall_tau_ci: t.ci,
        spearman: r.value,
        spearman_ci: r.ci,
        pearson: p.value,
        pearson_ci: p.ci,
    }
}

/// The statistics of retrained nets.
pub fn analyse(plan: &Plan, nets: Vec<StudyNet>, top1: Option<StudyNet>) -> StudyReport {
    let acc: Vec<f64> = nets.iter().map(|n| n.mean_accuracy).collect();
    let x: Vec<Vec<f64>> = nets.iter().map(|n| n.block_ratings.clone()).collect();
    let seed = plan.seeds.study();
    let mut predictors = BTreeMap::new();
    let neg_rating: Vec<f64> = nets.iter().map(|n| -n.rating).collect();
    predictors.insert("rating".to_string(), figures(&neg_rating, &acc, seed));
    predictors.insert(
        "predicted".to_string(),
        figures(&Predictor::loo(&x, &acc, plan.study.ridge), &acc, seed),
    );
    let flops: Vec<f64> = nets.iter().map(|n| n.flops_dna as f64).collect();
    predictors.insert("flops".to_string(), figures(&flops, &acc, seed));
    let params: Vec<f64> = nets.iter().map(|n| n.params as f64).collect();
    predictors.insert("params".to_string(), figures(&params, &acc, seed));
    let groups: Vec<Vec<f64>> = nets.iter().map(|n| n.accuracies.clone()).collect();
    let noise_std = pooled_std(&groups);
    let per_mean = noise_std / (plan.study.seeds as f64).sqrt();
    let ceiling = tau_ceiling(&acc, per_mean, 500, seed);
    let ceiling_note = match (ceiling, noise_std.is_finite()) {
        (Some(_), _) => None,
        (None, false) => Some("one seed per net: the seed noise is unknown".to_string()),
        (None, true) => Some(
            "the mean accuracies vary no more than the seed noise of a mean: no between-net variance to rank"
                .to_string(),
        ),
    };
    let rating_vs_flops_tau_diff =
        (nets.len() >= 3).then(|| paired_tau_difference(&neg_rating, &flops, &acc, 2000, seed ^ 7));
    let top1_percentile = top1.as_ref().map(|t| {
        100.0 * acc.iter().filter(|&&a| a < t.mean_accuracy).count() as f64
            / acc.len().max(1) as f64
    });
    StudyReport {
        n: nets.len(),
        seeds: plan.study.seeds,
        sample: format!("{:?}", plan.study.sample).to_lowercase(),
        noise_std,
        reliability: mean_reliability(&groups),
        ceiling,
        ceiling_note,
        rating_vs_flops_tau_diff,
        seed_tau: (plan.study.seeds >= 2).then(|| {
            let seed = |k: usize| -> Vec<f64> { nets.iter().map(|n| n.accuracies[k]).collect() };
            kendall_tau(&seed(0), &seed(1))
        }),
        top1_percentile,
        predictors,
        nets,
        top1,
    }
}

/// The study's nets in order, `net01` ... and the searched top-1 last (when it was rated), each
/// as a choice per block.
fn nets(
    plan: &Plan,
    ratings: &[BlockRatings],
    searched: &SearchResult,
) -> Result<Vec<(String, Vec<usize>)>, StageError> {
    let mut list: Vec<(String, Vec<usize>)> = choose(plan, ratings)?
        .into_iter()
        .enumerate()
        .map(|(i, c)| (format!("net{:02}", i + 1), c))
        .collect();
    if let Some(t) = searched.top.first() {
        let arch = t.architecture(plan)?;
        if let Some(choice) = choice_of(&arch, ratings) {
            list.push(("top1".to_string(), choice));
        }
    }
    Ok(list)
}

/// Runs the study: retrains the sampled nets and the searched top-1, writes `study.json`,
/// `study.svg`, `study.md` and `predictor.json`, and logs the figures. With `only = Some(k)`,
/// retrains net `k` alone (a Slurm array task) and returns `None`.
pub fn run(
    ctx: &mut Ctx,
    ratings: &[BlockRatings],
    searched: &SearchResult,
    only: Option<usize>,
) -> Result<Option<StudyReport>, StageError> {
    let plan = ctx.plan;
    let list = nets(plan, ratings, searched)?;
    if let Some(k) = only {
        let (name, choice) = list.get(k).ok_or_else(|| StageError::NoSuchNet {
            net: k,
            last: list.len() - 1,
        })?;
        retrain(ctx, name, choice, ratings)?;
        return Ok(None);
    }
    let mut nets = Vec::new();
    let mut top1 = None;
    for (name, choice) in &list {
        let net = retrain(ctx, name, choice, ratings)?;
        if name == "top1" {
            top1 = Some(net);
        } else {
            nets.push(net);
        }
    }
    let run = ctx.track.child("study", &[])?;
    let x: Vec<Vec<f64>> = nets.iter().map(|n| n.block_ratings.clone()).collect();
    let y: Vec<f64> = nets.iter().map(|n| n.mean_accuracy).collect();
    let predictor = Predictor::fit(&x, &y, plan.study.ridge);
    let report = analyse(plan, nets, top1);
    write_json(&ctx.dir.predictor(), &predictor)?;
    write_json(&ctx.dir.study("json"), &report)?;
    let svg = ctx.dir.study("svg");
    write_atomic(&svg, scatter_svg(&report).as_bytes())?;
    let md = ctx.dir.study("md");
    write_atomic(&md, report.markdown().as_bytes())?;
    let mut metrics: Vec<(String, f64)> = vec![
        ("n".into(), report.n as f64),
        ("noise_std".into(), report.noise_std),
    ];
    if let Some(c) = report.ceiling {
        metrics.push(("tau_ceiling".into(), c));
    }
    if let Some(r) = report.reliability {
        metrics.push(("reliability".into(), r));
    }
    if let Some(d) = &report.rating_vs_flops_tau_diff {
        metrics.push(("rating_vs_flops_tau_diff".into(), d.value));
    }
    if let Some(p) = report.top1_percentile {
        metrics.push(("top1_percentile".into(), p));
    }
    if let Some(t) = report.seed_tau {
        metrics.push(("seed_tau".into(), t));
    }
    for (name, f) in &report.predictors {
        metrics.push((format!("{name}_kendall_tau"), f.kendall_tau));
        metrics.push((format!("{name}_kendall_tau_low"), f.kendall_tau_ci[0]));
        metrics.push((format!("{name}_kendall_tau_high"), f.kendall_tau_ci[1]));
        metrics.push((format!("{name}_spearman"), f.spearman));
        metrics.push((format!("{name}_pearson"), f.pearson));
    }
    let refs: Vec<(&str, f64)> = metrics.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    ctx.track.metrics(&run, 0, &refs)?;
    for f in [
        ctx.dir.study("json"),
        ctx.dir.study("svg"),
        ctx.dir.study("md"),
        ctx.dir.predictor(),
    ] {
        ctx.track.artifact(&run, &f, "")?;
    }
    ctx.track.end("study", RunStatus::Finished)?;
    Ok(Some(report))
}

impl StudyReport {
    /// The figures as Markdown (also what the terminal shows).
    pub fn markdown(&self) -> String {
        let mut s = format!(
            "{} nets ({} sampling) x {} seeds; seed-to-seed accuracy std {:.2} points\n\n",
            self.n,
            self.sample,
            self.seeds,
            self.noise_std * 100.0,
        );
        match self.reliability {
            Some(r) => {
                s += &format!(
                    "reliability of the {}-seed mean accuracies (ICC(1,k)): {r:.2}: {}\n\n",
                    self.seeds,
                    if r >= 0.7 {
                        "they rank the nets reproducibly"
                    } else if r > 0.3 {
                        "partly noise; correlations below are damped"
                    } else {
                        "mostly seed noise; no predictor can be judged against them"
                    }
                );
            }
            None => {
                s += "reliability of the mean accuracies: not estimable (needs 2 or more seeds per net)\n\n"
            }
        }
        match (self.ceiling, &self.ceiling_note) {
            (Some(c), _) => {
                s += &format!(
                    "a perfect predictor would reach tau {c:.2} against these means (simulated from the de-noised means)\n\n"
                )
            }
            (None, Some(why)) => s += &format!("the ceiling cannot be estimated: {why}\n\n"),
            (None, None) => {}
        }
        if let Some(t) = self.seed_tau {
            s += &format!(
                "seed 0 against seed 1 ranks the nets at tau {t:.2} (one retraining against one other)\n\n"
            );
        }
        s += "| predictor | Kendall tau [95 % CI] | Spearman rho [95 % CI] | Pearson r [95 % CI] |\n|---|---|---|---|\n";
        for (name, f) in &self.predictors {
            let label = match name.as_str() {
                "rating" => "summed rating (lower = better)",
                "predicted" => {
                    "learned predictor (leave-one-out; interval conditional on the held-out predictions, biased low without signal)"
                }
                "flops" => "FLOPs",
                _ => "params",
            };
            s += &format!(
                "| {label} | {:.2} [{:.2}, {:.2}] | {:.2} [{:.2}, {:.2}] | {:.2} [{:.2}, {:.2}] |\n",
                f.kendall_tau,
                f.kendall_tau_ci[0],
                f.kendall_tau_ci[1],
                f.spearman,
                f.spearman_ci[0],
                f.spearman_ci[1],
                f.pearson,
                f.pearson_ci[0],
                f.pearson_ci[1]
            );
        }
        if let Some(d) = &self.rating_vs_flops_tau_diff {
            s += &format!(
                "\nsummed rating against FLOPs: tau difference {:+.2}, paired bootstrap 95 % CI [{:.2}, {:.2}]{}\n",
                d.value,
                d.ci[0],
                d.ci[1],
                if d.ci[0] > 0.0 {
                    ": the rating ranks better"
                } else if d.ci[1] < 0.0 {
                    ": FLOPs rank better"
                } else {
                    ": not told apart"
                }
            );
        }
        if let (Some(t), Some(p)) = (&self.top1, self.top1_percentile) {
            s += &format!(
                "\nsearched top-1: {:.2} % (seeds {}), above {p:.0} % of the sampled nets\n",
                t.mean_accuracy * 100.0,
                t.accuracies
                    .iter()
                    .map(|a| format!("{:.2}", a * 100.0))
                    .collect::<Vec<_>>()
                    .join(" / ")
            );
        }
        if self.n < 5 {
            s += &format!("\nn = {}: too few to judge.\n", self.n);
        }
        s
    }
}

/// Accuracy against summed rating, one point per net with its seeds' range, the top-1 in red.
pub fn scatter_svg(r: &StudyReport) -> String {
    let (w, h, m) = (640.0, 420.0, 60.0);
    let all: Vec<&StudyNet> = r.nets.iter().chain(r.top1.as_ref()).collect();
    let lo_hi = |v: &mut dyn Iterator<Item = f64>| {
        v.fold((f64::INFINITY, f64::NEG_INFINITY), |a, x| {
            (a.0.min(x), a.1.max(x))
        })
    };
    let (x0, x1) = lo_hi(&mut all.iter().map(|n| n.rating));
    let (y0, y1) = lo_hi(&mut all.iter().flat_map(|n| n.accuracies.iter().copied()));
    let sx = |x: f64| m + (x - x0) / (x1 - x0).max(1e-9) * (w - 2.0 * m);
    let sy = |y: f64| h - m - (y - y0) / (y1 - y0).max(1e-9) * (h - 2.0 * m);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    s += &format!(
        "<line x1=\"{m}\" y1=\"{0}\" x2=\"{1}\" y2=\"{0}\" stroke=\"black\"/><line x1=\"{m}\" y1=\"{m}\" x2=\"{m}\" y2=\"{0}\" stroke=\"black\"/>\n",
        h - m,
        w - m
    );
    s += &format!(
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">summed rating ({x0:.3} .. {x1:.3}), lower is better</text>\n",
        w / 2.0,
        h - 20.0
    );
    s += &format!(
        "<text x=\"15\" y=\"{0}\" transform=\"rotate(-90 15 {0})\" text-anchor=\"middle\">test accuracy ({1:.1} .. {2:.1} %)</text>\n",
        h / 2.0,
        y0 * 100.0,
        y1 * 100.0
    );
    for n in &all {
        let top = r.top1.as_ref().is_some_and(|t| t.name == n.name);
        let color = if top { "crimson" } else { "steelblue" };
        let (a, b) = lo_hi(&mut n.accuracies.iter().copied());
        s += &format!(
            "<line x1=\"{0:.1}\" y1=\"{1:.1}\" x2=\"{0:.1}\" y2=\"{2:.1}\" stroke=\"{color}\"/>\n<circle cx=\"{0:.1}\" cy=\"{3:.1}\" r=\"4\" fill=\"{color}\"><title>{4}: {5:.2} %</title></circle>\n",
            sx(n.rating),
            sy(a),
            sy(b),
            sy(n.mean_accuracy),
            n.name,
            n.mean_accuracy * 100.0
        );
    }
    s + "</svg>\n"
}
