//! The blocks resolved into the search space: each block's ops, its cells with their input and
//! output shapes and the stride the taps imply, and its distillation learning rate.

use super::TapSpec;
use super::problems::Problems;
use crate::recipe::{Block, Recipe, did_you_mean};
use crate::space::{BlockSpace, CellSpec, OpSpec, Space};

/// The space and each block's learning rate.
pub(super) fn resolve(r: &Recipe, taps: &[TapSpec], p: &mut Problems) -> (Space, Vec<f64>) {
    check_ops(r, p);
    if r.blocks.is_empty() {
        p.err(
            "/blocks",
            "`blocks` is empty: declare at least one block".into(),
            None,
        );
    }
    if r.blocks.len() != taps.len() && !taps.is_empty() && !r.blocks.is_empty() {
        p.err(
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
    let side = r.data.image_size.div_ceil(r.student.stem_stride);
    let mut prev_shape = [r.student.stem, side, side];
    let mut prev_name = "image".to_string();
    for (bi, b) in r.blocks.iter().enumerate() {
        let tap = check_target(bi, b, taps, &prev_name, p);
        let ops = block_ops(r, bi, b, p);
        // A block that names a tap out of order has one error, that one: its shapes (and the next
        // block's input) are the tap it should target.
        let in_order = tap == Some(bi);
        let target_shape = match tap {
            Some(t) => taps.get(bi).unwrap_or(&taps[t]).shape,
            None => prev_shape,
        };
        let stride = derive_stride(bi, b, prev_shape, target_shape, in_order, p);
        if b.cells.is_empty() {
            p.err(
                &format!("/blocks/{bi}/cells"),
                format!("`blocks[{bi}].cells` is empty: declare at least one cell"),
                None,
            );
        }
        let cells = b
            .cells
            .iter()
            .map(|c| CellSpec {
                layers: c.layers,
                hidden: c.hidden,
                stride: stride.unwrap_or(1),
                cin: prev_shape[0],
                cout: target_shape[0],
                size: prev_shape[1],
                adapter: b.adapter,
            })
            .collect();
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
    (space, block_lr)
}

fn check_ops(r: &Recipe, p: &mut Problems) {
    if r.ops.is_empty() {
        p.err(
            "/ops",
            "`ops` is empty: declare at least one candidate op".into(),
            None,
        );
    }
    for (name, op) in &r.ops {
        if !crate::space::is_op_name(name) {
            let ptr = format!("/ops/{}", name.replace('~', "~0").replace('/', "~1"));
            p.err_at_key(
                &ptr,
                format!(
                    "the op name `{name}` cannot be written in a path (`c1:{name}-...`): op names are letters, digits and `_`"
                ),
                Some(format!(
                    "rename it, e.g. `{}`",
                    name.chars()
                        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                        .collect::<String>()
                )),
            );
        }
        if op.kernel % 2 == 0 {
            p.err(
                &format!("/ops/{name}/kernel"),
                format!("`ops.{name}.kernel` must be odd, found {}", op.kernel),
                None,
            );
        }
    }
}

/// The index of the tap block `bi` learns, checking it and the block's `input`.
fn check_target(
    bi: usize,
    b: &Block,
    taps: &[TapSpec],
    prev_name: &str,
    p: &mut Problems,
) -> Option<usize> {
    let at = format!("/blocks/{bi}");
    let tap = taps.iter().position(|t| t.name == b.target);
    match tap {
        None => {
            let names: Vec<&str> = taps.iter().map(|t| t.name.as_str()).collect();
            p.err(
                &format!("{at}/target"),
                format!(
                    "`blocks[{bi}].target` names the tap `{}`, which `teacher.taps` does not declare",
                    b.target
                ),
                did_you_mean(&b.target, names.iter().copied())
                    .map(|s| format!("did you mean `{s}`?"))
                    .or(Some(format!("the taps are: {}", names.join(", ")))),
            );
        }
        Some(ti) if ti != bi && bi < taps.len() => p.err(
            &format!("{at}/target"),
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
        && input != prev_name
    {
        p.err(
            &format!("{at}/input"),
            format!(
                "`blocks[{bi}].input` is `{input}`, but block {bi} reads `{prev_name}` (the previous block's target)"
            ),
            Some(format!("remove `input` or write `input = \"{prev_name}\"`")),
        );
    }
    tap
}

/// The block's candidate ops: its own list, or every op of the recipe.
fn block_ops(r: &Recipe, bi: usize, b: &Block, p: &mut Problems) -> Vec<OpSpec> {
    let Some(list) = &b.ops else {
        return r.ops.iter().map(|(n, o)| op_spec(n, o)).collect();
    };
    if list.is_empty() {
        p.err(
            &format!("/blocks/{bi}/ops"),
            format!("`blocks[{bi}].ops` is empty: list at least one op"),
            None,
        );
    }
    let op_names: Vec<&str> = r.ops.keys().map(String::as_str).collect();
    let mut ops = Vec::new();
    for (oi, n) in list.iter().enumerate() {
        match r.ops.get(n) {
            Some(o) => ops.push(op_spec(n, o)),
            None => p.err(
                &format!("/blocks/{bi}/ops/{oi}"),
                format!(
                    "`blocks[{bi}].ops[{oi}]` names the op `{n}`, which `ops` does not declare"
                ),
                did_you_mean(n, op_names.iter().copied())
                    .map(|s| format!("did you mean `{s}`?"))
                    .or(Some(format!("the ops are: {}", op_names.join(", ")))),
            ),
        }
    }
    ops
}

/// The stride the shapes imply (1 or 2), checking each cell's declared stride against it.
fn derive_stride(
    bi: usize,
    b: &Block,
    prev: [usize; 3],
    target: [usize; 3],
    has_tap: bool,
    p: &mut Problems,
) -> Option<usize> {
    let derived = if prev[1].div_ceil(2) == target[1] && prev[1] != target[1] {
        Some(2)
    } else if prev[1] == target[1] {
        Some(1)
    } else {
        None
    };
    if derived.is_none() && has_tap {
        p.err(
            &format!("/blocks/{bi}/target"),
            format!(
                "block {bi} maps {}x{} to {}x{} (`{}`), but a cell can only keep the spatial size or halve it",
                prev[1], prev[2], target[1], target[2], b.target
            ),
            Some("add a tap in between, or change `student.stem_stride`".into()),
        );
    }
    for (ci, c) in b.cells.iter().enumerate() {
        if let (Some(s), Some(d)) = (c.stride, derived)
            && s != d
        {
            p.err(
                &format!("/blocks/{bi}/cells/{ci}/stride"),
                format!(
                    "`blocks[{bi}].cells[{ci}].stride` is {s}, but the taps need stride {d} ({}x{} -> {}x{})",
                    prev[1], prev[2], target[1], target[2]
                ),
                Some("remove `stride`: it is derived from the tap shapes".into()),
            );
        }
    }
    derived
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
