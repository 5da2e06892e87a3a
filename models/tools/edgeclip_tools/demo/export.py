"""Export: the ONNX files of the bundle (fp32, the int8 image tower on integer kernels, the
int8 text tower, the fp16 GPU variant), ``prompts.safetensors`` and ``bundle.toml``;
``quantize`` redoes the int8 image tower alone, ``reference`` onnxruntime's outputs for
tests/runtime.rs."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..bundle_tools import (VOCABULARY_NOTE, image_section, make_fp16, make_int8_dynamic, make_int8_qdq,
                            make_int8_static, save_safetensors, strip_unused_opsets, text_section,
                            write_bundle_toml)
from ..clip_common import CLIP_MEAN, CLIP_STD, fingerprint, log, to_tensor
from . import scenes
from .arch import folded_student
from .common import (BUNDLE, CONTEXT, EMBED, OFF_CALIB, ROOT, SEED_STRIDE, SIZE, WORK,
                     bundle_input_size, prompt_ids)
from .train import load_student, load_teacher


# Left in float in the int8 image tower: the first convolution (2 input channels, 1.5% of the
# multiply-adds).
# Chosen on edgeclip_tools.demo.quant_recipes's validation frames (top-1 same as fp32 under edgeclip: 99.42%,
# against 99.08% with it quantized and 98.58% for the QDQ file shipped before; benches/INT8.md
# part E).
VISUAL_FLOAT_NODES = ["/features/features.0/Conv"]


def calibration_inputs(seed: int, n: int, size: int) -> np.ndarray:
    """The int8 image tower's calibration inputs, [n,3,size,size]: ``n`` generated 640x480
    scenes (a seed space of their own, beside the training sets') preprocessed like the runtime."""
    base = seed * SEED_STRIDE + OFF_CALIB
    return to_tensor(np.stack([np.asarray(scenes.runtime_preprocess(
        scenes.render_scene(base + i, 640, 480)[0], size)) for i in range(n)])).numpy()


def quantize_visual(vis32: str, vis8: str, calib: np.ndarray,
                    float_nodes: list[str] | None = VISUAL_FLOAT_NODES) -> dict:
    """The shipped int8 image tower, precision ``int8-static``: onnxruntime's dynamic quantization
    (QInt8 weights, ConvInteger / MatMulInteger; ``float_nodes`` left in float) with each
    DynamicQuantizeLinear then replaced by a QuantizeLinear calibrated (min / max) on ``calib``
    (``calibration_inputs``). tract runs it on its integer kernels without per-frame range
    reductions (a QDQ file runs in float in tract). Returns the activation ranges."""
    ranges = make_int8_static(Path(vis32), Path(vis8), "pixel_values", calib, exclude=float_nodes)
    strip_unused_opsets(vis8)
    return ranges


def quantize_visual_qdq(vis32: str, vis8: str, seed: int, calib: int, size: int) -> None:
    """The int8 image tower shipped before ``quantize_visual`` (until 2026-11-29): static QDQ,
    per-channel int8 weights, uint8 activations calibrated with min / max on ``calib`` scenes
    (every op onnxruntime can quantize). tract runs it in float with a rounding pass per quantized
    tensor. Kept for comparison (``demo_int8_integer.sh``, ``quant_recipes``' first row)."""
    make_int8_qdq(Path(vis32), Path(vis8), "pixel_values", calibration_inputs(seed, calib, size),
                  op_types=None, skip_symbolic_shape=True)
    strip_unused_opsets(vis8)


def cmd_quantize(a: argparse.Namespace) -> None:
    """``export``'s image-tower quantization alone, from the bundle's ``visual.fp32.onnx``."""
    quantize_visual(f"{BUNDLE}/visual.fp32.onnx", f"{BUNDLE}/visual.onnx",
                    calibration_inputs(a.seed, a.calib, bundle_input_size(BUNDLE)))
    log(f"visual.onnx: {os.path.getsize(f'{BUNDLE}/visual.onnx') / 1e6:.2f} MB")


REFERENCE = os.path.join(ROOT, "tests", "data", "models", "demo-reference.safetensors")


def cmd_reference(a: argparse.Namespace) -> None:
    """onnxruntime's embeddings of a few frames of the recorded clip by the shipped image tower
    (int8 and fp32), with the frames' input tensors, so that tests/runtime.rs checks tract's run
    of the same files against them: ``tests/data/models/demo-reference.safetensors``."""
    import onnxruntime as ort
    truth = json.load(open(os.path.join(ROOT, "tests", "data", "clip", "ground_truth.json")))
    picked, seen = [], set()
    for f in truth["frames"]:  # the first frame of each set of visible labels: empty, then objects
        key = tuple(f["labels"])
        if key not in seen and len(picked) < 4:
            seen.add(key)
            picked.append(f["file"])
    x = to_tensor(np.stack([np.asarray(scenes.runtime_preprocess(Image.open(
        os.path.join(ROOT, "tests", "data", "clip", name)).convert("RGB"), bundle_input_size(BUNDLE)))
        for name in picked]))
    x = np.ascontiguousarray(x.numpy(), dtype=np.float32)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    out = {"pixel_values": x}
    for precision, name in (("int8-static", "visual.onnx"), ("fp32", "visual.fp32.onnx")):
        sess = ort.InferenceSession(f"{BUNDLE}/{name}", so, providers=["CPUExecutionProvider"])
        out[f"image_embeds.{precision}"] = sess.run(["image_embeds"], {"pixel_values": x})[0]
    save_safetensors(Path(REFERENCE), out, metadata={"frames": json.dumps(picked),
                                                     "visual.onnx sha256": fingerprint(f"{BUNDLE}/visual.onnx"),
                                                     "onnxruntime": ort.__version__})
    log(f"{REFERENCE}: frames {picked}")


def write_prompts_and_manifest(bundle: str, logit_scale: float, size: int) -> None:
    """``prompts.safetensors`` (the 49 prompts through the bundle's int8 text tower under
    onnxruntime, L2-normalised in f32) and ``bundle.toml`` (image tower ``size`` px). The
    vocabulary of open-set scoring is the prompt set itself: the demo's text tower knows only its
    colour-shape scenes, so a generic camera vocabulary would mean nothing to it."""
    import onnxruntime as ort
    txt8 = f"{bundle}/textual.onnx"
    fp = fingerprint(txt8)
    sess = ort.InferenceSession(txt8, providers=["CPUExecutionProvider"])
    emb = sess.run(["text_embeds"], {"input_ids": prompt_ids().numpy()})[0]
    emb = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    # not write_prompts: its f64 normalisation differs from this one in the last bit of some rows
    save_safetensors(Path(f"{bundle}/prompts.safetensors"), {"embeddings": emb.astype(np.float32)},
                     metadata={"fingerprint": fp, "prompts": json.dumps(scenes.PROMPTS),
                               "dim": str(EMBED)})
    write_bundle_toml(Path(bundle), "demo-student", EMBED, float(f"{logit_scale:.4f}"), fp,
                      image_section("visual.onnx", "int8-static", size, mean=CLIP_MEAN, std=CLIP_STD),
                      image_variants=[("visual.fp32.onnx", "fp32"), ("visual.fp16.onnx", "fp16")],
                      text=text_section("textual.onnx", "int8-dynamic", context_length=CONTEXT),
                      text_variants=[("textual.fp32.onnx", "fp32")],
                      prompts_file="prompts.safetensors", vocabulary_file="prompts.safetensors",
                      vocabulary_note=f"{VOCABULARY_NOTE}: its own prompt set")


def cmd_export(a: argparse.Namespace) -> None:
    import onnx
    os.makedirs(BUNDLE, exist_ok=True)
    teacher = load_teacher(a)
    student = folded_student(load_student(a))
    vis32, vis8 = f"{BUNDLE}/visual.fp32.onnx", f"{BUNDLE}/visual.onnx"
    txt32, txt8 = f"{BUNDLE}/textual.fp32.onnx", f"{BUNDLE}/textual.onnx"
    with torch.no_grad():
        torch.onnx.export(student, (torch.zeros(1, 3, a.student_size, a.student_size),), vis32,
                          dynamo=False,
                          opset_version=17, input_names=["pixel_values"],
                          output_names=["image_embeds"],
                          dynamic_axes={"pixel_values": {0: "N"}, "image_embeds": {0: "N"}})
        # the teacher's image tower, not shipped: only for the speed figures of the model card
        torch.onnx.export(teacher.visual, (torch.zeros(1, 3, SIZE, SIZE),),
                          f"{WORK}/teacher_visual.onnx", dynamo=False, opset_version=17,
                          input_names=["pixel_values"], output_names=["image_embeds"])
        torch.onnx.export(teacher.text, (prompt_ids()[:2],), txt32, dynamo=False,
                          opset_version=17, input_names=["input_ids"],
                          output_names=["text_embeds"],
                          dynamic_axes={"input_ids": {0: "N"}, "text_embeds": {0: "N"}})
    for p in (vis32, txt32):
        onnx.checker.check_model(onnx.load(p))
    quantize_visual(vis32, vis8, calibration_inputs(a.seed, a.calib, a.student_size))
    # the text tower as onnxruntime quantizes it, without its pre-processing pass (the shipped
    # file, whose hash is the fingerprint, was made so)
    make_int8_dynamic(Path(txt32), Path(txt8), op_types=["MatMul", "Gather"], preprocess=False)
    strip_unused_opsets(txt8)
    make_fp16(Path(vis32), Path(f"{BUNDLE}/visual.fp16.onnx"))  # the GPU variant (as gpu_variant)
    write_prompts_and_manifest(BUNDLE, float(teacher.logit_scale.detach().exp()), a.student_size)
    for f in sorted(os.listdir(BUNDLE)):
        log(f"{f}: {os.path.getsize(os.path.join(BUNDLE, f)) / 1e6:.2f} MB")
