//! `dnarun init`: a complete recipe around a teacher and a dataset, commented where a user would
//! want to know why: taps and blocks from the teacher's stages, cells around each stage's depth
//! and width, the paper's op set, the data section from what the folder holds, and a budget the
//! space can meet. The written recipe is resolved before it is kept, so it validates as written.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::RunError;
use crate::data::{read_cifar, read_flat_folder, read_folder, read_idx};
use crate::plan::{DataFormat, Family, LayerKind, Plan, TeacherArch, format_name};
use crate::recipe::Overrides;
use crate::space::FlopsConvention;

/// What `dnarun init` is asked for.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// `cnn` or a pretrained teacher's name.
    pub teacher: String,
    /// The teacher's checkpoint (required for a pretrained teacher).
    pub weights: Option<PathBuf>,
    /// The dataset folder.
    pub data: PathBuf,
    /// Its format, when detection should not guess.
    pub format: Option<DataFormat>,
    /// The budget in MFLOPs (DNA convention).
    pub budget_mflops: Option<f64>,
    /// The budget in M params.
    pub budget_mparams: Option<f64>,
    /// The images' side (the teacher's native resolution by default).
    pub image_size: Option<usize>,
    /// The recipe to write.
    pub output: PathBuf,
}

/// A dataset as found on disk.
struct Found {
    format: DataFormat,
    /// `train = ...` and `test = ...` lines.
    train: String,
    test: String,
    classes: usize,
    channels: usize,
    /// Side of the stored images (folders: none, photos are resized).
    side: Option<usize>,
    /// Fewest training images of a class.
    min_per_class: usize,
}

fn bad(option: &'static str, problem: String) -> RunError {
    RunError::BadOption { option, problem }
}

/// A path as the recipe writes it: relative to the recipe's folder when it lies inside it.
fn rel(path: &Path, recipe_dir: &Path) -> String {
    let abs = path
        .canonicalize()
        .or_else(|_| std::path::absolute(path))
        .unwrap_or_else(|_| path.to_path_buf());
    abs.strip_prefix(recipe_dir)
        .map(Path::to_path_buf)
        .unwrap_or(abs)
        .display()
        .to_string()
}

fn min_count(labels: &[usize], classes: usize) -> usize {
    let mut h = vec![0usize; classes];
    for &l in labels {
        if l < classes {
            h[l] += 1;
        }
    }
    h.into_iter().min().unwrap_or(0)
}

/// Finds the dataset's format, splits, classes and per-class counts.
fn detect(dir: &Path, format: Option<DataFormat>, recipe_dir: &Path) -> Result<Found, RunError> {
    let has = |name: &str| dir.join(name).exists();
    let format = match format {
        Some(f) => f,
        None if has("train-images-idx3-ubyte.gz") || has("train-images-idx3-ubyte") => {
            DataFormat::Idx
        }
        None if has("data_batch_1.bin") => DataFormat::Cifar10,
        None if has("train.bin") && has("test.bin") => DataFormat::Cifar100,
        None if has("train") => {
            let flat = std::fs::read_dir(dir.join("train"))
                .map_err(|e| bad("data", format!("`{}` cannot be listed: {e}", dir.display())))?
                .flatten()
                .any(|e| e.path().is_file() && !e.file_name().to_string_lossy().starts_with('.'));
            if flat {
                DataFormat::FlatFolder
            } else {
                DataFormat::Folder
            }
        }
        None => {
            return Err(bad(
                "data",
                format!(
                    "`{}` holds no dataset dnarun recognises: IDX files (`train-images-idx3-ubyte.gz`, ...), CIFAR binaries (`data_batch_1.bin`, `train.bin`), or `train/` and `val/` (or `test/`) folders of images; name the format with `--format`",
                    dir.display()
                ),
            ));
        }
    };
    match format {
        DataFormat::Idx => found_idx(dir, recipe_dir),
        DataFormat::Cifar10 | DataFormat::Cifar100 => found_cifar(dir, format, recipe_dir),
        DataFormat::Folder | DataFormat::FlatFolder => found_folder(dir, format, recipe_dir),
    }
}

/// An IDX dataset: the training split read for its classes and per-class counts.
fn found_idx(dir: &Path, recipe_dir: &Path) -> Result<Found, RunError> {
    let format = DataFormat::Idx;
    let has = |name: &str| dir.join(name).exists();
    let p = |name: &str| rel(&dir.join(name), recipe_dir);
    let gz = if has("train-images-idx3-ubyte.gz") {
        ".gz"
    } else {
        ""
    };
    let n = |s: &str| format!("{s}{gz}");
    let images_file = dir.join(n("train-images-idx3-ubyte"));
    let side = idx_side(&images_file)?;
    let images = read_idx(
        &images_file,
        &dir.join(n("train-labels-idx1-ubyte")),
        1,
        side,
        256,
    )?;
    let classes = images.labels.iter().max().map_or(0, |m| m + 1);
    Ok(Found {
        format,
        train: format!(
            "{{ images = \"{}\", labels = \"{}\" }}",
            p(&n("train-images-idx3-ubyte")),
            p(&n("train-labels-idx1-ubyte"))
        ),
        test: format!(
            "{{ images = \"{}\", labels = \"{}\" }}",
            p(&n("t10k-images-idx3-ubyte")),
            p(&n("t10k-labels-idx1-ubyte"))
        ),
        min_per_class: min_count(&images.labels, classes),
        classes,
        channels: 1,
        side: Some(images.size),
    })
}

/// CIFAR binaries: the training batches read for the per-class counts.
fn found_cifar(dir: &Path, format: DataFormat, recipe_dir: &Path) -> Result<Found, RunError> {
    let first = |names: &[&str]| names.iter().map(|n| dir.join(n)).find(|p| p.exists());
    let ten = format == DataFormat::Cifar10;
    let train: Vec<PathBuf> = if ten {
        (1..=5)
            .map(|i| dir.join(format!("data_batch_{i}.bin")))
            .filter(|f| f.exists())
            .collect()
    } else {
        vec![dir.join("train.bin")]
    };
    if train.is_empty() || !train[0].is_file() {
        return Err(bad(
            "data",
            format!(
                "`{}` has no CIFAR-{} training batches (`{}`); check the folder or `--format`",
                dir.display(),
                if ten { "10" } else { "100" },
                if ten {
                    "data_batch_1.bin` ... `data_batch_5.bin"
                } else {
                    "train.bin"
                }
            ),
        ));
    }
    let classes = if ten { 10 } else { 100 };
    let images = read_cifar(&train, !ten, 3, 32, classes)?;
    let test = first(&["test_batch.bin", "test.bin"]).unwrap_or(dir.join("test.bin"));
    let list = |v: &[PathBuf]| {
        v.iter()
            .map(|f| format!("\"{}\"", rel(f, recipe_dir)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    Ok(Found {
        format,
        train: format!("{{ files = [{}] }}", list(&train)),
        test: format!("{{ files = [{}] }}", list(&[test])),
        min_per_class: min_count(&images.labels, classes),
        classes,
        channels: 3,
        side: Some(32),
    })
}

/// Image folders (`train/` and `val/` or `test/`): the training split indexed for its classes.
fn found_folder(dir: &Path, format: DataFormat, recipe_dir: &Path) -> Result<Found, RunError> {
    let has = |name: &str| dir.join(name).exists();
    let p = |name: &str| rel(&dir.join(name), recipe_dir);
    let test = ["val", "test"]
        .into_iter()
        .find(|t| has(t))
        .ok_or_else(|| {
            bad(
                "data",
                format!(
                    "`{}` has `train/` but no `val/` or `test/` folder for the test split",
                    dir.display()
                ),
            )
        })?;
    let train_dir = dir.join("train");
    let images = if format == DataFormat::Folder {
        let classes = std::fs::read_dir(&train_dir)
            .map_err(|e| bad("data", format!("`{}`: {e}", train_dir.display())))?
            .flatten()
            .filter(|e| e.path().is_dir() && !e.file_name().to_string_lossy().starts_with('.'))
            .count();
        read_folder(&train_dir, 3, 32, classes, 0.875)?
    } else {
        read_flat_folder(&train_dir, 3, 32, 100_000, 0.875)?
    };
    let classes = images.labels.iter().max().map_or(0, |m| m + 1);
    Ok(Found {
        format,
        train: format!("{{ dir = \"{}\" }}", p("train")),
        test: format!("{{ dir = \"{}\" }}", p(test)),
        min_per_class: min_count(&images.labels, classes),
        classes,
        channels: 3,
        side: None,
    })
}

/// The side of an IDX image file's images, from its header.
fn idx_side(path: &Path) -> Result<usize, RunError> {
    use std::io::Read;
    let file = std::fs::File::open(path)
        .map_err(|e| bad("data", format!("`{}` cannot be read: {e}", path.display())))?;
    let mut head = [0u8; 16];
    let read = if path.extension().is_some_and(|e| e == "gz") {
        flate2::read::GzDecoder::new(file).read_exact(&mut head)
    } else {
        let mut f = file;
        f.read_exact(&mut head)
    };
    read.map_err(|e| {
        bad(
            "data",
            format!("`{}` is not an IDX file: {e}", path.display()),
        )
    })?;
    Ok(u32::from_be_bytes([head[8], head[9], head[10], head[11]]) as usize)
}

/// A width rounded to a multiple of 8 (at least 8).
fn round8(x: f64) -> usize {
    ((x / 8.0).round() as usize).max(1) * 8
}

/// The recipe text, budget not yet chosen (`{BUDGET}` marks where it goes).
fn recipe_text(o: &InitOptions, found: &Found, recipe_dir: &Path) -> Result<String, RunError> {
    let name = o
        .output
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "search".into())
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect::<String>();
    let zoo = (o.teacher != "cnn")
        .then(|| {
            TeacherArch::pretrained()
                .find(|a| a.name() == o.teacher)
                .ok_or_else(|| RunError::UnknownTeacher {
                    name: o.teacher.clone(),
                    near: crate::recipe::did_you_mean(
                        &o.teacher,
                        TeacherArch::pretrained().map(|a| a.name()).chain(["cnn"]),
                    )
                    .map(str::to_string),
                })
        })
        .transpose()?;
    let mut s = String::new();
    let schema = rel(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("schemas/recipe.schema.json"),
        recipe_dir,
    );
    let _ = writeln!(s, "#:schema {schema}");
    let _ = writeln!(
        s,
        "# Written by `dnarun init` ({}): a DNA search around the `{}` teacher on `{}`.\n# Check it with `dnarun validate`, see its space and work with `dnarun plan`, run it with\n# `dnarun {}`.\n",
        env!("CARGO_PKG_VERSION"),
        o.teacher,
        o.data.display(),
        o.output.file_name().unwrap_or_default().to_string_lossy()
    );
    let _ = writeln!(
        s,
        "[experiment]\nname = \"{name}\"\nseed = 0\noutput_dir = \"runs\"\n"
    );
    let size = data_section(&mut s, o, found, zoo)?;
    let (stages, stem, head, se) = teacher_section(&mut s, o, zoo, size, recipe_dir)?;
    let stem_stride = if zoo.is_some() || size >= 24 { 2 } else { 1 };
    space_section(&mut s, &stages, stem, stem_stride, head, se);
    Ok(s)
}

/// The `[data]` section; returns the image size.
fn data_section(
    s: &mut String,
    o: &InitOptions,
    found: &Found,
    zoo: Option<TeacherArch>,
) -> Result<usize, RunError> {
    let size = match (o.image_size, zoo, found.side) {
        (Some(n), _, _) => n,
        (None, Some(a), _) => a.member().expect("a pretrained teacher").resolution,
        (None, None, Some(side)) => side,
        (None, None, None) => 64,
    };
    if zoo.is_some() && found.channels != 3 {
        return Err(bad(
            "teacher",
            format!(
                "the `{}` teacher reads RGB images, but `{}` holds {}-channel images; use `--teacher cnn`",
                o.teacher,
                o.data.display(),
                found.channels
            ),
        ));
    }
    let m = found.min_per_class;
    let samples = (m / 10).clamp(1, 50);
    let rate = (m / 50).clamp(1, 10);
    if samples + rate > m {
        return Err(bad(
            "data",
            format!(
                "a class of `{}` has {m} training image(s): distillation and rating need at least 2 per class",
                o.data.display()
            ),
        ));
    }
    let _ = writeln!(s, "[data]");
    let _ = writeln!(s, "format = \"{}\"", format_name(found.format));
    let _ = writeln!(s, "train = {}", found.train);
    let _ = writeln!(s, "test = {}", found.test);
    let _ = writeln!(s, "classes = {}", found.classes);
    let _ = writeln!(
        s,
        "# {}",
        match zoo {
            Some(_) if o.image_size.is_none() => "The teacher's native resolution.",
            _ => "The images' side.",
        }
    );
    let _ = writeln!(s, "image_size = {size}\nchannels = {}", found.channels);
    let _ = writeln!(
        s,
        "# The fewest images of a class is {m}: about a tenth to distill on, a fiftieth (disjoint) to rate on."
    );
    let _ = writeln!(s, "samples_per_class = {samples}\nrate_per_class = {rate}");
    if zoo.is_some() {
        let _ = writeln!(
            s,
            "# `normalize` is left out: a pretrained teacher's default is what its checkpoints were trained with."
        );
        let _ = writeln!(s, "augment = {{ hflip = true }}");
    } else {
        let _ = writeln!(s, "augment = {{ crop_padding = 2, hflip = true }}");
    }
    let _ = writeln!(s, "batch_size = 64\n");
    Ok(size)
}

/// One teacher stage the space mirrors: (stage, layers, channels).
type Stage = (usize, usize, usize);

/// The `[teacher]` section; returns the stages the blocks mirror, the teacher's stem and head
/// widths, and whether it has squeeze-excitation.
fn teacher_section(
    s: &mut String,
    o: &InitOptions,
    zoo: Option<TeacherArch>,
    size: usize,
    recipe_dir: &Path,
) -> Result<(Vec<Stage>, usize, usize, bool), RunError> {
    Ok(match zoo {
        Some(a) => {
            let spec = a.listed().expect("a pretrained teacher");
            let weights = o.weights.as_ref().ok_or_else(|| {
                bad(
                    "weights",
                    format!(
                        "the `{}` teacher is loaded, not trained: give its checkpoint with `--weights FILE` (`dnarun teachers {}` says where checkpoints come from)",
                        o.teacher, o.teacher
                    ),
                )
            })?;
            if !weights.is_file() {
                return Err(bad(
                    "weights",
                    format!("`{}` does not exist", weights.display()),
                ));
            }
            let ext = weights
                .extension()
                .map(|e| e.to_string_lossy().to_lowercase())
                .unwrap_or_default();
            let format = if ext == "safetensors" {
                "safetensors"
            } else if matches!(
                a,
                TeacherArch::EfficientnetLite0
                    | TeacherArch::EfficientnetLite1
                    | TeacherArch::EfficientnetLite2
            ) && a.default_layout() == crate::recipe::WeightLayout::EfficientnetPytorch
                && weights.to_string_lossy().contains("lite")
            {
                "torch-legacy"
            } else {
                "torch"
            };
            let resnet = spec
                .stages
                .first()
                .is_some_and(|s| s.kind != LayerKind::MbConv);
            let _ = writeln!(s, "[teacher]\narch = \"{}\"", o.teacher);
            let _ = writeln!(
                s,
                "weights = {{ path = \"{}\", format = \"{format}\" }}",
                rel(weights, recipe_dir)
            );
            // MBConv families: stage 1 is one narrow layer, distilled with stage 2 as block 0 (the
            // paper's partition); ResNets: every stage.
            let first = if resnet { 1 } else { 2 };
            let taps: Vec<String> = (first..=spec.stages.len())
                .map(|st| format!("  {{ name = \"s{st}\", stage = {st} }},"))
                .collect();
            let _ = writeln!(
                s,
                "# One block per stage (`dnarun teachers {}` lists them; shapes are derived).\ntaps = [\n{}\n]\n",
                o.teacher,
                taps.join("\n")
            );
            let stages = spec
                .stages
                .iter()
                .enumerate()
                .skip(first - 1)
                .map(|(i, st)| (i + 1, st.layers, st.channels))
                .collect();
            let head = spec.head.unwrap_or(1280).min(1280);
            let family = a.member().map(|m| m.family);
            (
                stages,
                spec.stem,
                head,
                family == Some(Family::EfficientNet),
            )
        }
        None => {
            let (stride, s2) = if size >= 24 { (2, 2) } else { (1, 1) };
            let _ = writeln!(
                s,
                "[teacher]\n# A small CNN trained by the teacher stage on this data.\narch = \"cnn\"\ncnn = {{ stem = 16, stem_stride = {stride}, head = 128, stages = [\n  {{ channels = 24, layers = 2, stride = 1, kernel = 3, expansion = 4 }},\n  {{ channels = 40, layers = 2, stride = {s2}, kernel = 3, expansion = 4 }},\n  {{ channels = 64, layers = 2, stride = 1, kernel = 3, expansion = 4 }},\n] }}\ntrain = {{ epochs = 3, lr = 0.004, lr_decay = 0.7 }}\ntaps = [\n  {{ name = \"s1\", stage = 1 }},\n  {{ name = \"s2\", stage = 2 }},\n  {{ name = \"s3\", stage = 3 }},\n]\n"
            );
            (vec![(1, 2, 24), (2, 2, 40), (3, 2, 64)], 16, 128, false)
        }
    })
}

/// `[student]`, `[ops]`, the blocks and the training sections (the budget left as `{BUDGET}`).
fn space_section(
    s: &mut String,
    stages: &[Stage],
    stem: usize,
    stem_stride: usize,
    head: usize,
    se: bool,
) {
    let _ = writeln!(
        s,
        "[student]\nstem = {stem}\nstem_stride = {stem_stride}\nhead = {head}\n"
    );
    let se_part = if se { ", se = 0.25" } else { "" };
    let _ = writeln!(
        s,
        "# The paper's op set: MBConv with kernels 3/5/7 and expansions 3/6{}.\n[ops]",
        if se {
            ", squeeze-excitation as the teacher has"
        } else {
            ""
        }
    );
    for k in [3, 5, 7] {
        for e in [3, 6] {
            let _ = writeln!(
                s,
                "k{k}e{e} = {{ kernel = {k}, expansion = {e}{se_part}, act = \"swish\" }}"
            );
        }
    }
    let _ = writeln!(
        s,
        "\n# Per block, cells around the teacher stage's depth L and width C: L-1, L and L+1 layers\n# at width C, and L layers at half width (at most 4 layers: 6^4 paths per cell)."
    );
    for &(stage, layers, channels) in stages {
        let l = layers.min(4);
        let mut cells: Vec<(usize, usize)> = vec![
            (l.saturating_sub(1).max(1), channels),
            (l, channels),
            ((l + 1).min(4), channels),
            (l, round8(channels as f64 / 2.0).min(channels)),
        ];
        cells.dedup();
        let list = cells
            .iter()
            .map(|(l, h)| format!("{{ layers = {l}, hidden = {h} }}"))
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(s, "\n[[blocks]]\ntarget = \"s{stage}\"\ncells = [{list}]");
    }
    let _ = writeln!(s, "\n[distill]\nepochs = 10\n");
    let _ = writeln!(s, "[search]\n{{BUDGET}}top_k = 3\n");
    let _ = writeln!(s, "[retrain]\nepochs = 10");
}

/// Writes the recipe (refusing to overwrite a file); returns a summary for the terminal.
pub fn init(o: &InitOptions) -> Result<String, RunError> {
    if o.output.exists() {
        return Err(bad(
            "output",
            format!(
                "`{}` exists; dnarun init does not overwrite it (name another file with `-o`)",
                o.output.display()
            ),
        ));
    }
    let parent = match o.output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let recipe_dir = parent
        .canonicalize()
        .or_else(|_| std::path::absolute(parent))
        .unwrap_or_default();
    let found = detect(&o.data, o.format, &recipe_dir)?;
    let text = recipe_text(o, &found, &recipe_dir)?;
    // The space's FLOPs and params range, from the recipe without a budget.
    let tmp = o.output.with_extension("init.tmp~");
    let resolve = |text: &str| -> Result<Plan, RunError> {
        crate::rundir::write_atomic(&tmp, text.as_bytes())?;
        let plan = Plan::load(
            &tmp,
            &Overrides {
                sets: vec![],
                env: false,
            },
        );
        let _ = std::fs::remove_file(&tmp);
        Ok(plan?)
    };
    let open = resolve(&text.replace("{BUDGET}", ""))?;
    let (flo, fhi) = open.space.extremes(|c| c.flops(FlopsConvention::Dna));
    let (plo, phi) = open.space.extremes(|c| c.params);
    let range = format!(
        "the space's students need {:.2} to {:.2} MFLOPs and {:.3} to {:.3} M params",
        flo as f64 / 1e6,
        fhi as f64 / 1e6,
        plo as f64 / 1e6,
        phi as f64 / 1e6
    );
    for (given, lo, option, unit) in [
        (o.budget_mflops, flo, "budget-mflops", "MFLOPs"),
        (o.budget_mparams, plo, "budget-mparams", "M params"),
    ] {
        if let Some(b) = given
            && b * 1e6 < lo as f64
        {
            return Err(bad(
                option,
                format!(
                    "{b} {unit} is below the cheapest student of the space this recipe would search ({:.3} {unit}; {range}); raise it",
                    lo as f64 / 1e6
                ),
            ));
        }
    }
    let budget = match (o.budget_mflops, o.budget_mparams) {
        (Some(f), _) => format!("# Asked for; {range}.\nmax_mflops = {f}\n"),
        (None, Some(p)) => format!("# Asked for; {range}.\nmax_mparams = {p}\n"),
        (None, None) => {
            let mid = (flo as f64 + (fhi as f64 - flo as f64) / 2.0) / 1e6;
            format!(
                "# The middle of the space's FLOPs range ({range}).\nmax_mflops = {:.2}\n",
                mid
            )
        }
    };
    let text = text.replace("{BUDGET}", &budget);
    let plan = resolve(&text)?;
    crate::rundir::write_atomic(&o.output, text.as_bytes())?;
    Ok(format!(
        "wrote `{}`: {} blocks, {} architectures; {} images of {} classes ({}); budget {}\ncheck it with `dnarun validate {}` and `dnarun plan {}`\n",
        o.output.display(),
        plan.space.blocks.len(),
        crate::plan::count(plan.space.size()),
        format_name(found.format),
        found.classes,
        o.data.display(),
        plan.budget_text(),
        o.output.display(),
        o.output.display()
    ))
}
