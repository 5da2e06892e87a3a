#!/usr/bin/env python3
"""Write the image preprocessing fixtures: input images plus the uint8 reference each must give.

    python3 -m edgeclip_tools.make_preprocess_refs              # writes tests/data/preprocess/
    python3 -m edgeclip_tools.make_preprocess_refs --refs-only  # keep the images, redo the refs
    python3 -m edgeclip_tools.make_preprocess_refs --out DIR

Inputs are made from scikit-image's bundled sample photographs (`skimage.data`, no download),
saved as JPEG (quality 90) or PNG, chosen to cover landscape / portrait / square, upscaling
(smaller than 224 on both sides), a large (> 2000 px) input, grayscale, RGBA with real
transparency, a palette PNG, and EXIF orientations 6, 8 and 3 (pixels stored rotated, so the
image only looks right when the orientation is applied).

The reference for each input `<name>.<ext>` is `<name>.ref224.png`: an 8-bit RGB PNG (lossless)
holding exactly what this pipeline gives, before normalisation:

    PIL.Image.open -> ImageOps.exif_transpose -> .convert("RGB")
      -> torchvision.transforms.Resize(224, interpolation=BICUBIC) -> CenterCrop(224)

Two inputs also get `<name>.ref256.png` (the same at 256, the fastvit fixture's input size).
The Rust side normalises with the bundle's mean/std itself, which is exact. A `manifest.json`
lists every case (file, size, EXIF orientation, references) for tests to iterate over.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data as skdata

from .clip_common import REPO, load_rgb, resize_crop

JPEG_QUALITY = 90
EXIF_ORIENTATION = 0x0112

# Cases that also get a 256 reference: the two photos the model fixtures are fed.
REF256 = ("landscape_coffee", "portrait_rocket")


def save_jpeg(img: Image.Image, path: Path, orientation: int | None = None):
    kwargs = dict(quality=JPEG_QUALITY)
    if orientation is not None:
        exif = Image.Exif()
        exif[EXIF_ORIENTATION] = orientation
        kwargs["exif"] = exif.tobytes()
    img.save(path, "JPEG", **kwargs)


def stored_for_orientation(img: Image.Image, orientation: int) -> Image.Image:
    """The pixel data to store so that applying EXIF `orientation` gives `img` back.
    exif_transpose applies ROTATE_270 for 6, ROTATE_90 for 8, ROTATE_180 for 3; store the inverse."""
    inverse = {6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270, 3: Image.Transpose.ROTATE_180}
    return img.transpose(inverse[orientation])


def make_inputs(out: Path):
    """Create the input images. Returns a list of dicts: name, file, orientation, what it covers."""
    coffee = Image.fromarray(skdata.coffee())        # 600x400 RGB
    rocket = Image.fromarray(skdata.rocket())        # 640x427 RGB
    astronaut = Image.fromarray(skdata.astronaut())  # 512x512 RGB
    chelsea = Image.fromarray(skdata.chelsea())      # 451x300 RGB
    camera = Image.fromarray(skdata.camera())        # 512x512 L
    # 500x500 RGBA, fully opaque as shipped; downscaled to 320x320 to keep the PNG small.
    logo = Image.fromarray(skdata.logo()).resize((320, 320), Image.Resampling.LANCZOS)
    colorwheel = Image.fromarray(skdata.colorwheel())  # 371x370 RGB

    cases = []

    def add(name, img, ext, covers, orientation=None):
        file = f"{name}.{ext}"
        if ext == "jpg":
            save_jpeg(img, out / file, orientation)
        else:
            img.save(out / file, "PNG", optimize=True)
        cases.append(dict(name=name, file=file, orientation=orientation, covers=covers))

    # Downscaled from 600x400 to keep the lossless file small.
    add("landscape_coffee", coffee.resize((450, 300), Image.Resampling.LANCZOS), "png",
        "landscape 450x300, lossless PNG source (no JPEG decoder differences): resize is exactly checkable")
    add("landscape_rocket", rocket, "jpg",
        "landscape 640x427 JPEG: long side 224*640/427 = 335.7 truncates to 335, crop offset 55.5 rounds to 56")
    add("square_astronaut", astronaut, "jpg", "square 512x512 JPEG: no crop after the resize")
    # A portrait crop of the rocket photo: 280x427 -> 224x341, crop offset (341-224)/2 = 58.5,
    # which Python's round() (banker's rounding) takes to 58, not 59.
    add("portrait_rocket", rocket.crop((180, 0, 460, 427)), "jpg",
        "portrait 280x427 JPEG: long side 341, crop offset 58.5 rounds half-to-even to 58")
    add("small_chelsea", chelsea.resize((150, 100), Image.Resampling.LANCZOS), "jpg",
        "150x100 JPEG, smaller than 224 on both sides: bicubic upscaling to 336x224")
    # Upscaled 3.5x with LANCZOS: 2240x1495, a large input (heavy antialiased downscaling).
    add("large_rocket", rocket.resize((2240, 1495), Image.Resampling.LANCZOS), "jpg",
        "2240x1495 JPEG (> 2000 px): strong downscaling (factor 6.7), bicubic support ~13 px per side")
    add("gray_camera", camera, "jpg",
        "grayscale (1-component) JPEG 512x512: grey replicated to R=G=B")
    # Give the logo real transparency: alpha ramps 0..255 left to right and is 0 in a disc, while
    # the colour under alpha 0 is left as it is. convert("RGB") drops alpha without compositing.
    rgba = np.array(logo)
    h, w = rgba.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    alpha = np.round(255 * xx / (w - 1)).astype(np.uint8)
    alpha[(yy - h * 0.7) ** 2 + (xx - w * 0.3) ** 2 < (0.15 * w) ** 2] = 0
    rgba[..., 3] = alpha
    add("rgba_logo", Image.fromarray(rgba, "RGBA"), "png",
        "RGBA PNG 320x320 with an alpha ramp and a fully transparent disc: alpha is dropped, not composited")
    add("palette_colorwheel", colorwheel.quantize(64, dither=Image.Dither.NONE), "png",
        "palette (indexed, 64 colours) PNG 371x370: long side int(224*371/370) = 224, so 224x224 and no crop")
    add("exif6_chelsea", stored_for_orientation(chelsea, 6), "jpg",
        "EXIF Orientation 6: stored 300x451, shown 451x300 after rotating 90 degrees clockwise", 6)
    add("exif8_coffee", stored_for_orientation(coffee.resize((300, 200), Image.Resampling.LANCZOS), 8),
        "jpg", "EXIF Orientation 8: stored 200x300, shown 300x200 after rotating 90 degrees counter-clockwise", 8)
    add("exif3_astronaut", stored_for_orientation(astronaut.crop((96, 0, 416, 400)), 3), "jpg",
        "EXIF Orientation 3: stored upside down, portrait 320x400, shown after rotating 180 degrees", 3)
    return cases


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO / "tests/data/preprocess")
    ap.add_argument("--refs-only", action="store_true",
                    help="do not rewrite the input images; recompute the references from manifest.json")
    args = ap.parse_args()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)

    if args.refs_only:
        cases = json.loads((out / "manifest.json").read_text())["cases"]
    else:
        cases = make_inputs(out)

    for case in cases:
        src = out / case["file"]
        raw = Image.open(src)
        case["stored_size"] = list(raw.size)  # [width, height] as stored in the file
        case["mode"] = raw.mode
        img = load_rgb(src)
        case["size"] = list(img.size)  # [width, height] after the EXIF orientation
        case["refs"] = {}
        for size in (224, 256) if case["name"] in REF256 else (224,):
            ref = resize_crop(size)(img)
            assert ref.size == (size, size) and ref.mode == "RGB"
            ref_file = f"{case['name']}.ref{size}.png"
            ref.save(out / ref_file, "PNG", optimize=True)
            case["refs"][str(size)] = ref_file
        case["bytes"] = src.stat().st_size
        print(f"{case['file']:28s} {raw.mode:5s} stored {raw.size[0]}x{raw.size[1]:<5d} "
              f"shown {img.size[0]}x{img.size[1]:<5d} {case['bytes'] / 1024:7.1f} KiB")

    manifest = {
        "pipeline": "PIL.Image.open -> ImageOps.exif_transpose -> convert('RGB') -> "
                    "torchvision Resize(size, BICUBIC) -> CenterCrop(size); refs are 8-bit RGB PNG",
        "cases": cases,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    total = sum(p.stat().st_size for p in out.iterdir() if p.is_file())
    print(f"{len(cases)} cases, {total / 1024:.0f} KiB in {out}")


if __name__ == "__main__":
    sys.exit(main())
