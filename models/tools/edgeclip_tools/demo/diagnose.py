"""Where does the demo teacher go wrong: colour or shape, image side or text side?

    python3 -m edgeclip_tools.demo.diagnose --teacher target/demo-train/teacher.pt \
        [--eval target/demo-eval] [--arch factored]

On the evaluation set (``edgeclip_tools.demo eval``, preprocessed like the runtime), prints for the
teacher of ``edgeclip_tools.demo``:

* its top-1 among the 48 colour-shape prompts, and how often the top prompt has the right
  colour and the right shape (seen / held-out combinations);
* the same from its auxiliary colour / shape presence head (argmax of the 8 colour and of the
  6 shape logits): a linear probe of the image features trained on seen pairs only, so the gap
  between seen and held-out shape accuracy measures how much the image features tie shape to
  colour;
* text side: prompt embeddings fitted as colour + shape (least squares on the 42 seen prompts
  only), their cosine with the real ones, and the accuracy when the held-out prompts are
  replaced by the fitted ones (if the text tower composes well, this changes little);
* the most frequent top prompts for each held-out combination.
"""

from __future__ import annotations

import argparse
import json
import os
from collections import Counter

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..clip_common import to_tensor
from . import scenes
from .arch import Teacher
from .common import EVAL_DIR, SIZE, WORK, prompt_ids


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", default=os.path.join(WORK, "teacher.pt"))
    p.add_argument("--arch", default="factored", choices=["conv", "vit", "factored"])
    p.add_argument("--eval", default=EVAL_DIR)
    a = p.parse_args()
    torch.set_num_threads(1)
    rows = json.load(open(os.path.join(a.eval, "labels.json")))
    x = to_tensor(np.stack([np.asarray(scenes.runtime_preprocess(
        Image.open(os.path.join(a.eval, r["file"])).convert("RGB"), SIZE)) for r in rows]))
    lab = np.array([scenes.PROMPTS.index(r["label"]) for r in rows])
    held = np.array([r["held_out"] for r in rows])
    t = Teacher(a.arch)
    t.load_state_dict(torch.load(a.teacher))
    t.eval()
    with torch.no_grad():
        f = t.visual.features(x)
        img = F.normalize(t.visual.head(f), dim=-1)
        att = t.visual.attr(f).numpy()
        txt = F.normalize(t.text(prompt_ids()), dim=-1)[:48].numpy()
    img = img.numpy()
    nc = len(scenes.COLOURS)
    lc, ls = lab // len(scenes.SHAPES), lab % len(scenes.SHAPES)

    def report(name: str, pc: np.ndarray, ps: np.ndarray) -> None:
        for h in (False, True):
            m = held == h
            print(f"{name:<28} {'held-out' if h else 'seen':<8}  top-1 "
                  f"{((pc[m] == lc[m]) & (ps[m] == ls[m])).mean():6.1%}  colour "
                  f"{(pc[m] == lc[m]).mean():6.1%}  shape {(ps[m] == ls[m]).mean():6.1%}")

    pred = (img @ txt.T).argmax(1)
    report("prompts (teacher text)", pred // 6, pred % 6)
    report("presence head (argmax)", att[:, :nc].argmax(1), att[:, nc:].argmax(1))
    seen = [i for i, cs in enumerate(scenes.ALL_COMBOS) if cs not in scenes.HELD_OUT]
    A = np.zeros((48, nc + len(scenes.SHAPES)))
    for i in range(48):
        A[i, i // 6] = 1
        A[i, nc + i % 6] = 1
    W, *_ = np.linalg.lstsq(A[seen], txt[seen], rcond=None)
    comp = A @ W
    comp /= np.linalg.norm(comp, axis=1, keepdims=True)
    cos = (txt * comp).sum(1)
    ho = [i for i in range(48) if i not in seen]
    print(f"text: cosine(prompt, colour + shape fit on seen prompts) seen {cos[seen].mean():.3f} "
          f"held-out {cos[ho].mean():.3f}")
    mixed = txt.copy()
    mixed[ho] = comp[ho]
    p2 = (img @ mixed.T).argmax(1)
    report("prompts, held-out fitted", p2 // 6, p2 % 6)
    for c in sorted(scenes.HELD_OUT):
        m = lab == scenes.ALL_COMBOS.index(c)
        top = Counter(scenes.PROMPTS[i].removeprefix("a photo of a ") for i in pred[m])
        shp = Counter(scenes.SHAPES[i] for i in att[m, nc:].argmax(1))
        print(f"{c[0]} {c[1]}: top prompts {top.most_common(3)}; presence-head shape "
              f"{shp.most_common(3)}")


if __name__ == "__main__":
    main()
