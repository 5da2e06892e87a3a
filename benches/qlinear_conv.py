#!/usr/bin/env python3
"""The load-time rewrite of src/model/int8_conv.rs, written into an ONNX file, for onnxruntime
(benches/catch-ort.sh, and benches/ort-arm.sh on the Arm cores): each per-tensor
ConvInteger -> Cast -> Mul(sx * sw) [-> Add(bias)] [-> Relu] -> QuantizeLinear chain that
onnxruntime's quantize_dynamic writes (and bundle precision int8-static keeps) becomes one
QLinearConv with the bias quantized to round(bias / (sx * sw)); a Relu goes only before a u8 zero
point of 0. A benchmark tool: the Rust rewrite is the one edgeclip runs, with its own tests.

    python3 benches/qlinear_conv.py IN.onnx OUT.onnx     # prints how many chains it fused
"""

import sys

import numpy as np
import onnx
from onnx import helper, numpy_helper


def fuse(model: onnx.ModelProto) -> int:
    g = model.graph
    init = {t.name: t for t in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    readers: dict[str, int] = {}
    for name in [i for n in g.node for i in n.input] + [o.name for o in g.output]:
        readers[name] = readers.get(name, 0) + 1

    def sole_reader(node, op):
        out = node.output[0]
        found = [c for c in g.node if out in c.input]
        if readers.get(out) == 1 and found and found[0].op_type == op:
            return found[0]
        return None

    def value(name):
        if name in init:
            return numpy_helper.to_array(init[name])
        reshape = producer[name]
        assert reshape.op_type == "Reshape", name
        data, shape = (numpy_helper.to_array(init[i]) for i in reshape.input)
        return data.reshape(shape)

    removed, fused = set(), {}
    for conv in g.node:
        if conv.op_type != "ConvInteger":
            continue
        quantize_in = producer.get(conv.input[0])
        cast = sole_reader(conv, "Cast")
        mul = cast and sole_reader(cast, "Mul")
        if quantize_in is None or quantize_in.op_type != "QuantizeLinear" or mul is None:
            continue
        sx = quantize_in.input[1]
        scale_mul = producer[[i for i in mul.input if i != cast.output[0]][0]]
        sw = [i for i in scale_mul.input if i != sx][0]
        if value(sx).size != 1 or value(sw).size != 1:
            continue
        chain, last, bias = [conv, cast, mul], mul, None
        add = sole_reader(mul, "Add")
        if add is not None:
            bias = value([i for i in add.input if i != mul.output[0]][0]).reshape(-1)
            chain.append(add)
            last = add
        relu = sole_reader(last, "Relu")
        if relu is not None:
            chain.append(relu)
            last = relu
        quantize_out = sole_reader(last, "QuantizeLinear")
        if quantize_out is None or (relu is not None and int(value(quantize_out.input[2])) != 0):
            continue
        chain.append(quantize_out)
        inputs = [conv.input[0], sx, conv.input[2], conv.input[1], sw, conv.input[3],
                  quantize_out.input[1], quantize_out.input[2]]
        if bias is not None:
            bias_scale = float(value(sx)) * float(value(sw))
            name = conv.name + ".bias_i32"
            g.initializer.append(numpy_helper.from_array(
                np.round(bias.astype(np.float64) / bias_scale).astype(np.int32), name))
            inputs.append(name)
        node = helper.make_node("QLinearConv", inputs, [quantize_out.output[0]],
                                name=conv.name + ".qlinear")
        node.attribute.extend(conv.attribute)
        removed.update(id(c) for c in chain)
        fused[id(conv)] = node
    nodes = [fused.get(id(n), n) for n in g.node if id(n) in fused or id(n) not in removed]
    g.ClearField("node")
    g.node.extend(nodes)
    return len(fused)


if __name__ == "__main__":
    m = onnx.load(sys.argv[1])
    count = fuse(m)
    onnx.save(m, sys.argv[2])
    print(count)
