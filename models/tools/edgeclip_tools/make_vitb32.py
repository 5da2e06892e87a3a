#!/usr/bin/env python3
"""Write a FULL-SIZE random-weight CLIP ViT-B/32 image tower bundle, for benchmarks and for
checking the runtime on a real-sized graph. Not committed: it goes under target/ (ignored).

    python3 -m edgeclip_tools.make_preprocess_refs   # once, for the reference photos
    python3 -m edgeclip_tools.make_vitb32            # writes target/models/vit-b32/
    python3 -m edgeclip_tools.make_vitb32 --out DIR --no-qdq
    python3 -m edgeclip_tools.make_vitb32 --out DIR --no-int8 --fp16   # the GPU check's bundle

The tower is transformers' CLIPVisionModelWithProjection built from CLIPVisionConfig's defaults,
which are openai/clip-vit-base-patch32's vision config (hidden 768, 12 layers, 12 heads, MLP 3072,
patch 32, image 224, quick-GELU) plus projection_dim 512 (CLIPConfig's default, as in ViT-B/32),
with random weights (fixed seed; nothing is downloaded). ~88 M parameters: visual.onnx is about
350 MB, the int8 variants about 90 MB each.

Same layout as the fixtures from edgeclip_tools.export_fixtures: bundle.toml (image tower only, so the
fingerprint is sha256(visual.onnx)[:16]), visual.onnx (fp32, default), visual.int8-dynamic.onnx,
visual.int8-qdq.onnx, and reference.safetensors with `pixel_values` [2,3,224,224],
`image_embeds.torch`, `image_embeds.<precision>` and `image_embeds.int8-qdq.ort-noopt`.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import onnxruntime as ort
import torch

from . import bundle_tools as bt
from .clip_common import LOGIT_SCALE, REPO, cosine_rows, fingerprint, pixel_values
from .export_fixtures import N_CALIB, PHOTOS, EmbedsOnly, run_variants

SEED = 20241127


def build_vitb32(seed: int):
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    cfg = CLIPVisionConfig(projection_dim=512)  # the other defaults are ViT-B/32's
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.intermediate_size,
            cfg.patch_size, cfg.image_size) == (768, 12, 12, 3072, 32, 224), cfg
    cfg._attn_implementation = "eager"
    torch.manual_seed(seed)
    return EmbedsOnly(CLIPVisionModelWithProjection(cfg).eval(), "pixel_values", "image_embeds").eval()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO / "target/models/vit-b32")
    ap.add_argument("--photos", type=Path, default=REPO / "tests/data/preprocess")
    ap.add_argument("--no-qdq", action="store_true", help="skip the (slowest) static QDQ variant")
    ap.add_argument("--no-int8", action="store_true", help="skip both int8 variants")
    ap.add_argument("--fp16", action="store_true", help="add the fp16 (GPU) variant")
    args = ap.parse_args()
    bt.set_threads()
    photos = [args.photos / p for p in PHOTOS]
    if not all(p.exists() for p in photos):
        sys.exit("missing reference photos: run models/tools/edgeclip_tools/make_preprocess_refs.py first")
    folder = args.out
    folder.mkdir(parents=True, exist_ok=True)
    timings = {}

    t = time.time()
    model = build_vitb32(SEED)
    px = pixel_values(photos, 224)
    with torch.no_grad():
        img_torch = model(torch.from_numpy(px)).numpy()
    print(f"params: {sum(p.numel() for p in model.parameters()) / 1e6:.1f} M")
    bt.export_onnx(model, torch.from_numpy(px), folder / "visual.onnx", "pixel_values", "image_embeds")
    del model
    timings["build + export"] = time.time() - t

    t = time.time()
    variants = () if args.no_int8 else ("int8-dynamic",) if args.no_qdq else ("int8-dynamic", "int8-qdq")
    variants += ("fp16",) if args.fp16 else ()
    calib = bt.calibration_images(224, N_CALIB, SEED) if "int8-qdq" in variants else None
    files = bt.build_variants(folder / "visual.onnx", "pixel_values", "image_embeds", variants, calib=calib)
    timings["quantize + check"] = time.time() - t

    t = time.time()
    tensors = {"pixel_values": px, "image_embeds.torch": img_torch}
    outs = run_variants(folder, files, "pixel_values", px, "image_embeds", tensors)
    timings["onnxruntime runs"] = time.time() - t
    for k in sorted(tensors):
        if k.startswith("image_embeds.") and k != "image_embeds.fp32":
            cos = cosine_rows(tensors[k], tensors["image_embeds.fp32"])
            print(f"cos({k}, image_embeds.fp32) = {', '.join(f'{c:.6f}' for c in cos)}")

    fp = fingerprint(folder / "visual.onnx")
    bt.write_bundle_toml(
        folder, name="vit-b32 (random-weight, full size)", embed_dim=512, logit_scale=LOGIT_SCALE,
        fingerprint=fp, image=bt.image_section("visual.onnx", "fp32", 224),
        # fp16 is listed even where onnxruntime's CPU provider cannot run it: it is for GPUs.
        image_variants=[(files[p], p) for p in variants if p in outs or (p == "fp16" and p in files)],
        comment="Written by models/tools/edgeclip_tools/make_vitb32.py: Hugging Face CLIP ViT-B/32 image tower, full\n"
                "size, random weights (seed %d). For benchmarks; its embeddings mean nothing." % SEED)
    bt.save_safetensors(folder / "reference.safetensors", tensors,
                        {"photos": json.dumps([p.name for p in photos]), "seed": str(SEED),
                         "fingerprint": fp, "onnxruntime": ort.__version__, "torch": torch.__version__})
    bt.validate_bundle(folder)
    for f, s in bt.file_sizes(folder).items():
        print(f"  {f}: {s / 1e6:.1f} MB")
    for k, v in timings.items():
        print(f"  {k}: {v:.0f} s")
    print(f"total {sum(timings.values()):.0f} s -> {folder}")


if __name__ == "__main__":
    sys.exit(main())
