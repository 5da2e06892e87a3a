"""ONNX export, quantization, checking and bundle writing, shared by edgeclip_tools.export_fixtures and
edgeclip_tools.make_vitb32 (imported, not run).

A bundle (see models/BUNDLE.md) is a folder with `bundle.toml`, the tower ONNX files and, for the
fixtures, `reference.safetensors` with inputs and the outputs onnxruntime gives for them.
"""

import json
import os
import random
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                      QuantType, quantize_dynamic, quantize_static)
from onnxruntime.quantization.shape_inference import quant_pre_process
from PIL import Image

from .clip_common import CLIP_MEAN, CLIP_STD, clip_transform

OPSET = 17


# ---------------------------------------------------------------------------------------------
# Export and check
# ---------------------------------------------------------------------------------------------

def export_onnx(module: torch.nn.Module, example: torch.Tensor, path: Path, input_name: str,
                output_name: str):
    """Export a one-input, one-output module with a dynamic batch axis (opset 17).

    Uses the TorchScript-based exporter (`dynamo=False`): it writes one self-contained file with
    plain ONNX ops and no external data, which is what the bundle wants. A PyTorch without it
    gets the dynamo exporter, asked for the same (one file, no external data)."""
    module.eval()
    with torch.no_grad():
        try:
            torch.onnx.export(
                module,
                (example,),
                str(path),
                input_names=[input_name],
                output_names=[output_name],
                dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}},
                opset_version=OPSET,
                do_constant_folding=True,
                dynamo=False,
            )
        except Exception as e:  # noqa: BLE001 - e.g. a PyTorch that dropped the TorchScript exporter
            print(f"  TorchScript exporter failed ({type(e).__name__}: {e}); using the dynamo exporter")
            batch = torch.export.Dim("batch")
            torch.onnx.export(module, (example,), str(path), input_names=[input_name],
                              output_names=[output_name], dynamic_shapes=({0: batch},),
                              dynamo=True, external_data=False)


def check_onnx(path: Path):
    """onnx.checker (full check, with shape inference) on a file."""
    onnx.checker.check_model(str(path), full_check=True)


def ort_session(path: Path, optimize: bool = True) -> ort.InferenceSession:
    """A single-threaded CPU session. optimize=False disables all graph optimizations, so a QDQ
    model runs as written (float ops between Quantize/DequantizeLinear pairs) instead of fused
    integer kernels."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    if not optimize:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def ort_run(path: Path, input_name: str, x: np.ndarray, optimize: bool = True) -> np.ndarray:
    sess = ort_session(path, optimize)
    (out,) = sess.run(None, {input_name: x})
    return out


def op_histogram(path: Path) -> dict:
    """Count of each op type in a graph (for the report)."""
    counts = {}
    for node in onnx.load(str(path), load_external_data=False).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return dict(sorted(counts.items()))


# ---------------------------------------------------------------------------------------------
# Quantization
# ---------------------------------------------------------------------------------------------

def _preprocessed(src: Path, tmp: Path, skip_symbolic_shape: bool = False) -> Path:
    """onnxruntime's recommended pre-processing before quantization (shape inference and basic
    graph clean-up). Falls back to the raw model if it fails."""
    dst = tmp / (src.stem + ".pre.onnx")
    try:
        quant_pre_process(str(src), str(dst), skip_symbolic_shape=skip_symbolic_shape)
        return dst
    except Exception as e:  # noqa: BLE001 - report and go on with the raw model
        print(f"  quant_pre_process failed on {src.name} ({type(e).__name__}: {e}); quantizing it as is")
        return src


def make_int8_dynamic(src: Path, dst: Path, op_types=None, exclude=None, preprocess: bool = True):
    """Dynamic quantization: int8 weights (QInt8), activations quantized at run time
    (DynamicQuantizeLinear + MatMulInteger / ConvInteger, int8 Gather tables + DequantizeLinear).
    `exclude`: names of nodes (after onnxruntime's pre-processing) left in float. `preprocess`:
    run that pre-processing first (the demo's text tower was quantized without it)."""
    with tempfile.TemporaryDirectory() as tmp:
        pre = _preprocessed(src, Path(tmp)) if preprocess else src
        quantize_dynamic(str(pre), str(dst), weight_type=QuantType.QInt8, op_types_to_quantize=op_types,
                         nodes_to_exclude=exclude)


def make_int8_static_integer(dynamic_src: Path, dst: Path, input_name: str, calib: np.ndarray) -> dict:
    """A dynamic-int8 file (`make_int8_dynamic`) made static: each DynamicQuantizeLinear becomes a
    QuantizeLinear whose uint8 scale and zero point come from the min / max of its input over
    `calib` (with 0 in the range, as DynamicQuantizeLinear's own), so the graph keeps its integer
    products (ConvInteger / MatMulInteger, which tract runs on its int8 kernels) without the
    per-frame range reductions: bundle precision `int8-static` (benches/INT8.md part E).
    Returns {tensor: (scale, zero point)}."""
    model = onnx.load(str(dynamic_src))
    dyn = [n for n in model.graph.node if n.op_type == "DynamicQuantizeLinear"]
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    for n in dyn:
        probe.graph.output.append(onnx.helper.make_tensor_value_info(n.input[0], onnx.TensorProto.FLOAT, None))
    sess = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [n.input[0] for n in dyn]
    lo, hi = dict.fromkeys(names, 0.0), dict.fromkeys(names, 0.0)
    for i in range(len(calib)):
        for name, v in zip(names, sess.run(names, {input_name: calib[i:i + 1]})):
            lo[name], hi[name] = min(lo[name], float(v.min())), max(hi[name], float(v.max()))
    ranges, nodes = {}, []
    for n in model.graph.node:
        if n.op_type != "DynamicQuantizeLinear":
            nodes.append(n)
            continue
        x, (y, scale_name, zp_name) = n.input[0], n.output
        scale = (hi[x] - lo[x]) / 255.0 or 1.0
        zp = int(np.clip(round(-lo[x] / scale), 0, 255))
        ranges[x] = (scale, zp)
        model.graph.initializer.append(onnx.numpy_helper.from_array(np.array(scale, np.float32), scale_name))
        model.graph.initializer.append(onnx.numpy_helper.from_array(np.array(zp, np.uint8), zp_name))
        nodes.append(onnx.helper.make_node("QuantizeLinear", [x, scale_name, zp_name], [y], name=n.name + "_static"))
    model.graph.ClearField("node")
    model.graph.node.extend(nodes)
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))
    return ranges


def make_int8_static(src: Path, dst: Path, input_name: str, calib: np.ndarray, exclude=None) -> dict:
    """Bundle precision `int8-static` from an fp32 file: `make_int8_dynamic` (`exclude`: nodes left
    in float), then `make_int8_static_integer` with the ranges of `calib`. Returns those ranges."""
    with tempfile.TemporaryDirectory() as tmp:
        dynamic = Path(tmp) / "dynamic.onnx"
        make_int8_dynamic(src, dynamic, exclude=exclude)
        return make_int8_static_integer(dynamic, dst, input_name, calib)


class ArrayReader(CalibrationDataReader):
    """Feeds calibration samples one at a time, as `{input_name: [1,3,H,W]}`."""

    def __init__(self, input_name: str, batch: np.ndarray):
        self.items = iter([{input_name: batch[i:i + 1]} for i in range(len(batch))])

    def get_next(self):
        return next(self.items, None)


def strip_unused_opsets(path) -> None:
    """Drop the opset imports of domains no node uses (the quantizer declares a dozen)."""
    m = onnx.load(str(path))
    used = {n.domain for n in m.graph.node} | {""}
    keep = [o for o in m.opset_import if o.domain in used or o.domain == "ai.onnx"]
    del m.opset_import[:]
    m.opset_import.extend(keep)
    onnx.checker.check_model(m)
    onnx.save(m, str(path))


# The ops the static QDQ variant quantizes: the ones that carry the compute. Residual Adds,
# LayerNorm, Softmax, GELU etc. stay in float. Quantizing every op onnxruntime can (its default)
# wrecks a transformer: on the random-weight ViT-B/32 of edgeclip_tools.make_vitb32 the cosine to fp32 drops
# to 0.88-0.90, against 0.9998 with this list (and 0.994-0.996 vs 0.9995 on hf-clip-tiny).
QDQ_OP_TYPES = ("MatMul", "Conv", "Gemm")


def make_int8_qdq(src: Path, dst: Path, input_name: str, calib: np.ndarray, op_types=QDQ_OP_TYPES,
                  skip_symbolic_shape: bool = False):
    """Static quantization in QDQ format: QuantizeLinear/DequantizeLinear pairs around the
    quantized ops (`op_types`; None: every op onnxruntime can quantize), uint8 (asymmetric)
    activations with MinMax ranges from `calib`, int8 per-channel weights. This is onnxruntime's
    recommended CPU setting. `skip_symbolic_shape` is passed to the pre-processing.

    onnxruntime logs "Axis 1 is out-of-range for weight '...norm.weight' with rank 1" for the
    LayerNormalization / BatchNormalization scales: those 1-D weights cannot be quantized per
    channel along axis 1, and it quantizes them per tensor instead. Harmless."""
    with tempfile.TemporaryDirectory() as tmp:
        pre = _preprocessed(src, Path(tmp), skip_symbolic_shape)
        quantize_static(
            str(pre), str(dst), ArrayReader(input_name, calib),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
            calibrate_method=CalibrationMethod.MinMax,
            op_types_to_quantize=list(op_types) if op_types is not None else None,
        )


# The int8 recipe for tract (0.23.9), from the measurements in benches/INT8.md:
# - int8-dynamic (onnxruntime quantize_dynamic: DynamicQuantizeLinear + MatMulInteger/ConvInteger)
#   is the form that runs tract's integer kernels (aarch64 SDOT/SMLAL, x86 AMX/VNNI/AVX2) and
#   needs no calibration. It stays within cosine 0.99 of fp32 on every fixture (0.998 on FastViT,
#   where static QDQ only reaches 0.95) and, with the runtime's weight-sum fold
#   (src/model/tract_fixes.rs, `fold_constant_weight_sums`), a ViT-B/32 costs 0.40x the fp32
#   instructions on Cortex-A76. The form to use for transformer towers.
# - int8-qdq (static QuantizeLinear/DequantizeLinear) is run by tract as float ops between
#   quantize/dequantize pairs: 1.2-1.35x the fp32 cost (x86, A76), an accuracy emulation only. Kept for other
#   runtimes and for comparing with onnxruntime.
# - QOperator (QLinearConv / QLinearMatMul) runs integer kernels in tract but pays separate
#   element-wise requantization passes after every product (1.4x fp32 on A76 for ViT-B/32), and
#   Gemm would become com.microsoft QGemm, which tract does not parse. Not a bundle precision.
#   (Convolutions are the exception: tract fuses a QLinearConv's requantization into its kernel,
#   so edgeclip loads int8-static's ConvInteger chains as QLinearConv itself, src/model/int8_conv.rs,
#   and the files keep the form below.)
# - int8-static (make_int8_static_integer: the int8-dynamic file with each DynamicQuantizeLinear
#   replaced by a QuantizeLinear calibrated on `calib`) runs the same integer kernels without the
#   per-frame range reductions: the demo student's shipped form, 0.89x fp32's A76 instructions
#   where int8-dynamic costs 0.98x (benches/INT8.md part E). Its per-tensor ranges come from the
#   calibration images, so it is only as good as they are representative; quantize checks it.
RECOMMENDED_INT8 = "int8-dynamic"


def quantize_image_tower(src: Path, dst: Path, precision: str = RECOMMENDED_INT8,
                         input_name: str = "pixel_values", calib: np.ndarray | None = None):
    """Write an int8 variant of an fp32 image tower with the project's recipe for `precision`:
    "int8-dynamic" (the default and the recommended form for tract), "int8-static" or "int8-qdq"
    (both need `calib`, preprocessed images [n,3,H,W]). See RECOMMENDED_INT8 above for why."""
    if precision == "int8-dynamic":
        make_int8_dynamic(src, dst)
    elif precision in ("int8-qdq", "int8-static"):
        if calib is None:
            raise ValueError(f"{precision} needs calibration images")
        if precision == "int8-qdq":
            make_int8_qdq(src, dst, input_name, calib)
        else:
            make_int8_static(src, dst, input_name, calib)
    else:
        raise ValueError(f"not an int8 precision: {precision}")


# ---------------------------------------------------------------------------------------------
# fp16 (the GPU variant)
# ---------------------------------------------------------------------------------------------

def make_fp16(src: Path, dst: Path):
    """fp16 weights and activations for GPU runtimes (tract-cuda runs fp16 and fp32 graphs on the
    GPU; its int8 support does not cover ONNX's QDQ / integer ops, which stay on the CPU).

    onnxruntime's converter (`onnxruntime.transformers.float16`, a copy of onnxconverter-common's)
    with `keep_io_types=True`: the graph still takes and gives f32 (Cast nodes at the edges), so a
    bundle's input and output contract does not change. Ops that must stay f32 for accuracy or
    lack f16 kernels (its default block list: Resize, RandomNormal, ...) are left in f32, and so
    is Gemm: tract 0.23.9 refuses an f16 Gemm ("Output mismatch after rewiring expansion ...
    expected 1,64,F16 got 1,64,F32"); CLIP towers have one, the final projection."""
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    model = onnx.load(str(src))
    half = convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=False,
                                    op_block_list=list(DEFAULT_OP_BLOCK_LIST) + ["Gemm"])
    _toposort(half.graph)  # the converter appends its input Casts after their consumers
    onnx.save(half, str(dst))


def _toposort(graph):
    """Reorder `graph.node` so that every node comes after the nodes producing its inputs."""
    ready = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, order = list(graph.node), []
    while pending:
        rest = [n for n in pending if not all(i in ready for i in n.input)]
        done = [n for n in pending if all(i in ready for i in n.input)]
        if not done:
            raise ValueError(f"cycle or missing input at {rest[0].name} ({rest[0].op_type})")
        for n in done:
            order.append(n)
            ready.update(n.output)
        pending = rest
    graph.ClearField("node")
    graph.node.extend(order)


def calibration_images(size: int, n: int = 16, seed: int = 0) -> np.ndarray:
    """`n` preprocessed calibration inputs f32 [n,3,size,size]: random crops (30-100 % of the
    area, aspect 3:4 to 4:3) of scikit-image's sample photographs, through the CLIP transform.
    These are not the photos in reference.safetensors."""
    from skimage import data as skdata

    photos = [skdata.astronaut(), skdata.chelsea(), skdata.coffee(), skdata.rocket(),
              skdata.immunohistochemistry(), skdata.hubble_deep_field(), skdata.colorwheel(),
              skdata.retina(), skdata.camera(), skdata.coins(), skdata.moon(), skdata.clock()]
    rng = random.Random(seed)
    tf = clip_transform(size)
    out = []
    for i in range(n):
        img = Image.fromarray(photos[i % len(photos)]).convert("RGB")
        w, h = img.size
        area = rng.uniform(0.3, 1.0) * w * h
        aspect = rng.uniform(3 / 4, 4 / 3)
        cw = min(w, max(16, int(round((area * aspect) ** 0.5))))
        ch = min(h, max(16, int(round((area / aspect) ** 0.5))))
        x0, y0 = rng.randint(0, w - cw), rng.randint(0, h - ch)
        out.append(tf(img.crop((x0, y0, x0 + cw, y0 + ch))).numpy())
    return np.stack(out).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# bundle.toml
# ---------------------------------------------------------------------------------------------

def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a valid TOML basic string
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(type(v))


def _toml_table(lines, header, table):
    lines.append("")
    lines.append(header)
    for k, v in table.items():
        lines.append(f"{k} = {_toml_value(v)}")


def image_section(onnx_file: str, precision: str, size: int, input_name="pixel_values",
                  output_name="image_embeds", mean=CLIP_MEAN, std=CLIP_STD,
                  interpolation: str = "bicubic", resize: str = "shortest") -> dict:
    """The [image] table, in BUNDLE.md's key order."""
    return {
        "onnx": onnx_file,
        "precision": precision,
        "input": input_name,
        "output": output_name,
        "height": size,
        "width": size,
        "resize": resize,
        "crop": "center",
        "interpolation": interpolation,
        "mean": [float(v) for v in mean],
        "std": [float(v) for v in std],
        "channel_order": "rgb",
    }


def text_section(onnx_file: str, precision: str, input_name="input_ids", output_name="text_embeds",
                 context_length: int = 77) -> dict:
    """The [text] table, in BUNDLE.md's key order."""
    return {
        "onnx": onnx_file,
        "precision": precision,
        "input": input_name,
        "output": output_name,
        "tokenizer": "clip-bpe",
        "context_length": context_length,
    }


# The comment on bundle.toml's [vocabulary] line (models/BUNDLE.md).
VOCABULARY_NOTE = "what the labels compete with (open-set scoring)"


def write_bundle_toml(folder: Path, name: str, embed_dim: int, logit_scale: float, fingerprint: str,
                      image: dict, image_variants=(), text: dict | None = None, text_variants=(),
                      comment: str = "", prompts_file: str | None = None, vocabulary_file: str | None = None,
                      vocabulary_note: str = VOCABULARY_NOTE):
    """Write bundle.toml with only the keys BUNDLE.md defines (the loader rejects unknown keys).
    Variants are (onnx_file, precision) pairs; `prompts_file` adds the [prompts] table,
    `vocabulary_file` the [vocabulary] table (its header line carries `vocabulary_note` as a
    comment)."""
    lines = [f"# {line}".rstrip() for line in comment.strip().splitlines()] if comment else []
    lines += [
        f"name = {_toml_value(name)}",
        f"embed_dim = {embed_dim}",
        f"logit_scale = {_toml_value(float(logit_scale))}",
        f"fingerprint = {_toml_value(fingerprint)}",
    ]
    _toml_table(lines, "[image]", image)
    for onnx_file, precision in image_variants:
        _toml_table(lines, "[[image.variants]]", {"onnx": onnx_file, "precision": precision})
    if text is not None:
        _toml_table(lines, "[text]", text)
        for onnx_file, precision in text_variants:
            _toml_table(lines, "[[text.variants]]", {"onnx": onnx_file, "precision": precision})
    if prompts_file is not None:
        _toml_table(lines, "[prompts]", {"file": prompts_file})
    if vocabulary_file is not None:
        _toml_table(lines, f"{'[vocabulary]':<34}# {vocabulary_note}" if vocabulary_note else "[vocabulary]",
                    {"file": vocabulary_file})
    (folder / "bundle.toml").write_text("\n".join(lines) + "\n")


# The keys models/BUNDLE.md defines, per table (the Rust loader rejects any other).
BUNDLE_KEYS = {
    "": {"name", "embed_dim", "logit_scale", "fingerprint", "image", "text", "prompts", "vocabulary"},
    "image": {"onnx", "precision", "input", "output", "height", "width", "resize", "crop",
              "interpolation", "mean", "std", "channel_order", "variants"},
    "text": {"onnx", "precision", "input", "output", "tokenizer", "context_length", "variants"},
    "variants": {"onnx", "precision"},
    "prompts": {"file"},
    "vocabulary": {"file"},
}
# The tables naming an embeddings file (prompts.safetensors' format).
EMBEDDINGS_TABLES = ("prompts", "vocabulary")
PRECISIONS = {"fp32", "fp16", "int8-qdq", "int8-dynamic", "int8-static"}


def validate_bundle(folder: Path):
    """Re-read bundle.toml and check it against BUNDLE.md: known keys only, known precisions,
    the files exist, the fingerprint matches. Raises on any problem."""
    import hashlib
    import tomllib

    manifest = tomllib.loads((folder / "bundle.toml").read_text())

    def keys(table, allowed, where):
        unknown = set(table) - allowed
        assert not unknown, f"{folder}/bundle.toml: unknown keys {unknown} in {where or 'top level'}"

    keys(manifest, BUNDLE_KEYS[""], "")
    for table in EMBEDDINGS_TABLES:
        if table in manifest:
            keys(manifest[table], BUNDLE_KEYS[table], table)
            assert (folder / manifest[table]["file"]).is_file(), f"{folder}/bundle.toml: [{table}] {manifest[table]}: no such file"
    for tower in ("image", "text"):
        if tower not in manifest:
            continue
        keys(manifest[tower], BUNDLE_KEYS[tower], tower)
        for entry in [manifest[tower]] + manifest[tower].get("variants", []):
            if entry is not manifest[tower]:
                keys(entry, BUNDLE_KEYS["variants"], f"{tower}.variants")
            assert entry["precision"] in PRECISIONS, entry
            assert (folder / entry["onnx"]).is_file(), entry
    fp_file = manifest["text"]["onnx"] if "text" in manifest else manifest["image"]["onnx"]
    expected = hashlib.sha256((folder / fp_file).read_bytes()).hexdigest()[:16]
    assert manifest["fingerprint"] == expected, (manifest["fingerprint"], expected)
    return manifest


# ---------------------------------------------------------------------------------------------
# Building one tower's variants
# ---------------------------------------------------------------------------------------------

def build_variants(fp32_path: Path, input_name: str, output_name: str, variants, calib=None,
                   dynamic_op_types=None, log=print):
    """From an exported fp32 file, write the requested quantized (or fp16) variants next to it, check every
    file with onnx.checker and onnxruntime, and return {precision: filename} of those that run.

    variants: precisions besides "fp32" ("int8-dynamic", "int8-static", "int8-qdq", "fp16").
    Files are named `<stem>.<precision>.onnx`, e.g. visual.int8-qdq.onnx."""
    made = {"fp32": fp32_path.name}
    for precision in variants:
        dst = fp32_path.with_name(f"{fp32_path.stem}.{precision}.onnx")
        t0 = time.time()
        try:
            if precision == "int8-dynamic" and dynamic_op_types is not None:
                make_int8_dynamic(fp32_path, dst, op_types=dynamic_op_types)
            elif precision == "fp16":
                make_fp16(fp32_path, dst)
            else:
                quantize_image_tower(fp32_path, dst, precision, input_name, calib)
        except Exception as e:  # noqa: BLE001 - report and keep going
            log(f"  {precision}: quantization FAILED: {type(e).__name__}: {e}")
            continue
        made[precision] = dst.name
        log(f"  {precision}: {dst.name} ({dst.stat().st_size / 1e6:.2f} MB, {time.time() - t0:.1f} s)")
    ok = {}
    for precision, file in made.items():
        path = fp32_path.parent / file
        try:
            check_onnx(path)
            ort_session(path)
            ok[precision] = file
        except Exception as e:  # noqa: BLE001
            log(f"  {precision}: {file} does not pass onnx.checker / onnxruntime: {type(e).__name__}: {e}")
    return ok


_ST_DTYPES = {np.dtype(np.float32): "F32", np.dtype(np.float16): "F16", np.dtype(np.int64): "I64",
              np.dtype(np.int32): "I32", np.dtype(np.uint8): "U8", np.dtype(np.int8): "I8"}


def save_safetensors(path: Path, tensors: dict, metadata: dict | None = None):
    """Write a .safetensors file with a byte-for-byte reproducible layout (tensors and metadata in
    sorted order; the `safetensors` package orders its header from a hash map, so re-running it
    changes the file even when nothing else does). Format: u64-le header length, the JSON header
    (padded with spaces to a multiple of 8), then the raw little-endian tensor data."""
    header, blobs, offset = {}, [], 0
    if metadata:
        header["__metadata__"] = {k: str(metadata[k]) for k in sorted(metadata)}
    # Like the safetensors package: wider dtypes first, so every tensor starts at an offset that is
    # a multiple of its element size (then by name).
    for name in sorted(tensors, key=lambda n: (-np.asarray(tensors[n]).dtype.itemsize, n)):
        arr = np.ascontiguousarray(tensors[name])
        data = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": _ST_DTYPES[arr.dtype], "shape": list(arr.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    with open(path, "wb") as f:
        f.write(len(head).to_bytes(8, "little"))
        f.write(head)
        for b in blobs:
            f.write(b)


def file_sizes(folder: Path) -> dict:
    return {p.name: p.stat().st_size for p in sorted(folder.iterdir()) if p.is_file()}


def set_threads():
    """The fixture machines are small and shared: one thread everywhere, deterministic."""
    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")


# ---------------------------------------------------------------------------------------------
# Real CLIPs (python3 -m edgeclip_tools): tower wrappers, a bundle's own preprocessing, prompts, and the
# Rust runtime as a second oracle
# ---------------------------------------------------------------------------------------------

class EmbedsOnly(torch.nn.Module):
    """Wraps a Hugging Face model so the exported graph has exactly one input and one output."""

    def __init__(self, model, input_name: str, output_name: str):
        super().__init__()
        self.model, self.input_name, self.output_name = model, input_name, output_name

    def forward(self, x):
        return getattr(self.model(**{self.input_name: x}), self.output_name)


class EncodeImage(torch.nn.Module):
    """An open_clip model's image tower as one module: pixels -> projected, unnormalised embeds."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model.encode_image(x)


class EncodeText(torch.nn.Module):
    """An open_clip model's text tower as one module: token ids -> projected, unnormalised embeds."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, ids):
        return self.model.encode_text(ids)


def spread_random_init(model: torch.nn.Module, g: torch.Generator):
    """Re-draw a randomly initialised conv net's weights so that its output depends on its input.

    timm's initialisation (PyTorch's default conv init, layer scales 1e-5, BatchNorm at identity)
    makes an untrained FastViT's output independent of its input (every image gets the same
    embedding: cosine 0.99999 between two random inputs for MobileCLIP2-S0's fastvit_mci0), which
    makes a useless check. So: variance-preserving weights, random BatchNorm statistics and affine
    parameters, and layer scales in [0.1, 0.5], so that re-parameterization has real branches and
    BatchNorms to fold. Only for random-weight exports; never applied to pretrained weights."""
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, (torch.nn.Conv2d, torch.nn.Linear)):
                fan_in = mod.weight[0].numel()
                mod.weight.copy_(torch.randn(mod.weight.shape, generator=g) / fan_in ** 0.5)
                if mod.bias is not None:
                    mod.bias.copy_(torch.randn(mod.bias.shape, generator=g) * 0.02)
            elif isinstance(mod, torch.nn.BatchNorm2d):
                n = mod.num_features
                mod.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                mod.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                mod.weight.copy_(torch.rand(n, generator=g) + 0.5)
                mod.bias.copy_(torch.randn(n, generator=g) * 0.1)
        for name, p in model.named_parameters():
            if name.endswith("gamma"):  # LayerScale2d
                p.copy_(torch.rand(p.shape, generator=g) * 0.4 + 0.1)


def read_manifest(folder: Path) -> dict:
    """bundle.toml as a dict (tomllib), unchecked: validate_bundle checks it."""
    import tomllib

    return tomllib.loads((Path(folder) / "bundle.toml").read_text())


def tower_file(manifest: dict, tower: str, precision: str | None = None) -> tuple[str, str]:
    """(file, precision) of a tower: its default, or the default/variant with `precision`."""
    table = manifest[tower]
    entries = [table] + list(table.get("variants", []))
    if precision is None:
        return table["onnx"], table["precision"]
    for e in entries:
        if e["precision"] == precision:
            return e["onnx"], e["precision"]
    raise KeyError(f"no {precision} {tower} tower (have: {', '.join(e['precision'] for e in entries)})")


def tower_precisions(manifest: dict, tower: str) -> list[str]:
    """The precisions a tower comes in, the default first."""
    table = manifest[tower]
    return [table["precision"]] + [v["precision"] for v in table.get("variants", [])]


def image_transform(image: dict):
    """The PIL + torchvision transform a bundle's [image] table describes (what the runtime does
    in Rust): RGB PIL image -> f32 [3,H,W]."""
    if image["height"] != image["width"]:
        raise ValueError(f"non-square input {image['height']}x{image['width']} is not supported here")
    if image.get("channel_order", "rgb") != "rgb" or image.get("crop", "center") != "center":
        raise ValueError("only channel_order = rgb and crop = center are supported here")
    return clip_transform(image["height"], image["mean"], image["std"], image["interpolation"],
                          image["resize"])


def bundle_pixel_values(paths, image: dict) -> np.ndarray:
    """f32 [N,3,H,W] for image files through load_rgb and a bundle's preprocessing."""
    from .clip_common import load_rgb

    tf = image_transform(image)
    return torch.stack([tf(load_rgb(p)) for p in paths]).numpy().astype(np.float32)


def renormalize(x: np.ndarray, mean_from, std_from, mean_to, std_to) -> np.ndarray:
    """Pixels normalised with one mean/std re-expressed with another (e.g. the CLIP-normalised
    calibration_images for a bundle normalised otherwise, such as MobileCLIP's 0/1)."""
    shape = (1, 3, 1, 1)
    raw = x * np.asarray(std_from, np.float32).reshape(shape) + np.asarray(mean_from, np.float32).reshape(shape)
    return ((raw - np.asarray(mean_to, np.float32).reshape(shape))
            / np.asarray(std_to, np.float32).reshape(shape)).astype(np.float32)


def ort_embed(path: Path, input_name: str, x: np.ndarray, batch: int = 16) -> np.ndarray:
    """onnxruntime outputs of a one-input graph, `batch` rows at a time."""
    sess = ort_session(path)
    return np.concatenate([sess.run(None, {input_name: x[i:i + batch]})[0] for i in range(0, len(x), batch)])


def clip_tokenize(texts, context_length: int) -> np.ndarray:
    """CLIP BPE ids int64 [N,L], exactly as the runtime's tokenizer makes them (open_clip's
    SimpleTokenizer: <start_of_text> 49406, <end_of_text> 49407, pad 0, truncated with the last
    id forced to 49407)."""
    import open_clip

    return open_clip.tokenize(list(texts), context_length=context_length).numpy().astype(np.int64)


def ort_text_embeds(folder: Path, manifest: dict, texts, precision: str | None = None) -> np.ndarray:
    """A bundle's text tower (default file, or the `precision` one) on texts, raw outputs."""
    file, _ = tower_file(manifest, "text", precision)
    t = manifest["text"]
    return ort_embed(Path(folder) / file, t["input"], clip_tokenize(texts, t["context_length"]))


def ort_image_embeds(folder: Path, manifest: dict, paths, precision: str | None = None) -> np.ndarray:
    """A bundle's image tower (default file, or the `precision` one) on image files, raw outputs."""
    file, _ = tower_file(manifest, "image", precision)
    x = bundle_pixel_values(paths, manifest["image"])
    return ort_embed(Path(folder) / file, manifest["image"]["input"], x)


def l2n(x: np.ndarray) -> np.ndarray:
    """Rows L2-normalised (float32)."""
    x = np.asarray(x, np.float64)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def read_prompt_lines(path: Path) -> list[str]:
    """A prompts file as `edgeclip embed` reads it: one prompt per line, blank lines and lines
    starting with # skipped."""
    lines = [line.strip() for line in Path(path).read_text().splitlines()]
    prompts = [line for line in lines if line and not line.startswith("#")]
    if not prompts:
        raise ValueError(f"{path}: no prompts in the file")
    return prompts


def read_vocabulary_lines(path: Path) -> list[str]:
    """A vocabulary list (models/tools/camera-vocabulary.txt's format: read_prompt_lines's), with
    duplicates refused (case and spacing ignored): one entry twice would count twice in the
    softmax."""
    texts = read_prompt_lines(path)
    seen = {}
    for t in texts:
        key = " ".join(t.lower().split())
        if key in seen:
            raise ValueError(f"{path}: {t!r} is listed twice (as {seen[key]!r} before); a vocabulary lists "
                             "each entry once")
        seen[key] = t
    return texts


def write_prompts(path: Path, texts, embeddings: np.ndarray, fingerprint: str):
    """prompts.safetensors as BUNDLE.md defines it: `embeddings` f32 [P,D], rows L2-normalised;
    metadata fingerprint, prompts (JSON array), dim."""
    emb = l2n(embeddings)
    save_safetensors(Path(path), {"embeddings": emb},
                     {"fingerprint": fingerprint, "prompts": json.dumps(list(texts)), "dim": str(emb.shape[1])})


def write_vocabulary(path: Path, folder: Path, manifest: dict, texts, fingerprint: str) -> float:
    """A vocabulary file (models/BUNDLE.md, [vocabulary]): `texts` embedded by the bundle's default
    text tower (`manifest["text"]`, files in `folder`) under onnxruntime, written like the prompts
    (write_prompts). Returns the seconds the embedding took."""
    t0 = time.time()
    emb = ort_text_embeds(folder, manifest, texts)
    seconds = time.time() - t0
    write_prompts(path, texts, emb, fingerprint)
    return seconds


def read_prompts(path: Path) -> tuple[list[str], np.ndarray, dict]:
    """(texts, embeddings [P,D], metadata) of a prompts.safetensors file."""
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        meta = f.metadata() or {}
        emb = f.get_tensor("embeddings")
    return json.loads(meta["prompts"]), emb, meta


def validate_prompts(folder: Path, manifest: dict):
    """The [prompts] and [vocabulary] files exist, carry the bundle's fingerprint and width, and
    have unit rows (validate_embeddings_file)."""
    for table in EMBEDDINGS_TABLES:
        if table in manifest:
            validate_embeddings_file(Path(folder) / manifest[table]["file"], manifest, f"[{table}]")


def validate_embeddings_file(path: Path, manifest: dict, what: str = ""):
    """An embeddings file (prompts.safetensors' format: the prompts, a vocabulary) made for the
    bundle `manifest`: its fingerprint and dim are the bundle's, one unit row per text. Raises
    AssertionError naming the file."""
    texts, emb, meta = read_prompts(path)
    where = f"{path}" + (f" ({what})" if what else "")
    assert meta.get("fingerprint") == manifest["fingerprint"], (
        f"{where}: fingerprint {meta.get('fingerprint')}, the bundle's is {manifest['fingerprint']} "
        "(embedded with other weights: re-embed it with this bundle's text tower)")
    assert emb.shape == (len(texts), manifest["embed_dim"]) and meta.get("dim") == str(manifest["embed_dim"]), (
        f"{where}: shape {emb.shape}, dim {meta.get('dim')}; expected {len(texts)} x {manifest['embed_dim']}")
    norms = np.linalg.norm(emb.astype(np.float64), axis=1)
    assert np.all(np.abs(norms - 1) < 1e-4), f"{where}: rows not L2-normalised (norms {norms.min()}..{norms.max()})"


IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


def image_files(folder: Path) -> list[Path]:
    """Every image file under a folder (recursively), sorted."""
    files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise ValueError(f"{folder}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return files


# The Rust runtime as an oracle. It has no "print the embedding" command, but `classify` prints
# the cosine of the frame embedding with every prompt: with the D unit vectors as the "prompts"
# (an embeddings file carrying the bundle's fingerprint), those cosines are the normalised image
# embedding itself, read back exactly (serde prints f32 in full).

def find_edgeclip(explicit: Path | None = None) -> Path | None:
    """The edgeclip binary: `explicit`, $EDGECLIP, $CARGO_TARGET_DIR/release/edgeclip,
    target/release/edgeclip in this repository, or `edgeclip` on PATH."""
    import shutil

    from .clip_common import REPO

    candidates = [explicit, os.environ.get("EDGECLIP")]
    if os.environ.get("CARGO_TARGET_DIR"):
        candidates.append(Path(os.environ["CARGO_TARGET_DIR"]) / "release/edgeclip")
    candidates += [REPO / "target/release/edgeclip", shutil.which("edgeclip")]
    for c in candidates:
        if c and Path(c).is_file() and os.access(c, os.X_OK):
            return Path(c)
    return None


def _run(cmd) -> str:
    import subprocess

    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(str(c) for c in cmd)} failed ({r.returncode}):\n{r.stderr.strip()}")
    return r.stdout


def rust_info(binary: Path, folder: Path) -> str:
    """`edgeclip info` output (raises with edgeclip's error when it refuses the bundle)."""
    return _run([binary, "info", "--model", folder])


def rust_image_embeds(binary: Path, folder: Path, paths, precision: str | None = None) -> np.ndarray:
    """The runtime's normalised image embeddings [N,D] (its own decoding, preprocessing and tract),
    through `edgeclip classify --json` against the D unit vectors."""
    manifest = read_manifest(folder)
    d = manifest["embed_dim"]
    names = [f"basis {i}" for i in range(d)]
    with tempfile.TemporaryDirectory() as tmp:
        basis = Path(tmp) / "basis.safetensors"
        save_safetensors(basis, {"embeddings": np.eye(d, dtype=np.float32)},
                         {"fingerprint": manifest["fingerprint"], "prompts": json.dumps(names), "dim": str(d)})
        cmd = [binary, "classify", "--model", folder, "--embeddings", basis, "--json"]
        if precision:
            cmd += ["--precision", precision]
        out = _run(cmd + [str(p) for p in paths])
    rows = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert len(rows) == len(paths), out[:500]
    emb = np.zeros((len(rows), d), np.float32)
    for r, row in enumerate(rows):
        for s in row["scores"]:
            emb[r, int(s["prompt"].split()[1])] = s["score"]
    return emb


def rust_text_embeds(binary: Path, folder: Path, texts) -> np.ndarray:
    """The runtime's normalised text embeddings [N,D] (its tokenizer and tract), through
    `edgeclip embed`."""
    with tempfile.TemporaryDirectory() as tmp:
        pf, out = Path(tmp) / "prompts.txt", Path(tmp) / "out.safetensors"
        pf.write_text("\n".join(texts) + "\n")
        _run([binary, "embed", "--model", folder, "--prompts-file", pf, "--out", out])
        got, emb, _ = read_prompts(out)
    index = {t: i for i, t in enumerate(got)}
    return emb[[index[t] for t in texts]]
