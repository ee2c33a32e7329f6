//! Sizes that validate key by key but could not run: more paths in a block than rating can
//! enumerate, or a rating stage whose held-out features do not fit in memory. Checked at
//! `validate`, with the numbers in the message.

use super::problems::Problems;
use super::{DataSpec, RateSpec, TapSpec};
use crate::space::Space;

/// The most paths one block may have: rating enumerates every one (the paper's largest block
/// has 16,848).
pub const MAX_PATHS_PER_BLOCK: f64 = 2e6;

pub(super) fn check(
    space: &Space,
    taps: &[TapSpec],
    data: &DataSpec,
    rate: &RateSpec,
    p: &mut Problems,
) {
    for (i, b) in space.blocks.iter().enumerate() {
        let n = b.num_paths();
        if n > MAX_PATHS_PER_BLOCK {
            p.err(
                &format!("/blocks/{i}/cells"),
                format!(
                    "block {i} has {n:.3e} paths ({} ops, cells of {} layers), more than the {MAX_PATHS_PER_BLOCK:.0e} that rating can enumerate",
                    b.ops.len(),
                    b.cells.iter().map(|c| c.layers.to_string()).collect::<Vec<_>>().join(", ")
                ),
                Some("use fewer layers per cell or fewer ops in this block (`blocks[].ops`)".into()),
            );
        }
    }
    // Rating keeps the held-out images and every tap's features for them in memory.
    let rated = (data.rate_per_class * data.classes).min(rate.max_images.unwrap_or(usize::MAX))
        + rate.calibration_batches * rate.batch_size;
    let per_image = data.channels * data.image_size * data.image_size
        + taps
            .iter()
            .map(|t| t.shape.iter().product::<usize>())
            .sum::<usize>();
    let bytes = rated as f64 * per_image as f64 * 4.0;
    if let Some(total) = memory_total()
        && bytes > total as f64
    {
        p.err(
            "/data/rate_per_class",
            format!(
                "rating would hold {rated} images' inputs and teacher features in memory: {:.1} GB, more than this machine's {:.1} GB",
                bytes / 1e9,
                total as f64 / 1e9
            ),
            Some("lower `data.rate_per_class`, or cap the images rated with `rate.max_images`".into()),
        );
    }
}

/// The machine's memory in bytes (Linux `/proc/meminfo`).
fn memory_total() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
}
