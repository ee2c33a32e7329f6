//! A latency table: the measured time of every distinct layer a space's students are made of
//! (each op at each layer shape, each cell's adapter, the fixed stem and head), on one device at
//! one batch size. A student's predicted latency is the sum of its layers' (the students are a
//! chain of layers), so the search stays exact with latency as a budget. `dnarun latency`
//! measures a table (and how well the sums predict whole nets); this file names the layers and
//! adds them up.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Architecture, BlockSpace, OpSpec, Path, Space};

/// One measured layer: the median of its timings and their spread.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Timing {
    /// Median milliseconds of one forward pass.
    pub median_ms: f64,
    /// Interquartile range of the timings, in milliseconds.
    pub spread_ms: f64,
}

/// How well the table's sums predict whole students (`dnarun latency --validate N`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Validation {
    /// Students measured end to end.
    pub architectures: usize,
    /// Kendall's tau-b of the predicted against the measured latencies.
    pub kendall_tau: f64,
    /// Mean of |predicted - measured| / measured.
    pub mean_rel_error: f64,
    /// Largest of |predicted - measured| / measured.
    pub max_rel_error: f64,
    /// Per student: its block paths, predicted and measured milliseconds.
    pub nets: Vec<(String, f64, f64)>,
}

/// A latency table (`dnarun latency`'s JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatencyTable {
    /// The device measured: its kind (`cpu`, `cuda`, `wgpu`) and name.
    pub device: String,
    /// The device's name as the driver reports it (the CPU's model).
    pub device_name: String,
    /// dnarun's version.
    pub dnarun_version: String,
    /// Images per forward pass.
    pub batch: usize,
    /// CPU threads the backend used.
    pub threads: usize,
    /// Timed repetitions per entry (after warm-up).
    pub repeats: usize,
    /// Every entry by its key (see [`layer_key`], [`adapter_key`], [`stem_key`], [`head_key`]).
    pub entries: BTreeMap<String, Timing>,
    /// End-to-end check of the sums, when asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation: Option<Validation>,
}

/// The key of an op at a layer shape: what the layer's time depends on.
pub fn layer_key(op: &OpSpec, cin: usize, cout: usize, stride: usize, size: usize) -> String {
    format!(
        "mbconv k{} e{} se{} {} | {cin}->{cout} s{stride} @{size}",
        op.kernel,
        op.expansion,
        op.se,
        format!("{:?}", op.act).to_lowercase()
    )
}

/// The key of a cell's adapter (1x1 conv + BN).
pub fn adapter_key(cin: usize, cout: usize, size: usize) -> String {
    format!("adapter | {cin}->{cout} @{size}")
}

/// The key of the student's stem.
pub fn stem_key(space: &Space) -> String {
    format!(
        "stem k3 | {}->{} s{} @{}",
        space.image_channels, space.stem, space.stem_stride, space.image_size
    )
}

/// The key of the student's head (1x1 conv, pooling, classifier).
pub fn head_key(space: &Space) -> String {
    let (cin, size) = head_input(space);
    format!("head | {cin}->{} @{size} -> {}", space.head, space.classes)
}

/// Channels and size of the head's input.
pub fn head_input(space: &Space) -> (usize, usize) {
    space
        .blocks
        .last()
        .map(|b| {
            let c = &b.cells[0];
            (c.cout, c.size.div_ceil(c.stride))
        })
        .unwrap_or((space.stem, space.image_size.div_ceil(space.stem_stride)))
}

/// Every entry a block's paths are made of: per cell and layer, each op's key; and the cell's
/// adapter's. With the op, the layer's `(cin, cout, stride, size)`.
pub fn block_layers(block: &BlockSpace) -> Vec<(String, LayerPart<'_>)> {
    let mut out = Vec::new();
    for c in &block.cells {
        for l in 0..c.layers {
            let s = c.layer(l);
            for op in &block.ops {
                out.push((
                    layer_key(op, s.cin, s.cout, s.stride, s.size),
                    LayerPart::Op(op, s.cin, s.cout, s.stride, s.size),
                ));
            }
        }
        if c.adapter {
            let size = c.size.div_ceil(c.stride);
            out.push((
                adapter_key(c.hidden, c.cout, size),
                LayerPart::Adapter(c.hidden, c.cout, size),
            ));
        }
    }
    out
}

/// What an entry measures.
#[derive(Debug, Clone, Copy)]
pub enum LayerPart<'a> {
    /// An op at `(cin, cout, stride, size)`.
    Op(&'a OpSpec, usize, usize, usize, usize),
    /// An adapter `(cin, cout, size)`.
    Adapter(usize, usize, usize),
}

impl LatencyTable {
    fn get(&self, key: &str) -> Result<f64, String> {
        self.entries
            .get(key)
            .map(|t| t.median_ms)
            .ok_or_else(|| key.to_string())
    }

    /// A path's predicted milliseconds; `Err` names the first layer the table lacks.
    pub fn path_ms(&self, block: &BlockSpace, path: &Path) -> Result<f64, String> {
        let c = &block.cells[path.cell];
        let mut ms = 0.0;
        for (l, &o) in path.ops.iter().enumerate() {
            let s = c.layer(l);
            ms += self.get(&layer_key(&block.ops[o], s.cin, s.cout, s.stride, s.size))?;
        }
        if c.adapter {
            ms += self.get(&adapter_key(c.hidden, c.cout, c.size.div_ceil(c.stride)))?;
        }
        Ok(ms)
    }

    /// The stem's and head's milliseconds (every student pays them).
    pub fn fixed_ms(&self, space: &Space) -> Result<f64, String> {
        Ok(self.get(&stem_key(space))? + self.get(&head_key(space))?)
    }

    /// A student's predicted milliseconds.
    pub fn arch_ms(&self, space: &Space, arch: &Architecture) -> Result<f64, String> {
        let mut ms = self.fixed_ms(space)?;
        for (b, p) in space.blocks.iter().zip(&arch.paths) {
            ms += self.path_ms(b, p)?;
        }
        Ok(ms)
    }
}
