//! The networks: the teacher (stem, MBConv stages, head) with taps at stage outputs, the block
//! supernet (every candidate op at every layer of every cell) and the standalone student.

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::module::{adaptive_avg_pool2d, max_pool2d};
use burn::tensor::ops::MaxPoolOptions;
use burn::tensor::{Device, Tensor};

use super::layers::{Bn, ConvBn, ConvBnConfig, MbConv, Mode, ResBlock, activate};
use crate::plan::{LayerKind, TeacherSpec};
use crate::space::Activation;
use crate::space::{
    Architecture, BlockSpace, Cost, LayerShape, OpSpec, Path, Space, conv_bn_cost, linear_cost,
};

/// BatchNorm epsilon of students.
pub const STUDENT_EPS: f64 = 1e-3;

/// A layer of a teacher stage.
// A teacher holds tens of layers and Burn's Module derive does not see through a Box.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum TeacherLayer {
    /// MBConv / inverted residual.
    MbConv(MbConv),
    /// ResNet basic or bottleneck block.
    Res(ResBlock),
}

impl TeacherLayer {
    /// Forward pass.
    pub fn forward(&self, x: Tensor<4>, mode: Mode) -> Tensor<4> {
        match self {
            TeacherLayer::MbConv(m) => m.forward(x, mode),
            TeacherLayer::Res(r) => r.forward(x, mode),
        }
    }
}

/// A teacher: stem (a max pool after it for ResNets), stages, 1x1 head (none for ResNets),
/// pool, classifier.
#[derive(Module, Debug)]
pub struct Teacher {
    /// Stem convolution.
    pub stem: ConvBn,
    /// A 3x3 stride-2 max pool after the stem.
    #[module(skip)]
    pub stem_pool: bool,
    /// Stages.
    pub stages: Vec<Vec<TeacherLayer>>,
    /// Head 1x1 convolution.
    pub head: Option<ConvBn>,
    /// Classifier.
    pub fc: Linear,
    /// Activation of stem and head.
    #[module(skip)]
    pub act: Activation,
}

impl Teacher {
    /// A randomly initialised teacher.
    pub fn new(spec: &TeacherSpec, channels: usize, classes: usize, device: &Device) -> Teacher {
        let mut cin = spec.stem;
        let stages = spec
            .stages
            .iter()
            .map(|s| {
                (0..s.layers)
                    .map(|i| {
                        let l = LayerShape {
                            cin,
                            cout: s.channels,
                            stride: if i == 0 { s.stride } else { 1 },
                            size: 0,
                        };
                        cin = s.channels;
                        match s.kind {
                            LayerKind::MbConv => {
                                let op = OpSpec {
                                    name: String::new(),
                                    kernel: s.kernel,
                                    expansion: s.expansion,
                                    se: spec.se,
                                    act: spec.act,
                                };
                                TeacherLayer::MbConv(MbConv::padded(
                                    &op,
                                    &l,
                                    spec.bn_eps,
                                    spec.padding,
                                    device,
                                ))
                            }
                            kind => TeacherLayer::Res(ResBlock::new(
                                &l,
                                s.channels / s.expansion,
                                kind == LayerKind::Bottleneck,
                                spec.bn_eps,
                                device,
                            )),
                        }
                    })
                    .collect()
            })
            .collect();
        let features = spec.features();
        Teacher {
            stem: ConvBnConfig::new(channels, spec.stem)
                .with_kernel(spec.stem_kernel)
                .with_stride(spec.stem_stride)
                .with_eps(spec.bn_eps)
                .with_padding(spec.padding)
                .init(device),
            stem_pool: spec.stem_pool,
            stages,
            head: spec.head.map(|head| {
                ConvBnConfig::new(cin, head)
                    .with_eps(spec.bn_eps)
                    .init(device)
            }),
            fc: LinearConfig::new(features, classes).init(device),
            act: spec.act,
        }
    }

    /// The stem's output (after the max pool where there is one).
    fn stem(&self, x: Tensor<4>, mode: Mode) -> Tensor<4> {
        let h = activate(self.stem.forward(x, mode), self.act);
        if self.stem_pool {
            max_pool2d(
                h,
                MaxPoolOptions::new([3, 3])
                    .with_stride([2, 2])
                    .with_padding([1, 1]),
            )
        } else {
            h
        }
    }

    /// The outputs of the given stages (1-based, increasing), in one pass that stops at the last.
    pub fn forward_taps(&self, x: Tensor<4>, stages: &[usize], mode: Mode) -> Vec<Tensor<4>> {
        let last = stages.iter().copied().max().unwrap_or(0);
        let mut h = self.stem(x, mode);
        let mut out = Vec::with_capacity(stages.len());
        for (s, layers) in self.stages.iter().enumerate().take(last) {
            for l in layers {
                h = l.forward(h, mode);
            }
            if stages.contains(&(s + 1)) {
                out.push(h.clone());
            }
        }
        out
    }

    /// Runs stages `from+1 ..= to` on the output of stage `from` (0: the image, through the stem).
    pub fn forward_from(&self, from: usize, to: usize, x: Tensor<4>, mode: Mode) -> Tensor<4> {
        let mut h = if from == 0 { self.stem(x, mode) } else { x };
        for layers in &self.stages[from..to] {
            for l in layers {
                h = l.forward(h, mode);
            }
        }
        h
    }

    /// Class logits.
    pub fn logits(&self, x: Tensor<4>, mode: Mode) -> Tensor<2> {
        let h = self.forward_from(0, self.stages.len(), x, mode);
        let h = match &self.head {
            Some(head) => activate(head.forward(h, mode), self.act),
            None => h,
        };
        pool_classify(&self.fc, h)
    }
}

/// Global average pool and the classifier.
fn pool_classify(fc: &Linear, h: Tensor<4>) -> Tensor<2> {
    let [n, c, _, _] = h.dims();
    fc.forward(adaptive_avg_pool2d(h, [1, 1]).reshape([n, c]))
}

/// The head: 1x1 conv, activation, global pooling, classifier.
pub fn head_logits(
    head: &ConvBn,
    fc: &Linear,
    act: Activation,
    h: Tensor<4>,
    mode: Mode,
) -> Tensor<2> {
    pool_classify(fc, activate(head.forward(h, mode), act))
}

/// One cell of a supernet block: every candidate op at every layer, and the adapter.
#[derive(Module, Debug)]
pub struct SuperCell {
    /// `layers[l][o]`: op o at layer l.
    pub layers: Vec<Vec<MbConv>>,
    /// 1x1 conv + BN from the hidden width to the tap width.
    pub adapter: Option<ConvBn>,
}

/// One block of the supernet. Block 0 also holds the student stem.
#[derive(Module, Debug)]
pub struct SuperBlock {
    /// The student stem (block 0 only).
    pub stem: Option<ConvBn>,
    /// The cells.
    pub cells: Vec<SuperCell>,
}

impl SuperBlock {
    /// A randomly initialised supernet block.
    pub fn new(space: &Space, index: usize, device: &Device) -> SuperBlock {
        let b = &space.blocks[index];
        SuperBlock {
            stem: (index == 0).then(|| {
                ConvBnConfig::new(space.image_channels, space.stem)
                    .with_kernel(3)
                    .with_stride(space.stem_stride)
                    .with_eps(STUDENT_EPS)
                    .init(device)
            }),
            cells: b
                .cells
                .iter()
                .map(|c| SuperCell {
                    layers: (0..c.layers)
                        .map(|l| {
                            b.ops
                                .iter()
                                .map(|op| MbConv::new(op, &c.layer(l), STUDENT_EPS, device))
                                .collect()
                        })
                        .collect(),
                    adapter: c.adapter.then(|| {
                        ConvBnConfig::new(c.hidden, c.cout)
                            .with_eps(STUDENT_EPS)
                            .init(device)
                    }),
                })
                .collect(),
        }
    }

    /// The block's input after the stem (identity except in block 0).
    pub fn enter(&self, x: Tensor<4>, mode: Mode) -> Tensor<4> {
        match &self.stem {
            Some(s) => activate(s.forward(x, mode), Activation::Swish),
            None => x,
        }
    }

    /// Runs one layer with one op.
    pub fn layer(
        &self,
        cell: usize,
        layer: usize,
        op: usize,
        x: Tensor<4>,
        mode: Mode,
    ) -> Tensor<4> {
        self.cells[cell].layers[layer][op].forward(x, mode)
    }

    /// Runs the cell's adapter (identity without one).
    pub fn exit(&self, cell: usize, x: Tensor<4>, mode: Mode) -> Tensor<4> {
        match &self.cells[cell].adapter {
            Some(a) => a.forward(x, mode),
            None => x,
        }
    }

    /// Runs exactly one path.
    pub fn forward(&self, path: &Path, x: Tensor<4>, mode: Mode) -> Tensor<4> {
        let mut h = self.enter(x, mode);
        for (l, &op) in path.ops.iter().enumerate() {
            h = self.layer(path.cell, l, op, h, mode);
        }
        self.exit(path.cell, h, mode)
    }

    /// The BatchNorms a path uses after the stem, in order: layer by layer, then the adapter.
    pub fn path_bns(&self, path: &Path) -> Vec<&Bn> {
        let mut v: Vec<&Bn> = Vec::new();
        for (l, &op) in path.ops.iter().enumerate() {
            v.extend(self.cells[path.cell].layers[l][op].bns());
        }
        if let Some(a) = &self.cells[path.cell].adapter {
            v.push(&a.bn);
        }
        v
    }
}

/// A standalone cell of a student: the chosen op of every layer, and the adapter.
#[derive(Module, Debug)]
pub struct StudentCell {
    /// Layers.
    pub layers: Vec<MbConv>,
    /// Adapter.
    pub adapter: Option<ConvBn>,
}

/// A standalone student network built from an architecture.
#[derive(Module, Debug)]
pub struct Student {
    /// Stem.
    pub stem: ConvBn,
    /// One cell per block.
    pub cells: Vec<StudentCell>,
    /// Head 1x1 convolution.
    pub head: ConvBn,
    /// Classifier.
    pub fc: Linear,
}

impl Student {
    /// A randomly initialised student.
    pub fn new(space: &Space, arch: &Architecture, device: &Device) -> Student {
        let cells = space
            .blocks
            .iter()
            .zip(&arch.paths)
            .map(|(b, p): (&BlockSpace, &Path)| {
                let c = &b.cells[p.cell];
                StudentCell {
                    layers: p
                        .ops
                        .iter()
                        .enumerate()
                        .map(|(l, &o)| MbConv::new(&b.ops[o], &c.layer(l), STUDENT_EPS, device))
                        .collect(),
                    adapter: c.adapter.then(|| {
                        ConvBnConfig::new(c.hidden, c.cout)
                            .with_eps(STUDENT_EPS)
                            .init(device)
                    }),
                }
            })
            .collect::<Vec<_>>();
        let last = space
            .blocks
            .last()
            .map(|b| b.cells[0].cout)
            .unwrap_or(space.stem);
        Student {
            stem: ConvBnConfig::new(space.image_channels, space.stem)
                .with_kernel(3)
                .with_stride(space.stem_stride)
                .with_eps(STUDENT_EPS)
                .init(device),
            cells,
            head: ConvBnConfig::new(last, space.head)
                .with_eps(STUDENT_EPS)
                .init(device),
            fc: LinearConfig::new(space.head, space.classes).init(device),
        }
    }

    /// Class logits.
    pub fn logits(&self, x: Tensor<4>, mode: Mode) -> Tensor<2> {
        let mut h = activate(self.stem.forward(x, mode), Activation::Swish);
        for c in &self.cells {
            for l in &c.layers {
                h = l.forward(h, mode);
            }
            if let Some(a) = &c.adapter {
                h = a.forward(h, mode);
            }
        }
        head_logits(&self.head, &self.fc, Activation::Swish, h, mode)
    }

    /// Cost read off the built module's weight shapes, for an input of `size` pixels.
    pub fn measured_cost(&self, size: usize) -> Cost {
        fn conv_bn(c: &ConvBn, size: usize) -> (Cost, usize) {
            let [cout, cin_g, k, _] = c.conv.weight.dims();
            let stride = c.conv.stride[0];
            let groups = c.conv.groups;
            (
                conv_bn_cost(cin_g * groups, cout, k, stride, groups, size),
                size.div_ceil(stride),
            )
        }
        let (mut cost, mut size) = conv_bn(&self.stem, size);
        for c in &self.cells {
            for l in &c.layers {
                if let Some(e) = &l.expand {
                    cost += conv_bn(e, size).0;
                }
                let (dw, out) = conv_bn(&l.depthwise, size);
                cost += dw;
                if let Some(se) = &l.se {
                    let [s, m, _, _] = se.reduce.weight.dims();
                    cost += linear_cost(m, s) + linear_cost(s, m);
                }
                cost += conv_bn(&l.project, out).0;
                size = out;
            }
            if let Some(a) = &c.adapter {
                cost += conv_bn(a, size).0;
            }
        }
        cost += conv_bn(&self.head, size).0;
        let [hin, classes] = self.fc.weight.dims();
        cost + linear_cost(hin, classes)
    }
}
