#!/usr/bin/env python3
"""Compare static-QDQ recipes for the demo student's image tower: how close each int8 file stays
to the fp32 one, under onnxruntime and under edgeclip (tract), on a validation set that is
neither training data nor the evaluation set.

    python3 -m edgeclip_tools.demo.quant_recipes [--bundle models/demo] [--n 1200] \
        [--bin target/release/edgeclip] [--only 'NAME;NAME']

The validation frames are single-object 640x480 scenes like the evaluation set's (half seen, half
held-out combinations, JPEG quality 95), from the calibration seed space at an offset no
calibration run reaches (``common.OFF_CALIB + 1,000,000``); they are written to
``target/demo-quant-val/``. Each recipe quantizes the bundle's ``visual.fp32.onnx`` with
onnxruntime's ``quantize_static`` (QDQ, per-channel int8 weights, uint8 activations, the
calibration scenes of ``edgeclip_tools.demo export``); the table gives, per recipe, the share of frames whose
top prompt (among the 48 colour-shape prompts) is the fp32 tower's, the cosine between the int8
and fp32 embeddings (onnxruntime), and top-1 accuracy. The first row is the QDQ recipe the demo
shipped until part E (``export.quantize_visual_qdq``). The last ones are not QDQ: dynamic int8 (onnxruntime's
``quantize_dynamic``, no calibration), and the same file with calibrated activation ranges
("static integer": ConvInteger / MatMulInteger fed by calibrated QuantizeLinear nodes), whole or
with one part in float. Results: ``benches/INT8.md``, parts C, D and E. (Entropy
calibration is not listed: onnxruntime 1.32 wrote byte-identical files for it and for MinMax
here.)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import time
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from ..bundle_tools import ArrayReader, make_int8_dynamic
from ..clip_common import to_tensor
from . import scenes
from .common import BUNDLE, OFF_CALIB, ROOT, bundle_input_size
from .evaluate import eval_combo
from .export import calibration_inputs, quantize_visual
from .score_rust import top_prompts

VAL_OFFSET = 1_000_000  # within the calibration seed space, far past any --calib count
PCT = {"calib": 400, "method": "Percentile", "extra": {"CalibPercentile": 99.99}}
RECIPES = {
    "minmax-100 (QDQ, shipped until part E)": {"calib": 100},
    "minmax-400": {"calib": 400},
    "percentile-99.99-400": PCT,
    "percentile-99.999-400": {**PCT, "extra": {"CalibPercentile": 99.999}},
    "percentile-99.99-800": {**PCT, "calib": 800},
    "minmax-100, Conv/Gemm/MatMul only": {"ops": ["Conv", "Gemm", "MatMul"]},
    "minmax-100, Conv only": {"ops": ["Conv"]},
    "minmax-400, Conv only": {"calib": 400, "ops": ["Conv"]},
    "percentile-99.99-400, colour branch in float": {**PCT, "exclude": [
        "/colour_net/colour_net.0/AveragePool", "/colour_net/colour_net.1/Conv",
        "/colour_net/colour_net.3/Conv", "/colour_net/colour_net.5/Conv", "/ReduceMax"]},
    "percentile-99.99-400, hue-blind input in float": {**PCT, "exclude": [
        "/Mul", "/Add", "/Div_1", "/Mul_1", "/Div", "/Concat"]},
    "percentile-99.99-400, first conv in float": {**PCT, "exclude": ["/features/features.0/Conv"]},
    "percentile-99.99-400, last conv in float": {**PCT, "exclude": [
        "/features/features.12/Conv", "/ReduceMean"]},
    "percentile-99.99-400, projections in float": {**PCT, "exclude": [
        "/head/Gemm", "/head_c/MatMul/MatMulAddFusion"]},
    # not static: onnxruntime quantize_dynamic (bundle_tools.make_int8_dynamic), activations
    # quantized per frame at run time (benches/INT8.md part D)
    "dynamic (no calibration)": {"dynamic": True},
    # the dynamic file with its activation ranges calibrated (min / max over the same 100 scenes
    # as minmax-100): integer kernels, no per-frame range reductions (benches/INT8.md part E)
    "static integer": {"dynamic": True, "static": True},
    "static integer, first conv in float (edgeclip_tools.demo export)": {"dynamic": True, "static": True,
                                            "exclude": ["/features/features.0/Conv"]},
    # (quantize_dynamic splits each Gemm into MatMul + Add before it quantizes)
    "static integer, projections in float": {"dynamic": True, "static": True, "exclude": [
        "/head/Gemm_MatMul", "/head_c/MatMul/MatMulAddFusion_MatMul"]},
}


def _val_frame(args: tuple[str, int]) -> dict:
    out, i = args
    combo = eval_combo(i)
    img, _ = scenes.render_scene(OFF_CALIB + VAL_OFFSET + i, 640, 480, combos=[combo],
                                 allow_held_out=True)
    name = f"val_{i:04d}.jpg"
    img.save(os.path.join(out, name), quality=95)
    return {"file": name, "label": scenes.prompt_for(*combo), "held_out": combo in scenes.HELD_OUT}


def validation_set(out: str, n: int) -> list[dict]:
    labels = os.path.join(out, "labels.json")
    if os.path.exists(labels) and len(rows := json.load(open(labels))) == n:
        return rows
    os.makedirs(out, exist_ok=True)
    with get_context("fork").Pool(len(os.sched_getaffinity(0))) as pool:
        rows = pool.map(_val_frame, [(out, i) for i in range(n)])
    json.dump(rows, open(labels, "w"), indent=1)
    return rows


def main() -> None:
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process
    from PIL import Image
    from safetensors import safe_open

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", default=BUNDLE)
    p.add_argument("--n", type=int, default=1200, help="validation frames")
    p.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "edgeclip"))
    p.add_argument("--only", default=None, help="recipe names, separated by ';' (names hold commas; default: all)")
    a = p.parse_args()
    val = os.path.join(ROOT, "target", "demo-quant-val")
    rows = validation_set(val, a.n)
    size = bundle_input_size(a.bundle)
    x = to_tensor(np.stack([np.asarray(scenes.runtime_preprocess(
        Image.open(os.path.join(val, r["file"])).convert("RGB"), size)) for r in rows])).numpy()
    held = np.array([r["held_out"] for r in rows])
    with safe_open(os.path.join(a.bundle, "prompts.safetensors"), "np") as f:
        prompts = f.get_tensor("embeddings")[:48]
    so = ort.SessionOptions()
    so.intra_op_num_threads = len(os.sched_getaffinity(0))

    def embed(path: str) -> np.ndarray:
        s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        e = np.concatenate([s.run(None, {"pixel_values": x[i:i + 100]})[0]
                            for i in range(0, len(x), 100)])
        return e / np.linalg.norm(e, axis=1, keepdims=True)

    def acc(ok: np.ndarray) -> str:
        return f"{100 * ok[~held].mean():.1f} / {100 * ok[held].mean():.1f}"

    e32 = embed(os.path.join(a.bundle, "visual.fp32.onnx"))
    p32 = (e32 @ prompts.T).argmax(1)
    def tract_top1(bundle: str, precision: str) -> np.ndarray:
        top = top_prompts(a.bin, bundle, precision, val, rows)
        return np.array([top[r["file"]] for r in rows])

    t32 = tract_top1(a.bundle, "fp32")
    truth = np.array([r["label"] for r in rows])
    print(f"{len(rows)} validation frames ({(~held).sum()} seen, {held.sum()} held-out), "
          f"{a.bundle}", flush=True)
    print("| recipe | top-1 same as fp32, onnxruntime | cosine to fp32 (mean / min) | "
          "top-1 same as fp32, edgeclip | accuracy seen / held-out, edgeclip |")
    print("|---|---|---|---|---|")
    print(f"| fp32 (reference) | - | - | - | {acc(t32 == truth)} |", flush=True)
    work = tempfile.mkdtemp()
    prep = os.path.join(work, "prep.onnx")
    quant_pre_process(os.path.join(a.bundle, "visual.fp32.onnx"), prep, skip_symbolic_shape=True)
    names = a.only.split(";") if a.only else list(RECIPES)
    x_cal = None
    for name in names:
        r = RECIPES[name]
        t0 = time.time()
        out = os.path.join(work, "visual.onnx")
        kw = dict(quant_format=QuantFormat.QDQ, per_channel=True,
                  activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                  calibrate_method=getattr(CalibrationMethod, r.get("method", "MinMax")))
        if "ops" in r:
            kw["op_types_to_quantize"] = r["ops"]
        if "exclude" in r:
            kw["nodes_to_exclude"] = r["exclude"]
        if "extra" in r:
            kw["extra_options"] = r["extra"]
        if r.get("dynamic"):
            fp32 = os.path.join(a.bundle, "visual.fp32.onnx")
            if r.get("static"):
                if x_cal is None:  # the 100 scenes of minmax-100, rendered once
                    x_cal = calibration_inputs(0, 100, size)
                quantize_visual(fp32, out, x_cal, float_nodes=r.get("exclude"))
            else:
                make_int8_dynamic(Path(fp32), Path(out), exclude=r.get("exclude"))
        else:
            quantize_static(prep, out, ArrayReader("pixel_values", calibration_inputs(0, r.get("calib", 100), size)), **kw)
        e8 = embed(out)
        cos = (e8 * e32).sum(1)
        agree_ort = ((e8 @ prompts.T).argmax(1) == p32).mean()
        # the same bundle with this int8 file, scored by the runtime
        b = os.path.join(work, "bundle")
        shutil.rmtree(b, ignore_errors=True)
        os.makedirs(b)
        for f in os.listdir(a.bundle):
            if f != "visual.onnx":
                os.symlink(os.path.abspath(os.path.join(a.bundle, f)), os.path.join(b, f))
        shutil.copy(out, os.path.join(b, "visual.onnx"))
        precision = ("int8-static" if r.get("static") else "int8-dynamic") if r.get("dynamic") else "int8-qdq"
        with open(os.path.join(a.bundle, "bundle.toml")) as f:  # the default file's precision
            manifest = re.sub(r'precision = "[^"]*"', f'precision = "{precision}"', f.read(), count=1)
        os.unlink(os.path.join(b, "bundle.toml"))
        with open(os.path.join(b, "bundle.toml"), "w") as f:
            f.write(manifest)
        t8 = tract_top1(b, precision)
        print(f"| {name} | {100 * agree_ort:.2f}% | {cos.mean():.5f} / {cos.min():.4f} | "
              f"{100 * (t8 == t32).mean():.2f}% | {acc(t8 == truth)} |", flush=True)
        print(f"  ({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
