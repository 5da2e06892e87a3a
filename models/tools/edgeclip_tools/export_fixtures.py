#!/usr/bin/env python3
"""Write the small, committed model-bundle fixtures the Rust tests check the runtime against.

    python3 -m edgeclip_tools.make_preprocess_refs   # first: makes the photos fed to the models
    python3 -m edgeclip_tools.export_fixtures        # writes tests/data/models/{hf-clip-tiny,fastvit-tiny}
    python3 -m edgeclip_tools.export_fixtures --out DIR --only fastvit-tiny

Everything uses random weights with fixed seeds (no download is possible or needed); the result
is deterministic for a given set of library versions (models/tools/requirements.txt).

Bundles (each a folder with bundle.toml per models/BUNDLE.md and reference.safetensors):

- hf-clip-tiny: a reduced Hugging Face CLIP. Image tower CLIPVisionModelWithProjection (224 px,
  patch 32, hidden 64, 2 layers, 2 heads, MLP 256, projection 32) -> visual.onnx, input
  `pixel_values` [N,3,224,224] f32, output `image_embeds` [N,32]. Text tower
  CLIPTextModelWithProjection (vocab 49408, hidden 32, 2 layers, 2 heads, MLP 128, 77 positions,
  projection 32) -> textual.onnx, input `input_ids` [N,77] int64, output `text_embeds` [N,32].
  Variants: visual fp32 (default) / int8-dynamic / int8-qdq, textual fp32 (default) / int8-dynamic.
- fastvit-tiny: timm's FastViT built like `fastvit_mci0` (MobileCLIP-S0's image tower, see
  FASTVIT_MCI0 below) with narrower, shallower stages, a 32-wide embedding head, 256 px input,
  re-parameterized for inference. Variants fp32 (default) / int8-dynamic / int8-qdq; no text
  tower, so its fingerprint is the image tower's.

reference.safetensors holds (raw embeddings, not normalised):
- `pixel_values` f32 [2,3,S,S]: tests/data/preprocess/landscape_coffee.png and portrait_rocket.jpg
  through the CLIP transform (PIL + torchvision: exif_transpose, RGB, Resize(S, bicubic),
  CenterCrop(S), ToTensor, Normalize(CLIP mean/std)); the file names are in the metadata.
- `image_embeds.torch`: the PyTorch fp32 output for them.
- `image_embeds.<precision>`: onnxruntime's output for each variant (default session options,
  CPU, one thread).
- `image_embeds.int8-qdq.ort-noopt`: the same with every onnxruntime graph
  optimization off, i.e. the graph run as written (a QDQ graph as float ops between
  Quantize/DequantizeLinear pairs, no fused integer kernels). A runtime that does not fuse lands
  near this one; the gap between the two shows how much fusion alone moves the result.
- hf-clip-tiny also: `input_ids` int64 [3,77] = open_clip.tokenize(TEXTS), `text_embeds.torch`,
  `text_embeds.fp32`, `text_embeds.int8-dynamic`.

The cosines between variants are printed and written to tests/data/models/README.md.
"""

import argparse
import json
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from . import bundle_tools as bt
from .bundle_tools import EmbedsOnly  # noqa: F401 - also imported from here by edgeclip_tools.make_vitb32
from .clip_common import LOGIT_SCALE, REPO, cosine_rows, fingerprint, pixel_values

SEED = 20241126
PHOTOS = ("landscape_coffee.png", "portrait_rocket.jpg")  # in tests/data/preprocess/
TEXTS = ["a photo of a cat", "an empty scene", "a red circle next to a blue square"]
IMAGE_VARIANTS = ("int8-dynamic", "int8-qdq")
N_CALIB = 16

# The full-size fastvit_mci0 (MobileCLIP-S0 image tower) as timm 1.0 defines it
# (timm/models/fastvit.py, `fastvit_mci0`), for reference:
#   FastVit(layers=(2, 6, 10, 2), embed_dims=(64, 128, 256, 512), mlp_ratios=(3, 3, 3, 3),
#           se_downsamples=(False, False, True, True),
#           pos_embs=(None, None, None, partial(RepConditionalPosEnc, spatial_shape=(7, 7))),
#           token_mixers=("repmixer", "repmixer", "repmixer", "attention"), lkc_use_act=True)
#   with the defaults downsamples=(False, True, True, True), down_patch_size=7, down_stride=2,
#   repmixer_kernel_size=3, cls_ratio=2.0 (final MobileOne conv 512 -> 1024 with SE), avg pool,
#   GELU, BatchNorm, attention head_dim 32, layer_scale_init_value=1e-5; num_classes=512 is the
#   CLIP projection; image 256 (open_clip MobileCLIP-S0 / MobileCLIP2-S0 configs), ~11 M params.
#   MobileCLIP-S0 itself preprocesses with mean 0 / std 1 and bilinear resizing; this fixture
#   uses CLIP's mean/std and bicubic like the other one.
# The fixture keeps every block type and argument and shrinks only depths and widths (the widths
# keep mci0's doubling, which the grouped downsampling convolutions need, and the last one is a
# multiple of the 32-wide attention heads):
FASTVIT_TINY = dict(
    layers=(1, 1, 2, 1),
    embed_dims=(8, 16, 32, 64),
    mlp_ratios=(3, 3, 3, 3),
    se_downsamples=(False, False, True, True),
    token_mixers=("repmixer", "repmixer", "repmixer", "attention"),
    lkc_use_act=True,
    num_classes=32,
)
FASTVIT_SIZE = 256


# ---------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------

def build_hf_clip_tiny(seed: int):
    from transformers import (CLIPTextConfig, CLIPTextModelWithProjection, CLIPVisionConfig,
                              CLIPVisionModelWithProjection)

    vision_cfg = CLIPVisionConfig(image_size=224, patch_size=32, hidden_size=64, num_hidden_layers=2,
                                  num_attention_heads=2, intermediate_size=256, projection_dim=32)
    text_cfg = CLIPTextConfig(vocab_size=49408, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                              intermediate_size=128, max_position_embeddings=77, projection_dim=32,
                              bos_token_id=49406, eos_token_id=49407, pad_token_id=0)
    # Plain attention (MatMul + Softmax) rather than scaled_dot_product_attention in the graph.
    vision_cfg._attn_implementation = "eager"
    text_cfg._attn_implementation = "eager"
    torch.manual_seed(seed)
    vision = CLIPVisionModelWithProjection(vision_cfg).eval()
    torch.manual_seed(seed + 1)
    text = CLIPTextModelWithProjection(text_cfg).eval()
    return (EmbedsOnly(vision, "pixel_values", "image_embeds").eval(),
            EmbedsOnly(text, "input_ids", "text_embeds").eval())


def build_fastvit_tiny(seed: int):
    """A small FastViT with mci0's structure, random weights, eval mode, re-parameterized."""
    from timm.models.fastvit import FastVit, RepConditionalPosEnc
    from timm.utils.model import reparameterize_model

    torch.manual_seed(seed)
    model = FastVit(pos_embs=(None, None, None, partial(RepConditionalPosEnc, spatial_shape=(7, 7))),
                    **FASTVIT_TINY)
    # timm's initialisation makes an untrained FastViT's output independent of its input, which
    # would make a useless fixture: re-draw the weights (see bt.spread_random_init).
    bt.spread_random_init(model, torch.Generator().manual_seed(seed + 1))
    model.eval()
    deployed = reparameterize_model(model)  # MobileOne / RepMixer / RepCPE branches folded
    deployed.eval()
    return model, deployed


# ---------------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------------

def run_variants(folder: Path, files: dict, input_name: str, x: np.ndarray, key: str, tensors: dict):
    """onnxruntime outputs for every variant into `tensors` (key.<precision>, and for int8-qdq
    also key.int8-qdq.ort-noopt; for int8-dynamic the two are identical, the graph has explicit
    integer ops either way). Returns {precision: output}."""
    outs = {}
    for precision, file in files.items():
        try:
            out = bt.ort_run(folder / file, input_name, x)
        except Exception as e:  # noqa: BLE001 - e.g. an integer kernel onnxruntime lacks
            print(f"  {precision}: onnxruntime FAILED to run {file}: {type(e).__name__}: {e}")
            continue
        outs[precision] = out
        tensors[f"{key}.{precision}"] = out.astype(np.float32)
        if precision == "int8-qdq":
            noopt = bt.ort_run(folder / file, input_name, x, optimize=False)
            tensors[f"{key}.{precision}.ort-noopt"] = noopt.astype(np.float32)
    return outs


def cosine_report(name: str, key: str, tensors: dict, rows: list):
    """Cosines (per input row) of every stored output against ORT fp32."""
    ref = tensors[f"{key}.fp32"]
    for k in sorted(tensors):
        if not k.startswith(key + ".") or k == f"{key}.fp32":
            continue
        cos = cosine_rows(tensors[k], ref)
        maxabs = float(np.abs(tensors[k] - ref).max())
        rows.append((name, k, f"{key}.fp32", cos, maxabs))
        print(f"  cos({k}, {key}.fp32) = {', '.join(f'{c:.6f}' for c in cos)}   max|diff| = {maxabs:.3g}")


def save_reference(folder: Path, tensors: dict, meta: dict):
    bt.save_safetensors(folder / "reference.safetensors", tensors, meta)


def pairwise(x: np.ndarray) -> np.ndarray:
    n = x / np.linalg.norm(x, axis=1, keepdims=True)
    return n @ n.T


def export_hf_clip_tiny(out: Path, photos, calib224, report: dict):
    import open_clip

    name = "hf-clip-tiny"
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    print(f"== {name}")
    vision, text = build_hf_clip_tiny(SEED)

    px = pixel_values(photos, 224)
    ids = open_clip.tokenize(TEXTS, context_length=77)  # int64 [3,77]
    with torch.no_grad():
        img_torch = vision(torch.from_numpy(px)).numpy()
        txt_torch = text(ids).numpy()

    bt.export_onnx(vision, torch.from_numpy(px), folder / "visual.onnx", "pixel_values", "image_embeds")
    bt.export_onnx(text, ids, folder / "textual.onnx", "input_ids", "text_embeds")
    img_files = bt.build_variants(folder / "visual.onnx", "pixel_values", "image_embeds", IMAGE_VARIANTS,
                                  calib=calib224)
    txt_files = bt.build_variants(folder / "textual.onnx", "input_ids", "text_embeds", ("int8-dynamic",))

    tensors = {"pixel_values": px, "image_embeds.torch": img_torch,
               "input_ids": ids.numpy().astype(np.int64), "text_embeds.torch": txt_torch}
    img_out = run_variants(folder, img_files, "pixel_values", px, "image_embeds", tensors)
    txt_out = run_variants(folder, txt_files, "input_ids", ids.numpy(), "text_embeds", tensors)
    rows = []
    cosine_report(name, "image_embeds", tensors, rows)
    cosine_report(name, "text_embeds", tensors, rows)
    print(f"  cos between the two photos (fp32): {pairwise(img_out['fp32'])[0, 1]:.4f}")
    print(f"  cos between the texts (fp32):\n{np.round(pairwise(txt_out['fp32']), 4)}")

    fp = fingerprint(folder / "textual.onnx")
    image_variants = [(img_files[p], p) for p in IMAGE_VARIANTS if p in img_out]
    text_variants = [(txt_files[p], p) for p in ("int8-dynamic",) if p in txt_out]
    bt.write_bundle_toml(
        folder, name="hf-clip-tiny (random-weight test fixture)", embed_dim=32, logit_scale=LOGIT_SCALE,
        fingerprint=fp,
        image=bt.image_section("visual.onnx", "fp32", 224), image_variants=image_variants,
        text=bt.text_section("textual.onnx", "fp32"), text_variants=text_variants,
        comment="Written by models/tools/edgeclip_tools/export_fixtures.py: a reduced Hugging Face CLIP with random\n"
                "weights (seed %d). Test fixture only: its embeddings mean nothing." % SEED)
    meta = {"photos": json.dumps([Path(p).name for p in photos]), "texts": json.dumps(TEXTS),
            "seed": str(SEED), "fingerprint": fp, "onnxruntime": ort.__version__, "torch": torch.__version__}
    save_reference(folder, tensors, meta)
    bt.validate_bundle(folder)
    report[name] = dict(rows=rows, files=bt.file_sizes(folder), fingerprint=fp,
                        ops={f: bt.op_histogram(folder / f) for f in [*img_files.values(), *txt_files.values()]},
                        photo_cos=float(pairwise(img_out["fp32"])[0, 1]))


def export_fastvit_tiny(out: Path, photos, calib256, report: dict):
    name = "fastvit-tiny"
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    print(f"== {name}")
    train_form, model = build_fastvit_tiny(SEED)
    print(f"  params: {sum(p.numel() for p in model.parameters())} after re-parameterization "
          f"({sum(p.numel() for p in train_form.parameters())} before)")

    px = pixel_values(photos, FASTVIT_SIZE)
    with torch.no_grad():
        img_torch = model(torch.from_numpy(px)).numpy()
        img_train = train_form(torch.from_numpy(px)).numpy()
    print(f"  re-parameterized vs original (torch): max|diff| = {np.abs(img_torch - img_train).max():.3g}")

    bt.export_onnx(model, torch.from_numpy(px), folder / "visual.onnx", "pixel_values", "image_embeds")
    img_files = bt.build_variants(folder / "visual.onnx", "pixel_values", "image_embeds", IMAGE_VARIANTS,
                                  calib=calib256)
    tensors = {"pixel_values": px, "image_embeds.torch": img_torch}
    img_out = run_variants(folder, img_files, "pixel_values", px, "image_embeds", tensors)
    rows = []
    cosine_report(name, "image_embeds", tensors, rows)
    print(f"  cos between the two photos (fp32): {pairwise(img_out['fp32'])[0, 1]:.4f}")

    fp = fingerprint(folder / "visual.onnx")
    image_variants = [(img_files[p], p) for p in IMAGE_VARIANTS if p in img_out]
    bt.write_bundle_toml(
        folder, name="fastvit-tiny (random-weight test fixture)", embed_dim=FASTVIT_TINY["num_classes"],
        logit_scale=LOGIT_SCALE, fingerprint=fp,
        image=bt.image_section("visual.onnx", "fp32", FASTVIT_SIZE), image_variants=image_variants,
        comment="Written by models/tools/edgeclip_tools/export_fixtures.py: timm FastViT with fastvit_mci0's block types\n"
                "(MobileCLIP-S0's image tower), shrunk, random weights (seed %d), re-parameterized.\n"
                "Test fixture only: its embeddings mean nothing. No text tower." % SEED)
    meta = {"photos": json.dumps([Path(p).name for p in photos]), "seed": str(SEED), "fingerprint": fp,
            "onnxruntime": ort.__version__, "torch": torch.__version__}
    save_reference(folder, tensors, meta)
    bt.validate_bundle(folder)
    report[name] = dict(rows=rows, files=bt.file_sizes(folder), fingerprint=fp,
                        ops={f: bt.op_histogram(folder / f) for f in img_files.values()},
                        photo_cos=float(pairwise(img_out["fp32"])[0, 1]))


def export_softmax_qdq(out: Path):
    """tests/data/models/softmax-qdq.onnx: the smallest graph that shows tract 0.23.9's QDQ Softmax
    bug (see src/model/tract_fixes.rs, `unfold_quantized_softmax`), shaped like an image tower so the
    runtime loads it: `pixel_values` f32 [N,3,4,4] -> QuantizeLinear (scale 0.05, zero point 128)
    -> DequantizeLinear -> Softmax(axis=-1) -> QuantizeLinear (scale 1/255, zero point 0) ->
    DequantizeLinear -> Reshape -> `image_embeds` [N,48]: each group of 4 outputs is a softmax
    row, so it sums to 1 (within 4/255). This is the pattern onnxruntime's QDQ quantizer writes
    around an attention Softmax (FastViT's attention stage). Unpatched tract folds the middle
    three nodes into a 256-entry lookup table and returns 1.0 everywhere."""
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("QuantizeLinear", ["pixel_values", "s_in", "z_in"], ["x_q"]),
        helper.make_node("DequantizeLinear", ["x_q", "s_in", "z_in"], ["x_dq"]),
        helper.make_node("Softmax", ["x_dq"], ["p"], axis=-1),
        helper.make_node("QuantizeLinear", ["p", "s_out", "z_out"], ["p_q"]),
        helper.make_node("DequantizeLinear", ["p_q", "s_out", "z_out"], ["p_dq"]),
        helper.make_node("Reshape", ["p_dq", "shape"], ["image_embeds"]),
    ]
    init = [helper.make_tensor("s_in", TensorProto.FLOAT, [], [0.05]),
            helper.make_tensor("z_in", TensorProto.UINT8, [], [128]),
            helper.make_tensor("s_out", TensorProto.FLOAT, [], [1 / 255]),
            helper.make_tensor("z_out", TensorProto.UINT8, [], [0]),
            helper.make_tensor("shape", TensorProto.INT64, [2], [0, -1])]
    graph = helper.make_graph(
        nodes, "softmax_qdq",
        [helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, ["N", 3, 4, 4])],
        [helper.make_tensor_value_info("image_embeds", TensorProto.FLOAT, ["N", 48])], init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", bt.OPSET)],
                              producer_name="edgeclip export_fixtures.py")
    model.ir_version = 8
    path = out / "softmax-qdq.onnx"
    onnx.save(model, str(path))
    bt.check_onnx(path)
    x = np.random.default_rng(SEED).normal(size=(1, 3, 4, 4)).astype(np.float32)
    rows = bt.ort_run(path, "pixel_values", x).reshape(-1, 4)
    assert np.all(np.abs(rows.sum(1) - 1) <= 4 / 255), rows
    print(f"== softmax-qdq: {path} ({path.stat().st_size} bytes)")


# ---------------------------------------------------------------------------------------------
# README
# ---------------------------------------------------------------------------------------------

def write_readme(out: Path, report: dict):
    import timm
    import transformers

    lines = ["# Model bundle fixtures", "",
             "Written by `python3 -m edgeclip_tools.export_fixtures` (after "
             "`python3 -m edgeclip_tools.make_preprocess_refs`, whose photos it feeds the models). "
             "Random weights with fixed seeds: **the embeddings mean nothing**; the fixtures pin down "
             "what onnxruntime computes for these graphs, so the Rust runtime (tract) can be checked "
             "against it, variant by variant.", "",
             f"Made with torch {torch.__version__}, transformers {transformers.__version__}, "
             f"timm {timm.__version__}, onnx {onnx.__version__}, onnxruntime {ort.__version__} "
             "(see `models/tools/requirements.txt`). Export: `torch.onnx.export(..., dynamo=False)`, "
             f"opset {bt.OPSET}, dynamic batch axis. Every file passes `onnx.checker.check_model"
             "(full_check=True)` and loads and runs in onnxruntime.", "",
             "## Bundles", "",
             "- `hf-clip-tiny/`: a reduced Hugging Face CLIP (transformers `CLIPVisionModelWithProjection` "
             "224 px, patch 32, hidden 64, 2 layers, 2 heads, MLP 256, projection 32, quick-GELU, eager "
             "attention; `CLIPTextModelWithProjection` vocab 49408, hidden 32, 2 layers, 2 heads, MLP 128, "
             "77 positions, projection 32, EOS 49407 pooling), each wrapped to return only the embeds. "
             "Image tower `visual.onnx` (fp32, default), `visual.int8-dynamic.onnx`, `visual.int8-qdq.onnx`; "
             "text tower `textual.onnx` (fp32, default), `textual.int8-dynamic.onnx`. "
             "Fingerprint = sha256(textual.onnx)[:16].",
             "- `fastvit-tiny/`: timm `FastVit` with `fastvit_mci0`'s structure (MobileCLIP-S0's image "
             "tower: MobileOne stem, three RepMixer stages, an attention stage with a 7x7 conditional "
             "positional encoding (RepCPE), SE in the last two downsamplings, large-kernel downsampling "
             "convolutions with activation, a final MobileOne conv with SE, average pooling, linear head) "
             f"shrunk to depths {FASTVIT_TINY['layers']} and widths {FASTVIT_TINY['embed_dims']} (mci0: "
             "(2, 6, 10, 2) and (64, 128, 256, 512)), a 32-wide embedding head, 256 px input, eval mode and "
             "re-parameterized (`timm.utils.reparameterize_model`, as MobileCLIP deploys it). Weights are "
             "variance-preserving random (timm's own init gives every input the same embedding when "
             "untrained), with random BatchNorm statistics and layer scales so the folding is exercised. "
             "Variants fp32 (default) / int8-dynamic / int8-qdq. No text tower: fingerprint = "
             "sha256(visual.onnx)[:16].",
             "- `softmax-qdq.onnx`: six nodes, `pixel_values` [N,3,4,4] -> QuantizeLinear -> "
             "DequantizeLinear -> Softmax -> QuantizeLinear -> DequantizeLinear -> Reshape -> "
             "`image_embeds` [N,48]: the minimal repro of tract 0.23.9 folding a QDQ Softmax into a "
             "wrong lookup table (every output 1.0); each group of 4 outputs must sum to 1. No bundle, "
             "no reference file: the test checks the softmax property.", "",
             "Quantization (onnxruntime.quantization, after `quant_pre_process`): **int8-dynamic** = "
             "`quantize_dynamic(weight_type=QInt8)` (MatMulInteger / ConvInteger with "
             "DynamicQuantizeLinear; the text tower's token embedding becomes an int8 table + "
             "DequantizeLinear). **int8-qdq** = `quantize_static(QuantFormat.QDQ, activation QUInt8, "
             f"weight QInt8, per_channel=True, MinMax, op_types_to_quantize={list(bt.QDQ_OP_TYPES)})` "
             f"calibrated on {N_CALIB} random crops of scikit-image sample photos through the same "
             "transform (not the reference photos). Only MatMul / Conv / Gemm are quantized; residual "
             "Adds, LayerNorm, Softmax and GELU stay float: quantizing every op onnxruntime can (its "
             "default) drops the random full-size ViT-B/32 of `edgeclip_tools.make_vitb32` to cosine 0.88-0.90 "
             "against fp32, versus 0.9998 this way.", "",
             "## reference.safetensors", "",
             "| tensor | what |", "|---|---|",
             "| `pixel_values` f32 [2,3,S,S] | `tests/data/preprocess/landscape_coffee.png` and "
             "`portrait_rocket.jpg` through PIL + torchvision: exif_transpose, RGB, Resize(S, bicubic), "
             "CenterCrop(S), ToTensor, Normalize(CLIP mean/std); S = 224 (hf-clip-tiny) or 256 (fastvit-tiny) |",
             "| `image_embeds.torch` | the PyTorch fp32 output (before export) |",
             "| `image_embeds.<precision>` | onnxruntime's output for that variant (CPU, one thread, default "
             "graph optimizations), raw (not L2-normalised) |",
             "| `image_embeds.int8-qdq.ort-noopt` | the int8-qdq output with all onnxruntime graph "
             "optimizations off, the graph run as written (QDQ as float ops between Quantize/Dequantize "
             "pairs, no fused integer kernels) |",
             "| `input_ids` int64 [3,77] | hf-clip-tiny: `open_clip.tokenize(" + json.dumps(TEXTS) + ")` |",
             "| `text_embeds.torch`, `text_embeds.fp32`, `text_embeds.int8-dynamic` | "
             "hf-clip-tiny: the same for the text tower |", "",
             "Metadata: `photos`, `texts` (JSON arrays), `seed`, `fingerprint`, library versions.", "",
             "## Cosines against onnxruntime fp32", "",
             "Per input row (photo 1, photo 2; or the three texts), with the largest absolute difference.", "",
             "| bundle | output | cosine vs ORT fp32 | max abs diff |", "|---|---|---|---|"]
    for name, r in report.items():
        for bundle, key, _, cos, maxabs in r["rows"]:
            lines.append(f"| {bundle} | `{key}` | {' / '.join(f'{c:.6f}' for c in cos)} | {maxabs:.3g} |")
    lines += ["", "For scale: the cosine between the two photos' fp32 embeddings is "
              + ", ".join(f"{n}: {r['photo_cos']:.4f}" for n, r in report.items())
              + ": the towers do tell the two photos apart, so a preprocessing or graph error shows. "
              "fastvit-tiny's int8-qdq is the least faithful (down to ~0.95 on the dark rocket photo): "
              "its 8- to 64-channel random convolutions quantize poorly (per-tensor activations, "
              "Percentile calibration or more calibration images change it by < 0.02); it is there to "
              "check that a runtime computes the same as onnxruntime, not to rate int8 accuracy.",
              "", "## Files", ""]
    for name, r in report.items():
        lines.append(f"- `{name}/` (fingerprint `{r['fingerprint']}`): "
                     + ", ".join(f"`{f}` {s / 1e6:.2f} MB" if s > 1e5 else f"`{f}` {s / 1e3:.1f} kB"
                                 for f, s in r["files"].items()))
    lines += ["", "## Ops per graph", ""]
    for name, r in report.items():
        for f, ops in sorted(r["ops"].items()):
            lines.append(f"- `{name}/{f}`: " + ", ".join(f"{k} {v}" for k, v in ops.items()))
    (out / "README.md").write_text("\n".join(lines) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO / "tests/data/models")
    ap.add_argument("--photos", type=Path, default=REPO / "tests/data/preprocess",
                    help="folder holding the reference photos (made by edgeclip_tools.make_preprocess_refs)")
    ap.add_argument("--only", choices=["hf-clip-tiny", "fastvit-tiny", "softmax-qdq"], action="append",
                    help="export only these bundles (repeatable); the README is written only for a full run")
    args = ap.parse_args()
    bt.set_threads()
    photos = [args.photos / p for p in PHOTOS]
    missing = [p for p in photos if not p.exists()]
    if missing:
        sys.exit(f"missing {missing}: run models/tools/edgeclip_tools/make_preprocess_refs.py first")
    args.out.mkdir(parents=True, exist_ok=True)
    only = args.only or ["hf-clip-tiny", "fastvit-tiny", "softmax-qdq"]

    t0 = time.time()
    report = {}
    if "hf-clip-tiny" in only:
        export_hf_clip_tiny(args.out, photos, bt.calibration_images(224, N_CALIB, SEED), report)
    if "softmax-qdq" in only:
        export_softmax_qdq(args.out)
    if "fastvit-tiny" in only:
        export_fastvit_tiny(args.out, photos, bt.calibration_images(FASTVIT_SIZE, N_CALIB, SEED), report)
    if args.only is None:
        write_readme(args.out, report)
    total = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    print(f"done in {time.time() - t0:.0f} s; {total / 1e6:.2f} MB under {args.out}")


if __name__ == "__main__":
    sys.exit(main())
