"""Helpers shared by the model tools of the edgeclip_tools package (imported, not run)."""

import hashlib
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

# The repository root (this package, models/tools/edgeclip_tools/, is three levels below it).
REPO = Path(__file__).resolve().parents[3]

# OpenAI CLIP's normalisation (open_clip.constants.OPENAI_DATASET_MEAN / _STD).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# Open_clip's logit scale of a trained CLIP (exp(4.6052) = 100).
LOGIT_SCALE = 100.0


def load_rgb(path) -> Image.Image:
    """Open an image the way the reference pipeline does: apply the EXIF orientation, then
    convert to 8-bit RGB (grey is replicated, alpha is dropped without compositing, palettes are
    expanded)."""
    img = Image.open(path)
    img = ImageOps.exif_transpose(img)
    return img.convert("RGB")


def resize_crop(size: int, interpolation: str = "bicubic", resize: str = "shortest"):
    """torchvision's Resize(size, BICUBIC) + CenterCrop(size) on a PIL image: the uint8 image the
    Rust preprocessing must reproduce before normalisation.

    `interpolation` and `resize` take bundle.toml's values: "bicubic" | "bilinear" (both PIL's
    antialiased filters, which torchvision uses on PIL images), "shortest" (shortest side to
    `size`, then the centre crop) | "stretch" (both sides to `size`, aspect ratio not kept)."""
    from torchvision import transforms as T

    modes = {"bicubic": T.InterpolationMode.BICUBIC, "bilinear": T.InterpolationMode.BILINEAR}
    if interpolation not in modes:
        raise ValueError(f"interpolation {interpolation!r}: expected one of {sorted(modes)}")
    if resize == "shortest":
        return T.Compose([T.Resize(size, interpolation=modes[interpolation]), T.CenterCrop(size)])
    if resize == "stretch":
        return T.Resize((size, size), interpolation=modes[interpolation])
    raise ValueError(f"resize {resize!r}: expected 'shortest' or 'stretch'")


def clip_transform(size: int, mean=CLIP_MEAN, std=CLIP_STD, interpolation: str = "bicubic",
                   resize: str = "shortest"):
    """The full CLIP image transform (open_clip's eval transform with resize_mode 'shortest'):
    Resize + CenterCrop + ToTensor (/255) + Normalize, giving f32 [3,size,size]. The keyword
    arguments take a bundle's other settings (see resize_crop)."""
    from torchvision import transforms as T

    return T.Compose([
        resize_crop(size, interpolation, resize),
        T.ToTensor(),
        T.Normalize(mean, std),
    ])


def pixel_values(paths, size: int) -> np.ndarray:
    """f32 [N,3,size,size] for a list of image files, through load_rgb + clip_transform."""
    import torch

    tf = clip_transform(size)
    return torch.stack([tf(load_rgb(p)) for p in paths]).numpy().astype(np.float32)


def fingerprint(path) -> str:
    """The bundle fingerprint: the first 16 hex digits of the SHA-256 of a file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two [N,D] arrays (in float64)."""
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def log(msg: str) -> None:
    """A progress line, stamped with the time of day."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def to_tensor(x_uint8: np.ndarray, mean=CLIP_MEAN, std=CLIP_STD):
    """uint8 [N,H,W,3] -> normalised f32 torch [N,3,H,W] (CLIP mean / std unless given)."""
    import torch

    x = torch.from_numpy(x_uint8).permute(0, 3, 1, 2).float().div_(255)
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
