#!/usr/bin/env python3
"""Add the GPU variant of a bundle's image tower: an fp16 copy of its fp32 file, listed in
bundle.toml as `[[image.variants]] precision = "fp16"`.

    python3 -m edgeclip_tools.gpu_variant models/demo
    python3 -m edgeclip_tools.gpu_variant target/models/vit-b32

Why: edgeclip's CUDA path (tract-cuda) runs float graphs on the GPU, and picks a bundle's fp16
variant, else its fp32 one, over the int8 default: tract-cuda has no kernels for ONNX's int8
operators, which would run on the CPU. fp16 halves the weights' size and memory traffic and uses
the GPU's tensor cores; the fp32 variant stays there for GPUs (or checks) that want it.

The fp16 file takes and gives f32 like the others (Cast nodes at its edges), so the bundle's input
and output contract does not change. It is checked with onnx.checker and against the fp32 file on
onnxruntime (CPU) with calibration images: every cosine must be >= 0.999. The fingerprint is not
touched (it hashes the text tower, or the default image file).
"""

import argparse
import re
import sys
import tomllib
from pathlib import Path

import numpy as np

from . import bundle_tools as bt

MIN_COSINE = 0.999


def fp32_file(manifest: dict) -> str:
    image = manifest["image"]
    if image["precision"] == "fp32":
        return image["onnx"]
    for v in image.get("variants", []):
        if v["precision"] == "fp32":
            return v["onnx"]
    sys.exit("the image tower has no fp32 file to convert (neither the default nor a variant)")


def fp16_name(fp32: str) -> str:
    stem = Path(fp32).stem
    stem = stem[: -len(".fp32")] if stem.endswith(".fp32") else stem
    return str(Path(fp32).with_name(f"{stem}.fp16.onnx"))


def list_variant(toml_text: str, onnx_file: str) -> str:
    """bundle.toml with an fp16 image variant naming `onnx_file`: an existing fp16 entry is
    repointed, else a new entry goes after the last line of the [image] table and its variants."""
    manifest = tomllib.loads(toml_text)
    if any(v["precision"] == "fp16" for v in manifest["image"].get("variants", [])):
        return re.sub(r'(\[\[image\.variants\]\]\s*\nonnx\s*=\s*)"[^"]*"(\s*\nprecision\s*=\s*"fp16")',
                      lambda m: f'{m.group(1)}"{onnx_file}"{m.group(2)}', toml_text)
    lines = toml_text.splitlines()
    in_image, end = False, None
    for i, line in enumerate(lines):
        header = line.strip()
        if header.startswith("["):
            in_image = header in ("[image]", "[[image.variants]]")
        if in_image and header:
            end = i
    block = ["", "[[image.variants]]", f'onnx = "{onnx_file}"', 'precision = "fp16"']
    return "\n".join(lines[: end + 1] + block + lines[end + 1:]) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle", type=Path, help="the bundle folder")
    ap.add_argument("--samples", type=int, default=8, help="calibration images to compare on")
    args = ap.parse_args()
    bt.set_threads()
    folder = args.bundle
    toml_path = folder / "bundle.toml"
    manifest = tomllib.loads(toml_path.read_text())
    src = fp32_file(manifest)
    dst = fp16_name(src)
    bt.make_fp16(folder / src, folder / dst)
    bt.check_onnx(folder / dst)
    image = manifest["image"]
    x = bt.calibration_images(image["height"], args.samples, seed=1)
    a = bt.ort_run(folder / src, image["input"], x)
    b = bt.ort_run(folder / dst, image["input"], x).astype(np.float32)
    cos = [float(np.dot(p, q) / (np.linalg.norm(p) * np.linalg.norm(q))) for p, q in zip(a, b)]
    print(f"{dst}: {(folder / dst).stat().st_size / 1e6:.2f} MB; cosine to {src} on onnxruntime: "
          f"min {min(cos):.6f}, mean {np.mean(cos):.6f} over {len(cos)} images")
    if min(cos) < MIN_COSINE:
        (folder / dst).unlink()
        sys.exit(f"fp16 drifts too far from fp32 (min cosine {min(cos):.6f} < {MIN_COSINE}); not added")
    toml_path.write_text(list_variant(toml_path.read_text(), dst))
    bt.validate_bundle(folder)
    print(f"{toml_path}: lists {dst} as the fp16 image variant")


if __name__ == "__main__":
    main()
