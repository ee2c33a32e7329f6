//! The search space as data: candidate ops, cells, blocks, paths and architectures, and the cost
//! model (MACs, the DNA FLOPs convention, parameters). Pure Rust, no Burn.

pub mod latency;
pub mod predictor;
pub mod search;
mod vocab;

use std::fmt;

use serde::{Deserialize, Serialize};

pub use vocab::{Activation, FlopsConvention, Padding, PathSampling, RateLoss};

/// A candidate op: an MBConv layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpSpec {
    /// Its name in the recipe (used in path names).
    pub name: String,
    /// Depthwise kernel size.
    pub kernel: usize,
    /// Expansion ratio.
    pub expansion: usize,
    /// Squeeze-excitation ratio of the input channels; 0 for none.
    pub se: f64,
    /// Activation.
    pub act: Activation,
}

/// Whether a name can be an op's: letters, digits and `_` (a path is written
/// `c<cell>:<op>-<op>-...`, so `-` and `:` would make it ambiguous).
pub fn is_op_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl OpSpec {
    /// Squeeze-excitation channels for `cin` input channels (0 when SE is off).
    pub fn se_channels(&self, cin: usize) -> usize {
        if self.se > 0.0 {
            ((cin as f64 * self.se) as usize).max(1)
        } else {
            0
        }
    }
}

/// The shape of one layer position: channels in and out, stride, input spatial size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerShape {
    /// Input channels.
    pub cin: usize,
    /// Output channels.
    pub cout: usize,
    /// Stride of the depthwise convolution.
    pub stride: usize,
    /// Input height (= width).
    pub size: usize,
}

impl LayerShape {
    /// Output height (= width), TensorFlow "SAME" padding.
    pub fn out_size(&self) -> usize {
        self.size.div_ceil(self.stride)
    }
}

/// Cost of a part of a network.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cost {
    /// Multiply-accumulates of convolutions and linear layers.
    pub macs: u64,
    /// BatchNorm output elements.
    pub bn_elems: u64,
    /// Trainable parameters.
    pub params: u64,
}

impl Cost {
    /// FLOPs in a convention.
    pub fn flops(&self, convention: FlopsConvention) -> u64 {
        match convention {
            FlopsConvention::Macs => self.macs,
            FlopsConvention::Dna => self.macs + 2 * self.bn_elems,
        }
    }
}

impl std::ops::Add for Cost {
    type Output = Cost;
    fn add(self, o: Cost) -> Cost {
        Cost {
            macs: self.macs + o.macs,
            bn_elems: self.bn_elems + o.bn_elems,
            params: self.params + o.params,
        }
    }
}

impl std::ops::AddAssign for Cost {
    fn add_assign(&mut self, o: Cost) {
        *self = *self + o;
    }
}

impl std::iter::Sum for Cost {
    fn sum<I: Iterator<Item = Cost>>(iter: I) -> Cost {
        iter.fold(Cost::default(), |a, b| a + b)
    }
}

/// A convolution (no bias) followed by BatchNorm, "SAME" padding.
pub fn conv_bn_cost(
    cin: usize,
    cout: usize,
    kernel: usize,
    stride: usize,
    groups: usize,
    size: usize,
) -> Cost {
    let out = size.div_ceil(stride) as u64;
    let weights = (cout * (cin / groups) * kernel * kernel) as u64;
    Cost {
        macs: weights * out * out,
        bn_elems: cout as u64 * out * out,
        params: weights + 2 * cout as u64,
    }
}

/// A linear layer with bias.
pub fn linear_cost(cin: usize, cout: usize) -> Cost {
    Cost {
        macs: (cin * cout) as u64,
        bn_elems: 0,
        params: (cin * cout + cout) as u64,
    }
}

/// Cost of an MBConv layer: 1x1 expand + BN (skipped at expansion 1), depthwise + BN, SE (two
/// 1x1 convs with bias on the pooled vector), 1x1 project + BN.
pub fn mbconv_cost(op: &OpSpec, l: &LayerShape) -> Cost {
    let mid = l.cin * op.expansion;
    let mut c = Cost::default();
    if op.expansion != 1 {
        c += conv_bn_cost(l.cin, mid, 1, 1, 1, l.size);
    }
    c += conv_bn_cost(mid, mid, op.kernel, l.stride, mid, l.size);
    let se = op.se_channels(l.cin);
    if se > 0 {
        c += linear_cost(mid, se) + linear_cost(se, mid);
    }
    c += conv_bn_cost(mid, l.cout, 1, 1, 1, l.out_size());
    c
}

/// One cell of a block: `layers` layers, the first carrying the stride.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellSpec {
    /// Number of layers.
    pub layers: usize,
    /// Channels between layers.
    pub hidden: usize,
    /// Stride of the first layer.
    pub stride: usize,
    /// Input channels of the cell.
    pub cin: usize,
    /// Output channels of the cell (the target tap's width).
    pub cout: usize,
    /// Input spatial size.
    pub size: usize,
    /// A 1x1 conv + BN adapter maps the last layer's `hidden` channels to `cout`.
    pub adapter: bool,
}

impl CellSpec {
    /// The shape of layer `i`.
    pub fn layer(&self, i: usize) -> LayerShape {
        let last = i + 1 == self.layers;
        let cin = if i == 0 { self.cin } else { self.hidden };
        let cout = if last && !self.adapter {
            self.cout
        } else {
            self.hidden
        };
        let (stride, size) = if i == 0 {
            (self.stride, self.size)
        } else {
            (1, self.size.div_ceil(self.stride))
        };
        LayerShape {
            cin,
            cout,
            stride,
            size,
        }
    }

    /// Cost of the adapter (zero without one).
    pub fn adapter_cost(&self) -> Cost {
        if self.adapter {
            conv_bn_cost(
                self.hidden,
                self.cout,
                1,
                1,
                1,
                self.size.div_ceil(self.stride),
            )
        } else {
            Cost::default()
        }
    }
}

/// One block's part of the space.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlockSpace {
    /// Name of the target tap.
    pub target: String,
    /// The cells.
    pub cells: Vec<CellSpec>,
    /// The candidate ops of every layer.
    pub ops: Vec<OpSpec>,
}

impl BlockSpace {
    /// Number of paths: the sum over cells of K^L.
    pub fn num_paths(&self) -> f64 {
        self.cells
            .iter()
            .map(|c| (self.ops.len() as f64).powi(c.layers as i32))
            .sum()
    }

    /// Cost of a path.
    pub fn path_cost(&self, path: &Path) -> Cost {
        let cell = &self.cells[path.cell];
        path.ops
            .iter()
            .enumerate()
            .map(|(i, &o)| mbconv_cost(&self.ops[o], &cell.layer(i)))
            .sum::<Cost>()
            + cell.adapter_cost()
    }

    /// Every path, cells in order, ops enumerated depth-first (the rating order).
    pub fn paths(&self) -> Vec<Path> {
        let k = self.ops.len();
        let mut out = Vec::new();
        for (ci, cell) in self.cells.iter().enumerate() {
            // Plans refuse blocks with more paths than `plan::limits` allows, so this fits.
            let n = k
                .checked_pow(cell.layers as u32)
                .expect("a checked number of paths");
            for mut code in 0..n {
                let mut ops = vec![0; cell.layers];
                for slot in ops.iter_mut().rev() {
                    *slot = code % k;
                    code /= k;
                }
                out.push(Path { cell: ci, ops });
            }
        }
        out
    }

    /// The textual form of a path: `c1:k5e6-k3e3`.
    pub fn path_name(&self, path: &Path) -> String {
        let ops: Vec<&str> = path
            .ops
            .iter()
            .map(|&o| self.ops[o].name.as_str())
            .collect();
        format!("c{}:{}", path.cell, ops.join("-"))
    }

    /// Parses the textual form of a path (what [`BlockSpace::path_name`] writes; op names are
    /// [`is_op_name`]s, so `-` separates them unambiguously).
    pub fn parse_path(&self, text: &str) -> Result<Path, String> {
        let (cell, ops) = text
            .split_once(':')
            .ok_or_else(|| format!("`{text}` is not a path: write `c<cell>:<op>-<op>-...`"))?;
        let cell: usize = cell
            .strip_prefix('c')
            .and_then(|c| c.parse().ok())
            .filter(|&c| c < self.cells.len())
            .ok_or_else(|| {
                format!(
                    "`{text}`: `{cell}` is not a cell of this block (c0..c{})",
                    self.cells.len() - 1
                )
            })?;
        let ops = ops
            .split('-')
            .map(|name| {
                self.ops
                    .iter()
                    .position(|o| o.name == name)
                    .ok_or_else(|| format!("`{text}`: `{name}` is not an op of this block"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if ops.len() != self.cells[cell].layers {
            return Err(format!(
                "`{text}`: cell {cell} has {} layers, the path names {}",
                self.cells[cell].layers,
                ops.len()
            ));
        }
        Ok(Path { cell, ops })
    }
}

/// One block's choice: a cell and one op per layer.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Path {
    /// Index of the cell.
    pub cell: usize,
    /// Index (into the block's ops) of each layer's op.
    pub ops: Vec<usize>,
}

/// A student: one path per block.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Architecture {
    /// The path of each block.
    pub paths: Vec<Path>,
}

/// The whole space: fixed parts and blocks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Space {
    /// Image channels.
    pub image_channels: usize,
    /// Image size.
    pub image_size: usize,
    /// Student stem channels.
    pub stem: usize,
    /// Student stem stride.
    pub stem_stride: usize,
    /// Head channels.
    pub head: usize,
    /// Classes.
    pub classes: usize,
    /// The blocks.
    pub blocks: Vec<BlockSpace>,
}

impl Space {
    /// Cost of the stem, head and classifier (shared by every architecture).
    pub fn fixed_cost(&self) -> Cost {
        let stem = conv_bn_cost(
            self.image_channels,
            self.stem,
            3,
            self.stem_stride,
            1,
            self.image_size,
        );
        let last = self.blocks.last().map(|b| {
            let c = &b.cells[0];
            (c.cout, c.size.div_ceil(c.stride))
        });
        let (cin, size) = last.unwrap_or((self.stem, self.image_size.div_ceil(self.stem_stride)));
        stem + conv_bn_cost(cin, self.head, 1, 1, 1, size) + linear_cost(self.head, self.classes)
    }

    /// Cost of an architecture.
    pub fn cost(&self, arch: &Architecture) -> Cost {
        self.fixed_cost()
            + self
                .blocks
                .iter()
                .zip(&arch.paths)
                .map(|(b, p)| b.path_cost(p))
                .sum::<Cost>()
    }

    /// Number of architectures.
    pub fn size(&self) -> f64 {
        self.blocks.iter().map(BlockSpace::num_paths).product()
    }

    /// The textual form of an architecture: block paths joined by ` | `.
    pub fn arch_name(&self, arch: &Architecture) -> String {
        self.blocks
            .iter()
            .zip(&arch.paths)
            .map(|(b, p)| b.path_name(p))
            .collect::<Vec<_>>()
            .join(" | ")
    }

    /// The cheapest and the most expensive architecture, by a cost measure.
    pub fn extremes(&self, measure: impl Fn(&Cost) -> u64) -> (u64, u64) {
        let fixed = measure(&self.fixed_cost());
        let (mut lo, mut hi) = (fixed, fixed);
        for b in &self.blocks {
            let (mut blo, mut bhi) = (u64::MAX, 0);
            for cell in &b.cells {
                let (mut clo, mut chi) =
                    (measure(&cell.adapter_cost()), measure(&cell.adapter_cost()));
                for i in 0..cell.layers {
                    let l = cell.layer(i);
                    let costs = b.ops.iter().map(|o| measure(&mbconv_cost(o, &l)));
                    let (mn, mx) = costs.fold((u64::MAX, 0), |(a, z), c| (a.min(c), z.max(c)));
                    clo += mn;
                    chi += mx;
                }
                blo = blo.min(clo);
                bhi = bhi.max(chi);
            }
            lo += blo;
            hi += bhi;
        }
        (lo, hi)
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "c{}:{:?}", self.cell, self.ops)
    }
}
