//! Recipe -> Plan: everything resolved and checked. Concrete teacher stages and tap shapes, the
//! search space with its costs, budgets in absolute units, per-block learning rates, devices,
//! paths made absolute. Every stage takes `&Plan`, never the raw recipe.

use std::fmt::Write as _;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::recipe::{
    Activation, DataFormat, Diagnostic, Diagnostics, FlopsConvention, Loaded, Recipe,
    SCHEMA_VERSION, TeacherArch, TrainSettings, WeightFormat, did_you_mean,
};
use crate::space::{BlockSpace, CellSpec, Cost, OpSpec, Space};

/// One stage of a teacher: `layers` MBConv layers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageSpec {
    /// Output channels.
    pub channels: usize,
    /// Layers.
    pub layers: usize,
    /// Stride of the first layer.
    pub stride: usize,
    /// Depthwise kernel.
    pub kernel: usize,
    /// Expansion ratio.
    pub expansion: usize,
}

/// The resolved teacher.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TeacherSpec {
    /// Architecture.
    pub arch: TeacherArch,
    /// Stem channels.
    pub stem: usize,
    /// Stem stride.
    pub stem_stride: usize,
    /// Stages in order.
    pub stages: Vec<StageSpec>,
    /// Head channels.
    pub head: usize,
    /// Activation.
    pub act: Activation,
    /// BatchNorm epsilon.
    pub bn_eps: f64,
    /// Pretrained weights (absolute path) and format.
    pub weights: Option<(PathBuf, WeightFormat)>,
    /// Training settings when there are no weights.
    pub train: TrainSettings,
    /// BN in eval mode while producing targets.
    pub eval_mode: bool,
}

impl TeacherSpec {
    /// Output shape `[C, H, W]` of every stage (index s-1 for stage s) at an image size.
    pub fn stage_shapes(&self, image_size: usize) -> Vec<[usize; 3]> {
        let mut size = image_size.div_ceil(self.stem_stride);
        self.stages
            .iter()
            .map(|s| {
                size = size.div_ceil(s.stride);
                [s.channels, size, size]
            })
            .collect()
    }
}

/// A block boundary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TapSpec {
    /// Name.
    pub name: String,
    /// The stage whose output it is (1-based).
    pub stage: usize,
    /// Shape `[C, H, W]`.
    pub shape: [usize; 3],
}

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

/// A compute device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeviceSpec {
    /// The CPU (Burn's flex backend).
    Cpu,
    /// CUDA device N.
    Cuda(usize),
    /// wgpu device N.
    Wgpu(usize),
}

impl DeviceSpec {
    /// Parses `cpu`, `cuda:N`, `wgpu:N`.
    pub fn parse(s: &str) -> Result<DeviceSpec, String> {
        let s = s.trim();
        if s == "cpu" {
            return Ok(DeviceSpec::Cpu);
        }
        let (kind, idx) = s.split_once(':').unwrap_or((s, "0"));
        let idx: usize = idx
            .parse()
            .map_err(|_| format!("`{s}`: `{idx}` is not a device index"))?;
        match kind {
            "cuda" => Ok(DeviceSpec::Cuda(idx)),
            "wgpu" => Ok(DeviceSpec::Wgpu(idx)),
            _ => Err(format!(
                "`{s}` is not a device: write `cpu`, `cuda:N` or `wgpu:N`"
            )),
        }
    }
}

impl std::fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceSpec::Cpu => f.write_str("cpu"),
            DeviceSpec::Cuda(i) => write!(f, "cuda:{i}"),
            DeviceSpec::Wgpu(i) => write!(f, "wgpu:{i}"),
        }
    }
}

/// The fully resolved, checked run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The typed recipe.
    pub recipe: Recipe,
    /// The merged recipe as JSON (recorded in the lock file, flattened into MLflow params).
    pub recipe_value: serde_json::Value,
    /// The recipe file.
    pub recipe_path: PathBuf,
    /// Directory relative paths are resolved against.
    pub base_dir: PathBuf,
    /// The teacher.
    pub teacher: TeacherSpec,
    /// Its taps, in block order.
    pub taps: Vec<TapSpec>,
    /// The search space.
    pub space: Space,
    /// Distillation learning rate of each block.
    pub block_lr: Vec<f64>,
    /// What the budgets limit (primary, secondary).
    pub measures: [Measure; 2],
    /// Budget limits in absolute units (infinity where unset).
    pub limits: [f64; 2],
    /// Devices.
    pub devices: Vec<DeviceSpec>,
}

const LITE0_STAGES: [(usize, usize, usize, usize, usize); 7] = [
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
];

impl Plan {
    /// Resolves and checks a loaded recipe, reporting every problem at once.
    pub fn resolve(loaded: &Loaded) -> Result<Plan, Diagnostics> {
        let r = &loaded.recipe;
        let diags: std::cell::RefCell<Vec<Diagnostic>> = Default::default();
        let at = |ptr: &str| loaded.origins.value(ptr);
        let err = |ptr: &str, msg: String, help: Option<String>| {
            let mut d = Diagnostic::new(msg).at(at(ptr));
            if let Some(h) = help {
                d = d.help(h);
            }
            diags.borrow_mut().push(d);
        };
        let base = loaded.base_dir();

        if r.experiment.schema_version != SCHEMA_VERSION {
            err(
                "/experiment/schema_version",
                format!(
                    "`experiment.schema_version` is {}, but this dnarun reads version {SCHEMA_VERSION}",
                    r.experiment.schema_version
                ),
                Some("upgrade dnarun, or write the recipe for version 1".into()),
            );
        }

        // Data: the keys each format needs.
        for (split, s) in [("train", &r.data.train), ("test", &r.data.test)] {
            let need: &[(&str, bool)] = match r.data.format {
                DataFormat::Idx => &[
                    ("images", s.images.is_some()),
                    ("labels", s.labels.is_some()),
                ],
                DataFormat::Cifar10 | DataFormat::Cifar100 => &[("files", s.files.is_some())],
                DataFormat::Folder | DataFormat::FlatFolder => &[("dir", s.dir.is_some())],
            };
            for (key, present) in need {
                if !present {
                    err(
                        &format!("/data/{split}"),
                        format!(
                            "`data.{split}.{key}` is missing: `data.format = \"{}\"` reads it",
                            format_name(r.data.format)
                        ),
                        None,
                    );
                }
            }
        }
        for (key, v) in [
            ("mean", &r.data.normalize.mean),
            ("std", &r.data.normalize.std),
        ] {
            if v.len() != 1 && v.len() != r.data.channels {
                err(
                    &format!("/data/normalize/{key}"),
                    format!(
                        "`data.normalize.{key}` has {} values; give 1 or `data.channels` ({})",
                        v.len(),
                        r.data.channels
                    ),
                    None,
                );
            }
        }
        for (i, s) in r.data.normalize.std.iter().enumerate() {
            if *s <= 0.0 {
                err(
                    &format!("/data/normalize/std/{i}"),
                    format!("`data.normalize.std[{i}]` must be positive, found {s}"),
                    None,
                );
            }
        }

        // Teacher.
        let teacher = match r.teacher.arch {
            TeacherArch::EfficientnetLite0 => {
                if r.teacher.weights.is_none() {
                    err("/teacher", "`teacher.weights` is missing: an `efficientnet-lite0` teacher is loaded, not trained".into(),
                        Some("point `teacher.weights.path` at `efficientnet-lite0-57934424.pth` with `format = \"torch-legacy\"`".into()));
                }
                if r.data.channels != 3 {
                    err(
                        "/data/channels",
                        format!(
                            "`data.channels` is {}, but an `efficientnet-lite0` teacher needs 3 (RGB)",
                            r.data.channels
                        ),
                        None,
                    );
                }
                TeacherSpec {
                    arch: r.teacher.arch,
                    stem: 32,
                    stem_stride: 2,
                    stages: LITE0_STAGES
                        .iter()
                        .map(|&(layers, kernel, stride, expansion, channels)| StageSpec {
                            channels,
                            layers,
                            stride,
                            kernel,
                            expansion,
                        })
                        .collect(),
                    head: 1280,
                    act: Activation::Relu6,
                    bn_eps: 1e-3,
                    weights: None,
                    train: r.teacher.train.clone(),
                    eval_mode: r.teacher.eval_mode,
                }
            }
            TeacherArch::Cnn => match &r.teacher.cnn {
                Some(cnn) => TeacherSpec {
                    arch: r.teacher.arch,
                    stem: cnn.stem,
                    stem_stride: cnn.stem_stride,
                    stages: cnn
                        .stages
                        .iter()
                        .map(|s| StageSpec {
                            channels: s.channels,
                            layers: s.layers,
                            stride: s.stride,
                            kernel: s.kernel,
                            expansion: s.expansion,
                        })
                        .collect(),
                    head: cnn.head,
                    act: Activation::Relu6,
                    bn_eps: 1e-3,
                    weights: None,
                    train: r.teacher.train.clone(),
                    eval_mode: r.teacher.eval_mode,
                },
                None => {
                    err("/teacher", "`teacher.cnn` is missing: `teacher.arch = \"cnn\"` declares its stages there".into(),
                        Some("add `[teacher.cnn]` with `stem`, `head` and `[[teacher.cnn.stages]]`".into()));
                    TeacherSpec {
                        arch: r.teacher.arch,
                        stem: 1,
                        stem_stride: 1,
                        stages: vec![],
                        head: 1,
                        act: Activation::Relu6,
                        bn_eps: 1e-3,
                        weights: None,
                        train: r.teacher.train.clone(),
                        eval_mode: true,
                    }
                }
            },
        };
        let mut teacher = teacher;
        teacher.weights = r
            .teacher
            .weights
            .as_ref()
            .map(|w| (base.join(&w.path), w.format));
        for (i, s) in teacher.stages.iter().enumerate() {
            if s.kernel % 2 == 0 {
                err(
                    &format!("/teacher/cnn/stages/{i}/kernel"),
                    format!(
                        "`teacher.cnn.stages[{i}].kernel` must be odd, found {}",
                        s.kernel
                    ),
                    None,
                );
            }
        }
        let stage_shapes = teacher.stage_shapes(r.data.image_size);

        // Taps.
        if r.teacher.taps.is_empty() {
            err(
                "/teacher/taps",
                "`teacher.taps` is empty: declare at least one block boundary".into(),
                None,
            );
        }
        let mut taps = Vec::new();
        for (i, t) in r.teacher.taps.iter().enumerate() {
            let p = format!("/teacher/taps/{i}");
            if r.teacher.taps[..i].iter().any(|o| o.name == t.name) {
                err(
                    &format!("{p}/name"),
                    format!("`teacher.taps[{i}].name` repeats the tap name `{}`", t.name),
                    None,
                );
            }
            if i > 0 && t.stage <= r.teacher.taps[i - 1].stage {
                err(
                    &format!("{p}/stage"),
                    format!(
                        "`teacher.taps[{i}].stage` is {}, but taps must be in teacher order: the previous tap is at stage {}",
                        t.stage,
                        r.teacher.taps[i - 1].stage
                    ),
                    None,
                );
            }
            match stage_shapes.get(t.stage.wrapping_sub(1)) {
                None if !teacher.stages.is_empty() => err(
                    &format!("{p}/stage"),
                    format!(
                        "`teacher.taps[{i}].stage` is {}, but the teacher has stages 1 to {}",
                        t.stage,
                        teacher.stages.len()
                    ),
                    None,
                ),
                Some(shape) if *shape != t.shape => err(
                    &format!("{p}/shape"),
                    format!(
                        "`teacher.taps[{i}].shape` is {:?}, but stage {} of the teacher outputs {:?} at `data.image_size = {}`",
                        t.shape, t.stage, shape, r.data.image_size
                    ),
                    Some(format!("write `shape = {shape:?}`")),
                ),
                _ => {}
            }
            taps.push(TapSpec {
                name: t.name.clone(),
                stage: t.stage,
                shape: t.shape,
            });
        }

        // Ops.
        if r.ops.is_empty() {
            err(
                "/ops",
                "`ops` is empty: declare at least one candidate op".into(),
                None,
            );
        }
        for (name, op) in &r.ops {
            if op.kernel % 2 == 0 {
                err(
                    &format!("/ops/{name}/kernel"),
                    format!("`ops.{name}.kernel` must be odd, found {}", op.kernel),
                    None,
                );
            }
        }
        let op_names: Vec<&str> = r.ops.keys().map(String::as_str).collect();

        // Blocks.
        if r.blocks.is_empty() {
            err(
                "/blocks",
                "`blocks` is empty: declare at least one block".into(),
                None,
            );
        }
        if r.blocks.len() != taps.len() && !taps.is_empty() && !r.blocks.is_empty() {
            err(
                "/blocks",
                format!(
                    "there are {} blocks but {} taps: block i learns tap i, so they must match one to one",
                    r.blocks.len(),
                    taps.len()
                ),
                None,
            );
        }
        let mut blocks = Vec::new();
        let mut block_lr = Vec::new();
        let mut prev_shape = [
            r.student.stem,
            r.data.image_size.div_ceil(r.student.stem_stride),
            0,
        ];
        prev_shape[2] = prev_shape[1];
        let mut prev_name = "image".to_string();
        for (bi, b) in r.blocks.iter().enumerate() {
            let p = format!("/blocks/{bi}");
            let tap = taps.iter().position(|t| t.name == b.target);
            match tap {
                None => {
                    let names: Vec<&str> = taps.iter().map(|t| t.name.as_str()).collect();
                    err(
                        &format!("{p}/target"),
                        format!(
                            "`blocks[{bi}].target` names the tap `{}`, which `teacher.taps` does not declare",
                            b.target
                        ),
                        did_you_mean(&b.target, names.iter().copied())
                            .map(|s| format!("did you mean `{s}`?"))
                            .or(Some(format!("the taps are: {}", names.join(", ")))),
                    );
                }
                Some(ti) if ti != bi && bi < taps.len() => err(
                    &format!("{p}/target"),
                    format!(
                        "`blocks[{bi}].target` is `{}`, which is tap {ti}: blocks follow the taps in order, so block {bi} must target `{}`",
                        b.target,
                        taps.get(bi).map(|t| t.name.as_str()).unwrap_or("?")
                    ),
                    None,
                ),
                _ => {}
            }
            if let Some(input) = &b.input
                && *input != prev_name
            {
                err(
                    &format!("{p}/input"),
                    format!(
                        "`blocks[{bi}].input` is `{input}`, but block {bi} reads `{prev_name}` (the previous block's target)"
                    ),
                    Some(format!("remove `input` or write `input = \"{prev_name}\"`")),
                );
            }
            let ops: Vec<OpSpec> = match &b.ops {
                None => r.ops.iter().map(|(n, o)| op_spec(n, o)).collect(),
                Some(list) => {
                    if list.is_empty() {
                        err(
                            &format!("{p}/ops"),
                            format!("`blocks[{bi}].ops` is empty: list at least one op"),
                            None,
                        );
                    }
                    list.iter()
                        .enumerate()
                        .filter_map(|(oi, n)| match r.ops.get(n) {
                            Some(o) => Some(op_spec(n, o)),
                            None => {
                                err(&format!("{p}/ops/{oi}"), format!("`blocks[{bi}].ops[{oi}]` names the op `{n}`, which `ops` does not declare"),
                                    did_you_mean(n, op_names.iter().copied()).map(|s| format!("did you mean `{s}`?"))
                                        .or(Some(format!("the ops are: {}", op_names.join(", ")))));
                                None
                            }
                        })
                        .collect()
                }
            };
            let target_shape = tap.map(|t| taps[t].shape).unwrap_or(prev_shape);
            let derived = if prev_shape[1].div_ceil(2) == target_shape[1]
                && prev_shape[1] != target_shape[1]
            {
                Some(2)
            } else if prev_shape[1] == target_shape[1] {
                Some(1)
            } else {
                None
            };
            if derived.is_none() && tap.is_some() {
                err(
                    &format!("{p}/target"),
                    format!(
                        "block {bi} maps {}x{} to {}x{} (`{}`), but a cell can only keep the spatial size or halve it",
                        prev_shape[1], prev_shape[2], target_shape[1], target_shape[2], b.target
                    ),
                    Some("add a tap in between, or change `student.stem_stride`".into()),
                );
            }
            if b.cells.is_empty() {
                err(
                    &format!("{p}/cells"),
                    format!("`blocks[{bi}].cells` is empty: declare at least one cell"),
                    None,
                );
            }
            let mut cells = Vec::new();
            for (ci, c) in b.cells.iter().enumerate() {
                if let (Some(s), Some(d)) = (c.stride, derived)
                    && s != d
                {
                    err(
                        &format!("{p}/cells/{ci}/stride"),
                        format!(
                            "`blocks[{bi}].cells[{ci}].stride` is {s}, but the taps need stride {d} ({}x{} -> {}x{})",
                            prev_shape[1], prev_shape[2], target_shape[1], target_shape[2]
                        ),
                        Some("remove `stride`: it is derived from the tap shapes".into()),
                    );
                }
                cells.push(CellSpec {
                    layers: c.layers,
                    hidden: c.hidden,
                    stride: derived.unwrap_or(1),
                    cin: prev_shape[0],
                    cout: target_shape[0],
                    size: prev_shape[1],
                    adapter: b.adapter,
                });
            }
            blocks.push(BlockSpace {
                target: b.target.clone(),
                cells,
                ops,
            });
            block_lr.push(b.lr.unwrap_or(r.distill.lr));
            prev_shape = target_shape;
            prev_name = b.target.clone();
        }

        let space = Space {
            image_channels: r.data.channels,
            image_size: r.data.image_size,
            stem: r.student.stem,
            stem_stride: r.student.stem_stride,
            head: r.student.head,
            classes: r.data.classes,
            blocks,
        };

        // Budgets.
        let mut measures = [Measure::Flops(r.search.flops_convention), Measure::Params];
        let mut limits = [f64::INFINITY, f64::INFINITY];
        match (r.search.max_mflops, r.search.max_mparams) {
            (Some(f), p) => {
                limits[0] = f * 1e6;
                limits[1] = p.map_or(f64::INFINITY, |p| p * 1e6);
            }
            (None, Some(p)) => {
                measures = [Measure::Params, Measure::Flops(r.search.flops_convention)];
                limits[0] = p * 1e6;
            }
            (None, None) => {}
        }
        let ok_space = diags.borrow().is_empty()
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
                    err(
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
                    err(
                        &format!("/search/{key}"),
                        format!(
                            "`search.{key}` is {}, but the most expensive student needs only {:.2}{unit}: the budget limits nothing",
                            limit / 1e6,
                            hi as f64 / 1e6
                        ),
                        Some(format!(
                            "lower `search.{key}` below {:.2}, or remove it to search without a budget",
                            hi as f64 / 1e6
                        )),
                    );
                }
            }
        }

        // Devices.
        let mut devices = Vec::new();
        for (i, d) in r.runtime.devices.iter().enumerate() {
            match DeviceSpec::parse(d) {
                Ok(d) => devices.push(d),
                Err(m) => err(
                    &format!("/runtime/devices/{i}"),
                    format!("`runtime.devices[{i}]`: {m}"),
                    None,
                ),
            }
        }
        if r.runtime.devices.is_empty() {
            err(
                "/runtime/devices",
                "`runtime.devices` is empty: name at least one device, e.g. `[\"cpu\"]`".into(),
                None,
            );
        }

        let diags = diags.into_inner();
        if !diags.is_empty() {
            return Err(loaded.diagnostics(diags));
        }
        Ok(Plan {
            recipe: r.clone(),
            recipe_value: loaded.value.clone(),
            recipe_path: loaded.path.clone(),
            base_dir: base,
            teacher,
            taps,
            space,
            block_lr,
            measures,
            limits,
            devices,
        })
    }

    /// Resolves a path written in the recipe.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.base_dir.join(rel)
    }

    /// The directory runs go under.
    pub fn output_dir(&self) -> PathBuf {
        self.path(&self.recipe.experiment.output_dir)
    }

    /// A human summary: the space, its size and costs, the budget, the work.
    pub fn summary(&self) -> String {
        let r = &self.recipe;
        let mut s = String::new();
        let conv = r.search.flops_convention;
        let conv_name = match conv {
            FlopsConvention::Dna => "DNA convention: MACs + 2 x BN outputs",
            FlopsConvention::Macs => "plain MACs",
        };
        let _ = writeln!(
            s,
            "experiment `{}` (seed {})",
            r.experiment.name, r.experiment.seed
        );
        let _ = writeln!(
            s,
            "data: {}, {}x{} images, {} classes; {} per class to distill on, {} per class to rate on",
            format_name(r.data.format),
            r.data.image_size,
            r.data.image_size,
            r.data.classes,
            r.data.samples_per_class,
            r.data.rate_per_class
        );
        let t = &self.teacher;
        let _ = writeln!(
            s,
            "teacher: {} ({} stages, {}), {}",
            match t.arch {
                TeacherArch::EfficientnetLite0 => "efficientnet-lite0",
                TeacherArch::Cnn => "cnn",
            },
            t.stages.len(),
            if t.eval_mode {
                "BN in eval mode"
            } else {
                "BN in train mode, as the public DNA code"
            },
            match &t.weights {
                Some((p, _)) => format!("weights `{}`", p.display()),
                None => format!("trained for {} epochs", t.train.epochs),
            }
        );
        let _ = writeln!(
            s,
            "taps: {}",
            self.taps
                .iter()
                .map(|t| format!(
                    "{} (stage {}) {}@{}x{}",
                    t.name, t.stage, t.shape[0], t.shape[1], t.shape[2]
                ))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let _ = writeln!(s, "blocks:");
        for (i, b) in self.space.blocks.iter().enumerate() {
            let cells = b
                .cells
                .iter()
                .map(|c| {
                    format!(
                        "{}x{}{}",
                        c.layers,
                        c.hidden,
                        if c.stride == 2 { "/2" } else { "" }
                    )
                })
                .collect::<Vec<_>>()
                .join(", ");
            let k = i % self.devices.len();
            let device = if self.devices.len() > 1 {
                format!("{} (worker {k})", self.devices[k])
            } else {
                self.devices[k].to_string()
            };
            let _ = writeln!(
                s,
                "  {i}: -> {:<8} cells [{cells}] ops {} paths {:.4e}  lr {}  on {device}",
                b.target,
                b.ops.len(),
                b.num_paths(),
                self.block_lr[i]
            );
        }
        let _ = writeln!(s, "space: {:.4e} architectures", self.space.size());
        let (flo, fhi) = self.space.extremes(|c| c.flops(conv));
        let (plo, phi) = self.space.extremes(|c| c.params);
        let _ = writeln!(
            s,
            "students: {:.2}M to {:.2}M FLOPs ({conv_name}), {:.3}M to {:.3}M params",
            flo as f64 / 1e6,
            fhi as f64 / 1e6,
            plo as f64 / 1e6,
            phi as f64 / 1e6
        );
        let budget: Vec<String> = self
            .measures
            .iter()
            .zip(self.limits)
            .filter(|(_, l)| l.is_finite())
            .map(|(m, l)| match m {
                Measure::Params => format!("<= {:.3}M params", l / 1e6),
                Measure::Flops(_) => format!("<= {:.2}M FLOPs", l / 1e6),
            })
            .collect();
        let _ = writeln!(
            s,
            "budget: {}; top {}",
            if budget.is_empty() {
                "none".into()
            } else {
                budget.join(", ")
            },
            r.search.top_k
        );
        if self.limits[0].is_finite() {
            let fit = self.fitting_fraction();
            let _ = writeln!(
                s,
                "fit the first budget: about {:.3e} architectures ({:.1} % of the space)",
                fit * self.space.size(),
                fit * 100.0
            );
        }
        let paths: f64 = self.space.blocks.iter().map(|b| b.num_paths()).sum();
        let layer_evals: f64 = self
            .space
            .blocks
            .iter()
            .map(|b| {
                b.cells
                    .iter()
                    .map(|c| {
                        (1..=c.layers)
                            .map(|l| (b.ops.len() as f64).powi(l as i32))
                            .sum::<f64>()
                    })
                    .sum::<f64>()
            })
            .sum();
        let batch = r.distill.batch_size.unwrap_or(r.data.batch_size);
        let steps = (r.data.samples_per_class * r.data.classes).div_ceil(batch) * r.distill.epochs;
        let _ = writeln!(
            s,
            "work: {steps} teacher forwards feeding {} blocks ({} epochs of {} steps, batch {batch}); {paths:.4e} paths to rate ({layer_evals:.4e} layer evaluations with prefix sharing); retrain top {} for {} epochs",
            self.space.blocks.len(),
            r.distill.epochs,
            steps / r.distill.epochs.max(1),
            r.search.top_k + r.retrain.random_controls,
            r.retrain.epochs
        );
        s
    }
}

impl Plan {
    /// The fraction of architectures whose first cost fits the first budget, from per-block cost
    /// histograms convolved block by block (an estimate: costs are binned).
    pub fn fitting_fraction(&self) -> f64 {
        const BINS: usize = 2048;
        let m = self.measures[0];
        let fixed = m.of(&self.space.fixed_cost()) as f64;
        let (_, hi) = self.space.extremes(|c| m.of(c));
        let width = (hi as f64 - fixed).max(1.0) / (BINS - 1) as f64;
        let mut dist = vec![0.0f64; BINS];
        dist[0] = 1.0;
        for b in &self.space.blocks {
            let paths = b.paths();
            let mut own = vec![0.0f64; BINS];
            for p in &paths {
                let bin = ((m.of(&b.path_cost(p)) as f64 / width).round() as usize).min(BINS - 1);
                own[bin] += 1.0 / paths.len() as f64;
            }
            let mut next = vec![0.0f64; BINS];
            for (i, &a) in dist.iter().enumerate().filter(|(_, a)| **a > 0.0) {
                for (j, &o) in own.iter().enumerate().filter(|(_, o)| **o > 0.0) {
                    next[(i + j).min(BINS - 1)] += a * o;
                }
            }
            dist = next;
        }
        let limit_bin = ((self.limits[0] - fixed) / width).floor();
        if limit_bin < 0.0 {
            return 0.0;
        }
        dist.iter()
            .take(limit_bin as usize + 1)
            .sum::<f64>()
            .min(1.0)
    }
}

fn op_spec(name: &str, o: &crate::recipe::Op) -> OpSpec {
    OpSpec {
        name: name.to_string(),
        kernel: o.kernel,
        expansion: o.expansion,
        se: o.se,
        act: o.act,
    }
}

/// The recipe spelling of a data format.
pub fn format_name(f: DataFormat) -> &'static str {
    match f {
        DataFormat::Idx => "idx",
        DataFormat::Cifar10 => "cifar10",
        DataFormat::Cifar100 => "cifar100",
        DataFormat::Folder => "folder",
        DataFormat::FlatFolder => "flat-folder",
    }
}
