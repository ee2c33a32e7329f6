//! The building blocks: BatchNorm with an explicit mode, conv + BN, MBConv with optional
//! squeeze-excitation. Every forward takes the [`Mode`] so that a caller (rating's BN
//! recalibration, a frozen teacher) decides how BatchNorm behaves, not the device.

use burn::config::Config;
use burn::module::{Module, Param, RunningState};
use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::tensor::activation::sigmoid;
use burn::tensor::module::adaptive_avg_pool2d;
use burn::tensor::{Device, Tensor};

use crate::space::{Activation, Padding};
use crate::space::{LayerShape, OpSpec};

/// How BatchNorm behaves in a forward pass.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// Normalise with batch statistics and blend them into the running ones with this
    /// momentum (1 replaces them, 0 leaves them).
    Train {
        /// Weight of the batch statistics in the new running statistics.
        momentum: f64,
    },
    /// Normalise with the running statistics.
    Eval,
}

impl Mode {
    /// Training with the usual momentum.
    pub const TRAIN: Mode = Mode::Train { momentum: 0.1 };
}

/// BatchNorm over `[N, C, H, W]` (or `[N, C]`).
#[derive(Module, Debug)]
pub struct Bn {
    /// Scale.
    pub gamma: Param<Tensor<1>>,
    /// Shift.
    pub beta: Param<Tensor<1>>,
    /// Running mean.
    pub running_mean: RunningState<Tensor<1>>,
    /// Running variance.
    pub running_var: RunningState<Tensor<1>>,
    /// Epsilon.
    pub eps: f64,
}

impl Bn {
    /// A fresh BatchNorm of `c` channels.
    pub fn new(c: usize, eps: f64, device: &Device) -> Bn {
        Bn {
            gamma: Param::from_tensor(Tensor::ones([c], device)),
            beta: Param::from_tensor(Tensor::zeros([c], device)),
            running_mean: RunningState::new(Tensor::zeros([c], device)),
            running_var: RunningState::new(Tensor::ones([c], device)),
            eps,
        }
    }

    /// Forward pass.
    pub fn forward<const D: usize>(&self, x: Tensor<D>, mode: Mode) -> Tensor<D> {
        match mode {
            Mode::Eval => {
                let device = x.device();
                super::cpu::batch_norm_eval(
                    x,
                    self.gamma.val(),
                    self.beta.val(),
                    self.running_mean.value_sync().to_device(&device),
                    self.running_var.value_sync().to_device(&device),
                    self.eps,
                )
            }
            Mode::Train { momentum } => {
                let (output, batch_mean, batch_var) =
                    super::cpu::batch_norm_train(x, self.gamma.val(), self.beta.val(), self.eps);
                if momentum > 0.0 {
                    let device = batch_mean.device();
                    let mean = self.running_mean.value_sync().to_device(&device);
                    let var = self.running_var.value_sync().to_device(&device);
                    self.running_mean.update(
                        mean.mul_scalar(1.0 - momentum)
                            .add(batch_mean.detach().mul_scalar(momentum))
                            .detach(),
                    );
                    self.running_var.update(
                        var.mul_scalar(1.0 - momentum)
                            .add(batch_var.detach().mul_scalar(momentum))
                            .detach(),
                    );
                }
                output
            }
        }
    }

    /// Forgets the running statistics (mean 0, variance 1).
    pub fn reset_stats(&self) {
        let device = self.gamma.val().device();
        let [c] = self.gamma.val().dims();
        self.running_mean.update(Tensor::zeros([c], &device));
        self.running_var.update(Tensor::ones([c], &device));
    }
}

/// Applies an activation.
pub fn activate<const D: usize>(x: Tensor<D>, act: Activation) -> Tensor<D> {
    super::cpu::activate(x, act)
}

/// A convolution without bias followed by BatchNorm.
#[derive(Module, Debug)]
pub struct ConvBn {
    /// The convolution.
    pub conv: Conv2d,
    /// The BatchNorm.
    pub bn: Bn,
}

/// A conv (no bias) followed by BatchNorm.
#[derive(Config, Debug)]
pub struct ConvBnConfig {
    /// Input channels.
    pub cin: usize,
    /// Output channels.
    pub cout: usize,
    /// Square kernel size.
    #[config(default = 1)]
    pub kernel: usize,
    /// Stride.
    #[config(default = 1)]
    pub stride: usize,
    /// Groups (`cin` for a depthwise conv).
    #[config(default = 1)]
    pub groups: usize,
    /// BatchNorm epsilon.
    #[config(default = 1e-3)]
    pub eps: f64,
    /// Where the convolution pads: TensorFlow's "same" or PyTorch's symmetric `k / 2`.
    #[config(default = "Padding::Same")]
    pub padding: Padding,
}

impl ConvBnConfig {
    /// A fresh conv + BN on `device`.
    pub fn init(&self, device: &Device) -> ConvBn {
        ConvBn {
            conv: Conv2dConfig::new([self.cin, self.cout], [self.kernel, self.kernel])
                .with_stride([self.stride, self.stride])
                .with_groups(self.groups)
                .with_padding(match self.padding {
                    Padding::Same => PaddingConfig2d::Same,
                    Padding::Symmetric => {
                        let p = self.kernel / 2;
                        PaddingConfig2d::Explicit(p, p, p, p)
                    }
                })
                .with_bias(false)
                .init(device),
            bn: Bn::new(self.cout, self.eps, device),
        }
    }
}

impl ConvBn {
    /// Forward pass.
    pub fn forward(&self, x: Tensor<4>, mode: Mode) -> Tensor<4> {
        let c = &self.conv;
        let [n, cin, h, w] = x.dims();
        let [cout, _, k, _] = c.weight.dims();
        let y = if c.groups > 1 && c.groups == cin && cout == cin {
            let padding = match c.padding {
                PaddingConfig2d::Same => Padding::Same,
                _ => Padding::Symmetric,
            };
            super::cpu::depthwise_conv2d(x, c.weight.val(), c.stride[0], padding)
        } else if k == 1
            && c.groups == 1
            && c.stride == [1, 1]
            && super::cpu::kernels_for(&x.device())
        {
            // A pointwise convolution is a matrix product per image; Burn's conv2d backward
            // goes through a transposed convolution instead.
            let wt = c.weight.val().reshape([1, cout, cin]);
            wt.matmul(x.reshape([n, cin, h * w]))
                .reshape([n, cout, h, w])
        } else {
            c.forward(x)
        };
        self.bn.forward(y, mode)
    }

    /// Every BatchNorm inside.
    pub fn bns(&self) -> Vec<&Bn> {
        vec![&self.bn]
    }
}

/// Squeeze-excitation: pool, 1x1 reduce (bias), act, 1x1 expand (bias), sigmoid gate.
#[derive(Module, Debug)]
pub struct Se {
    /// Reduce.
    pub reduce: Conv2d,
    /// Expand.
    pub expand: Conv2d,
}

impl Se {
    fn new(c: usize, se: usize, device: &Device) -> Se {
        Se {
            reduce: Conv2dConfig::new([c, se], [1, 1]).init(device),
            expand: Conv2dConfig::new([se, c], [1, 1]).init(device),
        }
    }

    fn forward(&self, x: Tensor<4>, act: Activation) -> Tensor<4> {
        let s = adaptive_avg_pool2d(x.clone(), [1, 1]);
        let s = sigmoid(self.expand.forward(activate(self.reduce.forward(s), act)));
        x * s
    }
}

/// An MBConv (inverted residual) layer: 1x1 expand + BN + act (absent at expansion 1),
/// depthwise kxk (carries the stride) + BN + act, SE, 1x1 project + BN; residual when the
/// stride is 1 and the channels match.
#[derive(Module, Debug)]
pub struct MbConv {
    /// Expansion (none at expansion 1).
    pub expand: Option<ConvBn>,
    /// Depthwise convolution.
    pub depthwise: ConvBn,
    /// Squeeze-excitation.
    pub se: Option<Se>,
    /// Projection.
    pub project: ConvBn,
    /// Activation.
    #[module(skip)]
    pub act: Activation,
    /// Whether the input is added to the output.
    pub residual: bool,
}

impl MbConv {
    /// A fresh MBConv for an op at a layer position.
    pub fn new(op: &OpSpec, l: &LayerShape, eps: f64, device: &Device) -> MbConv {
        Self::padded(op, l, eps, Padding::Same, device)
    }

    /// A fresh MBConv whose depthwise convolution pads as `padding` says.
    pub fn padded(
        op: &OpSpec,
        l: &LayerShape,
        eps: f64,
        padding: Padding,
        device: &Device,
    ) -> MbConv {
        let mid = l.cin * op.expansion;
        let se = op.se_channels(l.cin);
        MbConv {
            expand: (op.expansion != 1)
                .then(|| ConvBnConfig::new(l.cin, mid).with_eps(eps).init(device)),
            depthwise: ConvBnConfig::new(mid, mid)
                .with_kernel(op.kernel)
                .with_stride(l.stride)
                .with_groups(mid)
                .with_eps(eps)
                .with_padding(padding)
                .init(device),
            se: (se > 0).then(|| Se::new(mid, se, device)),
            project: ConvBnConfig::new(mid, l.cout).with_eps(eps).init(device),
            act: op.act,
            residual: l.stride == 1 && l.cin == l.cout,
        }
    }

    /// Forward pass.
    pub fn forward(&self, x: Tensor<4>, mode: Mode) -> Tensor<4> {
        let mut h = x.clone();
        if let Some(e) = &self.expand {
            h = activate(e.forward(h, mode), self.act);
        }
        h = activate(self.depthwise.forward(h, mode), self.act);
        if let Some(se) = &self.se {
            h = se.forward(h, self.act);
        }
        h = self.project.forward(h, mode);
        if self.residual { h + x } else { h }
    }

    /// Every BatchNorm inside.
    pub fn bns(&self) -> Vec<&Bn> {
        let mut v = Vec::new();
        if let Some(e) = &self.expand {
            v.push(&e.bn);
        }
        v.push(&self.depthwise.bn);
        v.push(&self.project.bn);
        v
    }
}

/// A ResNet block: basic (3x3, 3x3) or bottleneck (1x1, 3x3, 1x1), the stride on the 3x3
/// (torchvision's "ResNet v1.5"), ReLU after every conv but the last, which is added to the
/// input (through a 1x1 conv + BN where the shape changes) before the last ReLU.
#[derive(Module, Debug)]
pub struct ResBlock {
    /// The convolutions in order.
    pub convs: Vec<ConvBn>,
    /// The projection shortcut.
    pub downsample: Option<ConvBn>,
}

impl ResBlock {
    /// A fresh block: `width` inner channels, `bottleneck` or basic.
    pub fn new(l: &LayerShape, width: usize, bottleneck: bool, eps: f64, device: &Device) -> Self {
        let conv = |cin, cout, kernel, stride| {
            ConvBnConfig::new(cin, cout)
                .with_kernel(kernel)
                .with_stride(stride)
                .with_eps(eps)
                .with_padding(Padding::Symmetric)
                .init(device)
        };
        let convs = if bottleneck {
            vec![
                conv(l.cin, width, 1, 1),
                conv(width, width, 3, l.stride),
                conv(width, l.cout, 1, 1),
            ]
        } else {
            vec![conv(l.cin, width, 3, l.stride), conv(width, l.cout, 3, 1)]
        };
        ResBlock {
            convs,
            downsample: (l.stride != 1 || l.cin != l.cout)
                .then(|| conv(l.cin, l.cout, 1, l.stride)),
        }
    }

    /// Forward pass.
    pub fn forward(&self, x: Tensor<4>, mode: Mode) -> Tensor<4> {
        let last = self.convs.len() - 1;
        let mut h = x.clone();
        for (i, c) in self.convs.iter().enumerate() {
            h = c.forward(h, mode);
            if i < last {
                h = activate(h, Activation::Relu);
            }
        }
        let shortcut = match &self.downsample {
            Some(d) => d.forward(x, mode),
            None => x,
        };
        activate(h + shortcut, Activation::Relu)
    }
}
