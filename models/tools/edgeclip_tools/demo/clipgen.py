"""The recorded demo / test clip: ``tests/data/clip/``.

A fixed camera (slight hand-held shake) looks at a natural photograph (scikit-image's
rocket); coloured shapes of *seen* combinations slide into the view, wobble and turn a
little while they stay (20+ frames), and slide out again, one visit at a time; empty gaps
separate the visits. (One at a time because the demo model, trained in minutes on two CPU
cores, scores a two-object scene for its dominant object only: see models/demo/MODEL_CARD.md.) Frames are 640x480 JPEG (quality 80) with mild
sensor noise. ``ground_truth.json`` gives, per frame, the prompts of the objects whose
centre is inside the runtime's view (the centred 480x480 square) by a margin.

Run through ``edgeclip_tools.demo clip`` (or ``python3 -m edgeclip_tools.demo.clipgen --out DIR``).
"""

from __future__ import annotations

import argparse
import json
import math
import os

import numpy as np
from PIL import Image, ImageFilter

from ..clip_common import REPO
from . import scenes

W, H, FPS = 640, 480, 15
VIEW_X0, VIEW_X1 = (W - H) // 2, (W + H) // 2  # the centred square the runtime keeps
SLIDE = 7  # frames to slide in or out

# (colour, shape, first frame, last frame, size px, entry side, rest x, rest y, exit side)
TRACKS = [
    ("red", "circle", 10, 50, 150, "left", 300, 230, "right"),
    ("blue", "square", 60, 92, 130, "top", 250, 170, "left"),
    ("yellow", "star", 100, 126, 140, "right", 410, 320, "bottom"),
    ("orange", "triangle", 134, 164, 160, "bottom", 330, 250, "top"),
]
N_FRAMES = 172


def _edge_point(side: str, rest: tuple[float, float], size: float) -> tuple[float, float]:
    x, y = rest
    off = size * 0.75
    return {"left": (VIEW_X0 - off - 40, y), "right": (VIEW_X1 + off + 40, y),
            "top": (x, -off), "bottom": (x, H + off)}[side]


def _ease(t: float) -> float:
    return 0.5 - 0.5 * math.cos(math.pi * min(max(t, 0.0), 1.0))


def track_state(tr: tuple, f: int) -> tuple[float, float, float] | None:
    """(cx, cy, angle) of a track at frame f, or None when it is not in the frame."""
    colour, shape, t0, t1, size, e_in, rx, ry, e_out = tr
    if f < t0 or f > t1:
        return None
    rest = (rx, ry)
    # a slow wobble while it stays: a few pixels per frame at most
    wob_x = 12 * math.sin(2 * math.pi * (f - t0) / 37.0)
    wob_y = 8 * math.sin(2 * math.pi * (f - t0) / 53.0 + 1.0)
    cx, cy = rest[0] + wob_x, rest[1] + wob_y
    if f < t0 + SLIDE:
        sx, sy = _edge_point(e_in, rest, size)
        k = _ease((f - t0) / SLIDE)
        cx, cy = sx + (cx - sx) * k, sy + (cy - sy) * k
    elif f > t1 - SLIDE:
        ex, ey = _edge_point(e_out, rest, size)
        k = _ease((f - (t1 - SLIDE)) / SLIDE)
        cx, cy = cx + (ex - cx) * k, cy + (ey - cy) * k
    angle = 0.3 + 0.01 * (f - t0)
    return cx, cy, angle


def visible(cx: float, cy: float, size: float) -> bool:
    """Ground truth rule: the centre is inside the view by at least a quarter of the size."""
    m = size * 0.25
    return VIEW_X0 + m <= cx <= VIEW_X1 - m and m <= cy <= H - m


def make_clip(out: str, seed: int, quality: int = 80) -> None:
    import skimage.data as d
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(seed)
    src = Image.fromarray(d.rocket())  # 640x427: scale up a little to leave room for shake
    big = src.resize((700, 467 * 700 // 640 + 60), Image.Resampling.BICUBIC)
    big = big.filter(ImageFilter.GaussianBlur(0.8))
    bw, bh = big.size
    # a fixed lighting gradient (window on one side)
    gx = np.linspace(1.08, 0.9, W, dtype=np.float32)[None, :, None]
    frames = []
    for f in range(N_FRAMES):
        sx = (bw - W) / 2 + 2.0 * math.sin(f / 9.0) + rng.normal(0, 0.4)
        sy = (bh - H) / 2 + 1.5 * math.cos(f / 11.0) + rng.normal(0, 0.4)
        img = big.crop((int(round(sx)), int(round(sy)), int(round(sx)) + W, int(round(sy)) + H))
        labels = []
        for i, tr in enumerate(TRACKS):
            st = track_state(tr, f)
            if st is None:
                continue
            colour, shape, *_ = tr
            size = tr[4]
            obj = scenes.SceneObject(colour, shape, st[0], st[1], size, st[2], 1.0, (0, 0, 0))
            # same rng per object each frame: constant shading / shadow direction
            scenes.draw_object(img, obj, np.random.default_rng([seed, i]), shadow=True)
            if visible(st[0], st[1], size):
                labels.append(scenes.prompt_for(colour, shape))
        a = np.asarray(img, dtype=np.float32)
        exposure = 1.0 + 0.03 * math.sin(f / 17.0)
        a = a * gx * exposure + rng.normal(0, 1.5, (H, W, 1)).astype(np.float32)
        name = f"frame_{f:04d}.jpg"
        Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(
            os.path.join(out, name), quality=quality)
        frames.append({"frame": f, "file": name, "labels": sorted(labels)})
    json.dump({"fps": FPS, "frames": frames}, open(os.path.join(out, "ground_truth.json"), "w"),
              indent=1)
    total = sum(os.path.getsize(os.path.join(out, fr["file"])) for fr in frames)
    print(f"clip: {len(frames)} frames, {total / 1e6:.2f} MB -> {out}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(REPO / "tests" / "data" / "clip"))
    p.add_argument("--seed", type=int, default=123_456_789_000)
    p.add_argument("--quality", type=int, default=80)
    a = p.parse_args()
    make_clip(a.out, a.seed, a.quality)


if __name__ == "__main__":
    main()
