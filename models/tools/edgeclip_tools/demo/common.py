"""What every step of the demo shares: where things live, the towers' sizes, the seed spaces,
CLIP's tokenizer, the input tensors and the prompt accuracy."""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F

from ..bundle_tools import clip_tokenize
from ..clip_common import REPO
from . import scenes

ROOT = str(REPO)
WORK = os.path.join(ROOT, "target", "demo-train")
EVAL_DIR = os.path.join(ROOT, "target", "demo-eval")
BUNDLE = os.path.join(ROOT, "models", "demo")
CLIP_DIR = os.path.join(ROOT, "tests", "data", "clip")

SIZE = 96  # the teacher's image tower input
STUDENT_SIZE = 128  # the student's (the shipped tower's) input: --student-size
EMPTY_WEIGHT = 4.0  # the student's weight of empty frames (default of --empty-weight)
LABEL_WEIGHT = 0.5  # the student's weight of its scenes' own captions (--label-weight)
CONTEXT = 16  # text context length
EMBED = 64  # D
VOCAB = 49408
SOT, EOT = 49406, 49407

# Seed spaces: scene seeds are seed * SEED_STRIDE + offset + index, so the sets never overlap.
SEED_STRIDE = 10_000_000_000
OFF_TEACHER, OFF_STUDENT, OFF_CALIB = 0, 1_000_000_000, 2_000_000_000
EVAL_SEED = 987_654_321_000  # the evaluation set: a seed space no training run uses
CLIP_SEED = 123_456_789_000


def tokenize(texts: list[str]) -> torch.Tensor:
    """CLIP BPE ids [N, CONTEXT] (open_clip: SOT=49406, EOT=49407, pad 0, truncate + force EOT)."""
    return torch.from_numpy(clip_tokenize(texts, CONTEXT))


def bundle_input_size(bundle: str) -> int:
    """The image tower's input size (px) that a bundle declares."""
    import tomllib
    with open(os.path.join(bundle, "bundle.toml"), "rb") as f:
        return int(tomllib.load(f)["image"]["height"])


def prompt_accuracy(img_emb: torch.Tensor, labels: list[int], text_emb: torch.Tensor,
                    held: list[bool]) -> tuple[float, float]:
    """Top-1 among the 48 colour-shape prompts, split (seen, held-out)."""
    pred = (F.normalize(img_emb, dim=-1) @ F.normalize(text_emb[:48], dim=-1).t()).argmax(1)
    ok = (pred.cpu() == torch.tensor(labels)).numpy()
    h = np.array(held)
    return float(ok[~h].mean()) if (~h).any() else float("nan"), \
        float(ok[h].mean()) if h.any() else float("nan")


def prompt_ids() -> torch.Tensor:
    return tokenize(scenes.PROMPTS)
