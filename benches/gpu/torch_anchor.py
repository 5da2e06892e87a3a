#!/usr/bin/env python3
"""PyTorch on the same GPU as edgeclip's CUDA path: the anchor for the GPU table in
benches/README.md. Run by benches/gpu/run.sh; prints one JSON object per line.

    PYTHONPATH=models/tools python3 benches/gpu/torch_anchor.py [--iters 200]

Times batch-1 forward passes, host to host like `edgeclip bench` (the input is copied to the GPU
and the embedding back in every timed run), after warm-up, of
- the demo student's image tower, rebuilt in PyTorch from models/demo/visual.fp32.onnx (seven
  Conv + ReLU, a global mean, a Gemm) and checked against onnxruntime on the CPU;
- the full-size random-weight CLIP ViT-B/32 image tower of
  models/tools/edgeclip_tools/make_vitb32.py (same seed),
in fp32 and in fp16 (weights and input `.half()`), eager mode, cuDNN benchmark mode on.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper

REPO = Path(__file__).resolve().parents[2]


class Mean(torch.nn.Module):
    def __init__(self, axes, keepdims):
        super().__init__()
        self.axes, self.keepdims = tuple(axes), bool(keepdims)

    def forward(self, x):
        return x.mean(dim=self.axes, keepdim=self.keepdims)


def student_from_onnx(path: Path) -> torch.nn.Module:
    """The demo student as a torch.nn.Sequential, weights from its ONNX initializers."""
    model = onnx.load(str(path))
    init = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in model.graph.initializer}
    layers = []
    for node in model.graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "Conv":
            w = init[node.input[1]]
            pads = attrs.get("pads", [0, 0, 0, 0])
            assert pads[:2] == pads[2:], f"asymmetric padding {pads}"
            conv = torch.nn.Conv2d(w.shape[1] * attrs.get("group", 1), w.shape[0], tuple(w.shape[2:]),
                                   stride=tuple(attrs.get("strides", [1, 1])), padding=tuple(pads[:2]),
                                   dilation=tuple(attrs.get("dilations", [1, 1])),
                                   groups=attrs.get("group", 1), bias=len(node.input) > 2)
            conv.weight.data.copy_(w)
            if conv.bias is not None:
                conv.bias.data.copy_(init[node.input[2]])
            layers.append(conv)
        elif node.op_type == "Relu":
            layers.append(torch.nn.ReLU())
        elif node.op_type == "ReduceMean":
            axes = attrs.get("axes") or numpy_helper.to_array(
                next(t for t in model.graph.initializer if t.name == node.input[1])).tolist()
            layers.append(Mean(axes, attrs.get("keepdims", 1)))
        elif node.op_type == "Gemm":
            w = init[node.input[1]]
            w = w if attrs.get("transB", 0) else w.T
            lin = torch.nn.Linear(w.shape[1], w.shape[0], bias=len(node.input) > 2)
            lin.weight.data.copy_(w * attrs.get("alpha", 1.0))
            if lin.bias is not None:
                lin.bias.data.copy_(init[node.input[2]] * attrs.get("beta", 1.0))
            layers.append(lin)
        else:
            raise ValueError(f"op {node.op_type} is not in the demo student")
    return torch.nn.Sequential(*layers).eval()


def check_student(module, path: Path, size: int):
    import onnxruntime as ort
    x = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)
    (ref,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"pixel_values": x})
    with torch.no_grad():
        got = module(torch.from_numpy(x)).numpy()
    cos = float((got * ref).sum() / (np.linalg.norm(got) * np.linalg.norm(ref)))
    assert cos > 0.9999, f"the rebuilt student disagrees with onnxruntime: cosine {cos}"


def time_host_to_host(module, size: int, dtype, iters: int) -> dict:
    x = torch.from_numpy(np.random.default_rng(1).uniform(-2, 2, (1, 3, size, size)).astype(np.float32))
    with torch.inference_mode():
        for _ in range(20):
            module(x.cuda().to(dtype)).float().cpu()
        torch.cuda.synchronize()
        ms = []
        for _ in range(iters):
            t = time.perf_counter()
            module(x.cuda().to(dtype)).float().cpu()
            ms.append((time.perf_counter() - t) * 1e3)
    ms.sort()
    return {"mean_ms": float(np.mean(ms)), "p50_ms": ms[len(ms) // 2],
            "p95_ms": ms[int(round((len(ms) - 1) * 0.95))], "min_ms": ms[0], "iters": iters}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--skip-vit", action="store_true")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("PyTorch sees no CUDA GPU")
    torch.backends.cudnn.benchmark = True
    device = torch.cuda.get_device_name(0)
    common = {"torch": torch.__version__, "gpu": device}

    demo = REPO / "models/demo/visual.fp32.onnx"
    student = student_from_onnx(demo)
    check_student(student, demo, 96)
    models = [("demo-student", student, 96)]
    if not args.skip_vit:
        from edgeclip_tools.make_vitb32 import SEED, build_vitb32
        models.append(("vit-b32", build_vitb32(SEED), 224))
    for name, module, size in models:
        for label, dtype in (("fp32", torch.float32), ("fp16", torch.float16)):
            m = module.to("cuda", dtype)
            result = time_host_to_host(m, size, dtype, args.iters)
            print(json.dumps({"runner": "pytorch", "model": name, "precision": label, **result, **common}),
                  flush=True)
        module.to("cpu", torch.float32)


if __name__ == "__main__":
    main()
