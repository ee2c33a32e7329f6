//! The search: exact top-k under one or two budgets equals brute force on random spaces; the
//! Pareto fronts are fronts; path encoding round-trips.

use dnarun::space::search::{Candidate, Front, brute_force, suffix_fronts, top_k};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn random_blocks(rng: &mut ChaCha8Rng) -> Vec<Vec<Candidate>> {
    let n = rng.random_range(1..5);
    (0..n)
        .map(|_| {
            let k = rng.random_range(1..9);
            (0..k)
                .map(|_| Candidate {
                    rating: rng.random_range(0.0..1.0),
                    cost: [
                        rng.random_range(1.0..10.0),
                        rng.random_range(1.0..10.0),
                        rng.random_range(0.1..5.0),
                    ],
                })
                .collect()
        })
        .collect()
}

#[test]
fn top_k_equals_brute_force_on_random_spaces() {
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    let mut nonempty = 0;
    for case in 0..400 {
        let blocks = random_blocks(&mut rng);
        let n = blocks.len() as f64;
        let fixed = [
            rng.random_range(0.0..3.0),
            rng.random_range(0.0..3.0),
            rng.random_range(0.0..1.0),
        ];
        let inf = f64::INFINITY;
        let mut budget = |j: usize, hi: f64| fixed[j] + rng.random_range(n * hi / 8.0..n * hi);
        // Every combination of the three budgets (FLOPs, params, latency), none to all.
        let limits = match case % 6 {
            0 => [inf, inf, inf],
            1 => [budget(0, 8.0), inf, inf],
            2 => [budget(0, 8.0), budget(1, 8.0), inf],
            3 => [inf, inf, budget(2, 4.0)],
            4 => [budget(0, 8.0), inf, budget(2, 4.0)],
            _ => [budget(0, 8.0), budget(1, 8.0), budget(2, 4.0)],
        };
        let k = rng.random_range(1..12);
        let fast = top_k(&blocks, fixed, limits, k);
        let slow = brute_force(&blocks, fixed, limits, k);
        assert_eq!(fast.len(), slow.len(), "case {case}");
        for (a, b) in fast.iter().zip(&slow) {
            assert!(
                (a.rating - b.rating).abs() < 1e-9,
                "case {case}: {} vs {}",
                a.rating,
                b.rating
            );
            assert!(
                (0..3).all(|j| a.cost[j] <= limits[j] + 1e-9),
                "case {case}: over budget"
            );
        }
        nonempty += usize::from(!fast.is_empty());
    }
    assert!(
        nonempty > 200,
        "too few feasible cases to mean anything: {nonempty}"
    );
}

#[test]
fn fronts_keep_only_undominated_points() {
    let f = Front::of(vec![
        (1.0, 5.0),
        (2.0, 4.0),
        (2.0, 6.0),
        (3.0, 4.5),
        (4.0, 1.0),
        (0.5, 9.0),
    ]);
    assert_eq!(f.0, vec![(0.5, 9.0), (1.0, 5.0), (2.0, 4.0), (4.0, 1.0)]);
    assert_eq!(f.best_within(3.5), 4.0);
    assert_eq!(f.best_within(0.1), f64::INFINITY);
    assert_eq!(f.best(), 1.0);
}

#[test]
fn suffix_front_of_everything_is_the_global_curve() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let blocks = random_blocks(&mut rng);
    let s0 = &suffix_fronts(&blocks)[0];
    // Every budget's optimum read off S_0 equals brute force with that budget.
    for &(cost, rating) in &s0.0 {
        let best = brute_force(
            &blocks,
            [0.0; 3],
            [cost + 1e-9, f64::INFINITY, f64::INFINITY],
            1,
        );
        assert!((best[0].rating - rating).abs() < 1e-9);
    }
}

#[test]
fn path_names_round_trip() {
    let l = dnarun::recipe::load(
        std::path::Path::new("recipes/dna-imagenet.toml"),
        &Default::default(),
    )
    .unwrap();
    let plan = dnarun::plan::Plan::resolve(&l).unwrap();
    let b = &plan.space.blocks[1];
    let paths = b.paths();
    assert_eq!(paths.len(), 1548);
    for p in paths.iter().step_by(97) {
        let name = b.path_name(p);
        assert_eq!(&b.parse_path(&name).unwrap(), p, "{name}");
    }
    assert_eq!(b.path_name(&paths[0]), "c0:k3e3-k3e3");
    assert!(b.parse_path("c3:k3e3").is_err());
    assert!(b.parse_path("c0:k3e3-k9e9").is_err());
}

#[test]
fn plan_estimates_how_many_architectures_fit() {
    let l = dnarun::recipe::load(
        std::path::Path::new("recipes/quickstart.toml"),
        &Default::default(),
    )
    .unwrap();
    let plan = dnarun::plan::Plan::resolve(&l).unwrap();
    let m = plan.search.measures[0];
    let per_block: Vec<Vec<u64>> = plan
        .space
        .blocks
        .iter()
        .map(|b| b.paths().iter().map(|p| m.of(&b.path_cost(p))).collect())
        .collect();
    let fixed = m.of(&plan.space.fixed_cost());
    let mut exact = 0usize;
    for a in &per_block[0] {
        for b in &per_block[1] {
            for c in &per_block[2] {
                exact += usize::from((fixed + a + b + c) as f64 <= plan.search.limits[0]);
            }
        }
    }
    let estimate = plan.fitting_fraction() * plan.space.size();
    assert!(
        (estimate - exact as f64).abs() / (exact as f64) < 0.03,
        "estimate {estimate:.0}, exact {exact}"
    );
}

#[test]
fn correlations_match_hand_computed_values() {
    use dnarun::stats::{kendall_tau, pearson, ranks, spearman};
    let (a, b) = ([1.0, 2.0, 3.0, 4.0, 5.0], [3.0, 1.0, 2.0, 5.0, 4.0]);
    // 7 concordant, 3 discordant pairs; sum of squared rank differences 8.
    assert!((kendall_tau(&a, &b) - 0.4).abs() < 1e-12);
    assert!((spearman(&a, &b) - 0.6).abs() < 1e-12);
    assert!((pearson(&a, &b) - 0.6).abs() < 1e-12);
    // Ties: tau-b = 5 / sqrt(6 * 5) and rho of mid-ranks (scipy: 0.9128709, 0.9486833).
    let (a, b) = ([1.0, 2.0, 2.0, 3.0], [1.0, 3.0, 2.0, 4.0]);
    assert_eq!(ranks(&a), vec![1.0, 2.5, 2.5, 4.0]);
    assert!((kendall_tau(&a, &b) - 5.0 / 30f64.sqrt()).abs() < 1e-12);
    assert!((spearman(&a, &b) - 4.5 / 22.5f64.sqrt()).abs() < 1e-12);
    // Reversed order is -1; a constant list correlates with nothing.
    assert_eq!(kendall_tau(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]), -1.0);
    assert_eq!(kendall_tau(&[1.0, 1.0, 1.0], &[3.0, 2.0, 1.0]), 0.0);
    assert_eq!(pearson(&[1.0, 1.0, 1.0], &[3.0, 2.0, 1.0]), 0.0);
}

#[test]
fn bootstrap_intervals_and_the_noise_ceiling() {
    use dnarun::stats::{bootstrap, kendall_tau, pooled_std, tau_ceiling};
    let a: Vec<f64> = (0..30).map(|i| i as f64).collect();
    let b: Vec<f64> = a
        .iter()
        .map(|x| x + if (*x as i64) % 3 == 0 { 5.0 } else { 0.0 })
        .collect();
    let e = bootstrap(&a, &b, kendall_tau, 1000, 1);
    assert!(e.ci[0] <= e.value && e.value <= e.ci[1], "{e:?}");
    assert!(e.ci[0] > 0.5 && e.ci[1] <= 1.0, "{e:?}");
    // Seeded: the same interval again.
    assert_eq!(e, bootstrap(&a, &b, kendall_tau, 1000, 1));
    // No noise: a perfect predictor reaches 1; noise pulls it down; noise at least as large as the
    // means' spread leaves no between-net variance: no ceiling can be estimated.
    assert!((tau_ceiling(&a, 0.0, 50, 1).unwrap() - 1.0).abs() < 1e-12);
    let noisy = tau_ceiling(&a, 5.0, 200, 1).unwrap();
    assert!(noisy > 0.3 && noisy < 0.95, "{noisy}");
    // var(0..29) = 77.5: a noise std of 8.9 (variance 79.2) leaves none.
    assert_eq!(tau_ceiling(&a, 8.9, 200, 1), None);
    // The ceiling uses the de-noised means. With noise variance 64 of the means' 77.5, the true
    // spread is sqrt(13.5): correlation 3.67 / 8.8 = 0.42, tau = 2/pi asin(0.42) = 0.27. Adding the
    // noise to the observed means instead (correlation 0.74) would claim about 0.53.
    let c = tau_ceiling(&a, 8.0, 2000, 1).unwrap();
    assert!(c > 0.18 && c < 0.36, "{c}");
    // Pooled std of (1, 3) and (2, 2, 5): sqrt((2 + 6) / (1 + 2)).
    let s = pooled_std(&[vec![1.0, 3.0], vec![2.0, 2.0, 5.0], vec![7.0]]);
    assert!((s - (8.0f64 / 3.0).sqrt()).abs() < 1e-12);
}

/// The reliability of k-seed means (ICC(1,k)) and the paired bootstrap of a tau difference,
/// against values computed by hand.
#[test]
fn reliability_of_means_and_paired_tau_differences() {
    use dnarun::stats::{mean_reliability, paired_tau_difference};
    // Means 2, 6, 9: MSB = 2 * 74/6 = 74/3; within: (2 + 2 + 0) / 3 = 4/3; ICC = 70/74.
    let r = mean_reliability(&[vec![1.0, 3.0], vec![5.0, 7.0], vec![9.0, 9.0]]).unwrap();
    assert!((r - 70.0 / 74.0).abs() < 1e-12, "{r}");
    // Seeds that disagree more than the nets differ: negative (the means are noise).
    let r = mean_reliability(&[vec![1.0, 9.0], vec![9.0, 2.0], vec![5.0, 5.0]]).unwrap();
    assert!(r < 0.0, "{r}");
    // One seed, or unequal seeds: not estimable.
    assert_eq!(mean_reliability(&[vec![1.0], vec![2.0]]), None);
    assert_eq!(mean_reliability(&[vec![1.0, 2.0], vec![2.0]]), None);
    // A predictor in the accuracies' order against one in reverse: tau 1 - (-1) = 2, and every
    // resample of the same nets for both gives 2 (resampling them apart would not).
    let y: Vec<f64> = (0..12).map(f64::from).collect();
    let rev: Vec<f64> = y.iter().map(|v| -v).collect();
    let d = paired_tau_difference(&y, &rev, &y, 500, 3);
    assert_eq!(d.value, 2.0);
    assert!(d.ci[0] >= 1.9 && d.ci[1] <= 2.0, "{d:?}");
    // Against itself: exactly 0 in every resample.
    let d = paired_tau_difference(&y, &y, &rev, 200, 3);
    assert_eq!((d.value, d.ci), (0.0, [0.0, 0.0]));
}

#[test]
fn the_predictor_recovers_known_weights() {
    use dnarun::space::predictor::Predictor;
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    let w = [-0.3, -0.1, -0.05];
    let x: Vec<Vec<f64>> = (0..60)
        .map(|_| (0..3).map(|_| rng.random_range(0.2..1.0)).collect())
        .collect();
    let y: Vec<f64> = x
        .iter()
        .map(|r| 0.9 + r.iter().zip(w).map(|(a, b)| a * b).sum::<f64>())
        .collect();
    let p = Predictor::fit(&x, &y, 0.0);
    for (got, want) in p.weights.iter().zip(w) {
        assert!((got - want).abs() < 1e-9, "{:?}", p.weights);
    }
    assert!((p.bias - 0.9).abs() < 1e-9);
    // The ridge shrinks the weights towards zero; leave-one-out predicts held-out nets.
    let shrunk = Predictor::fit(&x, &y, 1.0);
    assert!(shrunk.weights[0].abs() < w[0].abs());
    let loo = Predictor::loo(&x, &y, 0.0);
    assert!(loo.iter().zip(&y).all(|(a, b)| (a - b).abs() < 1e-9));
}

#[test]
fn the_exact_search_stays_exact_under_a_learned_predictor() {
    use dnarun::space::predictor::Predictor;
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    for trial in 0..40 {
        let nb = rng.random_range(2..5);
        let p = Predictor {
            bias: 0.5,
            weights: (0..nb).map(|_| rng.random_range(-1.0..0.5)).collect(),
            ridge: 0.0,
            n: 0,
        };
        let blocks: Vec<Vec<Candidate>> = (0..nb)
            .map(|i| {
                (0..rng.random_range(1..7))
                    .map(|_| Candidate {
                        rating: p.block_score(i, rng.random_range(0.1..2.0)),
                        cost: [
                            rng.random_range(1.0..10.0),
                            rng.random_range(1.0..10.0),
                            0.0,
                        ],
                    })
                    .collect()
            })
            .collect();
        let limits = [
            rng.random_range(5.0..30.0),
            rng.random_range(5.0..40.0),
            f64::INFINITY,
        ];
        let got = top_k(&blocks, [1.0, 0.5, 0.0], limits, 4);
        let want = brute_force(&blocks, [1.0, 0.5, 0.0], limits, 4);
        assert_eq!(
            got.iter().map(|f| f.choice.clone()).collect::<Vec<_>>(),
            want.iter().map(|f| f.choice.clone()).collect::<Vec<_>>(),
            "trial {trial}"
        );
    }
}
