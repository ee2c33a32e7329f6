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
                    cost: [rng.random_range(1.0..10.0), rng.random_range(1.0..10.0)],
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
        let fixed = [rng.random_range(0.0..3.0), rng.random_range(0.0..3.0)];
        let limits = match case % 4 {
            0 => [f64::INFINITY, f64::INFINITY],
            1 => [fixed[0] + rng.random_range(n..n * 8.0), f64::INFINITY],
            _ => [
                fixed[0] + rng.random_range(n..n * 8.0),
                fixed[1] + rng.random_range(n..n * 8.0),
            ],
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
                a.cost[0] <= limits[0] + 1e-9 && a.cost[1] <= limits[1] + 1e-9,
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
        let best = brute_force(&blocks, [0.0, 0.0], [cost + 1e-9, f64::INFINITY], 1);
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
