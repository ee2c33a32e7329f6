//! `dnarun latency`: a latency table of the recipe's space measured on a device (every distinct
//! layer the students are made of, the stem and the head, each timed alone after a warm-up:
//! median and interquartile range of its forward passes), and with `--validate N` how well the
//! table's sums predict N whole students measured the same way (Kendall tau, relative errors).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::tensor::{Device, Distribution, Tensor};
use rand::{Rng, SeedableRng};

use super::RunError;
use crate::nn::device::open_device;
use crate::nn::layers::activate;
use crate::nn::timing::{forward_timing, students_ms};
use crate::nn::{ConvBnConfig, MbConv, Mode, STUDENT_EPS, Student};
use crate::plan::{DeviceSpec, Plan};
use crate::space::latency::{
    LatencyTable, LayerPart, Validation, block_layers, head_input, head_key, stem_key,
};
use crate::space::{Activation, Architecture, FlopsConvention, LayerShape};

/// What `dnarun latency` is asked.
#[derive(Debug, Clone)]
pub struct LatencyOptions {
    /// The device (default: the recipe's first).
    pub device: Option<DeviceSpec>,
    /// Images per forward pass (1: deployment).
    pub batch: usize,
    /// Timed repetitions per entry.
    pub repeats: usize,
    /// Whole students to measure against the table's sums (0: none).
    pub validate: usize,
    /// The JSON file to write (and `.md` beside it).
    pub output: PathBuf,
}

fn random(shape: [usize; 4], device: &Device) -> Tensor<4> {
    Tensor::random(shape, Distribution::Normal(0.0, 1.0), device)
}

/// Measures the table (and its validation); writes `o.output` and its `.md`.
pub fn latency(plan: &Plan, o: &LatencyOptions) -> Result<LatencyTable, RunError> {
    let spec = o.device.clone().unwrap_or(plan.devices.list[0].clone());
    let device = open_device(&spec)?;
    let device_name = crate::nn::device::list(true)
        .into_iter()
        .find(|l| l.spec == spec)
        .map(|l| l.name)
        .unwrap_or_default();
    let space = &plan.space;
    let (n, eval) = (o.batch.max(1), Mode::Eval);
    let mut entries = BTreeMap::new();
    // The stem and head of a student (every student has the same ones).
    let first = Architecture {
        paths: space.blocks.iter().map(|b| b.paths()[0].clone()).collect(),
    };
    let student = crate::nn::initialize(|d| Student::new(space, &first, d), &device, 1);
    let x = random(
        [n, space.image_channels, space.image_size, space.image_size],
        &device,
    );
    entries.insert(
        stem_key(space),
        forward_timing(o.repeats, || {
            activate(student.stem.forward(x.clone(), eval), Activation::Swish)
        }),
    );
    let (hc, hs) = head_input(space);
    let h = random([n, hc, hs, hs], &device);
    entries.insert(
        head_key(space),
        forward_timing(o.repeats, || {
            crate::nn::models::head_logits(
                &student.head,
                &student.fc,
                Activation::Swish,
                h.clone(),
                eval,
            )
        }),
    );
    let total: usize = space.blocks.iter().map(|b| block_layers(b).len()).sum();
    let bar = crate::stages::progress(total as u64, "latency");
    for b in &space.blocks {
        for (key, part) in block_layers(b) {
            bar.inc(1);
            if entries.contains_key(&key) {
                continue;
            }
            let t = match part {
                LayerPart::Op(op, cin, cout, stride, size) => {
                    let shape = LayerShape {
                        cin,
                        cout,
                        stride,
                        size,
                    };
                    let m = crate::nn::initialize(
                        |d| MbConv::new(op, &shape, STUDENT_EPS, d),
                        &device,
                        1,
                    );
                    let x = random([n, cin, size, size], &device);
                    forward_timing(o.repeats, || m.forward(x.clone(), eval))
                }
                LayerPart::Adapter(cin, cout, size) => {
                    let m = crate::nn::initialize(
                        |d| ConvBnConfig::new(cin, cout).with_eps(STUDENT_EPS).init(d),
                        &device,
                        1,
                    );
                    let x = random([n, cin, size, size], &device);
                    forward_timing(o.repeats, || m.forward(x.clone(), eval))
                }
            };
            entries.insert(key, t);
        }
    }
    bar.finish_and_clear();
    let mut table = LatencyTable {
        device: spec.to_string(),
        device_name,
        dnarun_version: env!("CARGO_PKG_VERSION").into(),
        batch: n,
        threads: rayon::current_num_threads(),
        repeats: o.repeats,
        entries,
        validation: None,
    };
    if o.validate > 0 {
        table.validation = Some(validate(plan, &table, &device, o)?);
    }
    crate::rundir::write_json(&o.output, &table)?;
    crate::rundir::write_atomic(&md_path(&o.output), markdown(plan, &table).as_bytes())?;
    Ok(table)
}

/// The summary beside a table: `latency.json` -> `latency.md`.
pub fn md_path(json: &Path) -> PathBuf {
    json.with_extension("md")
}

/// `n` students spread over the space's FLOPs range (evenly spaced quantiles of 50 n random
/// ones, each block's cell drawn uniformly and then a path of it, so that shallow cells, which
/// have few paths, are as common as deep ones: the search often picks them), each built whole
/// and timed end to end, against the table's sums.
fn validate(
    plan: &Plan,
    table: &LatencyTable,
    device: &Device,
    o: &LatencyOptions,
) -> Result<Validation, RunError> {
    let space = &plan.space;
    // Per block, per cell, its paths.
    let all: Vec<Vec<Vec<crate::space::Path>>> = space
        .blocks
        .iter()
        .map(|b| {
            let paths = b.paths();
            (0..b.cells.len())
                .map(|c| paths.iter().filter(|p| p.cell == c).cloned().collect())
                .collect()
        })
        .collect();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(plan.seeds.base ^ 0x1A7E);
    let mut pool: Vec<(f64, Architecture)> = (0..50 * o.validate)
        .map(|_| {
            let arch = Architecture {
                paths: all
                    .iter()
                    .map(|cells| {
                        let c = &cells[rng.random_range(0..cells.len())];
                        c[rng.random_range(0..c.len())].clone()
                    })
                    .collect(),
            };
            (space.cost(&arch).flops(FlopsConvention::Dna) as f64, arch)
        })
        .collect();
    pool.sort_by(|a, b| a.0.total_cmp(&b.0));
    let archs: Vec<Architecture> = (0..o.validate)
        .map(|q| {
            pool[((q as f64 + 0.5) / o.validate as f64 * pool.len() as f64) as usize]
                .1
                .clone()
        })
        .collect();
    let measured = students_ms(space, &archs, o.batch, o.repeats, device);
    let mut nets = Vec::new();
    for (arch, m) in archs.iter().zip(measured) {
        let predicted = table
            .arch_ms(space, arch)
            .map_err(|key| RunError::BadOption {
                option: "validate",
                problem: format!("the table has no entry `{key}`"),
            })?;
        nets.push((space.arch_name(arch), predicted, m.median_ms));
    }
    let (p, m): (Vec<f64>, Vec<f64>) = nets.iter().map(|(_, p, m)| (*p, *m)).unzip();
    let rel: Vec<f64> = p.iter().zip(&m).map(|(p, m)| (p - m).abs() / m).collect();
    Ok(Validation {
        architectures: nets.len(),
        kendall_tau: crate::stats::kendall_tau(&p, &m),
        mean_rel_error: rel.iter().sum::<f64>() / rel.len().max(1) as f64,
        max_rel_error: rel.iter().copied().fold(0.0, f64::max),
        nets,
    })
}

/// The table as a readable summary: the device, the fixed parts, the space's range, each block's
/// fastest and slowest path, and the validation.
pub fn markdown(plan: &Plan, t: &LatencyTable) -> String {
    let space = &plan.space;
    let mut s = format!(
        "# Latency table of `{}`\n\nDevice `{}` ({}), batch {}, {} threads, at least {} timed repetitions and 100 ms per entry after a 200 ms warm-up (median, interquartile range); dnarun {}. {} entries.\n\n",
        plan.experiment.name,
        t.device,
        if t.device_name.is_empty() {
            "-"
        } else {
            &t.device_name
        },
        t.batch,
        t.threads,
        t.repeats,
        t.dnarun_version,
        t.entries.len()
    );
    let fixed = t.fixed_ms(space).unwrap_or(f64::NAN);
    let mut lo = fixed;
    let mut hi = fixed;
    s += "| block | paths | fastest path (ms) | slowest path (ms) |\n|---|---|---|---|\n";
    for (i, b) in space.blocks.iter().enumerate() {
        let ms: Vec<f64> = b
            .paths()
            .iter()
            .filter_map(|p| t.path_ms(b, p).ok())
            .collect();
        let (min, max) = (
            ms.iter().copied().fold(f64::INFINITY, f64::min),
            ms.iter().copied().fold(0.0, f64::max),
        );
        lo += min;
        hi += max;
        s += &format!("| {i} | {} | {min:.3} | {max:.3} |\n", ms.len());
    }
    s += &format!("\nStem and head: {fixed:.3} ms. Predicted students: {lo:.3} to {hi:.3} ms.\n");
    if let Some(v) = &t.validation {
        s += &format!(
            "\n## Validation: {} students measured whole\n\nKendall tau (predicted vs measured) {:.3}; relative error mean {:.1} %, worst {:.1} %.\n\n| student | predicted (ms) | measured (ms) |\n|---|---|---|\n",
            v.architectures,
            v.kendall_tau,
            v.mean_rel_error * 100.0,
            v.max_rel_error * 100.0
        );
        for (name, p, m) in &v.nets {
            s += &format!("| {} | {p:.3} | {m:.3} |\n", name.replace('|', "\\|"));
        }
    }
    s
}
