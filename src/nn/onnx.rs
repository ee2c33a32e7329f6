//! A retrained student as an ONNX model (opset 13, BatchNorm folded into the convolutions), for
//! ONNX Runtime, TensorRT, OpenVINO and the converters. Written with `onnx-protobuf`'s generated
//! ONNX messages. Input `input`: `[N, C, S, S]` float, pixels scaled to [0, 1] and normalised
//! with the recipe's mean and std (both in the model's metadata); output `logits`: `[N, classes]`.

use burn::nn::conv::Conv2d;
use burn::nn::{Linear, PaddingConfig2d};
use onnx_protobuf::{
    AttributeProto, GraphProto, Message, ModelProto, NodeProto, OperatorSetIdProto,
    StringStringEntryProto, TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
    attribute_proto::AttributeType, tensor_proto::DataType, tensor_shape_proto,
};

use super::layers::{ConvBn, MbConv, Se};
use super::{Student, read_back};
use crate::space::Activation;

/// The opset the graph uses (Clip with min/max inputs, every op here unchanged since).
pub const OPSET: i64 = 13;

/// What the model's metadata says about its input and where it comes from.
#[derive(Debug, Clone)]
pub struct OnnxInfo {
    /// Side of the square input images.
    pub image_size: usize,
    /// Image channels.
    pub channels: usize,
    /// Normalisation mean per channel (of pixels scaled to [0, 1]).
    pub mean: Vec<f32>,
    /// Normalisation std per channel.
    pub std: Vec<f32>,
    /// Name of the net (`top1`).
    pub name: String,
    /// Its block paths.
    pub paths: Vec<String>,
}

/// The graph under construction.
struct Graph {
    nodes: Vec<NodeProto>,
    inits: Vec<TensorProto>,
    next: usize,
}

fn attr_ints(name: &str, v: &[i64]) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.into();
    a.type_ = AttributeType::INTS.into();
    a.ints = v.to_vec();
    a
}

fn attr_int(name: &str, v: i64) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.into();
    a.type_ = AttributeType::INT.into();
    a.i = v;
    a
}

fn value_info(name: &str, dims: &[Result<i64, &str>]) -> ValueInfoProto {
    let mut shape = TensorShapeProto::new();
    for d in dims {
        let mut dim = tensor_shape_proto::Dimension::new();
        dim.value = Some(match d {
            Ok(v) => tensor_shape_proto::dimension::Value::DimValue(*v),
            Err(p) => tensor_shape_proto::dimension::Value::DimParam((*p).into()),
        });
        shape.dim.push(dim);
    }
    let mut tensor = onnx_protobuf::type_proto::Tensor::new();
    tensor.elem_type = DataType::FLOAT as i32;
    tensor.shape = Some(shape).into();
    let mut ty = TypeProto::new();
    ty.value = Some(onnx_protobuf::type_proto::Value::TensorType(tensor));
    let mut v = ValueInfoProto::new();
    v.name = name.into();
    v.type_ = Some(ty).into();
    v
}

/// TensorFlow's "same" padding as Burn computes it: the extra pixel after.
fn same_pads(k: usize, stride: usize, size: usize) -> (usize, usize) {
    let out = size.div_ceil(stride);
    let total = ((out.max(1) - 1) * stride + k).saturating_sub(size);
    (total / 2, total - total / 2)
}

impl Graph {
    fn name(&mut self, what: &str) -> String {
        self.next += 1;
        format!("{what}_{}", self.next)
    }

    fn init(&mut self, what: &str, dims: &[usize], values: Vec<f32>) -> String {
        let name = self.name(what);
        let mut t = TensorProto::new();
        t.name = name.clone();
        t.dims = dims.iter().map(|&d| d as i64).collect();
        t.data_type = DataType::FLOAT as i32;
        t.raw_data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.inits.push(t);
        name
    }

    fn node(&mut self, op: &str, inputs: &[&str], attrs: Vec<AttributeProto>) -> String {
        let out = self.name(&op.to_lowercase());
        let mut n = NodeProto::new();
        n.op_type = op.into();
        n.name = out.clone();
        n.input = inputs.iter().map(|s| s.to_string()).collect();
        n.output = vec![out.clone()];
        n.attribute = attrs;
        self.nodes.push(n);
        out
    }

    /// A convolution with a bias, `pads` as (top, left, bottom, right).
    #[allow(clippy::too_many_arguments)]
    fn conv(
        &mut self,
        x: &str,
        weight: Vec<f32>,
        dims: [usize; 4],
        bias: Vec<f32>,
        stride: usize,
        groups: usize,
        pads: [usize; 4],
    ) -> String {
        let w = self.init("w", &dims, weight);
        let b = self.init("b", &[dims[0]], bias);
        self.node(
            "Conv",
            &[x, &w, &b],
            vec![
                attr_ints("kernel_shape", &[dims[2] as i64, dims[3] as i64]),
                attr_ints("strides", &[stride as i64, stride as i64]),
                attr_ints("pads", &pads.map(|p| p as i64)),
                attr_int("group", groups as i64),
            ],
        )
    }

    /// A convolution followed by BatchNorm (eval), the BatchNorm folded into its weights; returns
    /// the output and its side.
    fn conv_bn(&mut self, x: &str, cb: &ConvBn, size: usize) -> (String, usize) {
        let c: &Conv2d = &cb.conv;
        let [cout, cin_g, k, _] = c.weight.dims();
        let stride = c.stride[0];
        let (p0, p1) = match &c.padding {
            PaddingConfig2d::Same => same_pads(k, stride, size),
            PaddingConfig2d::Explicit(t, _, b, _) => (*t, *b),
            PaddingConfig2d::Valid => (0, 0),
        };
        let out = (size + p0 + p1 - k) / stride + 1;
        let bn = &cb.bn;
        let gamma = read_back(bn.gamma.val());
        let beta = read_back(bn.beta.val());
        let mean = read_back(bn.running_mean.value_sync());
        let var = read_back(bn.running_var.value_sync());
        let scale: Vec<f32> = gamma
            .iter()
            .zip(&var)
            .map(|(g, v)| g / (v + bn.eps as f32).sqrt())
            .collect();
        let per = cin_g * k * k;
        let weight: Vec<f32> = read_back(c.weight.val())
            .chunks(per)
            .zip(&scale)
            .flat_map(|(w, s)| w.iter().map(move |v| v * s))
            .collect();
        let bias: Vec<f32> = (0..cout).map(|o| beta[o] - mean[o] * scale[o]).collect();
        let y = self.conv(
            x,
            weight,
            [cout, cin_g, k, k],
            bias,
            stride,
            c.groups,
            [p0, p0, p1, p1],
        );
        (y, out)
    }

    /// A plain convolution with its own bias (squeeze-excitation's 1x1s).
    fn conv_plain(&mut self, x: &str, c: &Conv2d) -> String {
        let dims = c.weight.dims();
        let bias = c
            .bias
            .as_ref()
            .map(|b| read_back(b.val()))
            .unwrap_or_else(|| vec![0.0; dims[0]]);
        self.conv(
            x,
            read_back(c.weight.val()),
            dims,
            bias,
            1,
            c.groups,
            [0; 4],
        )
    }

    fn act(&mut self, x: &str, act: Activation) -> String {
        match act {
            Activation::Relu => self.node("Relu", &[x], vec![]),
            Activation::Relu6 => {
                let lo = self.init("zero", &[], vec![0.0]);
                let hi = self.init("six", &[], vec![6.0]);
                self.node("Clip", &[x, &lo, &hi], vec![])
            }
            Activation::Swish => {
                let s = self.node("Sigmoid", &[x], vec![]);
                self.node("Mul", &[x, &s], vec![])
            }
        }
    }

    fn se(&mut self, x: &str, se: &Se, act: Activation) -> String {
        let s = self.node("GlobalAveragePool", &[x], vec![]);
        let s = self.conv_plain(&s, &se.reduce);
        let s = self.act(&s, act);
        let s = self.conv_plain(&s, &se.expand);
        let s = self.node("Sigmoid", &[&s], vec![]);
        self.node("Mul", &[x, &s], vec![])
    }

    fn mbconv(&mut self, x: &str, m: &MbConv, size: usize) -> (String, usize) {
        let mut h = x.to_string();
        if let Some(e) = &m.expand {
            let (y, _) = self.conv_bn(&h, e, size);
            h = self.act(&y, m.act);
        }
        let (y, out) = self.conv_bn(&h, &m.depthwise, size);
        h = self.act(&y, m.act);
        if let Some(se) = &m.se {
            h = self.se(&h, se, m.act);
        }
        let (y, _) = self.conv_bn(&h, &m.project, out);
        h = y;
        if m.residual {
            h = self.node("Add", &[&h, x], vec![]);
        }
        (h, out)
    }

    fn linear(&mut self, x: &str, fc: &Linear) -> String {
        let [din, dout] = fc.weight.dims();
        let w = self.init("fc_w", &[din, dout], read_back(fc.weight.val()));
        let bias = fc
            .bias
            .as_ref()
            .map(|b| read_back(b.val()))
            .unwrap_or_else(|| vec![0.0; dout]);
        let b = self.init("fc_b", &[dout], bias);
        self.node("Gemm", &[x, &w, &b], vec![])
    }
}

/// The student as ONNX model bytes.
pub fn student_to_onnx(s: &Student, info: &OnnxInfo) -> Vec<u8> {
    let mut g = Graph {
        nodes: Vec::new(),
        inits: Vec::new(),
        next: 0,
    };
    let (h, mut size) = g.conv_bn("input", &s.stem, info.image_size);
    let mut h = g.act(&h, Activation::Swish);
    for c in &s.cells {
        for l in &c.layers {
            (h, size) = g.mbconv(&h, l, size);
        }
        if let Some(a) = &c.adapter {
            (h, size) = g.conv_bn(&h, a, size);
        }
    }
    let (y, _) = g.conv_bn(&h, &s.head, size);
    let y = g.act(&y, Activation::Swish);
    let pooled = g.node("GlobalAveragePool", &[&y], vec![]);
    let flat = g.node("Flatten", &[&pooled], vec![attr_int("axis", 1)]);
    g.linear(&flat, &s.fc);
    // The last node's output is the graph's: `logits`.
    if let Some(last) = g.nodes.last_mut() {
        last.output = vec!["logits".into()];
    }
    let classes = s.fc.weight.dims()[1] as i64;
    let mut graph = GraphProto::new();
    graph.name = format!("dnarun-{}", info.name);
    graph.node = g.nodes;
    graph.initializer = g.inits;
    let side = info.image_size as i64;
    graph.input = vec![value_info(
        "input",
        &[Err("batch"), Ok(info.channels as i64), Ok(side), Ok(side)],
    )];
    graph.output = vec![value_info("logits", &[Err("batch"), Ok(classes)])];
    let mut model = ModelProto::new();
    model.ir_version = 8;
    model.producer_name = "dnarun".into();
    model.producer_version = env!("CARGO_PKG_VERSION").into();
    let mut opset = OperatorSetIdProto::new();
    opset.version = OPSET;
    model.opset_import = vec![opset];
    let list = |v: &[f32]| {
        v.iter()
            .map(|x| x.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let meta = [
        (
            "input",
            format!(
                "input: [batch, {}, {side}, {side}] float32, NCHW",
                info.channels
            ),
        ),
        (
            "normalization",
            format!(
                "input = (pixel / 255 - mean) / std per channel, mean [{}], std [{}]",
                list(&info.mean),
                list(&info.std)
            ),
        ),
        ("mean", list(&info.mean)),
        ("std", list(&info.std)),
        ("output", format!("logits: [batch, {classes}] float32")),
        ("architecture", info.paths.join(" | ")),
        ("name", info.name.clone()),
    ];
    model.metadata_props = meta
        .into_iter()
        .map(|(k, v)| {
            let mut e = StringStringEntryProto::new();
            e.key = k.into();
            e.value = v;
            e
        })
        .collect();
    model.doc_string = format!(
        "A net found by dnarun (block-wise distillation NAS): {}",
        info.paths.join(" | ")
    );
    model.graph = Some(graph).into();
    model
        .write_to_bytes()
        .expect("an ONNX model in memory serialises")
}
