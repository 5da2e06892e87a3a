#!/usr/bin/env python3
"""An executable spec of the preprocessing the runtime must reproduce, in plain numpy, checked
against Pillow/torchvision on every fixture in tests/data/preprocess/.

    python3 -m edgeclip_tools.pil_resize_spec

It is the reference pipeline (`PIL.Image.resize(BICUBIC)` as torchvision's Resize calls it, then
CenterCrop) written out without Pillow, so that a Rust port has something short to follow:
torchvision's output size and crop rules, Pillow's coefficient computation, its 22-bit fixed
point, and its 8-bit intermediate between the horizontal and the vertical pass. It prints the
number of differing pixels per case (all 0 when the spec is right).
"""

import json
import sys

import numpy as np
from PIL import Image

from .clip_common import REPO, load_rgb

PRECISION_BITS = 32 - 8 - 2  # Pillow: 8 bits of result, 2 bits of headroom, in an int32


def cubic(x: float, a: float = -0.5) -> float:
    """Pillow's bicubic kernel (Keys, a = -0.5), support 2."""
    x = abs(x)
    if x < 1.0:
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    if x < 2.0:
        return (((x - 5.0) * x + 8.0) * x - 4.0) * a
    return 0.0


def coefficients(in_size: int, out_size: int):
    """Per output index: (first input index, fixed-point weights), as Pillow's precompute_coeffs
    and normalize_coeffs_8bpc compute them."""
    scale = in_size / out_size
    filterscale = max(scale, 1.0)  # antialiasing: widen the kernel when downscaling
    support = 2.0 * filterscale
    out = []
    for i in range(out_size):
        center = (i + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size)
        w = [cubic((x - center + 0.5) / filterscale) for x in range(xmin, xmax)]
        total = sum(w)
        w = [v / total for v in w] if total != 0.0 else w
        # Round half away from zero to 22 fractional bits.
        k = [int(v * (1 << PRECISION_BITS) + (0.5 if v >= 0 else -0.5)) for v in w]
        out.append((xmin, np.array(k, dtype=np.int64)))
    return out


def resample_axis1(a: np.ndarray, out_size: int) -> np.ndarray:
    """One pass along axis 1 of a uint8 [rows, cols, 3] array, giving uint8 (rounded, clipped)."""
    out = np.empty((a.shape[0], out_size, a.shape[2]), np.uint8)
    for i, (xmin, k) in enumerate(coefficients(a.shape[1], out_size)):
        acc = (1 << (PRECISION_BITS - 1)) + np.tensordot(
            a[:, xmin:xmin + len(k), :].astype(np.int64), k, axes=([1], [0]))
        out[:, i, :] = np.clip(acc >> PRECISION_BITS, 0, 255)
    return out


def resize_bicubic(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    """Pillow's Image.resize((width, height), BICUBIC) for 8-bit RGB: horizontal pass first, its
    result stored as uint8, then the vertical pass. A pass is skipped when that size is unchanged."""
    a = rgb
    if width != a.shape[1]:
        a = resample_axis1(a, width)
    if height != a.shape[0]:
        a = resample_axis1(a.transpose(1, 0, 2), height).transpose(1, 0, 2)
    return a


def resize_crop(rgb: np.ndarray, size: int) -> np.ndarray:
    """torchvision Resize(size) (shortest side) + CenterCrop(size)."""
    h, w = rgb.shape[:2]
    short, long = min(w, h), max(w, h)
    new_long = int(size * long / short)  # truncation
    new_w, new_h = (size, new_long) if w <= h else (new_long, size)
    if (new_w, new_h) != (w, h):
        rgb = resize_bicubic(rgb, new_w, new_h)
    top = int(round((new_h - size) / 2.0))  # Python round: half to even
    left = int(round((new_w - size) / 2.0))
    return rgb[top:top + size, left:left + size]


def main():
    folder = REPO / "tests/data/preprocess"
    cases = json.loads((folder / "manifest.json").read_text())["cases"]
    bad = 0
    for case in cases:
        rgb = np.asarray(load_rgb(folder / case["file"]))
        for size, ref_file in case["refs"].items():
            ref = np.asarray(Image.open(folder / ref_file).convert("RGB"))
            got = resize_crop(rgb, int(size))
            diff = int((got != ref).any(axis=2).sum())
            bad += diff
            print(f"{ref_file:32s} differing pixels: {diff}")
    print("spec matches Pillow + torchvision" if bad == 0 else "MISMATCH")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
