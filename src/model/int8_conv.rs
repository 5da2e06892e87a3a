//! A load-time rewrite of onnxruntime's integer convolutions into `QLinearConv`, the form whose
//! requantization tract fuses into its matrix product.
//!
//! onnxruntime's `quantize_dynamic` writes each convolution as a chain, and the bundle precision
//! `int8-static` keeps it (its `DynamicQuantizeLinear` replaced by a calibrated `QuantizeLinear`):
//!
//! ```text
//! QuantizeLinear(x; sx, zx) -> ConvInteger(w; zw) -> Cast(float) -> Mul(sx * sw) -> Add(bias)
//!     [-> Relu] -> QuantizeLinear(sy, zy) -> the next convolution
//! ```
//!
//! tract 0.23.9 runs that as written: the integer product, then four element-wise passes over its
//! float output (the `OptBinChain(Mul+Add+Max)` and `QuantizeLinearU8` of the profiles in
//! `benches/README.md`, half of the demo's int8 tower on x86). The same arithmetic written as one
//! `QLinearConv(x_q; sx, zx, w; sw, zw, sy, zy, bias_q)` goes through tract's quantized
//! convolution (tract-core `src/ops/cnn/conv/conv.rs`, `wire_as_quant_im2col`), whose
//! requantization (fixed-point scale, zero point, clamp) the codegen fuses into the matrix
//! product kernel, which then stores `u8` directly.
//!
//! The rewrite is exact up to rounding: the bias becomes `round(bias / (sx * sw))` in the `i32`
//! accumulator (as onnxruntime's own `QLinearConv` quantizer writes it) and tract scales by a
//! fixed-point multiplier, so an output code may differ by one from the float chain's. A `Relu`
//! before a `QuantizeLinear` with the zero point 0 of `u8` is the clamp at the code 0 that the
//! quantization does anyway, so it goes too. The `int8-static` test of `tests/runtime.rs` checks
//! the result against onnxruntime on the file as shipped.
//!
//! Only a chain that matches exactly is rewritten: a 2-D convolution, scalar scales and zero
//! points (per-tensor quantization, `quantize_dynamic`'s default), the weight scale read from
//! the `Mul(sx, sw)` that onnxruntime writes, a bias that lies along the channel axis, and no
//! intermediate result read by anything else. Anything else is left as it is. CPU plans only:
//! tract-cuda gets the file as written. [`FUSE_ENV`]`=off` turns the rewrite off, to measure
//! before and after with one binary; on a tract upgrade, measure both ways
//! (`benches/catch-ort.sh`): the rewrite goes when tract fuses the float chain itself.

use std::collections::{HashMap, HashSet};

use tract_onnx::pb::{GraphProto, NodeProto, TensorProto, tensor_proto::DataType};

/// Set to `off` to load integer convolutions as written (no rewrite).
pub const FUSE_ENV: &str = "EDGECLIP_FUSE_INT8_CONV";

/// Whether [`FUSE_ENV`] leaves the rewrite on (anything but `off`).
pub(super) fn enabled() -> bool {
    std::env::var(FUSE_ENV).map_or(true, |v| v != "off")
}

/// Rewrites every matching `ConvInteger` chain of `graph` (see the module documentation) into
/// one `QLinearConv`. Returns how many.
pub(super) fn fuse_integer_convs(graph: &mut GraphProto) -> usize {
    let found = {
        let view = GraphView::new(graph);
        graph
            .node
            .iter()
            .enumerate()
            .filter_map(|(ix, node)| view.match_chain(ix, node))
            .collect::<Vec<_>>()
    };
    let mut drop: HashSet<usize> = HashSet::new();
    let mut replace: HashMap<usize, NodeProto> = HashMap::new();
    for chain in &found {
        drop.extend(&chain.removed);
        graph.initializer.push(chain.bias.clone());
        replace.insert(chain.conv, chain.node.clone());
    }
    let nodes = std::mem::take(&mut graph.node);
    graph.node = nodes
        .into_iter()
        .enumerate()
        .filter_map(|(ix, node)| match replace.remove(&ix) {
            Some(fused) => Some(fused),
            None if drop.contains(&ix) => None,
            None => Some(node),
        })
        .collect();
    found.len()
}

/// One chain to rewrite: the `QLinearConv` that replaces it (at the `ConvInteger`'s place), its
/// integer bias, and the other nodes it removes.
struct Fused {
    conv: usize,
    node: NodeProto,
    bias: TensorProto,
    removed: Vec<usize>,
}

/// The lookups the matcher needs: who produces each name, how many read it, the initializers.
struct GraphView<'a> {
    nodes: &'a [NodeProto],
    producer: HashMap<&'a str, usize>,
    readers: HashMap<&'a str, usize>,
    initializers: HashMap<&'a str, &'a TensorProto>,
}

impl<'a> GraphView<'a> {
    fn new(graph: &'a GraphProto) -> GraphView<'a> {
        let mut readers: HashMap<&str, usize> = HashMap::new();
        count_readers(graph, &mut readers);
        // A graph output counts as a reader: it must stay.
        for output in &graph.output {
            *readers.entry(output.name.as_str()).or_default() += 1;
        }
        GraphView {
            nodes: &graph.node,
            producer: graph
                .node
                .iter()
                .enumerate()
                .flat_map(|(ix, n)| n.output.iter().map(move |o| (o.as_str(), ix)))
                .collect(),
            readers,
            initializers: graph
                .initializer
                .iter()
                .map(|t| (t.name.as_str(), t))
                .collect(),
        }
    }

    /// The node that alone reads `node`'s one output, if it is of type `op` in the default
    /// domain.
    fn sole_reader(&self, node: &NodeProto, op: &str) -> Option<usize> {
        let [out] = node.output.as_slice() else {
            return None;
        };
        if self.readers.get(out.as_str()) != Some(&1) {
            return None;
        }
        self.nodes
            .iter()
            .position(|n| n.input.iter().any(|i| i == out))
            .filter(|&ix| is_op(&self.nodes[ix], op))
    }

    /// The node producing `name`, if it is of type `op`.
    fn produced_by(&self, name: &str, op: &str) -> Option<usize> {
        self.producer
            .get(name)
            .copied()
            .filter(|&ix| is_op(&self.nodes[ix], op))
    }

    /// The one value of a scalar (or one-element) initializer, as `f64`.
    fn scalar(&self, name: &str, dt: DataType) -> Option<f64> {
        match self.values(name, dt)?.as_slice() {
            [v] => Some(*v),
            _ => None,
        }
    }

    /// The type and value of the scalar `u8` or `i8` initializer `name` (a zero point).
    fn zero_point(&self, name: &str) -> Option<(DataType, f64)> {
        let dt = [DataType::Uint8, DataType::Int8]
            .into_iter()
            .find(|&dt| self.initializers.get(name).map(|t| t.data_type) == Some(dt as i32))?;
        Some((dt, self.scalar(name, dt)?))
    }

    /// The values of an initializer of type `dt`, as `f64`.
    fn values(&self, name: &str, dt: DataType) -> Option<Vec<f64>> {
        self.initializers
            .get(name)
            .and_then(|t| tensor_values(t, dt))
    }

    /// Matches the chain that starts at the `ConvInteger` `node` (index `ix`).
    fn match_chain(&self, ix: usize, node: &NodeProto) -> Option<Fused> {
        if !is_op(node, "ConvInteger") {
            return None;
        }
        let [x_q, w, x_zp, w_zp] = node.input.as_slice() else {
            return None;
        };
        // The input quantized in the graph, with the zero point the convolution subtracts.
        let quantize_in = &self.nodes[self.produced_by(x_q, "QuantizeLinear")?];
        let [_, sx, q_zp] = quantize_in.input.as_slice() else {
            return None;
        };
        let sx_value = self.scalar(sx, DataType::Float)?;
        if self.zero_point(x_zp)? != self.zero_point(q_zp)? {
            return None;
        }
        // Per-tensor weights of a 2-D convolution: output [N, C, H, W].
        self.zero_point(w_zp)?;
        let weights = self.initializers.get(w.as_str())?;
        if weights.dims.len() != 4 {
            return None;
        }
        let out_channels = usize::try_from(weights.dims[0]).ok()?;

        let cast = self.sole_reader(node, "Cast")?;
        if int_attribute(&self.nodes[cast], "to") != Some(DataType::Float as i64) {
            return None;
        }
        let mul = self.sole_reader(&self.nodes[cast], "Mul")?;
        let scale = other_input(&self.nodes[mul], &self.nodes[cast].output[0])?;
        // onnxruntime writes the combined scale as Mul(sx, sw): sw is the weight scale.
        let scale_node = self.produced_by(scale, "Mul")?;
        let sw = other_input(&self.nodes[scale_node], sx)?;
        let sw_value = self.scalar(sw, DataType::Float)?;

        let mut removed = vec![cast, mul];
        if self.readers.get(scale.as_str()) == Some(&1) {
            removed.push(scale_node);
        }
        let mut last = mul;
        let mut bias = vec![0.0; out_channels];
        if let Some(add) = self.sole_reader(&self.nodes[mul], "Add") {
            let b = other_input(&self.nodes[add], &self.nodes[mul].output[0])?;
            bias = self.channel_bias(b, out_channels, &mut removed)?;
            removed.push(add);
            last = add;
        }
        let relu = self.sole_reader(&self.nodes[last], "Relu");
        if let Some(relu) = relu {
            removed.push(relu);
            last = relu;
        }
        let quantize_out = self.sole_reader(&self.nodes[last], "QuantizeLinear")?;
        let q = &self.nodes[quantize_out];
        let [_, sy, zy] = q.input.as_slice() else {
            return None;
        };
        self.scalar(sy, DataType::Float)?;
        let zy_value = self.zero_point(zy)?;
        // Relu is the quantization's own clamp only at u8's code 0.
        if relu.is_some() && zy_value != (DataType::Uint8, 0.0) {
            return None;
        }
        removed.push(quantize_out);

        let bias_scale = sx_value * sw_value;
        if !(bias_scale.is_finite() && bias_scale > 0.0) {
            return None;
        }
        let mut bias_q = Vec::with_capacity(out_channels);
        for b in bias {
            let q = (b / bias_scale).round_ties_even();
            if !(q >= i32::MIN as f64 && q <= i32::MAX as f64) {
                return None;
            }
            bias_q.push(q as i32);
        }
        let bias_name = format!("{}.edgeclip_bias_i32", node.name);
        if self.initializers.contains_key(bias_name.as_str())
            || self.producer.contains_key(bias_name.as_str())
        {
            return None;
        }
        let fused = NodeProto {
            name: format!("{}.edgeclip_qlinear", node.name),
            op_type: "QLinearConv".into(),
            input: vec![
                x_q.clone(),
                sx.clone(),
                x_zp.clone(),
                w.clone(),
                sw.clone(),
                w_zp.clone(),
                sy.clone(),
                zy.clone(),
                bias_name.clone(),
            ],
            output: q.output.clone(),
            attribute: node.attribute.clone(),
            ..NodeProto::default()
        };
        let bias = TensorProto {
            name: bias_name,
            dims: vec![out_channels as i64],
            data_type: DataType::Int32 as i32,
            int32_data: bias_q,
            ..TensorProto::default()
        };
        Some(Fused {
            conv: ix,
            node: fused,
            bias,
            removed,
        })
    }

    /// The per-channel values of the bias `name` that an `Add` applies to an `[N, C, H, W]`
    /// output: an initializer, or a `Reshape` of one (pushed to `removed` when nothing else reads
    /// it), of shape `[C]`-like broadcast along axis 1 (`[1, C, 1, 1]` or `[C, 1, 1]`).
    fn channel_bias(
        &self,
        name: &str,
        channels: usize,
        removed: &mut Vec<usize>,
    ) -> Option<Vec<f64>> {
        let (values, dims) = if let Some(t) = self.initializers.get(name) {
            (tensor_values(t, DataType::Float)?, t.dims.clone())
        } else {
            let reshape = self.produced_by(name, "Reshape")?;
            let [data, shape] = self.nodes[reshape].input.as_slice() else {
                return None;
            };
            let values = self.values(data, DataType::Float)?;
            let mut dims: Vec<i64> = self
                .values(shape, DataType::Int64)?
                .iter()
                .map(|&d| d as i64)
                .collect();
            // One -1 takes what the others leave (onnxruntime writes [1, -1, 1, 1]); a 0
            // (copy the input's dimension) is not followed.
            if let Some(ix) = dims.iter().position(|&d| d == -1) {
                let rest: i64 = dims.iter().filter(|&&d| d != -1).product();
                if rest <= 0 || values.len() as i64 % rest != 0 {
                    return None;
                }
                dims[ix] = values.len() as i64 / rest;
            }
            if self.readers.get(name) == Some(&1) {
                removed.push(reshape);
            }
            (values, dims)
        };
        // Right-aligned against [N, C, H, W]: all ones but C, at axis 1.
        let along_c = dims.len() <= 4
            && dims
                .iter()
                .rev()
                .enumerate()
                .all(|(from_right, &d)| d == 1 || (from_right == 2 && d as usize == channels));
        (along_c && values.len() == channels).then_some(values)
    }
}

/// Counts every name read by a node of `graph` or of a graph inside a node's attributes (an
/// If, Loop or Scan body may read a name of the graph around it).
fn count_readers<'a>(graph: &'a GraphProto, readers: &mut HashMap<&'a str, usize>) {
    for node in &graph.node {
        for name in &node.input {
            *readers.entry(name.as_str()).or_default() += 1;
        }
        for attribute in &node.attribute {
            for sub in attribute.g.iter().chain(&attribute.graphs) {
                count_readers(sub, readers);
            }
        }
    }
}

/// Whether `node` is the standard operator `op`.
fn is_op(node: &NodeProto, op: &str) -> bool {
    node.op_type == op && (node.domain.is_empty() || node.domain == "ai.onnx")
}

/// The input of a two-input `node` that is not `known`.
fn other_input<'n>(node: &'n NodeProto, known: &str) -> Option<&'n String> {
    match node.input.as_slice() {
        [a, b] if a == known => Some(b),
        [a, b] if b == known => Some(a),
        _ => None,
    }
}

/// The integer attribute `name` of `node`.
fn int_attribute(node: &NodeProto, name: &str) -> Option<i64> {
    node.attribute.iter().find(|a| a.name == name).map(|a| a.i)
}

/// The values of `t` as `f64` when it is of type `dt` and stored in the file (raw bytes or the
/// typed field); `None` otherwise (another type, external data, a length that does not match
/// its dims).
fn tensor_values(t: &TensorProto, dt: DataType) -> Option<Vec<f64>> {
    if t.data_type != dt as i32 || t.data_location == Some(1) {
        return None;
    }
    let count = t
        .dims
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(usize::try_from(d).ok()?))?;
    let raw = &t.raw_data;
    let values: Vec<f64> = match dt {
        DataType::Float if !raw.is_empty() => raw
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64)
            .collect(),
        DataType::Float => t.float_data.iter().map(|&v| v as f64).collect(),
        DataType::Uint8 if !raw.is_empty() => raw.iter().map(|&v| v as f64).collect(),
        DataType::Int8 if !raw.is_empty() => raw.iter().map(|&v| v as i8 as f64).collect(),
        DataType::Uint8 | DataType::Int8 => t.int32_data.iter().map(|&v| v as f64).collect(),
        DataType::Int64 if !raw.is_empty() => raw
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")) as f64)
            .collect(),
        DataType::Int64 => t.int64_data.iter().map(|&v| v as f64).collect(),
        _ => return None,
    };
    (values.len() == count).then_some(values)
}

#[cfg(test)]
mod tests;
