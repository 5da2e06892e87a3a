"""Synthetic camera-like scenes of coloured shapes, with captions.

This module renders the training and evaluation data of the edgeclip demo bundle
(see ``models/README.md``). A scene holds zero to three objects; each object is one
of 6 shapes in one of 8 colours. Scenes are meant to look like camera frames:

* backgrounds: random crops of scikit-image's sample photographs (flipped, colour
  jittered), tinted textures (brick, grass, gravel) and plain walls with gradients;
* objects: random size (10-60% of the view's side), position, rotation, aspect,
  colour jitter, shading, a soft drop shadow, sometimes a partial occluder or a
  crop by the frame border;
* camera effects: lighting gradient, exposure / white balance jitter, blur,
  sensor noise and JPEG compression.

Everything is drawn with PIL (``ImageDraw`` polygons on a mask) at the frame
resolution, so a frame rendered at 640x480 and shrunk by the runtime is naturally
supersampled. All randomness comes from a ``numpy.random.Generator``: a scene is a
pure function of its seed.

The *view* of a frame is its centred square (what the runtime keeps after
"resize shortest side + centre crop"); objects are placed in the view.

Six colour-shape combinations are HELD OUT of all training (teacher and student,
images and captions): see ``HELD_OUT``. ``sample_combo(..., allow_held_out=False)``
never returns them and ``render_scene`` refuses them unless ``allow_held_out``.
"""

from __future__ import annotations

import argparse
import io
import math
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SHAPES = ["circle", "square", "triangle", "star", "cross", "ring"]
COLOURS = ["red", "green", "blue", "yellow", "orange", "purple", "white", "black"]
COLOUR_RGB = {
    "red": (215, 30, 35),
    "green": (35, 165, 60),
    "blue": (35, 70, 215),
    "yellow": (240, 215, 35),
    "orange": (245, 135, 25),
    "purple": (135, 45, 175),
    "white": (242, 242, 238),
    "black": (22, 22, 24),
}
HELD_OUT = {
    ("purple", "star"),
    ("orange", "ring"),
    ("green", "triangle"),
    ("white", "cross"),
    ("yellow", "square"),
    ("black", "circle"),
}
ALL_COMBOS = [(c, s) for c in COLOURS for s in SHAPES]
SEEN_COMBOS = [cs for cs in ALL_COMBOS if cs not in HELD_OUT]
EMPTY_PROMPT = "an empty scene"


def prompt_for(colour: str, shape: str) -> str:
    """The canonical prompt text of a colour-shape combination (the bundle's prompts)."""
    return f"a photo of a {colour} {shape}"


#: The 49 prompts of the bundle, in order: 48 colour-shape prompts then "an empty scene".
PROMPTS = [prompt_for(c, s) for c, s in ALL_COMBOS] + [EMPTY_PROMPT]

SINGLE_TEMPLATES = [
    "a photo of a {}",
    "a {}",
    "a picture of a {}",
    "{} on a wall",
    "a photo of the {}",
    "a {} in the scene",
    "there is a {}",
    "a close-up photo of a {}",
    "a blurry photo of a {}",
    "a small {}",
    "a big {}",
    "an image of a {}",
]
MULTI_TEMPLATES = ["{}", "a photo of {}", "a picture of {}", "{} on a wall", "there is {}"]
EMPTY_CAPTIONS = [
    "an empty scene",
    "a photo of an empty scene",
    "a photo of nothing",
    "an empty wall",
    "no objects",
]


def caption_for(objects: list[tuple[str, str]], rng: np.random.Generator) -> str:
    """A random training caption for a list of (colour, shape) objects."""
    if not objects:
        return EMPTY_CAPTIONS[rng.integers(len(EMPTY_CAPTIONS))]
    if len(objects) == 1:
        c, s = objects[0]
        return SINGLE_TEMPLATES[rng.integers(len(SINGLE_TEMPLATES))].format(f"{c} {s}")
    order = rng.permutation(len(objects))
    parts = [f"a {objects[i][0]} {objects[i][1]}" for i in order]
    body = " and ".join(parts) if len(parts) == 2 else f"{parts[0]}, {parts[1]} and {parts[2]}"
    return MULTI_TEMPLATES[rng.integers(len(MULTI_TEMPLATES))].format(body)


# --------------------------------------------------------------------------- shapes


def _regular(n: int, r: float = 1.0, phase: float = 0.0) -> np.ndarray:
    a = phase + np.arange(n) * 2 * math.pi / n
    return np.stack([r * np.cos(a), r * np.sin(a)], 1)


def shape_polygons(shape: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Outer polygon (and inner hole, for the ring) in unit coordinates, radius ~1."""
    if shape == "circle":
        return _regular(64), None
    if shape == "ring":
        return _regular(64), _regular(64, 0.55)
    if shape == "square":
        return _regular(4, 1.0, math.pi / 4) * 0.9, None
    if shape == "triangle":
        pts = _regular(3, 1.0, -math.pi / 2)
        return pts + np.array([0.0, 0.2]), None
    if shape == "star":
        outer = _regular(5, 1.0, -math.pi / 2)
        inner = _regular(5, 0.42, -math.pi / 2 + math.pi / 5)
        return np.stack([outer, inner], 1).reshape(-1, 2), None
    if shape == "cross":
        t = 0.3
        pts = [(-t, -1), (t, -1), (t, -t), (1, -t), (1, t), (t, t), (t, 1), (-t, 1), (-t, t),
               (-1, t), (-1, -t), (-t, -t)]
        return np.array(pts, dtype=np.float64), None
    raise ValueError(f"unknown shape {shape!r}")


# ---------------------------------------------------------------------- backgrounds

_PHOTOS: list[np.ndarray] | None = None
_TEXTURES: list[np.ndarray] | None = None


def _load_sources() -> None:
    """Load scikit-image's bundled sample photographs and textures once."""
    global _PHOTOS, _TEXTURES
    if _PHOTOS is not None:
        return
    import skimage.data as d

    def rgb(a: np.ndarray) -> np.ndarray:
        return np.repeat(a[..., None], 3, 2) if a.ndim == 2 else a[..., :3]

    photos = [d.astronaut(), d.chelsea(), d.coffee(), d.rocket(), d.stereo_motorcycle()[0],
              d.immunohistochemistry(), d.retina(), d.hubble_deep_field(), d.camera(),
              d.coins(), d.moon(), d.page(), d.text(), d.cat()]
    _PHOTOS = []
    for p in photos:  # shrink the big ones: frames are at most 640x480
        im = Image.fromarray(np.ascontiguousarray(rgb(p)).astype(np.uint8))
        if max(im.size) > 800:
            im.thumbnail((800, 800), Image.Resampling.LANCZOS)
        _PHOTOS.append(np.asarray(im))
    _TEXTURES = [np.ascontiguousarray(rgb(t)).astype(np.uint8)
                 for t in (d.brick(), d.grass(), d.gravel())]


def _jitter_colour(img: np.ndarray, rng: np.random.Generator, strength: float = 1.0) -> np.ndarray:
    """Brightness / contrast / saturation / channel-gain jitter of a float image in [0,255]."""
    b = 1 + strength * rng.uniform(-0.35, 0.3)
    c = 1 + strength * rng.uniform(-0.4, 0.3)
    s = 1 + strength * rng.uniform(-0.6, 0.4)
    gains = 1 + strength * rng.uniform(-0.12, 0.12, 3)
    mean = img.mean()
    img = (img - mean) * c + mean
    grey = img.mean(2, keepdims=True)
    img = (img - grey) * s + grey
    return img * b * gains


def background(w: int, h: int, rng: np.random.Generator) -> np.ndarray:
    """A float32 [h,w,3] background: photo crop (60%), tinted texture (20%) or wall (20%)."""
    _load_sources()
    kind = rng.uniform()
    if kind < 0.6 or kind >= 0.8:
        src_list = _PHOTOS if kind < 0.6 else _TEXTURES
        src = src_list[rng.integers(len(src_list))]
        sh, sw = src.shape[:2]
        aspect = w / h
        ch = int(min(sh, sw / aspect) * rng.uniform(0.3, 1.0))
        cw = int(ch * aspect)
        y0 = rng.integers(0, sh - ch + 1)
        x0 = rng.integers(0, sw - cw + 1)
        crop = Image.fromarray(src[y0:y0 + ch, x0:x0 + cw])
        if rng.uniform() < 0.5:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        img = np.asarray(crop.resize((w, h), Image.Resampling.BILINEAR), dtype=np.float32)
        if kind >= 0.8:  # textures are mostly grey: tint them
            tint = rng.uniform(0.4, 1.2, 3).astype(np.float32)
            img = img * tint
        return _jitter_colour(img, rng)
    # plain wall: a muted colour with a soft gradient and a little texture
    base = rng.uniform(40, 220) * (1 + rng.uniform(-0.25, 0.25, 3))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    a = rng.uniform(0, 2 * math.pi)
    g = (np.cos(a) * xx / w + np.sin(a) * yy / h)
    g = 1 + rng.uniform(-0.3, 0.3) * (g - g.mean())
    img = base[None, None, :] * g[..., None]
    small = rng.normal(0, rng.uniform(2, 10), (max(h // 16, 2), max(w // 16, 2), 1))
    tex = np.asarray(Image.fromarray(small[..., 0].astype(np.float32), mode="F")
                     .resize((w, h), Image.Resampling.BILINEAR))
    return (img + tex[..., None]).astype(np.float32)


# --------------------------------------------------------------------------- scenes


@dataclass
class SceneObject:
    """One object of a scene, placed in frame pixel coordinates."""
    colour: str
    shape: str
    cx: float
    cy: float
    size: float  # diameter in pixels
    angle: float = 0.0  # radians
    aspect: float = 1.0
    rgb_jitter: tuple[float, float, float] = (0.0, 0.0, 0.0)


@dataclass
class SceneSpec:
    """Everything needed to draw a frame, apart from the background image."""
    objects: list[SceneObject] = field(default_factory=list)

    @property
    def labels(self) -> list[str]:
        return [prompt_for(o.colour, o.shape) for o in self.objects]


def draw_object(img: Image.Image, obj: SceneObject, rng: np.random.Generator,
                shadow: bool = True) -> None:
    """Draw one object into an RGB PIL image (in place): shadow, shaded fill, optional ring hole."""
    w, h = img.size
    outer, inner = shape_polygons(obj.shape)
    r = obj.size / 2
    ca, sa = math.cos(obj.angle), math.sin(obj.angle)

    def place(p: np.ndarray, dx: float = 0, dy: float = 0) -> list[tuple[float, float]]:
        x = p[:, 0] * r * obj.aspect
        y = p[:, 1] * r / obj.aspect
        return list(zip(obj.cx + dx + ca * x - sa * y, obj.cy + dy + sa * x + ca * y))

    # Work on a bounding box only: drawing full-frame masks is the slow part.
    pad = int(r * 1.6) + 4
    x0, y0 = max(int(obj.cx) - pad, 0), max(int(obj.cy) - pad, 0)
    x1, y1 = min(int(obj.cx) + pad, w), min(int(obj.cy) + pad, h)
    if x1 <= x0 or y1 <= y0:
        return
    box = (x0, y0, x1, y1)

    def mask_for(dx: float = 0, dy: float = 0) -> Image.Image:
        m = Image.new("L", (x1 - x0, y1 - y0), 0)
        dr = ImageDraw.Draw(m)
        dr.polygon([(x - x0, y - y0) for x, y in place(outer, dx, dy)], fill=255)
        if inner is not None:
            dr.polygon([(x - x0, y - y0) for x, y in place(inner, dx, dy)], fill=0)
        return m

    region = img.crop(box)
    if shadow:
        off = obj.size * rng.uniform(0.02, 0.08)
        ang = rng.uniform(0, 2 * math.pi)
        sm = mask_for(off * math.cos(ang), off * math.sin(ang))
        sm = sm.filter(ImageFilter.BoxBlur(max(1, int(obj.size * 0.04))))
        dark = Image.eval(region, lambda v: int(v * 0.55))
        region = Image.composite(dark, region, sm.point(lambda v: int(v * 0.7)))
    base = np.array(COLOUR_RGB[obj.colour], np.float32) + np.array(obj.rgb_jitter, np.float32)
    # soft shading across the object: a linear ramp
    bw, bh = x1 - x0, y1 - y0
    yy, xx = np.mgrid[0:bh, 0:bw].astype(np.float32)
    a = rng.uniform(0, 2 * math.pi)
    ramp = (np.cos(a) * (xx - bw / 2) + np.sin(a) * (yy - bh / 2)) / max(obj.size, 1)
    shade = 1 + rng.uniform(0.0, 0.35) * ramp
    fill = np.clip(base[None, None] * shade[..., None], 0, 255).astype(np.uint8)
    region = Image.composite(Image.fromarray(fill), region, mask_for())
    img.paste(region, box)


def _occlude(img: Image.Image, obj: SceneObject, rng: np.random.Generator) -> None:
    """A bar (post, cable, edge of furniture) partly covering an object."""
    dr = ImageDraw.Draw(img)
    thick = obj.size * rng.uniform(0.12, 0.3)
    ang = rng.uniform(0, math.pi)
    off = obj.size * rng.uniform(0.25, 0.5) * (1 if rng.uniform() < 0.5 else -1)
    nx, ny = -math.sin(ang), math.cos(ang)
    cx, cy = obj.cx + nx * off, obj.cy + ny * off
    L = obj.size * 3
    dx, dy = math.cos(ang) * L, math.sin(ang) * L
    col = tuple(int(v) for v in rng.uniform(60, 190) * (1 + rng.uniform(-0.15, 0.15, 3)))
    dr.line([(cx - dx, cy - dy), (cx + dx, cy + dy)], fill=col, width=max(1, int(thick)))


def random_objects(rng: np.random.Generator, w: int, h: int, n: int,
                   combos: list[tuple[str, str]] | None = None,
                   allow_held_out: bool = False,
                   size_range: tuple[float, float] | None = None) -> list[SceneObject]:
    """Place n objects in the view (centred square) of a w x h frame.

    ``combos`` forces the (colour, shape) of each object; otherwise they are drawn
    from the seen combinations (or all of them when ``allow_held_out``).
    Objects may stick out of the view by a little (a partial crop).
    """
    side = min(w, h)
    vx0, vy0 = (w - side) / 2, (h - side) / 2
    lo, hi = size_range or ((0.10, 0.60) if n == 1 else (0.10, 0.40))
    pool = ALL_COMBOS if allow_held_out else SEEN_COMBOS
    objs: list[SceneObject] = []
    for i in range(n):
        if combos is not None:
            c, s = combos[i]
        else:
            c, s = pool[rng.integers(len(pool))]
        if not allow_held_out and (c, s) in HELD_OUT:
            raise ValueError(f"held-out combination {c} {s} requested in training data")
        for _ in range(30):
            # log-uniform sizes: small objects are as frequent as big ones
            size = side * math.exp(rng.uniform(math.log(lo), math.log(hi)))
            margin = size * 0.5 * rng.uniform(0.75, 1.0)
            cx = vx0 + rng.uniform(margin, side - margin)
            cy = vy0 + rng.uniform(margin, side - margin)
            ok = all(math.hypot(cx - o.cx, cy - o.cy) > 0.45 * (size + o.size) for o in objs)
            if ok:
                break
        jit = tuple(float(v) for v in rng.uniform(-18, 18, 3))
        objs.append(SceneObject(c, s, cx, cy, size, rng.uniform(0, 2 * math.pi),
                                math.exp(rng.uniform(-0.25, 0.25)), jit))
    return objs


def finish(img: Image.Image, rng: np.random.Generator, strength: float = 1.0,
           jpeg: bool = True) -> Image.Image:
    """Camera effects on a whole frame: lighting gradient, exposure, blur, noise, JPEG."""
    w, h = img.size
    side = min(w, h)
    a = np.asarray(img, dtype=np.float32)
    # lighting gradient + exposure / white balance (mild, colours must stay nameable)
    ang = rng.uniform(0, 2 * math.pi)
    gx = np.cos(ang) * (np.arange(w, dtype=np.float32) / w - 0.5)
    gy = np.sin(ang) * (np.arange(h, dtype=np.float32) / h - 0.5)
    grad = 1 + strength * rng.uniform(0.0, 0.5) * (gx[None, :] + gy[:, None])
    exposure = 1 + strength * rng.uniform(-0.25, 0.2)
    wb = 1 + strength * rng.uniform(-0.06, 0.06, 3)
    a = a * (grad[..., None] * exposure) * wb[None, None]
    img = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))
    if rng.uniform() < 0.35 * strength:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.6) * side / 160))
    # sensor noise (in frame pixels) + JPEG
    sigma = strength * rng.uniform(1.0, 9.0)
    a = np.asarray(img, dtype=np.float32)
    a = a + sigma * rng.standard_normal(a.shape, dtype=np.float32)
    img = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))
    if jpeg:
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=int(rng.integers(35, 96)))
        buf.seek(0)
        img = Image.open(buf).convert("RGB")
    return img


def render_scene(seed: int, w: int, h: int, n_objects: int | None = None,
                 combos: list[tuple[str, str]] | None = None,
                 allow_held_out: bool = False, jpeg: bool = True,
                 ) -> tuple[Image.Image, list[tuple[str, str]]]:
    """Render one camera-like frame of size w x h from a seed.

    Returns the RGB image and the list of (colour, shape) objects in it.
    ``n_objects`` defaults to a random count (0: 8%, 1: 62%, 2: 20%, 3: 10%).
    """
    rng = np.random.default_rng(seed)
    if combos is not None:
        n_objects = len(combos)
    if n_objects is None:
        n_objects = int(rng.choice(4, p=[0.08, 0.62, 0.20, 0.10]))
    bg = background(w, h, rng)
    img = Image.fromarray(np.clip(bg, 0, 255).astype(np.uint8))
    objs = random_objects(rng, w, h, n_objects, combos, allow_held_out)
    for o in objs:
        draw_object(img, o, rng, shadow=rng.uniform() < 0.6)
    if objs and rng.uniform() < 0.15:
        _occlude(img, objs[rng.integers(len(objs))], rng)
    img = finish(img, rng, jpeg=jpeg)
    return img, [(o.colour, o.shape) for o in objs]


def runtime_preprocess(img: Image.Image, size: int) -> Image.Image:
    """What the edgeclip runtime does before normalising: resize the shortest side to
    ``size`` with PIL bicubic (antialiased), then centre crop ``size`` x ``size``."""
    w, h = img.size
    s = size / min(w, h)
    nw, nh = max(size, round(w * s)), max(size, round(h * s))
    img = img.resize((nw, nh), Image.Resampling.BICUBIC)
    left, top = (nw - size) // 2, (nh - size) // 2
    return img.crop((left, top, left + size, top + size))


def main() -> None:
    p = argparse.ArgumentParser(description="Render sample scenes to look at.")
    p.add_argument("--out", default="target/demo-train/samples")
    p.add_argument("--n", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=480)
    args = p.parse_args()
    import os
    os.makedirs(args.out, exist_ok=True)
    for i in range(args.n):
        rng = np.random.default_rng(args.seed * 1000003 + i)
        img, objs = render_scene(args.seed * 1000003 + i, args.width, args.height)
        cap = caption_for(objs, rng)
        img.save(f"{args.out}/scene_{i:03d}.jpg", quality=90)
        print(f"scene_{i:03d}.jpg: {cap}")


if __name__ == "__main__":
    main()
